import { mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import { ioError } from '../../errors.js';
import { goneFromThisHost } from './processes.js';
import { lockFileSystem } from './lockFileSystem.js';

/**
 * A lock that names its holder: a folder made by proper-lockfile (refreshed while held) and, beside it,
 * `<lock>.owner` with the holder's pid and host and the identity of the folder it made. For locks held
 * for a whole command or process (the queue-wide lock, a worker's id), where a holder that stalls must
 * not lose its lock to another:
 * - a holder alive on this host is never taken over, however long it stalls (a long synchronous rewrite,
 *   SIGSTOP, a suspended laptop);
 * - one that is gone from this host is taken over at once;
 * - one that cannot be checked (another host, or a folder with no owner named yet) goes once it was not
 *   refreshed for `staleMs`.
 * proper-lockfile does not judge staleness itself: its own threshold is out of reach.
 */
const NEVER_STALE_MS = 365 * 86_400_000;
const HOST = hostname();

interface LockIdentity {
  ino: number;
  birthtimeMs: number;
}

interface Owner extends LockIdentity {
  pid: number;
  host: string;
}

export interface NamedLock {
  /** Whether the lock folder is still the one this process made, and was not found compromised. */
  stillHeld(): boolean;
  release(): Promise<void>;
}

/** Held, or who holds it (`pid 123 on host`; `named: false` for a process that is taking it and has not named itself yet). */
export type LockAttempt = { lock: NamedLock } | { heldBy: string; named: boolean };

const ownerFile = (lockPath: string) => `${lockPath}.owner`;

/** Folders, made and refreshed synchronously (see lockFileSystem). */
const NAMED_LOCK_FS = lockFileSystem({ make: (lockPath) => mkdirSync(lockPath), remove: (lockPath) => rmdirSync(lockPath) });

function identityOf(lockPath: string): LockIdentity | undefined {
  try {
    const info = statSync(lockPath);
    return { ino: info.ino, birthtimeMs: info.birthtimeMs };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError('read', lockPath, error);
  }
}

const sameLock = (a: LockIdentity | undefined, b: LockIdentity | undefined) =>
  a !== undefined && b !== undefined && a.ino === b.ino && a.birthtimeMs === b.birthtimeMs;

function readOwner(lockPath: string): Owner | undefined {
  try {
    const owner = JSON.parse(readFileSync(ownerFile(lockPath), 'utf8')) as Partial<Owner>;
    if (typeof owner.pid !== 'number' || typeof owner.host !== 'string' || typeof owner.ino !== 'number' || typeof owner.birthtimeMs !== 'number')
      return undefined;
    return owner as Owner;
  } catch {
    return undefined;
  }
}

/** Why the lock may be taken from its holder now, who holds it while it may not, or null once it is gone. */
function judge(lockPath: string, staleMs: number): { takeover: LockIdentity } | { heldBy: string; named: boolean } | null {
  const lock = identityOf(lockPath);
  if (lock === undefined) return null;
  const owner = readOwner(lockPath);
  const named = owner !== undefined && sameLock(owner, lock) ? owner : undefined;
  if (named !== undefined && named.host === HOST)
    return goneFromThisHost(named, HOST) ? { takeover: lock } : { heldBy: `pid ${named.pid} on ${named.host}`, named: true };
  let mtimeMs: number;
  try {
    mtimeMs = statSync(lockPath).mtimeMs;
  } catch {
    return null;
  }
  if (Date.now() - mtimeMs > staleMs) return { takeover: lock };
  return named !== undefined ? { heldBy: `pid ${named.pid} on ${named.host}`, named: true } : { heldBy: 'a process that is taking it', named: false };
}

/** Removes a lock judged abandoned, only if it is still the folder judged: another process may have taken it just now. */
function removeAbandoned(lockPath: string, lock: LockIdentity): void {
  if (!sameLock(identityOf(lockPath), lock)) return;
  rmSync(ownerFile(lockPath), { force: true });
  try {
    rmdirSync(lockPath);
  } catch {
    // taken or removed meanwhile: the next attempt decides
  }
}

/**
 * Takes the lock if it is free or abandoned; otherwise says who holds it. `onCompromised` is called when
 * proper-lockfile finds it taken from this process (it never throws from its timer then).
 */
export async function tryNamedLock(lockPath: string, staleMs: number, onCompromised: (error: Error) => void = () => undefined): Promise<LockAttempt> {
  let compromised = false;
  let release: () => Promise<void>;
  for (;;) {
    try {
      release = await lockfile.lock(lockPath, {
        lockfilePath: lockPath,
        realpath: false,
        stale: NEVER_STALE_MS,
        update: Math.max(1000, Math.min(5000, Math.floor(staleMs / 5))),
        retries: 0,
        fs: NAMED_LOCK_FS,
        onCompromised: (error) => {
          compromised = true;
          onCompromised(error);
        },
      });
      break;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw ioError('lock', lockPath, error);
    }
    const verdict = judge(lockPath, staleMs);
    if (verdict === null) continue;
    if ('heldBy' in verdict) return verdict;
    removeAbandoned(lockPath, verdict.takeover);
  }
  const made = identityOf(lockPath);
  try {
    if (made === undefined) throw new Error('the lock folder vanished right after it was made');
    writeFileAtomic.sync(ownerFile(lockPath), JSON.stringify({ pid: process.pid, host: HOST, ...made }), { fsync: false });
  } catch (error) {
    await release().catch(() => undefined);
    throw ioError('lock', lockPath, error);
  }
  return {
    lock: {
      stillHeld: () => !compromised && sameLock(identityOf(lockPath), made),
      release: async () => {
        // The name first: an owner file never names a process that no longer holds the lock.
        rmSync(ownerFile(lockPath), { force: true });
        if (!compromised) await release().catch(() => undefined);
      },
    },
  };
}

/** Removes the abandoned locks of a folder (those of gone holders, or unrefreshed and unnamed): for locks that may never be tried again. */
export function removeAbandonedLocks(dir: string, staleMs: number): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.endsWith('.lock')) continue;
    const lockPath = join(dir, name);
    const verdict = judge(lockPath, staleMs);
    if (verdict !== null && 'takeover' in verdict) removeAbandoned(lockPath, verdict.takeover);
  }
}
