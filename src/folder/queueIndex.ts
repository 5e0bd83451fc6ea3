import { closeSync, openSync } from 'node:fs';
import { DamagedFileError } from '../errors.js';
import type { QueueContents, TaskDefinition, TaskHead } from '../types.js';
import { type AppendPoint, type LineSpan, type ParsedLines, checkDefinitions, compact, parseLineByLine, parseTaskLine, readQueue } from './queueFormat.js';
import { type QueueFileVersion, sameVersion, versionOf } from './queueFile.js';
import { chunksOf, linesOf, readBytesAt } from './fileBytes.js';

/** The version of queue.json a QueueIndex last read. */
export interface KnownVersion {
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
  constructor(
    readonly file: string,
    private readonly soundVersion: () => QueueFileVersion | null = () => null,
  ) {}

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
   * The whole file. The version `worker add` validated is only parsed, not validated again (most of a
   * worker's start on a large queue), and only if the file stayed that version while it was read; a
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
    const definition = this.definitionAt(task);
    if (definition !== null) return definition;
    // The descriptor may be of a file replaced since: read from the file now at the path.
    this.closeDefinitions();
    return this.definitionAt(task);
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
