import { execFileSync } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { linkSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { answerOk, startApi, type Api } from '../helpers/apiServer.js';
import { BIN, describeFolder, folderOnly, onDatabase, placeArgs, queueFor, runCli, startCli, withTempDir } from '../helpers/cli.js';
import { addAll, holdCallsFor, lockSlots, statusById } from '../helpers/queue.js';

let api: Api;
beforeEach(async () => {
  api = await startApi();
});
afterEach(async () => {
  await api.close();
});

const FAST = ['--poll-interval', '100ms', '--backoff', '20ms'];

describe('worker serve', () => {
  it('speaks the task contract over real HTTP: echoes, fails "fail:" tasks, replays idempotency keys, simulates failures', async () => {
    const server = startCli(['serve', '--port', '0', '--latency', '5ms..20ms']);
    const line = await server.waitForOutput(/listening at http/);
    const url = /(http:\/\/\S+)/.exec(line)![1]!;
    const post = (body: unknown, key?: string) =>
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) }, body: JSON.stringify(body) });
    const ok = await post({ task_id: 'a', instruction: 'Summarize', attempt: 1 }, 'a');
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ status: 'completed', task_id: 'a', output: 'done: Summarize' });
    const again = await post({ task_id: 'a', instruction: 'Summarize', attempt: 2 }, 'a');
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(await again.json()).toEqual({ status: 'completed', task_id: 'a', output: 'done: Summarize' });
    const refused = await post({ task_id: 'b', instruction: 'fail: no source' });
    expect(refused.status).toBe(422);
    expect(await refused.json()).toEqual({ status: 'failed', error: 'refused: no source' });
    expect((await post({ nothing: true })).status).toBe(400);
    await server.waitForOutput(/task="a" attempt=1 worker=\? → 200/);
    // An id with escape codes is logged escaped; a body over 16 MiB is refused unread, and the server stays up.
    expect((await post({ task_id: 'c\u001b[2J\u009b2J', instruction: 'x' })).status).toBe(200);
    await server.waitForOutput(/task="c\\u001b\[2J\\u009b2J"/);
    expect(server.stdout()).not.toMatch(/[\u001b\u009b]/);
    const huge = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: 'x'.repeat(17 * 1024 * 1024) }).catch(
      (error: unknown) => error,
    );
    if (huge instanceof Response) expect(huge.status).toBe(413);
    expect((await post({ task_id: 'd', instruction: 'still up' })).status).toBe(200);
    server.process.kill('SIGINT');
    const result = await server.exited;
    expect(result.code).toBe(0);
    expect(result.stdout).toMatch(/stopped after 6 calls/);

    const failing = startCli(['serve', '--port', '0', '--latency', '1ms', '--fail-rate', '1', '--status-code', '500']);
    const failingUrl = /(http:\/\/\S+)/.exec(await failing.waitForOutput(/listening at/))![1]!;
    const response = await fetch(failingUrl, { method: 'POST', body: JSON.stringify({ task_id: 'x', instruction: 'y' }) });
    expect(response.status).toBe(500);
    failing.process.kill('SIGTERM');
    await failing.exited;
  });

  it('refuses bad settings with exit 2', async () => {
    const latency = await runCli(['serve', '--latency', 'fast']);
    expect(latency.code).toBe(2);
    expect(latency.stderr).toMatch(/expected --latency to be a duration like 50ms or a range/);
    const rate = await runCli(['serve', '--fail-rate', '2']);
    expect(rate.code).toBe(2);
    expect(rate.stderr).toMatch(/--fail-rate to be a share from 0 to 1/);
  });
});

describe('worker demo', () => {
  it('drains its graph with 3 workers and ends with the status table and where to look further', async () => {
    await withTempDir(async (dir) => {
      const root = join(dir, 'demo');
      const result = await runCli(['--dir', root, 'demo']);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/worker demo: 20 tasks in /);
      expect(result.stdout).toMatch(/^20 tasks: 0 pending, 0 running, 16 completed, 1 failed, 3 blocked$/m);
      expect(result.stdout).toMatch(/^fetch-7\s+failed\s+1\s+-\s+http 422/m);
      expect(result.stdout).toMatch(/^publish\s+blocked\s+0\s+review,index,appendix\s+dependency fetch-7 failed/m);
      expect(result.stdout).toMatch(/^outline\s+completed/m);
      expect(result.stdout).toContain(onDatabase ? `worker --queue ${queueFor(root)} show fetch-7` : `worker --dir ${root} show fetch-7`);
      const workers = await runCli(['--dir', root, 'workers', '--json']);
      const seen = (JSON.parse(workers.stdout) as Array<{ worker: string; liveness: string }>).map((w) => `${w.worker} ${w.liveness}`).sort();
      expect(seen).toEqual(['demo-1 stopped', 'demo-2 stopped', 'demo-3 stopped']);
      const again = await runCli(['--dir', root, 'demo']);
      expect(again.code).toBe(3);
      expect(again.stderr).toMatch(/already holds a queue/);
    });
  });
});

describe('why is it not running?', () => {
  it('status and show say it in words: running, waiting on deps, stuck with a dead worker, failed, blocked through a chain', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [
        { id: 'fetch-3' },
        { id: 'parse-1' },
        { id: 'report', deps: ['fetch-3', 'parse-1'] },
        { id: 'bad' },
        { id: 'after-bad', deps: ['bad'] },
        { id: 'later', deps: ['after-bad'] },
      ]);
      const hold = holdCallsFor(api, 'fetch-3');
      api.setBehaviour((call, res) => {
        if (call.task_id === 'fetch-3') {
          hold.held.push({ call, res });
          return;
        }
        if (call.task_id === 'bad') {
          res.writeHead(400);
          res.end('no such chapter');
          return;
        }
        answerOk(call, res);
      });
      const doomed = startCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--worker-id', 'w-doomed', '--lock-stale', '60s', '--max-idle', '0', '1']);
      while (hold.held.length === 0) await new Promise((r) => setTimeout(r, 20));
      let states = await statusById(dir);
      expect(states.get('fetch-3')!.reason).toMatch(/^running on w-doomed for \d+s \(attempt 1\)$/);
      expect(states.get('report')!.reason).toMatch(/^waiting on 2 deps: fetch-3 \(running on w-doomed, \d+s\), parse-1 \(pending\)$/);
      doomed.process.kill('SIGKILL');
      await doomed.exited;
      api.setBehaviour((call, res) => {
        if (call.task_id !== 'bad') return answerOk(call, res);
        res.writeHead(400);
        res.end('no such chapter');
      });
      states = await statusById(dir);
      expect(states.get('fetch-3')!.stuck).toMatch(/^held by w-doomed, whose process is gone \(stuck \d+s\)$/);
      expect(states.get('fetch-3')!.reason).toBe(states.get('fetch-3')!.stuck);
      const table = await runCli(['--dir', dir, 'status']);
      expect(table.stdout).toMatch(/fetch-3\s+running \(stuck\)/);

      const drained = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--lock-stale', '60s']);
      expect(drained.code, drained.stderr).toBe(6);
      states = await statusById(dir);
      expect(states.get('bad')!.reason).toBe('failed after 1 attempt: http 400: no such chapter');
      expect(states.get('after-bad')!.reason).toBe('blocked: dependency bad failed (http 400)');
      expect(states.get('later')!.reason).toBe('blocked: dependency after-bad is blocked by bad, which failed (http 400)');
      const shown = await runCli(['--dir', dir, 'show', 'later']);
      expect(shown.stdout).toMatch(/^reason\s+blocked: dependency after-bad is blocked by bad/m);
    });
  });

  it('an idle worker logs what it sees in the same words', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'bad' }, { id: 'child', deps: ['bad'] }]);
      api.setBehaviour((_call, res) => {
        res.writeHead(400);
        res.end('nope');
      });
      const result = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--max-idle', '2']);
      expect(result.code).toBe(6);
      expect(result.stderr).toMatch(/idle 1\/2: 0 pending, 1 blocked \(dependency bad failed\), 0 completed, 1 failed/);
    });
  });
});

describe('inspection: show, logs, graph, workers', () => {
  it('shows a task with its attempts, dependencies, dependents and result; logs and graphs the queue', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b', deps: ['a'] }]);
      api.setBehaviour((call, res) => {
        if (call.task_id === 'a' && call.attempt === 1) {
          res.writeHead(503);
          res.end('busy');
        } else answerOk(call, res);
      });
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--worker-id', 'w-1'])).code).toBe(0);
      const shown = await runCli(['--dir', dir, 'show', 'a']);
      expect(shown.code).toBe(0);
      expect(shown.stdout).toMatch(/^state\s+completed$/m);
      expect(shown.stdout).toMatch(/attempt 1 retry by w-1 in \d+ ms: http 503: busy; retry at /);
      expect(shown.stdout).toMatch(/attempt 2 completed by w-1 in \d+ ms, http 200/);
      expect(shown.stdout).toMatch(/^dependents \(1\)\n {2}b {2}completed$/m);
      expect(shown.stdout).toMatch(/"echo": "a"/);
      const json = JSON.parse((await runCli(['--dir', dir, 'show', 'a', '--json'])).stdout);
      expect(json.attempts.map((attempt: { outcome: string }) => attempt.outcome)).toEqual(['retry', 'completed']);
      expect(json.result).toEqual({ status: 'completed', echo: 'a' });

      const logs = await runCli(['--dir', dir, 'logs']);
      expect(logs.stdout.trim().split('\n')).toHaveLength(6);
      expect((await runCli(['--dir', dir, 'logs', 'b'])).stdout).toMatch(
        /^\S+ {2}b {2}claimed by w-1 \(attempt 1, pid \d+ on .+\)\n\S+ {2}b {2}attempt 1 completed/,
      );
      const mermaid = await runCli(['--dir', dir, 'graph']);
      expect(mermaid.stdout).toBe(
        'flowchart LR\n  n0["a · completed"]:::completed\n  n1["b · completed"]:::completed\n  n0 --> n1\n' +
          '  classDef pending fill:#f5f5f5\n  classDef running fill:#d1ecf1\n  classDef completed fill:#d4edda\n  classDef failed fill:#f8d7da\n  classDef blocked fill:#fff3cd\n',
      );
      expect((await runCli(['--dir', dir, 'graph', '--format', 'dot'])).stdout).toContain('"a" -> "b";');
      for (const command of [
        ['show', 'nope'],
        ['logs', 'nope'],
      ]) {
        const missing = await runCli(['--dir', dir, ...command]);
        expect(missing.code).toBe(3);
        expect(missing.stderr).toMatch(/no task "nope"/);
      }
      expect((await runCli(['--dir', dir, 'graph', '--format', 'png'])).code).toBe(2);
    });
  });

  it('follows the log as events are appended', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      const follower = startCli(['--dir', dir, 'logs', '--follow']);
      await new Promise((r) => setTimeout(r, 300));
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(0);
      await follower.waitForOutput(/a {2}attempt 1 completed/);
      follower.process.kill('SIGINT');
      expect((await follower.exited).code).toBe(0);
    });
  });

  folderOnly('forgets heartbeats of workers gone for more than 7 days when a worker starts', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      await mkdir(join(dir, 'locks', 'workers'), { recursive: true });
      const old = {
        worker: 'w-old',
        pid: 1,
        host: 'elsewhere',
        started_at: '2020-01-01T00:00:00.000Z',
        beat_at: '2020-01-01T00:00:00.000Z',
        state: 'stopped',
        current_task: null,
        tasks_done: 3,
      };
      await writeFile(join(dir, 'locks', 'workers', 'w-old.json'), JSON.stringify(old));
      expect(JSON.parse((await runCli(['--dir', dir, 'workers', '--json'])).stdout)).toHaveLength(1);
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--worker-id', 'w-new'])).code).toBe(0);
      const workers = JSON.parse((await runCli(['--dir', dir, 'workers', '--json'])).stdout) as Array<{ worker: string }>;
      expect(workers.map((worker) => worker.worker)).toEqual(['w-new']);
    });
  });

  it('lists workers from their heartbeats: alive while running, dead when killed', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'slow' }]);
      const hold = holdCallsFor(api, 'slow');
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--worker-id', 'w-live', '--max-idle', '0']);
      await hold.arrived();
      const alive = JSON.parse((await runCli(['--dir', dir, 'workers', '--json'])).stdout);
      expect(alive).toMatchObject([{ worker: 'w-live', liveness: 'alive', pid: worker.process.pid }]);
      // The heartbeat is written once a second: wait for the one that shows the task.
      let beat: Record<string, unknown> = {};
      for (let i = 0; i < 50 && beat.current_task !== 'slow'; i += 1) {
        await new Promise((r) => setTimeout(r, 100));
        beat = JSON.parse((await runCli(['--dir', dir, 'workers', '--json'])).stdout)[0];
      }
      expect(beat).toMatchObject({ current_task: 'slow', state: 'running' });
      worker.process.kill('SIGKILL');
      await worker.exited;
      const table = await runCli(['--dir', dir, 'workers']);
      expect(table.stdout).toMatch(/^WORKER\s+STATE\s+PID\s+HOST\s+TASK\s+DONE\s+STARTED\s+LAST BEAT$/m);
      expect(table.stdout).toMatch(/^w-live\s+dead\s+\d+/m);
    });
  });
});

describe('repair: retry, cancel, unlock, clean', () => {
  it('cancel blocks the dependents of a pending task; stops a running one; refuses a completed one; retry undoes it', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'done' }, { id: 'busy' }, { id: 'skip-me' }, { id: 'child', deps: ['skip-me'] }]);
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '1'])).code).toBe(0);
      const hold = holdCallsFor(api, 'busy');
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--worker-id', 'w-busy', '--max-idle', '0', '1']);
      await hold.arrived();
      const completed = await runCli(['--dir', dir, 'cancel', 'done']);
      expect(completed.code).toBe(3);
      expect(completed.stderr).toMatch(/task "done" is completed; only pending, blocked or running tasks can be cancelled/);
      expect((await runCli(['--dir', dir, 'cancel', 'nope'])).code).toBe(3);
      const cancelled = await runCli(['--dir', dir, 'cancel', 'skip-me']);
      expect(cancelled.stdout).toBe('cancelled skip-me; blocked now: child\n');
      // A running task: its worker stops the call (the API sees the connection closed) and goes on.
      const running = await runCli(['--dir', dir, 'cancel', 'busy']);
      expect(running.code, running.stderr).toBe(0);
      expect(running.stdout).toBe('cancelled busy: its worker stopped the call\n');
      expect(hold.held[0]!.res.destroyed || hold.held[0]!.res.socket === null || hold.held[0]!.res.socket.destroyed).toBe(true);
      const stoppedWorker = await worker.exited;
      expect(stoppedWorker.code, stoppedWorker.stderr).toBe(0);
      expect(stoppedWorker.stderr).toMatch(/busy: cancelled by \S+ \(worker cancel\) while its call ran; stopped the call after/);
      let states = await statusById(dir);
      expect(states.get('busy')).toMatchObject({ state: 'failed', last_error: { kind: 'cancelled' } });
      expect(states.get('skip-me')).toMatchObject({ state: 'failed', attempts: 0, last_error: { kind: 'cancelled' }, reason: 'cancelled by hand' });
      expect(states.get('child')).toMatchObject({ state: 'blocked', reason: 'blocked: dependency skip-me was cancelled' });
      const drained = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain']);
      expect(drained.code).toBe(0);
      expect(api.callsFor('skip-me')).toHaveLength(0);
      api.setBehaviour(answerOk);
      expect((await runCli(['--dir', dir, 'retry', '--failed'])).stdout).toBe('pending again: busy, skip-me\n');
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(0);
      states = await statusById(dir);
      expect([...states.values()].every((task) => task.state === 'completed')).toBe(true);
    });
  });

  it('unlock refuses a live lock, naming its worker, and removes a dead one', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'held' }]);
      const hold = holdCallsFor(api, 'held');
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--worker-id', 'w-holder', '--max-idle', '0', '--lock-stale', '60s']);
      await hold.arrived();
      const live = await runCli(['--dir', dir, 'unlock', 'held']);
      expect(live.code).toBe(3);
      expect(live.stderr).toMatch(/the lock of "held" is held by w-holder \(pid \d+ on .+\), which is alive/);
      worker.process.kill('SIGKILL');
      await worker.exited;
      const removed = await runCli(['--dir', dir, 'unlock', 'held']);
      expect(removed.code, removed.stderr).toBe(0);
      expect(removed.stdout).toMatch(
        /removed the lock of held, held by w-holder .*, whose process is gone; the task is still running under that claim, and the next worker takes it over/,
      );
      const none = await runCli(['--dir', dir, 'unlock', 'held']);
      expect(none.code).toBe(3);
      expect(none.stderr).toMatch(/task "held" has no lock/);
      api.setBehaviour(answerOk);
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--lock-stale', '60s'])).code).toBe(0);
      expect((await statusById(dir)).get('held')).toMatchObject({ state: 'completed', attempts: 2 });
    });
  });

  it('clean removes completed tasks, keeps what remaining tasks need, refuses to strand a dependent, and never reuses an id', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b', deps: ['a'] }, { id: 'c' }, { id: 'waits', deps: ['c'] }]);
      api.setBehaviour((call, res) => {
        if (call.task_id === 'waits') {
          res.writeHead(400);
          res.end();
        } else answerOk(call, res);
      });
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(6);
      const strand = await runCli(['--dir', dir, 'clean', 'c']);
      expect(strand.code).toBe(3);
      expect(strand.stderr).toMatch(/task "c" is needed by "waits", which would be left depending on a task that no longer exists/);
      const notCompleted = await runCli(['--dir', dir, 'clean', 'waits']);
      expect(notCompleted.code).toBe(3);
      expect(notCompleted.stderr).toMatch(/only completed tasks can be removed/);
      const cleaned = await runCli(['--dir', dir, 'clean', '--completed']);
      // What a and b left in the log goes with them: the log keeps the 4 events of c and waits.
      expect(cleaned.stdout).toMatch(
        onDatabase
          ? /^removed 2 completed tasks; kept 1 that remaining tasks depend on: c\nthe history: [\d.]+ KB → [\d.]+ KB, 4 of 8 events kept\n$/
          : /^removed 2 completed tasks; kept 1 that remaining tasks depend on: c\ncompacted the execution log to generation 2: [\d.]+ KB → [\d.]+ KB, 4 of 8 events kept\n$/,
      );
      const states = await statusById(dir);
      expect([...states.keys()]).toEqual(['c', 'waits']);
      expect(states.get('c')).toMatchObject({ state: 'completed' });
      const reuse = await runCli(['--dir', dir, 'add', 'a', 'again']);
      expect(reuse.code).toBe(3);
      expect(reuse.stderr).toMatch(/task id "a" belonged to a task removed by `worker clean`/);
      expect((await runCli(['--dir', dir, 'logs'])).code).toBe(0);
      expect((await runCli(['--dir', dir, 'add', 'new', 'fresh', 'c'])).code).toBe(0);
      expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain'])).code).toBe(0);
      expect((await statusById(dir)).get('new')).toMatchObject({ state: 'completed' });
      const recent = await runCli(['--dir', dir, 'clean', '--completed', '--older-than', '7d']);
      expect(recent.stdout).toBe('removed 0 completed tasks\n');
    });
  });
});

describe('live progress', () => {
  it('worker run on a terminal shows a progress line under its log (read from a real pseudo-terminal)', async (context) => {
    try {
      execFileSync('tmux', ['-V']);
    } catch {
      context.skip('tmux is not installed (apt-get install tmux): the progress line cannot be read from a terminal');
    }
    await withTempDir(async (dir) => {
      await addAll(
        dir,
        Array.from({ length: 6 }, (_, i) => ({ id: `t${i}` })),
      );
      const session = `worker-test-${process.pid}`;
      api.setBehaviour((call, res) => {
        setTimeout(() => answerOk(call, res), 150);
      });
      const command = `${process.execPath} ${BIN} ${placeArgs(['--dir', dir]).join(' ')} run --api-url ${api.url} --poll-interval 100ms --max-idle 0; sleep 30`;
      execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '160', '-y', '20', command], { env: { ...process.env, NO_COLOR: '1' } });
      try {
        let screen = '';
        for (let i = 0; i < 100 && !/6\/6 completed/.test(screen); i += 1) {
          await new Promise((r) => setTimeout(r, 100));
          screen = execFileSync('tmux', ['capture-pane', '-p', '-t', session], { encoding: 'utf8' });
        }
        const lines = screen.split('\n').filter((line) => line.trim() !== '');
        expect(lines.at(-1)).toMatch(/^6\/6 completed · 0 running · 0 failed · 0 blocked · \d+\.\d\/s · [\d.]+m?s$/);
        expect(screen).toMatch(/INFO {2}w-[0-9a-f]{8} completed t5 in \d+ms \(http 200\)/);
        expect(screen).not.toMatch(/\u001b\[3\dm/);
      } finally {
        execFileSync('tmux', ['kill-session', '-t', session]);
      }
    });
  });

  it('status --watch redraws until stopped, for as long as it runs', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      const watcher = startCli(['--dir', dir, 'status', '--watch', '100ms']);
      // Past a dozen redraws: each wait once left a listener behind, and Node warned at the eleventh.
      for (let i = 0; i < 100 && (watcher.stdout().match(/1 task: 1 pending/g) ?? []).length < 14; i += 1) await new Promise((r) => setTimeout(r, 100));
      watcher.process.kill('SIGINT');
      const result = await watcher.exited;
      expect(result.code).toBe(0);
      expect(result.stdout.match(/1 task: 1 pending/g)!.length).toBeGreaterThanOrEqual(14);
      expect(result.stderr).toBe('');
    });
  });
});

describeFolder('leftover locks', () => {
  /**
   * What a worker killed between locking and claiming leaves: the lock of `orphan`, a task that holds no
   * claim, made `ageMs` ago by process `pid` as a hard link to its slot, or (`folder`) as a folder, which
   * names no one (file systems without hard links, earlier versions).
   */
  async function leaveLock(dir: string, form: 'link' | 'folder', pid: number, ageMs: number): Promise<string> {
    await addAll(dir, [{ id: 'orphan' }]);
    const { lockShard, queuePaths } = await import('../../src/folder/paths.js');
    const { slotsDir } = await import('../../src/folder/lock/lockSlots.js');
    const lock = join(dir, 'locks', lockShard('orphan'), 'orphan.lock');
    await mkdir(join(dir, 'locks', lockShard('orphan')), { recursive: true });
    if (form === 'folder') {
      await mkdir(lock);
    } else {
      const host = (await import('node:os')).hostname();
      await mkdir(slotsDir(queuePaths(dir)), { recursive: true });
      const slot = join(slotsDir(queuePaths(dir)), `${host}-${pid}.0`);
      await writeFile(slot, JSON.stringify({ worker: 'w-gone', pid, host }));
      linkSync(slot, lock);
    }
    const then = new Date(Date.now() - ageMs);
    utimesSync(lock, then, then);
    return lock;
  }

  const deadPid = () => Number(execFileSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }));

  it("a worker removes at once a fresh lock whose maker is gone, and the dead maker's slot", async () => {
    await withTempDir(async (dir) => {
      await leaveLock(dir, 'link', deadPid(), 0);
      const result = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--lock-stale', '60s']);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).toMatch(/removed the leftover lock of orphan: its owner w-gone \(pid \d+\) is gone/);
      expect((await statusById(dir)).get('orphan')).toMatchObject({ state: 'completed' });
      // The dead worker's slot went with its lock, and the worker's own when it stopped.
      if (!onDatabase) expect(await lockSlots(dir)).toEqual([]);
    });
  });

  it('a lock whose maker is alive is left alone while it is fresh', async () => {
    await withTempDir(async (dir) => {
      // This test's own process stands for a worker between locking and claiming.
      const lock = await leaveLock(dir, 'link', process.pid, 0);
      const result = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--poll-interval', '100ms', '--max-idle', '3', '--lock-stale', '60s']);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stderr).not.toMatch(/removed the leftover lock/);
      expect(api.calls).toEqual([]);
      expect(statSync(lock).nlink).toBe(2);
    });
  });

  it('a lock that names no one (a folder) goes once stale, not before', async () => {
    await withTempDir(async (dir) => {
      const lock = await leaveLock(dir, 'folder', 0, 5000);
      const early = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--poll-interval', '100ms', '--max-idle', '3', '--lock-stale', '60s']);
      expect(early.code, early.stderr).toBe(0);
      expect(api.calls).toEqual([]);
      expect(statSync(lock).isDirectory()).toBe(true);
      const stale = await runCli(['--dir', dir, 'run', '--api-url', api.url, ...FAST, '--drain', '--lock-stale', '3s']);
      expect(stale.code, stale.stderr).toBe(0);
      expect(stale.stderr).toMatch(/removed the leftover lock of orphan: it was not refreshed for [5-9](\.\d+)?s/);
      expect((await statusById(dir)).get('orphan')).toMatchObject({ state: 'completed' });
    });
  });
});
