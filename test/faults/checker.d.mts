/** A worker process killed on purpose, and when. */
export interface Kill {
  worker: string;
  at: number;
}

/** What the API recorded of one call. */
export interface RecordedCall {
  task_id: string;
  attempt: number;
  worker: string | undefined;
  idempotencyKey: string | undefined;
  receivedAt: number;
  answeredAt?: number;
  /** The API failed this call on purpose (500, reset, hang): a retry of it is expected. */
  failedOnPurpose?: boolean;
}

export interface Verdict {
  tasks: number;
  calls: number;
  /** Tasks called more than once whose earlier call's worker was killed after that call began. */
  explainedRepeats: number;
  /** Repeats after a call the API failed on purpose. */
  retriedRepeats: number;
  problems: string[];
}

/** A queue as the checks read it: its id (the first part of every idempotency key), and its events in order. */
export interface CheckedQueue {
  id: string;
  events: Array<Record<string, any>>;
}

export function readFolderQueue(dir: string): Promise<CheckedQueue>;

export function checkGuarantees(
  queue: CheckedQueue,
  tasks: ReadonlyArray<{ id: string; deps: string[] }>,
  calls: readonly RecordedCall[],
  kills: readonly Kill[],
  finalStates: ReadonlyMap<string, Record<string, unknown>>,
): Promise<Verdict>;
