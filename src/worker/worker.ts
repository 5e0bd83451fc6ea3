import { randomUUID } from 'node:crypto';
import type { RunConfig } from '../config.js';
import { DamagedFileError, WorkerError } from '../errors.js';
import { formatDuration } from '../core/duration.js';
import { decideFailure } from '../core/retryPolicy.js';
import { MAX_PROBE_INTERVAL_MS, RATE_SEND_WITHIN_MS, type Outage } from '../core/apiWeather.js';
import { isClaimableAt, type TaskRecord } from '../core/queueState.js';
import type { CallRequest, } from '../http/executor.js';
import type { CallResult } from '../http/classify.js';
import { goneFromThisHost } from '../folder/lock/processes.js';
import type { HeldLock, TaskLocks } from '../folder/lock/taskLock.js';
import { withQueueLock } from '../folder/queueLock.js';
import { INLINE_RESULT_BYTES } from '../folder/results.js';
import type { AttemptError, ClaimEvent, Outcome, OutcomeEvent, ResultRef, TaskDefinition } from '../types.js';
import { LogBusyError, type QueueStore } from '../folder/store.js';
import { clock, describeError, describeOutage, describePause, describeRate, stuckReason } from '../core/reasons.js';
import { idempotencyKey } from '../folder/queueIdentity.js';
import { claimLiveness } from '../folder/lock/liveness.js';
import { describeIdle } from './idleReport.js';
import type { Logger } from './logger.js';
import { GONE_WORKER_FILES_KEPT_MS, type Heartbeat } from '../folder/heartbeat.js';

/** Ready tasks looked at per check: enough to get past the few that other workers are claiming. */
const CANDIDATES_PER_CHECK = 16;
/** Other workers count as active this long after one was last seen: until then, claims are spread. */
const OTHERS_ACTIVE_MS = 2000;
/** Workers spread their probes of an unreachable API over this long after the probe is due. */
const MAX_PROBE_STAGGER_MS = 500;
/** How often a busy worker looks for tasks whose worker died or froze. */
const TAKEOVER_SCAN_MS = 1000;

export interface WorkerDeps {
  store: QueueStore;
  locks: TaskLocks;
  executor: { call(request: CallRequest): Promise<CallResult> };
  logger: Logger;
  now: () => number;
  random: () => number;
  host: string;
  pid: number;
  /** The queue's identity: part of every idempotency key. */
  queueId: string;
  /** Where results too large for the log go (see results.ts). */
  results: { write(text: string, json: boolean): ResultRef };
  /** Changes to the queue folder: what wakes an idle worker. */
  changes: {
    /** Clears the record of changes: called right before each look at the queue. */
    markLooked(): void;
    /** Resolves after `ms`, when the queue folder changed since markLooked, or when `signal` aborts. */
    wait(ms: number, signal: AbortSignal): Promise<void>;
    /** The worker is busy with a task: changes do not matter until its next wait. */
    pause(): void;
  };
  /** What this worker's heartbeat says; kept current here, written out on a timer by its owner. */
  heartbeat: Pick<Heartbeat, 'state' | 'current_task' | 'tasks_done'>;
}

export interface StopSignals {
  /** First SIGINT/SIGTERM: claim nothing more, finish the running attempt, exit. */
  stop: AbortSignal;
  /** Second signal: abandon the running attempt too. */
  abort: AbortSignal;
}

export type ExitReason = 'max-iterations' | 'idle' | 'drained' | 'stopped' | 'aborted' | 'credentials-refused' | 'log-lost';

export interface RunSummary {
  reason: ExitReason;
  executed: number;
  completed: number;
  failed: number;
  retried: number;
  lostClaims: number;
  durationMs: number;
  /** The error of the last look at the queue, when the worker went idle because it could not read it. */
  lastError: WorkerError | undefined;
  /** The task put back to pending by a second signal. */
  abandoned: string | undefined;
  /** Tasks this worker failed, with why: the run's exit code and last line name them. */
  failedTasks: Array<{ task: string; error: AttemptError }>;
  /** What the API said when it refused this worker's credentials, and of which task's call. */
  credentialsRefused: { task: string; error: AttemptError } | undefined;
}

/** Why a worker claims nothing for now although tasks are ready: the API's weather. */
interface Hold {
  reason: string;
  /** When that may change; null: at the next look. */
  until: number | null;
}

interface Claim {
  task: TaskRecord;
  /** Its whole definition, read when it was claimed. */
  definition: TaskDefinition;
  event: ClaimEvent;
  lock: HeldLock;
  /** Aborted when the attempt must be abandoned: its lock was compromised (the claim may already belong to another worker), or a second signal came. */
  abandon: AbortController;
}

/**
 * The worker loop: look, claim, call, record; idle when nothing is ready. It never dies of one error: a
 * failed look or record is logged and tried again.
 */
export class Worker {
  private readonly summary: RunSummary = {
    reason: 'stopped', executed: 0, completed: 0, failed: 0, retried: 0, lostClaims: 0, durationMs: 0, lastError: undefined, abandoned: undefined, credentialsRefused: undefined, failedTasks: [],
  };
  /** What the last look found holding this worker back, if anything. */
  private hold: Hold | null = null;
  /** The outage and the pause this worker has logged: each is logged once, when first seen, and its end once. */
  private reportedOutageSince: number | null = null;
  private reportedPauseSince: number | null = null;
  private readonly probeDelayMs: number;
  private lastTakeoverScan = -Infinity;
  /** When this worker last saw another one at work (a running task, a lock it held). */
  private othersSeenAt = -Infinity;
  /** Locks being released in the background; awaited before the worker returns. */
  private readonly releasing = new Set<Promise<void>>();
  private lockedByOthers: TaskRecord[] = [];

  constructor(private readonly config: RunConfig, private readonly deps: WorkerDeps, private readonly signals: StopSignals) {
    this.probeDelayMs = Math.floor(deps.random() * MAX_PROBE_STAGGER_MS);
  }

  async run(): Promise<RunSummary> {
    const { logger, now } = this.deps;
    const started = now();
    let idleChecks = 0;
    let nextIdleCheckAt = started;
    await this.sweepLeftoverLocks();
    for (;;) {
      if (this.signals.stop.aborted) return await this.finish('stopped', started);
      if (this.config.maxIterations !== undefined && this.summary.executed >= this.config.maxIterations) return await this.finish('max-iterations', started);
      let claim: Claim | null = null;
      this.deps.changes.markLooked();
      try {
        this.deps.store.refresh();
        this.reportWeather();
        claim = await this.claimNext();
        this.summary.lastError = undefined;
      } catch (error) {
        if (error instanceof LogBusyError) {
          // A compaction is switching generations: a moment, not a failure.
          logger.debug(error.message);
          await this.awaitNextGeneration();
          continue;
        }
        this.summary.lastError = asWorkerError(error);
        logger.error(`could not look at the queue: ${this.summary.lastError.message}`, stackOf(error));
        // The log is the truth: one that was deleted, replaced, emptied or damaged under this worker ends it.
        if (this.isLogLost(error)) return await this.finish('log-lost', started);
      }
      if (claim !== null) {
        this.deps.changes.pause();
        this.deps.heartbeat.state = 'running';
        this.deps.heartbeat.current_task = claim.task.def.id;
        await this.execute(claim);
        this.deps.heartbeat.current_task = null;
        this.deps.heartbeat.tasks_done = this.summary.executed;
        if (this.signals.abort.aborted) return await this.finish('aborted', started);
        if (this.summary.credentialsRefused) return await this.finish('credentials-refused', started);
        idleChecks = 0;
        nextIdleCheckAt = now();
        continue;
      }
      if (this.config.drain && this.summary.lastError === undefined && this.isDrained()) {
        logger.info('nothing is ready or running anywhere: drained');
        return await this.finish('drained', started);
      }
      this.deps.heartbeat.state = 'idle';
      if (now() >= nextIdleCheckAt) {
        const seen = this.summary.lastError ? `cannot read the queue: ${this.summary.lastError.message}` : describeIdle(this.deps.store.state, now(), this.lockedByOthers, this.hold?.reason);
        // An idle check counts toward --max-idle only when nothing could become ready without new tasks:
        // not while a task runs somewhere, a retry is due, or the API's weather holds the queue back.
        // --drain decides by itself when to stop, unless the queue cannot be read at all: then the idle
        // limit ends it, with that error.
        const counts = this.summary.lastError !== undefined || (!this.config.drain && !this.somethingToWaitFor());
        if (counts) {
          idleChecks += 1;
          const limit = this.config.maxIdle === 0 ? '∞' : String(this.config.maxIdle);
          logger.info(`idle ${idleChecks}/${limit}: ${seen}`);
        } else {
          idleChecks = 0;
          logger.info(`idle: ${seen}`);
        }
        await this.sweepLeftoverLocks();
        if (counts && this.config.maxIdle > 0 && idleChecks >= this.config.maxIdle) return await this.finish('idle', started);
        nextIdleCheckAt = now() + this.config.pollIntervalMs;
      }
      const nextRetry = this.deps.store.state.nextRetryAt() ?? Infinity;
      const holdEnds = this.hold?.until ?? Infinity;
      await this.deps.changes.wait(Math.max(0, Math.min(nextIdleCheckAt, nextRetry, holdEnds) - now()), this.signals.stop);
    }
  }

  private async finish(reason: ExitReason, started: number): Promise<RunSummary> {
    await Promise.all(this.releasing);
    // What is left, as the run's last line says it, includes this worker's own last outcome.
    this.refreshQuietly();
    if (reason === 'drained' || reason === 'idle') await this.sweepLeftoverLocks();
    this.summary.reason = reason;
    this.summary.durationMs = durationMs(started, this.deps.now());
    return this.summary;
  }

  private isDrained(): boolean {
    const state = this.deps.store.state;
    return state.running === 0 && state.nextRetryAt() === null && state.readyTasks(this.deps.now(), 1).length === 0;
  }

  /**
   * Whether a task could become claimable without new tasks being added: one runs somewhere (its
   * dependents wait for it), a retry is due, or the API's weather holds ready tasks back. A ready task
   * whose lock another live process keeps is none of these: it counts as idle, as before.
   */
  private somethingToWaitFor(): boolean {
    const state = this.deps.store.state;
    return state.running > 0 || state.nextRetryAt() !== null || this.hold !== null;
  }

  /**
   * Logs the API's weather as this worker's fold sees it, once per change: an outage or a pause when first
   * seen (whoever met it), and its end. Each process sees what any of them recorded.
   */
  private reportWeather(): void {
    const { store, logger, now } = this.deps;
    const weather = store.state.weather;
    const outage = weather.outage();
    if (outage !== null && this.reportedOutageSince !== outage.since) {
      this.reportedOutageSince = outage.since;
      logger.warn(`${describeOutage(outage)}; probing with one task at a time, at growing intervals up to every ${formatDuration(MAX_PROBE_INTERVAL_MS)}`);
    } else if (outage === null && this.reportedOutageSince !== null) {
      logger.info(`the API answers again (unreachable for ${formatDuration(Math.max(0, now() - this.reportedOutageSince))})`);
      this.reportedOutageSince = null;
    }
    const pause = weather.pause(now());
    if (pause !== null && this.reportedPauseSince !== pause.since) {
      this.reportedPauseSince = pause.since;
      logger.warn(`${describePause(pause)}: no call starts before then, from any worker`);
    } else if (pause === null && this.reportedPauseSince !== null) {
      this.reportedPauseSince = null;
      logger.info('the API\'s pause is over');
    }
  }

  /** Why this worker may not start a call now, or null: a pause, the interval between probes of an outage, the rate limit. */
  private holdBack(): Hold | null {
    const { store, now } = this.deps;
    const weather = store.state.weather;
    const pause = weather.pause(now());
    if (pause !== null) return { reason: describePause(pause), until: pause.until };
    const outage = weather.outage();
    if (outage !== null) {
      // Each worker waits a little more of its own, so that the first to probe is seen by the others in time.
      const nextProbe = weather.nextProbeAt(outage) + this.probeDelayMs;
      if (now() < nextProbe) return { reason: `${apiDown(outage)}, next probe at ${clock(nextProbe)}`, until: nextProbe };
    }
    const rate = this.config.rate;
    if (rate !== undefined) {
      const slot = weather.nextRateSlot(rate, now());
      if (slot > now()) return { reason: `${describeRate(rate)} reached, next call at ${clock(slot)}`, until: slot };
    }
    return null;
  }

  /** During an outage, a probe already in flight: one task at a time probes the API. */
  private probeInFlight(): Hold | null {
    const state = this.deps.store.state;
    const outage = state.weather.outage();
    if (outage === null) return null;
    const probe = state.runningTasks().find((task) => task.claim !== null && Date.parse(task.claim.at) >= outage.foundAt);
    return probe === undefined ? null : { reason: `${apiDown(outage)}, ${probe.def.id} probes it on ${probe.claim!.worker}`, until: null };
  }

  /** A task whose worker died or froze first (it has waited longest), then ready tasks in the order added. */
  private async claimNext(): Promise<Claim | null> {
    const { store, now } = this.deps;
    // A takeover calls the API too: it waits out the weather like any claim, but may replace a dead probe.
    this.hold = this.holdBack();
    if (this.hold !== null) return null;
    if (now() - this.lastTakeoverScan >= TAKEOVER_SCAN_MS) {
      this.lastTakeoverScan = now();
      for (const task of store.state.runningTasks()) {
        const reason = this.takeoverReason(task);
        if (reason === null) continue;
        const claim = await this.takeOver(task, reason);
        if (claim) return claim;
      }
    }
    if (store.state.running > 0 || this.lockedByOthers.length > 0) this.othersSeenAt = now();
    this.lockedByOthers = [];
    this.hold = this.probeInFlight();
    if (this.hold !== null) return null;
    for (const task of this.spread(store.state.readyTasks(now(), CANDIDATES_PER_CHECK))) {
      const claim = await this.claim(task, null, null);
      if (claim) return claim;
    }
    return null;
  }

  /**
   * Workers that all reach for the first ready task mostly collide on its lock. While other workers are
   * running tasks, each starts at a random one of the first few instead: tasks still go roughly in the
   * order added, and collisions stay rare. A worker alone takes them strictly in order.
   */
  private spread(candidates: TaskRecord[]): TaskRecord[] {
    if (this.deps.now() - this.othersSeenAt > OTHERS_ACTIVE_MS || candidates.length < 2) return candidates;
    const start = Math.floor(this.deps.random() * candidates.length);
    return [...candidates.slice(start), ...candidates.slice(0, start)];
  }

  /**
   * Removes locks that no claim in force needs: left by a worker killed after it recorded an outcome but
   * before its lock was gone, or between taking a lock and appending its claim. Only when their owner is
   * dead on this host or the lock is stale; a task with a claim in force is left to takeOver.
   */
  private async sweepLeftoverLocks(): Promise<void> {
    const { store, locks, logger, now } = this.deps;
    /** Why a lock is left over, or null while it may be in use. */
    const leftoverReason = (id: string): string | null => {
      if (store.state.get(id)?.state === 'running') return null;
      const lock = locks.inspect(id, now());
      if (!lock.held) return null;
      const owner = locks.ownerOf(id);
      if (owner !== null && goneFromThisHost(owner, this.deps.host)) return `its owner ${owner.worker} (pid ${owner.pid}) is gone`;
      return locks.isStale(lock) ? `it was not refreshed for ${formatDuration(lock.ageMs ?? 0)}` : null;
    };
    try {
      const leftovers = locks.heldTaskIds().filter((id) => leftoverReason(id) !== null);
      if (leftovers.length > 0) {
        await withQueueLock(store.paths.queueLock, async () => {
          store.refresh();
          for (const id of leftovers) {
            const reason = leftoverReason(id);
            if (reason === null) continue;
            locks.forceRemove(id);
            logger.info(`removed the leftover lock of ${id}: ${reason}, and the task holds no claim in force`);
          }
        });
      }
      // After the leftovers: the slots of dead workers are no longer needed.
      locks.pruneSlots(this.deps.host, now(), GONE_WORKER_FILES_KEPT_MS);
    } catch (error) {
      logger.warn(`could not sweep leftover locks: ${asWorkerError(error).message}`);
    }
  }

  /** Why a running task's claim may be taken over, or null while its owner looks alive. */
  private takeoverReason(task: TaskRecord): string | null {
    const claim = task.claim;
    if (claim === null || (claim.host === this.deps.host && claim.pid === this.deps.pid)) return null;
    const liveness = claimLiveness(task, this.deps.locks, this.deps.host, this.deps.now());
    // A live owner's claim whose lock is gone may be one whose outcome this worker has not read yet: give it time.
    const lockGoneTooSoon = liveness.ownerAlive !== false && liveness.lockAgeMs === null && this.deps.now() - Date.parse(claim.at) <= this.config.lockStaleMs;
    return lockGoneTooSoon ? null : stuckReason(task, liveness, this.deps.now());
  }

  /** Takeovers are rare, so they are serialised under the queue-wide lock: two can never remove each other's lock. */
  private async takeOver(task: TaskRecord, reason: string): Promise<Claim | null> {
    const { store, locks, logger, now } = this.deps;
    const previous = task.claim!;
    return withQueueLock(store.paths.queueLock, async () => {
      store.refresh();
      const current = store.state.get(task.def.id);
      if (current?.state !== 'running' || current.claim?.token !== previous.token) return null;
      const lock = locks.inspect(task.def.id, now());
      if (lock.held) {
        // A lock goes at once only if its maker is gone: one of a live worker may be its claim in the making,
        // and one that names no maker (a folder) goes only when stale.
        const owner = locks.ownerOf(task.def.id);
        const madeByDeadProcess = owner !== null && goneFromThisHost(owner, this.deps.host);
        if (!madeByDeadProcess && !locks.isStale(lock)) return null;
        locks.forceRemove(task.def.id);
      }
      logger.warn(`taking over ${task.def.id}: ${reason}`);
      return this.claim(current, previous.token, reason);
    });
  }

  /**
   * Claims a task: take its lock, read its state again, append the claim, and read the log to see that
   * the claim is the one in force. Only then may the API be called.
   */
  private async claim(task: TaskRecord, prev: string | null, takeoverReason: string | null): Promise<Claim | null> {
    const { store, locks, logger, now } = this.deps;
    const id = task.def.id;
    const token = randomUUID();
    const abandon = new AbortController();
    logger.debug(`trying to claim ${id}`);
    const lock = await locks.tryAcquire(id, (error) => {
      logger.warn(`lost the lock of ${id}: ${error.message}; abandoning the attempt`);
      abandon.abort(error);
    });
    if (lock === null) {
      this.lockedByOthers.push(task);
      logger.debug(`${id} is locked by another worker`);
      return null;
    }
    try {
      // Re-check after locking: another worker may have claimed or finished it between our read and the lock.
      store.refresh({ definitions: false });
      const fresh = store.state.get(id);
      const claimable = prev === null ? fresh !== undefined && isClaimableAt(fresh, now()) : fresh?.state === 'running' && fresh.claim?.token === prev;
      if (!fresh || !claimable) {
        logger.debug(`lost the race for ${id}: it is ${fresh?.state ?? 'gone'} now`);
        await lock.release();
        return null;
      }
      // Before the claim: a definition that cannot be read (queue.json damaged since) leaves the task unclaimed.
      const definition = store.definitionOf(fresh);
      // Stamped as late as possible: the time the call may start, which a pause or a rate limit judges.
      const event: ClaimEvent = {
        type: 'claim', task: id, token, prev, attempt: fresh.attempts + 1, worker: this.config.workerId, pid: this.deps.pid, host: this.deps.host, at: new Date(now()).toISOString(),
      };
      if (this.config.rate !== undefined) event.rate = this.config.rate;
      if (takeoverReason !== null) event.reason = takeoverReason;
      store.append([event]);
      store.refresh({ definitions: false });
      if (fresh.claim?.token !== token) {
        const why = fresh.state === 'running' || fresh.state === 'completed' ? 'another claim came first in the log' : 'the API\'s weather holds the queue back';
        logger.debug(`lost the race for ${id}: ${why}`);
        await lock.release();
        return null;
      }
      logger.info(`claimed ${id} (${this.attemptOf(event.attempt)})${takeoverReason ? ` after taking it over: ${takeoverReason}` : ''}`);
      return { task: fresh, definition, event, lock, abandon };
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  private async execute(claim: Claim): Promise<void> {
    const { logger, now, store } = this.deps;
    const { task, event } = claim;
    const id = task.def.id;
    const startedAt = now();
    const giveBack = this.reasonToGiveBack(claim, startedAt);
    if (giveBack !== null) {
      await this.record(claim, { outcome: 'released', called: false, startedAt, endedAt: now() });
      logger.info(`gave back ${id} without calling the API: ${giveBack}`);
      return;
    }
    this.summary.executed += 1;
    const abandonOnSignal = () => claim.abandon.abort();
    this.signals.abort.addEventListener('abort', abandonOnSignal, { once: true });
    const result = await this.deps.executor.call({
      task: claim.definition,
      attempt: event.attempt,
      idempotencyKey: idempotencyKey(this.deps.queueId, id, task.generation),
      workerId: this.config.workerId,
      signal: claim.abandon.signal,
    });
    this.signals.abort.removeEventListener('abort', abandonOnSignal);
    const endedAt = now();
    const took = formatDuration(durationMs(startedAt, endedAt));
    if (result.ok) {
      logger.info(`completed ${id} in ${took} (http ${result.httpStatus})`);
      this.summary.completed += 1;
      const apart = Buffer.byteLength(result.body) > INLINE_RESULT_BYTES;
      await this.record(claim, {
        outcome: 'completed', called: true, startedAt, endedAt, httpStatus: result.httpStatus, ...(apart ? { resultApart: { body: result.body, json: result.json } } : { result: result.result }),
      });
      return;
    }
    const error = result.error;
    if (error.kind === 'aborted') {
      // Abandoned for a second signal, the task goes back to pending; for a lost lock, it may be another worker's now.
      const after = this.signals.abort.aborted ? 'it goes back to pending' : 'its lock was lost: another worker may hold the task now, and nothing is recorded unless it is still this one\'s';
      if (this.signals.abort.aborted) this.summary.abandoned = id;
      logger.warn(`abandoned ${id} after ${took}: ${error.message}; ${after}`);
      await this.record(claim, { outcome: 'released', called: true, startedAt, endedAt, error });
      return;
    }
    // The weather as of now: other workers' outcomes since this call started count too.
    this.refreshQuietly();
    const weather = store.state.weather;
    const decision = decideFailure(result, {
      attempt: event.attempt,
      maxAttempts: this.config.maxAttempts,
      waits: task.waits,
      waitingSince: task.waitingSince,
      startedAt,
      outage: error.http_status === undefined && weather.wouldBeOutage(id),
      pausesInARow: weather.pausesAskedInARow,
      backoffMs: this.config.backoffMs,
      pauseOn429: this.config.pauseOn429,
      maxApiWaitMs: this.config.maxApiWaitMs,
      now: endedAt,
      random: this.deps.random(),
    });
    const what = `${id} after ${took}: ${describeError(error)}`;
    switch (decision.outcome) {
      case 'released':
        this.summary.credentialsRefused = { task: id, error };
        logger.error(`the API refused this worker's credentials (${what}); ${id} goes back to pending, its attempts unchanged, and this worker stops`);
        await this.record(claim, { outcome: 'released', called: true, charged: false, startedAt, endedAt, error });
        return;
      case 'retry': {
        const at = new Date(decision.retryAt).toISOString();
        if (decision.why === 'retry') {
          logger.warn(`${this.attemptOf(event.attempt)} of ${what}; retry after ${at}`);
        } else if (decision.why === 'unreached' && !weather.wouldBeOutage(id)) {
          logger.warn(`the call of ${what}; it never reached the API, so it is no attempt: retry after ${at}`);
        } else {
          // The outage or the pause is logged once for the whole queue (reportWeather), not per task.
          logger.debug(`${decision.why === 'pause' ? 'asked to wait' : 'no answer'}: ${what}; not an attempt, retry after ${at}`);
        }
        this.summary.retried += 1;
        await this.record(claim, {
          outcome: 'retry', called: true, charged: decision.charged, startedAt, endedAt, error, retryAt: decision.retryAt, pauseUntil: decision.pauseUntil, waitingSince: decision.waitingSince,
        });
        if (decision.pauseUntil !== undefined) this.reportWeather();
        return;
      }
      case 'failed': {
        const why = {
          final: 'not retryable',
          attempts: `after ${event.attempt} attempts`,
          waited: `the API kept it waiting for ${formatDuration(endedAt - (task.waitingSince ?? startedAt))} (--max-api-wait ${formatDuration(this.config.maxApiWaitMs)})`,
        }[decision.why];
        logger.error(`failed ${id} (${why}) after ${took}: ${describeError(error)}`);
        this.summary.failed += 1;
        this.summary.failedTasks.push({ task: id, error });
        await this.record(claim, { outcome: 'failed', called: true, startedAt, endedAt, error });
        return;
      }
    }
  }

  /** Why a claimed task must be given back before its call, or null: the worker is stopping, or the weather changed. */
  private reasonToGiveBack(claim: Claim, now: number): string | null {
    if (this.signals.stop.aborted) return 'stopping';
    const pause = this.deps.store.state.weather.pause(now);
    if (pause !== null) return describePause(pause);
    const late = now - Date.parse(claim.event.at);
    if (this.config.rate !== undefined && late > RATE_SEND_WITHIN_MS) return `its call could not start within ${RATE_SEND_WITHIN_MS}ms of its slot of the rate limit (${late}ms)`;
    return null;
  }

  /** Reads what was appended to the log, if it can be read; the weather may then be a little behind. */
  private refreshQuietly(): void {
    try {
      this.deps.store.refresh({ definitions: false });
    } catch (error) {
      this.deps.logger.debug(`could not read the log: ${asWorkerError(error).message}`);
    }
  }

  /**
   * Appends the outcome, fenced: only while this claim is still the one in force. An outcome that cannot
   * be written (disk full) is tried again until it is, so a result is never dropped; the lock stays held.
   */
  private async record(
    claim: Claim,
    outcome: {
      outcome: Outcome;
      called: boolean;
      charged?: boolean;
      startedAt: number;
      endedAt: number;
      httpStatus?: number;
      error?: OutcomeEvent['error'];
      retryAt?: number;
      pauseUntil?: number | undefined;
      waitingSince?: number | undefined;
      result?: unknown;
      /** A result too large for the log: kept in this worker's results file, which the outcome refers to. */
      resultApart?: { body: string; json: boolean };
    },
  ): Promise<void> {
    const { store, logger } = this.deps;
    const id = claim.task.def.id;
    const event: OutcomeEvent = {
      type: 'outcome',
      task: id,
      token: claim.event.token,
      attempt: claim.event.attempt,
      worker: this.config.workerId,
      outcome: outcome.outcome,
      called: outcome.called,
      started_at: new Date(outcome.startedAt).toISOString(),
      ended_at: new Date(outcome.endedAt).toISOString(),
      duration_ms: durationMs(outcome.startedAt, outcome.endedAt),
      max_attempts: this.config.maxAttempts,
    };
    const status = outcome.httpStatus ?? outcome.error?.http_status;
    if (status !== undefined) event.http_status = status;
    if (outcome.error) event.error = outcome.error;
    if (outcome.charged === false) event.charged = false;
    if (outcome.retryAt !== undefined) event.retry_at = new Date(outcome.retryAt).toISOString();
    if (outcome.pauseUntil !== undefined) event.pause_until = new Date(outcome.pauseUntil).toISOString();
    if (outcome.waitingSince !== undefined) event.waiting_since = new Date(outcome.waitingSince).toISOString();
    if (outcome.result !== undefined) event.result = outcome.result;
    if (this.claimWasLost(claim, outcome.outcome)) {
      this.releaseInBackground(claim);
      return;
    }
    for (let wait = 100; ; wait = Math.min(wait * 2, 5000)) {
      try {
        if (outcome.resultApart !== undefined) event.result_ref ??= this.deps.results.write(outcome.resultApart.body, outcome.resultApart.json);
        store.append([event]);
        break;
      } catch (error) {
        if (this.isLogLost(error)) {
          logger.error(`not recording the outcome of ${id} (${outcome.outcome}): ${asWorkerError(error).message}`);
          break;
        }
        if (error instanceof LogBusyError) {
          logger.debug(`${error.message}: recording the outcome of ${id} in a moment`);
          await this.awaitNextGeneration();
          continue;
        }
        logger.error(`could not record the outcome of ${id}, trying again in ${formatDuration(wait)}: ${asWorkerError(error).message}`);
        if (this.signals.abort.aborted) break;
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
    this.releaseInBackground(claim);
  }

  /**
   * Whether another claim superseded this one (this worker froze, or its lock was taken). If the queue
   * cannot be read just now, the outcome is recorded anyway: the fold ignores it if the claim was lost.
   */
  private claimWasLost(claim: Claim, outcome: Outcome): boolean {
    const { store, logger } = this.deps;
    const id = claim.task.def.id;
    try {
      store.refresh({ definitions: false });
    } catch (error) {
      // Never into another file than the one the claim is in: a lost log records nothing more.
      if (this.isLogLost(error)) {
        logger.error(`not recording the outcome of ${id} (${outcome}): ${asWorkerError(error).message}`);
        return true;
      }
      logger.warn(`could not read the queue before recording ${id}; recording anyway (a lost claim's outcome does not count): ${asWorkerError(error).message}`);
      return false;
    }
    const current = store.state.get(id)?.claim;
    if (current?.token === claim.event.token) return false;
    this.summary.lostClaims += 1;
    logger.warn(`lost the claim on ${id}${current ? ` to ${current.worker}` : ''}: not recording this attempt's outcome (${outcome})`);
    return true;
  }

  private async awaitNextGeneration(): Promise<void> {
    const { store, logger, now } = this.deps;
    try {
      await store.awaitNextGeneration(() => new Date(now()));
    } catch (error) {
      logger.error(`could not wait for the log's next generation: ${asWorkerError(error).message}`);
    }
  }

  /** `attempt 2/3`; a takeover can go one past --max-attempts, which is said so rather than `attempt 2/1`. */
  private attemptOf(attempt: number): string {
    const max = this.config.maxAttempts;
    return attempt <= max ? `attempt ${attempt}/${max}` : `attempt ${attempt}, after a takeover, beyond --max-attempts ${max}`;
  }

  private isLogLost(error: unknown): boolean {
    return error instanceof DamagedFileError && error.file === this.deps.store.paths.logFile;
  }

  private releaseInBackground(claim: Claim): void {
    // The outcome is in the log: the lock may go in the background while the next task starts.
    const released = claim.lock.release().finally(() => this.releasing.delete(released));
    this.releasing.add(released);
  }
}

/** An outage as an idle worker says it at every check: shorter than the line that announced it. */
function apiDown(outage: Outage): string {
  return `the API is down since ${clock(outage.since)}`;
}

/**
 * The wall clock can step back during a call (an NTP correction): a duration is then 0, never negative,
 * which the log's schema refuses, and with it every reader the whole log.
 */
function durationMs(startedAt: number, endedAt: number): number {
  return Math.max(0, endedAt - startedAt);
}

export function asWorkerError(error: unknown): WorkerError {
  if (error instanceof WorkerError) return error;
  return new WorkerError('IO', error instanceof Error ? error.message : String(error), { cause: error });
}

function stackOf(error: unknown): Record<string, unknown> {
  return error instanceof WorkerError || !(error instanceof Error) ? {} : { stack: error.stack };
}
