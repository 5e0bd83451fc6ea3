import * as fs from 'node:fs';
import { readFile, rmdir, stat, unlink } from 'node:fs/promises';
import lockfile from 'proper-lockfile';
import writeFileAtomic from 'write-file-atomic';
import { ioError } from '../errors.js';
import { taskLockPaths, type QueuePaths } from '../queue/paths.js';

/** Who holds a task's lock: written to locks/<task-id>.owner.json right after the lock is taken. */
export interface LockOwner {
  worker: string;
  pid: number;
  host: string;
  /** The claim's token: the same as in the claim event of the execution log. */
  token: string;
  claimed_at: string;
}

export interface LockInspection {
  /** Whether locks/<task-id>.lock exists. */
  held: boolean;
  /** Milliseconds since its holder last refreshed it. */
  ageMs: number | null;
  owner: LockOwner | null;
}

/** A lock this process holds. Released once; after a compromise, releasing is a no-op. */
export interface HeldLock {
  release(): Promise<void>;
}

/**
 * The per-task claim lock: a folder made atomically by proper-lockfile, refreshed (utimes) while the
 * attempt runs. A worker killed outright leaves it behind; it is then stale after `staleMs`, or at once
 * when its owner's pid is gone on this host (see the worker's takeover).
 */
export class TaskLocks {
  /** proper-lockfile's file system, with its refreshes (utimes of a lock folder) reported to `onRefresh`. */
  private readonly lockFs: typeof fs;

  constructor(private readonly paths: QueuePaths, private readonly staleMs: number, onRefresh: (lockPath: string) => void = () => undefined) {
    this.lockFs = {
      ...fs,
      utimes: (path: fs.PathLike, atime: fs.TimeLike, mtime: fs.TimeLike, callback: fs.NoParamCallback) => {
        onRefresh(String(path));
        fs.utimes(path, atime, mtime, callback);
      },
    } as typeof fs;
  }

  /**
   * Takes the lock, or returns null when another holder has it. `onCompromised` is called (instead of
   * proper-lockfile's default, which throws from a timer and kills the process) when the lock is lost.
   */
  async tryAcquire(taskId: string, owner: LockOwner, onCompromised: (error: Error) => void): Promise<HeldLock | null> {
    const files = taskLockPaths(this.paths, taskId);
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
      if ((error as NodeJS.ErrnoException).code === 'ELOCKED') return null;
      throw ioError('lock', files.lock, error);
    }
    try {
      await writeFileAtomic(files.owner, `${JSON.stringify(owner)}\n`, { fsync: false });
    } catch (error) {
      await releaseLock().catch(() => undefined);
      throw ioError('write', files.owner, error);
    }
    let released = false;
    return {
      release: async () => {
        if (released) return;
        released = true;
        if (compromised) return;
        // The owner record goes first: a lock folder without one is judged by its age alone.
        await unlink(files.owner).catch(() => undefined);
        await releaseLock().catch(() => undefined);
      },
    };
  }

  async inspect(taskId: string, now: number): Promise<LockInspection> {
    const files = taskLockPaths(this.paths, taskId);
    let ageMs: number | null = null;
    try {
      ageMs = now - (await stat(files.lock)).mtimeMs;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('inspect', files.lock, error);
    }
    return { held: ageMs !== null, ageMs, owner: await this.readOwner(files.owner) };
  }

  isStale(inspection: LockInspection): boolean {
    return inspection.ageMs !== null && inspection.ageMs > this.staleMs;
  }

  /** Removes a dead or stale holder's lock. Callers hold the queue-wide lock, so removals never race. */
  async forceRemove(taskId: string): Promise<void> {
    const files = taskLockPaths(this.paths, taskId);
    await unlink(files.owner).catch(() => undefined);
    try {
      await rmdir(files.lock);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('remove', files.lock, error);
    }
  }

  private async readOwner(file: string): Promise<LockOwner | null> {
    try {
      const owner = JSON.parse(await readFile(file, 'utf8')) as Partial<LockOwner>;
      return typeof owner.token === 'string' && typeof owner.pid === 'number' ? (owner as LockOwner) : null;
    } catch {
      return null;
    }
  }
}

/** Whether a process with this pid runs on this host. EPERM means it runs under another user. */
export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
