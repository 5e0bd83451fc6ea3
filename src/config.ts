import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { WorkerError } from './errors.js';
import { MAX_TIMER_MS, parseDuration } from './core/duration.js';
import { INTENSITIES, type Intensity } from './types.js';
import type { TaskDefaults } from './core/newTasks.js';
import { MAX_RATE_CALLS, type RateLimit } from './core/apiWeather.js';

/**
 * Every setting: defaults, then environment variables, then flags. The only module that reads process.env
 * (callers pass it in, so tests can give their own).
 */
export type Env = Readonly<Record<string, string | undefined>>;

export const DEFAULTS = {
  minBudget: 1000,
  maxBudget: 4000,
  intensity: 'medium' as Intensity,
  timeout: '120s',
  pollInterval: '2s',
  maxIdle: 10,
  maxAttempts: 3,
  lockStale: '30s',
  backoff: '1s',
  maxApiWait: '1h',
};

/** Where a setting came from, for messages: `--timeout (or WORKER_API_TIMEOUT)`. */
function settingName(flag: string, envName: string | undefined): string {
  return envName ? `${flag} (or ${envName})` : flag;
}

function pick(flagValue: string | undefined, env: Env, envName: string | undefined): string | undefined {
  if (flagValue !== undefined) return flagValue;
  return envName === undefined ? undefined : env[envName];
}

function configError(setting: string, expected: string, got: string): WorkerError {
  return new WorkerError('CONFIG', `expected ${setting} to be ${expected}, got ${JSON.stringify(got)}`, {
    hint: `see \`worker --help\` for every setting and its default`,
  });
}

/**
 * A duration setting, at least `minimumMs` and at most `maximumMs`: by default what a timer can wait
 * (MAX_TIMER_MS), since every duration of a worker ends up in one; a longer one would fire at once.
 */
export function durationSetting(flag: string, flagValue: string | undefined, env: Env, envName: string, fallback: string, minimumMs = 1, maximumMs = MAX_TIMER_MS): number {
  const text = pick(flagValue, env, envName) ?? fallback;
  const ms = parseDuration(text);
  if (ms === undefined || ms < minimumMs || ms > maximumMs) {
    const at = [minimumMs > 1 ? `at least ${minimumMs}ms` : '', maximumMs === MAX_TIMER_MS ? 'at most 24d (the longest a timer can wait)' : ''].filter(Boolean).join(' and ');
    throw configError(settingName(flag, envName), `a duration like 500ms, 2s, 5m or plain seconds${at ? ` of ${at}` : ''}`, text);
  }
  return ms;
}

export function integerSetting(flag: string, flagValue: string | undefined, env: Env, envName: string | undefined, fallback: number, minimum: number): number {
  const text = pick(flagValue, env, envName);
  if (text === undefined) return fallback;
  if (!/^\s*\d+\s*$/.test(text) || Number(text) < minimum || !Number.isSafeInteger(Number(text))) {
    throw configError(settingName(flag, envName), `a whole number of ${minimum} or more`, text);
  }
  return Number(text);
}

export function resolveDir(flagDir: string | undefined, env: Env, cwd: string): string {
  const dir = flagDir ?? env.WORKER_DIR;
  if (dir !== undefined && dir.trim() === '') throw configError(settingName('--dir', 'WORKER_DIR'), 'a folder path', dir);
  return dir ?? cwd;
}

export interface TaskDefaultFlags {
  minBudget?: string | undefined;
  maxBudget?: string | undefined;
  intensity?: string | undefined;
}

/** Budgets given for one `add`, over the queue-wide defaults. Undefined fields fall back to TaskDefaults. */
export function resolveTaskDefaults(flags: TaskDefaultFlags, env: Env): TaskDefaults {
  const intensity = pick(flags.intensity, env, 'WORKER_INTENSITY') ?? DEFAULTS.intensity;
  if (!INTENSITIES.includes(intensity as Intensity)) {
    throw configError(settingName('--intensity', 'WORKER_INTENSITY'), `one of ${INTENSITIES.join(', ')}`, intensity);
  }
  const defaults: TaskDefaults = {
    min_budget: integerSetting('--min-budget', flags.minBudget, env, 'WORKER_MIN_BUDGET', DEFAULTS.minBudget, 0),
    max_budget: integerSetting('--max-budget', flags.maxBudget, env, 'WORKER_MAX_BUDGET', DEFAULTS.maxBudget, 0),
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

/** Headers that the worker sets itself, or that HTTP manages: refused in --header. */
const RESERVED_HEADERS = new Set(['content-type', 'content-length', 'idempotency-key', 'x-worker-id', 'host', 'transfer-encoding', 'connection']);
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What HTTP (and undici) allow in a header value: tab, visible ASCII, space, Latin-1 beyond ASCII; no line breaks. */
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

export type Verbosity = 'quiet' | 'normal' | 'verbose';
export type LogFormat = 'text' | 'json';

export interface RunFlags {
  apiUrl?: string | undefined;
  header?: string[] | undefined;
  timeout?: string | undefined;
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
  verbose?: boolean | undefined;
  quiet?: boolean | undefined;
  logFormat?: string | undefined;
}

export interface RunConfig {
  apiUrl: URL;
  headers: Record<string, string>;
  timeoutMs: number;
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
  verbosity: Verbosity;
  logFormat: LogFormat;
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
  const text = pick(flagValue, env, 'WORKER_RATE');
  if (text === undefined || text.trim() === '') return undefined;
  const rate = parseRate(text);
  if (rate === undefined) {
    throw configError(settingName('--rate', 'WORKER_RATE'), `calls per period like 60/m, 5/s, 1000/h or 10/30s, with 1 to ${MAX_RATE_CALLS.toLocaleString('en')} calls`, text);
  }
  return rate;
}

export function parseHeaders(lines: readonly string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  lines.forEach((line, i) => {
    const colon = line.indexOf(':');
    const name = colon === -1 ? '' : line.slice(0, colon).trim();
    // The value may be a secret: messages name the header, never its value.
    if (!HEADER_NAME.test(name)) {
      throw new WorkerError('CONFIG', `header #${i + 1} is not of the form "Name: value"${name ? ` (name ${JSON.stringify(name)})` : ''}`, {
        hint: `give --header 'Authorization: Bearer …' (or one "Name: value" per line in WORKER_API_HEADERS)`,
      });
    }
    if (RESERVED_HEADERS.has(name.toLowerCase())) {
      throw new WorkerError('CONFIG', `header "${name}" is set by the worker itself and cannot be given`, { hint: 'remove it from --header / WORKER_API_HEADERS' });
    }
    const value = line.slice(colon + 1).trim();
    if (!HEADER_VALUE.test(value)) {
      // Found here, not by undici at every call, where each task would burn an attempt on it.
      throw new WorkerError('CONFIG', `the value of header "${name}" holds a character HTTP does not allow (a line break or another control character, or one beyond Latin-1)`, {
        hint: 'check how the value was pasted or quoted in --header / WORKER_API_HEADERS',
      });
    }
    headers[name.toLowerCase()] = value;
  });
  return headers;
}

/**
 * `http://user:password@host/` means HTTP Basic authentication, as with curl; undici would drop the
 * credentials. They become an Authorization header (whose value, like every header's, is never logged)
 * and leave the URL.
 */
function moveCredentialsToHeader(apiUrl: URL, headers: Record<string, string>): void {
  if (headers.authorization !== undefined) {
    throw new WorkerError('CONFIG', '--api-url holds a user and password, and an Authorization header is given too', {
      hint: 'give the credentials once: in the URL (Basic authentication) or as --header \'Authorization: …\'',
    });
  }
  const decoded = (text: string) => {
    try {
      return decodeURIComponent(text);
    } catch {
      return text; // a % that starts no escape stands for itself
    }
  };
  const credentials = `${decoded(apiUrl.username)}:${decoded(apiUrl.password)}`;
  headers.authorization = `Basic ${Buffer.from(credentials).toString('base64')}`;
  apiUrl.username = '';
  apiUrl.password = '';
}

export function resolveRunConfig(flags: RunFlags, maxIterations: string | undefined, env: Env): RunConfig {
  const urlText = pick(flags.apiUrl, env, 'WORKER_API_URL');
  if (urlText === undefined || urlText.trim() === '') {
    throw new WorkerError('CONFIG', 'no API to call: --api-url is not set', {
      hint: 'give --api-url http://host:port/path or set WORKER_API_URL (try `worker serve` for a reference API)',
    });
  }
  let apiUrl: URL;
  try {
    apiUrl = new URL(urlText);
  } catch {
    throw configError(settingName('--api-url', 'WORKER_API_URL'), 'an http:// or https:// URL', redactUrl(urlText));
  }
  if (apiUrl.protocol !== 'http:' && apiUrl.protocol !== 'https:') {
    throw configError(settingName('--api-url', 'WORKER_API_URL'), 'an http:// or https:// URL', redactUrl(urlText));
  }
  const headerLines = flags.header && flags.header.length > 0 ? flags.header : (env.WORKER_API_HEADERS ?? '').split('\n').filter((line) => line.trim() !== '');
  const workerId = pick(flags.workerId, env, 'WORKER_ID') ?? generateWorkerId();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$/.test(workerId)) {
    throw configError(settingName('--worker-id', 'WORKER_ID'), '1 to 40 letters, digits, ".", "_" or "-"', workerId);
  }
  const logFormat = flags.logFormat ?? 'text';
  if (logFormat !== 'text' && logFormat !== 'json') throw configError('--log-format', 'text or json', logFormat);
  if (flags.verbose && flags.quiet) throw new WorkerError('USAGE', '--verbose and --quiet contradict each other', { hint: 'give one of them' });
  const headers = parseHeaders(headerLines);
  if (apiUrl.username || apiUrl.password) moveCredentialsToHeader(apiUrl, headers);
  return {
    apiUrl,
    headers,
    timeoutMs: durationSetting('--timeout', flags.timeout, env, 'WORKER_API_TIMEOUT', DEFAULTS.timeout),
    pollIntervalMs: durationSetting('--poll-interval', flags.pollInterval, env, 'WORKER_POLL_INTERVAL', DEFAULTS.pollInterval, 10),
    maxIdle: integerSetting('--max-idle', flags.maxIdle, env, 'WORKER_MAX_IDLE', DEFAULTS.maxIdle, 0),
    maxAttempts: integerSetting('--max-attempts', flags.maxAttempts, env, 'WORKER_MAX_ATTEMPTS', DEFAULTS.maxAttempts, 1),
    // proper-lockfile cannot go below 2 s.
    lockStaleMs: durationSetting('--lock-stale', flags.lockStale, env, 'WORKER_LOCK_STALE', DEFAULTS.lockStale, 2000),
    backoffMs: durationSetting('--backoff', flags.backoff, env, 'WORKER_BACKOFF', DEFAULTS.backoff, 0),
    workerId,
    drain: flags.drain ?? false,
    rate: rateSetting(flags.rate, env),
    pauseOn429: flags.pauseOn429 ?? true,
    maxApiWaitMs: durationSetting('--max-api-wait', flags.maxApiWait, env, 'WORKER_MAX_API_WAIT', DEFAULTS.maxApiWait, 0),
    maxIterations: parseMaxIterations(maxIterations),
    verbosity: flags.verbose ? 'verbose' : flags.quiet ? 'quiet' : 'normal',
    logFormat,
  };
}

/** A URL for logs: user and password hidden. */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    if (url.username || url.password) {
      url.username = url.username ? '***' : '';
      url.password = url.password ? '***' : '';
    }
    return url.toString();
  } catch {
    return text.replace(/\/\/[^/@]*@/, '//***@');
  }
}

/** Colours only on a terminal, and never when NO_COLOR is set (https://no-color.org). */
export function colorsEnabled(stream: { isTTY?: boolean }, env: Env): boolean {
  return stream.isTTY === true && !env.NO_COLOR;
}

/** --lock-stale as the inspecting commands (status, show, unlock) judge it: WORKER_LOCK_STALE or the default. */
export function lockStaleSetting(flagValue: string | undefined, env: Env): number {
  return durationSetting('--lock-stale', flagValue, env, 'WORKER_LOCK_STALE', DEFAULTS.lockStale, 2000);
}
