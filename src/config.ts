import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { WorkerError } from './errors.js';
import { MAX_TIMER_MS, parseDuration } from './core/duration.js';
import { INTENSITIES, type Intensity, type QueuePlace, type RateLimit } from './types.js';
import type { TaskDefaults } from './core/newTasks.js';
import { MAX_RATE_CALLS } from './core/apiWeather.js';
import { configError, durationSetting, givenValue, integerSetting, settingName, type Env } from './core/settings.js';
import { DEFAULT_TIMEOUT, resolveHttpApi, type HttpApiConfig, type HttpApiFlags } from './http/settings.js';

/**
 * Every setting: defaults, then environment variables, then flags. Nothing here reads process.env: the CLI
 * passes it in, so tests can give their own.
 */
export type { Env };

export const DEFAULTS = {
  minBudget: 1000,
  maxBudget: 4000,
  intensity: 'medium' as Intensity,
  timeout: DEFAULT_TIMEOUT,
  pollInterval: '2s',
  maxIdle: 10,
  maxAttempts: 3,
  lockStale: '30s',
  backoff: '1s',
  maxApiWait: '1h',
  concurrency: 1,
};

export function resolveDir(flagDir: string | undefined, env: Env, cwd: string): string {
  const dir = flagDir ?? env.WORKER_DIR;
  if (dir !== undefined && dir.trim() === '') throw configError(settingName({ flag: '--dir', envName: 'WORKER_DIR' }), 'a folder path', dir);
  return dir ?? cwd;
}

export interface PlaceFlags {
  dir?: string | undefined;
  databaseUrl?: string | undefined;
  queue?: string | undefined;
}

/** Queue names in a database: what a person types after --queue; the same rule as task ids. */
const QUEUE_NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$/;

/**
 * Where the queue is: a database when --database-url (env WORKER_DATABASE_URL) is given, its queue named
 * by --queue (env WORKER_QUEUE, default `default`); otherwise the folder of --dir (env WORKER_DIR).
 */
export function resolvePlace(flags: PlaceFlags, env: Env, cwd: string): QueuePlace {
  const url = flags.databaseUrl ?? (env.WORKER_DATABASE_URL === '' ? undefined : env.WORKER_DATABASE_URL);
  const urlSetting = settingName({ flag: '--database-url', envName: 'WORKER_DATABASE_URL' });
  if (url === undefined) {
    if (flags.queue !== undefined) {
      throw new WorkerError('USAGE', '--queue names a queue of a database, and no --database-url (env WORKER_DATABASE_URL) was given', {
        hint: 'a folder holds one queue: give --dir for another folder, or --database-url with --queue',
      });
    }
    return { kind: 'folder', dir: resolveDir(flags.dir, env, cwd) };
  }
  if (flags.dir !== undefined) {
    throw new WorkerError('USAGE', '--dir and --database-url name two places for the queue: give one', {
      hint: 'a queue in a database is named by --queue (env WORKER_QUEUE)',
    });
  }
  if (!/^postgres(ql)?:\/\//.test(url))
    throw configError(urlSetting, 'a postgres:// URL, e.g. postgres://user:password@db.example:5432/queues', url.replace(/:[^:/@]*@/, ':***@'));
  const queue = flags.queue ?? env.WORKER_QUEUE ?? 'default';
  if (!QUEUE_NAME_PATTERN.test(queue)) {
    throw configError(
      settingName({ flag: '--queue', envName: 'WORKER_QUEUE' }),
      'letters, digits, ".", "_", "-"; 1 to 100 characters, starting with a letter or digit',
      queue,
    );
  }
  return { kind: 'database', url, queue };
}

export interface TaskDefaultFlags {
  minBudget?: string | undefined;
  maxBudget?: string | undefined;
  intensity?: string | undefined;
}

/** Budgets given for one `add`, over the queue-wide defaults. Undefined fields fall back to TaskDefaults. */
export function resolveTaskDefaults(flags: TaskDefaultFlags, env: Env): TaskDefaults {
  const intensitySource = { flag: '--intensity', value: flags.intensity, env, envName: 'WORKER_INTENSITY' };
  const intensity = givenValue(intensitySource) ?? DEFAULTS.intensity;
  if (!INTENSITIES.includes(intensity as Intensity)) {
    throw configError(settingName(intensitySource), `one of ${INTENSITIES.join(', ')}`, intensity);
  }
  const defaults: TaskDefaults = {
    min_budget: integerSetting({ flag: '--min-budget', value: flags.minBudget, env, envName: 'WORKER_MIN_BUDGET', fallback: DEFAULTS.minBudget, minimum: 0 }),
    max_budget: integerSetting({ flag: '--max-budget', value: flags.maxBudget, env, envName: 'WORKER_MAX_BUDGET', fallback: DEFAULTS.maxBudget, minimum: 0 }),
    intensity: intensity as Intensity,
  };
  if (defaults.min_budget > defaults.max_budget) {
    throw new WorkerError('CONFIG', `--min-budget ${defaults.min_budget} is above --max-budget ${defaults.max_budget}`, {
      hint: 'raise --max-budget (WORKER_MAX_BUDGET) or lower --min-budget (WORKER_MIN_BUDGET)',
    });
  }
  return defaults;
}

export function generateWorkerId(): string {
  // 32 bits: two workers started in the 7 days heartbeats are kept do not meet by chance.
  return `w-${randomBytes(4).toString('hex')}`;
}

export const HOST = hostname();

export type Verbosity = 'quiet' | 'normal' | 'verbose';
export type LogFormat = 'text' | 'json';

export interface RunFlags extends HttpApiFlags {
  pollInterval?: string | undefined;
  maxIdle?: string | undefined;
  maxAttempts?: string | undefined;
  lockStale?: string | undefined;
  backoff?: string | undefined;
  workerId?: string | undefined;
  drain?: boolean | undefined;
  rate?: string | undefined;
  /** Commander's --no-pause-on-429: false when given. */
  pauseOn429?: boolean | undefined;
  maxApiWait?: string | undefined;
  concurrency?: string | undefined;
  verbose?: boolean | undefined;
  quiet?: boolean | undefined;
  logFormat?: string | undefined;
}

export interface RunConfig {
  /** What the executor calls: the one kind of executor there is, an HTTP API. */
  api: HttpApiConfig;
  pollIntervalMs: number;
  /** 0: never exit for being idle. */
  maxIdle: number;
  maxAttempts: number;
  lockStaleMs: number;
  backoffMs: number;
  workerId: string;
  drain: boolean;
  /** Call starts allowed to all processes of the queue together per period; undefined: no limit. */
  rate: RateLimit | undefined;
  /** A 429 pauses the whole queue (false: it is one task's retryable error). */
  pauseOn429: boolean;
  /** How long a task may keep being asked to wait (429) before it fails; 0: no bound. */
  maxApiWaitMs: number;
  /** Tasks to execute before exiting; undefined: no limit. */
  maxIterations: number | undefined;
  /** Tasks this process keeps in flight at once (--concurrency). */
  concurrency: number;
  verbosity: Verbosity;
  logFormat: LogFormat;
}

/** More than this many calls in flight from one process: run several processes instead. */
export const MAX_CONCURRENCY = 1000;

function concurrencySetting(flagValue: string | undefined, env: Env): number {
  const source = { flag: '--concurrency', value: flagValue, env, envName: 'WORKER_CONCURRENCY', fallback: DEFAULTS.concurrency, minimum: 1 };
  const concurrency = integerSetting(source);
  if (concurrency > MAX_CONCURRENCY) throw configError(settingName(source), `a whole number from 1 to ${MAX_CONCURRENCY}`, String(concurrency));
  return concurrency;
}

export function parseMaxIterations(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text.trim()) || Number(text) < 1 || !Number.isSafeInteger(Number(text))) {
    throw new WorkerError('USAGE', `expected [max-iterations] to be a whole number of 1 or more, got ${JSON.stringify(text)}`, {
      hint: 'worker run 10 executes at most 10 tasks; leave it out for no limit',
    });
  }
  return Number(text);
}

const RATE_PERIODS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `60/m`, `5/s`, `1000/h`, or a count per any duration: `10/30s`. */
export function parseRate(text: string): RateLimit | undefined {
  const match = /^\s*(\d+)\s*\/\s*(\S+)\s*$/.exec(text);
  if (!match) return undefined;
  const calls = Number(match[1]);
  const perMs = RATE_PERIODS[match[2]!] ?? parseDuration(match[2]!);
  if (!Number.isSafeInteger(calls) || calls < 1 || calls > MAX_RATE_CALLS || perMs === undefined || perMs < 10 || perMs > MAX_TIMER_MS) return undefined;
  return { calls, per_ms: perMs };
}

function rateSetting(flagValue: string | undefined, env: Env): RateLimit | undefined {
  const source = { flag: '--rate', value: flagValue, env, envName: 'WORKER_RATE' };
  const text = givenValue(source);
  if (text === undefined || text.trim() === '') return undefined;
  const rate = parseRate(text);
  if (rate === undefined) {
    throw configError(settingName(source), `calls per period like 60/m, 5/s, 1000/h or 10/30s, with 1 to ${MAX_RATE_CALLS.toLocaleString('en')} calls`, text);
  }
  return rate;
}

export function resolveRunConfig(flags: RunFlags, maxIterations: string | undefined, env: Env): RunConfig {
  const api = resolveHttpApi(flags, env);
  const workerIdSource = { flag: '--worker-id', value: flags.workerId, env, envName: 'WORKER_ID' };
  const workerId = givenValue(workerIdSource) ?? generateWorkerId();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$/.test(workerId)) throw configError(settingName(workerIdSource), '1 to 40 letters, digits, ".", "_" or "-"', workerId);
  const logFormat = flags.logFormat ?? 'text';
  if (logFormat !== 'text' && logFormat !== 'json') throw configError('--log-format', 'text or json', logFormat);
  if (flags.verbose && flags.quiet) throw new WorkerError('USAGE', '--verbose and --quiet contradict each other', { hint: 'give one of them' });
  return {
    api,
    pollIntervalMs: durationSetting({
      flag: '--poll-interval',
      value: flags.pollInterval,
      env,
      envName: 'WORKER_POLL_INTERVAL',
      fallback: DEFAULTS.pollInterval,
      minimumMs: 10,
    }),
    maxIdle: integerSetting({ flag: '--max-idle', value: flags.maxIdle, env, envName: 'WORKER_MAX_IDLE', fallback: DEFAULTS.maxIdle, minimum: 0 }),
    maxAttempts: integerSetting({
      flag: '--max-attempts',
      value: flags.maxAttempts,
      env,
      envName: 'WORKER_MAX_ATTEMPTS',
      fallback: DEFAULTS.maxAttempts,
      minimum: 1,
    }),
    lockStaleMs: lockStaleSetting(flags.lockStale, env),
    backoffMs: durationSetting({ flag: '--backoff', value: flags.backoff, env, envName: 'WORKER_BACKOFF', fallback: DEFAULTS.backoff, minimumMs: 0 }),
    workerId,
    drain: flags.drain ?? false,
    rate: rateSetting(flags.rate, env),
    pauseOn429: flags.pauseOn429 ?? true,
    maxApiWaitMs: durationSetting({
      flag: '--max-api-wait',
      value: flags.maxApiWait,
      env,
      envName: 'WORKER_MAX_API_WAIT',
      fallback: DEFAULTS.maxApiWait,
      minimumMs: 0,
    }),
    maxIterations: parseMaxIterations(maxIterations),
    concurrency: concurrencySetting(flags.concurrency, env),
    verbosity: flags.verbose ? 'verbose' : flags.quiet ? 'quiet' : 'normal',
    logFormat,
  };
}

/** Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org). */
export function colorsEnabled(stream: { isTTY?: boolean }, env: Env): boolean {
  return stream.isTTY === true && !env.NO_COLOR;
}

/** --lock-stale as the inspecting commands (status, show, unlock) judge it: WORKER_LOCK_STALE or the default. */
export function lockStaleSetting(flagValue: string | undefined, env: Env): number {
  // proper-lockfile cannot go below 2 s.
  return durationSetting({ flag: '--lock-stale', value: flagValue, env, envName: 'WORKER_LOCK_STALE', fallback: DEFAULTS.lockStale, minimumMs: 2000 });
}

export { durationSetting };
