import { execFileSync, spawn } from 'node:child_process';
import { hostname } from 'node:os';
import { appendFile, mkdir, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { answerOk, answerOkWithin, startApi, type Api } from '../helpers/apiServer.js';
import { describeFolder, onDatabase, runCli, startCli, withTempDir, type RunningCli } from '../helpers/cli.js';
import { addAll, describeSlots, heldClaims, holdCallsFor, lockSlots, logEvents, queueIdOf, statusById } from '../helpers/queue.js';
import { checkGuarantees, readFolderQueue, type Kill } from './checker.mjs';
import { QueueStore } from '../../src/folder/store.js';
import { DamagedFileError } from '../../src/errors.js';
import { ExecutionLogReader } from '../../src/folder/executionLog.js';
import type { TaskDefinition } from '../../src/types.js';

/** `npm run test:faults` runs the full sizes; `npm test` a short form that fits CI. */
const FULL = process.env.FAULTS_FULL === '1';

let api: Api;
beforeEach(async () => {
  api = await startApi();
});
afterEach(async () => {
  await api.close();
});

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The queue as the checks read it, from either store. */
async function queueOf(dir: string) {
  return onDatabase ? { id: await queueIdOf(dir), events: await logEvents(dir) } : readFolderQueue(dir);
}

/** A dependency graph in layers: each task depends on up to two tasks of earlier layers. */
function layeredGraph(count: number, seed = 7): Array<{ id: string; deps: string[] }> {
  let state = seed;
  const random = () => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state / 2 ** 31;
  };
  return Array.from({ length: count }, (_, i) => {
    const deps = new Set<string>();
    if (i >= 20) for (let k = 0; k < 2; k += 1) if (random() < 0.6) deps.add(`t${Math.floor(random() * (i - 10))}`);
    return { id: `t${i}`, deps: [...deps] };
  });
}

/**
 * `count` workers drain `tasks` (already added) while a random one is SIGKILLed every 150 to 400 ms and
 * restarted under a new id, until every task was called once; `during` runs alongside. Resolves when the
 * last workers have exited, with the kills and their exit results.
 */
async function drainThroughKillStorm(
  dir: string,
  tasks: ReadonlyArray<{ id: string }>,
  count: number,
  during: (storming: () => boolean) => Promise<void> = async () => undefined,
  extraArgs: readonly string[] = [],
) {
  const kills: Kill[] = [];
  let incarnation = 0;
  const ids: string[] = [];
  const start = (slot: number): RunningCli => {
    incarnation += 1;
    ids[slot] = `w${slot}-${incarnation}`;
    return startCli([
      '--dir',
      dir,
      'run',
      '--api-url',
      api.url,
      '--drain',
      '--quiet',
      '--poll-interval',
      '100ms',
      '--lock-stale',
      '10s',
      '--worker-id',
      ids[slot],
      ...extraArgs,
    ]);
  };
  const workers = Array.from({ length: count }, (_, slot) => start(slot));
  let storming = true;
  const storm = (async () => {
    while (storming) {
      await sleep(150 + Math.random() * 250);
      if (!storming) break;
      const slot = Math.floor(Math.random() * workers.length);
      const victim = workers[slot]!;
      if (victim.process.exitCode !== null) continue;
      kills.push({ worker: ids[slot]!, at: Date.now() });
      victim.process.kill('SIGKILL');
      await victim.exited;
      workers[slot] = start(slot);
    }
  })();
  const alongside = during(() => storming);
  // Storm while the queue drains; then let the last workers finish.
  const deadline = Date.now() + (FULL ? 120_000 : 60_000);
  while (Date.now() < deadline && new Set(api.calls.map((call) => call.task_id)).size < tasks.length) await sleep(100);
  storming = false;
  await Promise.all([storm, alongside]);
  return { kills, results: await Promise.all(workers.map((worker) => worker.exited)) };
}

describe('kill storm', () => {
  it(`8 workers drain ${FULL ? '3,000' : '1,000'} tasks while a random worker is SIGKILLed every few hundred ms and restarted`, async () => {
    await withTempDir(async (dir) => {
      const tasks = layeredGraph(FULL ? 3000 : 1000);
      await addAll(dir, tasks);
      // Calls of a few ms: the drain lasts long enough for several kills.
      api.setBehaviour(answerOkWithin(15));
      const { kills, results } = await drainThroughKillStorm(dir, tasks, 8);
      for (const result of results) expect([0, null]).toContain(result.code);
      expect(kills.length).toBeGreaterThan(5);
      const verdict = await checkGuarantees(await queueOf(dir), tasks, api.calls, kills, await statusById(dir));
      expect(verdict.problems).toEqual([]);
      expect(await heldClaims(dir)).toEqual([]);
      if (!onDatabase) expect(await lockSlots(dir), await describeSlots(dir)).toEqual([]);
      console.log(
        `kill storm: ${verdict.tasks} tasks, ${verdict.calls} calls, ${kills.length} kills, ${verdict.explainedRepeats} repeated calls, each explained by a kill`,
      );
    });
  }, 180_000);
});

describe('kill storm with --concurrency', () => {
  it(`4 workers with 4 calls in flight each drain ${FULL ? '2,000' : '600'} tasks while a random one is SIGKILLed every few hundred ms`, async () => {
    await withTempDir(async (dir) => {
      const tasks = layeredGraph(FULL ? 2000 : 600, 5);
      await addAll(dir, tasks);
      // Calls that take a moment, so that each worker has several in flight when it is killed, and the drain
      // lasts long enough for several kills (16 slots drain fast).
      api.setBehaviour(answerOkWithin(80));
      const { kills, results } = await drainThroughKillStorm(dir, tasks, 4, undefined, ['--concurrency', '4']);
      for (const result of results) expect([0, null]).toContain(result.code);
      expect(kills.length).toBeGreaterThan(3);
      const verdict = await checkGuarantees(await queueOf(dir), tasks, api.calls, kills, await statusById(dir));
      expect(verdict.problems).toEqual([]);
      expect(await heldClaims(dir)).toEqual([]);
      if (!onDatabase) expect(await lockSlots(dir), await describeSlots(dir)).toEqual([]);
      console.log(
        `kill storm, --concurrency 4: ${verdict.tasks} tasks, ${verdict.calls} calls, ${kills.length} kills, ${verdict.explainedRepeats} repeated calls, each explained by a kill`,
      );
    });
  }, 180_000);
});

describeFolder('compaction under a kill storm', () => {
  it('6 workers drain 600 tasks, one SIGKILLed every few hundred ms, while worker compact runs again and again', async () => {
    await withTempDir(async (dir) => {
      const tasks = layeredGraph(600, 11);
      await addAll(dir, tasks);
      api.setBehaviour(answerOkWithin(5));
      let compactions = 0;
      const { kills, results } = await drainThroughKillStorm(dir, tasks, 6, async (storming) => {
        while (storming()) {
          const result = await runCli(['--dir', dir, 'compact']);
          expect(result.code, result.stderr).toBe(0);
          compactions += 1;
          await sleep(100);
        }
      });
      for (const result of results) expect([0, null]).toContain(result.code);
      expect(compactions).toBeGreaterThan(0);
      const verdict = await checkGuarantees(await queueOf(dir), tasks, api.calls, kills, await statusById(dir));
      expect(verdict.problems).toEqual([]);
      expect(await heldClaims(dir)).toEqual([]);
    });
  }, 120_000);
});

describe('signals at random moments', () => {
  it('SIGINT and SIGTERM while claiming, calling or recording leave no task running and no lock behind', async () => {
    await withTempDir(async (dir) => {
      const tasks = layeredGraph(FULL ? 200 : 80);
      await addAll(dir, tasks);
      api.setBehaviour(answerOkWithin(30));
      const rounds = FULL ? 40 : 15;
      for (let round = 0; round < rounds; round += 1) {
        const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, '--max-idle', '0', '--poll-interval', '50ms', '--worker-id', `s${round}`]);
        await sleep(150 + Math.random() * 300);
        const signal = Math.random() < 0.5 ? 'SIGINT' : 'SIGTERM';
        worker.process.kill(signal);
        if (Math.random() < 0.3) {
          await sleep(Math.random() * 20);
          worker.process.kill(signal);
        }
        const result = await worker.exited;
        // A signal while Node is still starting (no handlers yet) or already tearing down after the worker
        // finished ends the process the default way: only then may the exit code be missing.
        if (result.code === null) expect(!/starting:/.test(result.stderr) || /stopping:/.test(result.stderr), result.stderr).toBe(true);
        else expect([0, 130], result.stderr).toContain(result.code);
        const states = await statusById(dir);
        expect([...states.values()].filter((task) => task.state === 'running').map((task) => task.id)).toEqual([]);
        expect(await heldClaims(dir)).toEqual([]);
      }
      const rest = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--drain', '--poll-interval', '50ms']);
      expect(rest.code).toBe(0);
      const states = await statusById(dir);
      expect([...states.values()].every((task) => task.state === 'completed')).toBe(true);
    });
  }, 180_000);
});

describe('a flaky API', () => {
  it('random 500s, resets and hangs: retried with backoff, attempt counts match the calls, nothing lost', async () => {
    await withTempDir(async (dir) => {
      const tasks = layeredGraph(FULL ? 300 : 100);
      await addAll(dir, tasks);
      api.setBehaviour((call, res) => {
        const roll = Math.random();
        if (roll < 0.15) {
          res.writeHead(500);
          res.end('flaky');
        } else if (roll < 0.25) {
          (res.socket as Socket).destroy();
        } else if (roll < 0.3) {
          // hang: never answered; the worker's --timeout ends it
        } else answerOk(call, res);
      });
      const workers = Array.from({ length: 3 }, (_, i) =>
        startCli([
          '--dir',
          dir,
          'run',
          '--api-url',
          api.url,
          '--drain',
          '--quiet',
          '--timeout',
          '300ms',
          '--backoff',
          '10ms',
          '--max-attempts',
          '20',
          '--worker-id',
          `f${i}`,
        ]),
      );
      for (const worker of workers) expect((await worker.exited).code).toBe(0);
      const states = await statusById(dir);
      for (const task of tasks) {
        const calls = api.callsFor(task.id);
        // Calls made while three tasks in a row got no answer (an outage) repeat their attempt number: they do not count.
        const attempts = calls.map((call) => call.attempt);
        expect(states.get(task.id)).toMatchObject({ state: 'completed', attempts: attempts.at(-1) });
        expect(attempts[0]).toBe(1);
        attempts.slice(1).forEach((attempt, i) => {
          expect(attempt - attempts[i]!).toBeOneOf([0, 1]);
        });
      }
      const kinds = new Set([...states.values()].map((task) => task.last_error?.kind).filter(Boolean));
      expect(kinds.size).toBe(0);
    });
  }, 180_000);
});

describeFolder('damaged files', () => {
  async function smallQueue(dir: string): Promise<void> {
    await addAll(dir, [{ id: 'a' }, { id: 'b', deps: ['a'] }, { id: 'c' }]);
    expect((await runCli(['--dir', dir, 'run', '--api-url', api.url, '--drain', '2'])).code).toBe(0);
  }

  it('queue.json truncated at every byte offset: refused naming the file, never rewritten, unless the cut kept it whole', async () => {
    await withTempDir(async (dir) => {
      await smallQueue(dir);
      const file = join(dir, 'queue', 'queue.json');
      const whole = await readFile(file);
      const original = (await QueueStore.open(dir)).state.tasks().map((task) => task.def);
      let refused = 0;
      for (let offset = 0; offset < whole.length; offset += 1) {
        await writeFile(file, whole.subarray(0, offset));
        let store: QueueStore<TaskDefinition> | undefined;
        try {
          store = await QueueStore.open(dir);
        } catch (error) {
          expect(error).toBeInstanceOf(DamagedFileError);
          expect((error as DamagedFileError).file).toBe(file);
          refused += 1;
        }
        // Outside the try: a file read as something else than it holds fails here, not as a refusal.
        if (store !== undefined) {
          expect(store.state.tasks().map((task) => task.def)).toEqual(original);
          store.close();
        }
        expect(await readFile(file)).toEqual(whole.subarray(0, offset));
      }
      expect(refused).toBeGreaterThan(whole.length - 5);
      // Every command, as a user meets it, at a few offsets.
      for (const offset of [0, 1, Math.floor(whole.length / 2), whole.length - 3]) {
        await writeFile(file, whole.subarray(0, offset));
        for (const command of [
          ['status'],
          ['add', 'd', 'x'],
          ['show', 'a'],
          ['logs'],
          ['graph'],
          ['retry', '--failed'],
          ['cancel', 'c'],
          ['clean', '--completed'],
          ['run', '--api-url', api.url, '--drain'],
        ]) {
          const result = await runCli(['--dir', dir, ...command]);
          expect(result.code, `${command[0]} at ${offset}: ${result.stderr}`).toBe(4);
          expect(result.stderr).toContain(file);
        }
        expect(await readFile(file)).toEqual(whole.subarray(0, offset));
      }
    });
  }, 180_000);

  it('the execution log truncated at every byte offset: the complete records count, the torn tail waits, no completed outcome is lost', async () => {
    await withTempDir(async (dir) => {
      await smallQueue(dir);
      const file = join(dir, 'queue', 'execution-log.jsonl');
      const whole = await readFile(file);
      // Emptied whole, it is refused: the queue has an id, so its log was made, and every task would look pending.
      await writeFile(file, '');
      await expect(QueueStore.open(dir)).rejects.toThrow(/execution-log\.jsonl is damaged \(whole file\): it is empty/);
      for (let offset = 1; offset <= whole.length; offset += 1) {
        await writeFile(file, whole.subarray(0, offset));
        const store = await QueueStore.open(dir);
        const completeLines = whole.subarray(0, offset).toString('utf8').split('\n').slice(0, -1);
        const completedBefore = completeLines.filter((line) => line.includes('"outcome":"completed"')).length;
        const completed = store.state.tasks().filter((task) => task.state === 'completed').length;
        expect(completed, `cut at ${offset}`).toBe(completedBefore);
        store.close();
        expect(await readFile(file)).toEqual(whole.subarray(0, offset));
      }
    });
  }, 180_000);

  it('a torn last record followed by new appends: the new records are kept, the torn one is skipped and reported', async () => {
    await withTempDir(async (dir) => {
      await smallQueue(dir);
      const file = join(dir, 'queue', 'execution-log.jsonl');
      const text = await readFile(file, 'utf8');
      const lastLine = text.trimEnd().split('\n').at(-1)!;
      await appendFile(file, lastLine.slice(0, 40)); // a writer killed in the middle of its write
      const result = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--drain']);
      expect(result.code, result.stderr).toBe(0);
      const states = await statusById(dir);
      expect([...states.values()].every((task) => task.state === 'completed')).toBe(true);
      const status = await runCli(['--dir', dir, 'status']);
      expect(status.stdout).toMatch(/warning: 1 torn record\(s\) in the execution log were skipped/);
      const reader = new ExecutionLogReader(file);
      expect(reader.readNew().length).toBe(6);
      expect(reader.tornRecords).toBe(1);
      reader.close();
    });
  });

  it.each([
    ['garbage', 'this is not json\n'],
    ['valid JSON of the wrong shape', '{"type":"claim","task":"a"}\n'],
    ['an event of a task queue.json does not define', '{"type":"retry","task":"ghost","at":"2026-01-01T00:00:00.000Z"}\n'],
  ])('a log with %s makes every command refuse, naming the file, and leaves it as it was', async (_name, bad) => {
    await withTempDir(async (dir) => {
      await smallQueue(dir);
      const file = join(dir, 'queue', 'execution-log.jsonl');
      await appendFile(file, bad);
      const damaged = await readFile(file);
      for (const command of [['status'], ['add', 'd', 'x'], ['show', 'a'], ['logs'], ['retry', '--failed'], ['run', '--api-url', api.url, '--drain']]) {
        const result = await runCli(['--dir', dir, ...command]);
        expect(result.code, `${command[0]}: ${result.stderr}`).toBe(4);
        expect(result.stderr).toMatch(/is damaged/);
      }
      expect(await readFile(file)).toEqual(damaged);
    });
  });
});

/** Runs `body` on a tmpfs of `size` mounted for it, or skips (saying why) where that cannot be done. */
async function withTmpfs(size: string, context: { skip: (note: string) => void }, body: (dir: string) => Promise<void>): Promise<void> {
  if (process.getuid?.() !== 0) context.skip('needs root to mount a tmpfs');
  await withTempDir(async (outer) => {
    const dir = join(outer, 'tmpfs');
    await mkdir(dir);
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]);
    } catch {
      context.skip('cannot mount a tmpfs here');
    }
    try {
      await body(dir);
    } finally {
      execFileSync('umount', [dir]);
    }
  });
}

describeFolder('full disk and a read-only folder', () => {
  it('a queue on a small tmpfs that fills up: clear errors, no partial files, the queue intact and drained once space is back', async (context) => {
    await withTmpfs('512k', context, async (dir) => {
      await addAll(dir, [{ id: 'a' }, { id: 'b', deps: ['a'] }, { id: 'c' }]);
      const queueBefore = await readFile(join(dir, 'queue', 'queue.json'));
      const filler = join(dir, 'filler');
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k', 'count=1000'], { stdio: 'ignore' });
      } catch {
        // dd stops when the disk is full: that is the point
      }
      const add = await runCli(['--dir', dir, 'add', '--file', '-'], {
        input: Array.from({ length: 200 }, (_, i) => JSON.stringify({ id: `x${i}`, instruction: 'y'.repeat(2000) })).join('\n'),
      });
      expect(add.code).toBe(5);
      expect(add.stderr).toMatch(/disk is full/);
      expect(await readFile(join(dir, 'queue', 'queue.json'))).toEqual(queueBefore);
      expect((await readdir(join(dir, 'queue'))).filter((name) => /^queue\.json\.\d+$/.test(name))).toEqual([]);
      // A worker checks at start that it can write: on a full disk it stops at once, having claimed nothing.
      const refused = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--drain']);
      expect(refused.code).toBe(5);
      expect(refused.stderr).toMatch(/disk is full/);
      expect(api.calls).toHaveLength(0);
      await rm(filler);
      // A disk that fills while a call is in flight: the outcome is tried again until there is room.
      const hold = holdCallsFor(api, 'a');
      const worker = startCli(['--dir', dir, 'run', '--api-url', api.url, '--drain', '--poll-interval', '50ms']);
      await hold.arrived();
      try {
        execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=4k', 'count=1000'], { stdio: 'ignore' });
      } catch {
        // full
      }
      hold.held[0]!.res.writeHead(200, { 'content-type': 'application/json' });
      hold.held[0]!.res.end(JSON.stringify({ status: 'completed', big: 'z'.repeat(8000) }));
      await worker.waitForLog(/could not record the outcome of a.*(no space left on device|ENOSPC|disk is full)/i);
      await rm(filler);
      const result = await worker.exited;
      expect(result.code, result.stderr).toBe(0);
      const states = await statusById(dir);
      expect([...states.values()].map((task) => task.state)).toEqual(['completed', 'completed', 'completed']);
      expect(api.callsFor('a')).toHaveLength(1);
    });
  });

  it('a read-only queue folder: every change is refused with a clear error and nothing is touched', async (context) => {
    await withTmpfs('4m', context, async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      execFileSync('mount', ['-o', 'remount,ro', dir]);
      const before = await readFile(join(dir, 'queue', 'queue.json'));
      const add = await runCli(['--dir', dir, 'add', 'b', 'x']);
      expect(add.code).toBe(5);
      expect(add.stderr).toMatch(/read-only/);
      // At once, before claiming anything: not after the idle limit.
      const run = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--max-idle', '100']);
      expect(run.code).toBe(5);
      expect(run.stderr).toMatch(/could not write to .*queue: EROFS.*the file system is read-only/);
      expect((await runCli(['--dir', dir, 'status'])).code).toBe(0);
      expect(await readFile(join(dir, 'queue', 'queue.json'))).toEqual(before);
      expect(api.calls).toHaveLength(0);
    });
  });
});

describeFolder('hostile input', () => {
  it('ids that try to leave the folder, long ids and instructions, unicode, control characters, odd dependency lists: refused or handled, no file outside the data folder', async () => {
    await withTempDir(async (outer) => {
      const dir = join(outer, 'data');
      const before = await readdir(outer);
      const hostileIds = [
        '../escape',
        '..',
        '.',
        '/abs',
        'a/b',
        'a\\b',
        'x'.repeat(101),
        'café',
        'tab\there',
        'nul\u0000byte',
        'new\nline',
        '',
        ' ',
        '-flag',
        'a.lock/../../x',
      ];
      for (const id of hostileIds) {
        const result = await runCli(['--dir', dir, 'add', '--file', '-'], { input: JSON.stringify({ id, instruction: 'x' }) });
        expect(result.code, JSON.stringify(id)).toBe(3);
        expect(result.stderr).toMatch(/invalid task id/);
      }
      expect((await runCli(['--dir', dir, 'add', 'ok-1', 'x'])).code).toBe(0);
      const accepted = [
        { id: 'x'.repeat(100), instruction: 'the longest id' },
        { id: 'unicode', instruction: 'Résumé 日本語 🚀 \u0007 bell and\nnewline' },
        { id: 'long', instruction: 'y'.repeat(1_000_000) },
        { id: 'deps', instruction: 'x', deps: ['ok-1', 'ok-1', '', ' ok-1 '] },
      ];
      for (const task of accepted) {
        const result = await runCli(['--dir', dir, 'add', '--file', '-'], { input: JSON.stringify(task) });
        expect(result.code, `${task.id}: ${result.stderr}`).toBe(0);
      }
      const tooLong = await runCli(['--dir', dir, 'add', '--file', '-'], { input: JSON.stringify({ id: 'too-long', instruction: 'y'.repeat(1_000_001) }) });
      expect(tooLong.stderr).toMatch(/has 1000001 characters/);
      expect((await runCli(['--dir', dir, 'add', 'commas', 'x', ' , ok-1,,ok-1, '])).code).toBe(0);
      const drained = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--drain']);
      expect(drained.code, drained.stderr).toBe(0);
      const states = await statusById(dir);
      expect(states.get('deps')!.deps).toEqual(['ok-1']);
      expect(states.get('commas')!.deps).toEqual(['ok-1']);
      expect(api.callsFor('unicode')[0]!.body.instruction).toBe(accepted[1]!.instruction);
      expect([...states.values()].every((task) => task.state === 'completed')).toBe(true);
      expect(await readdir(outer)).toEqual([...before, 'data']);
      expect((await readdir(dir)).sort()).toEqual(['locks', 'queue']);
      const shown = await runCli(['--dir', dir, 'show', 'unicode']);
      expect(shown.stdout).toContain('  Résumé 日本語 🚀 \\u0007 bell and\n  newline\n');
      expect(shown.stdout).not.toMatch(/\u0007/);
    });
  }, 120_000);
});

describeFolder('the queue-wide lock', () => {
  it('one left by a killed holder on this host is taken at once; one that names no holder once it is not refreshed for 10 s', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      const lock = join(dir, 'queue', 'queue.lock');
      const gone = spawn(process.execPath, ['-e', '0']);
      await new Promise((resolve) => gone.on('exit', resolve));
      await mkdir(lock);
      const { ino, birthtimeMs } = await stat(lock);
      await writeFile(`${lock}.owner`, JSON.stringify({ pid: gone.pid, host: hostname(), ino, birthtimeMs }));
      const started = Date.now();
      expect((await runCli(['--dir', dir, 'add', 'b', 'x'])).code).toBe(0);
      expect(Date.now() - started).toBeLessThan(5000);
      // No holder named: judged by its age alone.
      await mkdir(lock);
      const past = new Date(Date.now() - 11_000);
      await utimes(lock, past, past);
      expect((await runCli(['--dir', dir, 'add', 'c', 'x'])).code).toBe(0);
      expect([...(await statusById(dir)).keys()]).toEqual(['a', 'b', 'c']);
    });
  });

  /** A command run under strace, one of whose stats of queue.json (the `when`-th) stalls for `seconds`: the event loop, and with it the lock's refresh, stalls too. */
  function stalled(dir: string, when: number, seconds: number, ...args: string[]) {
    return startCli(['--dir', dir, ...args], {
      prefix: [
        'strace',
        '-f',
        '-o',
        '/dev/null',
        '-P',
        join(dir, 'queue', 'queue.json'),
        '-e',
        'trace=statx',
        '-e',
        `inject=statx:delay_enter=${seconds * 1_000_000}:when=${when}`,
      ],
    });
  }
  const hasStrace = (() => {
    try {
      execFileSync('strace', ['-V'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  it.for([
    { what: 'a clean', when: 4, args: ['clean', '--completed'] },
    { what: 'an add', when: 1, args: ['add', 'slow', 'stalled inside the lock'] },
  ])(
    '$what stalled inside the lock longer than its staleness keeps it: an add waiting meanwhile is not lost',
    { timeout: 60_000 },
    async ({ when, args }, context) => {
      if (!hasStrace) return context.skip('strace is not installed: .ci/run installs it');
      await withTempDir(async (dir) => {
        await addAll(dir, [{ id: 'a' }, { id: 'b' }]);
        expect((await runCli(['--dir', dir, 'run', '1', '--api-url', api.url])).code).toBe(0);
        // Longer than the 10 s after which a lock that is not refreshed counts as stale.
        const holder = stalled(dir, when, 11, ...args);
        await sleep(1500);
        const waiting = await runCli(['--dir', dir, 'add', 'new1', 'added while the lock is held']);
        expect(waiting.code, waiting.stderr).toBe(0);
        const held = await holder.exited;
        expect(held.code, held.stderr).toBe(0);
        const ids = [...(await statusById(dir)).keys()];
        expect(ids).toContain('new1');
        if (args[0] === 'add') expect(ids).toContain('slow');
      });
    },
  );
});
