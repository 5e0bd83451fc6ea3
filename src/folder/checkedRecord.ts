import { readFileSync, writeFileSync } from 'node:fs';
import type { LogPosition } from './executionLog.js';
import type { QueueFileVersion } from './queueFile.js';

/**
 * queue/checked.json: the version of queue.json and the point in the execution log up to which `worker add`
 * last found both sound. The next add validates only what changed since: adding one task to a queue of
 * 100,000 does not validate 100,000 definitions and every event again. A cache only: when it is missing,
 * unreadable, or names another version of queue.json, add reads everything, as it would without it.
 */
export interface CheckedRecord {
  queue: QueueFileVersion;
  log: LogPosition;
}

export function readCheckedRecord(file: string): CheckedRecord | null {
  try {
    const record = JSON.parse(readFileSync(file, 'utf8')) as Partial<CheckedRecord>;
    const { queue, log } = record;
    const count = (value: unknown, least: number) => Number.isSafeInteger(value) && (value as number) >= least;
    const sound =
      typeof queue?.ino === 'string' &&
      count(queue.size, 0) &&
      typeof queue.ctimeNs === 'string' &&
      (log?.inode === undefined || count(log.inode, 0)) &&
      count(log?.offset, 0) &&
      count(log?.line, 1);
    return sound ? (record as CheckedRecord) : null;
  } catch {
    return null;
  }
}

/** One plain write: a torn record does not parse, and is then only a cache miss. Failing to write is one too. */
export function writeCheckedRecord(file: string, record: CheckedRecord): void {
  try {
    writeFileSync(file, `${JSON.stringify(record)}\n`);
  } catch {
    // the next add reads everything
  }
}
