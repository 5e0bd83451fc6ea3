import * as fs from 'node:fs';
import { join } from 'node:path';
import { ioError } from '../errors.js';
import type { QueuePaths } from '../queue/paths.js';
import { makeFolder } from './makeFolder.js';

/** Which worker process made a lock, and for which claim. */
export interface LockOwner {
  worker: string;
  pid: number;
  host: string;
  /** The claim's token: the same as in the claim event of the execution log. */
  token: string;
  claimed_at: string;
}

/** Tells one lock from another made later under the same name by another process: inode number and birth time (of its slot, or of its folder). */
export type LockIdentity = string;

interface RegisterEntry {
  task: string;
  token: string;
  claimed_at: string;
  lock: LockIdentity;
}

interface RegisterFile {
  worker: string;
  pid: number;
  host: string;
  locks: RegisterEntry[];
}

export function holdersDir(paths: QueuePaths): string {
  return join(paths.locksDir, 'holders');
}

export function identityOf(stats: fs.Stats): LockIdentity {
  return `${stats.ino}:${stats.birthtimeMs}`;
}

/**
 * The locks one worker process holds: locks/holders/<host>-<pid>.json, one file per process, rewritten in
 * place (one pwrite, no new file) each time it takes or lets go of a lock. This is what tells a lock's
 * owner to a worker sweeping leftovers or taking over a dead worker's task. A file per lock would cost
 * an inode created and removed per claim: on ext4 that is as much as a lock folder itself.
 *
 * An entry is written right after its lock is made and removed only once the lock is gone, so a lock
 * named here is its writer's for as long as the writer lives. A lock named nowhere (its maker died before
 * writing, or a register cannot be read) is judged by its age alone. Entries carry the lock's identity, so
 * an entry left by a dead process never vouches for a lock made later under the same name.
 */
export class HolderRegister {
  private fd: number | undefined;
  /** Bytes of the file: it never shrinks, so a shorter text is padded with spaces over the old one. */
  private size = 0;
  private readonly entries = new Map<string, RegisterEntry>();
  readonly file: string;

  constructor(private readonly paths: QueuePaths, private readonly self: { worker: string; pid: number; host: string }) {
    this.file = join(holdersDir(paths), `${safeName(self.host)}-${self.pid}.json`);
  }

  add(taskId: string, entry: Omit<RegisterEntry, 'task'>): void {
    this.entries.set(taskId, { task: taskId, ...entry });
    this.write();
  }

  remove(taskId: string): void {
    if (this.entries.delete(taskId)) this.write();
  }

  /** The process is done with locks: its register goes. */
  close(): void {
    if (this.fd === undefined) return;
    fs.closeSync(this.fd);
    this.fd = undefined;
    try {
      fs.unlinkSync(this.file);
    } catch {
      // gone already
    }
  }

  private write(): void {
    const contents: RegisterFile = { ...this.self, locks: [...this.entries.values()] };
    const text = `${JSON.stringify(contents)}\n`;
    const bytes = Buffer.from(text.padEnd(Math.max(text.length, this.size), ' '), 'utf8');
    try {
      this.fd ??= this.open();
      fs.writeSync(this.fd, bytes, 0, bytes.length, 0);
    } catch (error) {
      throw ioError('write', this.file, error);
    }
    this.size = Math.max(this.size, bytes.length);
  }

  private open(): number {
    makeFolder(holdersDir(this.paths));
    return fs.openSync(this.file, 'w');
  }
}

export interface RegisteredLock {
  owner: LockOwner;
  lock: LockIdentity;
}

/** One register file as it was read: `register` is null when it was caught mid-write or is not one. */
export interface RegisterRead {
  file: string;
  register: RegisterFile | null;
  modifiedAtMs: number;
}

/**
 * The registers of every worker process now, each file read once: who made which lock (`ownersOf`), and
 * which registers may go (TaskLocks.pruneRegisters).
 */
export class Registers {
  private readonly byTask = new Map<string, RegisteredLock[]>();

  constructor(readonly files: readonly RegisterRead[]) {
    for (const { register } of files) {
      if (register === null) continue;
      for (const entry of register.locks) {
        const owner: LockOwner = { worker: register.worker, pid: register.pid, host: register.host, token: entry.token, claimed_at: entry.claimed_at };
        const named = this.byTask.get(entry.task) ?? [];
        named.push({ owner, lock: entry.lock });
        this.byTask.set(entry.task, named);
      }
    }
  }

  static read(paths: QueuePaths): Registers {
    const dir = holdersDir(paths);
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return new Registers([]);
    }
    const files: RegisterRead[] = [];
    for (const name of names) {
      const file = join(dir, name);
      const modifiedAtMs = fs.statSync(file, { throwIfNoEntry: false })?.mtimeMs;
      if (modifiedAtMs !== undefined) files.push({ file, register: readRegister(file), modifiedAtMs });
    }
    return new Registers(files);
  }

  /** The locks registered for a task, with who registered each. */
  ownersOf(taskId: string): readonly RegisteredLock[] {
    return this.byTask.get(taskId) ?? [];
  }
}

/** A register, or null when it is gone or caught mid-write (its text does not parse). */
function readRegister(file: string): RegisterFile | null {
  try {
    const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial<RegisterFile>;
    return typeof parsed.pid === 'number' && typeof parsed.host === 'string' && Array.isArray(parsed.locks) ? (parsed as RegisterFile) : null;
  } catch {
    return null;
  }
}

/** A host name as it may stand in a file name. */
export function safeName(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]/g, '_');
}
