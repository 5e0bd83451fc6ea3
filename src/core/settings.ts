import { WorkerError } from '../errors.js';
import { MAX_TIMER_MS, parseDuration } from './duration.js';

/** Environment variables as given to a command: process.env in the CLI, a plain object in tests. */
export type Env = Readonly<Record<string, string | undefined>>;

/** One setting as a user gives it: a flag's value, else an environment variable's (when it has one), else a default. */
export interface SettingSource<Fallback> {
  flag: string;
  value: string | undefined;
  env?: Env | undefined;
  envName?: string | undefined;
  fallback: Fallback;
}

/** Where a setting came from, for messages: `--timeout (or WORKER_API_TIMEOUT)`. */
export function settingName(source: Pick<SettingSource<unknown>, 'flag' | 'envName'>): string {
  return source.envName ? `${source.flag} (or ${source.envName})` : source.flag;
}

/** The flag's value, else the environment variable's; undefined when neither is given. */
export function givenValue(source: Omit<SettingSource<unknown>, 'fallback'>): string | undefined {
  if (source.value !== undefined) return source.value;
  return source.envName === undefined ? undefined : source.env?.[source.envName];
}

export function configError(setting: string, expected: string, got: string): WorkerError {
  return new WorkerError('CONFIG', `expected ${setting} to be ${expected}, got ${JSON.stringify(got)}`, {
    hint: `see \`worker --help\` for every setting and its default`,
  });
}

/**
 * A duration setting, at least `minimumMs` and at most `maximumMs`: by default what a timer can wait
 * (MAX_TIMER_MS), since every duration of a worker ends up in one; a longer one would fire at once.
 */
export function durationSetting(source: SettingSource<string> & { minimumMs?: number; maximumMs?: number }): number {
  const { minimumMs = 1, maximumMs = MAX_TIMER_MS } = source;
  const text = givenValue(source) ?? source.fallback;
  const ms = parseDuration(text);
  if (ms === undefined || ms < minimumMs || ms > maximumMs) {
    const at = [minimumMs > 1 ? `at least ${minimumMs}ms` : '', maximumMs === MAX_TIMER_MS ? 'at most 24d (the longest a timer can wait)' : '']
      .filter(Boolean)
      .join(' and ');
    throw configError(settingName(source), `a duration like 500ms, 2s, 5m or plain seconds${at ? ` of ${at}` : ''}`, text);
  }
  return ms;
}

export function integerSetting(source: SettingSource<number> & { minimum: number }): number {
  const text = givenValue(source);
  if (text === undefined) return source.fallback;
  if (!/^\s*\d+\s*$/.test(text) || Number(text) < source.minimum || !Number.isSafeInteger(Number(text))) {
    throw configError(settingName(source), `a whole number of ${source.minimum} or more`, text);
  }
  return Number(text);
}
