import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { WorkerError, ioError } from '../errors.js';
import { removeAbandonedLocks, tryNamedLock } from './lock/namedLock.js';
import type { QueuePaths } from './paths.js';
import { heartbeatDir } from './heartbeat.js';

/** How long a holder is given to write its name into a lock it just made. */
const NAMING_GRACE_MS = 1000;

/**
 * One live worker per worker id: two with one id (an `export WORKER_ID` in a shell profile) would share a
 * heartbeat and their logs and claims could not be told apart. The id is held as a named lock (see
 * namedLock.ts), locks/workers/<id>.lock, so one left by a killed worker on this host is free at once.
 * Returns its release.
 */
export async function holdWorkerId(paths: QueuePaths, workerId: string, staleMs: number): Promise<() => Promise<void>> {
  const dir = heartbeatDir(paths);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    throw ioError('create the folder', dir, error);
  }
  // Ids of killed workers that no worker may ever take again would stay.
  removeAbandonedLocks(dir, staleMs);
  const giveUpAt = Date.now() + NAMING_GRACE_MS;
  for (;;) {
    const attempt = await tryNamedLock(join(dir, `${workerId}.lock`), staleMs);
    if ('lock' in attempt) return () => attempt.lock.release();
    // A worker that is starting names itself within moments; one named is refused at once.
    if (!attempt.named && Date.now() < giveUpAt) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      continue;
    }
    throw new WorkerError('CONFIG', `worker id "${workerId}" is in use by a live worker (${attempt.heldBy})`, {
      hint: 'give each worker its own --worker-id, or none for a random one (is WORKER_ID set in your shell profile?)',
    });
  }
}
