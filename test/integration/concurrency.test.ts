import type { ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { answerOk, startApi, type Api, type ApiCall } from '../helpers/apiServer.js';
import { runCli, startCli, withTempDir } from '../helpers/cli.js';
import { addAll, finalOutcomes, heldClaims, logEvents, queueIdOf, statusById } from '../helpers/queue.js';

// `worker run --concurrency N` as users run it: real processes, a real HTTP API on 127.0.0.1, real signals.

let api: Api;
beforeEach(async () => {
  api = await startApi();
});
afterEach(async () => {
  await api.close();
});

const FAST = ['--poll-interval', '100ms', '--max-idle', '0', '--backoff', '20ms'];

function runArgs(dir: string, ...extra: string[]): string[] {
  return ['--dir', dir, 'run', '--api-url', api.url, ...FAST, ...extra];
}

const tasks = (count: number) => Array.from({ length: count }, (_, i) => ({ id: `t${i}` }));

/** Holds every call until the test answers it; also counts how many were open at once, at the API. */
function holdEveryCall() {
  const held: Array<{ call: ApiCall; res: ServerResponse }> = [];
  let open = 0;
  let mostOpen = 0;
  const waiters = new Set<() => void>();
  api.setBehaviour((call, res) => {
    open += 1;
    mostOpen = Math.max(mostOpen, open);
    res.on('close', () => (open -= 1));
    held.push({ call, res });
    for (const waiter of waiters) waiter();
  });
  return {
    held,
    mostOpen: () => mostOpen,
    /** Resolves once `count` calls have arrived in all. */
    arrived: (count: number) =>
      new Promise<void>((resolve) => {
        const check = () => {
          if (held.length < count) return;
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
        check();
      }),
    answer: (entry: { call: ApiCall; res: ServerResponse }, body: Record<string, unknown> = {}) => {
      if (entry.res.writableEnded || entry.res.destroyed) return;
      entry.res.writeHead(200, { 'content-type': 'application/json' });
      entry.res.end(JSON.stringify({ status: 'completed', by: entry.call.worker, ...body }));
    },
  };
}

describe('worker run --concurrency', () => {
  it('keeps N calls in flight at once, as the API sees them, and says so in workers, status and show', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(10));
      const hold = holdEveryCall();
      const worker = startCli(runArgs(dir, '--concurrency', '4', '--worker-id', 'w-many', '--drain'));
      await hold.arrived(4);
      // A fifth would come at once if a slot were free.
      await sleep(300);
      expect(hold.held).toHaveLength(4);
      expect(hold.mostOpen()).toBe(4);
      await sleep(1100); // a heartbeat
      const workers = JSON.parse((await runCli(['--dir', dir, 'workers', '--json'])).stdout) as Array<Record<string, unknown>>;
      expect(workers[0]).toMatchObject({ worker: 'w-many', state: 'running', concurrency: 4 });
      expect([...(workers[0]!.current_tasks as string[])].sort()).toEqual(['t0', 't1', 't2', 't3']);
      expect((await runCli(['--dir', dir, 'workers'])).stdout).toMatch(/w-many\s+alive\s+\d+\s+\S+\s+t\d \+3 \(4 of 4\)/);
      expect((await statusById(dir)).get('t0')!.reason).toMatch(/^running on w-many for \d+s \(attempt 1; 4 of 4 in flight\)$/);
      // Answer as they come: every task once, never more than 4 open.
      while (hold.held.length < 10 || hold.held.some((entry) => !entry.res.writableEnded)) {
        for (const entry of hold.held) hold.answer(entry);
        await sleep(20);
      }
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toMatch(/concurrency 4/);
      expect(result.stderr).toMatch(/drained: 10 completed$/m);
      expect(hold.mostOpen()).toBe(4);
      expect(api.calls.map((call) => call.task_id).sort()).toEqual(
        tasks(10)
          .map((task) => task.id)
          .sort(),
      );
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('run 10 --concurrency 4 executes exactly 10 tasks', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(20));
      api.setBehaviour((call, res) => {
        setTimeout(() => answerOk(call, res), 20);
      });
      const result = await runCli(['--dir', dir, 'run', '10', '--api-url', api.url, '--concurrency', '4']);
      expect(result.code, result.stderr).toBe(0);
      expect(api.calls).toHaveLength(10);
      expect(result.stderr).toMatch(/stopping: executed 10 tasks \(max-iterations\)/);
      const states = [...(await statusById(dir)).values()].map((task) => task.state);
      expect(states.filter((state) => state === 'completed')).toHaveLength(10);
      expect(states.filter((state) => state === 'pending')).toHaveLength(10);
    });
  });

  it('SIGKILL with N in flight: all N are taken over at once on this host, each called again with the same key, one final outcome each', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(6));
      const hold = holdEveryCall();
      const doomed = startCli(runArgs(dir, '--concurrency', '4', '--worker-id', 'doomed'));
      await hold.arrived(4);
      const inFlight = hold.held.map((entry) => entry.call.task_id).sort();
      doomed.process.kill('SIGKILL');
      await doomed.exited;
      const rescuer = startCli(runArgs(dir, '--concurrency', '4', '--worker-id', 'rescuer', '--drain'));
      // The four taken over, then the rest; answered as they come.
      while (hold.held.filter((entry) => entry.call.worker === 'rescuer').length < 6) {
        for (const entry of hold.held) if (entry.call.worker === 'rescuer') hold.answer(entry);
        await sleep(20);
      }
      for (const entry of hold.held) if (entry.call.worker === 'rescuer') hold.answer(entry);
      const result = await rescuer.exited;
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr.match(/taking over t\d: held by doomed, whose process is gone/g)).toHaveLength(4);
      const queueId = await queueIdOf(dir);
      for (const task of tasks(6)) {
        const calls = api.callsFor(task.id);
        // Repeats only for the killed calls, with the same idempotency key.
        expect(calls, task.id).toHaveLength(inFlight.includes(task.id) ? 2 : 1);
        for (const call of calls) expect(call.idempotencyKey).toBe(`${queueId}:${task.id}:1`);
      }
      const finals = finalOutcomes(await logEvents(dir));
      for (const task of tasks(6)) expect(finals.get(task.id), task.id).toBe(1);
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('SIGSTOP past --lock-stale with N in flight, then SIGCONT: the others take them over, and the frozen worker records none of its N outcomes', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(3));
      const hold = holdEveryCall();
      const frozen = startCli(runArgs(dir, '--concurrency', '3', '--worker-id', 'frozen', '--lock-stale', '2s'));
      await hold.arrived(3);
      frozen.process.kill('SIGSTOP');
      const other = startCli(runArgs(dir, '--concurrency', '3', '--worker-id', 'other', '--lock-stale', '2s', '--drain'));
      await hold.arrived(6);
      for (const entry of hold.held) if (entry.call.worker === 'other') hold.answer(entry);
      expect((await other.exited).code).toBe(0);
      frozen.process.kill('SIGCONT');
      for (const entry of hold.held) if (entry.call.worker === 'frozen') hold.answer(entry);
      for (let i = 0; i < 3; i += 1) await frozen.waitForLog(new RegExp(`lost the (lock|claim) (of|on) t${i}`));
      frozen.process.kill('SIGTERM');
      expect((await frozen.exited).code).toBe(0);
      const outcomes = (await logEvents(dir)).filter((event) => event.type === 'outcome' && event.outcome === 'completed');
      expect(outcomes.map((event) => `${event.task}:${event.worker}`).sort()).toEqual(['t0:other', 't1:other', 't2:other']);
      for (const [, task] of await statusById(dir)) expect(task).toMatchObject({ state: 'completed', result: { by: 'other' } });
      expect(await heldClaims(dir)).toEqual([]);
    });
  }, 30_000);

  it('first signal with N in flight: every call finishes and is recorded, nothing more is claimed, exit 0', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(8));
      const hold = holdEveryCall();
      const worker = startCli(runArgs(dir, '--concurrency', '3'));
      await hold.arrived(3);
      worker.process.kill('SIGTERM');
      await worker.waitForLog(/received SIGTERM/);
      for (const entry of hold.held) hold.answer(entry);
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(0);
      expect(api.calls).toHaveLength(3);
      const states = [...(await statusById(dir)).values()].map((task) => task.state);
      expect(states.filter((state) => state === 'completed')).toHaveLength(3);
      expect(states.filter((state) => state === 'pending')).toHaveLength(5);
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('second signal with N in flight: every call is abandoned (the API sees each connection closed), each task pending again, exit 130', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(5));
      const hold = holdEveryCall();
      const worker = startCli(runArgs(dir, '--concurrency', '3'));
      await hold.arrived(3);
      worker.process.kill('SIGTERM');
      await worker.waitForLog(/received SIGTERM/);
      worker.process.kill('SIGTERM');
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(130);
      expect(result.stderr).toMatch(/aborted by a second signal: tasks "t\d", "t\d", "t\d" were put back to pending/);
      await sleep(100);
      for (const entry of hold.held) expect(entry.res.destroyed || entry.res.socket === null || entry.res.socket.destroyed).toBe(true);
      for (const [, task] of await statusById(dir)) expect(task.state).toBe('pending');
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('--rate with --concurrency starts at most the rate, however many slots are free', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(12));
      const result = await runCli(runArgs(dir, '--concurrency', '20', '--rate', '4/s', '--drain'));
      expect(result.code, result.stderr).toBe(0);
      const starts = api.calls.map((call) => call.receivedAt).sort((a, b) => a - b);
      // In any second, at most 4 calls started at the API.
      for (let i = 4; i < starts.length; i += 1) expect(starts[i]! - starts[i - 4]!).toBeGreaterThanOrEqual(1000 - 30);
    });
  }, 30_000);

  it('refuses a --concurrency out of range, naming it', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(1));
      for (const bad of ['0', '1001', 'many']) {
        const result = await runCli(runArgs(dir, '--concurrency', bad));
        expect(result.code).toBe(2);
        expect(result.stderr).toMatch(/--concurrency \(or WORKER_CONCURRENCY\)/);
      }
      expect(api.calls).toHaveLength(0);
    });
  });
});
