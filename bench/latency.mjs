// How soon idle workers start what is added: a new task's claim after `worker add` returns, and a chain of
// dependent tasks, each claimed once its dependency completes. For a queue in a folder or in a database.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startTracked } from './processes.mjs';

const BIN = resolve(import.meta.dirname, '../bin/worker.cjs');

/**
 * `place`: the arguments that name the queue (`--dir <folder>`, or `--database-url <url> --queue <name>`),
 * which holds no task yet. 4 idle workers wait on it; `adds` tasks are added one by one, then a chain of
 * `chain` tasks in one file.
 */
export async function latency(api, place, adds, chain) {
  const cli = (...args) => execFileSync(process.execPath, [BIN, ...place, ...args], { stdio: ['ignore', 'ignore', 'inherit'] });
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  cli('add', 'warm-up', 'x');
  api.reset();
  const workers = Array.from({ length: 4 }, (_, i) =>
    startTracked([BIN, ...place, 'run', '--api-url', api.url, '--quiet', '--worker-id', `late-${i}`, '--max-idle', '0']),
  );
  while (!api.calls.has('warm-up')) await sleep(20);
  const delays = [];
  for (let i = 0; i < adds; i += 1) {
    await sleep(300);
    cli('add', `late-${i}`, 'x');
    const added = performance.now();
    while (!api.times.has(`late-${i}`)) await sleep(1);
    delays.push(api.times.get(`late-${i}`) - added);
  }
  const dir = mkdtempSync(join(tmpdir(), 'worker-bench-'));
  const file = join(dir, 'chain.jsonl');
  writeFileSync(
    file,
    Array.from({ length: chain }, (_, i) => JSON.stringify({ id: `c${i}`, instruction: 'x', deps: i === 0 ? [] : [`c${i - 1}`] })).join('\n'),
  );
  cli('add', '--file', file);
  const chainStarted = performance.now();
  while (!api.times.has(`c${chain - 1}`)) await sleep(1);
  const chainSeconds = (performance.now() - chainStarted) / 1000;
  for (const worker of workers) worker.child.kill('SIGTERM');
  await Promise.all(workers.map((worker) => worker.exited));
  rmSync(dir, { recursive: true, force: true });
  return { meanClaimMs: delays.reduce((a, b) => a + b, 0) / delays.length, chainSeconds };
}
