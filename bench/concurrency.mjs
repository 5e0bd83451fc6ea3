// Many calls in flight from one process (`worker run --concurrency N`): the rows of `npm run bench` for an
// API that answers after a delay, as a slow LLM API does, and for the no-latency drain in one process.
// Also runs alone: `node bench/concurrency.mjs [--quick]`.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startBenchApi } from './api.mjs';
import { startTracked } from './processes.mjs';
import { seedQueue } from './seed.mjs';

const BIN = resolve(import.meta.dirname, '../bin/worker.cjs');
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

function assertExactlyOnce(api, expected, label) {
  const duplicates = [...api.calls.values()].filter((count) => count > 1).length;
  if (api.calls.size !== expected || duplicates > 0)
    throw new Error(`${label}: ${api.calls.size} tasks called (expected ${expected}), ${duplicates} more than once`);
}

/** `processes` worker processes with `concurrency` slots each drain `tasks` independent tasks: seconds and peak RSS of them all. */
async function drain(api, tasks, processes, concurrency, label) {
  const dir = mkdtempSync(join(tmpdir(), 'worker-bench-'));
  seedQueue(BIN, dir, tasks);
  api.reset();
  const started = performance.now();
  const workers = Array.from({ length: processes }, (_, i) =>
    startTracked([BIN, '--dir', dir, 'run', '--api-url', api.url, '--quiet', '--drain', '--worker-id', `c-${i}`, '--concurrency', String(concurrency)]),
  );
  const peaks = await Promise.all(workers.map((worker) => worker.exited));
  const seconds = (performance.now() - started) / 1000;
  assertExactlyOnce(api, tasks, label);
  rmSync(dir, { recursive: true, force: true });
  return { seconds, peakMb: peaks.reduce((a, b) => a + b, 0) / 1024 };
}

/** BullMQ with the same concurrency in one process, when redis-server is installed and bullmq is (see bench.mjs). */
async function bullmqDrain(api, tasks, concurrency) {
  let redisPath;
  try {
    redisPath = execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim();
    await import('bullmq');
  } catch {
    return undefined;
  }
  const port = 6391;
  const redis = spawn(redisPath, ['--port', String(port), '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  try {
    const worker = resolve(import.meta.dirname, 'bullmq-worker.mjs');
    api.reset();
    execFileSync(process.execPath, [worker, 'seed', String(port), String(tasks)]);
    const started = performance.now();
    const peakKb = await startTracked([worker, 'work', String(port), String(tasks), api.url, String(concurrency)]).exited;
    const seconds = (performance.now() - started) / 1000;
    assertExactlyOnce(api, tasks, 'bullmq');
    return { seconds, peakMb: peakKb / 1024 };
  } finally {
    redis.kill();
  }
}

/** Adds the rows of many calls in flight to `row`, and what to say of them to `notes`. */
export async function concurrencyScenarios(row, notes, quick) {
  const slow = [
    { tasks: quick ? 100 : 500, latencyMs: 1000, concurrency: 50 },
    { tasks: quick ? 1000 : 5000, latencyMs: 100, concurrency: 200 },
  ];
  for (const { tasks, latencyMs, concurrency } of slow) {
    const api = await startBenchApi({ latencyMs });
    try {
      const ideal = (tasks / concurrency) * (latencyMs / 1000);
      const ours = await drain(api, tasks, 1, concurrency, `--concurrency ${concurrency}`);
      const label = `${tasks} tasks x ${latencyMs} ms, ${concurrency} in flight, one process`;
      row(label, tasks, 1, ours.seconds, { peakMb: ours.peakMb, vsIdeal: ours.seconds / ideal });
      notes.push(`${label}: ${(ours.seconds / ideal).toFixed(2)}x the ideal ${ideal.toFixed(1)} s, peak RSS ${ours.peakMb.toFixed(0)} MB`);
      const bull = await bullmqDrain(api, tasks, concurrency);
      if (bull) row(`BullMQ, the same, concurrency ${concurrency}`, tasks, 1, bull.seconds, { peakMb: bull.peakMb, vsIdeal: bull.seconds / ideal });
    } finally {
      await api.close();
    }
  }
  // The no-latency drain: one process with 4 slots beside 4 single-call processes, round by round.
  const api = await startBenchApi();
  try {
    const tasks = quick ? 2000 : 10_000;
    const rounds = [];
    for (let run = 0; run < (quick ? 1 : 3); run += 1) {
      rounds.push({ one: await drain(api, tasks, 1, 4, 'one process, 4 slots'), four: await drain(api, tasks, 4, 1, 'four processes') });
    }
    const one = median(rounds.map((round) => round.one.seconds));
    const four = median(rounds.map((round) => round.four.seconds));
    row('drain, one process, --concurrency 4', tasks, 1, one, { peakMb: Math.max(...rounds.map((round) => round.one.peakMb)) });
    row('drain, four processes, one call each', tasks, 4, four, { peakMb: Math.max(...rounds.map((round) => round.four.peakMb)) });
    notes.push(`the no-latency drain in one process with --concurrency 4 ran at ${(four / one).toFixed(2)}x the rate of four single-call processes`);
  } finally {
    await api.close();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = [];
  const notes = [];
  await concurrencyScenarios(
    (scenario, tasks, workers, seconds, extra = {}) => rows.push({ scenario, tasks, workers, seconds, ...extra }),
    notes,
    process.argv.includes('--quick'),
  );
  for (const r of rows)
    console.log(
      `${r.scenario}: ${r.seconds.toFixed(2)} s${r.vsIdeal ? `, ${r.vsIdeal.toFixed(2)}x ideal` : ''}${r.peakMb ? `, peak RSS ${r.peakMb.toFixed(0)} MB` : ''}`,
    );
  for (const note of notes) console.log(note);
}
