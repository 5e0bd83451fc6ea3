import { setFlagsFromString } from 'node:v8';
import type { RunConfig } from '../config.js';
import { HOST } from '../config.js';
import { WorkerError } from '../errors.js';
import { formatDuration } from '../core/duration.js';
import { openExecutor, openWorkerStore } from '../backends.js';
import { createLogger } from '../worker/logger.js';
import { Worker, type RunSummary, type StopSignals } from '../worker/worker.js';
import { ProgressLine } from '../worker/progressLine.js';
import { palette } from '../colors.js';
import { describeError, describeRate, plural } from '../core/reasons.js';
import type { QueueState } from '../core/queueState.js';
import type { QueuePlace, TaskState } from '../types.js';
import type { Presence } from '../store.js';
import type { Executor } from '../executor.js';
import { idList } from '../render.js';

export interface RunOptions {
  place: QueuePlace;
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
  // is read, the young generation stays at its first size: grown, it held the read's garbage at the peak.
  // Once read, it may grow as usual: collecting each task's garbage in a small young generation costs CPU
  // per task. WebAssembly (undici's HTTP parser) is compiled by the baseline compiler only: optimising it
  // on the first call needed tens of megabytes for a moment. Figures: CHANGELOG.md.
  setFlagsFromString('--semi-space-growth-factor=1');
  setFlagsFromString('--liftoff-only');
  const { config } = options;
  // The progress line draws the store's state once the store is open; log lines go above it.
  let progress: ProgressLine | undefined;
  const logger = createLogger({
    workerId: config.workerId,
    verbosity: config.verbosity,
    format: config.logFormat,
    write: (line) => (progress ? progress.log(line) : options.writeLog(line)),
    now: () => new Date(),
    secrets: Object.values(config.api.headers),
  });
  const store = await openWorkerStore({ place: options.place, config, logger, host: HOST, pid: process.pid, now: Date.now, random: Math.random });
  setFlagsFromString('--semi-space-growth-factor=2');
  let presence: Presence;
  let executor: Executor;
  try {
    presence = await store.enter({
      worker: config.workerId,
      pid: process.pid,
      host: HOST,
      started_at: new Date().toISOString(),
      beat_at: '',
      state: 'idle',
      current_task: null,
      current_tasks: [],
      concurrency: config.concurrency,
      tasks_done: 0,
    });
  } catch (error) {
    store.close();
    throw error;
  }
  try {
    executor = await openExecutor(config);
  } catch (error) {
    await presence.leave();
    store.close();
    throw error;
  }
  // Once the queue is read, the loop runs the same code for every task: V8 optimises a function after a
  // quarter of the interpretation it waits for by default (see CHANGELOG.md for what that bought).
  setFlagsFromString('--interrupt-budget=16384');
  logger.info(
    `starting: pid ${process.pid} on ${HOST}, ${store.describe()}, ${executor.describe()}` +
      `${config.concurrency > 1 ? `, concurrency ${config.concurrency}` : ''}, poll ${formatDuration(config.pollIntervalMs)}, max-idle ${config.maxIdle}, max-attempts ${config.maxAttempts}` +
      `, lock-stale ${formatDuration(config.lockStaleMs)}, backoff ${formatDuration(config.backoffMs)}${config.drain ? ', drain' : ''}` +
      `${config.maxIterations !== undefined ? `, max-iterations ${config.maxIterations}` : ''}` +
      `${config.rate !== undefined ? `, ${describeRate(config.rate)}` : ''}${config.pauseOn429 ? '' : ', no pause on 429'}` +
      `, max-api-wait ${config.maxApiWaitMs === 0 ? 'none' : formatDuration(config.maxApiWaitMs)}`,
  );
  const worker = new Worker(
    config,
    { store, executor, logger, now: Date.now, random: Math.random, host: HOST, pid: process.pid, heartbeat: presence.heartbeat },
    options.signals,
  );
  if (options.progress) {
    const slots = () => ({ inFlight: worker.inFlightCount, of: config.concurrency });
    progress = new ProgressLine(options.writeLog, () => store.state, palette(options.colors), Date.now, slots);
  }
  let summary: RunSummary;
  progress?.start();
  try {
    summary = await worker.run();
  } catch (error) {
    logger.error(`crashed: ${error instanceof Error ? error.message : String(error)}`, { stack: error instanceof Error ? error.stack : undefined });
    throw error;
  } finally {
    progress?.stop();
    executor.close();
    await presence.leave();
    store.close();
  }
  const why: Record<RunSummary['reason'], string> = {
    'max-iterations': `executed ${plural(config.maxIterations ?? 0, 'task')} (max-iterations)`,
    idle: `idle for ${config.maxIdle} checks in a row (--max-idle)`,
    drained: 'nothing left to do (--drain)',
    stopped: 'stopped by a signal',
    aborted: 'aborted by a second signal',
    'credentials-refused': "the API refused this worker's credentials",
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
    const abandoned = summary.abandoned.map((id) => `"${id}"`);
    const putBack =
      abandoned.length === 0
        ? ''
        : abandoned.length === 1
          ? `: task ${abandoned[0]} was put back to pending`
          : `: tasks ${abandoned.join(', ')} were put back to pending`;
    throw new WorkerError('INTERRUPTED', `aborted by a second signal${putBack}`);
  }
  if ((summary.reason === 'idle' || summary.reason === 'log-lost') && summary.lastError) throw summary.lastError;
  if (summary.credentialsRefused) {
    const { task, error } = summary.credentialsRefused;
    logger.info(left);
    throw new WorkerError(
      'CREDENTIALS_REFUSED',
      `the API refused this worker's credentials (${describeError(error)}); task "${task}" is pending again, its attempts unchanged`,
      {
        hint: 'check --header / WORKER_API_HEADERS (or the user and password in --api-url), then run again',
      },
    );
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
