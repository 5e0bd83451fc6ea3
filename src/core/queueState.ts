import { MinHeap } from './heap.js';
import { ApiWeather, type WeatherSnapshot } from './apiWeather.js';
import { WorkerError } from '../errors.js';
import {
  isTaskEvent,
  type AttemptError,
  type TaskState,
  type ClaimEvent,
  type FoldRecord,
  type HandPause,
  type OutcomeEvent,
  type ResultRef,
  type TaskHead,
  type QueueContents,
} from '../types.js';

/** A task's current state: its definition (as much as the reader keeps of it) plus the fold of its events. */
export interface TaskRecord<Def extends TaskHead = TaskHead> {
  /** Replaced only by a newer read of the same task's definition. */
  def: Def;
  /** Position in queue.json: the order tasks were added, which is also a topological order. */
  readonly index: number;
  /** `blocked` is never stored: it is derived from the dependencies (see blockedTasks). */
  state: Exclude<TaskState, 'blocked'>;
  /** Attempts since the task was added or last retried by hand: calls that count against --max-attempts. */
  attempts: number;
  /** Calls in a row that did not count as attempts (the API unreachable, or asking to wait): they grow the backoff. */
  waits: number;
  /** When the first of its calls in a row that reached the API without counting started: bounds the wait (--max-api-wait). */
  waitingSince: number | null;
  /** Advanced by each `retry` by hand: part of the idempotency key, so the API does the corrected task's work anew. */
  generation: number;
  /** The claim in force while `running`. */
  claim: ClaimEvent | null;
  /** Not to be claimed before this time (ms since epoch): backoff after a retryable error. */
  retryAt: number | null;
  lastError: AttemptError | null;
  lastOutcome: OutcomeEvent | null;
  /** A completed task's result, when it is small enough to stay in the log... */
  result: unknown;
  /** ...or where it is kept apart (queue/results/), read only by those who ask for it. */
  resultRef: ResultRef | null;
  /** Time of the last accepted event, or the time the task was added. */
  updatedAt: string;
  /** Dependencies not yet completed. The task is ready when this is 0 and it is pending. */
  unmetDeps: number;
  /** Tasks that depend on this one; most tasks have none, so it stays undefined until one is added. */
  dependents: TaskRecord<Def>[] | undefined;
  /** Bumped each time the task is queued as ready: older heap entries are stale and skipped. */
  queueVersion: number;
  /** Taken out of the queue (`worker remove`, `clean`) since this fold read it: never ready again. */
  removed: boolean;
  /** `worker cancel` of the claim in force: its worker stops the call and records the task cancelled. */
  cancelRequested: { at: string; by: string | undefined } | undefined;
}

interface QueueEntry<Def extends TaskHead = TaskHead> {
  task: TaskRecord<Def>;
  version: number;
}

/** `held-back`: a claim that the API's weather did not let count (the queue paused by the API, or at its rate limit). */
export type ApplyResult = 'accepted' | 'ignored' | 'held-back' | 'unknown-task';

export interface FoldOptions {
  /** Results and last outcomes, for people. Workers decide from states alone and leave them in the log. */
  keepDetails: boolean;
  /**
   * The fold was given some tasks only (a task and what it depends on, for `logs` of that task): events of
   * other tasks count toward the weather and are otherwise ignored, not taken for damage.
   */
  partial?: boolean;
  /**
   * The store decided every race before recording (a database claims in one statement, fenced by its
   * rows): the fold takes its records as they are, and holds back no claim it recorded.
   */
  decidedByStore?: boolean;
}

const byAddOrder = (a: QueueEntry, b: QueueEntry) => a.task.index < b.task.index;
const byRetryTime = (a: QueueEntry, b: QueueEntry) => (a.task.retryAt ?? 0) < (b.task.retryAt ?? 0);

/**
 * The fold of the execution log over the task definitions: pure, no I/O, incremental.
 *
 * The log is the one ordered place that decides races. Events are requests; the fold accepts or ignores
 * each in log order, so every reader reaches the same states:
 * - a claim counts only if the task is pending with all dependencies completed (`prev` null), or if it
 *   names the claim in force as the one it supersedes (a takeover from a dead or stale owner);
 * - an outcome counts only if its token is the claim in force (fencing: a worker that lost its claim
 *   can never record a second outcome).
 */
export class QueueState<Def extends TaskHead = TaskHead> {
  private records: TaskRecord<Def>[] = [];
  private readonly byId = new Map<string, TaskRecord<Def>>();
  // Typed by TaskHead, not Def: a comparator would make QueueState<Def> invariant. Entries hold records of this fold only.
  private readonly ready = new MinHeap<QueueEntry>(byAddOrder);
  private readonly backoff = new MinHeap<QueueEntry>(byRetryTime);
  private readonly runningSet = new Set<TaskRecord<Def>>();
  private removed: ReadonlySet<string> = new Set();
  /** The API's outages, pauses and recent call starts, as every reader of the log sees them. */
  readonly weather = new ApiWeather();
  /** `worker pause` in force, or null: no claim counts meanwhile. */
  pausedByHand: HandPause | null = null;

  constructor(private readonly options: FoldOptions = { keepDetails: true }) {}

  get size(): number {
    return this.records.length;
  }

  get running(): number {
    return this.runningSet.size;
  }

  tasks(): readonly TaskRecord<Def>[] {
    return this.records;
  }

  get(id: string): TaskRecord<Def> | undefined {
    return this.byId.get(id);
  }

  /** The ids `remove` and `clean` took out of the queue: never used again. */
  removedIds(): ReadonlySet<string> {
    return this.removed;
  }

  /** Whether `worker clean` removed this task (its events count for nothing). */
  isRemoved(id: string): boolean {
    return this.removed.has(id);
  }

  /**
   * Adds definitions not seen before. New tasks are only ever appended to queue.json (clean removes, never
   * inserts), so they are found from the end: O(new tasks). Dependencies always precede their dependents.
   * `reread`: the file was read whole again, so known tasks take their definitions from `contents` too.
   */
  addDefinitions(contents: QueueContents<Def>, reread = false): void {
    const newlyRemoved = contents.removed.size > this.removed.size;
    this.removed = contents.removed;
    if (newlyRemoved) this.dropRemoved();
    const defs = contents.tasks;
    if (reread) {
      for (const def of defs) {
        const record = this.byId.get(def.id);
        if (record) record.def = def;
      }
    }
    let first = defs.length;
    while (first > 0 && !this.byId.has(defs[first - 1]!.id)) first -= 1;
    for (let i = first; i < defs.length; i += 1) {
      const def = defs[i]!;
      const record: TaskRecord<Def> = {
        def,
        index: this.records.length,
        state: 'pending',
        attempts: 0,
        waits: 0,
        waitingSince: null,
        generation: 1,
        claim: null,
        retryAt: null,
        lastError: null,
        lastOutcome: null,
        result: undefined,
        resultRef: null,
        updatedAt: def.added_at,
        unmetDeps: 0,
        dependents: undefined,
        queueVersion: 0,
        // Every field set here, never added later: records keep one shape for V8, whatever happens to them.
        removed: false,
        cancelRequested: undefined,
      };
      for (const depId of new Set(def.deps)) {
        const dep = this.byId.get(depId);
        if (dep === undefined || dep.state !== 'completed') record.unmetDeps += 1;
        if (dep) {
          dep.dependents ??= [];
          dep.dependents.push(record);
        }
      }
      this.records.push(record);
      this.byId.set(def.id, record);
      this.enqueue(record);
    }
  }

  apply(event: FoldRecord): ApplyResult {
    if (event.type === 'weather') {
      // What `worker compact` kept of the weather: it stands for the events it dropped.
      this.weather.restore(event.state as unknown as WeatherSnapshot);
      this.pausedByHand = event.state.paused_by_hand ?? null;
      return 'accepted';
    }
    if (event.type === 'removed') return 'accepted';
    if (!isTaskEvent(event)) {
      // `worker pause` and `worker resume`: a second pause, or a resume of a queue not paused, changes nothing.
      if ((event.type === 'paused') === (this.pausedByHand !== null)) return 'ignored';
      this.pausedByHand = event.type === 'paused' ? { since: event.at, by: event.by } : null;
      return 'accepted';
    }
    const task = this.byId.get(event.task);
    if (task === undefined && !this.removed.has(event.task) && !this.options.partial) return 'unknown-task';
    // The weather takes every claim and outcome, even of tasks removed since, so that all readers agree on it.
    // While paused by hand no claim counts, nor is it a call start for the rate limit.
    if (event.type === 'claim') {
      if (this.options.decidedByStore) this.weather.recordStart(event);
      else if (this.pausedByHand !== null || this.weather.admit(event) !== null) return 'held-back';
    }
    if (event.type === 'outcome') this.weather.observe(event);
    if (task === undefined) return 'ignored';
    switch (event.type) {
      case 'claim':
        return this.applyClaim(task, event);
      case 'outcome':
        return this.applyOutcome(task, event);
      case 'retry':
        if (task.state !== 'failed') return 'ignored';
        this.startAfresh(task, event.at);
        return 'accepted';
      case 'edit':
        task.updatedAt = event.at;
        return 'accepted';
      case 'rerun':
        if (task.state !== 'completed') return 'ignored';
        task.result = undefined;
        task.resultRef = null;
        // Its dependents wait for it again.
        for (const dependent of task.dependents ?? []) dependent.unmetDeps += 1;
        this.startAfresh(task, event.at);
        return 'accepted';
      case 'cancel':
        if (task.state === 'running') {
          // The claim's worker stops the call when it next looks, and records the task cancelled.
          if (task.cancelRequested !== undefined) return 'ignored';
          task.cancelRequested = { at: event.at, by: event.by };
          return 'accepted';
        }
        if (task.state !== 'pending') return 'ignored';
        task.state = 'failed';
        task.retryAt = null;
        task.lastError = { kind: 'cancelled', message: 'cancelled by hand (worker cancel)' };
        task.updatedAt = event.at;
        return 'accepted';
    }
  }

  /** `retry` and `rerun`: pending again, with fresh attempts and the next idempotency key generation. */
  private startAfresh(task: TaskRecord<Def>, at: string): void {
    task.state = 'pending';
    task.attempts = 0;
    task.waits = 0;
    task.waitingSince = null;
    task.generation += 1;
    task.retryAt = null;
    task.lastError = null;
    task.updatedAt = at;
    this.enqueue(task);
  }

  private applyClaim(task: TaskRecord<Def>, claim: ClaimEvent): ApplyResult {
    const fresh = claim.prev === null && task.state === 'pending' && task.unmetDeps === 0;
    const takeover = claim.prev !== null && task.state === 'running' && task.claim?.token === claim.prev;
    if (!fresh && !takeover) return 'ignored';
    if (takeover) {
      const lost = task.claim!;
      task.lastError = {
        kind: 'worker_died',
        message: `attempt ${task.attempts} by ${lost.worker} (pid ${lost.pid} on ${lost.host}) ended without an outcome; taken over by ${claim.worker}`,
      };
    }
    this.runningSet.add(task);
    task.state = 'running';
    task.attempts += 1;
    task.claim = claim;
    task.updatedAt = claim.at;
    return 'accepted';
  }

  private applyOutcome(task: TaskRecord<Def>, outcome: OutcomeEvent): ApplyResult {
    if (task.state !== 'running' || task.claim?.token !== outcome.token) return 'ignored';
    this.runningSet.delete(task);
    if (task.cancelRequested !== undefined) task.cancelRequested = undefined;
    task.claim = null;
    if (this.options.keepDetails) task.lastOutcome = outcome;
    task.updatedAt = outcome.ended_at;
    task.lastError = outcome.error ?? null;
    if (!outcome.called || outcome.charged === false) {
      task.attempts -= 1;
      if (outcome.called) task.waits += 1;
    } else task.waits = 0;
    if (outcome.called) task.waitingSince = outcome.waiting_since === undefined ? null : Date.parse(outcome.waiting_since);
    switch (outcome.outcome) {
      case 'completed':
        task.state = 'completed';
        task.lastError = null;
        if (this.options.keepDetails) {
          task.result = outcome.result;
          task.resultRef = outcome.result_ref ?? null;
        }
        for (const dependent of task.dependents ?? []) {
          dependent.unmetDeps -= 1;
          this.enqueue(dependent);
        }
        break;
      case 'failed':
        task.state = 'failed';
        break;
      case 'retry':
        task.state = 'pending';
        task.retryAt = outcome.retry_at === undefined ? null : Date.parse(outcome.retry_at);
        this.enqueue(task);
        break;
      case 'released':
        task.state = 'pending';
        this.enqueue(task);
        break;
    }
    return 'accepted';
  }

  /**
   * Tasks removed from queue.json since this fold read them (a long-running worker's fold outlives a
   * `remove` or a `clean`): they leave the fold, and are never ready again even if a dependency completes.
   */
  private dropRemoved(): void {
    const gone = this.records.filter((record) => this.removed.has(record.def.id));
    if (gone.length === 0) return;
    for (const record of gone) {
      record.removed = true;
      this.byId.delete(record.def.id);
      this.runningSet.delete(record);
    }
    this.records = this.records.filter((record) => !record.removed);
  }

  private enqueue(task: TaskRecord<Def>): void {
    if (!isReady(task)) return;
    task.queueVersion += 1;
    const entry = { task, version: task.queueVersion };
    if (task.retryAt === null) this.ready.push(entry);
    else this.backoff.push(entry);
  }

  /**
   * Up to `limit` tasks that may be claimed now, in the order they were added. Cost: O(limit * log n),
   * never a scan of the queue.
   */
  readyTasks(now: number, limit: number): TaskRecord<Def>[] {
    for (let due = this.liveTop(this.backoff); due !== undefined && (due.task.retryAt ?? 0) <= now; due = this.liveTop(this.backoff)) {
      this.backoff.pop();
      due.task.retryAt = null;
      this.ready.push(due);
    }
    const found: QueueEntry[] = [];
    while (found.length < limit) {
      const entry = this.liveTop(this.ready);
      if (entry === undefined) break;
      found.push(this.ready.pop()!);
    }
    for (const entry of found) this.ready.push(entry);
    return found.map((entry) => entry.task as TaskRecord<Def>);
  }

  /** The earliest time a task in backoff may be claimed, if any. */
  nextRetryAt(): number | null {
    return this.liveTop(this.backoff)?.task.retryAt ?? null;
  }

  /** The first entry of a heap that still stands for a ready task, dropping stale ones. */
  private liveTop(heap: MinHeap<QueueEntry>): QueueEntry | undefined {
    for (let top = heap.peek(); top !== undefined; top = heap.peek()) {
      if (top.version === top.task.queueVersion && isReady(top.task)) return top;
      heap.pop();
    }
    return undefined;
  }

  /** Tasks that are running under a claim: few, at most one per live worker plus dead owners' claims. */
  runningTasks(): TaskRecord<Def>[] {
    return [...this.runningSet];
  }

  /**
   * Pending tasks that can never run as things stand: a dependency failed, or is itself blocked.
   * One pass in add order, which is topological. O(tasks + dependencies).
   */
  blockedTasks(): Map<string, TaskRecord<Def>> {
    const blockedBy = new Map<string, TaskRecord<Def>>();
    for (const task of this.records) {
      if (task.state !== 'pending' || task.unmetDeps === 0) continue;
      for (const depId of task.def.deps) {
        const dep = this.byId.get(depId);
        if (dep === undefined) continue;
        if (dep.state === 'failed') {
          blockedBy.set(task.def.id, dep);
          break;
        }
        const root = blockedBy.get(depId);
        if (root !== undefined) {
          blockedBy.set(task.def.id, root);
          break;
        }
      }
    }
    return blockedBy;
  }

  /** The state a person sees: stored state, with `blocked` derived. */
  stateOf(task: TaskRecord<Def>, blocked: ReadonlyMap<string, TaskRecord<Def>>): TaskState {
    return blocked.has(task.def.id) ? 'blocked' : task.state;
  }
}

function isReady(task: TaskRecord): boolean {
  return task.state === 'pending' && task.unmetDeps === 0 && !task.removed;
}

/** Whether a task may be claimed at `now`: ready, and out of any backoff. */
export function isClaimableAt(task: TaskRecord, now: number): boolean {
  return isReady(task) && (task.retryAt === null || task.retryAt <= now);
}

/** The task with this id, or the error a person sees when there is none. */
export function findTask<Def extends TaskHead>(state: QueueState<Def>, id: string): TaskRecord<Def> {
  const task = state.get(id);
  if (!task) throw noSuchTask(id);
  return task;
}

export function noSuchTask(id: string): WorkerError {
  return new WorkerError('NOT_FOUND', `no task "${id}"`, { hint: 'see `worker status` for the task ids' });
}
