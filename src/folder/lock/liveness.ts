import type { ClaimLiveness } from '../../core/reasons.js';
import type { QueueState, TaskRecord } from '../../core/queueState.js';
import { goneFromThisHost } from './processes.js';
import type { LockInspector } from './taskLock.js';

/** Looks at a running task's claim from outside: its owner's process (on this host) and its lock. */
export function claimLiveness(task: TaskRecord, locks: LockInspector, host: string, now: number): ClaimLiveness {
  const claim = task.claim;
  const lock = locks.inspect(task.def.id, now);
  const ownerAlive = claim === null || claim.host !== host ? undefined : !goneFromThisHost(claim, host);
  return { ownerAlive, lockAgeMs: lock.ageMs, stale: locks.isStale(lock) };
}

/** The liveness of every running task: few, at most one per worker. */
export function livenessOfRunning(state: QueueState, locks: LockInspector, host: string, now: number): Map<string, ClaimLiveness> {
  return new Map(state.runningTasks().map((task) => [task.def.id, claimLiveness(task, locks, host, now)]));
}
