import { describe, expect, it } from 'vitest';
import { QueueState } from '../../src/core/queueState.js';
import type { ClaimEvent, OutcomeEvent, TaskDefinition, WeatherRecord } from '../../src/types.js';

const AT = '2026-01-01T00:00:00.000Z';

function def(id: string, deps: string[] = []): TaskDefinition {
  return { id, instruction: `do ${id}`, deps, min_budget: 0, max_budget: 1, intensity: 'medium', added_at: AT };
}

function claim(task: string, token: string, prev: string | null = null, worker = 'w1'): ClaimEvent {
  return { type: 'claim', task, token, prev, attempt: 1, worker, pid: 1, host: 'h', at: AT };
}

function outcome(task: string, token: string, result: OutcomeEvent['outcome'], extra: Partial<OutcomeEvent> = {}): OutcomeEvent {
  return { type: 'outcome', task, token, attempt: 1, worker: 'w1', outcome: result, called: true, started_at: AT, ended_at: AT, duration_ms: 1, ...extra };
}

function stateWith(...defs: TaskDefinition[]): QueueState {
  const state = new QueueState();
  state.addDefinitions({ tasks: defs, removed: new Set() });
  return state;
}

const ids = (state: QueueState) => state.readyTasks(Date.now(), 100).map((task) => task.def.id);

describe('QueueState: the fold decides every race', () => {
  it('offers ready tasks in the order they were added, and dependents once their dependencies complete', () => {
    const state = stateWith(def('a'), def('b'), def('c', ['a', 'b']), def('d'));
    expect(ids(state)).toEqual(['a', 'b', 'd']);
    state.apply(claim('a', 'ta'));
    state.apply(outcome('a', 'ta', 'completed'));
    expect(ids(state)).toEqual(['b', 'd']);
    state.apply(claim('b', 'tb'));
    state.apply(outcome('b', 'tb', 'completed'));
    expect(ids(state)).toEqual(['c', 'd']);
  });

  it('accepts only the first of two fresh claims of one task', () => {
    const state = stateWith(def('a'));
    expect(state.apply(claim('a', 'first', null, 'w1'))).toBe('accepted');
    expect(state.apply(claim('a', 'second', null, 'w2'))).toBe('ignored');
    expect(state.get('a')!.claim!.worker).toBe('w1');
    expect(state.get('a')!.attempts).toBe(1);
  });

  it('refuses a claim of a task whose dependencies are not completed', () => {
    const state = stateWith(def('a'), def('b', ['a']));
    expect(state.apply(claim('b', 'tb'))).toBe('ignored');
    expect(state.get('b')!.state).toBe('pending');
  });

  it('fences outcomes: after a takeover, the old claim can record nothing', () => {
    const state = stateWith(def('a'));
    state.apply(claim('a', 'old', null, 'frozen'));
    expect(state.apply(claim('a', 'new', 'old', 'rescuer'))).toBe('accepted');
    expect(state.get('a')!.attempts).toBe(2);
    expect(state.get('a')!.lastError).toMatchObject({ kind: 'worker_died' });
    expect(state.apply(outcome('a', 'old', 'completed', { result: 'stale' }))).toBe('ignored');
    expect(state.get('a')!.state).toBe('running');
    expect(state.apply(outcome('a', 'new', 'completed', { result: 'fresh' }))).toBe('accepted');
    expect(state.get('a')!.result).toBe('fresh');
    expect(state.apply(outcome('a', 'new', 'completed'))).toBe('ignored');
  });

  it('accepts only one of two takeovers of the same dead claim', () => {
    const state = stateWith(def('a'));
    state.apply(claim('a', 'dead'));
    expect(state.apply(claim('a', 'x', 'dead', 'w2'))).toBe('accepted');
    expect(state.apply(claim('a', 'y', 'dead', 'w3'))).toBe('ignored');
    expect(state.get('a')!.claim!.token).toBe('x');
  });

  it('keeps a task in backoff out of the ready list until its retry time', () => {
    const state = stateWith(def('a'));
    state.apply(claim('a', 't1'));
    const retryAt = Date.now() + 60_000;
    state.apply(outcome('a', 't1', 'retry', { retry_at: new Date(retryAt).toISOString(), error: { kind: 'http', message: '500', http_status: 500 } }));
    expect(state.readyTasks(Date.now(), 10)).toEqual([]);
    expect(state.nextRetryAt()).toBe(retryAt);
    expect(state.readyTasks(retryAt, 10).map((task) => task.def.id)).toEqual(['a']);
  });

  it('derives blocked through chains of dependents, and retry unblocks them', () => {
    const state = stateWith(def('root'), def('child', ['root']), def('grandchild', ['child']), def('other'));
    state.apply(claim('root', 't'));
    state.apply(outcome('root', 't', 'failed', { error: { kind: 'http', message: '400', http_status: 400 } }));
    const blocked = state.blockedTasks();
    expect([...blocked.keys()]).toEqual(['child', 'grandchild']);
    expect(blocked.get('grandchild')!.def.id).toBe('root');
    expect(state.apply({ type: 'retry', task: 'root', at: AT })).toBe('accepted');
    expect(state.get('root')).toMatchObject({ state: 'pending', attempts: 0 });
    expect(state.blockedTasks().size).toBe(0);
    expect(ids(state)).toEqual(['root', 'other']);
    expect(state.apply({ type: 'retry', task: 'root', at: AT })).toBe('ignored');
  });

  it('gives back a claim released before the call without counting an attempt', () => {
    const state = stateWith(def('a'));
    state.apply(claim('a', 't'));
    state.apply(outcome('a', 't', 'released', { called: false }));
    expect(state.get('a')).toMatchObject({ state: 'pending', attempts: 0 });
    expect(ids(state)).toEqual(['a']);
  });

  it('reports events of tasks it does not know', () => {
    expect(stateWith(def('a')).apply(claim('zzz', 't'))).toBe('unknown-task');
  });

  it('offers the right next tasks after 99,990 completions in a queue of 100,000', () => {
    const defs = Array.from({ length: 100_000 }, (_, i) => def(`t${i}`));
    const state = stateWith(...defs);
    for (let i = 0; i < 99_990; i += 1) {
      state.apply(claim(`t${i}`, `k${i}`));
      state.apply(outcome(`t${i}`, `k${i}`, 'completed'));
    }
    expect(state.readyTasks(Date.now(), 3).map((task) => task.def.id)).toEqual(['t99990', 't99991', 't99992']);
    expect(state.running).toBe(0);
  });
});

describe('reasons', () => {
  it('say when a task in backoff will be tried again, and how many attempts it may have', async () => {
    const { reasonFor } = await import('../../src/core/reasons.js');
    const state = stateWith(def('a'));
    state.apply(claim('a', 't1'));
    const retryAt = Date.parse('2026-01-01T12:03:05.000Z');
    state.apply(
      outcome('a', 't1', 'retry', { retry_at: new Date(retryAt).toISOString(), max_attempts: 3, error: { kind: 'http', message: 'busy', http_status: 503 } }),
    );
    const context = { state, now: retryAt - 10_000, blocked: state.blockedTasks(), liveness: new Map(), weather: null };
    expect(reasonFor(state.get('a')!, context)).toBe('retry 2/3 after backoff, at 12:03:05 (last: http 503)');
    expect(reasonFor(state.get('a')!, { ...context, now: retryAt + 1 })).toBe('ready for attempt 2 (last: http 503)');
  });
});

describe('QueueState: changes by hand', () => {
  it('rerun: a completed task is pending again with the next generation, and its dependents wait for it again', () => {
    const state = stateWith(def('a'), def('b', ['a']));
    state.apply(claim('a', 't1'));
    state.apply(outcome('a', 't1', 'completed'));
    expect(ids(state)).toEqual(['b']);
    expect(state.apply({ type: 'rerun', task: 'a', at: AT, by: 'ann@h' })).toBe('accepted');
    expect(state.get('a')).toMatchObject({ state: 'pending', attempts: 0, generation: 2 });
    expect(ids(state)).toEqual(['a']);
    // A second rerun of a task that is not completed changes nothing.
    expect(state.apply({ type: 'rerun', task: 'a', at: AT })).toBe('ignored');
    state.apply(claim('a', 't2'));
    state.apply(outcome('a', 't2', 'completed'));
    expect(ids(state)).toEqual(['b']);
  });

  it('pause: no claim counts until resume, whichever worker makes it; a weather record carries the pause', () => {
    const state = stateWith(def('a'));
    expect(state.apply({ type: 'paused', at: AT, by: 'ann@h' })).toBe('accepted');
    expect(state.apply({ type: 'paused', at: AT, by: 'bob@h' })).toBe('ignored');
    expect(state.apply(claim('a', 't1'))).toBe('held-back');
    expect(state.get('a')!.state).toBe('pending');
    const carried = stateWith(def('a'));
    // As a compaction writes it: the weather's snapshot, and the pause by hand.
    carried.apply({
      type: 'weather',
      at: AT,
      state: { ...(state.weather.snapshot() as unknown as WeatherRecord['state']), paused_by_hand: state.pausedByHand },
    });
    expect(carried.pausedByHand).toEqual({ since: AT, by: 'ann@h' });
    expect(state.apply({ type: 'resumed', at: AT, by: 'ann@h' })).toBe('accepted');
    expect(state.apply(claim('a', 't2'))).toBe('accepted');
  });

  it('cancel of a running task is a request its outcome answers; a removal record changes no task', () => {
    const state = stateWith(def('a'), def('b'));
    state.apply(claim('a', 't1'));
    expect(state.apply({ type: 'cancel', task: 'a', at: AT, by: 'ann@h' })).toBe('accepted');
    expect(state.get('a')).toMatchObject({ state: 'running', cancelRequested: { at: AT, by: 'ann@h' } });
    state.apply(outcome('a', 't1', 'failed', { error: { kind: 'cancelled', message: 'cancelled' } }));
    expect(state.get('a')).toMatchObject({ state: 'failed', cancelRequested: undefined, lastError: { kind: 'cancelled' } });
    expect(state.apply({ type: 'removed', at: AT, by: 'ann@h', command: 'remove', tasks: ['b'], count: 1 })).toBe('accepted');
    expect(state.get('b')!.state).toBe('pending');
  });

  it('a task removed from the definitions leaves the fold, and is never ready again', () => {
    const state = stateWith(def('a'), def('b', ['a']));
    state.addDefinitions({ tasks: [def('a')], removed: new Set(['b']) }, true);
    expect(state.get('b')).toBeUndefined();
    expect(state.tasks().map((task) => task.def.id)).toEqual(['a']);
    state.apply(claim('a', 't1'));
    state.apply(outcome('a', 't1', 'completed'));
    expect(ids(state)).toEqual([]);
    expect(state.apply(claim('b', 't2'))).toBe('ignored');
  });
});
