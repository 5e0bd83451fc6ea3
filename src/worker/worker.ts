import type { RunConfig } from '../config.js';
import { asWorkerError, WorkerError } from '../errors.js';
import { formatDuration } from '../core/duration.js';
import { decideFailure } from '../core/retryPolicy.js';
import { MAX_PROBE_INTERVAL_MS, RATE_SEND_WITHIN_MS, type Outage } from '../core/apiWeather.js';
import { clock, describeDetail, describeError, describeHandPause, describeOutage, describePause, describeRate } from '../core/reasons.js';
import type { Executor } from '../executor.js';
import type { Claimant, HeldClaim, NewOutcome, WorkerStore } from '../store.js';
import type { AttemptError, Heartbeat, Logger } from '../types.js';
import { describeIdle } from './idleReport.js';

/** The reason a wait is ended with: a constant, since an abort without one makes a DOMException, with its stack. */
const WOKEN = Symbol('woken');
const ABANDONED = Symbol('abandoned by a second signal');
const CANCELLED = Symbol('cancelled by worker cancel');

/** Workers spread their probes of an unreachable API over this long after the probe is due. */
const MAX_PROBE_STAGGER_MS = 500;

export interface WorkerDeps {
  store: WorkerStore;
  executor: Executor;
  logger: Logger;
  now: () => number;
  random: () => number;
  host: string;
  pid: number;
  /** What this worker's heartbeat says; kept current here, written out by the store on its own schedule. */
  heartbeat: Pick<Heartbeat, 'state' | 'current_task' | 'current_tasks' | 'tasks_done'>;
}

export interface StopSignals {
  /** First SIGINT/SIGTERM: claim nothing more, finish the attempts in flight, exit. */
  stop: AbortSignal;
  /** Second signal: abandon the attempts in flight too. */
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
  /** The tasks put back to pending by a second signal. */
  abandoned: string[];
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

/**
 * The worker loop: look, claim, call, record; idle when nothing is ready. It never dies of one error: a
 * failed look or record is logged and tried again.
 */
export class Worker {
  private readonly summary: RunSummary = {
    reason: 'stopped',
    executed: 0,
    completed: 0,
    failed: 0,
    retried: 0,
    lostClaims: 0,
    durationMs: 0,
    lastError: undefined,
    abandoned: [],
    credentialsRefused: undefined,
    failedTasks: [],
  };
  /** What the last look found holding this worker back, if anything. */
  private hold: Hold | null = null;
  /** The outage and the pause this worker has logged: each is logged once, when first seen, and its end once. */
  private reportedOutageSince: number | null = null;
  private reportedPauseSince: number | null = null;
  private reportedHandPause: string | null = null;
  private readonly probeDelayMs: number;
  private readonly claimant: Claimant;
  /** The attempts in flight, each in its own slot (--concurrency), and their claims by task. */
  private readonly inFlight = new Set<Promise<void>>();
  private readonly running = new Map<string, HeldClaim>();
  /** One per attempt in flight: a second signal aborts them all. */
  private readonly abandons = new Set<AbortController>();
  /** A second signal came while attempts were in flight: the run ends as aborted (exit 130). */
  private abortedInFlight = false;
  /** The loop's current wait, ended at once by wakeUp: an attempt ended, or a signal came. */
  private waiting: { resolve: () => void; controller: AbortController | undefined } | null = null;

  constructor(
    private readonly config: RunConfig,
    private readonly deps: WorkerDeps,
    private readonly signals: StopSignals,
  ) {
    this.probeDelayMs = Math.floor(deps.random() * MAX_PROBE_STAGGER_MS);
    this.claimant = { workerId: config.workerId, pid: deps.pid, host: deps.host, rate: config.rate, concurrency: config.concurrency };
  }

  async run(): Promise<RunSummary> {
    const { logger, now, store } = this.deps;
    const started = now();
    let idleChecks = 0;
    let nextIdleCheckAt = started;
    const wakeOnStop = () => this.wakeUp();
    const abandonAll = () => {
      for (const abandon of this.abandons) abandon.abort(ABANDONED);
    };
    this.signals.stop.addEventListener('abort', wakeOnStop, { once: true });
    this.signals.abort.addEventListener('abort', abandonAll, { once: true });
    try {
      await store.tidy();
      for (;;) {
        const ending = this.reasonToEnd();
        if (ending !== null) return await this.finish(ending, started);
        // A worker that is stopping (a signal, refused credentials, --max-iterations) claims nothing more, and waits for what it has in flight.
        if (!this.claimsAllowed()) {
          await this.waitWhileBusy();
          continue;
        }
        let claimed = false;
        if (this.inFlight.size < this.config.concurrency) {
          store.changes.markLooked();
          try {
            await store.look();
            this.stopCancelled();
            this.reportWeather();
            while (this.mayClaimMore()) {
              const claim = await this.claimNext();
              if (claim === null) break;
              this.start(claim);
              claimed = true;
            }
            this.summary.lastError = undefined;
          } catch (error) {
            this.summary.lastError = asWorkerError(error);
            logger.error(`could not look at the queue: ${this.summary.lastError.message}`, stackOf(error));
            // The store is the truth: one that can no longer be trusted (the folder's log deleted, replaced, emptied or damaged) ends the worker.
            if (store.lost) return await this.finish('log-lost', started);
          }
        }
        if (this.inFlight.size > 0) {
          idleChecks = 0;
          nextIdleCheckAt = now();
          if (this.inFlight.size >= this.config.concurrency || claimed) {
            // Busy: changes in the queue do not matter until a slot is free, but for a cancel of what runs here,
            // looked for once per poll interval.
            store.changes.pause();
            if (this.inFlight.size >= this.config.concurrency) await this.waitWhileBusy();
            continue;
          }
          // A slot is free but nothing could be claimed: wait for a change, a completion, a retry or the weather.
          await this.waitForChange(this.msUntilSomethingMayChange(nextIdleCheckAt + this.config.pollIntervalMs));
          continue;
        }
        if (this.config.drain && this.summary.lastError === undefined && this.isDrained()) {
          logger.info('nothing is ready or running anywhere: drained');
          return await this.finish('drained', started);
        }
        this.deps.heartbeat.state = 'idle';
        if (now() >= nextIdleCheckAt) {
          const seen = this.summary.lastError
            ? `cannot read the queue: ${this.summary.lastError.message}`
            : describeIdle(store.state, now(), store.claimingElsewhere(), this.hold?.reason);
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
          await store.tidy();
          if (counts && this.config.maxIdle > 0 && idleChecks >= this.config.maxIdle) return await this.finish('idle', started);
          nextIdleCheckAt = now() + this.config.pollIntervalMs;
        }
        await this.waitForChange(this.msUntilSomethingMayChange(nextIdleCheckAt));
      }
    } finally {
      this.signals.stop.removeEventListener('abort', wakeOnStop);
      this.signals.abort.removeEventListener('abort', abandonAll);
    }
  }

  /** Nothing (a signal, --max-iterations, refused credentials) says to claim no more. */
  private claimsAllowed(): boolean {
    return !this.signals.stop.aborted && !this.summary.credentialsRefused && this.iterationsLeft() !== 0;
  }

  /** A slot is free, and claims are allowed. */
  private mayClaimMore(): boolean {
    return this.inFlight.size < this.config.concurrency && this.claimsAllowed();
  }

  /** Why the run ends now, once nothing is in flight; null while it goes on. */
  private reasonToEnd(): ExitReason | null {
    if (this.inFlight.size > 0) {
      // Stopping, for whatever reason, waits for the attempts in flight: the caller does so.
      return null;
    }
    if (this.signals.abort.aborted && this.abortedInFlight) return 'aborted';
    if (this.signals.stop.aborted) return 'stopped';
    if (this.summary.credentialsRefused) return 'credentials-refused';
    if (this.iterationsLeft() === 0) return 'max-iterations';
    return null;
  }

  /** Attempts in flight now, for the progress line. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Tasks this worker may still start (--max-iterations), or undefined for no limit. */
  private iterationsLeft(): number | undefined {
    return this.config.maxIterations === undefined ? undefined : Math.max(0, this.config.maxIterations - this.summary.executed);
  }

  /** How long an idle wait may last: until the next idle check, a retry that comes due, or the end of what holds the worker back. */
  private msUntilSomethingMayChange(nextCheckAt: number): number {
    // While held back (a pause, an outage's probe), a retry that comes due cannot be claimed anyway: what
    // holds the worker back decides; otherwise a retry due already would end every wait at once.
    const nextRetry = this.hold !== null ? Infinity : (this.deps.store.state.nextRetryAt() ?? Infinity);
    const holdEnds = this.hold?.until ?? Infinity;
    return Math.max(1, Math.min(nextCheckAt, nextRetry, holdEnds) - this.deps.now());
  }

  /** Starts an attempt in its own slot; the loop goes on while it runs. */
  private start(claim: HeldClaim): void {
    const { heartbeat } = this.deps;
    heartbeat.state = 'running';
    this.running.set(claim.taskId, claim);
    this.updateHeartbeatTasks();
    const attempt = this.execute(claim)
      .catch((error: unknown) => {
        this.deps.logger.error(`the attempt of ${claim.taskId} crashed: ${asWorkerError(error).message}`, stackOf(error));
      })
      .finally(() => {
        if (this.signals.abort.aborted) this.abortedInFlight = true;
        this.inFlight.delete(attempt);
        this.running.delete(claim.taskId);
        this.updateHeartbeatTasks();
        heartbeat.tasks_done = this.summary.executed;
        this.wakeUp();
      });
    this.inFlight.add(attempt);
  }

  private updateHeartbeatTasks(): void {
    const ids = [...this.running.keys()];
    this.deps.heartbeat.current_task = ids[0] ?? null;
    this.deps.heartbeat.current_tasks = ids;
  }

  /**
   * Resolves true when an attempt in flight has ended (at once when none is), false when `withinMs` passed
   * without one. Not Promise.race over the attempts: each race leaves a reaction on every attempt still in
   * flight, so N slots would cost N per completion, and pile up.
   */
  private nextCompletion(withinMs: number): Promise<boolean> {
    if (this.inFlight.size === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        if (this.waiting?.resolve === done) this.waiting = null;
        resolve(false);
      }, withinMs);
      const done = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.waiting = { resolve: done, controller: undefined };
    });
  }

  /** Waits for an attempt to end; each poll interval meanwhile, looks for a cancel of what runs here. */
  private async waitWhileBusy(): Promise<void> {
    if (await this.nextCompletion(this.config.pollIntervalMs)) return;
    await this.lookQuietly();
    this.stopCancelled();
  }

  /** Stops the calls of tasks `worker cancel` was asked to stop: their attempts record them cancelled. */
  private stopCancelled(): void {
    for (const claim of this.running.values()) {
      const task = this.deps.store.state.get(claim.taskId);
      if (task?.cancelRequested !== undefined && task.claim?.token === claim.token && !claim.abandon.signal.aborted) claim.abandon.abort(CANCELLED);
    }
  }

  /** Waits up to `ms` for a change to the queue; an attempt that ends, or a signal, ends the wait too. */
  private async waitForChange(ms: number): Promise<void> {
    // A signal that came while the loop was looking (a look may take a round trip to a database) found no
    // wait to end: the loop must not start one, or it would sleep through the signal for a whole poll.
    if (this.signals.stop.aborted || this.signals.abort.aborted) return;
    const controller = new AbortController();
    this.waiting = { resolve: () => undefined, controller };
    try {
      await this.deps.store.changes.wait(ms, controller.signal);
    } finally {
      if (this.waiting?.controller === controller) this.waiting = null;
    }
  }

  /** Ends the loop's current wait: an attempt ended, or a signal came. */
  private wakeUp(): void {
    const waiting = this.waiting;
    if (waiting === null) return;
    this.waiting = null;
    waiting.controller?.abort(WOKEN);
    waiting.resolve();
  }

  private async finish(reason: ExitReason, started: number): Promise<RunSummary> {
    await Promise.all(this.inFlight);
    await this.deps.store.settle();
    // What is left, as the run's last line says it, includes this worker's own last outcome.
    await this.lookQuietly();
    if (reason === 'drained' || reason === 'idle') await this.deps.store.tidy();
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
    const paused = store.state.pausedByHand;
    if (paused !== null && this.reportedHandPause !== paused.since) {
      this.reportedHandPause = paused.since;
      logger.warn(`the queue is ${describeHandPause(paused)}: claiming nothing more; calls in flight finish`);
    } else if (paused === null && this.reportedHandPause !== null) {
      this.reportedHandPause = null;
      logger.info('the queue was resumed');
    }
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
      logger.info("the API's pause is over");
    }
  }

  /** Why this worker may not start a call now, or null: a pause, the interval between probes of an outage, the rate limit. */
  private holdBack(): Hold | null {
    const { store, now } = this.deps;
    if (store.state.pausedByHand !== null) return { reason: describeHandPause(store.state.pausedByHand), until: null };
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
  private async claimNext(): Promise<HeldClaim | null> {
    // A takeover calls the API too: it waits out the weather like any claim, but may replace a dead probe.
    this.hold = this.holdBack();
    if (this.hold !== null) return null;
    const stuck = await this.deps.store.claimStuck(this.claimant);
    if (stuck !== null) return this.claimed(stuck);
    this.hold = this.probeInFlight();
    if (this.hold !== null) return null;
    const ready = await this.deps.store.claimReady(this.claimant);
    return ready === null ? null : this.claimed(ready);
  }

  private claimed(claim: HeldClaim): HeldClaim {
    const takenOver = claim.takeoverReason === null ? '' : ` after taking it over: ${claim.takeoverReason}`;
    this.deps.logger.info(`claimed ${claim.taskId} (${this.attemptOf(claim.attempt)})${takenOver}`);
    return claim;
  }

  private async execute(claim: HeldClaim): Promise<void> {
    const { logger, now, store } = this.deps;
    const id = claim.taskId;
    const startedAt = now();
    const cancelled = store.state.get(id)?.cancelRequested;
    if (cancelled !== undefined) {
      // Cancelled before its call started (a takeover of a task cancelled while its worker was gone).
      await this.recordCancelled(claim, cancelled.by, false, startedAt);
      return;
    }
    const giveBack = this.reasonToGiveBack(claim, startedAt);
    if (giveBack !== null) {
      await this.record(claim, { outcome: 'released', called: false, startedAt, endedAt: now() });
      logger.info(`gave back ${id} without calling the API: ${giveBack}`);
      return;
    }
    this.summary.executed += 1;
    // Abandoned for a second signal (abandonAll), or by the store when the claim may no longer be this worker's.
    const { abandon } = claim;
    if (this.signals.abort.aborted) abandon.abort(ABANDONED);
    this.abandons.add(abandon);
    const attempt = { task: claim.definition, attempt: claim.attempt, idempotencyKey: claim.idempotencyKey, workerId: this.config.workerId };
    const result = await this.deps.executor.execute(attempt, abandon.signal);
    this.abandons.delete(abandon);
    const endedAt = now();
    const took = formatDuration(durationMs(startedAt, endedAt));
    if (result.ok) {
      const detail = describeDetail(result.detail);
      logger.info(`completed ${id} in ${took}${detail ? ` (${detail})` : ''}`);
      this.summary.completed += 1;
      await this.record(claim, {
        outcome: 'completed',
        called: true,
        startedAt,
        endedAt,
        detail: result.detail,
        result: { value: result.result, body: result.body, json: result.json },
      });
      return;
    }
    const error = result.error;
    if (error.kind === 'aborted' && claim.abandon.signal.reason === CANCELLED) {
      await this.recordCancelled(claim, store.state.get(id)?.cancelRequested?.by, true, startedAt);
      return;
    }
    if (error.kind === 'aborted') {
      // Abandoned for a second signal, the task goes back to pending; for a lost lock, it may be another worker's now.
      const after = this.signals.abort.aborted
        ? 'it goes back to pending'
        : "its lock was lost: another worker may hold the task now, and nothing is recorded unless it is still this one's";
      if (this.signals.abort.aborted) this.summary.abandoned.push(id);
      logger.warn(`abandoned ${id} after ${took}: ${error.message}; ${after}`);
      await this.record(claim, { outcome: 'released', called: true, startedAt, endedAt, error });
      return;
    }
    // The weather as of now: other workers' outcomes since this call started count too.
    await this.lookQuietly();
    const weather = store.state.weather;
    const decision = decideFailure(result, {
      attempt: claim.attempt,
      maxAttempts: this.config.maxAttempts,
      waits: claim.waits,
      waitingSince: claim.waitingSince,
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
          logger.warn(`${this.attemptOf(claim.attempt)} of ${what}; retry after ${at}`);
        } else if (decision.why === 'unreached' && !weather.wouldBeOutage(id)) {
          logger.warn(`the call of ${what}; it never reached the API, so it is no attempt: retry after ${at}`);
        } else {
          // The outage or the pause is logged once for the whole queue (reportWeather), not per task.
          logger.debug(`${decision.why === 'pause' ? 'asked to wait' : 'no answer'}: ${what}; not an attempt, retry after ${at}`);
        }
        this.summary.retried += 1;
        await this.record(claim, {
          outcome: 'retry',
          called: true,
          charged: decision.charged,
          startedAt,
          endedAt,
          error,
          retryAt: decision.retryAt,
          pauseUntil: decision.pauseUntil,
          waitingSince: decision.waitingSince,
        });
        if (decision.pauseUntil !== undefined) this.reportWeather();
        return;
      }
      case 'failed': {
        const why = {
          final: 'not retryable',
          attempts: `after ${claim.attempt} attempts`,
          waited: `the API kept it waiting for ${formatDuration(endedAt - (claim.waitingSince ?? startedAt))} (--max-api-wait ${formatDuration(this.config.maxApiWaitMs)})`,
        }[decision.why];
        logger.error(`failed ${id} (${why}) after ${took}: ${describeError(error)}`);
        this.summary.failed += 1;
        this.summary.failedTasks.push({ task: id, error });
        await this.record(claim, { outcome: 'failed', called: true, startedAt, endedAt, error });
        return;
      }
    }
  }

  /** `worker cancel` of a task this worker holds: it fails as cancelled, and its dependents are blocked. */
  private async recordCancelled(claim: HeldClaim, by: string | undefined, called: boolean, startedAt: number): Promise<void> {
    const endedAt = this.deps.now();
    const message = `cancelled by ${by ?? 'hand'} (worker cancel)${called ? ' while its call ran' : ''}`;
    this.deps.logger.warn(`${claim.taskId}: ${message}${called ? `; stopped the call after ${formatDuration(durationMs(startedAt, endedAt))}` : ''}`);
    await this.record(claim, { outcome: 'failed', called, startedAt, endedAt, error: { kind: 'cancelled', message } });
  }

  /** Why a claimed task must be given back before its call, or null: the worker is stopping, or the weather changed. */
  private reasonToGiveBack(claim: HeldClaim, now: number): string | null {
    if (this.signals.stop.aborted) return 'stopping';
    const pause = this.deps.store.state.weather.pause(now);
    if (pause !== null) return describePause(pause);
    const late = now - claim.claimedAt;
    if (this.config.rate !== undefined && late > RATE_SEND_WITHIN_MS)
      return `its call could not start within ${RATE_SEND_WITHIN_MS}ms of its slot of the rate limit (${late}ms)`;
    return null;
  }

  /** Looks at the queue, if it can be read; the weather may then be a little behind. */
  private async lookQuietly(): Promise<void> {
    try {
      await this.deps.store.look();
    } catch (error) {
      this.deps.logger.debug(`could not look at the queue: ${asWorkerError(error).message}`);
    }
  }

  /**
   * Records the outcome, fenced by the store: only while this claim is still the one in force. An outcome
   * that cannot be written (disk full) is tried again until it is, so a result is never dropped; the claim
   * stays held meanwhile. A store that can no longer be trusted records nothing more.
   */
  private async record(claim: HeldClaim, outcome: Omit<NewOutcome, 'maxAttempts'>): Promise<void> {
    const { store, logger } = this.deps;
    const id = claim.taskId;
    for (let wait = 100; ; wait = Math.min(wait * 2, 5000)) {
      try {
        const recorded = await store.record(claim, { ...outcome, maxAttempts: this.config.maxAttempts });
        if (!recorded.recorded) {
          this.summary.lostClaims += 1;
          logger.warn(`lost the claim on ${id}${recorded.lostTo ? ` to ${recorded.lostTo}` : ''}: not recording this attempt's outcome (${outcome.outcome})`);
        }
        return;
      } catch (error) {
        if (store.lost) {
          logger.error(`not recording the outcome of ${id} (${outcome.outcome}): ${asWorkerError(error).message}`);
          return;
        }
        logger.error(`could not record the outcome of ${id}, trying again in ${formatDuration(wait)}: ${asWorkerError(error).message}`);
        if (this.signals.abort.aborted) {
          store.abandon(claim);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }

  /** `attempt 2/3`; a takeover can go one past --max-attempts, which is said so rather than `attempt 2/1`. */
  private attemptOf(attempt: number): string {
    const max = this.config.maxAttempts;
    return attempt <= max ? `attempt ${attempt}/${max}` : `attempt ${attempt}, after a takeover, beyond --max-attempts ${max}`;
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

function stackOf(error: unknown): Record<string, unknown> {
  return error instanceof WorkerError || !(error instanceof Error) ? {} : { stack: error.stack };
}
