import { existsSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdir, readdir, unlink } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { DamagedFileError, ioError, WorkerError } from '../errors.js';
import { noSuchTask, QueueState, type ApplyResult, type FoldOptions, type TaskRecord } from '../core/queueState.js';
import { defineNewTasks, type NewTask, type TaskDefaults } from '../core/newTasks.js';
import { ExecutionLogReader, ExecutionLogWriter, LogFileChanged, LogMovedOn, OwnLines, type LogPosition } from './executionLog.js';
import { queuePaths, type QueuePaths } from './paths.js';
import { QueueFile, type QueueIds } from './queueFile.js';
import { readCheckedRecord, writeCheckedRecord } from './checkedRecord.js';
import { checkLogPresent, ensureQueueIdentity, LOG_RULE } from './queueIdentity.js';
import { compactLog } from './compaction.js';
import { withQueueLock } from './queueLock.js';
import {
  isTaskEvent,
  type ChangeRecord,
  type FoldRecord,
  type OutcomeEvent,
  type TaskDefinition,
  type TaskHead,
  type QueueContents,
  type CompactionReport,
} from '../types.js';
import { QueueIndex, type IndexedTask } from './queueIndex.js';
import { readAncestry, readRemovedIds } from './queueFormat.js';

/** Where a store gets its task definitions, and what it keeps of them. */
interface DefinitionSource<Def extends TaskHead> {
  /** The definitions now; `rebuilt` when the file was read whole again. `isDefined` tells ids known before. */
  read(isDefined: (id: string) => boolean): { contents: QueueContents<Def>; rebuilt: boolean };
  /** A task's whole definition, or null when its definition moved since it was read. */
  definitionOf(task: Def): TaskDefinition | null;
  close(): void;
}

/** Whole definitions, all in memory: for commands that show them. */
function wholeDefinitions(queueFile: QueueFile): DefinitionSource<TaskDefinition> {
  let last: QueueContents | undefined;
  return {
    read() {
      const contents = queueFile.read();
      const rebuilt = last !== undefined && contents !== last;
      last = contents;
      return { contents, rebuilt };
    },
    definitionOf: (task) => task,
    close: () => undefined,
  };
}

/**
 * The queue on disk: queue.json (definitions) and the execution log (events), folded into a QueueState.
 * `Def` is what it keeps of each definition: all of it (`open`), or what a worker needs (`openForWorker`).
 *
 * Costs, in file operations:
 * - refresh with nothing new: a stat of queue.json and one of the log (the log's descriptor stays open).
 * - refresh after k new events: the same plus one read of their bytes; O(k) work.
 * - a re-check inside a claim (refresh without definitions): one read of the log from where the last ended.
 * - refresh after `worker add` of k tasks, for a worker: two small reads that find the file only extended,
 *   and a read of the k new lines.
 * - a state change (claim, outcome, retry): one append of one line. No lock on the whole queue.
 * - a claim, for a worker: one read of the task's line in queue.json.
 * - adding tasks: the queue-wide lock, one read and one atomic rewrite of queue.json.
 */
export class QueueStore<Def extends TaskHead = TaskHead> {
  readonly paths: QueuePaths;
  state: QueueState<Def>;
  private readonly queueFile: QueueFile;
  private definitions: DefinitionSource<Def>;
  private reader: ExecutionLogReader;
  private readonly writer: ExecutionLogWriter;
  /**
   * Set once the log this store was reading is deleted, replaced, emptied or damaged: the log is the
   * truth, so from then on every refresh and append refuses with this error, and the process stops.
   */
  private logLost: DamagedFileError | undefined;
  /** Why this store can no longer be trusted, once it cannot: see logLost. */
  get lost(): DamagedFileError | undefined {
    return this.logLost;
  }

  /** Whether the log's presence and header were checked against the queue's id. */
  private logChecked = false;
  /** The lines this store appended, read back without parsing them again (see OwnLines). */
  private readonly ownLines = new OwnLines();
  /** Outcomes this store appended and has not read back yet, by token (see append). */
  private readonly unconfirmed = new Map<string, OutcomeEvent>();

  private constructor(
    root: string,
    private readonly foldOptions: FoldOptions,
    private readonly makeDefinitions: (queueFile: QueueFile, paths: QueuePaths) => DefinitionSource<Def>,
  ) {
    this.paths = queuePaths(root);
    this.queueFile = new QueueFile(this.paths.queueFile);
    this.definitions = makeDefinitions(this.queueFile, this.paths);
    this.reader = new ExecutionLogReader(this.paths.logFile, undefined, this.ownLines);
    this.writer = new ExecutionLogWriter(this.paths.logFile, this.ownLines);
    this.state = new QueueState<Def>(foldOptions);
  }

  /**
   * Opens the queue below `root` and reads it, keeping whole definitions. Creates nothing: a folder with no
   * queue (a typo in --dir) is refused.
   */
  static async open(root: string): Promise<QueueStore<TaskDefinition>> {
    requireQueue(queuePaths(root));
    const store = new QueueStore<TaskDefinition>(root, { keepDetails: true }, wholeDefinitions);
    store.refresh();
    return store;
  }

  /**
   * Opens the queue for a worker: it keeps of each task only what the fold needs (see QueueIndex), and
   * neither results nor outcomes; `definitionOf` reads a task's definition when it is claimed.
   */
  static async openForWorker(root: string): Promise<QueueStore<IndexedTask>> {
    const store = new QueueStore<IndexedTask>(
      root,
      { keepDetails: false },
      (queueFile, paths) => new QueueIndex(queueFile.file, () => readCheckedRecord(paths.checkedFile)?.queue ?? null),
    );
    await store.makeFolders();
    store.refresh();
    return store;
  }

  /** Creates the folders and nothing more: for changes that read what they need under the queue-wide lock. */
  static async create(root: string): Promise<QueueStore<TaskDefinition>> {
    const store = new QueueStore<TaskDefinition>(root, { keepDetails: true }, wholeDefinitions);
    await store.makeFolders();
    return store;
  }

  /**
   * Refuses, before anything is claimed, a queue folder this process cannot write to (read-only, full,
   * permissions): by writing and removing a file in each of its folders.
   */
  checkWritable(): void {
    for (const dir of [this.paths.queueDir, this.paths.locksDir]) {
      const probe = join(dir, `.write-check-${process.pid}`);
      try {
        writeFileSync(probe, '');
        unlinkSync(probe);
      } catch (error) {
        throw ioError('write to', dir, error);
      }
    }
  }

  private async makeFolders(): Promise<void> {
    for (const dir of [this.paths.queueDir, this.paths.locksDir]) {
      try {
        await mkdir(dir, { recursive: true });
      } catch (error) {
        throw ioError('create the folder', dir, error);
      }
    }
  }

  /**
   * A task's whole definition, validated: for a worker, read from its line in queue.json now. Throws
   * DamagedFileError when the task is no longer defined there.
   */
  definitionOf(task: TaskRecord<Def>): TaskDefinition {
    let definition = this.definitions.definitionOf(task.def);
    if (definition === null) {
      // queue.json was rewritten since it was read (worker clean, an edit): read it again, then look once more.
      this.refresh();
      definition = this.definitions.definitionOf(task.def);
    }
    if (definition === null) throw new DamagedFileError(this.paths.queueFile, 'whole file', `task "${task.def.id}" is no longer defined in it`);
    return definition;
  }

  /** The queue's identity, made now if it has none yet. */
  queueId(): string {
    return ensureQueueIdentity(this.paths);
  }

  /** Torn records skipped so far: writers that died mid-write (see executionLog.ts). */
  tornRecords(): number {
    return this.reader.tornRecords;
  }

  /**
   * Brings the fold up to date with the files. With `definitions: false`, only what was appended to the
   * log is read, with no look at either file: for re-checks of one task inside a claim, where newly added
   * tasks do not matter (an event naming one still reads queue.json), and a replaced or shrunk log is found
   * by the next full refresh. On any error the fold is dropped and read again next time.
   */
  refresh({ definitions = true } = {}, restarts = 0): void {
    if (this.logLost) throw this.logLost;
    try {
      const queueId = this.logChecked ? undefined : checkLogPresent(this.paths);
      if (definitions) this.readDefinitionsIntoFold();
      const switches = this.reader.switches;
      // A full read hands each record over as it is parsed: a log of any size is never held whole.
      if (definitions) this.reader.readNew((event) => this.applyEvent(event));
      else for (const event of this.reader.readAppended()) this.applyEvent(event);
      if (this.reader.switches !== switches) this.appendAgainWhatTheSealCut();
      if (!this.logChecked) this.checkLogHeader(queueId);
    } catch (error) {
      if (error instanceof DamagedFileError && error.file === this.paths.logFile) this.logLost = error;
      if (error instanceof LogMovedOn && restarts < 3) {
        // Compacted more than once since the last read: the new log, read from its start, holds it all.
        this.reset();
        this.refresh({ definitions: true }, restarts + 1);
        this.appendAgainWhatTheSealCut();
        return;
      }
      this.reset();
      throw error;
    }
  }

  /** A log that names another queue than queue/queue-id is not this queue's: refused like a damaged one. */
  private checkLogHeader(id: string | undefined): void {
    const header = this.reader.header;
    if (header !== undefined && id !== undefined && header.queue !== id) {
      throw new DamagedFileError(
        this.paths.logFile,
        'line 1',
        `it is the log of queue ${header.queue}, not of this queue (${id}): it was replaced by another queue's. ${LOG_RULE}`,
      );
    }
    this.logChecked = true;
  }

  private readDefinitionsIntoFold(): void {
    const { contents, rebuilt } = this.definitions.read((id) => this.state.get(id) !== undefined);
    this.state.addDefinitions(contents, rebuilt);
  }

  private applyEvent(event: FoldRecord): void {
    if (!isTaskEvent(event)) {
      this.state.apply(event);
      return;
    }
    if (event.type === 'outcome') this.unconfirmed.delete(event.token);
    if (this.state.apply(event) !== 'unknown-task') return;
    // Written after the task was added, so a fresh read of queue.json must define it.
    this.readDefinitionsIntoFold();
    if (this.state.apply(event) !== 'unknown-task') return;
    this.throwUndefinedTask(event.task, this.state.size);
  }

  /** The task definitions as queue.json holds them now. */
  readDefinitions(): QueueContents {
    return this.queueFile.read();
  }

  /**
   * A fold for replays: of every task, or (`onlyTask`) of that task and its ancestry alone, found without
   * reading the rest of queue.json, so `logs` of one task costs the size of the log, not of the queue.
   */
  foldFor(onlyTasks?: Iterable<string>): QueueState<TaskHead> {
    // undefined: queue.json is not in this tool's layout (edited by hand), and is read whole.
    const ancestry = onlyTasks === undefined ? undefined : readAncestry(this.paths.queueFile, onlyTasks);
    const fold = new QueueState<TaskHead>({ keepDetails: false, partial: ancestry !== undefined });
    fold.addDefinitions(ancestry === undefined ? this.lightDefinitions() : { tasks: ancestry, removed: readRemovedIds(this.paths.queueFile) });
    return fold;
  }

  /** A fold for the replay of one task (`logs <id>`), which queue.json must define. */
  foldForTask(id: string): QueueState<TaskHead> {
    const fold = this.foldFor([id]);
    if (fold.get(id) === undefined) throw noSuchTask(id);
    return fold;
  }

  /** A fold of the tasks the log speaks of and their ancestry; an event of a task queue.json never defined is damage. */
  private foldForLog(): QueueState<TaskHead> {
    const inLog = this.tasksInLog();
    const fold = this.foldFor(inLog);
    const undefinedTask = [...inLog].find((id) => fold.get(id) === undefined && !fold.isRemoved(id));
    if (undefinedTask !== undefined) this.throwUndefinedTask(undefinedTask, fold.size);
    return fold;
  }

  /** The ids of every task the log has an event of. */
  private tasksInLog(): Set<string> {
    const ids = new Set<string>();
    const reader = new ExecutionLogReader(this.paths.logFile);
    try {
      reader.readNew((record) => {
        if (isTaskEvent(record)) ids.add(record.task);
      });
    } finally {
      reader.close();
    }
    return ids;
  }

  /** What a fold needs of every task (ids, dependencies), as this store keeps them: for replays. */
  lightDefinitions(): QueueContents<TaskHead> {
    return this.definitions.read(() => false).contents;
  }

  /**
   * Opens the queue to replay its log (`logs`): definitions as a worker keeps them, without instructions,
   * and no fold until asked. Creates nothing.
   */
  static openForReplay(root: string): QueueStore<IndexedTask> {
    requireQueue(queuePaths(root));
    return new QueueStore<IndexedTask>(
      root,
      { keepDetails: false },
      (queueFile, paths) => new QueueIndex(queueFile.file, () => readCheckedRecord(paths.checkedFile)?.queue ?? null),
    );
  }

  /**
   * Reads the whole log again from the start through a fold of its own, telling for each event whether
   * it counted: for `show` and `logs`, which need the history, not just the states.
   */
  replay(onEvent: (event: ChangeRecord, result: ApplyResult) => void, onlyTask?: string): void {
    checkLogPresent(this.paths);
    // The tasks the log speaks of, and their ancestry, are all a replay needs: a short log of a large
    // queue reads little of queue.json.
    const fold = onlyTask !== undefined ? this.foldForTask(onlyTask) : this.foldForLog();
    const reader = new ExecutionLogReader(this.paths.logFile);
    try {
      reader.readNew((record) => {
        const result = fold.apply(record);
        if (record.type === 'weather') return;
        if (!isTaskEvent(record)) {
          if (onlyTask === undefined) onEvent(record, result);
          return;
        }
        if (result === 'unknown-task') this.throwUndefinedTask(record.task, fold.size);
        onEvent(record, result);
      });
    } finally {
      reader.close();
    }
  }

  /** Rewrites queue.json with a task's instruction changed. Callers hold the queue-wide lock. */
  editInstruction(id: string, instruction: string): void {
    const contents = this.queueFile.read();
    this.queueFile.write({ tasks: contents.tasks.map((task) => (task.id === id ? { ...task, instruction } : task)), removed: contents.removed });
    this.refresh();
  }

  /** Rewrites queue.json without `removed` tasks, recording their ids. Callers hold the queue-wide lock. */
  removeTasks(removed: ReadonlySet<string>): void {
    const contents = this.queueFile.read();
    this.queueFile.write({
      tasks: contents.tasks.filter((task) => !removed.has(task.id)),
      removed: new Set([...contents.removed, ...removed]),
    });
  }

  /**
   * Appends to the log this store reads, never to another (see ExecutionLogWriter). While a compaction
   * switches generations (this store read a seal whose successor is not in place yet), appends wait:
   * LogBusyError. An outcome appended after a seal it had not read yet does not count in the next
   * generation: it is kept until read back, and appended again there (appendAgainWhatTheSealCut).
   */
  append(events: ChangeRecord[]): void {
    if (this.logLost) throw this.logLost;
    // Between two generations: the next one may be in place by now.
    if (this.reader.waitingForSuccessor) this.refresh({ definitions: false });
    if (this.reader.waitingForSuccessor) throw new LogBusyError(this.paths.logFile);
    // Outcomes are checked to go into the file this store reads (an fstat): a call may have lasted minutes.
    // Claims are not: the full read before every claim looked at the file a moment ago, and a second fstat
    // per claim is a measurable share of a drain's CPU (CHANGELOG.md).
    const check = events.some((event) => event.type !== 'claim');
    try {
      try {
        this.writer.append(events, this.reader.position(), check);
      } catch (error) {
        if (!(error instanceof LogFileChanged)) throw error;
        // Compacted since this store last read (or gone): read on, then write to what it reads now.
        this.refresh({ definitions: false });
        if (this.reader.waitingForSuccessor) throw new LogBusyError(this.paths.logFile);
        try {
          this.writer.append(events, this.reader.position(), check);
        } catch (again) {
          if (again instanceof LogFileChanged)
            throw new DamagedFileError(this.paths.logFile, 'whole file', 'it was replaced while in use; nothing more is written to it');
          throw again;
        }
      }
    } catch (error) {
      if (error instanceof DamagedFileError) this.logLost = error;
      throw error;
    }
    for (const event of events) if (event.type === 'outcome') this.unconfirmed.set(event.token, event);
  }

  /** After a switch of generations: this store's own outcomes that the seal cut off, for claims still in force. */
  private appendAgainWhatTheSealCut(): void {
    const cut = [...this.unconfirmed.values()].filter((outcome) => this.state.get(outcome.task)?.claim?.token === outcome.token);
    this.unconfirmed.clear();
    if (cut.length > 0) this.append(cut);
  }

  /** Whether this store read a seal whose next generation is not in place yet (a compaction is switching). */
  get betweenGenerations(): boolean {
    return this.reader.waitingForSuccessor;
  }

  /**
   * `worker compact` under the queue-wide lock (see compaction.ts); it also finishes a compaction whose
   * process died after sealing the log.
   */
  async compact(now: () => Date): Promise<CompactionReport> {
    return withQueueLock(this.paths.queueLock, async (assertHeld) => compactLog(this.paths, assertHeld, now));
  }

  /**
   * Waits out a compaction that is switching generations (LogBusyError): its compactor holds the queue-wide
   * lock until the next generation is in place, so once this process holds it, the switch is done.
   */
  async awaitNextGeneration(now: () => Date): Promise<void> {
    await withQueueLock(this.paths.queueLock, async (assertHeld) => this.finishDeadCompaction(assertHeld, now));
  }

  /**
   * For a holder of the queue-wide lock: a log still sealed with no next generation was left by a
   * compaction whose process died (a live one would hold the lock). It is finished here.
   */
  finishDeadCompaction(assertHeld: () => void, now: () => Date): void {
    this.refresh({ definitions: false });
    if (!this.betweenGenerations) return;
    compactLog(this.paths, assertHeld, now);
    this.refresh({ definitions: false });
  }

  /** Drops the fold and the reader: the next refresh reads everything again. */
  private reset(): void {
    this.reader.close();
    this.state = new QueueState<Def>(this.foldOptions);
    this.definitions.close();
    this.definitions = this.makeDefinitions(this.queueFile, this.paths);
    this.reader = new ExecutionLogReader(this.paths.logFile, undefined, this.ownLines);
  }

  /**
   * Adds tasks, all or none, under the queue-wide lock. Both files are checked first, but no fold is
   * built: adding needs only the ids. What an earlier add found sound (checked.json) is not checked again:
   * an unchanged queue.json is only scanned for its ids, and the log is read from where that add stopped.
   * Returns the new definitions.
   */
  async addTasks(tasks: readonly NewTask[], defaults: TaskDefaults, now: Date, where: (index: number) => string): Promise<TaskDefinition[]> {
    return withQueueLock(this.paths.queueLock, async (assertHeld) => {
      await this.sweepTempFiles();
      // A queue gets its identity with its first tasks, before any call can need it.
      this.queueId();
      const checked = readCheckedRecord(this.paths.checkedFile);
      const unchanged = checked && this.queueFile.readIdsIfUnchanged(checked.queue);
      const existing = unchanged ?? this.queueFile.readIds();
      const logChecked = this.checkLogAgainst(existing, unchanged ? checked!.log : undefined);
      const added = defineNewTasks(existing, tasks, defaults, now, where);
      assertHeld();
      this.queueFile.append(existing, added);
      const version = this.queueFile.version();
      if (version !== null) writeCheckedRecord(this.paths.checkedFile, { queue: version, log: logChecked });
      return added;
    });
  }

  /**
   * Reads the log, from `from` when it is still the same file and has not shrunk: it must parse, and name
   * only defined tasks. Returns where it stopped.
   */
  private checkLogAgainst(queue: QueueIds, from: LogPosition | undefined): LogPosition {
    const info = statSync(this.paths.logFile, { throwIfNoEntry: false });
    const resume = from !== undefined && info !== undefined && from.inode === info.ino && info.size >= from.offset;
    const reader = new ExecutionLogReader(this.paths.logFile, resume ? from : undefined);
    try {
      const events = reader.readNew();
      if (events.length > 0) {
        const ids = new Set(queue.ids);
        for (const event of events) {
          if (isTaskEvent(event) && !ids.has(event.task) && !queue.removed.has(event.task)) this.throwUndefinedTask(event.task, ids.size);
        }
      }
      return reader.position();
    } finally {
      reader.close();
    }
  }

  private throwUndefinedTask(taskId: string, defined: number): never {
    const what =
      defined === 0
        ? `it is missing or empty, but the execution log records events of task "${taskId}"`
        : `the execution log records events of task "${taskId}", which it does not define (replaced by an older copy?)`;
    throw new DamagedFileError(this.paths.queueFile, 'whole file', what);
  }

  /** write-file-atomic's temp files (queue.json.<number>) left by a writer that was killed. Only the queue-lock holder writes them. */
  private async sweepTempFiles(): Promise<void> {
    const prefix = `${basename(this.paths.queueFile)}.`;
    let names: string[];
    try {
      names = await readdir(this.paths.queueDir);
    } catch (error) {
      throw ioError('list', this.paths.queueDir, error);
    }
    for (const name of names) {
      if (name.startsWith(prefix) && /^\d+$/.test(name.slice(prefix.length))) {
        await unlink(`${this.paths.queueDir}/${name}`).catch(() => undefined);
      }
    }
  }

  close(): void {
    this.writer.close();
    this.reader.close();
    this.definitions.close();
  }
}

/** Refuses a folder that holds no queue: commands that only read, or change existing tasks, create nothing. */
export function requireQueue(paths: QueuePaths): void {
  if (existsSync(paths.queueFile) || existsSync(paths.logFile)) return;
  throw new WorkerError('NOT_FOUND', `no queue at ${paths.root} (worker add creates one)`, {
    hint: 'check --dir (or WORKER_DIR) for a typo',
  });
}

/** The log is between two generations (a compaction is switching them): an append waits and is tried again. */
export class LogBusyError extends WorkerError {
  constructor(file: string) {
    super('IO', `${file} is being compacted: appends wait for its next generation`, { hint: 'this passes by itself; run the command again' });
    this.name = 'LogBusyError';
  }
}
