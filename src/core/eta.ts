import { formatDuration } from './duration.js';

/** How far back completions count toward the rate an estimate is made from. */
export const ETA_WINDOW_MS = 10 * 60_000;

/** When the tasks left may be done, at the rate of recent completions; null while no rate is known. */
export interface Eta {
  /** Tasks that may still complete: pending (not blocked) and running. */
  left: number;
  perMinute: number;
  ms: number;
}

/**
 * From the times tasks completed (ms since epoch; any order): the rate of the last ETA_WINDOW_MS, measured
 * from the first completion in it to `now`, and the time the `left` tasks take at that rate. Null with
 * fewer than two completions in the window, or nothing left.
 */
export function estimate(completedAt: Iterable<number>, left: number, now: number): Eta | null {
  if (left <= 0) return null;
  let count = 0;
  let first = Infinity;
  for (const at of completedAt) {
    if (at < now - ETA_WINDOW_MS || at > now) continue;
    count += 1;
    first = Math.min(first, at);
  }
  const spanMs = now - first;
  if (count < 2 || spanMs <= 0) return null;
  const perMs = count / spanMs;
  return { left, perMinute: perMs * 60_000, ms: left / perMs };
}

/** `about 3m left at 12.5/min`. */
export function describeEta(eta: Eta): string {
  const rate = eta.perMinute >= 10 ? eta.perMinute.toFixed(0) : eta.perMinute.toFixed(1);
  return `about ${formatDuration(Math.max(1000, Math.round(eta.ms / 1000) * 1000))} left at ${rate}/min`;
}
