import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { WorkerError } from './errors.js';
import { parseDuration } from './core/duration.js';
import { INTENSITIES, type Intensity } from './types.js';
import type { TaskDefaults } from './core/newTasks.js';

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

export function durationSetting(flag: string, flagValue: string | undefined, env: Env, envName: string, fallback: string, minimumMs = 1): number {
  const text = pick(flagValue, env, envName) ?? fallback;
  const ms = parseDuration(text);
  if (ms === undefined || ms < minimumMs) {
    throw configError(settingName(flag, envName), `a duration like 500ms, 2s, 5m or plain seconds${minimumMs > 1 ? ` of at least ${minimumMs}ms` : ''}`, text);
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
  return `w-${randomBytes(2).toString('hex')}`;
}

export const HOST = hostname();
