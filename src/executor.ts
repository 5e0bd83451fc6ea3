import type { AttemptError, TaskDefinition } from './types.js';

/**
 * The executor seam: what runs one attempt of a task. The HTTP executor (src/http/) is one; which one a
 * worker uses is chosen in src/backends.ts.
 */
export interface Executor {
  /**
   * Runs one attempt. Never throws: every way an attempt can end is a result, classified. `signal` abandons
   * it at once (a second signal, a claim that may be lost): the result is then an `aborted` failure.
   */
  execute(attempt: Attempt, signal: AbortSignal): Promise<ExecutionResult>;
  /** What it runs tasks on, for the worker's first log line: never a secret. */
  describe(): string;
  /** Frees what it holds (connections); every attempt has settled by then. */
  close(): void;
}

/** One attempt of a task, as an executor is given it. */
export interface Attempt {
  task: TaskDefinition;
  /** 1 for the first attempt. */
  attempt: number;
  /** Names this try of the task for whoever runs it: the same on automatic retries and takeovers. */
  idempotencyKey: string;
  workerId: string;
}

/**
 * What an attempt left that depends on the kind of executor, recorded with its outcome: an HTTP status for
 * an API call (an exit code would be another kind's).
 */
export interface AttemptDetail {
  http_status?: number | undefined;
}

/** How an attempt ended, before the retry policy decides what it means for the task. */
export type ExecutionResult =
  /** `body`: the answer as it came; `result`: it parsed, when it is JSON (`json`). */
  | { ok: true; detail: AttemptDetail; result: unknown; body: string; json: boolean }
  | {
      ok: false;
      error: AttemptError;
      retryable: boolean;
      /** How long whoever answered asked to be left alone (Retry-After). */
      retryAfterMs?: number | undefined;
      /** False when the attempt surely never reached whoever runs tasks: the task cannot be at fault. */
      reachedApi: boolean;
    };
