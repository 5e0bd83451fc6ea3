import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import { answerOk, startApi, type Api, type ApiCall } from '../helpers/apiServer.js';
import { runCli, startCli, withTempDir } from '../helpers/cli.js';
import { addAll, logEvents, queueIdOf, statusById } from '../helpers/queue.js';

/**
 * The API's weather: outages, pauses it asks for, a queue-wide rate limit, refused credentials, and
 * idempotency keys that belong to one queue and one try. Real worker processes against a real HTTP
 * server on 127.0.0.1, whose record of calls is the ground truth.
 */

const FAST = ['--poll-interval', '100ms', '--backoff', '20ms'];
const tasks = (count: number, prefix = 't') => Array.from({ length: count }, (_, i) => ({ id: `${prefix}${i}` }));

let api: Api | undefined;
afterEach(async () => {
  await api?.close();
  api = undefined;
});

/** A port with nothing listening on it (yet): connections are refused. */
async function freePort(): Promise<number> {
  const probe = await startApi();
  await probe.close();
  return probe.port;
}

/** The most call starts the API saw within any window of `ms`. */
function mostStartsWithin(calls: readonly ApiCall[], ms: number): number {
  const times = calls.map((call) => call.receivedAt).sort((a, b) => a - b);
  let most = 0;
  for (let first = 0, last = 0; last < times.length; last += 1) {
    while (times[last]! - times[first]! >= ms) first += 1;
    most = Math.max(most, last - first + 1);
  }
  return most;
}

describe("an outage is the queue's condition, not a task's failure", () => {
  it('API down for 5 s, then up: 3 workers complete all 20 tasks, attempts unused, the outage logged once per worker', async () => {
    await withTempDir(async (dir) => {
      const port = await freePort();
      await addAll(dir, [...tasks(20), { id: 'after-all', deps: tasks(20).map((task) => task.id) }]);
      const url = `http://127.0.0.1:${port}/task`;
      const workers = ['o1', 'o2', 'o3'].map((id) =>
        startCli(['--dir', dir, 'run', '--api-url', url, ...FAST, '--drain', '--max-attempts', '3', '--worker-id', id]),
      );
      await sleep(5000);
      const during = await runCli(['--dir', dir, 'status']);
      expect(during.stdout).toMatch(/queue held back: API unreachable since \d\d:\d\d:\d\d \(\d+ tasks in a row.*connection refused/);
      api = await startApi(answerOk, port);
      const results = await Promise.all(workers.map((worker) => worker.exited));
      for (const result of results) {
        expect(result.code, result.stderr).toBe(0);
        expect(result.stderr.match(/API unreachable since/g), result.stderr).toHaveLength(1);
        expect(result.stderr).toMatch(/the API answers again/);
        expect(result.stderr).toMatch(/drained: 21 completed$/m);
        // No line per task for the outage: only failures before it was found are logged one by one (how
        // many depends on how the workers' calls interleave), none once this worker has logged the outage.
        const announced = result.stderr.indexOf('API unreachable since');
        expect(result.stderr.lastIndexOf('never reached the API'), result.stderr).toBeLessThan(announced);
      }
      const states = await statusById(dir);
      for (const task of states.values()) expect(task).toMatchObject({ state: 'completed', attempts: 1 });
      expect(api.calls.map((call) => call.attempt).every((attempt) => attempt === 1)).toBe(true);
      // Probes, not every worker at every task: the log holds few refused calls for 5 s of outage.
      const refused = (await logEvents(dir)).filter((event) => event.type === 'outcome' && event.error?.kind === 'connect');
      expect(refused.length).toBeLessThan(15);
      expect(refused.every((event) => event.charged === false)).toBe(true);
    });
  }, 60_000);

  it('an API that accepts connections but never answers: after 3 tasks time out, calls are probes and no attempt is used up', async () => {
    await withTempDir(async (dir) => {
      api = await startApi(() => undefined);
      await addAll(dir, tasks(6));
      // The default backoff: each task waits its turn after a timeout, so three different tasks time out first.
      const worker = startCli([
        '--dir',
        dir,
        'run',
        '--api-url',
        api.url,
        '--poll-interval',
        '100ms',
        '--timeout',
        '200ms',
        '--max-attempts',
        '2',
        '--max-idle',
        '0',
      ]);
      await worker.waitForLog(/API unreachable since .*3 tasks in a row.*timeout/);
      await sleep(1500);
      api.setBehaviour(answerOk);
      await worker.waitForLog(/the API answers again/, 20_000);
      await worker.waitForLog(/idle 1\/∞/, 20_000);
      worker.process.kill('SIGTERM');
      expect((await worker.exited).code).toBe(0);
      const states = await statusById(dir);
      // No task failed, though they timed out more often than --max-attempts 2 allows: a timeout reached
      // the API, so the two before the outage count as attempts; the third, which makes it one, and the
      // probes after it do not.
      for (const task of states.values()) expect(task).toMatchObject({ state: 'completed' });
      const timeouts = (await logEvents(dir)).filter((event) => event.type === 'outcome' && event.error?.kind === 'timeout');
      expect(timeouts.slice(0, 2).map((event) => event.charged)).toEqual([undefined, undefined]);
      expect(timeouts.slice(2).length).toBeGreaterThan(1);
      expect(timeouts.slice(2).every((event) => event.charged === false)).toBe(true);
    });
  }, 60_000);
});

describe('the API asks the queue to wait', () => {
  it('429 with Retry-After: 2 for 6 s: no task fails, and no call starts before the Retry-After of a 429 passed', async () => {
    await withTempDir(async (dir) => {
      let limitedUntil = 0;
      api = await startApi((call, res) => {
        limitedUntil ||= call.receivedAt + 6000;
        if (call.receivedAt < limitedUntil) {
          res.writeHead(429, { 'retry-after': '2', 'content-type': 'application/json' });
          res.end('{"error":"rate limited"}');
        } else answerOk(call, res);
      });
      await addAll(dir, tasks(30));
      const workers = ['p1', 'p2', 'p3', 'p4'].map((id) => startCli(['--dir', dir, 'run', '--api-url', api!.url, ...FAST, '--drain', '--worker-id', id]));
      await sleep(1000);
      const during = await runCli(['--dir', dir, 'status']);
      expect(during.stdout).toMatch(/queue held back: paused by the API until \d\d:\d\d:\d\d \(429 on t\d+\)/);
      for (const result of await Promise.all(workers.map((worker) => worker.exited))) {
        expect(result.code, result.stderr).toBe(0);
        expect(result.stderr).toMatch(/paused by the API until/);
      }
      const states = await statusById(dir);
      for (const task of states.values()) expect(task).toMatchObject({ state: 'completed', attempts: 1 });
      const limited = api.calls.filter((call) => call.receivedAt < limitedUntil);
      // Each 429 pauses everyone for 2 s: only calls already on their way (one per worker at most) may start within it.
      for (const answered of limited) {
        const inPause = api.calls.filter((call) => call.receivedAt > answered.answeredAt! + 20 && call.receivedAt < answered.answeredAt! + 1990);
        expect(inPause.length, `calls within the pause after the 429 at ${answered.answeredAt}`).toBeLessThanOrEqual(4);
      }
      expect(limited.length).toBeLessThan(20);
    });
  }, 60_000);

  it("a task that gets nothing but 429s fails after --max-api-wait; --no-pause-on-429 makes a 429 one task's retryable error", async () => {
    await withTempDir(async (dir) => {
      api = await startApi((call, res) => {
        if (call.task_id !== 'limited') return answerOk(call, res);
        res.writeHead(429, { 'retry-after': '0' });
        res.end('slow down');
      });
      await addAll(dir, [{ id: 'limited' }, { id: 'other' }]);
      const bounded = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--max-api-wait', '1s']);
      expect(bounded.code, bounded.stderr).toBe(6);
      expect(bounded.stderr).toMatch(/failed limited \(the API kept it waiting for 1(\.\d)?s \(--max-api-wait 1s\)\)/);
      expect((await statusById(dir)).get('limited')).toMatchObject({ state: 'failed', attempts: 1, last_error: { kind: 'http', http_status: 429 } });
      expect(api.callsFor('limited').length).toBeGreaterThan(2);

      const calls = api.callsFor('limited').length;
      await runCli(['--dir', dir, 'retry', 'limited']);
      const perTask = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--no-pause-on-429', '--max-attempts', '3']);
      expect(perTask.code, perTask.stderr).toBe(6);
      expect(api.callsFor('limited').length - calls).toBe(3);
      expect((await statusById(dir)).get('limited')).toMatchObject({ state: 'failed', attempts: 3 });
      expect(perTask.stderr).not.toMatch(/paused by the API/);
    });
  }, 60_000);
});

describe('a queue-wide rate limit', () => {
  it('--rate 10/s with 3 processes on 100 tasks: never more than 10 call starts in any 1 s window at the API', async () => {
    await withTempDir(async (dir) => {
      api = await startApi();
      await addAll(dir, tasks(100));
      const workers = ['r1', 'r2', 'r3'].map((id) =>
        startCli(['--dir', dir, 'run', '--api-url', api!.url, ...FAST, '--drain', '--rate', '10/s', '--worker-id', id]),
      );
      await sleep(2500);
      const status = await runCli(['--dir', dir, 'status']);
      expect(status.stdout).toMatch(/rate limit 10\/s reached/);
      const results = await Promise.all(workers.map((worker) => worker.exited));
      for (const result of results) expect(result.code, result.stderr).toBe(0);
      expect(results.some((result) => /idle: rate limit 10\/s reached, next call at \d\d:\d\d:\d\d/.test(result.stderr))).toBe(true);
      expect(api.calls).toHaveLength(100);
      expect(mostStartsWithin(api.calls, 1000)).toBeLessThanOrEqual(10);
      // And the limit is used, not just kept: 100 calls at 10 a second take about 10 s.
      const span = api.calls.at(-1)!.receivedAt - api.calls[0]!.receivedAt;
      expect(span).toBeGreaterThanOrEqual(9000);
      expect(new Set(api.calls.map((call) => call.worker)).size).toBeGreaterThan(1);
    });
  }, 60_000);

  it('refuses a malformed --rate, naming the setting and the form it takes', async () => {
    await withTempDir(async (dir) => {
      for (const bad of ['10', '0/s', '10/fortnight', 'x/s', '20000/s']) {
        const result = await runCli(['--dir', dir, 'run', '--api-url', 'http://127.0.0.1:9/', '--rate', bad]);
        expect(result.code).toBe(2);
        expect(result.stderr).toMatch(/expected --rate \(or WORKER_RATE\) to be calls per period like 60\/m, 5\/s, 1000\/h/);
      }
    });
  });
});

describe("refused credentials stop the worker, not the queue's tasks", () => {
  it('401: the worker exits 7 after one call, the task is pending with its attempts unchanged, no other task was called', async () => {
    await withTempDir(async (dir) => {
      api = await startApi((call, res) => {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(`{"error":"invalid api key ${String(call.headers.authorization)}"}`);
      });
      await addAll(dir, tasks(5));
      const result = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--header', 'Authorization: Bearer sk-wrong']);
      expect(result.code, result.stderr).toBe(7);
      expect(api.calls).toHaveLength(1);
      expect(result.stderr).toMatch(
        /the API refused this worker's credentials \(http 401: \{"error":"invalid api key \*\*\*"\}\); task "t0" is pending again, its attempts unchanged/,
      );
      expect(result.stderr).not.toContain('sk-wrong');
      const states = await statusById(dir);
      expect(states.get('t0')).toMatchObject({ state: 'pending', attempts: 0, last_error: { kind: 'http', http_status: 401 } });
      for (const task of states.values()) expect(task.state).toBe('pending');
      // With the right key the same queue drains.
      api.setBehaviour(answerOk);
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(0);
    });
  });

  it('403 and 407 are refused credentials too; a task refused for itself (404) fails as before', async () => {
    await withTempDir(async (dir) => {
      for (const status of [403, 407]) {
        api = await startApi((_call, res) => {
          res.writeHead(status);
          res.end('no');
        });
        await addAll(dir, [{ id: `s${status}` }]);
        expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(7);
        await api.close();
      }
      api = await startApi((_call, res) => {
        res.writeHead(404);
        res.end('no such chapter');
      });
      await addAll(dir, [{ id: 'missing' }]);
      const result = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--max-idle', '1']);
      expect(result.code).toBe(6);
      expect((await statusById(dir)).get('missing')).toMatchObject({ state: 'failed', attempts: 1 });
    });
  });
});

describe('exit codes and the last line of a run', () => {
  it('--drain exits 0 when all completed, 6 when a task it ran failed; the last line says what is left', async () => {
    await withTempDir(async (dir) => {
      api = await startApi((call, res) => {
        if (call.task_id !== 'fetch-7') return answerOk(call, res);
        res.writeHead(422, { 'content-type': 'application/json' });
        res.end('{"status":"failed","error":"chapter 7 is missing"}');
      });
      await addAll(dir, [{ id: 'fetch-1' }]);
      const ok = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain']);
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stderr.trim().split('\n').at(-1)).toMatch(/INFO {2}w-[0-9a-f]{8} drained: 1 completed$/);
      await addAll(dir, [{ id: 'fetch-7' }, { id: 'summary', deps: ['fetch-1', 'fetch-7'] }, { id: 'fetch-8' }]);
      const failed = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain']);
      expect(failed.code, failed.stderr).toBe(6);
      expect(failed.stderr.trim().split('\n').at(-1)).toBe(
        'worker: drained: 2 completed, 1 failed (fetch-7: http 422: {"status":"failed","error":"chapter 7 is missing"}), 1 blocked; ' +
          'this worker failed fetch-7; see `worker show <task-id>`, and `worker retry` once the cause is fixed',
      );
      // Failures of earlier runs are not this run's doing.
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(0);
    });
  });
});

describe('idle means nothing to wait for', () => {
  it('a slow gate task and 8 dependents, 4 workers without --drain and --max-idle 3: all 4 stay and take part', async () => {
    await withTempDir(async (dir) => {
      api = await startApi((call, res) => {
        setTimeout(() => answerOk(call, res), call.task_id === 'gate' ? 3000 : 800);
      });
      await addAll(dir, [{ id: 'gate' }, ...Array.from({ length: 8 }, (_, i) => ({ id: `child-${i}`, deps: ['gate'] }))]);
      const workers = ['g1', 'g2', 'g3', 'g4'].map((id) =>
        startCli(['--dir', dir, 'run', '--api-url', api!.url, '--poll-interval', '500ms', '--max-idle', '3', '--worker-id', id]),
      );
      const results = await Promise.all(workers.map((worker) => worker.exited));
      for (const result of results) expect(result.code, result.stderr).toBe(0);
      // While the gate runs, idle checks say so and do not count toward --max-idle.
      expect(results.some((result) => /idle: 8 pending \(8 waiting on deps\), 1 running \(gate on g\d\)/.test(result.stderr))).toBe(true);
      const children = api.calls.filter((call) => call.task_id.startsWith('child-'));
      expect(children).toHaveLength(8);
      expect(new Set(children.map((call) => call.worker))).toEqual(new Set(['g1', 'g2', 'g3', 'g4']));
    });
  }, 60_000);
});

describe('idempotency keys belong to one queue and one try of a task', () => {
  it('two queues with the same task ids against worker serve get their own answers; a corrected, retried task a fresh one', async () => {
    await withTempDir(async (root) => {
      const server = startCli(['serve', '--port', '0', '--latency', '5ms']);
      try {
        const url = (await server.waitForOutput(/listening at (\S+)/)).match(/listening at (\S+)/)![1]!;
        const first = join(root, 'first');
        const second = join(root, 'second');
        await Promise.all([mkdir(first), mkdir(second)]);
        await addAll(first, [
          { id: 'fetch-1', instruction: 'chapter one of the first book' },
          { id: 'fetch-2', instruction: 'fail: chapter two is missing' },
        ]);
        await addAll(second, [{ id: 'fetch-1', instruction: 'chapter one of the second book' }]);
        expect(await queueIdOf(first)).not.toBe(await queueIdOf(second));
        expect((await runCli(['--dir', first, 'run', '--api-url', url, ...FAST, '--drain'])).code).toBe(6);
        expect((await runCli(['--dir', second, 'run', '--api-url', url, ...FAST, '--drain'])).code).toBe(0);
        expect((await statusById(first)).get('fetch-1')!.result).toMatchObject({ output: 'done: chapter one of the first book' });
        expect((await statusById(second)).get('fetch-1')!.result).toMatchObject({ output: 'done: chapter one of the second book' });

        // The instruction corrected (`worker edit`), then retried: a new generation, so the API does the work anew.
        expect((await runCli(['--dir', first, 'edit', 'fetch-2', '--instruction', 'chapter two, found again'])).code).toBe(0);
        expect((await runCli(['--dir', first, 'retry', 'fetch-2'])).code).toBe(0);
        const rerun = await runCli(['--dir', first, 'run', '--api-url', url, ...FAST, '--drain']);
        expect(rerun.code, rerun.stderr).toBe(0);
        expect((await statusById(first)).get('fetch-2')).toMatchObject({ state: 'completed', result: { output: 'done: chapter two, found again' } });
        const logged = server.stdout();
        const queueId = await queueIdOf(first);
        expect(logged).toMatch(/task="fetch-2" attempt=1 worker=\S+ → 422/);
        expect(logged).not.toMatch(/replayed/);
        expect(queueId).toMatch(/^[0-9a-f-]{36}$/);
      } finally {
        server.process.kill('SIGTERM');
        await server.exited;
      }
    });
  });

  it('automatic retries keep the key (takeovers too: see run.test.ts); worker retry advances its generation', async () => {
    await withTempDir(async (dir) => {
      api = await startApi((call, res) => {
        if (api!.callsFor(call.task_id).length <= 2) {
          res.writeHead(call.task_id === 'final' ? 400 : 500);
          res.end('not yet');
        } else answerOk(call, res);
      });
      await addAll(dir, [{ id: 'flaky' }, { id: 'final' }]);
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(6);
      await runCli(['--dir', dir, 'retry', 'final']);
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(6);
      await runCli(['--dir', dir, 'retry', 'final']);
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(0);
      const queueId = await queueIdOf(dir);
      expect(api.callsFor('flaky').map((call) => call.idempotencyKey)).toEqual([1, 1, 1].map((generation) => `${queueId}:flaky:${generation}`));
      expect(api.callsFor('final').map((call) => call.idempotencyKey)).toEqual([1, 2, 3].map((generation) => `${queueId}:final:${generation}`));
      const shown = JSON.parse((await runCli(['--dir', dir, 'show', 'final', '--json'])).stdout);
      expect(shown.idempotency_key).toBe(`${queueId}:final:3`);
      const logs = await runCli(['--dir', dir, 'logs', 'final']);
      expect(logs.stdout).toMatch(/retried by \S+: pending again with fresh attempts and a new idempotency key/);
    });
  });
});
