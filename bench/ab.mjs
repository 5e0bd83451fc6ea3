#!/usr/bin/env node
// A/B of the drain: `node bench/ab.mjs TASKS WORKERS ROUNDS BIN...` runs the same drain with each
// bin/worker.cjs given (e.g. a copy of an older build), interleaved round by round, and prints each one's
// rates and median CPU per task of its worker processes. This machine's speed drifts too much for two
// separate bench runs to compare a change; interleaving keeps both on the same ground.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startBenchApi } from './api.mjs';
import { seedQueue } from './seed.mjs';

const [tasks, workers, rounds, ...bins] = process.argv.slice(2);
if (bins.length === 0) {
  console.error('usage: node bench/ab.mjs TASKS WORKERS ROUNDS BIN [BIN...]   (BIN: a bin/worker.cjs)');
  process.exit(2);
}

/** CPU seconds of this process's children that have exited (Linux: cutime + cstime); undefined elsewhere. */
function childrenCpuSeconds() {
  try {
    const fields = readFileSync('/proc/self/stat', 'utf8').split(') ')[1].split(' ');
    return (Number(fields[13]) + Number(fields[14])) / 100;
  } catch {
    return undefined;
  }
}

function runWorker(bin, dir, url, id) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, '--dir', dir, 'run', '--api-url', url, '--quiet', '--drain', '--worker-id', id], { stdio: 'ignore' });
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${bin} exited ${code}`))));
  });
}

const api = await startBenchApi();
const results = new Map(bins.map((bin) => [bin, []]));
try {
  for (let round = 0; round < Number(rounds); round += 1) {
    for (const bin of bins) {
      const dir = mkdtempSync(join(tmpdir(), 'worker-ab-'));
      seedQueue(bin, dir, Number(tasks));
      api.reset();
      const cpuBefore = childrenCpuSeconds();
      const started = performance.now();
      await Promise.all(Array.from({ length: Number(workers) }, (_, i) => runWorker(bin, dir, api.url, `ab-${i}`)));
      const seconds = (performance.now() - started) / 1000;
      if (api.calls.size !== Number(tasks)) throw new Error(`${bin}: ${api.calls.size} of ${tasks} tasks called`);
      const cpuAfter = childrenCpuSeconds();
      results.get(bin).push({ rate: Number(tasks) / seconds, cpuMs: cpuBefore === undefined ? undefined : ((cpuAfter - cpuBefore) * 1000) / Number(tasks) });
      rmSync(dir, { recursive: true, force: true });
    }
  }
} finally {
  await api.close();
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
for (const [bin, runs] of results) {
  const cpu = runs[0].cpuMs === undefined ? '' : `, CPU per task ${median(runs.map((run) => run.cpuMs)).toFixed(3)} ms`;
  console.log(`${bin}: ${runs.map((run) => run.rate.toFixed(0)).join(' ')} tasks/s, median ${median(runs.map((run) => run.rate)).toFixed(0)}${cpu}`);
}
