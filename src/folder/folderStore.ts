import type { ApplyResult, QueueState } from '../core/queueState.js';
import type { NewTask, TaskDefaults } from '../core/newTasks.js';
import type { ClaimLiveness } from '../core/reasons.js';
import { repeatUntil } from '../core/sleep.js';
import type { LockView, QueueChange, Store } from '../store.js';
import { WorkerError } from '../errors.js';
import { isTaskEvent, type ChangeRecord, type CompactionReport, type ResultRef, type TaskDefinition, type WorkerStatus } from '../types.js';
import { compactLog } from './compaction.js';
import { ExecutionLogReader } from './executionLog.js';
import { readWorkers } from './heartbeat.js';
import { livenessOfRunning } from './lock/liveness.js';
import { goneFromThisHost } from './lock/processes.js';
import { LockInspector } from './lock/taskLock.js';
import { queuePaths, type QueuePaths } from './paths.js';
import { readQueueId } from './queueIdentity.js';
import { withQueueLock } from './queueLock.js';
import { readResultText } from './results.js';
import { QueueStore, requireQueue } from './store.js';
import type { IndexedTask } from './queueIndex.js';

/** How often `followHistory` looks for new events. */
const FOLLOW_POLL_MS = 250;

export interface FolderStoreOptions {
  /** Make the folder if it holds no queue yet (`add`); every other command refuses such a folder. */
  create: boolean;
  /** How long a lock may go unrefreshed before its claim counts as stuck (--lock-stale). */
  lockStaleMs: number;
  host: string;
}

/**
 * The folder store as the commands use it: queue.json and the execution log below one folder (see
 * store.ts for the file protocol). It opens what each question needs when asked: whole definitions for a
 * status view, what a fold needs alone for the history, nothing at all for adding.
 */
export class FolderStore implements Store {
  private readonly paths: QueuePaths;
  private whole: QueueStore<TaskDefinition> | undefined;

  constructor(
    root: string,
    private readonly options: FolderStoreOptions,
  ) {
    this.paths = queuePaths(root);
    if (!options.create) requireQueue(this.paths);
  }

  describe(): string {
    return `queue ${this.paths.root}`;
  }

  async addTasks(tasks: readonly NewTask[], defaults: TaskDefaults, now: Date, where: (index: number) => string): Promise<TaskDefinition[]> {
    const store = await QueueStore.create(this.paths.root);
    try {
      return await store.addTasks(tasks, defaults, now, where);
    } finally {
      store.close();
    }
  }

  async read(): Promise<QueueState<TaskDefinition>> {
    if (this.whole === undefined) this.whole = await QueueStore.open(this.paths.root);
    else this.whole.refresh();
    return this.whole.state;
  }

  async liveness(state: QueueState<TaskDefinition>, now: number): Promise<ReadonlyMap<string, ClaimLiveness>> {
    return livenessOfRunning(state, new LockInspector(this.paths, this.options.lockStaleMs), this.options.host, now);
  }

  warnings(): string[] {
    const torn = this.whole?.tornRecords() ?? 0;
    return torn > 0 ? [`${torn} torn record(s) in the execution log were skipped: a worker died while writing; its task was run again`] : [];
  }

  /** Under the queue-wide lock, after finishing a compaction whose process died (a live one holds the lock). */
  async change<T>(apply: (queue: QueueChange) => T | Promise<T>): Promise<T> {
    const store = await QueueStore.open(this.paths.root);
    const locks = new LockInspector(this.paths, this.options.lockStaleMs);
    const { host } = this.options;
    const paths = this.paths;
    try {
      return await withQueueLock(this.paths.queueLock, async (assertHeld) => {
        store.refresh();
        store.finishDeadCompaction(assertHeld, () => new Date());
        const change: QueueChange = {
          get state() {
            return store.state;
          },
          async append(events: ChangeRecord[]) {
            assertHeld();
            store.append(events);
            store.refresh();
          },
          async lockOf(taskId: string, now: number): Promise<LockView | null> {
            const lock = locks.inspect(taskId, now);
            if (!lock.held) return null;
            const claim = store.state.get(taskId)?.claim;
            const holder = locks.ownerOf(taskId) ?? (claim ? { worker: claim.worker, pid: claim.pid, host: claim.host } : null);
            return { holder, ageMs: lock.ageMs ?? 0, holderGone: holder !== null && goneFromThisHost(holder, host), stale: locks.isStale(lock) };
          },
          async removeLock(taskId: string) {
            assertHeld();
            locks.forceRemove(taskId);
          },
          async editInstruction(taskId: string, instruction: string) {
            assertHeld();
            store.editInstruction(taskId, instruction);
          },
          async removeTasks(ids: ReadonlySet<string>, now: () => Date): Promise<CompactionReport> {
            assertHeld();
            store.removeTasks(ids);
            // What the removed tasks left in the log (and their results) goes with them.
            return compactLog(paths, assertHeld, now);
          },
        };
        return apply(change);
      });
    } finally {
      store.close();
    }
  }

  async compact(now: () => Date): Promise<CompactionReport> {
    return withQueueLock(this.paths.queueLock, async (assertHeld) => compactLog(this.paths, assertHeld, now));
  }

  async history(onEvent: (event: ChangeRecord, counted: ApplyResult) => void, onlyTask?: string): Promise<void> {
    // Definitions as a worker keeps them, without instructions: the history of a large queue stays light.
    const store = QueueStore.openForReplay(this.paths.root);
    try {
      store.replay(onEvent, onlyTask);
    } finally {
      store.close();
    }
  }

  /** Incremental: one reader and one fold, so each new event costs the same however long the log is. */
  async followHistory(onEvent: (event: ChangeRecord, counted: ApplyResult) => void, onlyTask: string | undefined, signal: AbortSignal): Promise<void> {
    const store: QueueStore<IndexedTask> = QueueStore.openForReplay(this.paths.root);
    // One task's ancestry is fixed once it is added; all tasks are read again as the queue grows.
    const fold = onlyTask === undefined ? store.foldFor() : store.foldForTask(onlyTask);
    const reader = new ExecutionLogReader(this.paths.logFile);
    const readOn = () => {
      if (onlyTask === undefined) fold.addDefinitions(store.lightDefinitions());
      for (const event of reader.readNew()) {
        const counted = fold.apply(event);
        if (event.type === 'weather') continue;
        if (onlyTask === undefined || (isTaskEvent(event) && event.task === onlyTask)) onEvent(event, counted);
      }
    };
    try {
      await repeatUntil(signal, FOLLOW_POLL_MS, readOn);
      // What was recorded before the signal is all delivered.
      readOn();
    } finally {
      reader.close();
      store.close();
    }
  }

  async readResult(ref: ResultRef): Promise<{ text: string; value: unknown }> {
    const text = readResultText(this.paths, ref);
    return { text, value: ref.json ? JSON.parse(text) : text };
  }

  async queueId(): Promise<string | null> {
    return readQueueId(this.paths.identityFile) ?? null;
  }

  async workers(host: string, now: number): Promise<WorkerStatus[]> {
    return readWorkers(this.paths, host, now);
  }

  async receive(): Promise<number> {
    throw new WorkerError('USAGE', 'a queue is copied from a folder into a database, not into a folder', {
      hint: 'worker --dir <folder> copy-to postgres://… copies the folder’s queue into a database',
    });
  }

  async close(): Promise<void> {
    this.whole?.close();
  }
}
