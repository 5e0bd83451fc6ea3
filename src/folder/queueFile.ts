import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import writeFileAtomic from 'write-file-atomic';
import * as z from 'zod/mini';
import { DamagedFileError, ioError } from '../errors.js';
import { QUEUE_FORMAT_VERSION, queueFileSchema, queueHeaderSchema, taskDefinitionSchema, } from './schema.js';
import type { QueueContents, TaskDefinition, TaskHead } from '../types.js';

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
function versionOf(file: string): QueueFileVersion | null {
  try {
    const info = statSync(file, { bigint: true });
    return { ino: String(info.ino), size: Number(info.size), ctimeNs: String(info.ctimeNs) };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError('read', file, error);
  }
}

function sameVersion(a: QueueFileVersion, b: QueueFileVersion): boolean {
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

/** The header and the last task's line of a file in the layout that add extends: where new tasks start. */
interface AppendPoint {
  header: string;
  last: { text: string; span: LineSpan };
}

/** The version of queue.json a QueueIndex last read. */
interface KnownVersion {
  version: QueueFileVersion;
  contents: QueueContents<IndexedTask>;
  /** Undefined for a file in another layout (formatted by hand) or with no tasks: it is read whole when it changes. */
  end: AppendPoint | undefined;
}

/** A task as a worker keeps it: what the fold needs, and where the rest of its definition is (offset -1: not on a line of its own). */
export interface IndexedTask extends TaskHead, LineSpan {}

/**
 * What a worker keeps of queue.json: each task's id, dependencies, time added, and where its line is.
 * Instructions, however long, stay in the file: a definition is read (and validated again) when its task
 * is claimed. `worker add` only ever extends the file, so when the header and the last known task are
 * still where they were, only the lines after them are read, by the same parser and checks as a whole
 * read: what an add costs a running worker is the size of what was added, not of the queue. Anything
 * else (worker clean, an edit, a new line that fails the checks) is read whole again.
 */
export class QueueIndex {
  private known: KnownVersion | undefined;
  /** Whole definitions of a file not in the one-task-per-line layout (formatted by hand), which has no line positions. */
  private whole = new Map<string, TaskDefinition>();
  private readonly addedTimes = new Map<string, string>();
  private definitionsFd: number | undefined;

  /** `soundVersion`: the version of the file that `worker add` last validated whole (see checkedRecord.ts), if any. */
  constructor(readonly file: string, private readonly soundVersion: () => QueueFileVersion | null = () => null) {}

  /**
   * The tasks, validated. `isDefined` tells the ids known before, which tasks added since may depend on.
   * `rebuilt` when the file was read whole: positions of known tasks may have moved.
   */
  read(isDefined: (id: string) => boolean): { contents: QueueContents<IndexedTask>; rebuilt: boolean } {
    const version = versionOf(this.file);
    if (this.known && version && sameVersion(this.known.version, version)) return { contents: this.known.contents, rebuilt: false };
    // Another version: definitions are read from it from now on (an edit by hand shows at once).
    this.closeDefinitions();
    const known = this.known;
    this.known = undefined;
    if (version === null) return { contents: { tasks: [], removed: new Set() }, rebuilt: false };
    if (known?.end && this.readAppended(known, known.end, isDefined)) {
      this.known = { ...known, version };
      return { contents: known.contents, rebuilt: false };
    }
    const parsed = this.readWhole(version);
    this.known = { version, contents: parsed, end: parsed.end };
    return { contents: parsed, rebuilt: true };
  }

  /**
   * The whole file. The version `worker add` validated is only parsed, not validated again (~80 ms of a
   * worker's start at 10,000 tasks), and only if the file stayed that version while it was read; a
   * definition is validated anyway when its task is claimed.
   */
  private readWhole(version: QueueFileVersion): ParsedLines<IndexedTask> {
    const sound = this.soundVersion();
    if (sound !== null && sameVersion(sound, version)) {
      const parsed = this.parseWhole(true);
      const after = versionOf(this.file);
      if (after !== null && sameVersion(after, version)) return parsed;
    }
    return this.parseWhole(false);
  }

  private parseWhole(trusted: boolean): ParsedLines<IndexedTask> {
    this.whole = new Map();
    return readQueue(this.file, (task, span) => this.keep(task, span), trusted);
  }

  /**
   * A task's whole definition, or null when its line is not there any more (the file was rewritten since).
   * Read through a descriptor kept open: an older version of the file, still open, holds the same line for
   * every task it had (add only appends, clean only removes); tasks added since are read after reopening.
   */
  definitionOf(task: IndexedTask): TaskDefinition | null {
    if (task.offset < 0) return this.whole.get(task.id) ?? null;
    return this.definitionAt(task) ?? (this.closeDefinitions(), this.definitionAt(task));
  }

  /** Lets go of the file (a worker that stops). */
  close(): void {
    this.closeDefinitions();
  }

  private definitionAt(task: IndexedTask): TaskDefinition | null {
    try {
      this.definitionsFd ??= openSync(this.file, 'r');
    } catch {
      return null;
    }
    const text = readBytesAt(this.definitionsFd, task.offset, task.length);
    const parsed = text === null ? undefined : parseTaskLine(text);
    return parsed?.success && parsed.data.id === task.id ? parsed.data : null;
  }

  private closeDefinitions(): void {
    if (this.definitionsFd !== undefined) closeSync(this.definitionsFd);
    this.definitionsFd = undefined;
  }

  /** What is kept of a task: its line's place, or, in a file without one line per task, its whole definition. */
  private keep(task: TaskDefinition, span: LineSpan | undefined): IndexedTask {
    const { id, deps, added_at } = compact(task, this.addedTimes);
    if (span === undefined) this.whole.set(id, task);
    // A literal, not a spread: every task then shares one shape with its fields in the object itself.
    return { id, deps, added_at, offset: span?.offset ?? -1, length: span?.length ?? 0 };
  }

  /**
   * Reads the tasks after the last known one, if the file is the known one extended; false when it is not.
   * The new lines go through the whole read's parser and checks.
   */
  private readAppended(known: KnownVersion, end: AppendPoint, isDefined: (id: string) => boolean): boolean {
    let fd: number;
    try {
      fd = openSync(this.file, 'r');
    } catch {
      return false;
    }
    // One descriptor for the checks and the read: all of them see the same file.
    try {
      const { header, last } = end;
      if (readBytesAt(fd, 0, Buffer.byteLength(header) + 1) !== `${header}\n`) return false;
      if (readBytesAt(fd, last.span.offset, last.span.length + 2) !== `${last.text},\n`) return false;
      const before = known.contents.tasks.length;
      const from = last.span.offset + last.span.length + 2;
      const start = { header, removed: known.contents.removed, lines: before + 1, tasks: before };
      const added = parseLineByLine(this.file, linesOf(chunksOf(fd, this.file, from), from), (task, span) => this.keep(task, span), { start });
      if (added === undefined || added.end === undefined) return false;
      try {
        checkDefinitions(this.file, added, isDefined, before);
      } catch (error) {
        // Read whole, the file says where it is damaged, whatever this worker knew before.
        if (error instanceof DamagedFileError) return false;
        throw error;
      }
      for (const task of added.tasks) known.contents.tasks.push(task);
      end.last = added.end.last;
      return true;
    } finally {
      closeSync(fd);
    }
  }
}

/** `length` bytes of an open file from `offset`, as text; null when the file is shorter. */
function readBytesAt(fd: number, offset: number, length: number): string | null {
  try {
    const buffer = Buffer.allocUnsafe(length);
    const read = readSync(fd, buffer, 0, length, offset);
    return read === length ? buffer.toString('utf8') : null;
  } catch {
    return null;
  }
}

const FILE_END = '\n]}\n';
const FILE_END_BYTES = Buffer.from(FILE_END);

/** The whole file, built line by line as bytes (see append). */
function formatQueueFile(contents: QueueContents): Buffer {
  const header = contents.removed.size > 0 ? { version: QUEUE_FORMAT_VERSION, removed: [...contents.removed] } : { version: QUEUE_FORMAT_VERSION };
  const lines = contents.tasks.map((task, i) => Buffer.from(`${i === 0 ? '' : ',\n'}${JSON.stringify(task)}`));
  return Buffer.concat([Buffer.from(`${JSON.stringify(header).slice(0, -1)},"tasks":[\n`), ...lines, FILE_END_BYTES]);
}

/**
 * Ids and removed ids of a file in the layout this tool writes, or undefined for any other layout. The
 * bytes are searched as they are, never made one string (which cannot pass 512 MiB), and only ids and
 * the header, which are ASCII (schema.ts), are decoded.
 */
function scanIds(bytes: Buffer): { ids: string[]; removed: ReadonlySet<string> } | undefined {
  const headerEnd = bytes.indexOf(NEWLINE_BYTE);
  if (headerEnd === -1 || !bytes.subarray(-FILE_END_BYTES.length).equals(FILE_END_BYTES)) return undefined;
  const removed = removedIdsOf(bytes.toString('latin1', 0, headerEnd));
  if (removed === undefined) return undefined;
  const ids: string[] = [];
  const tasksEnd = bytes.length - FILE_END_BYTES.length + 1; // where the footer line starts
  for (let start = headerEnd + 1; start < tasksEnd; ) {
    const end = bytes.indexOf(NEWLINE_BYTE, start);
    if (end === start && ids.length === 0 && end + 1 === tasksEnd) break; // a queue with no tasks yet
    const id = idOfLine(bytes, start, end);
    if (id === undefined) return undefined;
    ids.push(id);
    start = end + 1;
  }
  return { ids, removed };
}

/** The removed ids of queue.json's first line (`{"version":1,"removed":[…],"tasks":[`); undefined when it is not that. */
function removedIdsOf(headerLine: string): ReadonlySet<string> | undefined {
  try {
    return new Set((JSON.parse(`${headerLine}]}`) as { removed?: string[] }).removed ?? []);
  } catch {
    return undefined;
  }
}

/**
 * Tasks and every task they depend on, directly or through others, from a file in the layout this tool
 * writes (those that are not there are left out); undefined for another layout. Read backwards from the end a
 * megabyte at a time, keeping only those lines: dependencies come before their dependents, so the scan
 * stops at the last one needed, and what it holds is the size of the task's ancestry, not of the queue.
 */
export function readAncestry(file: string, ids: Iterable<string>): TaskHead[] | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError('read', file, error);
  }
  try {
    const wanted = new Set(ids);
    const found: TaskHead[] = [];
    let position = fstatSync(fd).size;
    // Only a file in this tool's layout is read this way: anything else is read whole by the caller.
    const footer = Buffer.alloc(FILE_END_BYTES.length);
    if (position < footer.length || readSync(fd, footer, 0, footer.length, position - footer.length) !== footer.length || !footer.equals(FILE_END_BYTES)) return undefined;
    let tail = Buffer.alloc(0); // the start of a line whose beginning is in the part not read yet
    while (position > 0 && found.length < wanted.size) {
      const length = Math.min(CHUNK_BYTES, position);
      position -= length;
      const chunk = Buffer.allocUnsafe(length);
      readSync(fd, chunk, 0, length, position);
      const data = tail.length > 0 ? Buffer.concat([chunk, tail]) : chunk;
      let end = data.length;
      const newlineBefore = (at: number) => (at <= 0 ? -1 : data.lastIndexOf(NEWLINE_BYTE, at - 1));
      for (let newline = newlineBefore(end); newline !== -1 || position === 0; newline = newlineBefore(end)) {
        const start = newline + 1;
        const lineId = idOfLine(data, start, end);
        if (lineId !== undefined && wanted.has(lineId)) {
          const text = data.toString('utf8', start, end).replace(/,$/, '');
          const task = JSON.parse(text) as TaskDefinition;
          found.push({ id: task.id, deps: task.deps, added_at: task.added_at });
          for (const dep of task.deps) wanted.add(dep);
        }
        end = newline;
        if (newline === -1) break;
      }
      tail = Buffer.from(data.subarray(0, Math.max(0, end)));
    }
    return found.reverse();
  } catch (error) {
    if (error instanceof SyntaxError) return undefined;
    throw ioError('read', file, error);
  } finally {
    closeSync(fd);
  }
}

/** The ids `clean` removed, from queue.json's first line; none when there is no file. */
export function readRemovedIds(file: string): ReadonlySet<string> {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw ioError('read', file, error);
  }
  try {
    let header = '';
    for (const chunk of chunksOf(fd, file)) {
      const newline = chunk.indexOf(NEWLINE_BYTE);
      header += chunk.toString('latin1', 0, newline === -1 ? chunk.length : newline);
      if (newline !== -1) break;
    }
    return removedIdsOf(header) ?? new Set();
  } finally {
    closeSync(fd);
  }
}

/**
 * The id of a task line (`{"id":"…",…`) between `start` and `end`, or undefined for any other line. Ids
 * hold no quotes or backslashes (schema.ts), so the first quote after `{"id":"` ends one.
 */
function idOfLine(data: Buffer, start: number, end: number): string | undefined {
  if (end - start < ID_START_BYTES.length || data.compare(ID_START_BYTES, 0, ID_START_BYTES.length, start, start + ID_START_BYTES.length) !== 0) return undefined;
  const idEnd = data.indexOf(QUOTE_BYTE, start + ID_START_BYTES.length);
  return idEnd === -1 || idEnd > end ? undefined : data.toString('latin1', start + ID_START_BYTES.length, idEnd);
}

const ID_START = '{"id":"';
const ID_START_BYTES = Buffer.from(ID_START);
const NEWLINE_BYTE = 0x0a;
const QUOTE_BYTE = 0x22;

/** A buffer in pieces of CHUNK_BYTES, for the line reader: a whole file is never decoded as one string. */
function* piecesOf(bytes: Buffer): Generator<Buffer> {
  for (let start = 0; start < bytes.length; start += CHUNK_BYTES) yield bytes.subarray(start, start + CHUNK_BYTES);
}

/** A file's bytes, or null when there is no file (an empty one is damage, found by parsing). */
function readFileBytes(file: string): Buffer | null {
  try {
    return readFileSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError('read', file, error);
  }
}

/**
 * Checks ids and dependencies: each id once, not a removed one, each dependency defined before it. For
 * tasks read after others, `isDefined` tells the ids before them and `firstIndex` their place in the file.
 */
function checkDefinitions<C extends QueueContents<TaskHead>>(file: string, contents: C, isDefined: (id: string) => boolean = () => false, firstIndex = 0): C {
  const seen = new Set<string>();
  const defined = (id: string) => seen.has(id) || isDefined(id);
  contents.tasks.forEach((task, i) => {
    const at = `at tasks[${firstIndex + i}]`;
    if (defined(task.id)) throw new DamagedFileError(file, `${at}.id`, `task id "${task.id}" appears twice`);
    if (contents.removed.has(task.id)) throw new DamagedFileError(file, `${at}.id`, `task id "${task.id}" is also listed as removed`);
    for (const dep of task.deps) {
      if (!defined(dep)) {
        throw new DamagedFileError(file, `${at}.deps`, `task "${task.id}" depends on "${dep}", which is not defined before it`);
      }
    }
    seen.add(task.id);
  });
  return contents;
}

const CHUNK_BYTES = 1 << 20;

/** One line of queue.json: its text, without the newline, the byte offset where it starts, and its length in bytes. */
interface Line {
  text: string;
  offset: number;
  bytes: number;
}

/**
 * A file, a megabyte at a time: a large queue.json is never held whole in memory beside
 * its parsed tasks (100,000 tasks: ~30 MB less at a worker's start). Each chunk is used before the next.
 */
function* fileChunks(file: string): Generator<Buffer> {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    throw ioError('read', file, error);
  }
  try {
    yield* chunksOf(fd, file);
  } finally {
    closeSync(fd);
  }
}

/** The chunks of an open file from byte `from` (`file` names it in errors). */
function* chunksOf(fd: number, file: string, from = 0): Generator<Buffer> {
  const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  for (let position = from; ; ) {
    let bytes: number;
    try {
      bytes = readSync(fd, chunk, 0, CHUNK_BYTES, position);
    } catch (error) {
      throw ioError('read', file, error);
    }
    if (bytes === 0) return;
    position += bytes;
    yield chunk.subarray(0, bytes);
  }
}

/** The lines of UTF-8 bytes that start at byte `from` of their file, with the offset of each. */
function* linesOf(chunks: Iterable<Buffer>, from = 0): Generator<Line> {
  const decoder = new StringDecoder('utf8');
  let rest = '';
  let offset = from;
  for (const chunk of chunks) {
    const lines = (rest + decoder.write(chunk)).split('\n');
    rest = lines.pop()!;
    for (const text of lines) {
      const bytes = Buffer.byteLength(text);
      yield { text, offset, bytes };
      offset += bytes + 1;
    }
  }
  const last = rest + decoder.end();
  yield { text: last, offset, bytes: Buffer.byteLength(last) };
}

/** Where a task's definition is in queue.json: the bytes of its JSON object. */
export interface LineSpan {
  offset: number;
  length: number;
}

interface ParsedLines<T extends TaskHead> extends QueueContents<T> {
  /** Where tasks added later start; undefined when there are no tasks, or no line per task. */
  end: AppendPoint | undefined;
}

/**
 * A whole queue.json, validated: line by line in the layout this tool writes, else parsed whole (a file
 * formatted by hand), which also names the place of any damage. `keep` decides what of each task stays;
 * it is given the task's line, or undefined in the whole parse.
 */
function parseQueue<T extends TaskHead>(file: string, chunks: Iterable<Buffer>, wholeText: () => string, keep: (task: TaskDefinition, span: LineSpan | undefined) => T, trusted = false): ParsedLines<T> {
  const byLine = parseLineByLine(file, linesOf(chunks), keep, { trusted });
  if (byLine !== undefined) return checkDefinitions(file, byLine);
  const whole = checkDefinitions(file, parseWhole(file, wholeText()));
  return { tasks: whole.tasks.map((task) => keep(task, undefined)), removed: whole.removed, end: undefined };
}

/** queue.json as it is on disk now, a megabyte at a time (see parseQueue). */
function readQueue<T extends TaskHead>(file: string, keep: (task: TaskDefinition, span: LineSpan | undefined) => T, trusted = false): ParsedLines<T> {
  return parseQueue(file, fileChunks(file), () => readFileBytes(file)?.toString('utf8') ?? '', keep, trusted);
}

/** Keeps whole definitions: for commands that show them. Tasks added together share strings (see compact). */
function keepWholeDefinitions(): (task: TaskDefinition) => TaskDefinition {
  const addedTimes = new Map<string, string>();
  return (task) => compact(task, addedTimes);
}

/** Where parsing starts when it starts after tasks already read: their header, removed ids, and counts. */
interface ParseStart {
  header: string;
  removed: ReadonlySet<string>;
  /** Lines and tasks before the first line given. */
  lines: number;
  tasks: number;
}

/**
 * The layout this tool writes: a header line, one task per line, each but the last ending with a comma,
 * and a footer. Parsing one line at a time keeps a single raw object alive at once. With `start`, the
 * lines given follow a task line that ends with a comma; `trusted`: see parseTaskLine. Undefined for any
 * other layout (a file formatted by hand, or cut short): the whole-file parse then decides.
 */
function parseLineByLine<T extends TaskHead>(
  file: string,
  lines: Iterable<Line>,
  keep: (task: TaskDefinition, span: LineSpan) => T,
  { start, trusted = false }: { start?: ParseStart; trusted?: boolean } = {},
): ParsedLines<T> | undefined {
  let header = start?.header;
  let removed = start?.removed;
  const tasks: T[] = [];
  let last: AppendPoint['last'] | undefined;
  let lineNo = start?.lines ?? 0;
  let state: 'header' | 'tasks' | 'end' = start ? 'tasks' : 'header';
  // Whether the line before ended with a comma, so that a task must follow; and whether one may.
  let commaBefore = start !== undefined;
  let open = true;
  for (const { text: line, offset, bytes } of lines) {
    lineNo += 1;
    if (state === 'header') {
      if (!line.endsWith('"tasks":[')) return undefined;
      let rawHeader: unknown;
      try {
        rawHeader = JSON.parse(`${line}]}`);
      } catch {
        return undefined;
      }
      const parsedHeader = queueHeaderSchema.safeParse(rawHeader);
      if (!parsedHeader.success) throw new DamagedFileError(file, 'line 1', describeZodError(parsedHeader.error));
      removed = new Set(parsedHeader.data.removed ?? []);
      header = line;
      state = 'tasks';
    } else if (state === 'end') {
      if (line !== '') return undefined;
    } else if (line === ']}') {
      if (commaBefore) return undefined;
      state = 'end';
    } else if (line === '' && tasks.length === 0 && !start) {
      // a queue with no tasks yet
    } else {
      if (!open) return undefined;
      commaBefore = open = line.endsWith(',');
      const text = commaBefore ? line.slice(0, -1) : line;
      const task = parseTaskLine(text, trusted);
      if (task === undefined) return undefined;
      if (!task.success) throw new DamagedFileError(file, `at tasks[${(start?.tasks ?? 0) + tasks.length}], line ${lineNo}`, describeZodError(task.error));
      const span = { offset, length: commaBefore ? bytes - 1 : bytes };
      tasks.push(keep(task.data, span));
      last = { text, span };
    }
  }
  if (state !== 'end' || header === undefined || removed === undefined) return undefined;
  return { tasks, removed, end: last && { header, last } };
}

/**
 * One task's JSON object: undefined when it is not JSON at all, a failed parse when it is not a task.
 * `trusted`: the line is in a version of the file that was validated whole, and is only parsed.
 */
function parseTaskLine(text: string, trusted = false): { success: true; data: TaskDefinition } | { success: false; error: z.core.$ZodError } | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  return trusted ? { success: true, data: raw as TaskDefinition } : taskDefinitionSchema.safeParse(raw);
}

const NO_DEPS: string[] = [];

/** Tasks added together share one added_at string, and tasks without dependencies one empty array. */
function compact(task: TaskDefinition, addedTimes: Map<string, string>): TaskDefinition {
  const time = addedTimes.get(task.added_at);
  if (time === undefined) addedTimes.set(task.added_at, task.added_at);
  else task.added_at = time;
  if (task.deps.length === 0) task.deps = NO_DEPS;
  return task;
}

function parseWhole(file: string, text: string): QueueContents {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    const where = text.length === 0 ? 'byte 0' : describeJsonPosition(text, error);
    throw new DamagedFileError(file, where, text.length === 0 ? 'the file is empty' : 'not valid JSON (truncated or overwritten?)');
  }
  const parsed = queueFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new DamagedFileError(file, `at ${formatPath(issue.path)}`, describeZodError(parsed.error));
  }
  return { tasks: parsed.data.tasks, removed: new Set(parsed.data.removed ?? []) };
}

function describeZodError(error: Parameters<typeof z.prettifyError>[0]): string {
  return z.prettifyError(error).split('\n').slice(0, 4).join(' ').replace(/\s+/g, ' ');
}

function describeJsonPosition(text: string, error: unknown): string {
  const match = /position (\d+)/.exec(error instanceof Error ? error.message : '');
  const position = match ? Number(match[1]) : text.length;
  const line = text.slice(0, position).split('\n').length;
  return `line ${line}, character ${position} of ${text.length}`;
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return 'the top level';
  return path.map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`)).join('');
}
