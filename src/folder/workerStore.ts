import { randomUUID } from 'node:crypto';
import { formatDuration } from '../core/duration.js';
import { isClaimableAt, type TaskRecord } from '../core/queueState.js';
import { stuckReason } from '../core/reasons.js';
import {
  claimRecord,
  bytesKeptApart,
  outcomeRecord,
  type ChangeNotifier,
  type Claimant,
  type HeldClaim,
  type NewOutcome,
  type Presence,
  type Recorded,
  type WorkerStore,
} from '../store.js';
import type { ClaimEvent, Heartbeat, Logger, ResultRef, TaskDefinition, TaskHead } from '../types.js';
import { asWorkerError } from '../errors.js';
import { ChangeWatcher } from './changeWatcher.js';
import { GONE_WORKER_FILES_KEPT_MS, HeartbeatWriter } from './heartbeat.js';
import { claimLiveness } from './lock/liveness.js';
import { goneFromThisHost } from './lock/processes.js';
import { TaskLocks, type HeldLock } from './lock/taskLock.js';
import { withQueueLock } from './queueLock.js';
import { ResultsWriter } from './results.js';
import { LogBusyError, QueueStore } from './store.js';
import { holdWorkerId } from './workerIdLock.js';
import { idempotencyKey } from '../core/newTasks.js';
import type { IndexedTask } from './queueIndex.js';

/** Ready tasks looked at per claim: enough to get past the few that other workers are claiming. */
const CANDIDATES_PER_CHECK = 16;
/** Other workers count as active this long after one was last seen: until then, claims are spread. */
const OTHERS_ACTIVE_MS = 2000;
/** How often a busy worker looks for tasks whose worker died or froze. */
const TAKEOVER_SCAN_MS = 1000;

export interface FolderWorkerOptions {
  workerId: string;
  pid: number;
  host: string;
  lockStaleMs: number;
  logger: Logger;
  now: () => number;
  random: () => number;
}

/** A claim of the folder store: the lock file it holds besides what every claim is. */
interface FolderClaim extends HeldClaim {
  readonly event: ClaimEvent;
  readonly lock: HeldLock;
  /** Its result, once written to the results file: an outcome tried again refers to it, not to a copy. */
  resultRef?: ResultRef;
  /** Its lock was let go (or is being): once only. */
  released?: boolean;
}

/**
 * The folder store as a worker uses it. A claim takes the task's lock file, reads the task's state again,
 * appends the claim and reads the log to see that it is the one in force; an outcome is appended only
 * while the claim is still in force. Takeovers of dead workers' claims and the sweep of leftover locks are
 * serialised under the queue-wide lock. See src/README.md.
 */
export class FolderWorkerStore implements WorkerStore {
  readonly changes: ChangeNotifier;
  private readonly locks: TaskLocks;
  private readonly results: ResultsWriter;
  private readonly queueId: string;
  private lastTakeoverScan = -Infinity;
  /** When this worker last saw another one at work (a running task, a lock it held). */
  private othersSeenAt = -Infinity;
  private lockedByOthers: TaskRecord[] = [];
  /** Claims this process holds now (--concurrency): its own running tasks are not other workers at work. */
  private held = 0;
  /** Locks being released in the background; awaited by settle. */
  private readonly releasing = new Set<Promise<void>>();

  private constructor(
    private readonly store: QueueStore<IndexedTask>,
    private readonly options: FolderWorkerOptions,
  ) {
    const { logger } = options;
    this.changes = new ChangeWatcher(store.paths.queueDir);
    this.locks = new TaskLocks(store.paths, options.lockStaleMs, {
      owner: { worker: options.workerId, pid: options.pid, host: options.host },
      onRefresh: (lockPath) => logger.debug(`refreshed ${lockPath}`),
    });
    this.results = new ResultsWriter(store.paths, options.workerId);
    this.queueId = store.queueId();
  }

  /** Opens the queue below `root` for a worker: what the fold needs of each task, read now. */
  static async open(root: string, options: FolderWorkerOptions): Promise<FolderWorkerStore> {
    const store = await QueueStore.openForWorker(root);
    try {
      return new FolderWorkerStore(store, options);
    } catch (error) {
      store.close();
      throw error;
    }
  }

  get state() {
    return this.store.state;
  }

  get lost(): Error | undefined {
    return this.store.lost;
  }

  describe(): string {
    const size = this.store.state.size;
    return `queue ${this.store.paths.root} (${size} task${size === 1 ? '' : 's'})`;
  }

  async look(): Promise<void> {
    this.store.refresh();
  }

  /**
   * While a compaction switches generations, appends wait (LogBusyError): a moment, not a failure. The
   * claim is not made; the next look finds the next generation in place.
   */
  private async unlessBusy(claiming: () => Promise<HeldClaim | null>): Promise<HeldClaim | null> {
    try {
      return await claiming();
    } catch (error) {
      if (!(error instanceof LogBusyError)) throw error;
      this.options.logger.debug(error.message);
      await this.awaitNextGeneration();
      return null;
    }
  }

  async enter(heartbeat: Heartbeat): Promise<Presence> {
    // Before anything is claimed: a folder this worker cannot write to, or an id another live worker holds, is refused.
    this.store.checkWritable();
    const releaseWorkerId = await holdWorkerId(this.store.paths, this.options.workerId, this.options.lockStaleMs);
    const writer = new HeartbeatWriter(this.store.paths, heartbeat, this.options.now);
    writer.start();
    return {
      heartbeat: writer.beat,
      leave: async () => {
        writer.stop();
        await releaseWorkerId();
      },
    };
  }

  claimingElsewhere(): readonly TaskRecord<TaskHead>[] {
    return this.lockedByOthers;
  }

  claimStuck(claimant: Claimant): Promise<HeldClaim | null> {
    return this.unlessBusy(() => this.takeOverStuck(claimant));
  }

  private async takeOverStuck(claimant: Claimant): Promise<HeldClaim | null> {
    const { now } = this.options;
    if (now() - this.lastTakeoverScan < TAKEOVER_SCAN_MS) return null;
    this.lastTakeoverScan = now();
    for (const task of this.store.state.runningTasks()) {
      const reason = this.takeoverReason(task);
      if (reason === null) continue;
      const claim = await this.takeOver(task, reason, claimant);
      if (claim) {
        // A dead worker may have left several (--concurrency): the next free slot looks again at once.
        this.lastTakeoverScan = -Infinity;
        return claim;
      }
    }
    return null;
  }

  claimReady(claimant: Claimant): Promise<HeldClaim | null> {
    return this.unlessBusy(() => this.claimFirstReady(claimant));
  }

  private async claimFirstReady(claimant: Claimant): Promise<HeldClaim | null> {
    const { now } = this.options;
    const state = this.store.state;
    if (state.running > this.held || this.lockedByOthers.length > 0) this.othersSeenAt = now();
    this.lockedByOthers = [];
    for (const task of this.spread(state.readyTasks(now(), CANDIDATES_PER_CHECK))) {
      const claim = await this.claim(task, null, null, claimant);
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
    if (this.options.now() - this.othersSeenAt > OTHERS_ACTIVE_MS || candidates.length < 2) return candidates;
    const start = Math.floor(this.options.random() * candidates.length);
    return [...candidates.slice(start), ...candidates.slice(0, start)];
  }

  /**
   * Removes locks that no claim in force needs: left by a worker killed after it recorded an outcome but
   * before its lock was gone, or between taking a lock and appending its claim. Only when their owner is
   * dead on this host or the lock is stale; a task with a claim in force is left to takeOver.
   */
  async tidy(): Promise<void> {
    const { store } = this;
    const locks = this.locks.inspector;
    const { logger, now, host } = this.options;
    /** Why a lock is left over, or null while it may be in use. */
    const leftoverReason = (id: string): string | null => {
      if (store.state.get(id)?.state === 'running') return null;
      const lock = locks.inspect(id, now());
      if (!lock.held) return null;
      const owner = locks.ownerOf(id);
      if (owner !== null && goneFromThisHost(owner, host)) return `its owner ${owner.worker} (pid ${owner.pid}) is gone`;
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
      locks.pruneSlots(host, now(), GONE_WORKER_FILES_KEPT_MS);
    } catch (error) {
      logger.warn(`could not sweep leftover locks: ${asWorkerError(error).message}`);
    }
  }

  /** Why a running task's claim may be taken over, or null while its owner looks alive. */
  private takeoverReason(task: TaskRecord): string | null {
    const { host, pid, now, lockStaleMs } = this.options;
    const claim = task.claim;
    if (claim === null || (claim.host === host && claim.pid === pid)) return null;
    const liveness = claimLiveness(task, this.locks.inspector, host, now());
    // A live owner's claim whose lock is gone may be one whose outcome this worker has not read yet: give it time.
    const lockGoneTooSoon = liveness.ownerAlive !== false && liveness.lockAgeMs === null && now() - Date.parse(claim.at) <= lockStaleMs;
    return lockGoneTooSoon ? null : stuckReason(task, liveness, now());
  }

  /** Takeovers are rare, so they are serialised under the queue-wide lock: two can never remove each other's lock. */
  private async takeOver(task: TaskRecord, reason: string, claimant: Claimant): Promise<HeldClaim | null> {
    const { store } = this;
    const locks = this.locks.inspector;
    const { logger, now, host } = this.options;
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
        const madeByDeadProcess = owner !== null && goneFromThisHost(owner, host);
        if (!madeByDeadProcess && !locks.isStale(lock)) return null;
        locks.forceRemove(task.def.id);
      }
      logger.warn(`taking over ${task.def.id}: ${reason}`);
      return this.claim(current, previous.token, reason, claimant);
    });
  }

  /**
   * Claims a task: take its lock, read its state again, append the claim, and read the log to see that
   * the claim is the one in force. Only then may the API be called.
   */
  private async claim(task: TaskRecord, prev: string | null, takeoverReason: string | null, claimant: Claimant): Promise<FolderClaim | null> {
    const { store, locks } = this;
    const { logger, now } = this.options;
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
      let definition: TaskDefinition;
      try {
        definition = store.definitionOf(fresh);
      } catch (error) {
        // `worker remove` took it out of queue.json since this worker looked: a lost race, not damage.
        if (!store.state.isRemoved(id)) throw error;
        logger.debug(`lost the race for ${id}: it was removed from the queue`);
        await lock.release();
        return null;
      }
      // Stamped as late as possible: the time the call may start, which a pause or a rate limit judges.
      const claimedAt = now();
      const event = claimRecord(claimant, { task: id, token, prev, attempt: fresh.attempts + 1, at: claimedAt, reason: takeoverReason });
      store.append([event]);
      store.refresh({ definitions: false });
      if (fresh.claim?.token !== token) {
        const why = fresh.state === 'running' || fresh.state === 'completed' ? 'another claim came first in the log' : "the API's weather holds the queue back";
        logger.debug(`lost the race for ${id}: ${why}`);
        await lock.release();
        return null;
      }
      this.held += 1;
      return {
        taskId: id,
        definition,
        token,
        attempt: event.attempt,
        claimedAt,
        idempotencyKey: idempotencyKey(this.queueId, id, fresh.generation),
        waits: fresh.waits,
        waitingSince: fresh.waitingSince,
        takeoverReason,
        abandon,
        event,
        lock,
      };
    } catch (error) {
      await lock.release();
      throw error;
    }
  }

  async record(held: HeldClaim, outcome: NewOutcome): Promise<Recorded> {
    const claim = held as FolderClaim;
    let lostTo: string | null | undefined;
    try {
      lostTo = this.claimWasLost(claim);
    } catch (error) {
      if (this.store.lost) this.releaseInBackground(claim);
      throw error;
    }
    if (lostTo !== undefined) {
      this.releaseInBackground(claim);
      return { recorded: false, lostTo };
    }
    // A result too large for the log is kept in this worker's results file, which the outcome refers to.
    const apart = bytesKeptApart(outcome) !== null;
    const event = outcomeRecord(claim, claim.event.worker, outcome, apart);
    for (;;) {
      try {
        if (apart) event.result_ref = claim.resultRef ??= this.results.write(outcome.result!.body, outcome.result!.json);
        this.store.append([event]);
        break;
      } catch (error) {
        if (this.store.lost) this.releaseInBackground(claim);
        if (!(error instanceof LogBusyError)) throw error;
        this.options.logger.debug(`${error.message}: recording the outcome of ${claim.taskId} in a moment`);
        await this.awaitNextGeneration();
      }
    }
    this.releaseInBackground(claim);
    return { recorded: true };
  }

  /**
   * Whether another claim superseded this one (this worker froze, or its lock was taken): undefined if not,
   * else the worker that holds the task now (null: none). If the queue cannot be read just now, the outcome
   * is recorded anyway: the fold ignores it if the claim was lost. A lost log throws: nothing is recorded
   * into another file than the one the claim is in.
   */
  private claimWasLost(claim: FolderClaim): string | null | undefined {
    try {
      this.store.refresh({ definitions: false });
    } catch (error) {
      if (this.store.lost) throw error;
      this.options.logger.warn(
        `could not read the queue before recording ${claim.taskId}; recording anyway (a lost claim's outcome does not count): ${asWorkerError(error).message}`,
      );
      return undefined;
    }
    const current = this.store.state.get(claim.taskId)?.claim;
    if (current?.token === claim.token) return undefined;
    return current?.worker ?? null;
  }

  private async awaitNextGeneration(): Promise<void> {
    try {
      await this.store.awaitNextGeneration(() => new Date(this.options.now()));
    } catch (error) {
      this.options.logger.error(`could not wait for the log's next generation: ${asWorkerError(error).message}`);
    }
  }

  abandon(claim: HeldClaim): void {
    this.releaseInBackground(claim as FolderClaim);
  }

  private releaseInBackground(claim: FolderClaim): void {
    if (claim.released) return;
    claim.released = true;
    this.held -= 1;
    // The outcome is in the log: the lock may go in the background while the next task starts.
    const released = claim.lock.release().finally(() => this.releasing.delete(released));
    this.releasing.add(released);
  }

  async settle(): Promise<void> {
    await Promise.all(this.releasing);
  }

  close(): void {
    (this.changes as ChangeWatcher).close();
    this.locks.close();
    this.results.close();
    this.store.close();
  }
}
