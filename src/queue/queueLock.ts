import lockfile from 'proper-lockfile';
import { WorkerError, ioError } from '../errors.js';

/** Held only while task definitions change (add, clean): milliseconds, so a short stale time is safe. */
const QUEUE_LOCK_STALE_MS = 10_000;

/** How long a change waits for the queue-wide lock before it gives up. */
const QUEUE_LOCK_WAIT_MS = 30_000;

/**
 * Waits for the lock while another holder has it (ELOCKED), and only then: proper-lockfile's own
 * `retries` would also retry a read-only or full disk for the whole wait.
 */
async function acquire(lockPath: string, onCompromised: (error: Error) => void): Promise<() => Promise<void>> {
  const deadline = Date.now() + QUEUE_LOCK_WAIT_MS;
  for (let wait = 2; ; wait = Math.min(100, wait * 1.5)) {
    try {
      return await lockfile.lock(lockPath, {
        lockfilePath: lockPath,
        realpath: false,
        stale: QUEUE_LOCK_STALE_MS,
        retries: 0,
        // The default handler throws from a timer and kills the process; we refuse to write instead.
        onCompromised,
      });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw ioError('lock', lockPath, error);
      if (Date.now() > deadline) {
        throw new WorkerError('IO', `the queue is busy: ${lockPath} has been held for more than ${QUEUE_LOCK_WAIT_MS / 1000} s`, {
          hint: 'another command is still changing the queue; run the command again. A lock whose holder died goes stale by itself within 10 s',
          cause: error,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, wait * (0.5 + Math.random())));
    }
  }
}

/**
 * Runs `critical` while holding the queue-wide lock, waiting up to about 30 s for it. Only changes that
 * read, then rewrite shared state take it; claims and outcomes never do.
 */
export async function withQueueLock<T>(lockPath: string, critical: (assertHeld: () => void) => Promise<T>): Promise<T> {
  let compromised: Error | undefined;
  const release = await acquire(lockPath, (error) => {
    compromised = error;
  });
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
