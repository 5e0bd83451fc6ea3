// Large results and a history that stops growing: the rows of `npm run bench` for queues whose results are
// 100 KB each (a 1 GB history at 10,000 tasks), and for `worker compact` while workers drain.
// Also runs alone: `node bench/history.mjs [--quick]`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startTracked } from './processes.mjs';

const BIN = resolve(import.meta.dirname, '../bin/worker.cjs');
const RESULT_BYTES = 100 * 1024;

/** An API whose every answer is a 100 KB JSON result; it counts calls per task and notes when each first came. */
async function startResultsApi() {
  const calls = new Map();
  const firstCall = new Map();
  const filler = 'x'.repeat(RESULT_BYTES - 60);
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const id = JSON.parse(Buffer.concat(chunks).toString('utf8')).task_id;
      calls.set(id, (calls.get(id) ?? 0) + 1);
      if (!firstCall.has(id)) firstCall.set(id, performance.now());
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(`{"status":"completed","task":${JSON.stringify(id)},"text":"${filler}"}`);
    });
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  return {
    url: `http://127.0.0.1:${server.address().port}/task`,
    calls,
    firstCall,
    close: () =>
      new Promise((done) => {
        server.closeAllConnections();
        server.close(done);
      }),
  };
}

function addTasks(dir, ids) {
  const file = join(dir, 'tasks.jsonl');
  writeFileSync(file, ids.map((id) => JSON.stringify({ id, instruction: `Summarize ${id}`, deps: [] })).join('\n'));
  execFileSync(process.execPath, [BIN, '--dir', dir, 'add', '--file', file], { stdio: ['ignore', 'ignore', 'inherit'] });
}

/** Runs the CLI to its end: wall time, peak RSS (VmHWM), stdout. */
async function measure(args) {
  const started = performance.now();
  const tracked = startTracked([BIN, ...args], { captureStdout: true, everyMs: 20 });
  const peakKb = await tracked.exited;
  return { ms: performance.now() - started, peakMb: peakKb / 1024, out: tracked.output() };
}

const drain = (dir, api, workers, id = 'h') =>
  Promise.all(
    Array.from({ length: workers }, (_, i) => measure(['--dir', dir, 'run', '--api-url', api.url, '--drain', '--quiet', '--worker-id', `${id}-${i}`])),
  );

function historyBytes(dir) {
  const results = join(dir, 'queue', 'results');
  let bytes = statSync(join(dir, 'queue', 'execution-log.jsonl')).size;
  for (const name of readdirSync(results)) bytes += statSync(join(results, name)).size;
  return bytes;
}

function checkOnce(api, ids, label) {
  const missing = ids.filter((id) => api.calls.get(id) !== 1);
  if (missing.length > 0) throw new Error(`${label}: ${missing.length} tasks not called exactly once (e.g. ${missing[0]}: ${api.calls.get(missing[0]) ?? 0})`);
}

/** The rows; `row(scenario, tasks, workers, seconds, extra)` and `notes` as in bench.mjs. */
export async function historyScenarios(row, notes, quick) {
  const count = quick ? 1000 : 10_000;
  const api = await startResultsApi();
  const dir = mkdtempSync(join(tmpdir(), 'worker-bench-history-'));
  try {
    const first = Array.from({ length: count }, (_, i) => `r${i}`);
    addTasks(dir, first);
    const filled = performance.now();
    await drain(dir, api, 4);
    checkOnce(api, first, 'history');
    const history = historyBytes(dir);
    row(`drain with 100 KB results (${(history / 2 ** 30).toFixed(2)} GB history)`, count, 4, (performance.now() - filled) / 1000);

    // A worker starting on that history: its memory, and how long until the API sees its first call.
    addTasks(dir, ['probe']);
    const started = performance.now();
    const starting = await measure(['--dir', dir, 'run', '--api-url', api.url, '--drain', '--quiet', '--worker-id', 'probe-worker']);
    row('worker start to its first call, on that history', 1, 1, (api.firstCall.get('probe') - started) / 1000, { peakMb: starting.peakMb, latency: true });
    const status = await measure(['--dir', dir, 'status']);
    row('worker status, on that history', count, 0, status.ms / 1000, { peakMb: status.peakMb });
    const show = await measure(['--dir', dir, 'show', 'r7']);
    row('worker show of one task, on that history', 1, 0, show.ms / 1000, { peakMb: show.peakMb });
    const result = await measure(['--dir', dir, 'result', 'r7']);
    if (result.out.length !== RESULT_BYTES - 60 + `{"status":"completed","task":"r7","text":""}`.length)
      throw new Error('worker result printed the wrong bytes');
    row('worker result of one task, on that history', 1, 0, result.ms / 1000, { peakMb: result.peakMb });
    notes.push(
      `${count.toLocaleString('en')} tasks with 100 KB results: a starting worker peaked at ${starting.peakMb.toFixed(0)} MB (target 150), \`status\` took ${(status.ms / 1000).toFixed(2)} s and ${status.peakMb.toFixed(0)} MB (targets 2 s, 200 MB), \`show\` ${show.ms.toFixed(0)} ms and \`result\` ${result.ms.toFixed(0)} ms (target 300 ms)`,
    );

    // clean and compact while 4 workers drain as many new tasks: exactly once, and the history shrinks to what is left.
    const second = Array.from({ length: count }, (_, i) => `s${i}`);
    addTasks(dir, second);
    const compacting = performance.now();
    const workers = drain(dir, api, 4, 'c');
    await new Promise((done) => setTimeout(done, 300));
    const cleaned = await measure(['--dir', dir, 'clean', ...first, 'probe']);
    const compactions = [];
    for (let i = 0; i < 3; i += 1) compactions.push(await measure(['--dir', dir, 'compact']));
    await workers;
    const drained = performance.now() - compacting;
    checkOnce(api, second, 'compaction under load');
    const beforeLast = historyBytes(dir);
    await measure(['--dir', dir, 'compact']);
    const afterLast = historyBytes(dir);
    const needed = count * RESULT_BYTES;
    row('drain of as many new tasks while clean + 3 compacts run', count, 4, drained / 1000);
    row('worker clean of the first tasks (compacts too)', count + 1, 0, cleaned.ms / 1000, { peakMb: cleaned.peakMb });
    row('worker compact, while workers drain', count, 0, Math.max(...compactions.map((c) => c.ms)) / 1000, {
      peakMb: Math.max(...compactions.map((c) => c.peakMb)),
    });
    notes.push(
      `clean and compact while 4 workers drained ${count.toLocaleString('en')} new tasks: each called exactly once; the history went from ${(history / 2 ** 20).toFixed(0)} MB to ${(beforeLast / 2 ** 20).toFixed(0)} MB, ${(beforeLast / needed).toFixed(3)}x the results the remaining tasks hold (a last compact: ${(afterLast / 2 ** 20).toFixed(0)} MB)`,
    );
  } finally {
    await api.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === import.meta.filename) {
  const notes = [];
  await historyScenarios(
    (...cells) => console.log(cells.map((cell) => (typeof cell === 'number' ? cell.toFixed(3) : JSON.stringify(cell))).join('  ')),
    notes,
    process.argv.includes('--quick'),
  );
  for (const note of notes) console.log(`- ${note}`);
}
