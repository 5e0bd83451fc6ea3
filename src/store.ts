import type { QueueState, TaskRecord } from './core/queueState.js';
import type { AttemptDetail } from './executor.js';
import type { AttemptError, Heartbeat, Outcome, RateLimit, TaskDefinition, TaskHead } from './types.js';

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
  /** Aborted when the claim may no longer be this process's (its lock was taken): the attempt must stop. */
  readonly lost: AbortSignal;
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
