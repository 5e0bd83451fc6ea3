import { describe, expect, it } from 'vitest';
import { compactLog } from '../../src/folder/compaction.js';
import { ExecutionLogWriter } from '../../src/folder/executionLog.js';
import { QueueStore } from '../../src/folder/store.js';
import { join } from 'node:path';
import { startApi } from '../helpers/apiServer.js';
import { runCli, withTempDir } from '../helpers/cli.js';
import { addAll } from '../helpers/queue.js';
import type { ClaimEvent, OutcomeEvent } from '../../src/types.js';

/**
 * The switch between generations, step by step on real files, where processes would make it a matter of
 * timing: what a reader does at a seal, and what becomes of an outcome appended after a seal it had not
 * read yet.
 */

const AT = new Date().toISOString();
const claim = (task: string, token: string): ClaimEvent => ({ type: 'claim', task, token, prev: null, attempt: 1, worker: 'w', pid: 1, host: 'h', at: AT });
const completed = (task: string, token: string): OutcomeEvent => ({
  type: 'outcome',
  task,
  token,
  attempt: 1,
  worker: 'w',
  outcome: 'completed',
  called: true,
  started_at: AT,
  ended_at: AT,
  duration_ms: 1,
  http_status: 200,
  result: { done: task },
});

describe('compaction: the switch between generations', () => {
  it('a reader at the seal goes on in the next generation from where it was, without reading the compacted part again', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b' }]);
      const worker = await QueueStore.open(dir);
      worker.append([claim('a', 'ta'), completed('a', 'ta')]);
      worker.refresh();
      compactLog(
        worker.paths,
        () => undefined,
        () => new Date(),
      );
      const other = await QueueStore.open(dir);
      other.append([claim('b', 'tb')]);
      worker.refresh();
      expect(worker.state.get('a')!.state).toBe('completed');
      expect(worker.state.get('b')!.state).toBe('running');
      // It went on from the compacted part's end: had it read it again, it would have met a's claim twice.
      expect(worker.state.get('a')!.attempts).toBe(1);
      worker.close();
      other.close();
    });
  });

  it('an outcome appended after a seal its writer had not read is appended again in the next generation', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      const worker = await QueueStore.open(dir);
      worker.append([claim('a', 'ta')]);
      worker.refresh();
      // A compaction seals the log while the worker's call runs; the worker has not read the seal.
      const sealer = new ExecutionLogWriter(worker.paths.logFile);
      sealer.append([{ type: 'sealed', generation: 1, at: AT }]);
      sealer.close();
      worker.append([completed('a', 'ta')]);
      // The compaction finishes: the outcome, after the seal, is not in the next generation.
      compactLog(
        worker.paths,
        () => undefined,
        () => new Date(),
      );
      const before = await QueueStore.open(dir);
      expect(before.state.get('a')!.state).toBe('running');
      before.close();
      // The worker reads on, finds its claim still in force there, and appends the outcome again.
      worker.refresh();
      const after = await QueueStore.open(dir);
      expect(after.state.get('a')).toMatchObject({ state: 'completed', attempts: 1, result: { done: 'a' } });
      after.close();
      worker.close();
    });
  });

  it('a reader that missed two compactions reads the new log from its start', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b' }]);
      const sleeper = await QueueStore.open(dir);
      const other = await QueueStore.open(dir);
      other.append([claim('a', 'ta'), completed('a', 'ta')]);
      compactLog(
        other.paths,
        () => undefined,
        () => new Date(),
      );
      compactLog(
        other.paths,
        () => undefined,
        () => new Date(),
      );
      other.refresh();
      other.append([claim('b', 'tb')]);
      sleeper.refresh();
      expect(sleeper.state.get('a')!.state).toBe('completed');
      expect(sleeper.state.get('b')!.state).toBe('running');
      sleeper.close();
      other.close();
    });
  });
});

describe('a compaction that died after sealing the log', () => {
  it('is finished by a worker at once, which then drains the queue', async () => {
    await withTempDir(async (dir) => {
      const api = await startApi();
      try {
        await addAll(dir, [{ id: 'a' }]);
        const sealer = new ExecutionLogWriter(join(dir, 'queue', 'execution-log.jsonl'));
        sealer.append([{ type: 'sealed', generation: 1, at: AT }]);
        sealer.close();
        const started = Date.now();
        const run = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--drain']);
        expect(run.code, run.stderr).toBe(0);
        expect(Date.now() - started).toBeLessThan(10_000);
        expect(api.calls.map((call) => call.task_id)).toEqual(['a']);
        const after = await QueueStore.open(dir);
        expect(after.state.get('a')!.state).toBe('completed');
        expect(after.betweenGenerations).toBe(false);
        after.close();
      } finally {
        await api.close();
      }
    });
  });

  it('is finished by the next command that takes the queue-wide lock', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b' }]);
      const store = await QueueStore.open(dir);
      store.append([claim('a', 'ta'), completed('a', 'ta')]);
      const sealer = new ExecutionLogWriter(store.paths.logFile);
      sealer.append([{ type: 'sealed', generation: 1, at: AT }]);
      sealer.close();
      store.close();
      const { cancelTask } = await import('../../src/commands/repair.js');
      const { openStore } = await import('../../src/backends.js');
      const folder = await openStore({ place: { kind: 'folder', dir }, create: false, lockStaleMs: 30_000, host: 'test' });
      await cancelTask(folder, 'b', { by: 'test', now: () => new Date(), waitMs: 0, sleep: async () => undefined });
      await folder.close();
      const after = await QueueStore.open(dir);
      expect(after.state.get('a')!.state).toBe('completed');
      expect(after.state.get('b')!.lastError).toMatchObject({ kind: 'cancelled' });
      expect(after.betweenGenerations).toBe(false);
      after.close();
    });
  });
});
