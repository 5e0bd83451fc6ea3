import * as fs from 'node:fs';
import lockfile from 'proper-lockfile';
import { ioError } from '../errors.js';
import { taskLockPaths, type QueuePaths } from '../queue/paths.js';
import { HolderRegister, identityOf, Registers, safeName, type LockIdentity, type LockOwner } from './holderRegister.js';
import { makeFolder } from './makeFolder.js';
import { LockSlots, pruneSlots, removeLockSync } from './lockSlots.js';

export type { LockOwner } from './holderRegister.js';

export interface LockInspection {
  /** Whether locks/<shard>/<task-id>.lock exists. */
  held: boolean;
  /** Milliseconds since its holder last refreshed it. */
  ageMs: number | null;
  /** Which lock it is: a later one under the same name, made by another process, differs. */
  identity: LockIdentity | null;
}

export { Registers } from './holderRegister.js';

/** A lock this process holds. Released once; after a compromise, releasing is a no-op. */
export interface HeldLock {
  release(): Promise<void>;
}

/**
 * The per-task claim lock, taken and refreshed (utimes) by proper-lockfile while the attempt runs: a hard
 * link to one of the worker's slot files (lockSlots.ts) where proper-lockfile would make a folder. A
 * worker killed outright leaves it behind; it is then stale after `staleMs`, or at once when its owner's
 * pid is gone on this host (see the worker's takeover).
 */
export class TaskLocks {
  private readonly lockFs: typeof fs;
  private readonly shardsMade = new Set<string>();
  private register: HolderRegister | undefined;
  private slots: LockSlots | undefined;
  /** The slot each lock being taken is to be made from, by lock path. */
  private readonly slotFor = new Map<string, string>();
  /** The last look proper-lockfile took at a lock. */
  private lastStat: { path: string; stats: fs.Stats } | undefined;

  constructor(private readonly paths: QueuePaths, private readonly staleMs: number, onRefresh: (lockPath: string) => void = () => undefined) {
    const makeLock = (lockPath: string) => {
      const slot = this.slotFor.get(lockPath);
      if (slot === undefined) throw new Error(`no slot was taken for ${lockPath}`);
      this.slots!.lock(slot, lockPath);
    };
    this.lockFs = syncBackedFs(makeLock, onRefresh, (path, stats) => {
      this.lastStat = { path, stats };
    });
  }

  /**
   * Takes the lock, or returns null when another holder has it. `onCompromised` is called (instead of
   * proper-lockfile's default, which throws from a timer and kills the process) when the lock is lost.
   */
  async tryAcquire(taskId: string, owner: LockOwner, onCompromised: (error: Error) => void): Promise<HeldLock | null> {
    const files = taskLockPaths(this.paths, taskId);
    if (!this.shardsMade.has(files.shardDir)) {
      makeFolder(files.shardDir);
      this.shardsMade.add(files.shardDir);
    }
    const slots = (this.slots ??= new LockSlots(this.paths, owner));
    const slot = slots.take();
    this.slotFor.set(files.lock, slot);
    let releaseLock: () => Promise<void>;
    let compromised = false;
    try {
      releaseLock = await lockfile.lock(files.lock, {
        lockfilePath: files.lock,
        realpath: false,
        stale: this.staleMs,
        update: Math.max(1000, Math.floor(this.staleMs / 3)),
        retries: 0,
        fs: this.lockFs,
        onCompromised: (error) => {
          compromised = true;
          onCompromised(error);
        },
      });
    } catch (error) {
      // Not made from the slot: it may back the next lock.
      slots.giveBack(slot);
      if ((error as NodeJS.ErrnoException).code === 'ELOCKED') return null;
      throw ioError('lock', files.lock, error);
    } finally {
      this.slotFor.delete(files.lock);
    }
    /**
     * A slot backs a new lock only once its lock is surely gone. After a compromise (another process took
     * the lock over) or a failed removal, it is left alone until the process closes its slots.
     */
    const unlock = async () => {
      if (compromised) return;
      try {
        await releaseLock();
        slots.giveBack(slot);
      } catch {
        // The lock may still be there: judged by its age, like any lock of a process that stopped refreshing it.
      }
    };
    const register = (this.register ??= new HolderRegister(this.paths, { worker: owner.worker, pid: owner.pid, host: owner.host }));
    try {
      // proper-lockfile stats the lock right after making it: that look serves, instead of another stat.
      const made = this.lastStat?.path === files.lock ? this.lastStat.stats : fs.statSync(files.lock);
      register.add(taskId, { token: owner.token, claimed_at: owner.claimed_at, lock: identityOf(made) });
    } catch (error) {
      await unlock();
      throw ioError('register', files.lock, error);
    }
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        // The entry goes only once the lock is gone: until then it tells others the lock is in use.
        await unlock();
        try {
          register.remove(taskId);
        } catch {
          // An entry that outlives its lock names a lock that no longer exists: it vouches for nothing.
        }
      },
    };
  }

  /** This process holds no more locks: its register and slots go. */
  close(): void {
    this.register?.close();
    this.slots?.close();
  }

  inspect(taskId: string, now: number): LockInspection {
    const files = taskLockPaths(this.paths, taskId);
    try {
      const stats = fs.statSync(files.lock);
      return { held: true, ageMs: now - stats.mtimeMs, identity: identityOf(stats) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('inspect', files.lock, error);
      return { held: false, ageMs: null, identity: null };
    }
  }

  /** The registers of the worker processes as they are now, read once for any number of looks. */
  registers(): Registers {
    return Registers.read(this.paths);
  }

  /**
   * Who made a lock, from `registers`: null when no register names that very lock (its maker died
   * before writing its entry, or the lock was made again since).
   */
  ownerOf(taskId: string, inspection: LockInspection, registers: Registers): LockOwner | null {
    if (!inspection.held) return null;
    return registers.ownersOf(taskId).find((named) => named.lock === inspection.identity)?.owner ?? null;
  }

  /**
   * Removes, of the `registers` read, those of processes that are gone from this host and no longer vouch
   * for any lock, and those not written to for `keptMs` (processes on other hosts, which cannot be checked
   * from here); and the lock slots of processes gone or unused as long.
   */
  pruneRegisters(registers: Registers, host: string, now: number, keptMs: number): void {
    for (const { file, register, modifiedAtMs } of registers.files) {
      if (file === this.register?.file) continue;
      const goneAndDone = register !== null && goneFromThisHost(register, host) && register.locks.every((entry) => this.inspect(entry.task, now).identity !== entry.lock);
      if (goneAndDone || now - modifiedAtMs > keptMs) removeQuietly(() => fs.unlinkSync(file));
    }
    pruneSlots(this.paths, (slotHost, pid) => slotHost === safeName(host) && goneFromThisHost({ host, pid }, host), now, keptMs);
  }

  /** Ids of the tasks that have a lock folder now. Reads every shard: for start-up and idle checks only. */
  heldTaskIds(): string[] {
    const ids: string[] = [];
    let shards: string[];
    try {
      shards = fs.readdirSync(this.paths.locksDir).filter((name) => /^[0-9a-f]{2}$/.test(name));
    } catch (error) {
      throw ioError('list', this.paths.locksDir, error);
    }
    for (const shard of shards) {
      for (const name of fs.readdirSync(`${this.paths.locksDir}/${shard}`)) {
        if (name.endsWith('.lock')) ids.push(name.slice(0, -'.lock'.length));
      }
    }
    return ids;
  }

  isStale(inspection: LockInspection): boolean {
    return inspection.ageMs !== null && inspection.ageMs > this.staleMs;
  }

  /** Removes a dead or stale holder's lock. Callers hold the queue-wide lock, so removals never race. */
  forceRemove(taskId: string): void {
    const files = taskLockPaths(this.paths, taskId);
    try {
      removeLockSync(files.lock);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('remove', files.lock, error);
    }
  }
}

function removeQuietly(remove: () => void): void {
  try {
    remove();
  } catch {
    // already gone
  }
}

/**
 * proper-lockfile takes a callback-style fs. Its `mkdir` makes the lock from a slot, its `rmdir` removes
 * it. Taking a lock is made synchronous: it is a handful of tiny metadata operations, and a thread-pool
 * round trip for each costs more than the call itself. Refreshes (utimes) are reported, for --verbose.
 */
function syncBackedFs(makeLock: (lockPath: string) => void, onRefresh: (lockPath: string) => void, onStat: (path: string, stats: fs.Stats) => void): typeof fs {
  const callbackStyle = <A extends unknown[], R>(call: (...args: A) => R) => (...args: [...A, (error: Error | null, result?: R) => void]) => {
    const callback = args.pop() as (error: Error | null, result?: R) => void;
    let result: R;
    try {
      result = call(...(args as unknown as A));
    } catch (error) {
      callback(error as Error);
      return;
    }
    callback(null, result);
  };
  return {
    ...fs,
    mkdir: callbackStyle((path: fs.PathLike) => makeLock(String(path))),
    stat: callbackStyle((path: fs.PathLike) => {
      const stats = fs.statSync(path);
      onStat(String(path), stats);
      return stats;
    }),
    // Removal too: unlinking a link is a directory entry; done by the thread pool, it cost the worker's
    // thread more in the hand-over than the call (bench/ab.mjs: CPU per task 1.57 -> 1.46 ms).
    rmdir: callbackStyle((path: fs.PathLike) => removeLockSync(String(path))),
    utimes: callbackStyle((path: fs.PathLike, atime: fs.TimeLike, mtime: fs.TimeLike) => {
      onRefresh(String(path));
      fs.utimesSync(path, atime, mtime);
    }),
  } as unknown as typeof fs;
}

/**
 * Whether the process that wrote a claim, lock register or heartbeat ran on this host and is gone.
 * False when it runs (EPERM: under another user) and when it ran elsewhere: that cannot be known from here.
 */
export function goneFromThisHost(owner: { host: string; pid: number }, host: string): boolean {
  if (owner.host !== host) return false;
  try {
    process.kill(owner.pid, 0);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code !== 'EPERM';
  }
}
