import { join, resolve } from 'node:path';

/** Where a queue keeps its files, below one root folder (--dir). */
export interface QueuePaths {
  root: string;
  queueDir: string;
  /** Task definitions: written whole, atomically, only under the queue-wide lock. */
  queueFile: string;
  /** State events, appended only. */
  logFile: string;
  /** The queue-wide lock (a folder, proper-lockfile), held only while task definitions change. */
  queueLock: string;
  locksDir: string;
}

export function queuePaths(root: string): QueuePaths {
  const absolute = resolve(root);
  const queueDir = join(absolute, 'queue');
  const locksDir = join(absolute, 'locks');
  return {
    root: absolute,
    queueDir,
    queueFile: join(queueDir, 'queue.json'),
    logFile: join(queueDir, 'execution-log.jsonl'),
    queueLock: join(queueDir, 'queue.lock'),
    locksDir,
  };
}

/** The per-task lock folder and its owner record. Safe because task ids are restricted (schema.ts). */
export function taskLockPaths(paths: QueuePaths, taskId: string): { lock: string; owner: string } {
  return {
    lock: join(paths.locksDir, `${taskId}.lock`),
    owner: join(paths.locksDir, `${taskId}.owner.json`),
  };
}
