import { join, resolve } from 'node:path';

/** Where a queue keeps its files, below one root folder (--dir). */
export interface QueuePaths {
  root: string;
  queueDir: string;
  /** Task definitions: written whole, atomically, only under the queue-wide lock. */
  queueFile: string;
  /** State events, appended only. */
  logFile: string;
  /** Where `add` last found both files sound (a cache, see checkedRecord.ts). */
  checkedFile: string;
  /** The queue's identity, part of every idempotency key (see queueIdentity.ts). */
  identityFile: string;
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
    checkedFile: join(queueDir, 'checked.json'),
    identityFile: join(queueDir, 'queue-id'),
    queueLock: join(queueDir, 'queue.lock'),
    locksDir,
  };
}

/**
 * The per-task lock: locks/<shard>/<task-id>.lock (a hard link to a slot of its worker, which names it:
 * see lockSlots.ts), where the shard is two hex digits of a hash of the id. Creating and removing entries
 * in one folder serialises on that folder: with 256 shards, workers that claim at the same moment rarely
 * meet, and a claim's file-system work halves with 4 workers (CHANGELOG.md). Task ids
 * are restricted (schema.ts), so they are safe as file names.
 */
export function taskLockPaths(paths: QueuePaths, taskId: string): { shardDir: string; lock: string } {
  const shardDir = join(paths.locksDir, lockShard(taskId));
  return { shardDir, lock: join(shardDir, `${taskId}.lock`) };
}

/** FNV-1a of the id, folded to two hex digits. */
export function lockShard(taskId: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < taskId.length; i += 1) {
    hash ^= taskId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193);
  }
  return ((hash ^ (hash >>> 8) ^ (hash >>> 16) ^ (hash >>> 24)) & 0xff).toString(16).padStart(2, '0');
}
