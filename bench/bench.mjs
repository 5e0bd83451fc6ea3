#!/usr/bin/env node
// `npm run bench [-- --quick]`: every performance scenario of the project, one table.
// Runs the built CLI (dist/) as separate processes against a local API on 127.0.0.1 that answers at once,
// and checks from the API's own record that every task was called exactly once.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { startBenchApi } from './api.mjs';
import { seedQueue } from './seed.mjs';
import { historyScenarios } from './history.mjs';
import { concurrencyScenarios } from './concurrency.mjs';
import { postgresScenarios } from './postgres.mjs';
import { latency } from './latency.mjs';
import { startTracked } from './processes.mjs';

const BIN = resolve(import.meta.dirname, '../bin/worker.cjs');
const quick = process.argv.includes('--quick');
const RUNS = quick ? 1 : 3;
const WORKERS = 4;
const rows = [];

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const tempDir = () => mkdtempSync(join(tmpdir(), 'worker-bench-'));

/** Wall time of one process, start-up included. */
function timed(args, env = process.env) {
  const started = performance.now();
  execFileSync(process.execPath, args, { stdio: ['ignore', 'ignore', 'inherit'], env });
  return performance.now() - started;
}

const cli = (dir, ...args) => timed([BIN, '--dir', dir, ...args]);

function runWorkers(dir, api, count, extra = []) {
  return Array.from({ length: count }, (_, i) =>
    startTracked([BIN, '--dir', dir, 'run', '--api-url', api.url, '--quiet', '--worker-id', `bench-${i}`, ...extra]),
  );
}

function assertExactlyOnce(api, expected, label) {
  const duplicates = [...api.calls.values()].filter((count) => count > 1).length;
  if (api.calls.size !== expected || duplicates > 0) {
    throw new Error(`${label}: ${api.calls.size} tasks called (expected ${expected}), ${duplicates} called more than once`);
  }
}

function row(scenario, tasks, workers, seconds, extra = {}) {
  rows.push({ scenario, tasks, workers, seconds, ...extra });
}

/**
 * The worker processes drain a queue of `size` independent tasks (`extra`: arguments of `worker run`),
 * `expected` of them called once each: its seconds, their peak RSS, and when the API saw each task.
 */
async function drainQueue(api, size, expected, extra, label) {
  const dir = tempDir();
  seedQueue(BIN, dir, size);
  api.reset();
  const started = performance.now();
  const workers = runWorkers(dir, api, WORKERS, extra);
  const peaks = await Promise.all(workers.map((worker) => worker.exited));
  const seconds = (performance.now() - started) / 1000;
  assertExactlyOnce(api, expected, label);
  rmSync(dir, { recursive: true, force: true });
  return { seconds, peakKb: Math.max(...peaks), times: [...api.times.values()].sort((a, b) => a - b) };
}

/** The same calls with no queue: undici straight to the API, the tasks shared out between the processes. */
async function ceilingOnce(api, tasks) {
  api.reset();
  const started = performance.now();
  const share = tasks / WORKERS;
  await Promise.all(
    Array.from(
      { length: WORKERS },
      (_, i) => startTracked([resolve(import.meta.dirname, 'ceiling-client.mjs'), api.url, String(i * share), String(share)]).exited,
    ),
  );
  const seconds = (performance.now() - started) / 1000;
  assertExactlyOnce(api, tasks, 'ceiling');
  return seconds;
}

/** Steady-state cost per task, from the API's record: first to last call of `executed` tasks in a queue of `size`. */
async function perTaskCost(api, size, executed) {
  const { times, peakKb } = await drainQueue(api, size, executed, ['--drain', String(executed / WORKERS)], `per-task cost at ${size}`);
  return { perTaskMs: (times.at(-1) - times[0]) / (times.length - 1), peakMb: peakKb / 1024 };
}

// Node reads NODE_EXTRA_CA_CERTS at start-up, before any of our code, and OpenSSL 3 parses it slowly
// (nodejs/node#40524): tens of ms per process. Where it is set, start-up is timed both ways.
const { NODE_EXTRA_CA_CERTS: extraCaCerts, ...envWithoutExtraCaCerts } = process.env;

function cliTimes(bigQueue) {
  const dir = tempDir();
  const bulkMs = seedQueue(BIN, dir, 10_000);
  const samples = 9;
  const nodeAlone = (env) => median(Array.from({ length: samples }, () => timed(['-e', '0'], env)));
  const addOne = (env, prefix) =>
    median(Array.from({ length: samples }, (_, i) => timed([BIN, '--dir', dir, 'add', `${prefix}-${i}`, 'One more task', 't5'], env)));
  const startup = { nodeMs: nodeAlone(process.env), addOneMs: addOne(process.env, 'one') };
  const withoutCerts = extraCaCerts === undefined ? undefined : { nodeMs: nodeAlone(envWithoutExtraCaCerts), addOneMs: addOne(envWithoutExtraCaCerts, 'bare') };
  const big = tempDir();
  seedQueue(BIN, big, bigQueue);
  const status = median(Array.from({ length: RUNS }, () => cli(big, 'status', '--json')));
  rmSync(dir, { recursive: true, force: true });
  rmSync(big, { recursive: true, force: true });
  return { bulkMs, startup, withoutCerts, statusMs: status };
}

/** BullMQ on a loopback Redis, ready to drain `tasks` at each runOnce(); or why it cannot run here. */
async function startBullmq(api, tasks) {
  let redisPath;
  try {
    redisPath = execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim();
  } catch {
    return 'redis-server is not installed (apt-get install redis-server): BullMQ comparison skipped';
  }
  try {
    await import('bullmq');
  } catch {
    // BullMQ is the benchmark's own dev dependency (bench/package.json), installed on first use.
    try {
      execFileSync('npm', ['install', '--prefix', import.meta.dirname, '--no-package-lock', '--no-audit', '--no-fund', '--silent'], { stdio: 'inherit' });
      await import('bullmq');
    } catch (error) {
      return `bullmq could not be installed into bench/ (${error.message.split('\n')[0]}): BullMQ comparison skipped`;
    }
  }
  const port = 6390;
  const redis = spawn(redisPath, ['--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  return {
    async runOnce() {
      api.reset();
      execFileSync(process.execPath, [resolve(import.meta.dirname, 'bullmq-worker.mjs'), 'seed', String(port), String(tasks)]);
      const started = performance.now();
      await Promise.all(
        Array.from(
          { length: WORKERS },
          () => startTracked([resolve(import.meta.dirname, 'bullmq-worker.mjs'), 'work', String(port), String(tasks), api.url]).exited,
        ),
      );
      const seconds = (performance.now() - started) / 1000;
      assertExactlyOnce(api, tasks, 'bullmq');
      return seconds;
    },
    close: () => redis.kill(),
  };
}

/** The type of the file system holding `dir` (the same file operations cost very different amounts on each), as df names it. */
function fileSystemOf(dir) {
  try {
    return execFileSync('df', ['--output=fstype', dir], { encoding: 'utf8' }).trim().split('\n').at(-1);
  } catch {
    return 'file system unknown';
  }
}

const fmt = (value, digits = 0) => (value === undefined ? '' : value.toFixed(digits));

async function main() {
  const api = await startBenchApi();
  const drainTasks = quick ? 2000 : 10_000;
  const bigQueue = quick ? 20_000 : 100_000;
  const notes = [];
  try {
    // Round by round, the drain, the ceiling and BullMQ in turn: this machine's speed drifts within minutes,
    // and each round puts the three on the same ground. Ratios are medians of each round's ratio.
    const bull = await startBullmq(api, drainTasks);
    const rounds = [];
    try {
      for (let run = 0; run < RUNS; run += 1) {
        const drain = await drainQueue(api, drainTasks, drainTasks, ['--drain'], 'drain');
        const ceilingSeconds = await ceilingOnce(api, drainTasks);
        rounds.push({ drain, ceilingSeconds, bullSeconds: typeof bull === 'string' ? undefined : await bull.runOnce() });
      }
    } finally {
      if (typeof bull !== 'string') bull.close();
    }
    const drainSeconds = median(rounds.map((round) => round.drain.seconds));
    const ceilingSeconds = median(rounds.map((round) => round.ceilingSeconds));
    const peakMb = Math.max(...rounds.map((round) => round.drain.peakKb)) / 1024;
    row('drain (independent tasks)', drainTasks, WORKERS, drainSeconds, {
      peakMb,
      ratio: median(rounds.map((round) => round.ceilingSeconds / round.drain.seconds)),
    });
    row('ceiling: undici, no queue', drainTasks, WORKERS, ceilingSeconds, { ratio: 1 });
    if (typeof bull === 'string') notes.push(bull);
    else {
      row('BullMQ on loopback Redis', drainTasks, WORKERS, median(rounds.map((round) => round.bullSeconds)), {
        ratio: median(rounds.map((round) => round.ceilingSeconds / round.bullSeconds)),
      });
      const ratios = rounds.map((round) => round.bullSeconds / round.drain.seconds);
      notes.push(
        `our drain rate is ${median(ratios).toFixed(2)}x BullMQ's (median of the rounds' ratios: ${ratios.map((ratio) => ratio.toFixed(2)).join(', ')})`,
      );
    }
    const executed = 2000;
    const small = await perTaskCost(api, 2000, executed);
    const large = await perTaskCost(api, bigQueue, executed);
    row(`per-task cost, queue of 2,000`, executed, WORKERS, undefined, { perTaskMs: small.perTaskMs, peakMb: small.peakMb });
    row(`per-task cost, queue of ${bigQueue.toLocaleString('en')}`, executed, WORKERS, undefined, { perTaskMs: large.perTaskMs, peakMb: large.peakMb });
    notes.push(
      `per-task cost at ${bigQueue.toLocaleString('en')} tasks is ${(large.perTaskMs / small.perTaskMs).toFixed(2)}x the cost at 2,000 (target: 1.5x or less)`,
    );
    const lateDir = tempDir();
    const late = await latency(api, ['--dir', lateDir], quick ? 5 : 20, quick ? 20 : 50);
    rmSync(lateDir, { recursive: true, force: true });
    row('claim of a new task by idle workers', 1, WORKERS, late.meanClaimMs / 1000, { latency: true });
    notes.push(`idle workers claimed a newly added task ${fmt(late.meanClaimMs, 2)} ms after \`worker add\` returned, on average (target: 100 ms)`);
    row(`chain of ${quick ? 20 : 50} dependent tasks`, quick ? 20 : 50, WORKERS, late.chainSeconds);
    const times = cliTimes(bigQueue);
    row('node -e 0 (Node start-up alone)', 1, 0, times.startup.nodeMs / 1000);
    row('worker add (one task, 10,000 in queue)', 1, 0, times.startup.addOneMs / 1000);
    if (times.withoutCerts) {
      row('node -e 0, NODE_EXTRA_CA_CERTS unset', 1, 0, times.withoutCerts.nodeMs / 1000);
      row('worker add, NODE_EXTRA_CA_CERTS unset', 1, 0, times.withoutCerts.addOneMs / 1000);
      notes.push(
        `NODE_EXTRA_CA_CERTS is set here: Node parses it at every start-up (nodejs/node#40524), ${fmt(times.startup.nodeMs - times.withoutCerts.nodeMs)} ms of each process start above`,
      );
    }
    row('worker add --file (10,000 tasks)', 10_000, 0, times.bulkMs / 1000);
    row(`worker status --json (${bigQueue.toLocaleString('en')} tasks)`, bigQueue, 0, times.statusMs / 1000);
    await historyScenarios(row, notes, quick);
    await concurrencyScenarios(row, notes, quick);
    await postgresScenarios(row, notes, quick);
  } finally {
    await api.close();
  }
  const header = ['scenario', 'tasks', 'workers', 'seconds', 'tasks/s', 'per-task ms', 'peak RSS MB', 'vs ceiling', 'vs ideal'];
  const table = rows.map((r) => [
    r.scenario,
    String(r.tasks),
    String(r.workers),
    fmt(r.seconds, 3),
    r.seconds && r.workers && !r.latency ? fmt(r.tasks / r.seconds) : '',
    fmt(r.perTaskMs ?? (r.seconds && r.workers ? (r.seconds * 1000) / r.tasks : undefined), 3),
    fmt(r.peakMb),
    r.ratio === undefined ? '' : `${(r.ratio * 100).toFixed(0)}%`,
    r.vsIdeal === undefined ? '' : `${r.vsIdeal.toFixed(2)}x`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((cells) => cells[i].length)));
  const line = (cells) => `| ${cells.map((cell, i) => cell.padEnd(widths[i])).join(' | ')} |`;
  console.log(
    `\nworker benchmark${quick ? ' (--quick)' : ''}: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, queues in ${tmpdir()} (${fileSystemOf(tmpdir())}), median of ${RUNS} run(s)\n`,
  );
  console.log(line(header));
  console.log(line(widths.map((w) => '-'.repeat(w))));
  for (const cells of table) console.log(line(cells));
  console.log('');
  for (const note of notes) console.log(`- ${note}`);
  console.log('- every drain above was checked against the API record: each task called exactly once');
}

await main();
