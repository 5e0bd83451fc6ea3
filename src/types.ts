/**
 * Vocabulary, used alike in code, logs, README and tests.
 *
 * task        a unit of work: an id, an instruction for the API, the ids of the tasks it depends on,
 *             and budget fields. Defined once in queue/queue.json and never changed there.
 * dependency  a task that must be `completed` before another may run.
 * event       one record of the execution log (queue/execution-log.jsonl): a claim, an outcome, a retry,
 *             a cancel. The log is append-only; a task's state is the fold of its events.
 * claim       a worker's right to run one attempt of a task. It holds the task's lock file and is named
 *             by a fresh token; the log decides between claims, so only one can ever be in force.
 * attempt     one call of the API for a task, under one claim.
 * outcome     how an attempt ended: completed, failed, retry (back to pending after a backoff) or released.
 * lock        locks/<shard>/<task-id>.lock (proper-lockfile), refreshed while the attempt runs: a hard link
 *             to a slot of its worker, locks/slots/<host>-<pid>.<n>, which names that worker.
 * worker      one `worker run` process.
 */
export const TASK_STATES = ['pending', 'running', 'completed', 'failed', 'blocked'] as const;
export type TaskState = (typeof TASK_STATES)[number];

export const INTENSITIES = ['low', 'medium', 'high'] as const;
export type Intensity = (typeof INTENSITIES)[number];

/** Causes of a failed attempt, one kind per cause. */
export const ERROR_KINDS = [
  'connect', // refused, reset or closed before a response
  'dns', // the API's host name did not resolve
  'timeout', // connecting, waiting for headers, reading the body, or the whole request took too long
  'http', // the API answered with a non-2xx status
  'bad_response', // a 2xx answer that could not be read (too large, cut off)
  'api_failed', // a 2xx JSON answer with "status": "failed"
  'aborted', // the worker was told to stop (second signal) or lost its claim
  'worker_died', // the worker holding the claim died; recorded when another worker takes the task over
  'cancelled', // `worker cancel`: it will not run
] as const;
export type ErrorKind = (typeof ERROR_KINDS)[number];

export interface AttemptError {
  kind: ErrorKind;
  message: string;
  http_status?: number | undefined;
}

/**
 * Task ids become file names (locks/<id>.lock) and appear in logs, so only a safe set is accepted:
 * a letter or digit first (no dot files, no `..`), then letters, digits, `.`, `_`, `-`; at most 100.
 */
export const TASK_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;
export const TASK_ID_RULE = '1 to 100 characters: letters, digits, ".", "_" or "-", starting with a letter or digit';
export const MAX_INSTRUCTION_LENGTH = 1_000_000;

/** A task as it was added. Times are ISO 8601 UTC strings, as Date#toISOString writes them. */
export interface TaskDefinition {
  id: string;
  instruction: string;
  deps: string[];
  min_budget: number;
  max_budget: number;
  intensity: Intensity;
  added_at: string;
}
/** What the fold needs of a task: a worker keeps only this in memory, and reads the rest when it claims one. */
export type TaskHead = Pick<TaskDefinition, 'id' | 'deps' | 'added_at'>;

/** The task definitions of a queue, in the order they were added, and the ids `worker clean` removed. */
export interface QueueContents<T extends TaskHead = TaskDefinition> {
  tasks: T[];
  removed: ReadonlySet<string>;
}

/** The queue-wide rate limit (--rate) a claim was made under: the claim counts only if it keeps within it. */
export interface RateLimit {
  calls: number;
  per_ms: number;
}

/**
 * A worker takes a task. `prev` names the claim it supersedes (a dead or stale owner's), null for a pending
 * task. `at` is when the call may start: a claim stamped before the end of a pause, or beyond its `rate`,
 * does not count (see core/apiWeather.ts).
 */
export interface ClaimEvent {
  type: 'claim';
  task: string;
  token: string;
  prev: string | null;
  attempt: number;
  worker: string;
  pid: number;
  host: string;
  at: string;
  rate?: RateLimit | undefined;
  /** Why a takeover superseded `prev` (its worker was gone, or its lock stale): for `logs` and `show`. */
  reason?: string | undefined;
  /** How many tasks its worker may have in flight at once (--concurrency), when more than one. */
  concurrency?: number | undefined;
}

export const OUTCOMES = ['completed', 'failed', 'retry', 'released'] as const;
export type Outcome = (typeof OUTCOMES)[number];

/** Where a result too large to keep in its outcome is kept: bytes of one of the store's results files. */
export interface ResultRef {
  file: string;
  offset: number;
  length: number;
  /** The API sent JSON: the result is that JSON parsed. */
  json: boolean;
}

/** How one attempt ended. Counts only while its token is the task's claim in force (fencing). */
export interface OutcomeEvent {
  type: 'outcome';
  task: string;
  token: string;
  attempt: number;
  worker: string;
  outcome: Outcome;
  /** false when the claim was given back before the API was called: the attempt does not count. */
  called: boolean;
  /**
   * false when the call does not count as an attempt either: it never reached the API, the API was
   * unreachable for the whole queue, asked the queue to wait, or refused the worker's credentials.
   */
  charged?: boolean | undefined;
  /** The API asked the whole queue to wait until then (429, or 503 with Retry-After): no claim counts before. */
  pause_until?: string | undefined;
  /** When the first of the task's calls in a row that reached the API without counting as attempts started (--max-api-wait). */
  waiting_since?: string | undefined;
  started_at: string;
  ended_at: string;
  duration_ms: number;
  http_status?: number | undefined;
  error?: AttemptError | undefined;
  retry_at?: string | undefined;
  /** --max-attempts of the worker that recorded it, so that others can say "retry 2/3". */
  max_attempts?: number | undefined;
  result?: unknown;
  result_ref?: ResultRef | undefined;
}

/** A change by hand to one task: which, when, and who asked (`by`: user@host; absent in earlier logs). */
export interface HandEvent<Type extends string> {
  type: Type;
  task: string;
  at: string;
  by?: string | undefined;
}

/** `worker retry`: a failed task goes back to pending with fresh attempts and a new idempotency key. */
export type RetryEvent = HandEvent<'retry'>;
/** `worker rerun`: a completed task runs again, with fresh attempts and a new idempotency key. */
export type RerunEvent = HandEvent<'rerun'>;
/** `worker edit`: the task's definition in queue.json was changed; the fold takes it as it is. */
export type EditEvent = HandEvent<'edit'>;
/**
 * `worker cancel`: a pending task will not run (it counts as failed, kind cancelled, so its dependents are
 * blocked); of a running task, a request its worker answers by stopping the call.
 */
export type CancelEvent = HandEvent<'cancel'>;

/** The API's weather as a compaction found it, which the events it dropped had made (see ApiWeather.restore). */
export interface WeatherRecord {
  type: 'weather';
  at: string;
  state: { starts: number[]; pauses_in_a_row: number; paused_by_hand?: HandPause | null | undefined };
}

/** `worker pause` / `worker resume`: no claim counts while the queue is paused by hand. `by`: who, for people. */
export interface QueueControlEvent {
  type: 'paused' | 'resumed';
  at: string;
  by: string;
}

/**
 * `worker remove` or `worker clean` took tasks out of the queue: who, when, and which (the first
 * REMOVAL_IDS_RECORDED of them, and how many). Kept by every compaction, as the history of the queue.
 */
export interface RemovalRecord {
  type: 'removed';
  at: string;
  by: string;
  command: 'remove' | 'clean';
  tasks: string[];
  count: number;
}

/** How many ids a removal record lists: `clean` of millions of tasks names the first ones and counts the rest. */
export const REMOVAL_IDS_RECORDED = 1000;

/** The queue paused by hand: since when, and by whom. */
export interface HandPause {
  since: string;
  by: string;
}

/** What happens to a task. */
export type QueueEvent = ClaimEvent | OutcomeEvent | RetryEvent | RerunEvent | CancelEvent | EditEvent;
/** What a change by hand records: events of tasks, or of the whole queue. */
export type ChangeRecord = QueueEvent | QueueControlEvent | RemovalRecord;
/** What the fold reads: the events of tasks and of the queue, and the weather a compaction carried over. */
export type FoldRecord = ChangeRecord | WeatherRecord;

/** Whether a record is of one task (it names it), not of the whole queue. */
export function isTaskEvent(record: FoldRecord): record is QueueEvent {
  return record.type !== 'weather' && record.type !== 'paused' && record.type !== 'resumed' && record.type !== 'removed';
}

/** A worker's heartbeat: locks/workers/<worker-id>.json, rewritten every HEARTBEAT_MS while it runs. */
export interface Heartbeat {
  worker: string;
  pid: number;
  host: string;
  started_at: string;
  beat_at: string;
  state: 'running' | 'idle' | 'stopped';
  /** The first of `current_tasks`, for readers of heartbeats written before --concurrency. */
  current_task: string | null;
  /** Every task this worker has in flight. Optional: absent in heartbeats of earlier versions. */
  current_tasks?: string[];
  /** How many tasks it may have in flight at once (--concurrency). */
  concurrency?: number;
  tasks_done: number;
}

export type WorkerLiveness = 'alive' | 'dead' | 'stopped' | 'silent';

export interface WorkerStatus extends Heartbeat {
  liveness: WorkerLiveness;
}

/** Where a worker says what it does: one line per call, on stderr. */
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

/** One task as `status --json` shows it. Field names match the bulk file of `add --file`. */
export interface TaskStatus {
  id: string;
  instruction: string;
  deps: string[];
  state: TaskState;
  attempts: number;
  min_budget: number;
  max_budget: number;
  intensity: string;
  added_at: string;
  updated_at: string;
  worker?: string;
  last_error?: AttemptError;
  retry_at?: string;
  blocked_by?: string;
  /** Why the task is where it is, in words. */
  reason: string;
  /** Set on a running task whose worker is dead or whose lock is stale. */
  stuck?: string;
  result?: unknown;
}

export interface StatusReport {
  /** Without the results kept apart: `resultRefs` says where those are, for whoever prints them. */
  tasks: TaskStatus[];
  resultRefs: Map<string, ResultRef>;
  counts: Record<TaskState, number>;
  /** What holds the whole queue back (an outage, a pause the API asked for, the rate limit), or null. */
  weather: string | null;
  /** When what is left may be done, at the rate of recent completions (`about 3m left at 12/min`), or null. */
  eta: string | null;
  /** Problems a person should know of that do not stop the queue. */
  warnings: string[];
}

/** What `worker compact` did. */
export interface CompactionReport {
  /** The log's generation now; null for a database's history, which has none (removed events are deleted). */
  generation: number | null;
  bytesBefore: number;
  bytesAfter: number;
  eventsBefore: number;
  eventsKept: number;
  /** Results files no remaining task refers to, removed with the events that referred to them. */
  resultFilesRemoved: number;
  resultBytesRemoved: number;
}

/**
 * Where a queue lives: a folder of files (the default), or a queue of a PostgreSQL database, which
 * workers on several hosts can share. The database URL may hold a password: never print it as it is.
 */
export type QueuePlace = { kind: 'folder'; dir: string } | { kind: 'database'; url: string; queue: string };
