import lockfile from 'proper-lockfile';
import { WorkerError, ioError } from '../errors.js';

/** Held only while task definitions change (add, clean): milliseconds, so a short stale time is safe. */
const QUEUE_LOCK_STALE_MS = 10_000;

/**
 * Runs `critical` while holding the queue-wide lock, waiting up to about 30 s for it. Only changes that
 * read, then rewrite shared state take it; claims and outcomes never do.
 */
export async function withQueueLock<T>(lockPath: string, critical: (assertHeld: () => void) => Promise<T>): Promise<T> {
  let compromised: Error | undefined;
  let release: () => Promise<void>;
  try {
    release = await lockfile.lock(lockPath, {
      lockfilePath: lockPath,
      realpath: false,
      stale: QUEUE_LOCK_STALE_MS,
      retries: { retries: 300, factor: 1.2, minTimeout: 2, maxTimeout: 100, randomize: true },
      // The default handler throws from a timer and kills the process; we refuse to write instead.
      onCompromised: (error) => {
        compromised = error;
      },
    });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOCKED') {
      throw new WorkerError('IO', `the queue is busy: ${lockPath} has been held for too long`, {
        hint: 'another `worker add` is still writing; run the command again. If no other command runs, the lock goes stale by itself within 10 s',
        cause: error,
      });
    }
    throw ioError('lock', lockPath, error);
  }
  const assertHeld = () => {
    if (compromised) {
      throw new WorkerError('IO', `lost the queue lock ${lockPath} while changing the queue: ${compromised.message}`, {
        hint: 'nothing was written; run the command again',
      });
    }
  };
  try {
    return await critical(assertHeld);
  } finally {
    if (!compromised) await release().catch(() => undefined);
  }
}
