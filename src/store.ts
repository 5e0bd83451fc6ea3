import type { ApplyResult, QueueState, TaskRecord } from './core/queueState.js';
import type { NewTask, TaskDefaults } from './core/newTasks.js';
import type { ClaimLiveness } from './core/reasons.js';
import type { AttemptDetail } from './executor.js';
import type {
  AttemptError,
  CompactionReport,
  Heartbeat,
  Outcome,
  ChangeRecord,
  ClaimEvent,
  OutcomeEvent,
  RateLimit,
  ResultRef,
  TaskDefinition,
  TaskHead,
  WorkerStatus,
} from './types.js';

/**
 * The storage seam, as the commands see it: adding, a status view, the history, repair. Every method
 * reads what it needs when called; a store opened for a folder that holds no queue refuses (NOT_FOUND).
 */
export interface Store {
  /** Where the queue is, for people. */
  describe(): string;
  /** Adds tasks, all or none; ids and dependencies are checked against the queue as it is at that moment. */
  addTasks(tasks: readonly NewTask[], defaults: TaskDefaults, now: Date, where: (index: number) => string): Promise<TaskDefinition[]>;
  /** The queue now: every task with its whole definition and state. */
  read(): Promise<QueueState<TaskDefinition>>;
  /** What can be told from outside of each running task's claim: whether its worker is alive, its lease fresh. */
  liveness(state: QueueState<TaskDefinition>, now: number): Promise<ReadonlyMap<string, ClaimLiveness>>;
  /** Problems a person should know of that do not stop the queue (records torn by a dying writer). */
  warnings(): string[];
  /**
   * A change by hand (retry, cancel, unlock, clean): `apply` runs alone among changes and takeovers, on the
   * queue read fresh, and what it appends is recorded before the next change starts.
   */
  change<T>(apply: (queue: QueueChange) => T | Promise<T>): Promise<T>;
  /** Keeps the history small: drops what no remaining task needs, while workers run. */
  compact(now: () => Date): Promise<CompactionReport>;
  /**
   * The history, every event in the order recorded, with whether it counted; of one task (and what it needs
   * to be judged) when `onlyTask` is given.
   */
  history(onEvent: (event: ChangeRecord, counted: ApplyResult) => void, onlyTask?: string): Promise<void>;
  /** The history as it grows, from its start, until `signal` aborts: what was recorded before then, all of it. */
  followHistory(onEvent: (event: ChangeRecord, counted: ApplyResult) => void, onlyTask: string | undefined, signal: AbortSignal): Promise<void>;
  /** A result kept apart from its outcome: as it came (`text`) and as a value (parsed when JSON). */
  readResult(ref: ResultRef): Promise<{ text: string; value: unknown }>;
  /** The queue's identity (part of every idempotency key), or null while it has none (no task added yet). */
  queueId(): Promise<string | null>;
  /** Every worker that ran on this queue, from its heartbeat. */
  workers(host: string, now: number): Promise<WorkerStatus[]>;
  /**
   * Takes a whole queue copied from another store (`worker copy-to`), into a queue that holds no task yet:
   * all or nothing. Resolves to the number of history records taken.
   */
  receive(copy: QueueCopy): Promise<number>;
  close(): Promise<void>;
}

/** A whole queue as `worker copy-to` moves it from one store to another. */
export interface QueueCopy {
  /** Its identity: the first part of every idempotency key, kept so that calls made before stay the same calls. */
  queueId: string;
  /** Every task, its whole definition and state. */
  state: QueueState<TaskDefinition>;
  /** The records that counted, in the order they were made. */
  history: ChangeRecord[];
  /** A result kept apart from its outcome, read when the copy takes it. */
  result(ref: ResultRef): Promise<{ text: string; value: unknown }>;
}

/** The queue during a change by hand. */
export interface QueueChange {
  /** As read at the start of the change, and after each `append`. */
  readonly state: QueueState<TaskDefinition>;
  /** Records events (a retry, a cancel); the state then shows whether they counted. */
  append(events: ChangeRecord[]): Promise<void>;
  /** Who holds a task's claim lock, and whether it may be taken from them; null when nobody does. */
  lockOf(taskId: string, now: number): Promise<LockView | null>;
  /** Removes a task's claim lock (its holder is gone or stale: see lockOf). */
  removeLock(taskId: string): Promise<void>;
  /** Changes a task's instruction: what its next attempt sends. */
  editInstruction(taskId: string, instruction: string): Promise<void>;
  /** Removes tasks from the queue for good (their ids are never reused), and compacts what they leave behind. */
  removeTasks(ids: ReadonlySet<string>, now: () => Date): Promise<CompactionReport>;
}

/** A task's claim lock as seen from outside. */
export interface LockView {
  /** Who made it, when it says so. */
  holder: { worker: string; pid: number; host: string } | null;
  /** Since its holder last showed life. */
  ageMs: number;
  /** Its holder ran on this host and is gone. */
  holderGone: boolean;
  /** Not refreshed for longer than the stale bound. */
  stale: boolean;
}

/**
 * The storage seam, as the worker loop sees it: what a look, a claim, an outcome, a takeover and change
 * notification need, and nothing of how the store keeps them (files and locks, or rows). The folder store
 * (src/folder/) is one; which one a command uses is chosen in src/backends.ts.
 *
 * Every method may throw a WorkerError; once the store can no longer be trusted (the folder's log was
 * deleted or replaced), `lost` says why, and the worker stops.
 */
export interface WorkerStore {
  /** Where the queue is, for people: `queue /srv/q (12 tasks)`. */
  describe(): string;
  /** The queue as this process last saw it: states, readiness, the API's weather. */
  readonly state: QueueState<TaskHead>;
  /** Set once the store can no longer be trusted: nothing more is claimed or recorded. */
  readonly lost: Error | undefined;
  /** Brings `state` up to date; waits, briefly, while the store is being reorganised (a compaction). */
  look(): Promise<void>;
  /**
   * Claims a task whose claim is in force but whose worker died or froze, superseding that claim; null
   * when there is none, or it is not time to look for one yet. What counts as dead is the store's to know.
   */
  claimStuck(claimant: Claimant): Promise<HeldClaim | null>;
  /** Claims the next ready task in the order tasks were added, or null. A claim is never in force twice. */
  claimReady(claimant: Claimant): Promise<HeldClaim | null>;
  /** Ready tasks that others were claiming when this process last tried: for the idle report. */
  claimingElsewhere(): readonly TaskRecord<TaskHead>[];
  /**
   * Records how an attempt ended, fenced: only while its claim is still the one in force. Then the claim
   * is let go (in the background: see settle). Throws when the outcome could not be written (a full disk):
   * the caller tries again, and the claim stays held meanwhile.
   */
  record(claim: HeldClaim, outcome: NewOutcome): Promise<Recorded>;
  /**
   * Lets a claim go without an outcome, when none can be recorded (the worker is aborting): the task stays
   * claimed until another worker takes it over, as if this one had died.
   */
  abandon(claim: HeldClaim): void;
  /** Removes what dead workers left behind (leftover locks, slots); never fails, only logs. */
  tidy(): Promise<void>;
  /** Waits for what `record` left running in the background. */
  settle(): Promise<void>;
  /** What wakes an idle worker when the queue changes. */
  readonly changes: ChangeNotifier;
  /**
   * Makes this worker known before it claims anything: refuses a store it cannot write to, and a worker id
   * that a live worker holds.
   */
  enter(heartbeat: Heartbeat): Promise<Presence>;
  close(): void;
}

/** Who claims: written into every claim, and what takeovers judge a claim's owner by. */
export interface Claimant {
  workerId: string;
  pid: number;
  host: string;
  /** The queue-wide rate limit this worker runs under: a claim beyond it does not count. */
  rate: RateLimit | undefined;
  /** How many tasks this worker may have in flight at once: recorded with each claim, for people. */
  concurrency: number;
}

/** A claim in force, held by this process: the right to make one attempt of one task. */
export interface HeldClaim {
  readonly taskId: string;
  /** The task's whole definition, read when it was claimed. */
  readonly definition: TaskDefinition;
  readonly token: string;
  /** This attempt's number: one more than the attempts made before. */
  readonly attempt: number;
  /** When the claim was made: the time its call may start, which a pause or a rate limit judges. */
  readonly claimedAt: number;
  readonly idempotencyKey: string;
  /** Calls in a row before this one that did not count as attempts, and since when (the retry policy). */
  readonly waits: number;
  readonly waitingSince: number | null;
  /** Why this claim superseded another (its worker died or froze); null for a pending task. */
  readonly takeoverReason: string | null;
  /**
   * Aborted when the attempt must stop: by the store when the claim may no longer be this process's (its
   * lock was taken), by the loop when it abandons the attempt (a second signal).
   */
  readonly abandon: AbortController;
}

/** How an attempt ended, as the loop decided it; the store turns it into its own record. */
export interface NewOutcome {
  outcome: Outcome;
  /** false: given back before the call. */
  called: boolean;
  /** false: a call that does not count as an attempt. */
  charged?: boolean | undefined;
  startedAt: number;
  endedAt: number;
  detail?: AttemptDetail | undefined;
  error?: AttemptError | undefined;
  retryAt?: number | undefined;
  pauseUntil?: number | undefined;
  waitingSince?: number | undefined;
  /** A completed attempt's answer: as it came (`body`) and parsed (`value`). */
  result?: { value: unknown; body: string; json: boolean } | undefined;
  /** --max-attempts of the worker that recorded it. */
  maxAttempts: number;
}

/** `recorded`, or the claim was superseded before its outcome (`lostTo`: the worker that holds it now, if any). */
export type Recorded = { recorded: true } | { recorded: false; lostTo: string | null };

/** Changes to the queue that may make a task claimable. */
export interface ChangeNotifier {
  /** Clears the record of changes: called right before each look at the queue. */
  markLooked(): void;
  /** Resolves after `ms`, when the queue changed since markLooked, or when `signal` aborts. */
  wait(ms: number, signal: AbortSignal): Promise<void>;
  /** The worker is busy: changes do not matter until its next wait. */
  pause(): void;
}

/** A worker's presence in the store while it runs: its id held, its heartbeat kept current. */
export interface Presence {
  /** Changed by the loop; the store writes it out on its own schedule. */
  readonly heartbeat: Heartbeat;
  /** Writes a last heartbeat (`stopped`) and frees the worker id. */
  leave(): Promise<void>;
}

/**
 * The record of a claim, as both stores keep it. `prev`: the claim it supersedes (a takeover, for `reason`);
 * `at`: when the call may start, which a pause or a rate limit judges.
 */
export function claimRecord(
  claimant: Claimant,
  claim: { task: string; token: string; prev: string | null; attempt: number; at: number; reason: string | null },
): ClaimEvent {
  const event: ClaimEvent = {
    type: 'claim',
    task: claim.task,
    token: claim.token,
    prev: claim.prev,
    attempt: claim.attempt,
    worker: claimant.workerId,
    pid: claimant.pid,
    host: claimant.host,
    at: new Date(claim.at).toISOString(),
  };
  if (claimant.rate !== undefined) event.rate = claimant.rate;
  if (claimant.concurrency > 1) event.concurrency = claimant.concurrency;
  if (claim.reason !== null) event.reason = claim.reason;
  return event;
}

/** Results larger than this are kept apart from their outcome, so that what every reader folds stays small. */
export const INLINE_RESULT_BYTES = 4096;

/** The bytes of an outcome's result when it is to be kept apart from the outcome (INLINE_RESULT_BYTES), or null. */
export function bytesKeptApart(outcome: NewOutcome): number | null {
  if (outcome.result === undefined) return null;
  const bytes = Buffer.byteLength(outcome.result.body);
  return bytes > INLINE_RESULT_BYTES ? bytes : null;
}

/** The record of an outcome, as both stores keep it; a result kept `apart` (see INLINE_RESULT_BYTES) is referred to once written. */
export function outcomeRecord(claim: Pick<HeldClaim, 'taskId' | 'token' | 'attempt'>, worker: string, outcome: NewOutcome, apart: boolean): OutcomeEvent {
  const event: OutcomeEvent = {
    type: 'outcome',
    task: claim.taskId,
    token: claim.token,
    attempt: claim.attempt,
    worker,
    outcome: outcome.outcome,
    called: outcome.called,
    started_at: new Date(outcome.startedAt).toISOString(),
    ended_at: new Date(outcome.endedAt).toISOString(),
    duration_ms: Math.max(0, outcome.endedAt - outcome.startedAt),
    max_attempts: outcome.maxAttempts,
  };
  const status = outcome.detail?.http_status ?? outcome.error?.http_status;
  if (status !== undefined) event.http_status = status;
  if (outcome.error) event.error = outcome.error;
  if (outcome.charged === false) event.charged = false;
  if (outcome.retryAt !== undefined) event.retry_at = new Date(outcome.retryAt).toISOString();
  if (outcome.pauseUntil !== undefined) event.pause_until = new Date(outcome.pauseUntil).toISOString();
  if (outcome.waitingSince !== undefined) event.waiting_since = new Date(outcome.waitingSince).toISOString();
  if (outcome.result !== undefined && !apart) event.result = outcome.result.value;
  return event;
}
