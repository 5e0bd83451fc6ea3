import { describe, expect, it } from 'vitest';
import { resolveRunConfig, type RunConfig } from '../../src/config.js';
import type { Attempt, ExecutionResult, Executor } from '../../src/executor.js';
import type { Logger } from '../../src/types.js';
import { Worker, type RunSummary } from '../../src/worker/worker.js';
import { FakeClock, MemoryStore } from '../helpers/memoryStore.js';

/** The loop's policy alone: an in-memory store, a scripted executor, virtual time. Each test runs in milliseconds. */

const OK: ExecutionResult = { ok: true, detail: { http_status: 200 }, result: { ok: true }, body: '{"ok":true}', json: true };
const UNAVAILABLE: ExecutionResult = { ok: false, error: { kind: 'http', message: 'busy', http_status: 503 }, retryable: true, reachedApi: true };
const UNAUTHORIZED: ExecutionResult = { ok: false, error: { kind: 'http', message: 'bad key', http_status: 401 }, retryable: false, reachedApi: true };
const ABORTED: ExecutionResult = { ok: false, error: { kind: 'aborted', message: 'abandoned' }, retryable: false, reachedApi: true };

/** An executor that answers from `script` (by task id and attempt; OK when it says nothing), and records what it was given. */
class ScriptedExecutor implements Executor {
  readonly attempts: Attempt[] = [];
  /** Calls that wait until the test lets them go, or their signal aborts. */
  held: Array<{ attempt: Attempt; answer: (result: ExecutionResult) => void }> = [];
  constructor(private readonly script: (attempt: Attempt) => ExecutionResult | 'hold' = () => OK) {}
  execute(attempt: Attempt, signal: AbortSignal): Promise<ExecutionResult> {
    this.attempts.push(attempt);
    const scripted = this.script(attempt);
    if (scripted !== 'hold') return Promise.resolve(scripted);
    return new Promise((resolve) => {
      signal.addEventListener('abort', () => resolve(ABORTED), { once: true });
      this.held.push({ attempt, answer: resolve });
    });
  }
  describe(): string {
    return 'scripted';
  }
  close(): void {}
  calledIds(): string[] {
    return this.attempts.map((attempt) => attempt.task.id);
  }
}

function config(overrides: Partial<RunConfig> = {}): RunConfig {
  return { ...resolveRunConfig({ apiUrl: 'http://127.0.0.1:1/task', workerId: 'w-test', backoff: '1s', pollInterval: '2s' }, undefined, {}), ...overrides };
}

interface Setup {
  store: MemoryStore;
  executor: ScriptedExecutor;
  clock: FakeClock;
  lines: string[];
  stop: AbortController;
  abort: AbortController;
  run: Promise<RunSummary>;
}

function start(tasks: ConstructorParameters<typeof MemoryStore>[0], executor: ScriptedExecutor, overrides: Partial<RunConfig> = {}): Setup {
  const clock = new FakeClock();
  const store = new MemoryStore(tasks, clock);
  const lines: string[] = [];
  const log = (level: string) => (message: string) => lines.push(`${level} ${message}`);
  const logger: Logger = { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
  const stop = new AbortController();
  const abort = new AbortController();
  const heartbeat = { state: 'idle' as const, current_task: null, tasks_done: 0 };
  const worker = new Worker(
    config(overrides),
    { store, executor, logger, now: clock.now, random: () => 0.5, host: 'test', pid: 1, heartbeat },
    { stop: stop.signal, abort: abort.signal },
  );
  return { store, executor, clock, lines, stop, abort, run: worker.run() };
}

/** Answers every held call OK, as they come, until the run ends. */
async function answerUntilDone(executor: ScriptedExecutor, run: Promise<RunSummary>): Promise<RunSummary> {
  let done: RunSummary | undefined;
  void run.then((summary) => {
    done = summary;
  });
  while (done === undefined) {
    for (const call of executor.held.splice(0)) call.answer(OK);
    await new Promise((resolve) => setImmediate(resolve));
  }
  return done;
}

/** Resolves once the executor holds `count` calls. */
async function heldCalls(executor: ScriptedExecutor, count: number): Promise<void> {
  while (executor.held.length < count) await new Promise((resolve) => setImmediate(resolve));
}

describe('the worker loop', () => {
  it('--drain: runs tasks in the order added, a dependent only once its dependency completed, then stops', async () => {
    const executor = new ScriptedExecutor((attempt) => (attempt.task.id === 'a' && attempt.attempt === 1 ? UNAVAILABLE : OK));
    const { run, store } = start([{ id: 'a' }, { id: 'b', deps: ['a'] }, { id: 'c' }], executor, { drain: true });
    const summary = await run;
    expect(summary).toMatchObject({ reason: 'drained', executed: 4, completed: 3, retried: 1, failed: 0 });
    // While a waits for its retry, b waits for a, and c goes first.
    expect(executor.calledIds()).toEqual(['a', 'c', 'a', 'b']);
    expect(store.outcomes()).toEqual(['a:retry', 'c:completed', 'a:completed', 'b:completed']);
  });

  it('max-iterations: executes exactly that many tasks, then stops', async () => {
    const { run, executor } = start([{ id: 'a' }, { id: 'b' }, { id: 'c' }, { id: 'd' }], new ScriptedExecutor(), { maxIterations: 2 });
    expect(await run).toMatchObject({ reason: 'max-iterations', executed: 2 });
    expect(executor.calledIds()).toEqual(['a', 'b']);
  });

  it('--max-idle: counts one idle check per poll interval while nothing can become ready, then stops', async () => {
    const { run, lines, clock, store } = start([], new ScriptedExecutor(), { maxIdle: 3 });
    expect(await run).toMatchObject({ reason: 'idle', executed: 0 });
    expect(lines.filter((line) => /^info idle \d\/3/.test(line))).toHaveLength(3);
    // The first check at once, then one per --poll-interval.
    expect(clock.waited).toBe(2 * 2000);
    // Leftovers of dead workers are swept at the start, at every idle check and at the end.
    expect(store.tidies).toBe(5);
  });

  it('an idle check does not count while a retry is due: the task is retried, then the worker goes idle', async () => {
    const executor = new ScriptedExecutor((attempt) => (attempt.attempt === 1 ? UNAVAILABLE : OK));
    const { run, store, lines } = start([{ id: 'a' }], executor, { maxIdle: 1 });
    expect(await run).toMatchObject({ reason: 'idle', executed: 2, completed: 1, retried: 1 });
    expect(store.outcomes()).toEqual(['a:retry', 'a:completed']);
    expect(lines.some((line) => /^info idle: /.test(line))).toBe(true);
    // The same idempotency key on the automatic retry.
    expect(new Set(executor.attempts.map((attempt) => attempt.idempotencyKey)).size).toBe(1);
  });

  it('--drain does not stop while a task is only waiting for its retry', async () => {
    const executor = new ScriptedExecutor((attempt) => (attempt.attempt < 3 ? UNAVAILABLE : OK));
    const { run, store } = start([{ id: 'a' }], executor, { drain: true, maxAttempts: 3 });
    expect(await run).toMatchObject({ reason: 'drained', completed: 1, retried: 2 });
    expect(store.outcomes()).toEqual(['a:retry', 'a:retry', 'a:completed']);
  });

  it('first signal: the call in flight finishes and is recorded; nothing more is claimed', async () => {
    const executor = new ScriptedExecutor(() => 'hold');
    const { run, stop, store } = start([{ id: 'a' }, { id: 'b' }], executor);
    await heldCalls(executor, 1);
    stop.abort();
    executor.held[0]!.answer(OK);
    expect(await run).toMatchObject({ reason: 'stopped', executed: 1, completed: 1 });
    expect(store.outcomes()).toEqual(['a:completed']);
    expect(store.state.get('b')!.state).toBe('pending');
  });

  it('a signal that comes while the worker looks ends it, not after a poll interval of sleep', async () => {
    const { run, stop, store, clock } = start([], new ScriptedExecutor(), { pollIntervalMs: 600_000, maxIdle: 0 });
    const look = store.look.bind(store);
    store.look = async () => {
      await look();
      stop.abort();
    };
    expect(await run).toMatchObject({ reason: 'stopped', executed: 0 });
    // No wait began after the signal: the virtual clock jumps by each wait's length.
    expect(clock.waited).toBe(0);
  });

  it('second signal: the call in flight is abandoned and its task put back to pending', async () => {
    const executor = new ScriptedExecutor(() => 'hold');
    const { run, stop, abort, store } = start([{ id: 'a' }], executor);
    await heldCalls(executor, 1);
    stop.abort();
    abort.abort();
    expect(await run).toMatchObject({ reason: 'aborted', abandoned: ['a'] });
    expect(store.outcomes()).toEqual(['a:released']);
    expect(store.state.get('a')!.state).toBe('pending');
  });

  it('credentials refused: the task goes back to pending uncharged, and the worker stops', async () => {
    const { run, store, executor } = start([{ id: 'a' }, { id: 'b' }], new ScriptedExecutor(() => UNAUTHORIZED));
    const summary = await run;
    expect(summary).toMatchObject({ reason: 'credentials-refused', failed: 0, credentialsRefused: { task: 'a' } });
    expect(executor.calledIds()).toEqual(['a']);
    expect(store.state.get('a')).toMatchObject({ state: 'pending', attempts: 0 });
  });

  it('a store that can no longer be trusted ends the run before anything is claimed', async () => {
    const { run, store, executor } = start([{ id: 'a' }], new ScriptedExecutor());
    // Before the loop's first look (it sweeps leftovers first).
    store.lost = new Error('the log was replaced');
    expect(await run).toMatchObject({ reason: 'log-lost', executed: 0 });
    expect(executor.attempts).toEqual([]);
  });

  describe('--concurrency', () => {
    const tasks = (count: number) => Array.from({ length: count }, (_, i) => ({ id: `t${i}` }));

    it('keeps that many attempts in flight, and claims the next as soon as one ends', async () => {
      const executor = new ScriptedExecutor(() => 'hold');
      const { run, store } = start(tasks(5), executor, { concurrency: 3, drain: true });
      await heldCalls(executor, 3);
      expect(executor.calledIds()).toEqual(['t0', 't1', 't2']);
      executor.held.splice(1, 1)[0]!.answer(OK);
      await heldCalls(executor, 3);
      expect(executor.calledIds()).toEqual(['t0', 't1', 't2', 't3']);
      expect(await answerUntilDone(executor, run)).toMatchObject({ reason: 'drained', executed: 5, completed: 5 });
      expect(store.outcomes().sort()).toEqual(['t0:completed', 't1:completed', 't2:completed', 't3:completed', 't4:completed']);
    });

    it('max-iterations counts attempts across slots: run 10 --concurrency 4 executes exactly 10', async () => {
      const { run, executor } = start(tasks(20), new ScriptedExecutor(), { concurrency: 4, maxIterations: 10 });
      expect(await run).toMatchObject({ reason: 'max-iterations', executed: 10, completed: 10 });
      expect(executor.attempts).toHaveLength(10);
    });

    it('first signal: every attempt in flight finishes and is recorded, nothing more is claimed', async () => {
      const executor = new ScriptedExecutor(() => 'hold');
      const { run, stop, store } = start(tasks(6), executor, { concurrency: 3 });
      await heldCalls(executor, 3);
      stop.abort();
      for (const call of executor.held) call.answer(OK);
      expect(await run).toMatchObject({ reason: 'stopped', executed: 3, completed: 3 });
      expect(store.outcomes()).toEqual(['t0:completed', 't1:completed', 't2:completed']);
      expect(executor.attempts).toHaveLength(3);
    });

    it('second signal: every attempt in flight is abandoned and put back to pending', async () => {
      const executor = new ScriptedExecutor(() => 'hold');
      const { run, stop, abort, store } = start(tasks(6), executor, { concurrency: 3 });
      await heldCalls(executor, 3);
      stop.abort();
      abort.abort();
      const summary = await run;
      expect(summary.reason).toBe('aborted');
      expect([...summary.abandoned].sort()).toEqual(['t0', 't1', 't2']);
      expect(store.outcomes().sort()).toEqual(['t0:released', 't1:released', 't2:released']);
      for (const id of ['t0', 't1', 't2']) expect(store.state.get(id)!.state).toBe('pending');
    });

    it('refused credentials: claims nothing more, lets the others in flight finish, then stops', async () => {
      const executor = new ScriptedExecutor((attempt) => (attempt.task.id === 't0' ? UNAUTHORIZED : 'hold'));
      const { run, store } = start(tasks(6), executor, { concurrency: 3 });
      const summary = await answerUntilDone(executor, run);
      expect(summary).toMatchObject({ reason: 'credentials-refused', credentialsRefused: { task: 't0' } });
      // Claimed in the same fill as t0, before its answer came, at most: nothing after.
      const others = executor.calledIds().slice(1);
      expect(others.length).toBeLessThanOrEqual(2);
      expect(store.outcomes().sort()).toEqual(['t0:released', ...others.map((id) => `${id}:completed`)].sort());
    });
  });
});
