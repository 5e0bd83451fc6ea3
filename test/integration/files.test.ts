import { rename, stat, truncate, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { answerOk, startApi, type Api } from '../helpers/apiServer.js';
import { runCli, startCli, withTempDir } from '../helpers/cli.js';
import { addAll, holdCallsFor, statusById } from '../helpers/queue.js';

/**
 * What people do to the files and the terminal under running workers: the log emptied (logrotate's
 * copytruncate), deleted or replaced; the terminal closed; a pipe closed; the same worker id twice.
 * Real worker processes, a real API on 127.0.0.1, real signals.
 */

let api: Api;
beforeEach(async () => {
  api = await startApi();
});
afterEach(async () => {
  await api.close();
});

const logFile = (dir: string) => join(dir, 'queue', 'execution-log.jsonl');
const runArgs = (dir: string, ...extra: string[]) => ['--dir', dir, 'run', '--api-url', api.url, '--poll-interval', '100ms', '--max-idle', '0', ...extra];

describe('the log is the truth: lost under a running worker, it stops', () => {
  it.each([
    ['emptied (logrotate copytruncate)', (file: string) => truncate(file, 0), /it shrank from \d+ bytes/],
    ['deleted', (file: string) => unlink(file), /it was deleted or moved away while in use/],
    [
      'replaced by another file',
      async (file: string) => {
        await writeFile(`${file}.new`, '');
        await rename(`${file}.new`, file);
      },
      /it was replaced/,
    ],
  ])('%s: the worker exits 4 naming it, and calls no completed task again', async (_what, damage, message) => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b' }, { id: 'c' }]);
      const worker = startCli(runArgs(dir));
      while (api.calls.length < 3) await sleep(20);
      await worker.waitForLog(/idle: 0 pending|idle 1\//);
      await damage(logFile(dir));
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(4);
      expect(result.stderr).toMatch(message);
      expect(api.calls).toHaveLength(3);
      // A new process sees it too, whatever is left in place.
      const status = await runCli(['--dir', dir, 'status']);
      expect(status.code).toBe(4);
      expect(status.stderr).toMatch(/execution-log\.jsonl is damaged/);
    });
  });

  it('emptied while a call is in flight: the call finishes, nothing is recorded into the emptied file, exit 4', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'held' }, { id: 'next' }]);
      const hold = holdCallsFor(api, 'held');
      const worker = startCli(runArgs(dir));
      await hold.arrived();
      await truncate(logFile(dir), 0);
      answerOk(hold.held[0]!.call, hold.held[0]!.res);
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(4);
      expect(result.stderr).toMatch(/not recording the outcome of held \(completed\)/);
      expect((await stat(logFile(dir))).size).toBe(0);
      expect(api.callsFor('next')).toHaveLength(0);
    });
  });

  it('status on a queue whose log was deleted says so, instead of showing every task pending', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      expect((await runCli(runArgs(dir, '--drain'))).code).toBe(0);
      await unlink(logFile(dir));
      for (const command of [['status'], ['show', 'a'], ['logs'], ['run', '--api-url', api.url, '--drain']]) {
        const result = await runCli(['--dir', dir, ...command]);
        expect(result.code, command.join(' ')).toBe(4);
        expect(result.stderr).toMatch(/execution-log\.jsonl is damaged \(whole file\): it is missing: it was deleted or moved/);
      }
      expect(api.calls).toHaveLength(1);
    });
  });

  it('logs --follow stops with exit 4 when the log it follows is replaced', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      expect((await runCli(runArgs(dir, '--drain'))).code).toBe(0);
      const follower = startCli(['--dir', dir, 'logs', '--follow']);
      await follower.waitForOutput(/a {2}attempt 1 completed/);
      await writeFile(`${logFile(dir)}.new`, '');
      await rename(`${logFile(dir)}.new`, logFile(dir));
      const result = await follower.exited;
      expect(result.code).toBe(4);
      expect(result.stderr).toMatch(/replaced/);
    });
  });
});

describe('terminals and signals', () => {
  it('SIGHUP (the terminal closed) mid-call: the call is finished and recorded, the lock released, exit 0', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'held' }, { id: 'later' }]);
      const hold = holdCallsFor(api, 'held');
      const worker = startCli(runArgs(dir));
      await hold.arrived();
      worker.process.kill('SIGHUP');
      await worker.waitForLog(/received SIGHUP/);
      answerOk(hold.held[0]!.call, hold.held[0]!.res);
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(0);
      const states = await statusById(dir);
      expect(states.get('held')).toMatchObject({ state: 'completed', attempts: 1 });
      expect(states.get('later')).toMatchObject({ state: 'pending' });
      expect(api.callsFor('held')).toHaveLength(1);
    });
  });

  it('its log pipe closed mid-call (EPIPE): the call is finished and recorded, and the worker stops', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'held' }, { id: 'later' }]);
      const hold = holdCallsFor(api, 'held');
      const worker = startCli(runArgs(dir));
      await hold.arrived();
      worker.process.stderr!.destroy();
      answerOk(hold.held[0]!.call, hold.held[0]!.res);
      const result = await worker.exited;
      expect(result.code).toBe(0);
      expect((await statusById(dir)).get('held')).toMatchObject({ state: 'completed' });
      expect(api.callsFor('held')).toHaveLength(1);
    });
  });
});

describe('mistakes caught early', () => {
  it("a second live worker with the id of a live one is refused (exit 2, naming the pid); a killed one's id is free at once", async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      const first = startCli(runArgs(dir, '--worker-id', 'same'));
      await first.waitForLog(/starting: pid (\d+)/);
      const pid = first.process.pid!;
      const second = await runCli(runArgs(dir, '--worker-id', 'same'));
      expect(second.code).toBe(2);
      expect(second.stderr).toMatch(new RegExp(`worker id "same" is in use by a live worker \\(pid ${pid} on `));
      first.process.kill('SIGKILL');
      await first.exited;
      const third = await runCli(runArgs(dir, '--worker-id', 'same', '--drain'));
      expect(third.code, third.stderr).toBe(0);
    });
  });
});

describe('results apart from the events, and a log that stops growing', () => {
  const big = (id: string) => JSON.stringify({ status: 'completed', task: id, text: `${id}:`.padEnd(20_000, 'x') });

  it('a large result is kept in queue/results, not in the log: worker result prints it as sent, show and status --json read it', async () => {
    await withTempDir(async (dir) => {
      api.setBehaviour((call, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(call.task_id === 'small' ? '{"status":"completed","n":1}' : big(call.task_id));
      });
      await addAll(
        dir,
        [{ id: 'large' }, { id: 'small' }, { id: 'waiting', deps: ['never'] }].filter((task) => task.id !== 'waiting'),
      );
      expect((await runCli(runArgs(dir, '--drain'))).code).toBe(0);
      expect((await stat(logFile(dir))).size).toBeLessThan(4000);
      const raw = await runCli(['--dir', dir, 'result', 'large']);
      expect(raw.code).toBe(0);
      expect(raw.stdout).toBe(big('large'));
      const parsed = await runCli(['--dir', dir, 'result', 'large', '--json']);
      expect(JSON.parse(parsed.stdout)).toEqual(JSON.parse(big('large')));
      expect((await runCli(['--dir', dir, 'result', 'small'])).stdout).toBe('{"status":"completed","n":1}');
      expect((await statusById(dir)).get('large')!.result).toEqual(JSON.parse(big('large')));
      expect(JSON.parse((await runCli(['--dir', dir, 'show', 'large', '--json'])).stdout).result.text).toMatch(/^large:x+$/);
      await addAll(dir, [{ id: 'later' }]);
      const none = await runCli(['--dir', dir, 'result', 'later']);
      expect(none.code).toBe(3);
      expect(none.stderr).toMatch(/task "later" is pending: only a completed task has a result/);
    });
  });

  it('clean and compact while 4 workers drain other tasks: no event lost, no task called twice, the log and results shrink', async () => {
    await withTempDir(async (dir) => {
      api.setBehaviour((call, res) => {
        setTimeout(() => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end(big(call.task_id));
        }, Math.random() * 5);
      });
      const old = Array.from({ length: 100 }, (_, i) => ({ id: `old-${i}` }));
      await addAll(dir, old);
      expect((await runCli(runArgs(dir, '--drain'))).code).toBe(0);
      const fresh = Array.from({ length: 400 }, (_, i) => ({ id: `new-${i}`, deps: i >= 10 && i % 7 === 0 ? [`new-${i - 10}`] : [] }));
      await addAll(dir, fresh);
      const workers = ['c1', 'c2', 'c3', 'c4'].map((id) => startCli(runArgs(dir, '--drain', '--worker-id', id)));
      await sleep(200);
      const cleaned = await runCli(['--dir', dir, 'clean', ...old.map((task) => task.id)]);
      expect(cleaned.code, cleaned.stderr).toBe(0);
      expect(cleaned.stdout).toMatch(/removed 100 completed tasks\ncompacted the execution log to generation 2: .*; removed 1 results file/);
      for (let round = 0; round < 5; round += 1) {
        await sleep(100);
        expect((await runCli(['--dir', dir, 'compact'])).code).toBe(0);
      }
      for (const result of await Promise.all(workers.map((worker) => worker.exited))) expect(result.code, result.stderr).toBe(0);
      const freshCalls = api.calls.filter((call) => call.task_id.startsWith('new-'));
      expect(freshCalls).toHaveLength(400);
      expect(new Set(freshCalls.map((call) => call.task_id)).size).toBe(400);
      const states = await statusById(dir);
      expect([...states.keys()].every((id) => id.startsWith('new-'))).toBe(true);
      for (const task of fresh) expect(states.get(task.id)).toMatchObject({ state: 'completed', attempts: 1 });
      // The log holds one claim and one outcome per remaining task, the record of the clean, and the header, seal-free.
      expect((await runCli(['--dir', dir, 'compact'])).stdout).toMatch(/801 of 801 events kept/);
      expect((await runCli(['--dir', dir, 'result', 'new-399'])).stdout).toBe(big('new-399'));
    });
  }, 60_000);
});
