import { readFileSync, statSync } from 'node:fs';
import writeFileAtomic from 'write-file-atomic';
import * as z from 'zod';
import { DamagedFileError, ioError } from '../errors.js';
import { QUEUE_FORMAT_VERSION, queueFileSchema, taskDefinitionSchema, type TaskDefinition } from './schema.js';

interface FileIdentity {
  ino: number;
  size: number;
  mtimeMs: number;
}

/**
 * queue/queue.json: the task definitions, in the order they were added. Read often (cached by file
 * identity, so an unchanged file costs one stat), written rarely (adding tasks), always whole and
 * atomically, and only by the holder of the queue-wide lock.
 */
export class QueueFile {
  private cached: { identity: FileIdentity; tasks: TaskDefinition[] } | undefined;

  constructor(readonly file: string) {}

  /** The definitions, validated. A missing file is an empty queue; a damaged one is an error, never empty. */
  read(): TaskDefinition[] {
    let identity: FileIdentity;
    try {
      const info = statSync(this.file);
      identity = { ino: info.ino, size: info.size, mtimeMs: info.mtimeMs };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError('read', this.file, error);
    }
    if (this.cached && sameIdentity(this.cached.identity, identity)) return this.cached.tasks;
    let text: string;
    try {
      text = readFileSync(this.file, 'utf8');
    } catch (error) {
      throw ioError('read', this.file, error);
    }
    const tasks = parseQueueFile(this.file, text);
    this.cached = { identity, tasks };
    return tasks;
  }

  /**
   * Rewrites the file with `added` after the tasks it holds. Its text is extended rather than every task
   * serialised again. Callers hold the queue-wide lock, so the file cannot change in between.
   */
  async append(added: readonly TaskDefinition[]): Promise<void> {
    const lines = added.map((task) => JSON.stringify(task)).join(',\n');
    const tasks = this.read();
    let previous = '';
    try {
      previous = readFileSync(this.file, 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw ioError('read', this.file, error);
    }
    const text = tasks.length > 0 && previous.endsWith(FILE_END)
      ? `${previous.slice(0, -FILE_END.length)},\n${lines}${FILE_END}`
      : `${FILE_START}${[...tasks, ...added].map((task) => JSON.stringify(task)).join(',\n')}${FILE_END}`;
    try {
      await writeFileAtomic(this.file, text, { encoding: 'utf8' });
    } catch (error) {
      throw ioError('write', this.file, error);
    }
    this.cached = undefined;
  }
}

// One task per line: readable, and a diff of two versions shows what was added.
const FILE_START = `{"version":${QUEUE_FORMAT_VERSION},"tasks":[\n`;
const FILE_END = '\n]}\n';

function sameIdentity(a: FileIdentity, b: FileIdentity): boolean {
  return a.ino === b.ino && a.size === b.size && a.mtimeMs === b.mtimeMs;
}

export function parseQueueFile(file: string, text: string): TaskDefinition[] {
  const tasks = parseLineByLine(file, text) ?? parseWhole(file, text);
  const seen = new Set<string>();
  tasks.forEach((task, i) => {
    if (seen.has(task.id)) throw new DamagedFileError(file, `at tasks[${i}].id`, `task id "${task.id}" appears twice`);
    for (const dep of task.deps) {
      if (!seen.has(dep)) {
        throw new DamagedFileError(file, `at tasks[${i}].deps`, `task "${task.id}" depends on "${dep}", which is not defined before it`);
      }
    }
    seen.add(task.id);
  });
  return tasks;
}

/**
 * The layout this tool writes: a header line, one task per line, a footer. Parsing one line at a time
 * keeps a single raw object alive at once instead of the whole parsed file beside its validated copy
 * (100,000 tasks: ~40 MB less at the peak). Undefined for any other layout (a file reformatted by hand):
 * the whole-file parse then decides, and names the place of any damage.
 */
function parseLineByLine(file: string, text: string): TaskDefinition[] | undefined {
  if (!text.startsWith(FILE_START) || !text.endsWith(FILE_END)) return undefined;
  const body = text.slice(FILE_START.length, text.length - FILE_END.length);
  if (body.length === 0) return [];
  const lines = body.split('\n');
  const tasks: TaskDefinition[] = [];
  for (const [i, line] of lines.entries()) {
    const last = i === lines.length - 1;
    if (!last && !line.endsWith(',')) return undefined;
    let raw: unknown;
    try {
      raw = JSON.parse(last ? line : line.slice(0, -1));
    } catch {
      return undefined;
    }
    const parsed = taskDefinitionSchema.safeParse(raw);
    if (!parsed.success) throw new DamagedFileError(file, `at tasks[${i}], line ${i + 2}`, describeZodError(parsed.error));
    tasks.push(parsed.data);
  }
  return tasks;
}

function parseWhole(file: string, text: string): TaskDefinition[] {
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
  return parsed.data.tasks;
}

function describeZodError(error: z.ZodError): string {
  return z.prettifyError(error).split('\n').slice(0, 4).join(' ').replace(/\s+/g, ' ');
}

function describeJsonPosition(text: string, error: unknown): string {
  const match = /position (\d+)/.exec(error instanceof Error ? error.message : '');
  const position = match ? Number(match[1]) : text.length;
  const before = text.slice(0, position);
  const line = before.split('\n').length;
  return `line ${line}, character ${position} of ${text.length}`;
}

function formatPath(path: readonly PropertyKey[]): string {
  if (path.length === 0) return 'the top level';
  return path.map((part, i) => (typeof part === 'number' ? `[${part}]` : `${i === 0 ? '' : '.'}${String(part)}`)).join('');
}
