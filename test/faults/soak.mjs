#!/usr/bin/env node
// `npm run soak -- --minutes N [--concurrency C]`: keeps adding tasks and draining them for N minutes while workers are
// SIGKILLed and restarted and the API fails, resets and hangs at random; then checks the guarantees and
// prints the counts. Exits 1 if any guarantee was broken.
import { spawn, execFileSync } from 'node:child_process';
import { createServer } from 'node:http';
import { mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { checkGuarantees, readFolderQueue } from './checker.mjs';

const BIN = resolve(import.meta.dirname, '../../bin/worker.cjs');
const minutesArg = process.argv.indexOf('--minutes');
const minutes = minutesArg === -1 ? 1 : Number(process.argv[minutesArg + 1]);
if (!(minutes > 0)) {
  console.error('usage: npm run soak -- --minutes N [--concurrency C]   (N > 0)');
  process.exit(2);
}
const concurrencyArg = process.argv.indexOf('--concurrency');
// Calls in flight per worker process (`worker run --concurrency`).
const CONCURRENCY = concurrencyArg === -1 ? 1 : Number(process.argv[concurrencyArg + 1]);
const WORKERS = 6;
const dir = mkdtempSync(join(tmpdir(), 'worker-soak-'));
const logDir = join(dir, 'worker-logs');
mkdirSync(logDir);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const calls = [];
const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', () => {
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const call = {
      task_id: body.task_id,
      attempt: body.attempt,
      worker: req.headers['x-worker-id'],
      idempotencyKey: req.headers['idempotency-key'],
      receivedAt: Date.now(),
    };
    calls.push(call);
    const roll = Math.random();
    if (roll < 0.08) {
      call.failedOnPurpose = true;
      res.writeHead(500).end('flaky');
    } else if (roll < 0.11) {
      call.failedOnPurpose = true;
      res.socket.destroy();
    } else if (roll < 0.12) {
      call.failedOnPurpose = true; // hang: the worker's --timeout ends it
    } else {
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'completed', task: body.task_id }));
        call.answeredAt = Date.now();
      }, Math.random() * 20);
    }
  });
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const url = `http://127.0.0.1:${server.address().port}/task`;

const tasks = [];
const kills = [];
let incarnation = 0;
const workers = new Map();
function startWorker(slot) {
  incarnation += 1;
  const id = `soak${slot}-${incarnation}`;
  const child = spawn(
    process.execPath,
    [
      BIN,
      '--dir',
      dir,
      'run',
      '--api-url',
      url,
      '--max-idle',
      '0',
      '--poll-interval',
      '200ms',
      '--timeout',
      '1s',
      '--backoff',
      '50ms',
      '--max-attempts',
      '100',
      '--lock-stale',
      '5s',
      '--worker-id',
      id,
      '--concurrency',
      String(CONCURRENCY),
    ],
    // Each worker's log, kept with the queue when a guarantee is broken.
    { stdio: ['ignore', 'ignore', openSync(join(logDir, `${id}.log`), 'w')] },
  );
  workers.set(slot, { id, child, exited: new Promise((r) => child.on('exit', r)) });
}
for (let slot = 0; slot < WORKERS; slot += 1) startWorker(slot);

const end = Date.now() + minutes * 60_000;
let batch = 0;
const adding = (async () => {
  while (Date.now() < end) {
    const size = 50 + Math.floor(Math.random() * 150);
    const lines = [];
    for (let i = 0; i < size; i += 1) {
      const id = `b${batch}-${i}`;
      const deps = tasks.length > 0 && Math.random() < 0.5 ? [tasks[Math.floor(Math.random() * tasks.length)].id] : [];
      if (i > 0 && Math.random() < 0.3) deps.push(`b${batch}-${Math.floor(Math.random() * i)}`);
      lines.push({ id, deps: [...new Set(deps)] });
    }
    execFileSync(process.execPath, [BIN, '--dir', dir, 'add', '--file', '-'], {
      input: lines.map((t) => JSON.stringify({ ...t, instruction: `soak ${t.id}` })).join('\n'),
    });
    tasks.push(...lines);
    batch += 1;
    await sleep(500);
  }
})();
const killing = (async () => {
  while (Date.now() < end) {
    await sleep(300 + Math.random() * 700);
    const slot = Math.floor(Math.random() * WORKERS);
    const worker = workers.get(slot);
    kills.push({ worker: worker.id, at: Date.now() });
    worker.child.kill('SIGKILL');
    await worker.exited;
    startWorker(slot);
  }
})();
await Promise.all([adding, killing]);

// Let the survivors finish what is left, then stop them the polite way.
const drainDeadline = Date.now() + 120_000;
while (Date.now() < drainDeadline) {
  const states = JSON.parse(execFileSync(process.execPath, [BIN, '--dir', dir, 'status', '--json'], { maxBuffer: 1 << 30 }).toString());
  if (states.every((task) => task.state === 'completed' || task.state === 'failed')) break;
  await sleep(1000);
}
for (const worker of workers.values()) worker.child.kill('SIGTERM');
await Promise.all([...workers.values()].map((worker) => worker.exited));
const finalStates = new Map(
  JSON.parse(execFileSync(process.execPath, [BIN, '--dir', dir, 'status', '--json'], { maxBuffer: 1 << 30 }).toString()).map((task) => [task.id, task]),
);
const verdict = await checkGuarantees(await readFolderQueue(dir), tasks, calls, kills, finalStates);
server.close();
const lost = verdict.problems.filter((problem) => /ended|never called/.test(problem)).length;
console.log(`soak, ${minutes} min: ${verdict.tasks} tasks in ${batch} batches, ${verdict.calls} calls, ${kills.length} workers killed`);
console.log(
  `repeated calls: ${verdict.explainedRepeats} after a worker died mid-call, ${verdict.retriedRepeats} after the API failed on purpose; unexplained: ${verdict.problems.filter((p) => /called again/.test(p)).length}`,
);
console.log(`lost: ${lost}; other problems: ${verdict.problems.length - lost}`);
for (const problem of verdict.problems.slice(0, 20)) console.log(`  ${problem}`);
if (verdict.problems.length === 0) rmSync(dir, { recursive: true, force: true });
else console.log(`queue kept for inspection: ${dir}`);
process.exit(verdict.problems.length === 0 ? 0 : 1);
