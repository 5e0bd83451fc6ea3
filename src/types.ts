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
