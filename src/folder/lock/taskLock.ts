import * as fs from 'node:fs';
import lockfile from 'proper-lockfile';
import { ioError } from '../../errors.js';
import { taskLockPaths, type QueuePaths } from '../paths.js';
import { makeFolder } from './makeFolder.js';
import { LockSlots, pruneSlots, readLockOwner, removeLockSync, type LockOwner } from './lockSlots.js';
import { lockFileSystem } from './lockFileSystem.js';

export type { LockOwner } from './lockSlots.js';

export interface LockInspection {
  /** Whether locks/<shard>/<task-id>.lock exists. */
  held: boolean;
  /** Milliseconds since its holder last refreshed it. */
  ageMs: number | null;
}

/** A lock this process holds. Released once; after a compromise, releasing is a no-op. */
export interface HeldLock {
  release(): Promise<void>;
}

/**
 * Looks at the per-task claim locks from outside: who made one, how fresh it is, and removes one whose
 * holder is gone (under the queue-wide lock). Takes none: see TaskLocks.
 */
export class LockInspector {
  constructor(
    private readonly paths: QueuePaths,
    private readonly staleMs: number,
  ) {}

  inspect(taskId: string, now: number): LockInspection {
    const files = taskLockPaths(this.paths, taskId);
    try {
      const stats = fs.statSync(files.lock);
      return { held: true, ageMs: now - stats.mtimeMs };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('inspect', files.lock, error);
      return { held: false, ageMs: null };
    }
  }

  /**
   * Who made a task's lock, read from the lock itself (its slot): null when there is none, or when it is
   * a folder (made where the file system has no hard links, or by an earlier version), which names nobody.
   */
  ownerOf(taskId: string): LockOwner | null {
    return readLockOwner(taskLockPaths(this.paths, taskId).lock);
  }

  /** Removes the slots of processes gone from this host, and those unused for `keptMs` (other hosts). */
  pruneSlots(host: string, now: number, keptMs: number): void {
    pruneSlots(this.paths, host, now, keptMs);
  }

  /** Ids of the tasks that have a lock now. Reads every shard: for start-up and idle checks only. */
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

/**
 * The per-task claim locks one worker process takes, and proper-lockfile refreshes (utimes) while the
 * attempt runs: a hard link to one of the worker's slot files (lockSlots.ts) where proper-lockfile would
 * make a folder, so that the lock itself names the process that made it. A worker killed outright leaves
 * it behind; it is then stale after `staleMs`, or removed at once when its maker is gone from this host
 * (see the folder store's takeover and sweep).
 */
export class TaskLocks {
  readonly inspector: LockInspector;
  private readonly lockFs: typeof fs;
  private readonly shardsMade = new Set<string>();
  /** Where this process's locks are made from. */
  private readonly slots: LockSlots;
  /** The slot each lock being taken is to be made from, by lock path. */
  private readonly slotFor = new Map<string, string>();

  /** `holder`: the process that takes locks through this object, and what to tell of each refresh (--verbose). */
  constructor(
    private readonly paths: QueuePaths,
    private readonly staleMs: number,
    holder: { owner: LockOwner; onRefresh?: (lockPath: string) => void },
  ) {
    this.inspector = new LockInspector(paths, staleMs);
    this.slots = new LockSlots(paths, holder.owner);
    const makeLock = (lockPath: string) => {
      const slot = this.slotFor.get(lockPath);
      if (slot === undefined) throw new Error(`no slot was taken for ${lockPath}`);
      this.slots.lock(slot, lockPath);
    };
    this.lockFs = lockFileSystem({ make: makeLock, remove: removeLockSync, onRefresh: holder.onRefresh });
  }

  /**
   * Takes the lock, or returns null when another holder has it. `onCompromised` is called (instead of
   * proper-lockfile's default, which throws from a timer and kills the process) when the lock is lost.
   */
  async tryAcquire(taskId: string, onCompromised: (error: Error) => void): Promise<HeldLock | null> {
    const slots = this.slots;
    const files = taskLockPaths(this.paths, taskId);
    if (!this.shardsMade.has(files.shardDir)) {
      makeFolder(files.shardDir);
      this.shardsMade.add(files.shardDir);
    }
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
      // ELOCKED: the name was held, nothing was made from the slot. After another failure, a lock made
      // from it before a later step failed may remain: then the slot is left alone.
      const locked = (error as NodeJS.ErrnoException).code === 'ELOCKED';
      if (locked || !slots.backs(slot, files.lock)) slots.giveBack(slot);
      if (locked) return null;
      throw ioError('lock', files.lock, error);
    } finally {
      this.slotFor.delete(files.lock);
    }
    let released = false;
    return {
      release: async () => {
        // A slot backs a new lock only once its lock is surely gone. After a compromise (another process
        // took the lock over) or a failed removal, it is left alone until the process closes its slots.
        if (released || compromised) return;
        released = true;
        try {
          await releaseLock();
          slots.giveBack(slot);
        } catch {
          // The lock may still be there: judged by its age, like any lock of a process that stopped refreshing it.
        }
      },
    };
  }

  /** This process holds no more locks: its slots go. */
  close(): void {
    this.slots.close();
  }
}
