import { readFileSync, rmdirSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import { WorkerError, ioError } from '../errors.js';
import { goneFromThisHost } from '../lock/processes.js';

/**
 * The queue-wide lock (queue/queue.lock, made by proper-lockfile), held while task definitions change
 * (add, clean), for compactions, retries, cancels and takeovers.
 *
 * It is never taken from a live holder: a holder on this host counts as stale only once its process is
 * gone, however long it stalls (a long synchronous rewrite, SIGSTOP, a suspended laptop), since a stalled
 * holder would go on to write over what the taker wrote meanwhile. queue/queue.lock.owner names the
 * holder, with the identity of the lock folder it made. A holder that cannot be checked (another host,
 * or no name yet) counts as stale once the lock was not refreshed for QUEUE_LOCK_STALE_MS. And a holder
 * checks, right before it writes, that the lock folder is still the one it made.
 */
const QUEUE_LOCK_STALE_MS = 10_000;
/** proper-lockfile never judges staleness itself (see takeoverReason): its own threshold is out of reach. */
const NEVER_STALE_MS = 365 * 86_400_000;
const REFRESH_MS = 2_000;

/** How long a change waits for the queue-wide lock before it gives up. */
const QUEUE_LOCK_WAIT_MS = 30_000;

const HOST = hostname();

interface LockIdentity {
  ino: number;
  birthtimeMs: number;
}

interface Owner extends LockIdentity {
  pid: number;
  host: string;
}

function identityOf(lockPath: string): LockIdentity | undefined {
  try {
    const info = statSync(lockPath);
    return { ino: info.ino, birthtimeMs: info.birthtimeMs };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError('read', lockPath, error);
  }
}

const sameLock = (a: LockIdentity | undefined, b: LockIdentity | undefined) => a !== undefined && b !== undefined && a.ino === b.ino && a.birthtimeMs === b.birthtimeMs;

function readOwner(ownerFile: string): Owner | undefined {
  try {
    const owner = JSON.parse(readFileSync(ownerFile, 'utf8')) as Partial<Owner>;
    if (typeof owner.pid !== 'number' || typeof owner.host !== 'string' || typeof owner.ino !== 'number' || typeof owner.birthtimeMs !== 'number') return undefined;
    return owner as Owner;
  } catch {
    return undefined;
  }
}

/** Why the lock may be taken from its holder now, or null while it must be waited for. */
function takeoverReason(lockPath: string, now: number): { why: string; lock: LockIdentity } | { wait: string } | null {
  const lock = identityOf(lockPath);
  if (lock === undefined) return null; // released meanwhile: try again at once
  const owner = readOwner(`${lockPath}.owner`);
  if (owner !== undefined && sameLock(owner, lock) && owner.host === HOST) {
    return goneFromThisHost(owner, HOST) ? { why: `its holder (pid ${owner.pid}) is gone`, lock } : { wait: `pid ${owner.pid}` };
  }
  let mtimeMs: number;
  try {
    mtimeMs = statSync(lockPath).mtimeMs;
  } catch {
    return null;
  }
  const age = now - mtimeMs;
  if (age > QUEUE_LOCK_STALE_MS) return { why: `it was not refreshed for ${Math.round(age / 1000)} s`, lock };
  return { wait: owner !== undefined && sameLock(owner, lock) ? `pid ${owner.pid} on ${owner.host}` : 'a process that is taking it' };
}

/** Waits for the lock while a live holder has it; takes it from a gone or (where that cannot be checked) stale one. */
async function acquire(lockPath: string, onCompromised: (error: Error) => void): Promise<{ release: () => Promise<void>; lock: LockIdentity }> {
  const deadline = Date.now() + QUEUE_LOCK_WAIT_MS;
  let holder = 'another command';
  for (let wait = 2; ; wait = Math.min(100, wait * 1.5)) {
    try {
      const release = await lockfile.lock(lockPath, {
        lockfilePath: lockPath,
        realpath: false,
        stale: NEVER_STALE_MS,
        update: REFRESH_MS,
        retries: 0,
        // The default handler throws from a timer and kills the process; we refuse to write instead.
        onCompromised,
      });
      const lock = identityOf(lockPath);
      if (lock === undefined) throw new Error('the lock folder vanished right after it was made');
      try {
        writeFileAtomic.sync(`${lockPath}.owner`, JSON.stringify({ pid: process.pid, host: HOST, ...lock }), { fsync: false });
      } catch (error) {
        await release().catch(() => undefined);
        throw error;
      }
      return { release, lock };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw ioError('lock', lockPath, error);
    }
    const verdict = takeoverReason(lockPath, Date.now());
    if (verdict !== null && 'why' in verdict) {
      // Removed only if it is still the folder judged: another waiter may have taken it over just now.
      if (sameLock(identityOf(lockPath), verdict.lock)) {
        try {
          rmdirSync(lockPath);
        } catch {
          // taken or removed meanwhile: the next attempt decides
        }
      }
      continue;
    }
    if (verdict !== null) holder = verdict.wait;
    if (Date.now() > deadline) {
      throw new WorkerError('IO', `the queue is busy: ${lockPath} has been held by ${holder} for more than ${QUEUE_LOCK_WAIT_MS / 1000} s`, {
        hint: 'another command is still changing the queue (a long add or clean, or a stopped process); nothing was written: run the command again',
      });
    }
    await new Promise((resolve) => setTimeout(resolve, wait * (0.5 + Math.random())));
  }
}

/**
 * Runs `critical` while holding the queue-wide lock, waiting up to about 30 s for it. Only changes that
 * read, then rewrite shared state take it; claims and outcomes never do. `assertHeld`, called right before
 * each write, throws when the lock is no longer this process's: nothing is written then.
 */
export async function withQueueLock<T>(lockPath: string, critical: (assertHeld: () => void) => Promise<T>): Promise<T> {
  let compromised: Error | undefined;
  const { release, lock } = await acquire(lockPath, (error) => {
    compromised = error;
  });
  const assertHeld = () => {
    if (!compromised && !sameLock(identityOf(lockPath), lock)) compromised = new Error('the lock folder was removed or replaced by another process');
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
