import { describe, expect, it } from 'vitest';
import { MAX_PROBE_INTERVAL_MS, RATE_MARGIN_MS, RecentTimes } from '../../src/core/apiWeather.js';
import { QueueState } from '../../src/core/queueState.js';
import { decideFailure, type FailureContext } from '../../src/core/retryPolicy.js';
import { parseRate } from '../../src/config.js';
import type { ClaimEvent, OutcomeEvent, TaskDefinition } from '../../src/types.js';

const T0 = Date.parse('2026-01-01T00:00:00.000Z');
const iso = (ms: number) => new Date(T0 + ms).toISOString();

function def(id: string): TaskDefinition {
  return { id, instruction: `do ${id}`, deps: [], min_budget: 0, max_budget: 1, intensity: 'medium', added_at: iso(0) };
}

function stateWith(count: number, removed: string[] = []): QueueState {
  const state = new QueueState();
  state.addDefinitions({
    tasks: Array.from({ length: count }, (_, i) => def(`t${i}`)).filter((task) => !removed.includes(task.id)),
    removed: new Set(removed),
  });
  return state;
}

function claim(task: string, token: string, atMs: number, extra: Partial<ClaimEvent> = {}): ClaimEvent {
  return { type: 'claim', task, token, prev: null, attempt: 1, worker: 'w1', pid: 1, host: 'h', at: iso(atMs), ...extra };
}

function outcome(task: string, token: string, endMs: number, extra: Partial<OutcomeEvent> = {}): OutcomeEvent {
  return {
    type: 'outcome',
    task,
    token,
    attempt: 1,
    worker: 'w1',
    outcome: 'retry',
    called: true,
    started_at: iso(endMs - 5),
    ended_at: iso(endMs),
    duration_ms: 5,
    ...extra,
  };
}

const refused = { kind: 'connect', message: 'connection refused' } as const;

/** A call of `task` at `atMs` that got no answer, recorded as the worker records it during an outage. */
function noAnswer(state: QueueState, task: string, atMs: number): void {
  const token = `${task}@${atMs}`;
  expect(state.apply(claim(task, token, atMs))).toBe('accepted');
  state.apply(outcome(task, token, atMs + 5, { error: refused, charged: false }));
}

describe("the API's weather, folded from the log", () => {
  it('an outage: calls of 3 different tasks in a row without an answer; the same task failing again does not make one', () => {
    const state = stateWith(5);
    noAnswer(state, 't0', 0);
    noAnswer(state, 't0', 100);
    noAnswer(state, 't1', 200);
    expect(state.weather.outage()).toBeNull();
    expect(state.weather.wouldBeOutage('t1')).toBe(false);
    expect(state.weather.wouldBeOutage('t2')).toBe(true);
    noAnswer(state, 't2', 300);
    expect(state.weather.outage()).toMatchObject({ since: T0, tasks: 3, failures: 4, failedProbes: 0, lastError: refused });
    // An answer of any kind (even an error status) ends it.
    noAnswer(state, 't3', 1400);
    state.apply(claim('t4', 'x', 1500));
    state.apply(outcome('t4', 'x', 1600, { outcome: 'failed', http_status: 500, error: { kind: 'http', message: 'oops', http_status: 500 } }));
    expect(state.weather.outage()).toBeNull();
  });

  it('probes: the wait doubles with each round that failed, up to the cap; calls racing a probe do not double it again', () => {
    const state = stateWith(8);
    for (const [i, task] of ['t0', 't1', 't2'].entries()) noAnswer(state, task, i);
    const found = state.weather.outage()!;
    expect(state.weather.nextProbeAt(found) - found.lastFailureAt).toBe(1000);
    // Two probes of one round: both started before either failed.
    state.apply(claim('t3', 'p1', 1010));
    state.apply(claim('t4', 'p2', 1011));
    state.apply(outcome('t3', 'p1', 1020, { error: refused, charged: false, started_at: iso(1010) }));
    state.apply(outcome('t4', 'p2', 1021, { error: refused, charged: false, started_at: iso(1011) }));
    const afterOne = state.weather.outage()!;
    expect(afterOne.failedProbes).toBe(1);
    expect(state.weather.nextProbeAt(afterOne) - afterOne.lastFailureAt).toBe(2000);
    for (let round = 0, at = 5000; round < 10; round += 1, at += 100_000) noAnswer(state, 't5', at);
    const late = state.weather.outage()!;
    expect(state.weather.nextProbeAt(late) - late.lastFailureAt).toBe(MAX_PROBE_INTERVAL_MS);
  });

  it('a pause: no claim stamped before its end counts, from any worker; a later ask extends it; the task waits uncharged', () => {
    const state = stateWith(4);
    state.apply(claim('t0', 'a', 0));
    state.apply(
      outcome('t0', 'a', 100, {
        http_status: 429,
        error: { kind: 'http', message: 'slow down', http_status: 429 },
        charged: false,
        pause_until: iso(2100),
        retry_at: iso(2100),
        waiting_since: iso(95),
      }),
    );
    expect(state.weather.pause(T0 + 200)).toMatchObject({ until: T0 + 2100, status: 429, task: 't0' });
    expect(state.get('t0')).toMatchObject({ state: 'pending', attempts: 0, waits: 1, waitingSince: T0 + 95 });
    expect(state.apply(claim('t1', 'early', 2099))).toBe('held-back');
    expect(state.get('t1')!.state).toBe('pending');
    expect(state.apply(claim('t1', 'due', 2100))).toBe('accepted');
    state.apply(
      outcome('t1', 'due', 2200, { http_status: 429, error: { kind: 'http', message: 'still', http_status: 429 }, charged: false, pause_until: iso(5000) }),
    );
    expect(state.weather.pause(T0 + 2300)).toMatchObject({ since: T0 + 2200, until: T0 + 5000, task: 't1' });
    expect(state.weather.pausesAskedInARow).toBe(2);
    expect(state.weather.pause(T0 + 5000)).toBeNull();
  });

  it('a rate limit: a claim beyond it does not count, whatever the order of stamps in the log, and the next slot is exact', () => {
    const state = stateWith(10);
    const rate = { calls: 3, per_ms: 1000 };
    expect(state.apply(claim('t0', 'a', 0, { rate }))).toBe('accepted');
    expect(state.apply(claim('t1', 'b', 500, { rate }))).toBe('accepted');
    // Stamped earlier than the last, appended later: still counted in the window.
    expect(state.apply(claim('t2', 'c', 400, { rate }))).toBe('accepted');
    expect(state.apply(claim('t3', 'd', 900, { rate }))).toBe('held-back');
    expect(state.weather.nextRateSlot(rate, T0 + 900)).toBe(T0 + 1000 + RATE_MARGIN_MS);
    expect(state.apply(claim('t3', 'e', 1000 + RATE_MARGIN_MS, { rate }))).toBe('accepted');
    // A claim made without a rate is not held back, but counts as a call start for those with one.
    expect(state.apply(claim('t4', 'f', 1100))).toBe('accepted');
    expect(state.apply(claim('t5', 'g', 1100, { rate }))).toBe('held-back');
  });

  it('every reader agrees: claims and outcomes of tasks clean removed since still count toward the weather', () => {
    const events = [
      claim('t0', 'a', 0, { rate: { calls: 1, per_ms: 1000 } }),
      outcome('t0', 'a', 10, { outcome: 'completed', http_status: 200 }),
      claim('t1', 'b', 500, { rate: { calls: 1, per_ms: 1000 } }),
    ];
    const before = stateWith(3);
    const after = stateWith(3, ['t0']);
    expect(events.map((event) => before.apply(event))).toEqual(['accepted', 'accepted', 'held-back']);
    expect(events.map((event) => after.apply(event))).toEqual(['ignored', 'ignored', 'held-back']);
  });

  it('a retry by hand advances the generation of the idempotency key and clears the waiting', () => {
    const state = stateWith(1);
    state.apply(claim('t0', 'a', 0));
    state.apply(outcome('t0', 'a', 10, { outcome: 'failed', http_status: 422, error: { kind: 'http', message: 'no', http_status: 422 } }));
    expect(state.get('t0')!.generation).toBe(1);
    state.apply({ type: 'retry', task: 't0', at: iso(20) });
    expect(state.get('t0')).toMatchObject({ generation: 2, attempts: 0, waits: 0, waitingSince: null });
  });
});

describe('RecentTimes', () => {
  it('keeps the latest times sorted, dropping the oldest when full', () => {
    const times = new RecentTimes(4);
    for (const time of [10, 30, 20, 40, 50, 5]) times.insert(time);
    expect([1, 2, 3, 4].map((k) => times.fromEnd(k))).toEqual([50, 40, 30, 20]);
    expect(times.countAfter(25)).toBe(3);
    expect(times.countAfter(50)).toBe(0);
    expect(times.fromEnd(5)).toBe(-Infinity);
  });
});

describe("decideFailure: a task fails because of itself, never because of the API's weather", () => {
  const base: FailureContext = {
    attempt: 1,
    maxAttempts: 3,
    waits: 0,
    waitingSince: null,
    startedAt: 900,
    outage: false,
    pausesInARow: 0,
    backoffMs: 1000,
    pauseOn429: true,
    maxApiWaitMs: 3_600_000,
    now: 1000,
    random: 0,
  };
  const http = (status: number, retryAfterMs?: number) => ({
    error: { kind: 'http', http_status: status },
    retryable: status === 429 || status >= 500,
    retryAfterMs,
    reachedApi: true,
  });
  const noAnswer = (reachedApi: boolean) => ({ error: { kind: 'connect' }, retryable: true, reachedApi });

  it.each([401, 403, 407])('%d refuses the credentials: released, no attempt used', (status) => {
    expect(decideFailure(http(status), base)).toEqual({ outcome: 'released', charged: false, why: 'credentials' });
  });
  it('429 pauses the queue until Retry-After, or a growing backoff without one; 503 only with Retry-After', () => {
    expect(decideFailure(http(429, 2000), base)).toMatchObject({ outcome: 'retry', charged: false, pauseUntil: 3000, retryAt: 3000, waitingSince: 900 });
    expect(decideFailure(http(429), { ...base, pausesInARow: 2 })).toMatchObject({ pauseUntil: 1000 + 2000 });
    expect(decideFailure(http(503, 5000), base)).toMatchObject({ why: 'pause', pauseUntil: 6000 });
    expect(decideFailure(http(503), base)).toMatchObject({ why: 'retry', charged: true });
    expect(decideFailure(http(429, 2000), { ...base, pauseOn429: false })).toMatchObject({ why: 'retry', charged: true, retryAt: 3000 });
  });
  it('waiting at the API is bounded by --max-api-wait (0: no bound)', () => {
    const waiting = { ...base, waitingSince: 0, now: 3_600_000 };
    expect(decideFailure(http(429, 1000), waiting)).toEqual({ outcome: 'failed', why: 'waited' });
    expect(decideFailure(noAnswer(true), { ...waiting, outage: true })).toEqual({ outcome: 'failed', why: 'waited' });
    expect(decideFailure(http(429, 1000), { ...waiting, maxApiWaitMs: 0 })).toMatchObject({ outcome: 'retry' });
    // A call that never reached the API is never the task's doing, however long.
    expect(decideFailure(noAnswer(false), waiting)).toMatchObject({ outcome: 'retry', charged: false, why: 'unreached', waitingSince: 0 });
  });
  it('a call that never reached the API is no attempt, even the last; in an outage it waits for the probe', () => {
    expect(decideFailure(noAnswer(false), { ...base, attempt: 3 })).toMatchObject({ outcome: 'retry', charged: false, why: 'unreached', retryAt: 3000 });
    expect(decideFailure(noAnswer(false), { ...base, outage: true })).toMatchObject({ retryAt: 1000 });
  });
  it('a failure that reached the API counts, unless it is part of an outage', () => {
    expect(decideFailure(noAnswer(true), base)).toMatchObject({ outcome: 'retry', charged: true, why: 'retry' });
    expect(decideFailure(noAnswer(true), { ...base, attempt: 3 })).toEqual({ outcome: 'failed', why: 'attempts' });
    expect(decideFailure(noAnswer(true), { ...base, attempt: 3, outage: true })).toMatchObject({ outcome: 'retry', charged: false, why: 'outage' });
    expect(decideFailure({ ...http(400), retryable: false }, { ...base, outage: true })).toEqual({ outcome: 'failed', why: 'final' });
  });
});

describe('--rate', () => {
  it.each([
    ['60/m', { calls: 60, per_ms: 60_000 }],
    ['5/s', { calls: 5, per_ms: 1000 }],
    ['1000/h', { calls: 1000, per_ms: 3_600_000 }],
    ['10/30s', { calls: 10, per_ms: 30_000 }],
    [' 2 / 500ms ', { calls: 2, per_ms: 500 }],
  ])('%s', (text, rate) => expect(parseRate(text)).toEqual(rate));
  it.each(['60', '0/s', '-1/s', '1.5/s', '10/fortnight', '10/5ms', '10001/s', '/s'])('%j is refused', (text) => expect(parseRate(text)).toBeUndefined());
});
