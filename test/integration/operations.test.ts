import { execFileSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startApi, type Api, type ApiCall } from '../helpers/apiServer.js';
import { BIN, placeArgs, runCli, startCli, withTempDir } from '../helpers/cli.js';
import { addAll, heldClaims, queueIdOf, statusById } from '../helpers/queue.js';

// The everyday operations while workers run: real processes, a real HTTP API on 127.0.0.1.

let api: Api;
beforeEach(async () => {
  api = await startApi();
});
afterEach(async () => {
  await api.close();
});

const tasks = (count: number) => Array.from({ length: count }, (_, i) => ({ id: `t${i}` }));

/** Holds every call until the test answers it. */
function holdEveryCall() {
  const held: Array<{ call: ApiCall; res: ServerResponse }> = [];
  api.setBehaviour((call, res) => {
    held.push({ call, res });
  });
  return {
    held,
    arrived: async (count: number) => {
      while (held.length < count) await sleep(10);
    },
    answerAll: () => {
      for (const { call, res } of held) {
        if (res.writableEnded) continue;
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ status: 'completed', echo: call.task_id }));
      }
    },
  };
}

/** Holds the call of one task until the test answers it; every other call is answered at once. */
function holdOne(taskId: string) {
  let answer: (() => void) | undefined;
  api.setBehaviour((call, res) => {
    const ok = () => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end('{}');
    };
    if (call.task_id === taskId) answer = ok;
    else ok();
  });
  return {
    arrived: async () => {
      while (answer === undefined) await sleep(20);
    },
    answer: () => answer!(),
  };
}

describe('worker pause and worker resume', () => {
  it('with calls in flight: they finish and are recorded, nothing more is claimed until resume, then the queue drains', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(6));
      const hold = holdEveryCall();
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, '--concurrency', '2', '--poll-interval', '100ms', '--max-idle', '3', '--drain']);
      await hold.arrived(2);
      const paused = await runCli(['--dir', dir, 'pause']);
      expect(paused.code, paused.stderr).toBe(0);
      expect(paused.stdout).toMatch(/^paused: workers claim nothing until `worker resume`; 2 tasks in flight will finish$/m);
      hold.answerAll();
      await worker.waitForLog(/the queue is paused by \S+ since \d\d:\d\d:\d\d/);
      // Idle checks while paused do not count toward --max-idle 3: the worker stays, and calls nothing.
      await sleep(800);
      expect(hold.held).toHaveLength(2);
      expect(worker.process.exitCode).toBeNull();
      const states = await statusById(dir);
      expect([...states.values()].filter((task) => task.state === 'completed')).toHaveLength(2);
      expect(states.get('t2')!.reason).toMatch(/^ready, held back: paused by \S+ since \d\d:\d\d:\d\d \(`worker resume` to go on\)$/);
      expect((await runCli(['--dir', dir, 'status'])).stdout).toMatch(/^queue held back: paused by \S+ since/m);
      const again = await runCli(['--dir', dir, 'pause']);
      expect(again.code).toBe(3);
      expect(again.stderr).toMatch(/the queue is already paused by/);
      expect((await runCli(['--dir', dir, 'resume'])).code).toBe(0);
      api.setBehaviour((_call, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
      hold.answerAll();
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toMatch(/the queue was resumed/);
      expect(result.stderr).toMatch(/drained: 6 completed$/m);
      expect(api.calls).toHaveLength(6);
      expect((await runCli(['--dir', dir, 'logs'])).stdout).toMatch(/\(queue\) {2}paused by \S+[\s\S]*\(queue\) {2}resumed by \S+/);
      expect(await heldClaims(dir)).toEqual([]);
    });
  });

  it('stays paused across a compaction, and a worker started while paused claims nothing', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(2));
      expect((await runCli(['--dir', dir, 'pause'])).code).toBe(0);
      expect((await runCli(['--dir', dir, 'compact'])).code).toBe(0);
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, '--poll-interval', '100ms', '--drain']);
      await worker.waitForLog(/idle: paused by/);
      expect(api.calls).toHaveLength(0);
      expect((await runCli(['--dir', dir, 'resume'])).code).toBe(0);
      expect((await worker.exited).code).toBe(0);
      expect(api.calls).toHaveLength(2);
      expect((await runCli(['--dir', dir, 'resume'])).stderr).toMatch(/the queue is not paused/);
    });
  });
});

describe('worker rerun', () => {
  it('runs a completed task again with a new idempotency key generation, and with --with-dependents what was built on it, in order, while a worker runs', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'fetch' }, { id: 'summary', deps: ['fetch'] }, { id: 'other' }]);
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, '--poll-interval', '100ms', '--max-idle', '0']);
      while (api.calls.length < 3) await sleep(20);
      await sleep(200);
      const rerun = await runCli(['--dir', dir, 'rerun', 'fetch', '--with-dependents']);
      expect(rerun.code, rerun.stderr).toBe(0);
      expect(rerun.stdout).toBe('pending again: fetch, summary\n');
      while (api.calls.length < 5) await sleep(20);
      await sleep(300);
      worker.process.kill('SIGTERM');
      expect((await worker.exited).code).toBe(0);
      const queueId = await queueIdOf(dir);
      expect(api.calls.map((call) => `${call.task_id}:${call.idempotencyKey}`)).toEqual([
        `fetch:${queueId}:fetch:1`,
        `summary:${queueId}:summary:1`,
        `other:${queueId}:other:1`,
        `fetch:${queueId}:fetch:2`,
        `summary:${queueId}:summary:2`,
      ]);
      // The dependent waited for its dependency's new run.
      const [fetchAgain, summaryAgain] = [api.calls[3]!, api.calls[4]!];
      expect(summaryAgain.receivedAt).toBeGreaterThanOrEqual(fetchAgain.answeredAt!);
      for (const [, task] of await statusById(dir)) expect(task.state).toBe('completed');
      expect((await runCli(['--dir', dir, 'logs', 'fetch'])).stdout).toMatch(
        /fetch {2}rerun by \S+: pending again with fresh attempts and a new idempotency key/,
      );
    });
  });

  it('refuses a task that is not completed, and --with-dependents when a dependent is running, changing nothing', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b', deps: ['a'] }, { id: 'never' }]);
      await runCli(['--dir', dir, 'cancel', 'never']);
      const pending = await runCli(['--dir', dir, 'rerun', 'a']);
      expect(pending.code).toBe(3);
      expect(pending.stderr).toMatch(/task "a" is pending; only completed tasks can be rerun/);
      const failed = await runCli(['--dir', dir, 'rerun', 'never']);
      expect(failed.stderr).toMatch(/`worker retry never` runs a failed task again/);
      const held = holdOne('b');
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, '--poll-interval', '100ms', '--drain']);
      await held.arrived();
      const running = await runCli(['--dir', dir, 'rerun', 'a', '--with-dependents']);
      expect(running.code).toBe(3);
      expect(running.stderr).toMatch(/task "b", built on what is rerun, is running on \S+; nothing was changed; wait for its outcome/);
      held.answer();
      expect((await worker.exited).code).toBe(0);
      expect((await statusById(dir)).get('a')!.state).toBe('completed');
      expect((await runCli(['--dir', dir, 'rerun'])).code).toBe(2);
    });
  });
});

describe('worker remove', () => {
  it('takes pending tasks out while a worker runs, refusing to strand a dependent unless --with-dependents; the ids are never used again', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'busy' }, { id: 'doomed' }, { id: 'built-on-it', deps: ['doomed'] }, { id: 'kept' }]);
      const held = holdOne('busy');
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, '--poll-interval', '100ms', '--drain']);
      await held.arrived();
      const stranded = await runCli(['--dir', dir, 'remove', 'doomed']);
      expect(stranded.code).toBe(3);
      expect(stranded.stderr).toMatch(/task "built-on-it" \(pending\) depends on "doomed"; nothing was changed; remove it too \(--with-dependents\)/);
      const running = await runCli(['--dir', dir, 'remove', 'busy']);
      expect(running.code).toBe(3);
      expect(running.stderr).toMatch(/task "busy" is running on \S+; nothing was changed; wait for its outcome, or `worker cancel busy` first/);
      const removed = await runCli(['--dir', dir, 'remove', 'doomed', '--with-dependents']);
      expect(removed.code, removed.stderr).toBe(0);
      expect(removed.stdout).toMatch(/^removed doomed, built-on-it\n(compacted the execution log|the history)/);
      held.answer();
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(0);
      expect(api.calls.map((call) => call.task_id).sort()).toEqual(['busy', 'kept']);
      expect([...(await statusById(dir)).keys()]).toEqual(['busy', 'kept']);
      const reused = await runCli(['--dir', dir, 'add', 'doomed', 'again']);
      expect(reused.code).toBe(3);
      expect(reused.stderr).toMatch(/task id "doomed" belonged to a task removed/);
      // The history says who removed what, and keeps saying it after another compaction.
      expect((await runCli(['--dir', dir, 'compact'])).code).toBe(0);
      expect((await runCli(['--dir', dir, 'logs'])).stdout).toMatch(/\(queue\) {2}removed by \S+: doomed, built-on-it$/m);
      const completed = await runCli(['--dir', dir, 'remove', 'kept']);
      expect(completed.stderr).toMatch(/task "kept" is completed; nothing was changed; completed tasks are removed by `worker clean kept`/);
    });
  });
});

describe('worker cancel of a running task', () => {
  it('its worker stops the call (the API sees the connection closed), records it cancelled, blocks its dependents, and goes on with the others', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'slow' }, { id: 'after-slow', deps: ['slow'] }, { id: 'x' }, { id: 'y' }]);
      let slowResponse: ServerResponse | undefined;
      api.setBehaviour((call, res) => {
        if (call.task_id === 'slow') {
          slowResponse = res;
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, '--concurrency', '2', '--poll-interval', '100ms', '--drain']);
      while (slowResponse === undefined) await sleep(20);
      const cancelled = await runCli(['--dir', dir, 'cancel', 'slow']);
      expect(cancelled.code, cancelled.stderr).toBe(0);
      expect(cancelled.stdout).toBe('cancelled slow: its worker stopped the call; blocked now: after-slow\n');
      expect(slowResponse.destroyed || slowResponse.socket === null || slowResponse.socket.destroyed).toBe(true);
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(0);
      const states = await statusById(dir);
      expect(states.get('slow')).toMatchObject({ state: 'failed', last_error: { kind: 'cancelled' } });
      expect(states.get('after-slow')).toMatchObject({ state: 'blocked' });
      expect(states.get('x')!.state).toBe('completed');
      expect(states.get('y')!.state).toBe('completed');
      expect(api.callsFor('slow')).toHaveLength(1);
      expect(await heldClaims(dir)).toEqual([]);
    });
  });
});

describe('worker edit', () => {
  it('changes the instruction a pending task is sent with, records who did it, and refuses running and completed tasks', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [
        { id: 'first', instruction: 'old' },
        { id: 'second', instruction: 'old', deps: ['first'] },
      ]);
      const file = join(dir, 'prompt.md');
      await writeFile(file, 'new from a file\n');
      const edited = await runCli(['--dir', dir, 'edit', 'second', '--instruction-file', file]);
      expect(edited.code, edited.stderr).toBe(0);
      expect(edited.stdout).toBe('edited second: its next attempt sends the new instruction\n');
      const held = holdOne('first');
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, '--poll-interval', '100ms', '--drain']);
      await held.arrived();
      const running = await runCli(['--dir', dir, 'edit', 'first', '--instruction', 'too late']);
      expect(running.code).toBe(3);
      expect(running.stderr).toMatch(/task "first" is running on \S+: its call was sent with its instruction as it was/);
      held.answer();
      expect((await worker.exited).code).toBe(0);
      expect(api.callsFor('second')[0]!.body.instruction).toBe('new from a file');
      expect(api.callsFor('first')[0]!.body.instruction).toBe('old');
      const completed = await runCli(['--dir', dir, 'edit', 'first', '--instruction', 'x']);
      expect(completed.stderr).toMatch(/task "first" is completed; nothing was changed; edit a task that is still to run; `worker rerun first` runs it again/);
      expect((await runCli(['--dir', dir, 'edit', 'first'])).code).toBe(2);
      expect((await runCli(['--dir', dir, 'logs', 'second'])).stdout).toMatch(/second {2}instruction edited by \S+/);
    });
  });
});

describe('the estimate of what is left', () => {
  it('status says how long the rest may take once tasks have completed', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(6));
      expect((await runCli(['--dir', dir, 'status'])).stdout).toMatch(/^6 tasks: 6 pending, 0 running, 0 completed, 0 failed, 0 blocked$/m);
      api.setBehaviour((_call, res) => {
        setTimeout(() => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{}');
        }, 50);
      });
      expect((await runCli(['--dir', dir, 'run', '3', '--api-url', api.url])).code).toBe(0);
      expect((await runCli(['--dir', dir, 'status'])).stdout).toMatch(
        /^6 tasks: 3 pending, 0 running, 3 completed, 0 failed, 0 blocked; about \d+(ms|s|m) left at [\d.]+\/min$/m,
      );
    });
  });
});

describe('worker status --watch on a terminal', () => {
  it('fits a 15-row terminal, like top: the summary, the running task, the latest outcomes, and how many rows were left out', async (context) => {
    try {
      execFileSync('tmux', ['-V']);
    } catch {
      context.skip('tmux is not installed (apt-get install tmux): --watch cannot be read from a terminal');
    }
    await withTempDir(async (dir) => {
      await addAll(dir, tasks(40));
      api.setBehaviour((call, res) => {
        if (call.task_id === 't3') return; // held: t3 stays running
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{}');
      });
      const worker = startCli(['--dir', dir, 'run', '4', '--api-url', api.url]);
      while (api.calls.length < 4) await sleep(20);
      const session = `worker-watch-${process.pid}`;
      const command = `${process.execPath} ${BIN} ${placeArgs(['--dir', dir]).join(' ')} status --watch 200ms`;
      execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '100', '-y', '15', command], { env: { ...process.env, NO_COLOR: '1' } });
      try {
        let screen = '';
        for (let i = 0; i < 100 && !/more tasks/.test(screen); i += 1) {
          await sleep(100);
          screen = execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
        }
        const lines = screen.split('\n').filter((line) => line.trim() !== '');
        expect(lines.length).toBeLessThanOrEqual(15);
        expect(lines[0]).toMatch(/^40 tasks: 36 pending, 1 running, 3 completed, 0 failed, 0 blocked/);
        expect(lines[1]).toMatch(/^ID\s+STATE\s+ATTEMPTS/);
        expect(lines[2]).toMatch(/^t3\s+running/);
        expect(lines.slice(3, 6).every((line) => /completed/.test(line))).toBe(true);
        expect(lines.at(-1)).toMatch(/^… \d+ more tasks \(`worker status` shows them all\)$/);
        for (const line of lines) expect(line.length).toBeLessThanOrEqual(100);
      } finally {
        execFileSync('tmux', ['kill-session', '-t', session]);
        worker.process.kill('SIGKILL');
      }
    });
  });
});
