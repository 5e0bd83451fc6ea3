import { closeSync, constants, fstatSync, openSync, readSync, statSync, writeSync, type Stats } from 'node:fs';
import { DamagedFileError, ioError } from '../errors.js';
import { eventSchema, logHeaderSchema, type LogHeader, type LogRecord, type Seal } from './schema.js';
import * as z from 'zod/mini';
import type { FoldRecord } from '../types.js';

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
/** How much of the log is read, parsed and handed over at a time. */
const READ_PIECE_BYTES = 16 * 1024 * 1024;

export interface LogChunk {
  events: FoldRecord[];
  /** The log's header, when the chunk began with it (line 1). */
  header?: LogHeader;
  /** The seal that ends this file's generation: records after it do not count, and were not parsed. */
  seal?: Seal;
  /** Torn records (writers that died mid-write) skipped in this chunk. */
  torn: number;
}

/**
 * The line of an event. Throws, writing nothing, when the event is not one the log's schema accepts:
 * a line that every reader would refuse must never reach the log.
 */
export function serializeEvent(event: LogRecord): string {
  const checked = eventSchema.safeParse(event);
  if (!checked.success)
    throw new Error(`refusing to append an event the execution log's schema refuses (a bug): ${z.prettifyError(checked.error).replace(/\n/g, ' ')}`);
  // `type` must come first: RECORD_MARK is how a torn line is split. Events are built with it first;
  // one that is not is copied in that order.
  const text = JSON.stringify(event);
  if (text.startsWith(RECORD_MARK)) return `${text}\n`;
  const { type, ...rest } = event;
  return `${JSON.stringify({ type, ...rest })}\n`;
}

/**
 * Lines this process appended and has not read back yet, with the events they hold, validated when they
 * were written: read back, they are taken as they are, not parsed and validated a second time. Bounded:
 * lines never read back (written to a log that was then replaced) are forgotten past a limit.
 */
export class OwnLines {
  private readonly lines = new Map<string, LogRecord>();

  remember(line: string, event: LogRecord): void {
    if (this.lines.size >= 10_000) this.lines.clear();
    this.lines.set(line, event);
  }

  take(line: string): LogRecord | undefined {
    const event = this.lines.get(line);
    if (event !== undefined) this.lines.delete(line);
    return event;
  }
}

/** Parses complete lines (without their newlines). `firstLine` is the 1-based number of lines[0]. */
export function parseLines(file: string, lines: string[], firstLine: number, own?: OwnLines): LogChunk {
  const events: FoldRecord[] = [];
  let header: LogHeader | undefined;
  let seal: Seal | undefined;
  let torn = 0;
  const take = (record: LogRecord, lineNo: number) => {
    if (seal !== undefined) return;
    if (record.type === 'sealed') seal = record;
    else if (record.type !== 'log') events.push(record);
    else if (lineNo === 1) header = record;
    else throw new DamagedFileError(file, `line ${lineNo}`, 'a log header in the middle of the log: two logs were joined');
  };
  lines.forEach((line, index) => {
    if (line.length === 0 || seal !== undefined) return;
    const lineNo = firstLine + index;
    const mine = own?.take(line);
    if (mine !== undefined) {
      take(mine, lineNo);
      return;
    }
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
  const chunk: LogChunk = { events, torn };
  if (header !== undefined) chunk.header = header;
  if (seal !== undefined) chunk.seal = seal;
  return chunk;
}

/** The writer's file is no longer the one at the log's path, or not the one its readers read. */
export class LogFileChanged extends Error {
  constructor(file: string) {
    super(`${file} is not the file this process was reading`);
    this.name = 'LogFileChanged';
  }
}

/**
 * Thrown when the log moved on by more than one generation since this reader last read it (two
 * compactions): it cannot go on from where it was, and must read the new log from its start.
 */
export class LogMovedOn extends Error {
  constructor(file: string) {
    super(`${file} was compacted more than once since it was last read: reading it again from the start`);
    this.name = 'LogMovedOn';
  }
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
  /** The seal this reader reached: its successor (the next generation) is where reading goes on. */
  private sealed: Seal | undefined;
  /** Generations this reader moved on to (see followSuccessor). */
  switches = 0;

  /** `from`: where to start, a position an earlier reader of the same file reached; `own`: what this process wrote. */
  constructor(
    readonly file: string,
    from: LogPosition = { inode: undefined, offset: 0, line: 1 },
    private readonly own?: OwnLines,
  ) {
    this.inode = from.inode;
    this.offset = from.offset;
    this.lineNo = from.line;
  }

  /** The end of the last complete line read, and the file it was read from. */
  position(): LogPosition {
    return { inode: this.inode, offset: this.offset - this.pending.length, line: this.lineNo };
  }

  /**
   * The records appended since the last read. With `onRecord`, each is handed over as its piece of the
   * file is parsed, and none are kept: reading a log of any size then holds one piece at a time.
   */
  readNew(onRecord?: (record: FoldRecord) => void): FoldRecord[] {
    if (onRecord === undefined) {
      const all: FoldRecord[] = [];
      this.readNew((record) => all.push(record));
      return all;
    }
    this.readNewInto(onRecord);
    return [];
  }

  private readNewInto(onRecord: (record: FoldRecord) => void): void {
    if (this.sealed !== undefined) {
      this.followSuccessor(onRecord);
      return;
    }
    let size: number;
    try {
      const info = statSync(this.file);
      if (this.fd === undefined) {
        if (this.inode !== undefined && info.ino !== this.inode) {
          throw new DamagedFileError(this.file, 'whole file', 'it was replaced while it was being read; an execution log is only ever appended to');
        }
        this.fd = openSync(this.file, 'r');
        this.inode = fstatSync(this.fd).ino;
        if (this.inode !== info.ino) {
          this.readNewInto(onRecord);
          return;
        }
      } else if (info.ino !== this.inode) {
        // Another file at the path: what is left of ours is read first. A compaction sealed it before.
        this.readTo(fstatSync(this.fd).size, onRecord);
        if (this.sealed !== undefined) {
          this.followSuccessor(onRecord);
          return;
        }
        throw new DamagedFileError(this.file, 'whole file', 'it was replaced while in use; an execution log is only ever appended to');
      }
      size = info.size;
    } catch (error) {
      if (error instanceof DamagedFileError || error instanceof LogMovedOn) throw error;
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        if (this.inode === undefined && this.offset === 0) return;
        throw new DamagedFileError(this.file, 'whole file', 'it was deleted or moved away while in use; an execution log is never removed');
      }
      throw ioError('read', this.file, error);
    }
    if (size < this.offset) {
      throw new DamagedFileError(this.file, `byte ${size}`, `it shrank from ${this.offset} bytes; an execution log is only ever appended to`);
    }
    this.readTo(size, onRecord);
    if (this.sealed !== undefined) this.followSuccessor(onRecord);
  }

  /**
   * Reads this reader's file from where it is to `size`, in pieces of at most READ_PIECE_BYTES: a log is
   * never one buffer or one string (a JavaScript string cannot pass 512 MiB).
   */
  private readTo(size: number, onRecord: (record: FoldRecord) => void): void {
    while (size > this.offset && this.sealed === undefined) {
      const fresh = Buffer.allocUnsafe(Math.min(READ_PIECE_BYTES, size - this.offset));
      let filled = 0;
      try {
        while (filled < fresh.length) {
          const bytesRead = readSync(this.fd!, fresh, filled, fresh.length - filled, this.offset + filled);
          if (bytesRead === 0) break;
          filled += bytesRead;
        }
      } catch (error) {
        throw ioError('read', this.file, error);
      }
      if (filled === 0) return;
      for (const record of this.consume(fresh.subarray(0, filled))) onRecord(record);
    }
  }

  /**
   * After a seal: the next generation, once `worker compact` put it in place, is read from where what it
   * compacted ends, since this reader folded all of that already. Until it is in place, nothing is new.
   */
  private followSuccessor(onRecord: (record: FoldRecord) => void): void {
    const sealed = this.sealed!;
    let info: Stats;
    try {
      info = statSync(this.file);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('read', this.file, error);
      throw new DamagedFileError(this.file, 'whole file', 'it was deleted or moved away while in use; an execution log is never removed');
    }
    if (info.ino === this.inode) return;
    const header = readHeader(this.file);
    const ours = header !== undefined && (this.header === undefined || header.queue === this.header.queue);
    if (!ours) throw new DamagedFileError(this.file, 'whole file', "it was replaced by a file that is not the next generation of this queue's log");
    if (header.generation !== sealed.generation + 1 || header.continues_at === undefined) throw new LogMovedOn(this.file);
    const fd = openSync(this.file, 'r');
    if (fstatSync(fd).ino !== info.ino) {
      closeSync(fd);
      throw new LogMovedOn(this.file);
    }
    this.close();
    this.fd = fd;
    this.inode = info.ino;
    this.offset = header.continues_at.offset;
    this.lineNo = header.continues_at.line;
    this.pending = Buffer.alloc(0);
    this.header = header;
    this.sealed = undefined;
    this.switches += 1;
    this.readNewInto(onRecord);
  }

  /**
   * The events appended since the last read, read from where it ended, without looking at the file: for
   * re-checks inside a claim, several per task. readNew, once per task, checks that it was not replaced
   * or shrunk (a stat cost as much as the read).
   */
  readAppended(): FoldRecord[] {
    if (this.fd === undefined || this.sealed !== undefined) return this.readNew();
    let bytesRead: number;
    try {
      bytesRead = readSync(this.fd, this.scratch, 0, this.scratch.length, this.offset);
    } catch (error) {
      throw ioError('read', this.file, error);
    }
    if (bytesRead === 0) return [];
    // consume keeps copies of what it holds on to: the scratch buffer serves the next read.
    const events = this.consume(this.scratch.subarray(0, bytesRead));
    // More was appended than the buffer holds, or a seal ends this file: the rest is read with the checks.
    return bytesRead < this.scratch.length && this.sealed === undefined ? events : [...events, ...this.readNew()];
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  /** Whether this reader reached a seal whose successor is not in place yet: nothing may be appended meanwhile. */
  get waitingForSuccessor(): boolean {
    return this.sealed !== undefined;
  }

  /** Parses first, then moves on: a damaged line leaves the reader where it was, to be read again. */
  private consume(fresh: Buffer): FoldRecord[] {
    const data = this.pending.length > 0 ? Buffer.concat([this.pending, fresh]) : fresh;
    const lastNewline = data.lastIndexOf(NEWLINE);
    const lines = lastNewline === -1 ? [] : data.subarray(0, lastNewline).toString('utf8').split('\n');
    const chunk = parseLines(this.file, lines, this.lineNo, this.own);
    if (chunk.header !== undefined) this.header = chunk.header;
    if (chunk.seal !== undefined) this.sealed = chunk.seal;
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
 * and a log deleted, replaced or shrunk since is refused (an fstat per outcome; see append).
 */
export class ExecutionLogWriter {
  private fd: number | undefined;
  /** The inode of the file `fd` was opened on. */
  private inode: number | undefined;

  /** `own`: where the lines it writes are remembered, for the reader of the same process (see OwnLines). */
  constructor(
    readonly file: string,
    private readonly own?: OwnLines,
  ) {}

  /**
   * `verify`: also check with an fstat that the file was not deleted or shrunk since `expected` was read
   * (the store skips it for claims, which follow a full read closely). That it is the file at `expected`
   * (same inode: not an earlier generation) is always checked, from what was seen when it was opened.
   */
  append(events: readonly LogRecord[], expected?: LogPosition, verify = true): void {
    const lines = events.map(serializeEvent);
    const bytes = Buffer.from(lines.join(''), 'utf8');
    try {
      if (this.fd === undefined) {
        // A log its readers have seen is never created again: gone is gone.
        this.fd = openSync(this.file, expected?.inode === undefined ? 'a' : constants.O_WRONLY | constants.O_APPEND);
        this.inode = fstatSync(this.fd).ino;
      }
      // Not the file its readers read (compacted since, or gone): the store decides, having read on.
      if (expected?.inode !== undefined && this.inode !== expected.inode) throw new LogFileChanged(this.file);
      if (verify && expected?.inode !== undefined) {
        const info = fstatSync(this.fd);
        if (info.nlink === 0) throw new LogFileChanged(this.file);
        if (info.size < expected.offset) {
          throw new DamagedFileError(
            this.file,
            'whole file',
            `it shrank from ${expected.offset} to ${info.size} bytes while in use; nothing more is written to it, and an execution log is only ever appended to`,
          );
        }
      }
      let written = 0;
      while (written < bytes.length) written += writeSync(this.fd, bytes, written, bytes.length - written);
      if (this.own) {
        for (const [i, event] of events.entries()) this.own.remember(lines[i]!.slice(0, -1), event);
      }
    } catch (error) {
      this.close();
      if (error instanceof DamagedFileError || error instanceof LogFileChanged) throw error;
      if ((error as NodeJS.ErrnoException).code === 'ENOENT' && expected?.inode !== undefined) {
        throw new DamagedFileError(
          this.file,
          'whole file',
          'it was deleted or moved away while in use; nothing more is written, and an execution log is never removed',
        );
      }
      throw ioError('append to', this.file, error);
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** The first line of a log file, if it is a valid header. */
export function readHeader(file: string): LogHeader | undefined {
  let text: string;
  try {
    const fd = openSync(file, 'r');
    try {
      const buffer = Buffer.alloc(1024);
      text = buffer.subarray(0, readSync(fd, buffer, 0, buffer.length, 0)).toString('utf8');
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError('read', file, error);
  }
  const newline = text.indexOf('\n');
  if (newline === -1) return undefined;
  try {
    const parsed = logHeaderSchema.safeParse(JSON.parse(text.slice(0, newline)));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
