import { closeSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import writeFileAtomic from 'write-file-atomic';
import * as z from 'zod';
import { DamagedFileError, ioError } from '../errors.js';
import { QUEUE_FORMAT_VERSION, queueFileSchema, queueHeaderSchema, taskDefinitionSchema, type TaskDefinition } from './schema.js';

interface FileIdentity {
  ino: number;
  size: number;
  mtimeMs: number;
}

/** What queue.json holds: the tasks in the order they were added, and the ids `worker clean` removed. */
export interface QueueContents {
  tasks: TaskDefinition[];
  removed: ReadonlySet<string>;
}

/** All that adding needs of the queue: the ids taken, and the file's text to extend. */
export interface QueueIds {
  ids: string[];
  removed: ReadonlySet<string>;
  text: string;
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

const EMPTY: QueueContents = { tasks: [], removed: new Set() };

/**
 * queue/queue.json: the task definitions. Read often (cached by file identity, so an unchanged file costs
 * one stat), written rarely (add, clean), always whole and atomically (write-file-atomic), and only by the
 * holder of the queue-wide lock.
 *
 * Layout, one task per line (readable, and a diff shows what was added):
 *   {"version":1,"removed":["old-1"],"tasks":[
 *   {"id":"a",…},
 *   {"id":"b",…}
 *   ]}
 */
export class QueueFile {
  private cached: { identity: FileIdentity; contents: QueueContents } | undefined;

  constructor(readonly file: string) {}

  /** The definitions, validated. A missing file is an empty queue; a damaged one is an error, never empty. */
  read(): QueueContents {
    let identity: FileIdentity;
    try {
      const info = statSync(this.file);
      identity = { ino: info.ino, size: info.size, mtimeMs: info.mtimeMs };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY;
      throw ioError('read', this.file, error);
    }
    if (this.cached && sameIdentity(this.cached.identity, identity)) return this.cached.contents;
    const contents = checkDefinitions(this.file, parseLineByLine(this.file, readLines(this.file)) ?? parseWhole(this.file, this.readText()));
    this.cached = { identity, contents };
    return contents;
  }

  /** The version of the file now, or null when there is none. */
  version(): QueueFileVersion | null {
    try {
      const info = statSync(this.file, { bigint: true });
      return { ino: String(info.ino), size: Number(info.size), ctimeNs: String(info.ctimeNs) };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw ioError('read', this.file, error);
    }
  }

  /**
   * The ids of a file known to be sound: `checked` is a version that was read in full and validated.
   * Only its ids are picked out, without validating each task again. Null when the file is not that
   * version any more, or not in the one-task-per-line layout: the caller reads it in full.
   */
  readIdsIfUnchanged(checked: QueueFileVersion): QueueIds | null {
    const text = this.readText();
    const now = this.version();
    if (now === null || now.ino !== checked.ino || now.size !== checked.size || now.ctimeNs !== checked.ctimeNs) return null;
    const scanned = scanIds(text);
    return scanned === undefined ? null : { ...scanned, text };
  }

  /** The ids of the file, each task validated. */
  readIds(): QueueIds {
    const contents = this.read();
    return { ids: contents.tasks.map((task) => task.id), removed: contents.removed, text: contents.tasks.length > 0 ? this.readText() : '' };
  }

  /**
   * Adds tasks after the ones `existing` holds, which callers read under the queue-wide lock, so the file
   * cannot have changed since. Its text is extended rather than every task serialised again.
   */
  async append(existing: QueueIds, added: readonly TaskDefinition[]): Promise<void> {
    const lines = added.map((task) => JSON.stringify(task)).join(',\n');
    if (existing.text.endsWith(FILE_END)) await this.writeText(`${existing.text.slice(0, -FILE_END.length)},\n${lines}${FILE_END}`);
    else await this.write({ tasks: [...this.read().tasks, ...added], removed: existing.removed });
  }

  async write(contents: QueueContents): Promise<void> {
    await this.writeText(formatQueueFile(contents));
  }

  private readText(): string {
    try {
      return readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return '';
      throw ioError('read', this.file, error);
    }
  }

  private async writeText(text: string): Promise<void> {
    try {
      await writeFileAtomic(this.file, text, { encoding: 'utf8' });
    } catch (error) {
      throw ioError('write', this.file, error);
    }
    this.cached = undefined;
  }
}

const FILE_END = '\n]}\n';

function formatQueueFile(contents: QueueContents): string {
  const header = contents.removed.size > 0 ? { version: QUEUE_FORMAT_VERSION, removed: [...contents.removed] } : { version: QUEUE_FORMAT_VERSION };
  const start = `${JSON.stringify(header).slice(0, -1)},"tasks":[\n`;
  return `${start}${contents.tasks.map((task) => JSON.stringify(task)).join(',\n')}${FILE_END}`;
}

/** Ids and removed ids of a file in the layout this tool writes, or undefined for any other layout. */
function scanIds(text: string): { ids: string[]; removed: ReadonlySet<string> } | undefined {
  const lines = text.split('\n');
  let header: { removed?: string[] };
  try {
    header = JSON.parse(`${lines[0]}]}`) as { removed?: string[] };
  } catch {
    return undefined;
  }
  if (lines.at(-1) !== '' || lines.at(-2) !== ']}') return undefined;
  const ids: string[] = [];
  for (let i = 1; i < lines.length - 2; i += 1) {
    const line = lines[i]!;
    if (line === '' && lines.length === 4) continue; // a queue with no tasks yet
    // Ids hold no quotes or backslashes (schema.ts), so the first closing quote ends one.
    const id = line.startsWith(ID_START) ? line.slice(ID_START.length, line.indexOf('"', ID_START.length)) : undefined;
    if (!id) return undefined;
    ids.push(id);
  }
  return { ids, removed: new Set(header.removed ?? []) };
}

const ID_START = '{"id":"';

function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

function checkDefinitions(file: string, contents: QueueContents): QueueContents {
  const seen = new Set<string>();
  contents.tasks.forEach((task, i) => {
    if (seen.has(task.id)) throw new DamagedFileError(file, `at tasks[${i}].id`, `task id "${task.id}" appears twice`);
    if (contents.removed.has(task.id)) throw new DamagedFileError(file, `at tasks[${i}].id`, `task id "${task.id}" is also listed as removed`);
    for (const dep of task.deps) {
      if (!seen.has(dep)) {
        throw new DamagedFileError(file, `at tasks[${i}].deps`, `task "${task.id}" depends on "${dep}", which is not defined before it`);
      }
    }
    seen.add(task.id);
  });
  return contents;
}

const CHUNK_BYTES = 1 << 20;

/**
 * The lines of a file, read a megabyte at a time: a large queue.json is never held whole in memory
 * beside its parsed tasks (100,000 tasks: ~30 MB less at a worker's start).
 */
function* readLines(file: string): Generator<string> {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    throw ioError('read', file, error);
  }
  try {
    const decoder = new StringDecoder('utf8');
    const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
    let rest = '';
    for (;;) {
      let bytes: number;
      try {
        bytes = readSync(fd, chunk, 0, CHUNK_BYTES, null);
      } catch (error) {
        throw ioError('read', file, error);
      }
      if (bytes === 0) break;
      const lines = (rest + decoder.write(chunk.subarray(0, bytes))).split('\n');
      rest = lines.pop()!;
      yield* lines;
    }
    yield rest + decoder.end();
  } finally {
    closeSync(fd);
  }
}

/**
 * The layout this tool writes: a header line, one task per line, a footer. Parsing one line at a time
 * keeps a single raw object alive at once. Undefined for any other layout (a file reformatted by hand, or
 * cut short): the whole-file parse then decides, and names the place of any damage.
 */
function parseLineByLine(file: string, lines: Iterable<string>): QueueContents | undefined {
  let removed: Set<string> | undefined;
  const tasks: TaskDefinition[] = [];
  const addedTimes = new Map<string, string>();
  let lineNo = 0;
  let state: 'header' | 'tasks' | 'footer' | 'end' = 'header';
  for (const line of lines) {
    lineNo += 1;
    if (state === 'header') {
      if (!line.endsWith('"tasks":[')) return undefined;
      let rawHeader: unknown;
      try {
        rawHeader = JSON.parse(`${line}]}`);
      } catch {
        return undefined;
      }
      const header = queueHeaderSchema.safeParse(rawHeader);
      if (!header.success) throw new DamagedFileError(file, 'line 1', describeZodError(header.error));
      removed = new Set(header.data.removed ?? []);
      state = 'tasks';
    } else if (state === 'tasks' || state === 'footer') {
      if (line === ']}') {
        state = 'end';
        continue;
      }
      if (state === 'footer') return undefined;
      if (line === '' && tasks.length === 0) continue; // a queue with no tasks yet
      const more = line.endsWith(',');
      let raw: unknown;
      try {
        raw = JSON.parse(more ? line.slice(0, -1) : line);
      } catch {
        return undefined;
      }
      const parsed = taskDefinitionSchema.safeParse(raw);
      if (!parsed.success) throw new DamagedFileError(file, `at tasks[${tasks.length}], line ${lineNo}`, describeZodError(parsed.error));
      tasks.push(compact(parsed.data, addedTimes));
      if (!more) state = 'footer';
    } else if (line !== '') return undefined;
  }
  return state === 'end' && removed !== undefined ? { tasks, removed } : undefined;
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

function describeZodError(error: z.ZodError): string {
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
