import * as fs from 'node:fs';
import { join } from 'node:path';
import { ioError } from '../../errors.js';
import type { QueuePaths } from '../paths.js';
import { makeFolder } from './makeFolder.js';
import { goneFromThisHost } from './processes.js';

/** Errors of `link(2)` on a file system without hard links (FAT, some network and FUSE file systems). */
const NO_HARD_LINKS = new Set(['EPERM', 'EOPNOTSUPP', 'ENOTSUP', 'ENOSYS']);

/** The worker process that made a lock: written in its slots, read through the lock. */
export interface LockOwner {
  worker: string;
  pid: number;
  host: string;
}

/** A slot is written in the instant it is made: one still naming no one after this was never finished. */
const UNFINISHED_SLOT_MS = 10_000;

export function slotsDir(paths: QueuePaths): string {
  return join(paths.locksDir, 'slots');
}

/**
 * The files a worker process makes its task locks from. A lock is a hard link, `link(2)`ed from a free
 * slot to the task's lock name: made atomically (EEXIST while another holds it), with no new inode, where
 * a folder or file per lock costs an inode created and freed per claim. On ext4 without a journal (this
 * project's bench machine) that made the lock the most expensive file operation of a claim: the kernel
 * scans past every inode freed in the last minutes to find a new one (npm run bench, "The file system
 * matters"). A slot backs one lock at a time, so the lock's mtime is its own refresh time. A slot holds
 * the worker, pid and host of its process, so reading a lock tells who made it: the sweep of leftover
 * locks and takeovers of dead workers' tasks need nothing else. A worker needs one or two slots.
 *
 * Slots are `locks/slots/<host>-<pid>.<n>`, removed when the process closes them; those of processes gone
 * from this host are removed by `pruneSlots`. Where the file system has no hard links, locks are folders
 * made by `mkdir`, as proper-lockfile makes them itself; they name no one, and are judged by their age.
 */
export class LockSlots {
  private readonly free: string[] = [];
  private readonly all = new Set<string>();
  private made = 0;
  private linksWork = true;
  private readonly prefix: string;
  /** What each slot says: its process. */
  private readonly contents: string;

  constructor(
    private readonly paths: QueuePaths,
    owner: LockOwner,
  ) {
    this.prefix = join(slotsDir(paths), `${safeName(owner.host)}-${owner.pid}.`);
    this.contents = `${JSON.stringify({ worker: owner.worker, pid: owner.pid, host: owner.host })}\n`;
  }

  /** A slot no lock of this process uses now, its mtime set to now: a lock linked to it starts fresh. */
  take(): string {
    const reused = this.free.pop();
    if (reused !== undefined) {
      const now = new Date();
      try {
        fs.utimesSync(reused, now, now);
        return reused;
      } catch (error) {
        // Removed from outside (an operator's clean-up): a new one is made.
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('refresh', reused, error);
      }
    }
    return this.make();
  }

  /** Makes the lock `lockPath` from `slot` (taken just before): EEXIST when another process holds it. */
  lock(slot: string, lockPath: string): void {
    if (!this.linksWork) {
      fs.mkdirSync(lockPath);
      return;
    }
    try {
      fs.linkSync(slot, lockPath);
    } catch (error) {
      if (!NO_HARD_LINKS.has((error as NodeJS.ErrnoException).code ?? '')) throw error;
      this.linksWork = false;
      fs.mkdirSync(lockPath);
    }
  }

  /** Whether `lockPath` is a lock made from `slot`. */
  backs(slot: string, lockPath: string): boolean {
    try {
      const lock = fs.statSync(lockPath);
      const made = fs.statSync(slot);
      return lock.ino === made.ino && lock.dev === made.dev;
    } catch {
      return false;
    }
  }

  /** The lock made from `slot` is gone: the slot may back the next one. */
  giveBack(slot: string): void {
    this.free.push(slot);
  }

  /** The process holds no more locks: its slots go. */
  close(): void {
    for (const slot of this.all) removeQuietly(slot);
    this.all.clear();
    this.free.length = 0;
  }

  /**
   * A new slot, under a name no file has (O_EXCL): a pid is reused once its process is gone, and two hosts
   * may share a name and a pid (containers), so a file under this name may be another process's slot, to
   * which one of its locks may still be linked. Its owner is written before any lock is linked to it.
   */
  private make(): string {
    for (let attempt = 0; ; attempt += 1) {
      const slot = `${this.prefix}${this.made}`;
      try {
        fs.writeFileSync(slot, this.contents, { flag: 'wx' });
        this.made += 1;
        this.all.add(slot);
        return slot;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (attempt > 1 || (code !== 'EEXIST' && code !== 'ENOENT')) throw ioError('create', slot, error);
        if (code === 'EEXIST') this.made += 1;
        else makeFolder(slotsDir(this.paths));
      }
    }
  }
}

/**
 * Removes the slots of processes gone from this host, those not used for `keptMs` (processes on other
 * hosts, which cannot be checked from here), and those left unfinished by a process killed making one.
 * A lock linked to a removed slot is not touched: it still names its maker, and goes as any lock of a
 * dead process does.
 */
export function pruneSlots(paths: QueuePaths, host: string, now: number, keptMs: number): void {
  let names: string[];
  try {
    names = fs.readdirSync(slotsDir(paths));
  } catch {
    return;
  }
  for (const name of names) {
    const file = join(slotsDir(paths), name);
    const modifiedAtMs = fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs;
    if (modifiedAtMs === undefined) continue;
    const owner = readLockOwner(file);
    // A slot names no one only if its process was killed while making it: no lock was ever linked to it.
    // Its name still tells its process on this host; one of another host goes once clearly not being written.
    const named = processOfName(name, host);
    const unfinished = owner === null && ((named !== null && goneFromThisHost(named, host)) || now - modifiedAtMs > UNFINISHED_SLOT_MS);
    if (unfinished || (owner !== null && goneFromThisHost(owner, host)) || now - modifiedAtMs > keptMs) removeQuietly(file);
  }
}

/** Who made a lock (or a slot): null when it is gone, a folder, or does not name a process. */
export function readLockOwner(file: string): LockOwner | null {
  try {
    const owner = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<LockOwner>;
    return typeof owner.worker === 'string' && typeof owner.pid === 'number' && typeof owner.host === 'string'
      ? { worker: owner.worker, pid: owner.pid, host: owner.host }
      : null;
  } catch {
    return null;
  }
}

/** The process of this host that a slot's name gives, or null for a slot of another host. */
function processOfName(name: string, host: string): { host: string; pid: number } | null {
  const named = /^(.*)-(\d+)\.\d+$/.exec(name);
  return named !== null && named[1] === safeName(host) ? { host, pid: Number(named[2]) } : null;
}

/** A host name as it may stand in a file name. */
function safeName(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]/g, '_');
}

/** Removes a task's lock: a hard link to a slot, or a folder where the file system has no hard links. */
export function removeLockSync(lockPath: string): void {
  try {
    fs.unlinkSync(lockPath);
  } catch (error) {
    if (!isFolderError(error)) throw error;
    fs.rmdirSync(lockPath);
  }
}

/** What unlink(2) says of a folder: EISDIR on Linux, EPERM elsewhere. */
function isFolderError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'EISDIR' || code === 'EPERM';
}

function removeQuietly(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch {
    // already gone
  }
}
