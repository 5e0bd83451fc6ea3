import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative, resolve, sep } from 'node:path';
import { describe, inject, it } from 'vitest';

export const BIN = resolve(import.meta.dirname, '../../bin/worker.cjs');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Environment without the caller's WORKER_* settings, so tests see only what they give. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('WORKER_')) env[key] = value;
  return { ...env, NO_COLOR: '1', ...extra };
}

/** Runs the built CLI as a new user would: a real process, its exit code, stdout and stderr. */
export function runCli(args: string[], options: { env?: Record<string, string>; input?: string; cwd?: string } = {}): Promise<CliResult> {
  const child = startCli(args, options);
  if (options.input !== undefined) child.process.stdin?.end(options.input);
  else child.process.stdin?.end();
  return child.exited;
}

export interface RunningCli {
  process: ChildProcess;
  exited: Promise<CliResult>;
  /** stdout so far */
  stdout: () => string;
  /** stderr so far */
  stderr: () => string;
  /** Resolves when stderr has a line matching `pattern`. */
  waitForLog: (pattern: RegExp, timeoutMs?: number) => Promise<string>;
  /** Resolves when stdout has a line matching `pattern`. */
  waitForOutput: (pattern: RegExp, timeoutMs?: number) => Promise<string>;
}

/** The tests run on a database (the `postgres` project of vitest.config.ts), not on folders. */
export const onDatabase = process.env.WORKER_TEST_STORE === 'postgres';

/** The test database's URL (the `postgres` project only). */
export function databaseUrl(): string {
  return inject('databaseUrl');
}

/** The queue of the test database that a test's folder stands for: one per test, as its folder is. */
export function queueFor(dir: string): string {
  return relative(tmpdir(), resolve(dir))
    .replaceAll(sep, '.')
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(-100);
}

/**
 * On the database, every `--dir <folder>` of a test becomes that database and a queue of its own: the
 * same tests, the same commands, the other store.
 */
export function placeArgs(args: readonly string[]): string[] {
  // A test of the database that needs a folder too (a copy from one) says so with --dir-as-given first.
  if (args[0] === '--dir-as-given') return args.slice(1);
  if (!onDatabase) return [...args];
  const mapped: string[] = [];
  for (let i = 0; i < args.length; i += 1) {
    if (args[i] === '--dir' && i + 1 < args.length) {
      mapped.push('--database-url', databaseUrl(), '--queue', queueFor(args[i + 1]!));
      i += 1;
    } else mapped.push(args[i]!);
  }
  return mapped;
}

/** Registers a test only on the folder store: it looks at the folder's files themselves. */
export const folderOnly: typeof it = ((...args: Parameters<typeof it>) => (onDatabase ? undefined : it(...args))) as typeof it;
/** Registers tests only on the folder store: they are of the folder's files themselves. */
export const describeFolder: typeof describe = ((...args: Parameters<typeof describe>) => (onDatabase ? undefined : describe(...args))) as typeof describe;

/** `prefix`: a command the CLI runs under, e.g. strace with its arguments. */
export function startCli(args: string[], options: { env?: Record<string, string>; cwd?: string; prefix?: string[] } = {}): RunningCli {
  const [command, ...commandArgs] = [...(options.prefix ?? []), process.execPath, BIN, ...placeArgs(args)];
  const child = spawn(command!, commandArgs, { env: cleanEnv(options.env), cwd: options.cwd, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const listeners = new Set<() => void>();
  child.stdout!.on('data', (chunk) => {
    stdout += chunk;
    for (const listener of listeners) listener();
  });
  child.stderr!.on('data', (chunk) => {
    stderr += chunk;
    for (const listener of listeners) listener();
  });
  const exited = new Promise<CliResult>((resolveExit) => {
    child.on('close', (code, signal) => resolveExit({ code, signal, stdout, stderr }));
  });
  const waitFor = (stream: () => string, pattern: RegExp, timeoutMs = 20_000) =>
    new Promise<string>((resolveWait, rejectWait) => {
      const check = () => {
        const line = stream()
          .split('\n')
          .find((candidate) => pattern.test(candidate));
        if (line === undefined) return;
        listeners.delete(check);
        clearTimeout(timer);
        resolveWait(line);
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        rejectWait(new Error(`no line matching ${pattern} within ${timeoutMs} ms; stdout:\n${stdout}\nstderr:\n${stderr}`));
      }, timeoutMs);
      listeners.add(check);
      check();
    });
  return {
    process: child,
    exited,
    stdout: () => stdout,
    stderr: () => stderr,
    waitForLog: (pattern, timeoutMs) => waitFor(() => stderr, pattern, timeoutMs),
    waitForOutput: (pattern, timeoutMs) => waitFor(() => stdout, pattern, timeoutMs),
  };
}

export async function withTempDir<T>(body: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'worker-test-'));
  try {
    return await body(dir);
  } finally {
    // A process the test stopped may still be writing its last files (a heartbeat, its worker id's lock).
    await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  }
}
