import { spawn } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { answerOk, startApi, type Api } from '../helpers/apiServer.js';
import { folderOnly, onDatabase, runCli, startCli, withTempDir } from '../helpers/cli.js';
import { addAll, heldClaims, holdCallsFor, lockFiles, lockSlots, logEvents, queueIdOf, statusById } from '../helpers/queue.js';

let api: Api;
beforeEach(async () => {
  api = await startApi();
});
afterEach(async () => {
  await api.close();
});

/** Fast settings for tests: short polls, short idle limit, quick retries. */
const FAST = ['--poll-interval', '100ms', '--max-idle', '5', '--backoff', '20ms'];

function runArgs(dir: string, ...extra: string[]): string[] {
  return ['--dir', dir, 'run', '--api-url', api.url, ...FAST, ...extra];
}

describe('worker run: exactly once, in dependency order', () => {
  it('4 workers drain 200 tasks of a random dependency graph: each called once, never before its dependencies completed', async () => {
    await withTempDir(async (dir) => {
      let seed = 42;
      const random = () => {
        seed = (seed * 1103515245 + 12345) % 2 ** 31;
        return seed / 2 ** 31;
      };
      const tasks = Array.from({ length: 200 }, (_, i) => {
        const deps = new Set<string>();
        for (let k = 0; k < 3 && i > 0; k += 1) if (random() < 0.5) deps.add(`t${Math.floor(random() * i)}`);
        return { id: `t${i}`, deps: [...deps] };
      });
      await addAll(dir, tasks);
      const workers = Array.from({ length: 4 }, (_, i) => startCli(runArgs(dir, '--worker-id', `w${i}`, '--max-idle', '10')));
      const results = await Promise.all(workers.map((worker) => worker.exited));
      for (const result of results) {
        expect(result.code, result.stderr).toBe(0);
        expect(result.stderr).toMatch(/stopping: idle for 10 checks in a row/);
      }
      expect(api.calls).toHaveLength(200);
      expect(new Set(api.calls.map((call) => call.task_id)).size).toBe(200);
      const byId = new Map(api.calls.map((call) => [call.task_id, call]));
      const queueId = await queueIdOf(dir);
      for (const task of tasks) {
        const call = byId.get(task.id)!;
        expect(call.idempotencyKey).toBe(`${queueId}:${task.id}:1`);
        for (const dep of task.deps) expect(call.receivedAt).toBeGreaterThanOrEqual(byId.get(dep)!.answeredAt!);
      }
      const states = await statusById(dir);
      expect([...states.values()].every((task) => task.state === 'completed' && task.attempts === 1)).toBe(true);
      expect(states.get('t0')!.result).toEqual({ status: 'completed', echo: 't0' });
      expect(new Set(api.calls.map((call) => call.worker)).size).toBeGreaterThan(1);
      expect(await heldClaims(dir)).toEqual([]);
      if (!onDatabase) expect(await lockSlots(dir)).toEqual([]);
    });
  });

  folderOnly('where the file system has no hard links (FAT), locks are folders: 3 workers still call each task once', async () => {
    await withTempDir(async (dir) => {
      const tasks = Array.from({ length: 60 }, (_, i) => ({ id: `t${i}` }));
      await addAll(dir, [...tasks, { id: 'held' }]);
      // link(2) fails as it does on FAT; this file system has hard links, so the refusal is played by a preload.
      const noLinks = join(dir, 'no-hard-links.cjs');
      await writeFile(
        noLinks,
        "require('node:fs').linkSync = () => { throw Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' }); };\n",
      );
      const hold = holdCallsFor(api, 'held');
      const workers = Array.from({ length: 3 }, (_, i) =>
        startCli(runArgs(dir, '--drain', '--worker-id', `f${i}`), { env: { NODE_OPTIONS: `--require ${noLinks}` } }),
      );
      await hold.arrived();
      const heldLock = (await lockFiles(dir)).find((name) => name.endsWith('held.lock'))!;
      expect((await stat(join(dir, 'locks', heldLock))).isDirectory()).toBe(true);
      answerOk(hold.held[0]!.call, hold.held[0]!.res);
      for (const result of await Promise.all(workers.map((worker) => worker.exited))) expect(result.code, result.stderr).toBe(0);
      expect(api.calls.map((call) => call.task_id).sort()).toEqual([...tasks.map((task) => task.id), 'held'].sort());
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('a running worker reads each definition when it claims it: exact after adds, after clean rewrites queue.json, in any script', async () => {
    await withTempDir(async (dir) => {
      // Multi-byte text before later tasks: a worker finds a task's line by byte position, not character.
      const first = [
        { id: 'u1', instruction: 'Résumé of 章 1 — «quoted» 😀' },
        { id: 'u2', instruction: 'tab\tand \\ backslash and "quotes"' },
        { id: 'u3', instruction: 'x'.repeat(5000) },
      ];
      await addAll(dir, first);
      const worker = startCli(runArgs(dir, '--max-idle', '0'));
      await worker.waitForLog(/completed u3/);
      // Added while it runs: read from where it stopped.
      await runCli(['--dir', dir, 'add', 'later', 'Added later: ünïcödé', 'u1']);
      await worker.waitForLog(/completed later/);
      // clean rewrites queue.json: every line moves, also those of tasks the worker already knows and has yet to run.
      const gate = holdCallsFor(api, 'gate');
      await addAll(dir, [
        { id: 'gate', instruction: 'Gate' },
        { id: 'behind', instruction: 'Behind the gate', deps: ['gate'] },
      ]);
      await gate.arrived();
      expect((await runCli(['--dir', dir, 'clean', 'u2'])).code).toBe(0);
      answerOk(gate.held[0]!.call, gate.held[0]!.res);
      await worker.waitForLog(/completed behind/);
      await runCli(['--dir', dir, 'add', 'after-clean', 'After clean', 'u3']);
      await worker.waitForLog(/completed after-clean/);
      worker.process.kill('SIGTERM');
      expect((await worker.exited).code).toBe(0);
      const sent = new Map(api.calls.map((call) => [call.task_id, call.body.instruction]));
      expect(sent).toEqual(
        new Map([
          ...first.map((task) => [task.id, task.instruction] as const),
          ['later', 'Added later: ünïcödé'],
          ['gate', 'Gate'],
          ['behind', 'Behind the gate'],
          ['after-clean', 'After clean'],
        ]),
      );
    });
  });

  folderOnly('runs a queue.json formatted by hand (no line per task) with the right definitions', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [
        { id: 'a', instruction: 'First' },
        { id: 'b', instruction: 'Second', deps: ['a'] },
      ]);
      const file = join(dir, 'queue', 'queue.json');
      await writeFile(file, JSON.stringify(JSON.parse(await readFile(file, 'utf8')), null, 2));
      const result = await runCli(runArgs(dir, '--drain'));
      expect(result.code, result.stderr).toBe(0);
      expect(new Map(api.calls.map((call) => [call.task_id, call.body.instruction]))).toEqual(
        new Map([
          ['a', 'First'],
          ['b', 'Second'],
        ]),
      );
    });
  });

  folderOnly('validates a definition when it claims the task, even in a version of queue.json that add recorded as sound', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b' }]);
      const file = join(dir, 'queue', 'queue.json');
      const text = await readFile(file, 'utf8');
      const at = text.lastIndexOf('"medium"');
      await writeFile(file, `${text.slice(0, at)}"mediun"${text.slice(at + '"medium"'.length)}`);
      // checked.json made to vouch for the edited file, as if add had validated it: the start does not look again.
      const info = await stat(file, { bigint: true });
      const checkedFile = join(dir, 'queue', 'checked.json');
      const checked = JSON.parse(await readFile(checkedFile, 'utf8'));
      await writeFile(checkedFile, JSON.stringify({ ...checked, queue: { ino: String(info.ino), size: Number(info.size), ctimeNs: String(info.ctimeNs) } }));
      const result = await runCli(runArgs(dir, '--drain', '--max-idle', '1'));
      expect(result.code, result.stderr).toBe(4);
      expect(api.calls.map((call) => call.task_id)).toEqual(['a']);
      expect(result.stderr).toMatch(/queue\.json is damaged \(whole file\): task "b"/);
    });
  });

  it('sends the task contract: JSON body, idempotency key, worker id and the given headers', async () => {
    await withTempDir(async (dir) => {
      await runCli(['--dir', dir, 'add', 'a', 'Summarize chapter 1', '--min-budget', '10', '--max-budget', '20', '--intensity', 'low']);
      await runCli(['--dir', dir, 'add', 'b', 'Outline', 'a']);
      await runCli(['--dir', dir, 'add', 'echo', 'An API that echoes the token in its error']);
      api.setBehaviour((call, res) => {
        if (call.task_id !== 'echo') return answerOk(call, res);
        res.writeHead(401);
        res.end(`bad token: ${String(call.headers.authorization)}`);
      });
      const result = await runCli(runArgs(dir, '--drain', '--worker-id', 'w-test', '--header', 'Authorization: Bearer s3cret-token'));
      // 401 refuses the worker's credentials: it stops with exit code 7.
      expect(result.code, result.stderr).toBe(7);
      expect(api.calls[0]!.body).toEqual({
        task_id: 'a',
        instruction: 'Summarize chapter 1',
        depends_on: [],
        attempt: 1,
        min_budget: 10,
        max_budget: 20,
        intensity: 'low',
      });
      expect(api.calls[1]!.body).toMatchObject({ task_id: 'b', depends_on: ['a'] });
      const key = `${await queueIdOf(dir)}:a:1`;
      expect(api.calls[0]!.headers).toMatchObject({
        'content-type': 'application/json',
        'idempotency-key': key,
        'x-worker-id': 'w-test',
        authorization: 'Bearer s3cret-token',
      });
      expect(result.stderr).toContain('authorization: ***');
      expect(result.stderr).toContain('http 401: bad token: ***');
      expect(result.stderr).not.toContain('s3cret');
      expect(JSON.stringify(await logEvents(dir))).not.toContain('s3cret');
    });
  });

  it('sends a user and password given in --api-url as Basic authentication, and never shows them', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      const url = new URL(api.url);
      url.username = 'us%40er';
      url.password = 'pa%3Ass-w0rd';
      const result = await runCli(['--dir', dir, 'run', '--api-url', url.toString(), ...FAST, '--drain']);
      expect(result.code, result.stderr).toBe(0);
      const basic = `Basic ${Buffer.from('us@er:pa:ss-w0rd').toString('base64')}`;
      expect(api.calls[0]!.headers.authorization).toBe(basic);
      expect(result.stderr).toContain('authorization: ***');
      for (const secret of ['pa%3Ass-w0rd', 'pa:ss-w0rd', basic.slice(6)]) expect(result.stderr).not.toContain(secret);
      const twice = await runCli(['--dir', dir, 'run', '--api-url', url.toString(), '--header', 'Authorization: Bearer x', '--drain']);
      expect(twice.code).toBe(2);
      expect(twice.stderr).toMatch(/holds a user and password, and an Authorization header is given too/);
    });
  });

  it('stops after max-iterations tasks and rejects a max-iterations that is not a positive integer', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
      const result = await runCli(runArgs(dir, '2'));
      expect(result.code, result.stderr).toBe(0);
      expect(api.calls.map((call) => call.task_id)).toEqual(['a', 'b']);
      expect(result.stderr).toMatch(/stopping: executed 2 tasks \(max-iterations\); executed 2 tasks: 2 completed/);
      expect((await runCli(runArgs(dir, '1'))).stderr).toMatch(/stopping: executed 1 task \(max-iterations\); executed 1 task: 1 completed/);
      for (const bad of ['0', '-1', 'two', '1.5']) {
        const refused = await runCli(runArgs(dir, bad));
        expect(refused.code).toBe(2);
        expect(refused.stderr).toMatch(/expected \[max-iterations\] to be a whole number of 1 or more/);
      }
      expect(api.calls).toHaveLength(3);
    });
  });

  it('logs one JSON object per line with --log-format json, and claim attempts with --verbose', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      const result = await runCli(runArgs(dir, '--drain', '--log-format', 'json', '--verbose', '--worker-id', 'w-json'));
      expect(result.code, result.stderr).toBe(0);
      const lines = result.stderr
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { time: string; level: string; worker: string; msg: string });
      expect(lines.every((line) => line.worker === 'w-json' && /^\d{4}-\d\d-\d\dT.*Z$/.test(line.time))).toBe(true);
      expect(lines.map((line) => `${line.level} ${line.msg.split(' ')[0]}`)).toEqual(
        expect.arrayContaining(['info starting:', 'debug trying', 'info claimed', 'info completed', 'info stopping:']),
      );
    });
  });

  it('refuses to start without an API URL, saying how to give one', async () => {
    await withTempDir(async (dir) => {
      const result = await runCli(['--dir', dir, 'run']);
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/--api-url is not set.*WORKER_API_URL/);
    });
  });
});

describe('worker run: failures are classified and recorded', () => {
  it('an API slower than --timeout: kind timeout', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'slow' }]);
      api.setBehaviour(() => undefined); // never answers
      const result = await runCli(runArgs(dir, '--drain', '--timeout', '300ms', '--max-attempts', '2'));
      expect(result.code, result.stderr).toBe(6);
      expect((await statusById(dir)).get('slow')).toMatchObject({ state: 'failed', attempts: 2, last_error: { kind: 'timeout' } });
      expect(api.callsFor('slow')).toHaveLength(2);
    });
  });

  it('500 then 200: completed on attempt 2, the same idempotency key both times', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'flaky' }]);
      api.setBehaviour((call, res) => {
        if (call.attempt === 1) {
          res.writeHead(500);
          res.end('overloaded');
        } else answerOk(call, res);
      });
      const result = await runCli(runArgs(dir, '--drain'));
      expect(result.code, result.stderr).toBe(0);
      expect((await statusById(dir)).get('flaky')).toMatchObject({ state: 'completed', attempts: 2 });
      const key = `${await queueIdOf(dir)}:flaky:1`;
      expect(api.calls.map((call) => [call.attempt, call.idempotencyKey])).toEqual([
        [1, key],
        [2, key],
      ]);
      const outcomes = (await logEvents(dir)).filter((event) => event.type === 'outcome');
      expect(outcomes[0]).toMatchObject({ outcome: 'retry', http_status: 500, error: { kind: 'http', http_status: 500 } });
    });
  });

  it('a wall clock that goes back during a call: the outcome is recorded with duration 0, and the log stays readable', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b', deps: ['a'] }]);
      // Each reading of the clock is a second earlier than the last, as after an NTP step back.
      const clock = join(dir, 'clock-going-back.cjs');
      await writeFile(clock, 'const wall = Date.now; let back = 0; Date.now = () => wall() - (back += 1000);\n');
      const result = await runCli(runArgs(dir, '--drain'), { env: { NODE_OPTIONS: `--require ${clock}` } });
      expect(result.code, result.stderr).toBe(0);
      const outcomes = (await logEvents(dir)).filter((event) => event.type === 'outcome');
      expect(outcomes.map((event) => [event.task, event.outcome, event.duration_ms])).toEqual([
        ['a', 'completed', 0],
        ['b', 'completed', 0],
      ]);
      expect((await runCli(['--dir', dir, 'status'])).code).toBe(0);
    });
  });

  it('429 honours Retry-After', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'limited' }]);
      api.setBehaviour((call, res) => {
        if (api.callsFor('limited').length === 1) {
          res.writeHead(429, { 'retry-after': '1' });
          res.end();
        } else answerOk(call, res);
      });
      const result = await runCli(runArgs(dir, '--drain'));
      expect(result.code, result.stderr).toBe(0);
      const [first, second] = api.callsFor('limited');
      expect(second!.receivedAt - first!.answeredAt!).toBeGreaterThanOrEqual(950);
    });
  });

  it('a 2xx body over 32 MiB: failed as bad_response, not held in memory', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'huge' }]);
      api.setBehaviour((_call, res) => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(Buffer.alloc(33 * 1024 * 1024, 'x'));
      });
      const result = await runCli(runArgs(dir, '--drain'));
      expect(result.code, result.stderr).toBe(6);
      expect((await statusById(dir)).get('huge')).toMatchObject({
        state: 'failed',
        attempts: 1,
        last_error: { kind: 'bad_response', message: expect.stringMatching(/larger than 33554432 bytes; it starts: x{200}…$/) },
      });
    });
  });

  it('400: failed after one attempt; 200 with "status": "failed": failed, not retried', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'bad-request' }, { id: 'refused' }]);
      api.setBehaviour((call, res) => {
        if (call.task_id === 'bad-request') {
          res.writeHead(400);
          res.end('missing field');
        } else {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ status: 'failed', errors: ['budget too small', 'try again later'] }));
        }
      });
      const result = await runCli(runArgs(dir, '--drain'));
      expect(result.code, result.stderr).toBe(6);
      const states = await statusById(dir);
      expect(states.get('bad-request')).toMatchObject({ state: 'failed', attempts: 1, last_error: { kind: 'http', http_status: 400 } });
      expect(states.get('refused')).toMatchObject({
        state: 'failed',
        attempts: 1,
        last_error: { kind: 'api_failed', message: expect.stringContaining('budget too small; try again later') },
      });
      expect(api.calls).toHaveLength(2);
    });
  });

  it('a failed dependency blocks its dependents; retry unblocks them and they complete', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'root' }, { id: 'child', deps: ['root'] }, { id: 'grandchild', deps: ['child'] }, { id: 'free' }]);
      api.setBehaviour((call, res) => {
        if (call.task_id === 'root' && call.attempt === 1 && api.callsFor('root').length === 1) {
          res.writeHead(404);
          res.end();
        } else answerOk(call, res);
      });
      const first = await runCli(runArgs(dir, '--drain'));
      expect(first.code, first.stderr).toBe(6);
      let states = await statusById(dir);
      expect([...states.values()].map((task) => [task.id, task.state])).toEqual([
        ['root', 'failed'],
        ['child', 'blocked'],
        ['grandchild', 'blocked'],
        ['free', 'completed'],
      ]);
      expect(states.get('grandchild')!.blocked_by).toBe('root');
      const table = await runCli(['--dir', dir, 'status']);
      expect(table.stdout).toMatch(/grandchild\s+blocked\s+0\s+child\s+dependency root failed/);

      const refused = await runCli(['--dir', dir, 'retry', 'free']);
      expect(refused.code).toBe(3);
      expect(refused.stderr).toMatch(/task "free" is completed; only failed tasks can be retried/);
      const missing = await runCli(['--dir', dir, 'retry', 'nope']);
      expect(missing.code).toBe(3);

      expect((await runCli(['--dir', dir, 'retry', 'root'])).stdout).toBe('pending again: root\n');
      // Its old error goes with the retry: LAST ERROR shows what the new attempts meet.
      expect((await statusById(dir)).get('root')!.last_error).toBeUndefined();
      const second = await runCli(runArgs(dir, '--drain'));
      expect(second.code, second.stderr).toBe(0);
      states = await statusById(dir);
      expect([...states.values()].every((task) => task.state === 'completed')).toBe(true);
      expect(states.get('root')!.attempts).toBe(1);
    });
  });
});

describe('worker run: crashes, freezes and signals', () => {
  it('a worker SIGKILLed in the middle of a call: another worker completes the task at once; nothing else runs twice', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'victim' }, { id: 'c' }, { id: 'd', deps: ['victim'] }]);
      const hold = holdCallsFor(api, 'victim');
      const doomed = startCli(runArgs(dir, '--worker-id', 'doomed', '--lock-stale', '60s'));
      await hold.arrived(1);
      doomed.process.kill('SIGKILL');
      await doomed.exited;
      api.setBehaviour(answerOk);
      const started = Date.now();
      const rescuer = await runCli(runArgs(dir, '--worker-id', 'rescuer', '--drain', '--lock-stale', '60s', '--max-attempts', '1'));
      expect(rescuer.code, rescuer.stderr).toBe(0);
      // Far sooner than --lock-stale: the owner's pid is gone.
      expect(Date.now() - started).toBeLessThan(30_000);
      expect(rescuer.stderr).toMatch(/taking over victim: held by doomed, whose process is gone/);
      expect(rescuer.stderr).toMatch(/claimed victim \(attempt 2, after a takeover, beyond --max-attempts 1\)/);
      const states = await statusById(dir);
      expect([...states.values()].every((task) => task.state === 'completed')).toBe(true);
      expect(states.get('victim')!.attempts).toBe(2);
      const victimCalls = api.callsFor('victim');
      const key = `${await queueIdOf(dir)}:victim:1`;
      expect(victimCalls.map((call) => [call.worker, call.attempt, call.idempotencyKey])).toEqual([
        ['doomed', 1, key],
        ['rescuer', 2, key],
      ]);
      // The log says why it was taken over.
      expect((await runCli(['--dir', dir, 'logs', 'victim'])).stdout).toMatch(
        /victim {2}taken over by rescuer \(attempt 2, pid \d+ on .*\): held by doomed, whose process is gone/,
      );
      for (const id of ['a', 'c', 'd']) expect(api.callsFor(id)).toHaveLength(1);
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('a worker frozen past --lock-stale loses its task to another; after SIGCONT it records nothing and says so', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'frozen-task' }]);
      const hold = holdCallsFor(api, 'frozen-task');
      const frozen = startCli(runArgs(dir, '--worker-id', 'frozen', '--lock-stale', '2s', '--max-idle', '0'));
      await hold.arrived(1);
      frozen.process.kill('SIGSTOP');
      const other = startCli(runArgs(dir, '--worker-id', 'other', '--lock-stale', '2s', '--drain', '--max-idle', '0'));
      await hold.arrived(2);
      hold.held[1]!.res.writeHead(200, { 'content-type': 'application/json' });
      hold.held[1]!.res.end('{"by":"other"}');
      expect((await other.exited).code).toBe(0);
      frozen.process.kill('SIGCONT');
      hold.held[0]!.res.writeHead(200, { 'content-type': 'application/json' });
      hold.held[0]!.res.end('{"by":"frozen"}');
      await frozen.waitForLog(/lost the (lock|claim)/);
      frozen.process.kill('SIGTERM');
      expect((await frozen.exited).code).toBe(0);
      const outcomes = (await logEvents(dir)).filter((event) => event.type === 'outcome' && event.task === 'frozen-task');
      expect(outcomes).toHaveLength(1);
      expect(outcomes[0]).toMatchObject({ worker: 'other', outcome: 'completed', result: { by: 'other' } });
      expect((await statusById(dir)).get('frozen-task')).toMatchObject({ state: 'completed', result: { by: 'other' } });
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('an idle worker is woken by a change to the queue, not by its poll, also after a busy spell', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'first' }]);
      const hold = holdCallsFor(api, 'first');
      // A poll far longer than the test waits: only the change watcher can wake the worker in time.
      const worker = startCli(runArgs(dir, '--poll-interval', '10m', '--max-idle', '0'));
      await hold.arrived(1);
      hold.held[0]!.res.end('done');
      await worker.waitForLog(/idle 1\//);
      expect((await runCli(['--dir', dir, 'add', 'second', 'Do it', 'first'])).code).toBe(0);
      await worker.waitForLog(/claimed second/, 15_000);
      await worker.waitForLog(/completed second/);
      worker.process.kill('SIGINT');
      expect((await worker.exited).code).toBe(0);
    });
  });

  it('SIGINT during a call: the task completes, the worker exits 0, its lock is gone', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'long' }, { id: 'next' }]);
      const hold = holdCallsFor(api, 'long');
      const worker = startCli(runArgs(dir, '--max-idle', '0'));
      await hold.arrived(1);
      worker.process.kill('SIGINT');
      await worker.waitForLog(/received SIGINT/);
      hold.held[0]!.res.end('done');
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toMatch(/completed long/);
      expect(result.stderr).toMatch(/stopping: stopped by a signal/);
      const states = await statusById(dir);
      expect(states.get('long')).toMatchObject({ state: 'completed', result: 'done' });
      expect(states.get('next')).toMatchObject({ state: 'pending', attempts: 0 });
      expect(api.callsFor('next')).toHaveLength(0);
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('a second signal abandons the call: the task is pending again, the worker exits 130, its lock is gone', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'long' }]);
      const hold = holdCallsFor(api, 'long');
      const worker = startCli(runArgs(dir, '--max-idle', '0'));
      await hold.arrived(1);
      worker.process.kill('SIGTERM');
      await worker.waitForLog(/received SIGTERM/);
      worker.process.kill('SIGTERM');
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(130);
      expect(result.stderr).toMatch(/task "long" was put back to pending/);
      expect((await statusById(dir)).get('long')).toMatchObject({ state: 'pending', attempts: 1 });
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('a second signal while the connection is still being made: the worker exits 130 at once, not after the connect bound', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'unreachable' }]);
      // An API whose process never accepts (its event loop is blocked), its backlog full: a connection is never made.
      const listener = spawn(
        process.execPath,
        [
          '-e',
          // biome-ignore lint/suspicious/noTemplateCurlyInString: the source of a script, whose template string the child runs
          "const s = require('node:net').createServer(); s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => { process.stdout.write(`${s.address().port}\\n`); setTimeout(() => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0), 50); });",
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const fillers: Socket[] = [];
      try {
        const port = await new Promise<number>((resolve) => listener.stdout.once('data', (data) => resolve(Number(String(data).trim()))));
        await sleep(200);
        for (let i = 0; i < 4; i += 1) fillers.push(connect(port, '127.0.0.1').on('error', () => undefined));
        await sleep(200);
        const worker = startCli(['--dir', dir, 'run', '--api-url', `http://127.0.0.1:${port}/`, '--max-idle', '0']);
        await worker.waitForLog(/claimed unreachable/);
        worker.process.kill('SIGINT');
        await worker.waitForLog(/received SIGINT/);
        const secondAt = Date.now();
        worker.process.kill('SIGINT');
        const result = await worker.exited;
        // The connect bound is 10 s: a worker that waited for the connection to give up took 9 s here.
        expect(Date.now() - secondAt).toBeLessThan(5000);
        expect(result.code, result.stderr).toBe(130);
        expect((await statusById(dir)).get('unreachable')).toMatchObject({ state: 'pending' });
      } finally {
        for (const filler of fillers) filler.destroy();
        listener.kill('SIGKILL');
      }
    });
  });
});
