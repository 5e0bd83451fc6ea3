import { statSync } from 'node:fs';
import writeFileAtomic from 'write-file-atomic';
import { ioError } from '../errors.js';
import type { QueueContents, TaskDefinition } from '../types.js';
import { FILE_END_BYTES, formatQueueFile, keepWholeDefinitions, parseQueue, readQueue, scanIds } from './queueFormat.js';
import { piecesOf, readFileBytes } from './fileBytes.js';

/** All that adding needs of the queue: the ids taken, and the file's bytes to extend. */
export interface QueueIds {
  ids: string[];
  removed: ReadonlySet<string>;
  bytes: Buffer;
}

/**
 * Which version of queue.json a reader saw. Every write makes a new file (write-file-atomic renames one
 * into place), and anything else that touches it changes its ctime, which no one can set back.
 */
export interface QueueFileVersion {
  ino: string;
  size: number;
  ctimeNs: string;
}

/** The version of a file now, or null when there is none. */
export function versionOf(file: string): QueueFileVersion | null {
  try {
    const info = statSync(file, { bigint: true });
    return { ino: String(info.ino), size: Number(info.size), ctimeNs: String(info.ctimeNs) };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError('read', file, error);
  }
}

export function sameVersion(a: QueueFileVersion, b: QueueFileVersion): boolean {
  return a.ino === b.ino && a.size === b.size && a.ctimeNs === b.ctimeNs;
}

/**
 * queue/queue.json: the task definitions. Read often (cached by version, so an unchanged file costs one
 * stat), written rarely (add, clean), always whole and atomically (write-file-atomic), and only by the
 * holder of the queue-wide lock.
 *
 * Layout, one task per line (readable, and a diff shows what was added):
 *   {"version":1,"removed":["old-1"],"tasks":[
 *   {"id":"a",…},
 *   {"id":"b",…}
 *   ]}
 */
export class QueueFile {
  private cached: { version: QueueFileVersion; contents: QueueContents } | undefined;

  constructor(readonly file: string) {}

  /** The definitions, validated. A missing file is an empty queue; a damaged one is an error, never empty. */
  read(): QueueContents {
    const version = versionOf(this.file);
    if (version === null) return { tasks: [], removed: new Set() };
    if (this.cached && sameVersion(this.cached.version, version)) return this.cached.contents;
    const contents = readQueue(this.file, keepWholeDefinitions());
    this.cached = { version, contents };
    return contents;
  }

  version(): QueueFileVersion | null {
    return versionOf(this.file);
  }

  /**
   * The ids of a file known to be sound: `checked` is a version that was read in full and validated.
   * Only its ids are picked out, without validating each task again. Null when the file is not that
   * version any more, or not in the one-task-per-line layout: the caller reads it in full.
   */
  readIdsIfUnchanged(checked: QueueFileVersion): QueueIds | null {
    const bytes = readFileBytes(this.file);
    const now = versionOf(this.file);
    if (bytes === null || now === null || !sameVersion(now, checked)) return null;
    const scanned = scanIds(bytes);
    return scanned === undefined ? null : { ...scanned, bytes };
  }

  /** The ids of the file, each task validated: one read of its bytes, which the add then extends. */
  readIds(): QueueIds {
    const bytes = readFileBytes(this.file);
    if (bytes === null) return { ids: [], removed: new Set(), bytes: Buffer.alloc(0) };
    const contents = parseQueue(this.file, piecesOf(bytes), () => bytes.toString('utf8'), keepWholeDefinitions());
    return { ids: contents.tasks.map((task) => task.id), removed: contents.removed, bytes };
  }

  /**
   * Adds tasks after the ones `existing` holds, which callers read under the queue-wide lock, so the file
   * cannot have changed since. Its bytes are extended: the tasks already there are neither decoded nor
   * serialised again.
   */
  append(existing: QueueIds, added: readonly TaskDefinition[]): void {
    const { bytes } = existing;
    if (existing.ids.length > 0 && bytes.subarray(-FILE_END_BYTES.length).equals(FILE_END_BYTES)) {
      // One buffer per line, not one string of them all: a bulk add of long instructions holds them once less.
      const lines = added.map((task) => Buffer.from(`,\n${JSON.stringify(task)}`));
      this.writeBytes(Buffer.concat([bytes.subarray(0, -FILE_END_BYTES.length), ...lines, FILE_END_BYTES]));
    } else {
      this.write({ tasks: [...this.read().tasks, ...added], removed: existing.removed });
    }
  }

  write(contents: QueueContents): void {
    this.writeBytes(formatQueueFile(contents));
  }

  /** Synchronous: callers hold the queue-wide lock and wait for nothing else, and each thread-pool step of the asynchronous form costs more than the step. */
  private writeBytes(bytes: Buffer): void {
    try {
      writeFileAtomic.sync(this.file, bytes);
    } catch (error) {
      throw ioError('write', this.file, error);
    }
    this.cached = undefined;
  }
}
