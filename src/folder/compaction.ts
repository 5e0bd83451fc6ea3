import { closeSync, existsSync, fsyncSync, openSync, readdirSync, renameSync, rmSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { DamagedFileError, ioError } from '../errors.js';
import { QueueState } from '../core/queueState.js';
import { ExecutionLogReader, ExecutionLogWriter, serializeEvent } from './executionLog.js';
import type { QueuePaths } from './paths.js';
import { ensureQueueIdentity } from './queueIdentity.js';
import { QueueFile } from './queueFile.js';
import { resultsDir } from './results.js';
import type { LogHeader, Seal } from './schema.js';
import { isTaskEvent, type ChangeRecord, type CompactionReport, type FoldRecord, type WeatherRecord } from '../types.js';

/**
 * `worker compact`: rewrites the execution log without what it no longer needs, while workers run.
 *
 * Kept: every event that counted, of every task queue.json still defines (so every state, attempt count,
 * final outcome and result is as before), and the API's weather at the end. Dropped: the events of tasks
 * `clean` removed, and events that did not count (lost races, claims held back). Results files that no
 * kept outcome refers to, and that no live worker writes, are removed.
 *
 * The switch, without a lock on appends: a seal is appended to the current log; everything before it is
 * compacted into the next generation, whose header says where the compacted part ends; the next generation
 * is renamed into place. A reader that reaches the seal goes on in the next generation from that point,
 * having folded the same events already. An event appended after the seal, before the rename, does not
 * count: a claim there is lost (its worker sees so and calls nothing), an outcome there is appended again
 * by its worker once it reads the next generation (see QueueStore.append).
 *
 * The caller holds the queue-wide lock: no add, clean, retry, cancel or takeover runs meanwhile, and a log
 * found sealed with no successor (a compaction that died) is finished here.
 */
export function compactLog(paths: QueuePaths, assertHeld: () => void, now: () => Date): CompactionReport {
  const queueId = ensureQueueIdentity(paths);
  const contents = new QueueFile(paths.queueFile).read();
  const fold = new QueueState({ keepDetails: false });
  fold.addDefinitions(contents);
  const bytesBefore = statSync(paths.logFile).size;
  const kept: ChangeRecord[] = [];
  let eventsBefore = 0;
  const take = (record: FoldRecord) => {
    const result = fold.apply(record);
    // Removals are the queue's history: kept. What the other queue-level records made (the weather, a
    // pause by hand) goes into the weather record.
    if (record.type === 'removed') {
      eventsBefore += 1;
      kept.push(record);
    }
    if (!isTaskEvent(record)) return;
    eventsBefore += 1;
    if (result === 'unknown-task') {
      throw new DamagedFileError(paths.queueFile, 'whole file', `the execution log records events of task "${record.task}", which it does not define`);
    }
    if (result === 'accepted') kept.push(record);
  };
  const reader = new ExecutionLogReader(paths.logFile);
  let generation: number;
  try {
    reader.readNew(take);
    generation = reader.header?.generation ?? 1;
    if (!reader.waitingForSuccessor) {
      const seal: Seal = { type: 'sealed', generation, at: now().toISOString() };
      const writer = new ExecutionLogWriter(paths.logFile);
      try {
        writer.append([seal], reader.position());
      } finally {
        writer.close();
      }
      // What workers appended before the seal belongs to this generation: read up to it.
      while (!reader.waitingForSuccessor) reader.readNew(take);
    }
  } finally {
    reader.close();
  }

  const at = now().toISOString();
  const weather: WeatherRecord = {
    type: 'weather',
    at,
    state: { ...(fold.weather.snapshot() as unknown as WeatherRecord['state']), paused_by_hand: fold.pausedByHand },
  };
  const body = `${kept.map(serializeEvent).join('')}${serializeEvent(weather)}`;
  const bodyBytes = Buffer.byteLength(body);
  // The header says where the compacted part ends, which depends on the header's own length.
  let headerText = '';
  for (let offset = 0; ; ) {
    const header: LogHeader = { type: 'log', queue: queueId, at, generation: generation + 1, continues_at: { offset, line: kept.length + 3 } };
    headerText = serializeEvent(header);
    const end = Buffer.byteLength(headerText) + bodyBytes;
    if (end === offset) break;
    offset = end;
  }
  const next = `${paths.logFile}.compacting`;
  try {
    const fd = openSync(next, 'w');
    try {
      const bytes = Buffer.from(headerText + body, 'utf8');
      let written = 0;
      while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    assertHeld();
    renameSync(next, paths.logFile);
  } catch (error) {
    rmSync(next, { force: true });
    if (error instanceof Error && 'code' in error && typeof (error as NodeJS.ErrnoException).code === 'string')
      throw ioError('write the compacted log', next, error);
    throw error;
  }
  // add's record of how far it checked the log names the sealed file: it starts over with the new one.
  rmSync(paths.checkedFile, { force: true });
  const removed = removeUnreferencedResults(paths, kept);
  return {
    generation: generation + 1,
    bytesBefore,
    bytesAfter: Buffer.byteLength(headerText) + bodyBytes,
    eventsBefore,
    eventsKept: kept.length,
    resultFilesRemoved: removed.files,
    resultBytesRemoved: removed.bytes,
  };
}

/** Results files that no kept outcome refers to, except those of live workers (their worker id is held). */
function removeUnreferencedResults(paths: QueuePaths, kept: readonly ChangeRecord[]): { files: number; bytes: number } {
  const referenced = new Set<string>();
  for (const event of kept) if (event.type === 'outcome' && event.result_ref !== undefined) referenced.add(event.result_ref.file);
  let names: string[];
  try {
    names = readdirSync(resultsDir(paths));
  } catch {
    return { files: 0, bytes: 0 };
  }
  let files = 0;
  let bytes = 0;
  for (const name of names) {
    if (!name.endsWith('.results') || referenced.has(name)) continue;
    const workerId = name.slice(0, -'.results'.length);
    if (existsSync(join(paths.locksDir, 'workers', `${workerId}.lock`))) continue;
    const file = join(resultsDir(paths), name);
    try {
      bytes += statSync(file).size;
      unlinkSync(file);
      files += 1;
    } catch {
      // gone already
    }
  }
  return { files, bytes };
}
