/** Backoff never waits longer than this, whatever the attempt number. */
export const MAX_BACKOFF_MS = 5 * 60_000;
/** A Retry-After longer than this is capped: a typo in the API must not park a task for days. */
export const MAX_RETRY_AFTER_MS = 60 * 60_000;

/**
 * Exponential backoff with jitter: base * 2^(attempt-1), capped, then scaled by a random factor in
 * [0.5, 1) so that workers that failed together do not retry together.
 */
export function backoffMs(attempt: number, baseMs: number, random: number): number {
  const exponential = Math.min(MAX_BACKOFF_MS, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exponential * (0.5 + random / 2));
}

/** Retry-After as seconds or as an HTTP date; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const text = value.trim();
  const ms = /^\d+$/.test(text) ? Number(text) * 1000 : Date.parse(text) - now;
  if (!Number.isFinite(ms)) return undefined;
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms));
}

/** When the next attempt may start: the backoff, or the API's Retry-After if that is later. */
export function retryDelayMs(attempt: number, baseMs: number, random: number, retryAfterMs: number | undefined): number {
  return Math.max(backoffMs(attempt, baseMs, random), retryAfterMs ?? 0);
}

/** Statuses that refuse the worker's credentials, not the task: every further call would be refused too. */
const CREDENTIAL_STATUSES = new Set([401, 403, 407]);

/** What a failed call means for its task, and for the queue. */
export type FailureDecision =
  /** The API refused the worker's credentials: the task goes back to pending, its attempt not counted, and the worker stops. */
  | { outcome: 'released'; charged: false; why: 'credentials' }
  /**
   * Another try later. `charged: false` when the call does not count as an attempt: `pause` (the API asked
   * the queue to wait until `pauseUntil`), `unreached` (the request never reached the API), `outage` (part of
   * an outage of the whole queue). `retry`: the task's own retryable failure.
   */
  | {
      outcome: 'retry';
      charged: boolean;
      retryAt: number;
      pauseUntil?: number;
      waitingSince?: number | undefined;
      why: 'pause' | 'unreached' | 'outage' | 'retry';
    }
  /**
   * `final`: the API refused the task; `attempts`: its attempts are used up; `waited`: its calls reached the
   * API but were asked to wait, or got no answer in an outage, for longer than --max-api-wait.
   */
  | { outcome: 'failed'; why: 'final' | 'attempts' | 'waited' };

export interface FailureContext {
  /** The attempt number of the call (its claim's). */
  attempt: number;
  maxAttempts: number;
  /** Calls of the task in a row that did not count as attempts. */
  waits: number;
  /** When the first of the task's calls in a row that reached the API without counting as attempts started. */
  waitingSince: number | null;
  /** When this call started. */
  startedAt: number;
  /** The queue is in an outage, counting this failure if it got no answer. */
  outage: boolean;
  /** Pauses asked for in a row before this one, queue-wide: the pause's backoff when the API names no time. */
  pausesInARow: number;
  backoffMs: number;
  pauseOn429: boolean;
  maxApiWaitMs: number;
  now: number;
  random: number;
}

/**
 * Decides a failed call: a task fails because of itself, never because the API was unreachable, asked the
 * whole queue to wait, or refused the worker's credentials; those calls do not use up its attempts.
 */
export function decideFailure(
  result: { error: { kind: string; http_status?: number | undefined }; retryable: boolean; retryAfterMs?: number | undefined; reachedApi: boolean },
  context: FailureContext,
): FailureDecision {
  const { error } = result;
  const status = error.kind === 'http' ? error.http_status : undefined;
  if (status !== undefined && CREDENTIAL_STATUSES.has(status)) return { outcome: 'released', charged: false, why: 'credentials' };
  const asksQueueToWait = (status === 429 && context.pauseOn429) || (status === 503 && result.retryAfterMs !== undefined);
  // A call that reached the API and did not count: bounded by --max-api-wait, so that a task whose own
  // calls the API keeps refusing to answer cannot wait for ever.
  const waitingSince = context.waitingSince ?? context.startedAt;
  const waitedTooLong = context.maxApiWaitMs > 0 && context.now - waitingSince >= context.maxApiWaitMs;
  if (asksQueueToWait) {
    if (waitedTooLong) return { outcome: 'failed', why: 'waited' };
    const pauseUntil = context.now + (result.retryAfterMs ?? backoffMs(context.pausesInARow + 1, context.backoffMs, context.random));
    return { outcome: 'retry', charged: false, retryAt: pauseUntil, pauseUntil, waitingSince, why: 'pause' };
  }
  if (!result.retryable) return { outcome: 'failed', why: 'final' };
  // During an outage the probing, not each task's backoff, decides when calls are made again. A call that
  // never reached the API is no attempt, and no part of a wait at the API either: the task was never seen.
  if (!result.reachedApi) {
    const retryAt = context.outage ? context.now : context.now + backoffMs(context.attempt + context.waits, context.backoffMs, context.random);
    return { outcome: 'retry', charged: false, retryAt, waitingSince: context.waitingSince ?? undefined, why: 'unreached' };
  }
  if (context.outage) {
    if (waitedTooLong) return { outcome: 'failed', why: 'waited' };
    return { outcome: 'retry', charged: false, retryAt: context.now, waitingSince, why: 'outage' };
  }
  if (context.attempt < context.maxAttempts) {
    return {
      outcome: 'retry',
      charged: true,
      retryAt: context.now + retryDelayMs(context.attempt + context.waits, context.backoffMs, context.random, result.retryAfterMs),
      why: 'retry',
    };
  }
  return { outcome: 'failed', why: 'attempts' };
}
