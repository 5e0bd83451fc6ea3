/**
 * queue.json's format: how this tool lays it out (one task per line), and the parsers that read it: line
 * by line in that layout, whole for a file formatted by hand, ids alone for adding, and ancestry alone
 * (backwards) for the history of one task. Every whole-file parser agrees on a file, or all refuse it.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import * as z from 'zod/mini';
import { DamagedFileError, ioError } from '../errors.js';
import { QUEUE_FORMAT_VERSION, queueFileSchema, queueHeaderSchema, taskDefinitionSchema } from './schema.js';
import type { QueueContents, TaskDefinition, TaskHead } from '../types.js';
import { CHUNK_BYTES, type Line, chunksOf, fileChunks, linesOf, readFileBytes } from './fileBytes.js';

export const FILE_END = '\n]}\n';
export const FILE_END_BYTES = Buffer.from(FILE_END);

/** The whole file, built line by line as bytes (see append). */
export function formatQueueFile(contents: QueueContents): Buffer {
  const header = contents.removed.size > 0 ? { version: QUEUE_FORMAT_VERSION, removed: [...contents.removed] } : { version: QUEUE_FORMAT_VERSION };
  const lines = contents.tasks.map((task, i) => Buffer.from(`${i === 0 ? '' : ',\n'}${JSON.stringify(task)}`));
  return Buffer.concat([Buffer.from(`${JSON.stringify(header).slice(0, -1)},"tasks":[\n`), ...lines, FILE_END_BYTES]);
}

/**
 * Ids and removed ids of a file in the layout this tool writes, or undefined for any other layout. The
 * bytes are searched as they are, never made one string (which cannot pass 512 MiB), and only ids and
 * the header, which are ASCII (schema.ts), are decoded.
 */
export function scanIds(bytes: Buffer): { ids: string[]; removed: ReadonlySet<string> } | undefined {
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
export function removedIdsOf(headerLine: string): ReadonlySet<string> | undefined {
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
    if (position < footer.length || readSync(fd, footer, 0, footer.length, position - footer.length) !== footer.length || !footer.equals(FILE_END_BYTES))
      return undefined;
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
export function idOfLine(data: Buffer, start: number, end: number): string | undefined {
  if (end - start < ID_START_BYTES.length || data.compare(ID_START_BYTES, 0, ID_START_BYTES.length, start, start + ID_START_BYTES.length) !== 0)
    return undefined;
  const idEnd = data.indexOf(QUOTE_BYTE, start + ID_START_BYTES.length);
  return idEnd === -1 || idEnd > end ? undefined : data.toString('latin1', start + ID_START_BYTES.length, idEnd);
}

export const ID_START = '{"id":"';
export const ID_START_BYTES = Buffer.from(ID_START);
export const NEWLINE_BYTE = 0x0a;
export const QUOTE_BYTE = 0x22;

/**
 * Checks ids and dependencies: each id once, not a removed one, each dependency defined before it. For
 * tasks read after others, `isDefined` tells the ids before them and `firstIndex` their place in the file.
 */
export function checkDefinitions<C extends QueueContents<TaskHead>>(
  file: string,
  contents: C,
  isDefined: (id: string) => boolean = () => false,
  firstIndex = 0,
): C {
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

/** The header and the last task's line of a file in the layout that add extends: where new tasks start. */
export interface AppendPoint {
  header: string;
  last: { text: string; span: LineSpan };
}

/** Where a task's definition is in queue.json: the bytes of its JSON object. */
export interface LineSpan {
  offset: number;
  length: number;
}

export interface ParsedLines<T extends TaskHead> extends QueueContents<T> {
  /** Where tasks added later start; undefined when there are no tasks, or no line per task. */
  end: AppendPoint | undefined;
}

/**
 * A whole queue.json, validated: line by line in the layout this tool writes, else parsed whole (a file
 * formatted by hand), which also names the place of any damage. `keep` decides what of each task stays;
 * it is given the task's line, or undefined in the whole parse.
 */
export function parseQueue<T extends TaskHead>(
  file: string,
  chunks: Iterable<Buffer>,
  wholeText: () => string,
  keep: (task: TaskDefinition, span: LineSpan | undefined) => T,
  trusted = false,
): ParsedLines<T> {
  const byLine = parseLineByLine(file, linesOf(chunks), keep, { trusted });
  if (byLine !== undefined) return checkDefinitions(file, byLine);
  const whole = checkDefinitions(file, parseWhole(file, wholeText()));
  return { tasks: whole.tasks.map((task) => keep(task, undefined)), removed: whole.removed, end: undefined };
}

/** queue.json as it is on disk now, a megabyte at a time (see parseQueue). */
export function readQueue<T extends TaskHead>(file: string, keep: (task: TaskDefinition, span: LineSpan | undefined) => T, trusted = false): ParsedLines<T> {
  return parseQueue(file, fileChunks(file), () => readFileBytes(file)?.toString('utf8') ?? '', keep, trusted);
}

/** Keeps whole definitions: for commands that show them. Tasks added together share strings (see compact). */
export function keepWholeDefinitions(): (task: TaskDefinition) => TaskDefinition {
  const addedTimes = new Map<string, string>();
  return (task) => compact(task, addedTimes);
}

/** Where parsing starts when it starts after tasks already read: their header, removed ids, and counts. */
export interface ParseStart {
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
export function parseLineByLine<T extends TaskHead>(
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
export function parseTaskLine(
  text: string,
  trusted = false,
): { success: true; data: TaskDefinition } | { success: false; error: z.core.$ZodError } | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  return trusted ? { success: true, data: raw as TaskDefinition } : taskDefinitionSchema.safeParse(raw);
}

export const NO_DEPS: string[] = [];

/** Tasks added together share one added_at string, and tasks without dependencies one empty array. */
export function compact(task: TaskDefinition, addedTimes: Map<string, string>): TaskDefinition {
  const time = addedTimes.get(task.added_at);
  if (time === undefined) addedTimes.set(task.added_at, task.added_at);
  else task.added_at = time;
  if (task.deps.length === 0) task.deps = NO_DEPS;
  return task;
}

export function parseWhole(file: string, text: string): QueueContents {
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

export function describeZodError(error: Parameters<typeof z.prettifyError>[0]): string {
  return z.prettifyError(error).split('\n').slice(0, 4).join(' ').replace(/\s+/g, ' ');
}

export function describeJsonPosition(text: string, error: unknown): string {
  const match = /position (\d+)/.exec(error instanceof Error ? error.message : '');
  const position = match ? Number(match[1]) : text.length;
  const line = text.slice(0, position).split('\n').length;
  return `line ${line}, character ${position} of ${text.length}`;
}

export function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return 'the top level';
  return path.map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`)).join('');
}
