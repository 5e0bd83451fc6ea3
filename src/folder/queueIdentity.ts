import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, linkSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { DamagedFileError, ioError } from '../errors.js';
import { readHeader, serializeEvent } from './executionLog.js';
import type { QueuePaths } from './paths.js';
import type { LogHeader } from './schema.js';

const QUEUE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The queue's identity (queue/queue-id): a random id made once, and never changed. Part of every
 * idempotency key, so that two queues whose tasks share ids never get each other's answers from an API
 * that honours the key. A copy of the folder is the same queue.
 *
 * The execution log is made with it, its first line naming the queue, and before it: so a queue that has
 * an id always has a log, and a log that is missing or empty then was deleted or emptied (see
 * checkLogPresent), never just not made yet. Returns the id, making whatever is missing.
 */
export function ensureQueueIdentity(paths: Pick<QueuePaths, 'identityFile' | 'logFile'>): string {
  const existing = readQueueId(paths.identityFile);
  if (existing !== undefined) return existing;
  if (!existsSync(paths.logFile)) {
    const header: LogHeader = { type: 'log', queue: randomUUID(), at: new Date().toISOString() };
    createWhole(paths.logFile, serializeEvent(header));
  }
  // A log made by this version names its queue: a process that died between the two files left the name there.
  createWhole(paths.identityFile, `${readHeader(paths.logFile)?.queue ?? randomUUID()}\n`);
  const created = readQueueId(paths.identityFile);
  if (created === undefined) throw new DamagedFileError(paths.identityFile, 'whole file', 'it vanished right after it was created');
  return created;
}

/**
 * Refuses a queue whose log is gone or empty although the queue has an id (so its log was made): every
 * task would look pending, and run again. Returns the id, if the queue has one.
 */
export function checkLogPresent(paths: Pick<QueuePaths, 'identityFile' | 'logFile'>): string | undefined {
  const id = readQueueId(paths.identityFile);
  if (id === undefined) return undefined;
  let size: number;
  try {
    size = statSync(paths.logFile).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('read', paths.logFile, error);
    throw new DamagedFileError(
      paths.logFile,
      'whole file',
      `it is missing: it was deleted or moved, and without it every task would look pending. ${LOG_RULE}`,
    );
  }
  if (size === 0)
    throw new DamagedFileError(
      paths.logFile,
      'whole file',
      `it is empty: it was emptied (logrotate's copytruncate does that), and without it every task would look pending. ${LOG_RULE}`,
    );
  return id;
}

/** What to say of a log that was touched. */
export const LOG_RULE = 'The execution log must never be rotated, emptied, edited or deleted: `worker clean` and `worker compact` keep it small';

/**
 * Creates `file` with `content` unless it exists: written whole under a name of its own, then linked into
 * place, so a reader never sees half of it, and of two processes creating it at once the first wins.
 */
function createWhole(file: string, content: string): void {
  const temp = `${file}.${randomUUID()}.tmp`;
  try {
    const fd = openSync(temp, 'wx');
    try {
      writeSync(fd, content);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    linkWithoutReplacing(temp, file);
  } catch (error) {
    throw ioError('create', file, error);
  } finally {
    try {
      unlinkSync(temp);
    } catch {
      // never made, or already gone
    }
  }
}

function linkWithoutReplacing(from: string, to: string): void {
  try {
    linkSync(from, to);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw error;
    // A file system without hard links (FAT): created in place, exclusively; an id is one small write.
    const fd = openSync(to, 'wx');
    try {
      writeSync(fd, readFileSync(from));
    } finally {
      closeSync(fd);
    }
  }
}

/** The queue's id, or undefined while it has none. */
export function readQueueId(file: string): string | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError('read', file, error);
  }
  const id = text.trim();
  if (!QUEUE_ID.test(id)) throw new DamagedFileError(file, 'whole file', `expected the queue's id (a UUID), got ${JSON.stringify(text.slice(0, 60))}`);
  return id;
}
