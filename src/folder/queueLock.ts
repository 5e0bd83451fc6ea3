import { WorkerError } from '../errors.js';
import { tryNamedLock } from './lock/namedLock.js';

/**
 * The queue-wide lock (queue/queue.lock), held while task definitions change (add, clean), for
 * compactions, retries, cancels and takeovers. A named lock (see namedLock.ts): never taken from a live
 * holder on this host, however long it stalls, since a stalled holder would go on to write over what the
 * taker wrote meanwhile; a holder that cannot be checked (another host) goes stale after QUEUE_LOCK_STALE_MS.
 */
const QUEUE_LOCK_STALE_MS = 10_000;

/** How long a change waits for the queue-wide lock before it gives up. */
const QUEUE_LOCK_WAIT_MS = 30_000;

/**
 * Runs `critical` while holding the queue-wide lock, waiting up to about 30 s for it. Only changes that
 * read, then rewrite shared state take it; claims and outcomes never do. `assertHeld`, called right before
 * each write, throws when the lock is no longer this process's: nothing is written then.
 */
export async function withQueueLock<T>(lockPath: string, critical: (assertHeld: () => void) => Promise<T>): Promise<T> {
  const deadline = Date.now() + QUEUE_LOCK_WAIT_MS;
  for (let wait = 2; ; wait = Math.min(100, wait * 1.5)) {
    const attempt = await tryNamedLock(lockPath, QUEUE_LOCK_STALE_MS);
    if ('lock' in attempt) {
      const { lock } = attempt;
      const assertHeld = () => {
        if (!lock.stillHeld()) {
          throw new WorkerError('IO', `lost the queue lock ${lockPath} while changing the queue: it was taken or removed by another process`, {
            hint: 'nothing was written; run the command again',
          });
        }
      };
      try {
        return await critical(assertHeld);
      } finally {
        await lock.release();
      }
    }
    if (Date.now() > deadline) {
      throw new WorkerError('IO', `the queue is busy: ${lockPath} has been held by ${attempt.heldBy} for more than ${QUEUE_LOCK_WAIT_MS / 1000} s`, {
        hint: 'another command is still changing the queue (a long add or clean, or a stopped process); nothing was written: run the command again',
      });
    }
    await new Promise((resolve) => setTimeout(resolve, wait * (0.5 + Math.random())));
  }
}
