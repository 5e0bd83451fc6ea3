import { closeSync, constants, fstatSync, openSync, readSync, statSync, writeSync } from 'node:fs';
import { DamagedFileError, ioError } from '../errors.js';
import { eventSchema, type LogHeader, type LogRecord, type QueueEvent } from './schema.js';
import * as z from 'zod/mini';

/**
 * The execution log: JSON Lines, one event per line, only ever appended to.
 *
 * Each event is written with one write(2) on an O_APPEND descriptor, so concurrent writers never
 * interleave. A writer killed in the middle of a write can leave a torn record: a prefix of a line with
 * no newline. How readers treat that:
 * - a last line with no newline is not read yet: it is either being written or torn. Readers wait.
 * - when the next writer appends, the torn prefix and the new record share one line. Every record starts
 *   with RECORD_MARK, so the line is split there: the complete record is kept, the torn prefix (which
 *   never held a recorded outcome: its writer died before the write returned) is counted and skipped.
 * - any other line that is not a valid event (garbage, wrong shape) makes the whole file damaged:
 *   every command refuses, naming the line, and the file is left as it is.
 */
export const RECORD_MARK = '{"type":"';

const NEWLINE = 0x0a;

export interface LogChunk {
  events: QueueEvent[];
  /** The log's header, when the chunk began with it (line 1). */
  header?: LogHeader;
  /** Torn records (writers that died mid-write) skipped in this chunk. */
  torn: number;
}

/**
 * The line of an event. Throws, writing nothing, when the event is not one the log's schema accepts:
 * a line that every reader would refuse must never reach the log.
 */
export function serializeEvent(event: LogRecord): string {
  const checked = eventSchema.safeParse(event);
  if (!checked.success) throw new Error(`refusing to append an event the execution log's schema refuses (a bug): ${z.prettifyError(checked.error).replace(/\n/g, ' ')}`);
  // `type` must come first: RECORD_MARK is how a torn line is split. Events are built with it first;
  // one that is not is copied in that order.
  const text = JSON.stringify(event);
  if (text.startsWith(RECORD_MARK)) return `${text}\n`;
  const { type, ...rest } = event;
  return `${JSON.stringify({ type, ...rest })}\n`;
}

/** Parses complete lines (without their newlines). `firstLine` is the 1-based number of lines[0]. */
export function parseLines(file: string, lines: string[], firstLine: number): LogChunk {
  const events: QueueEvent[] = [];
  let header: LogHeader | undefined;
  let torn = 0;
  const take = (record: LogRecord, lineNo: number) => {
    if (record.type !== 'log') events.push(record);
    else if (lineNo === 1) header = record;
    else throw new DamagedFileError(file, `line ${lineNo}`, 'a log header in the middle of the log: two logs were joined');
  };
  lines.forEach((line, index) => {
    if (line.length === 0) return;
    const lineNo = firstLine + index;
    const whole = tryParseEvent(line);
    if (whole.ok) {
      take(whole.event, lineNo);
      return;
    }
    for (const piece of splitAtMarks(line)) {
      const parsed = tryParseEvent(piece);
      if (parsed.ok) take(parsed.event, lineNo);
      // A torn prefix never parses: valid JSON of the wrong shape is damage, not a crash.
      else if (!parsed.json && isTornRecord(piece)) torn += 1;
      else throw new DamagedFileError(file, `line ${lineNo}`, describeBadLine(line, whole.problem));
    }
  });
  return header === undefined ? { events, torn } : { events, torn, header };
}

type ParseResult = { ok: true; event: LogRecord } | { ok: false; problem: string; json: boolean };

function tryParseEvent(text: string): ParseResult {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, problem: 'not valid JSON', json: false };
  }
  const parsed = eventSchema.safeParse(json);
  if (parsed.success) return { ok: true, event: parsed.data };
  return { ok: false, problem: `not an event: ${z.prettifyError(parsed.error).replace(/\n/g, ' ')}`, json: true };
}

function splitAtMarks(line: string): string[] {
  const pieces: string[] = [];
  let start = 0;
  let next = line.indexOf(RECORD_MARK, 1);
  while (next !== -1) {
    pieces.push(line.slice(start, next));
    start = next;
    next = line.indexOf(RECORD_MARK, next + 1);
  }
  pieces.push(line.slice(start));
  return pieces;
}

/** A prefix of a record that its writer never finished. */
function isTornRecord(piece: string): boolean {
  return piece.startsWith(RECORD_MARK) || RECORD_MARK.startsWith(piece);
}

function describeBadLine(line: string, problem: string): string {
  const shown = line.length > 80 ? `${line.slice(0, 80)}…` : line;
  return `${problem}; the line reads ${JSON.stringify(shown)}`;
}

/**
 * Reads the log incrementally: each call returns only the events appended since the last one, so a
 * worker's cost per check is the size of what changed, not of the whole log.
 *
 * Synchronous on purpose: a check is a stat and a read of a few hundred bytes, done several times per
 * task; through the thread pool each such call costs far more than the call itself.
 */
export class ExecutionLogReader {
  private fd: number | undefined;
  private inode: number | undefined;
  private offset: number;
  private lineNo: number;
  private pending: Buffer = Buffer.alloc(0);
  private readonly scratch = Buffer.allocUnsafe(64 * 1024);
  /** Torn records seen so far. */
  tornRecords = 0;
  /** The log's first line, once read, if it is a header (logs of earlier versions have none). */
  header: LogHeader | undefined;

  /** `from`: where to start, a position an earlier reader of the same file reached. */
  constructor(readonly file: string, from: LogPosition = { inode: undefined, offset: 0, line: 1 }) {
    this.inode = from.inode;
    this.offset = from.offset;
    this.lineNo = from.line;
  }

  /** The end of the last complete line read, and the file it was read from. */
  position(): LogPosition {
    return { inode: this.inode, offset: this.offset - this.pending.length, line: this.lineNo };
  }

  readNew(): QueueEvent[] {
    let size: number;
    try {
      const info = statSync(this.file);
      if (this.inode !== undefined && info.ino !== this.inode) {
        throw new DamagedFileError(this.file, 'whole file', 'it was replaced while it was being read; an execution log is only ever appended to');
      }
      if (this.fd === undefined) {
        this.fd = openSync(this.file, 'r');
        this.inode = fstatSync(this.fd).ino;
        if (this.inode !== info.ino) return this.readNew();
      }
      size = info.size;
    } catch (error) {
      if (error instanceof DamagedFileError) throw error;
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        if (this.inode === undefined && this.offset === 0) return [];
        throw new DamagedFileError(this.file, 'whole file', 'it was deleted or moved away while in use; an execution log is never removed');
      }
      throw ioError('read', this.file, error);
    }
    if (size < this.offset) {
      throw new DamagedFileError(this.file, `byte ${size}`, `it shrank from ${this.offset} bytes; an execution log is only ever appended to`);
    }
    if (size === this.offset) return [];
    const fresh = Buffer.allocUnsafe(size - this.offset);
    let filled = 0;
    try {
      while (filled < fresh.length) {
        const bytesRead = readSync(this.fd, fresh, filled, fresh.length - filled, this.offset + filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
    } catch (error) {
      throw ioError('read', this.file, error);
    }
    return this.consume(fresh.subarray(0, filled));
  }

  /**
   * The events appended since the last read, read from where it ended, without looking at the file: for
   * re-checks inside a claim, several per task. readNew, once per task, checks that it was not replaced
   * or shrunk (a stat cost as much as the read).
   */
  readAppended(): QueueEvent[] {
    if (this.fd === undefined) return this.readNew();
    let bytesRead: number;
    try {
      bytesRead = readSync(this.fd, this.scratch, 0, this.scratch.length, this.offset);
    } catch (error) {
      throw ioError('read', this.file, error);
    }
    if (bytesRead === 0) return [];
    // consume keeps copies of what it holds on to: the scratch buffer serves the next read.
    const events = this.consume(this.scratch.subarray(0, bytesRead));
    // More was appended than the buffer holds (a large result): the rest is read whole, with the checks.
    return bytesRead < this.scratch.length ? events : [...events, ...this.readNew()];
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** Parses first, then moves on: a damaged line leaves the reader where it was, to be read again. */
  private consume(fresh: Buffer): QueueEvent[] {
    const data = this.pending.length > 0 ? Buffer.concat([this.pending, fresh]) : fresh;
    const lastNewline = data.lastIndexOf(NEWLINE);
    const lines = lastNewline === -1 ? [] : data.subarray(0, lastNewline).toString('utf8').split('\n');
    const chunk = parseLines(this.file, lines, this.lineNo);
    if (chunk.header !== undefined) this.header = chunk.header;
    this.offset += fresh.length;
    this.lineNo += lines.length;
    this.tornRecords += chunk.torn;
    // Keep the unfinished last line for the next read: it is being written, or was torn.
    this.pending = Buffer.from(data.subarray(lastNewline + 1));
    return chunk.events;
  }
}

export interface LogPosition {
  /** Undefined when the log did not exist yet. */
  inode: number | undefined;
  offset: number;
  /** 1-based number of the line that starts at `offset`. */
  line: number;
}

/**
 * Appends whole events, each batch with one write(2) on a descriptor opened in append mode. Never into a
 * file other than the one its readers read: `expected` is where they are (see ExecutionLogReader.position),
 * and a log deleted, replaced or shrunk since is refused (one fstat per append).
 */
export class ExecutionLogWriter {
  private fd: number | undefined;

  constructor(readonly file: string) {}

  append(events: readonly LogRecord[], expected?: LogPosition): void {
    const bytes = Buffer.from(events.map(serializeEvent).join(''), 'utf8');
    try {
      // A log its readers have seen is never created again: gone is gone.
      this.fd ??= openSync(this.file, expected?.inode === undefined ? 'a' : constants.O_WRONLY | constants.O_APPEND);
      if (expected?.inode !== undefined) {
        const info = fstatSync(this.fd);
        const problem = info.nlink === 0
          ? 'it was deleted or moved away while in use'
          : info.ino !== expected.inode
            ? 'it was replaced while in use'
            : info.size < expected.offset
              ? `it shrank from ${expected.offset} to ${info.size} bytes while in use`
              : undefined;
        if (problem !== undefined) throw new DamagedFileError(this.file, 'whole file', `${problem}; nothing more is written to it, and an execution log is only ever appended to`);
      }
      let written = 0;
      while (written < bytes.length) written += writeSync(this.fd, bytes, written, bytes.length - written);
    } catch (error) {
      this.close();
      if (error instanceof DamagedFileError) throw error;
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && expected?.inode !== undefined) {
        throw new DamagedFileError(this.file, 'whole file', 'it was deleted or moved away while in use; nothing more is written, and an execution log is never removed');
      }
      throw ioError('append to', this.file, error);
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
