import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT_CODES, WorkerError } from '../errors.js';
import { HOST } from '../config.js';
import { palette } from '../colors.js';
import { openStore } from '../backends.js';
import type { QueueState } from '../core/queueState.js';
import { startReferenceApi } from '../serve/referenceApi.js';
import { renderStatus } from '../render.js';
import { ProgressLine } from '../worker/progressLine.js';
import type { NewTask } from '../core/newTasks.js';
import { describeEvent } from './inspect.js';
import { visible } from '../core/visible.js';
import { readStatus } from './status.js';
import type { QueuePlace, StatusReport, TaskDefinition } from '../types.js';

export interface DemoOptions {
  /** Where to put the queue (a folder, or a queue of a database); a new temporary folder when undefined. */
  place: QueuePlace | undefined;
  /** The CLI to start workers with (bin/worker.cjs). */
  bin: string;
  write: (text: string) => void;
  progress: boolean;
  colors: boolean;
}

const WORKERS = 3;

/** About 20 tasks: fan-out, fan-in, and one task that fails for good and blocks what depends on it. */
export function demoTasks(): NewTask[] {
  const chapters = [1, 2, 3, 4, 5, 6];
  return [
    ...chapters.map((n) => ({ id: `fetch-${n}`, instruction: `Fetch chapter ${n} of the book`, deps: [] })),
    { id: 'fetch-7', instruction: 'fail: chapter 7 is missing from the source', deps: [] },
    ...[...chapters, 7].map((n) => ({ id: `summarize-${n}`, instruction: `Summarize chapter ${n} in three sentences`, deps: [`fetch-${n}`] })),
    { id: 'outline', instruction: 'Outline the book from the chapter summaries', deps: chapters.map((n) => `summarize-${n}`) },
    { id: 'glossary', instruction: 'List the terms chapter 3 introduces', deps: ['summarize-3'] },
    { id: 'appendix', instruction: 'Write the appendix from chapter 7', deps: ['summarize-7'] },
    { id: 'review', instruction: 'Review the outline for gaps', deps: ['outline'] },
    { id: 'index', instruction: 'Build an index from the outline and glossary', deps: ['outline', 'glossary'] },
    { id: 'publish', instruction: 'Assemble the book', deps: ['review', 'index', 'appendix'] },
  ];
}

/**
 * `worker demo`: the whole thing in one command, with no API of your own: a reference API on a free
 * port, a seeded graph, three worker processes, live progress, then the final table.
 */
export async function runDemo(options: DemoOptions): Promise<StatusReport> {
  const place: QueuePlace = options.place ?? { kind: 'folder', dir: mkdtempSync(join(tmpdir(), 'worker-demo-')) };
  if (await holdsQueue(place)) {
    throw new WorkerError('REJECTED', place.kind === 'folder' ? `${place.dir} already holds a queue` : `the database already holds a queue "${place.queue}"`, {
      hint: place.kind === 'folder' ? 'give the demo an empty or new folder with --dir, or none for a temporary one' : 'name a new one with --queue',
    });
  }
  // The demo's own logs go in its folder, or in a temporary one beside a database.
  const dir = place.kind === 'folder' ? place.dir : mkdtempSync(join(tmpdir(), 'worker-demo-'));
  mkdirSync(dir, { recursive: true });
  const colors = palette(options.colors);
  const store = await openStore({ place, create: true, lockStaleMs: 30_000, host: HOST });
  const where = place.kind === 'folder' ? ['--dir', place.dir] : ['--database-url', place.url, '--queue', place.queue];
  // What a person types to look further: never the database's password.
  const again = place.kind === 'folder' ? `worker --dir ${place.dir}` : `worker --queue ${place.queue}`;
  const apiLog = createWriteStream(join(dir, 'demo-api.log'));
  const api = await startReferenceApi({
    host: '127.0.0.1',
    port: 0,
    latencyMs: { min: 40, max: 250 },
    failRate: 0.15,
    statusCode: 503,
    log: (line) => apiLog.write(`${line}\n`),
    random: Math.random,
  });
  try {
    const tasks = demoTasks();
    await store.addTasks(tasks, { min_budget: 1000, max_budget: 4000, intensity: 'medium' }, new Date(), (i) => `demo task ${tasks[i]?.id}`);
    let state: QueueState<TaskDefinition> = await store.read();
    options.write(`${colors.bold('worker demo')}: ${tasks.length} tasks in ${store.describe()}\n`);
    options.write(`reference API at ${api.url} (40-250 ms per call, 15% answered 503 and retried; "fetch-7" always fails)\n`);
    options.write(
      `${WORKERS} workers: ${Array.from({ length: WORKERS }, (_, i) => `demo-${i + 1}`).join(', ')} (their logs: ${join(dir, 'demo-worker-N.log')})\n\n`,
    );

    const progress = options.progress ? new ProgressLine(options.write, () => state, colors, Date.now) : undefined;
    const say = (line: string) => (progress ? progress.log(`${line}\n`) : options.write(`${line}\n`));
    const stopFollowing = new AbortController();
    const following = store.followHistory(
      (event) => {
        if (event.type !== 'outcome') return;
        const mark =
          event.outcome === 'completed'
            ? colors.state('completed', '✓')
            : event.outcome === 'failed'
              ? colors.state('failed', '✗')
              : colors.state('blocked', '↻');
        say(`${mark} ${visible(describeEvent(event, 'accepted').split('  ').slice(1).join('  '))}`);
      },
      undefined,
      stopFollowing.signal,
    );
    progress?.start();
    const timer = setInterval(() => {
      store.read().then(
        (read) => (state = read),
        () => undefined,
      );
    }, 100);
    const exits = Array.from({ length: WORKERS }, (_, i) => {
      const log = createWriteStream(join(dir, `demo-worker-${i + 1}.log`));
      const child = spawn(
        process.execPath,
        [
          options.bin,
          ...where,
          'run',
          '--api-url',
          api.url,
          '--drain',
          '--worker-id',
          `demo-${i + 1}`,
          '--max-attempts',
          '6',
          '--backoff',
          '100ms',
          '--poll-interval',
          '200ms',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NO_COLOR: '1' } },
      );
      child.stderr.pipe(log);
      return new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    });
    const codes = await Promise.all(exits);
    clearInterval(timer);
    stopFollowing.abort();
    await following;
    progress?.stop();
    // fetch-7 fails on purpose: the worker that ran it exits with TASKS_FAILED, as a script would want.
    if (codes.some((code) => code !== 0 && code !== EXIT_CODES.TASKS_FAILED)) {
      throw new WorkerError('IO', `a demo worker exited with ${codes.join(', ')}`, { hint: `see ${join(dir, 'demo-worker-N.log')}` });
    }
    const report = await readStatus(store, Date.now(), undefined);
    options.write(`\n${renderStatus(report, Date.now(), colors)}`);
    options.write(
      [
        '',
        `Look further${place.kind === 'database' ? ' (with WORKER_DATABASE_URL set to the database)' : ''}:`,
        `  ${again} show fetch-7          # why it failed, every attempt`,
        `  ${again} show publish          # why it is blocked`,
        `  ${again} logs                  # the execution log, readable`,
        `  ${again} graph                 # the dependency graph (Mermaid)`,
        `  ${again} workers               # the three workers and their heartbeats`,
        `  ${again} retry fetch-7         # try it again (it will fail again: its instruction says so)`,
        '',
      ].join('\n'),
    );
    return report;
  } finally {
    await store.close();
    await api.close();
    apiLog.end();
  }
}

/** Whether `place` holds a queue already: the store opens it without being allowed to create one. */
async function holdsQueue(place: QueuePlace): Promise<boolean> {
  try {
    await (await openStore({ place, create: false, lockStaleMs: 30_000, host: HOST })).close();
    return true;
  } catch (error) {
    if (error instanceof WorkerError && error.code === 'NOT_FOUND') return false;
    throw error;
  }
}
