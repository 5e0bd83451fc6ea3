import type { AttemptError, ClaimEvent, OutcomeEvent } from '../types.js';

/**
 * The API's weather, as the execution log records it for every process of the queue: an outage (calls of
 * several tasks in a row that got no answer), a pause the API asked for (429, or 503 with Retry-After),
 * and the start times of recent calls, which a rate limit (--rate) counts.
 *
 * It is folded from every claim and outcome in log order, whatever becomes of their tasks (even of tasks
 * `clean` removed since), so every reader, started at any time, reaches the same weather and the same
 * decisions. Pure: no I/O, no clock.
 */

/** Failures of this many different tasks in a row, with no answer from the API between them, make an outage. */
export const OUTAGE_AFTER_TASKS = 3;
/** During an outage one task probes the API, first this long after the outage was found, then at doubling intervals. */
const FIRST_PROBE_INTERVAL_MS = 1000;
export const MAX_PROBE_INTERVAL_MS = 60_000;
/** The most calls a rate limit may allow per period: the fold keeps the start times of this many recent calls. */
export const MAX_RATE_CALLS = 10_000;
/**
 * A call starts a little after its claim is stamped; the window a rate limit counts is longer than its period
 * by this much, and a claim whose call cannot be sent within RATE_SEND_WITHIN_MS of its stamp is given back
 * uncalled. So calls are never closer together at the API than the limit allows, unless the network's delay
 * varies by more than the difference.
 */
export const RATE_MARGIN_MS = 50;
export const RATE_SEND_WITHIN_MS = 25;

/** Error kinds of a call that got no answer from the API: what an outage is made of. */
const NO_ANSWER_KINDS = new Set<AttemptError['kind']>(['connect', 'dns', 'timeout']);

export interface RateLimit {
  calls: number;
  per_ms: number;
}

export interface Outage {
  /** When the first failed call of the outage started (ms since epoch). */
  since: number;
  /** When the outage was found: the end of the call that made it one. */
  foundAt: number;
  /** Calls that failed in a row, and of how many different tasks (counted up to OUTAGE_AFTER_TASKS). */
  failures: number;
  tasks: number;
  /** Rounds of probes (calls started after the last failure ended) that failed too: each doubles the wait for the next. */
  failedProbes: number;
  lastFailureAt: number;
  lastError: AttemptError;
}

export interface Pause {
  /** When the API asked for the first time in this pause; later asks extend `until`. */
  since: number;
  until: number;
  status: number | undefined;
  task: string;
}

export type WeatherRefusal = 'paused' | 'rate';

export interface WeatherSnapshot {
  streak: (Omit<Outage, 'tasks'> & { taskIds: string[]; found: boolean }) | null;
  pause: Pause | null;
  pauses_in_a_row: number;
  starts: number[];
  rate_seen: (RateLimit & { worker: string }) | null;
}

export class ApiWeather {
  private streak: (Omit<Outage, 'tasks'> & { taskIds: Set<string>; found: boolean }) | null = null;
  private pauseState: Pause | null = null;
  /** Pauses asked for in a row without another answer between them: the backoff when the API gives no Retry-After. */
  private pausesInARow = 0;
  private starts = new RecentTimes(MAX_RATE_CALLS);
  private rateSeen: (RateLimit & { worker: string }) | null = null;

  /** All of it, as plain data: what `worker compact` writes, since the events it came from may be dropped. */
  snapshot(): WeatherSnapshot {
    const streak = this.streak === null ? null : { ...this.streak, taskIds: [...this.streak.taskIds] };
    return { streak, pause: this.pauseState, pauses_in_a_row: this.pausesInARow, starts: this.starts.all(), rate_seen: this.rateSeen };
  }

  restore(snapshot: WeatherSnapshot): void {
    this.streak = snapshot.streak === null ? null : { ...snapshot.streak, taskIds: new Set(snapshot.streak.taskIds) };
    this.pauseState = snapshot.pause;
    this.pausesInARow = snapshot.pauses_in_a_row;
    this.starts = new RecentTimes(MAX_RATE_CALLS);
    for (const time of snapshot.starts) this.starts.insert(time);
    this.rateSeen = snapshot.rate_seen;
  }

  /**
   * Whether a claim may count, or why not: a claim stamped before the end of a pause the log already
   * holds, or one that would exceed the rate limit it was made under. A claim that may count is a call
   * start for every later rate check, whether or not its task accepts it.
   */
  admit(claim: ClaimEvent): WeatherRefusal | null {
    const at = Date.parse(claim.at);
    if (this.pauseState !== null && at < this.pauseState.until) return 'paused';
    if (claim.rate !== undefined && this.starts.countAfter(at - rateWindowMs(claim.rate)) >= claim.rate.calls) {
      this.rateSeen = { ...claim.rate, worker: claim.worker };
      return 'rate';
    }
    this.recordStart(claim);
    return null;
  }

  /** A claim the store admitted itself: a call start for every later rate check. */
  recordStart(claim: ClaimEvent): void {
    if (claim.rate !== undefined) this.rateSeen = { ...claim.rate, worker: claim.worker };
    this.starts.insert(Date.parse(claim.at));
  }

  observe(outcome: OutcomeEvent): void {
    if (outcome.http_status !== undefined) {
      // The API answered: whatever it said, it is reachable.
      this.streak = null;
      if (outcome.pause_until === undefined) {
        this.pausesInARow = 0;
        return;
      }
      const endedAt = Date.parse(outcome.ended_at);
      const until = Date.parse(outcome.pause_until);
      this.pausesInARow += 1;
      if (this.pauseState === null || this.pauseState.until <= endedAt) {
        this.pauseState = { since: endedAt, until, status: outcome.http_status, task: outcome.task };
      } else if (until > this.pauseState.until) {
        this.pauseState = { ...this.pauseState, until, status: outcome.http_status, task: outcome.task };
      }
      return;
    }
    const error = outcome.error;
    if (!outcome.called || error === undefined || !NO_ANSWER_KINDS.has(error.kind)) return;
    const startedAt = Date.parse(outcome.started_at);
    const endedAt = Date.parse(outcome.ended_at);
    this.streak ??= { since: startedAt, foundAt: 0, failures: 0, taskIds: new Set(), failedProbes: 0, lastFailureAt: endedAt, lastError: error, found: false };
    const streak = this.streak;
    if (streak.found && startedAt >= streak.lastFailureAt) {
      // A probe: it started after the last failure ended. Probes that raced it in the same round do not count again.
      streak.failedProbes += 1;
    }
    streak.failures += 1;
    streak.lastFailureAt = Math.max(streak.lastFailureAt, endedAt);
    streak.lastError = error;
    if (streak.found) return;
    streak.taskIds.add(outcome.task);
    if (streak.taskIds.size >= OUTAGE_AFTER_TASKS) {
      streak.found = true;
      streak.foundAt = endedAt;
    }
  }

  /** The outage in force, if calls of enough different tasks failed in a row. */
  outage(): Outage | null {
    const streak = this.streak;
    if (streak === null || !streak.found) return null;
    const { taskIds: _taskIds, found: _found, ...outage } = streak;
    return { ...outage, tasks: streak.taskIds.size };
  }

  /** Whether a call of `task` that got no answer would make an outage, or is part of one. */
  wouldBeOutage(task: string): boolean {
    const streak = this.streak;
    if (streak === null) return OUTAGE_AFTER_TASKS <= 1;
    return streak.found || streak.taskIds.size + (streak.taskIds.has(task) ? 0 : 1) >= OUTAGE_AFTER_TASKS;
  }

  /** When the next probe may start during an outage. */
  nextProbeAt(outage: Outage): number {
    return outage.lastFailureAt + Math.min(MAX_PROBE_INTERVAL_MS, FIRST_PROBE_INTERVAL_MS * 2 ** Math.min(outage.failedProbes, 16));
  }

  /** The pause in force at `now`, if any. */
  pause(now: number): Pause | null {
    return this.pauseState !== null && this.pauseState.until > now ? this.pauseState : null;
  }

  /** Pauses asked for in a row so far (0 after any other answer). */
  get pausesAskedInARow(): number {
    return this.pausesInARow;
  }

  /** The earliest time a call may start under `rate`: `now` if it may start now. */
  nextRateSlot(rate: RateLimit, now: number): number {
    const window = rateWindowMs(rate);
    if (this.starts.countAfter(now - window) < rate.calls) return now;
    return this.starts.fromEnd(rate.calls) + window;
  }

  /** Call starts within `ms` before `now`, for people. */
  startsWithin(ms: number, now: number): number {
    return this.starts.countAfter(now - ms);
  }

  /** The rate limit the latest claim made under one named: what status reports, since only workers are given --rate. */
  get lastRateSeen(): (RateLimit & { worker: string }) | null {
    return this.rateSeen;
  }
}

export function rateWindowMs(rate: RateLimit): number {
  return rate.per_ms + RATE_MARGIN_MS;
}

/**
 * The most recent call start times, kept sorted in a ring: appended in log order, which is almost the
 * order of time, so an insertion moves few entries. When full, the oldest goes.
 */
export class RecentTimes {
  private times: Float64Array | undefined;
  private start = 0;
  private length = 0;

  constructor(private readonly capacity: number) {}

  private get(index: number): number {
    return this.times![(this.start + index) % this.capacity]!;
  }

  private set(index: number, value: number): void {
    this.times![(this.start + index) % this.capacity] = value;
  }

  insert(time: number): void {
    // Allocated on the first call start: most readers (status, show) may never need it.
    this.times ??= new Float64Array(this.capacity);
    if (this.length === this.capacity) {
      if (time <= this.get(0)) return;
      this.start = (this.start + 1) % this.capacity;
      this.length -= 1;
    }
    let index = this.length;
    while (index > 0 && this.get(index - 1) > time) {
      this.set(index, this.get(index - 1));
      index -= 1;
    }
    this.set(index, time);
    this.length += 1;
  }

  /** How many times are later than `time`. O(log n). */
  countAfter(time: number): number {
    let low = 0;
    let high = this.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.get(middle) > time) high = middle;
      else low = middle + 1;
    }
    return this.length - low;
  }

  all(): number[] {
    return Array.from({ length: this.length }, (_, i) => this.get(i));
  }

  /** The k-th latest time (1: the latest); -Infinity when fewer are kept. */
  fromEnd(k: number): number {
    return k <= this.length ? this.get(this.length - k) : -Infinity;
  }
}
