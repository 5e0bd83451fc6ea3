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
