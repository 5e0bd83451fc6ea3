import { randomUUID } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { DamagedFileError, ioError } from '../errors.js';

const QUEUE_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * The queue's identity (queue/queue-id): a random id made once, by whichever process needs it first, and
 * never changed. Part of every idempotency key, so that two queues whose tasks share ids never get each
 * other's answers from an API that honours the key. A copy of the folder is the same queue.
 */
export function readOrCreateQueueId(file: string): string {
  const existing = readQueueId(file);
  if (existing !== undefined) return existing;
  // Written whole under a name of its own, then linked into place: a reader never sees half an id, and
  // of two processes creating it at once, the first link wins and both use its id.
  const temp = `${file}.${randomUUID()}.tmp`;
  try {
    const fd = openSync(temp, 'wx');
    try {
      writeSync(fd, `${randomUUID()}\n`);
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
  const created = readQueueId(file);
  if (created === undefined) throw new DamagedFileError(file, 'whole file', 'it vanished right after it was created');
  return created;
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

/**
 * The idempotency key of a task's try: the queue's id, the task's id and its generation (advanced by
 * `worker retry`). Automatic retries and takeovers keep it, so an API that honours it does one try's work once.
 */
export function idempotencyKey(queueId: string, taskId: string, generation: number): string {
  return `${queueId}:${taskId}:${generation}`;
}
