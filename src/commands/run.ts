import { setFlagsFromString } from 'node:v8';
import type { RunConfig } from '../config.js';
import { HOST, redactUrl } from '../config.js';
import { WorkerError } from '../errors.js';
import { formatDuration } from '../core/duration.js';
import { HttpExecutor } from '../http/executor.js';
import { TaskLocks } from '../folder/lock/taskLock.js';
import { QueueStore } from '../folder/store.js';
import { ChangeWatcher } from '../folder/changeWatcher.js';
import { createLogger } from '../worker/logger.js';
import { Worker, type RunSummary, type StopSignals } from '../worker/worker.js';
import { HeartbeatWriter } from '../folder/heartbeat.js';
import { ProgressLine } from '../worker/progressLine.js';
import { holdWorkerId } from '../folder/workerIdLock.js';
import { ResultsWriter } from '../folder/results.js';
import { palette } from '../colors.js';
import { describeError, describeRate, plural } from '../core/reasons.js';
import type { QueueState } from '../core/queueState.js';
import type { TaskState } from '../types.js';
import { idList } from '../render.js';

export interface RunOptions {
  dir: string;
  config: RunConfig;
  writeLog: (line: string) => void;
  signals: StopSignals;
  /** Draw a progress line under the log (stderr is a terminal and --quiet was not given). */
  progress: boolean;
  colors: boolean;
}

/** `worker run`: one worker process until max-iterations, the idle limit, --drain or a signal. */
export async function runWorker(options: RunOptions): Promise<RunSummary> {
  // Two V8 settings for a worker's peak memory (npm run bench: peak RSS with 100,000 tasks). While the queue
  // is read, the young generation stays at its first size: grown to 2 x 16 MB it held the read's garbage
  // (~28 MB more at the peak, 148 MB). Once read, it may grow as usual (V8's factor 2): collecting the
  // garbage of each task in a small young generation cost ~3% of the CPU per task (bench/ab.mjs).
  // WebAssembly (undici's HTTP parser) is compiled by the baseline compiler only: optimising it on the
  // first call needed ~35 MB for a moment.
  setFlagsFromString('--semi-space-growth-factor=1');
  setFlagsFromString('--liftoff-only');
  const { config } = options;
  const store = await QueueStore.openForWorker(options.dir);
  setFlagsFromString('--semi-space-growth-factor=2');
  let releaseWorkerId: () => Promise<void>;
  try {
    // Before anything is claimed: a folder this worker cannot write to, or an id another live worker holds, is refused.
    store.checkWritable();
    releaseWorkerId = await holdWorkerId(store.paths, config.workerId, config.lockStaleMs);
  } catch (error) {
    store.close();
    throw error;
  }
  // Once the queue is read, the loop runs the same code for every task: V8 optimises a function after a
  // quarter of the interpretation it waits for by default (66 KB of bytecode run). bench/ab.mjs, 4 workers:
  // CPU per task 1.34 -> 1.17 ms on 10,000 tasks, 0.80 -> 0.73 on 30,000; 2.41 -> 2.58 on 2,000, where
  // the earlier compiling does not pay back. Peak memory unchanged.
  setFlagsFromString('--interrupt-budget=16384');
  const progress = options.progress ? new ProgressLine(options.writeLog, () => store.state, palette(options.colors), Date.now) : undefined;
  const logger = createLogger({
    workerId: config.workerId,
    verbosity: config.verbosity,
    format: config.logFormat,
    write: progress ? (line) => progress.log(line) : options.writeLog,
    now: () => new Date(),
    secrets: Object.values(config.headers),
  });
  const heartbeat = new HeartbeatWriter(
    store.paths,
    { worker: config.workerId, pid: process.pid, host: HOST, started_at: new Date().toISOString(), beat_at: '', state: 'idle', current_task: null, tasks_done: 0 },
    Date.now,
  );
  const watcher = new ChangeWatcher(store.paths.queueDir);
  const executor = new HttpExecutor({ url: config.apiUrl, headers: config.headers, timeoutMs: config.timeoutMs });
  const locks = new TaskLocks(store.paths, config.lockStaleMs, {
    owner: { worker: config.workerId, pid: process.pid, host: HOST },
    onRefresh: (lockPath) => logger.debug(`refreshed ${lockPath}`),
  });
  logger.info(
    `starting: pid ${process.pid} on ${HOST}, queue ${store.paths.root} (${plural(store.state.size, 'task')}), api ${redactUrl(config.apiUrl.toString())}` +
      `${Object.keys(config.headers).length > 0 ? ` with headers ${Object.keys(config.headers).map((name) => `${name}: ***`).join(', ')}` : ''}` +
      `, timeout ${formatDuration(config.timeoutMs)}, poll ${formatDuration(config.pollIntervalMs)}, max-idle ${config.maxIdle}, max-attempts ${config.maxAttempts}` +
      `, lock-stale ${formatDuration(config.lockStaleMs)}, backoff ${formatDuration(config.backoffMs)}${config.drain ? ', drain' : ''}` +
      `${config.maxIterations !== undefined ? `, max-iterations ${config.maxIterations}` : ''}` +
      `${config.rate !== undefined ? `, ${describeRate(config.rate)}` : ''}${config.pauseOn429 ? '' : ', no pause on 429'}` +
      `, max-api-wait ${config.maxApiWaitMs === 0 ? 'none' : formatDuration(config.maxApiWaitMs)}`,
  );
  const queueId = store.queueId();
  const results = new ResultsWriter(store.paths, config.workerId);
  const worker = new Worker(
    config,
    {
      store,
      locks,
      executor,
      logger,
      now: Date.now,
      random: Math.random,
      host: HOST,
      pid: process.pid,
      queueId,
      results,
      changes: watcher,
      heartbeat: heartbeat.beat,
    },
    options.signals,
  );
  let summary: RunSummary;
  heartbeat.start();
  progress?.start();
  try {
    summary = await worker.run();
  } catch (error) {
    logger.error(`crashed: ${error instanceof Error ? error.message : String(error)}`, { stack: error instanceof Error ? error.stack : undefined });
    throw error;
  } finally {
    progress?.stop();
    heartbeat.stop();
    watcher.close();
    locks.close();
    executor.close();
    results.close();
    store.close();
    await releaseWorkerId();
  }
  const why: Record<RunSummary['reason'], string> = {
    'max-iterations': `executed ${plural(config.maxIterations ?? 0, 'task')} (max-iterations)`,
    idle: `idle for ${config.maxIdle} checks in a row (--max-idle)`,
    drained: 'nothing left to do (--drain)',
    stopped: 'stopped by a signal',
    aborted: 'aborted by a second signal',
    'credentials-refused': 'the API refused this worker\'s credentials',
    'log-lost': 'the execution log was lost',
  };
  logger.info(
    `stopping: ${why[summary.reason]}; executed ${plural(summary.executed, 'task')}: ${summary.completed} completed, ${summary.retried} to retry, ${summary.failed} failed` +
      `${summary.lostClaims > 0 ? `, ${summary.lostClaims} lost claims` : ''} in ${formatDuration(summary.durationMs)}`,
  );
  const ended: Record<RunSummary['reason'], string> = {
    'max-iterations': 'max-iterations reached',
    idle: 'idle limit reached',
    drained: 'drained',
    stopped: 'stopped',
    aborted: 'aborted',
    'credentials-refused': 'stopped',
    'log-lost': 'stopped',
  };
  const left = `${ended[summary.reason]}: ${whatIsLeft(store.state)}`;
  if (summary.reason === 'aborted') {
    logger.info(left);
    throw new WorkerError('INTERRUPTED', `aborted by a second signal${summary.abandoned ? `: task "${summary.abandoned}" was put back to pending` : ''}`);
  }
  if ((summary.reason === 'idle' || summary.reason === 'log-lost') && summary.lastError) throw summary.lastError;
  if (summary.credentialsRefused) {
    const { task, error } = summary.credentialsRefused;
    logger.info(left);
    throw new WorkerError('CREDENTIALS_REFUSED', `the API refused this worker's credentials (${describeError(error)}); task "${task}" is pending again, its attempts unchanged`, {
      hint: 'check --header / WORKER_API_HEADERS (or the user and password in --api-url), then run again',
    });
  }
  if (summary.failedTasks.length > 0) {
    const ids = summary.failedTasks.map((failed) => failed.task);
    // The error line is the run's last: it says what is left, and that this worker failed tasks.
    throw new WorkerError('TASKS_FAILED', left, {
      hint: `this worker failed ${idList(ids, 'see worker status --state failed')}; see \`worker show <task-id>\`, and \`worker retry\` once the cause is fixed`,
    });
  }
  logger.info(left);
  return summary;
}

/** The queue as a run leaves it, in one line: `28 completed, 2 failed (fetch-7: http 422: …), 3 blocked`. */
function whatIsLeft(state: QueueState): string {
  const blocked = state.blockedTasks();
  const counts: Record<TaskState, number> = { pending: 0, running: 0, completed: 0, failed: 0, blocked: 0 };
  let firstFailed: string | undefined;
  for (const task of state.tasks()) {
    counts[state.stateOf(task, blocked)] += 1;
    if (task.state === 'failed' && firstFailed === undefined) {
      const why = task.lastError ? describeError(task.lastError) : 'no error recorded';
      firstFailed = `${task.def.id}: ${why.length > 60 ? `${why.slice(0, 59)}…` : why}`;
    }
  }
  const parts = [`${counts.completed} completed`];
  if (counts.failed > 0) parts.push(`${counts.failed} failed (${firstFailed}${counts.failed > 1 ? ', …' : ''})`);
  for (const name of ['blocked', 'pending', 'running'] as const) if (counts[name] > 0) parts.push(`${counts[name]} ${name}`);
  return parts.join(', ');
}
