import type { QueueState, TaskRecord } from '../core/queueState.js';
import { reasonFor, weatherOf } from '../core/reasons.js';

/**
 * What an idle worker sees, in words: why nothing could be claimed (`heldBack`: the API's weather holds it
 * back). One pass over the queue; called once per poll interval at most.
 */
export function describeIdle(state: QueueState, now: number, lockedByOthers: readonly TaskRecord[], heldBack?: string): string {
  const blocked = state.blockedTasks();
  let waitingOnDeps = 0;
  let inBackoff = 0;
  let nextRetry = Infinity;
  let pending = 0;
  let completed = 0;
  let failed = 0;
  let firstPending: TaskRecord | undefined;
  for (const task of state.tasks()) {
    if (task.state === 'completed') completed += 1;
    else if (task.state === 'failed') failed += 1;
    else if (task.state === 'pending' && !blocked.has(task.def.id)) {
      pending += 1;
      firstPending ??= task;
      if (task.unmetDeps > 0) waitingOnDeps += 1;
      else if (task.retryAt !== null && task.retryAt > now) {
        inBackoff += 1;
        nextRetry = Math.min(nextRetry, task.retryAt);
      }
    }
  }
  const pendingParts = [];
  if (waitingOnDeps > 0) pendingParts.push(`${waitingOnDeps} waiting on deps`);
  if (inBackoff > 0) pendingParts.push(`${inBackoff} in backoff until ${new Date(nextRetry).toISOString().slice(11, 19)}`);
  const locked = lockedByOthers.filter((task) => task.state === 'pending');
  if (locked.length > 0) pendingParts.push(`${locked.length} being claimed by another worker`);
  const parts = [`${pending} pending${pendingParts.length > 0 ? ` (${pendingParts.join(', ')})` : ''}`];
  const running = state.runningTasks();
  if (running.length > 0) {
    const shown = running.slice(0, 3).map((task) => `${task.def.id} on ${task.claim?.worker ?? '?'}`);
    parts.push(`${running.length} running (${shown.join(', ')}${running.length > 3 ? ', …' : ''})`);
  }
  if (blocked.size > 0) {
    const roots = [...new Set([...blocked.values()].map((root) => root.def.id))];
    parts.push(`${blocked.size} blocked (dependency ${roots.slice(0, 3).join(', ')}${roots.length > 3 ? ', …' : ''} failed)`);
  }
  parts.push(`${completed} completed`, `${failed} failed`);
  // What holds this worker back comes first: it is why nothing was claimed although tasks are ready.
  if (heldBack !== undefined) return `${heldBack}; ${parts.join(', ')}`;
  const next = firstPending
    ? `; next: ${firstPending.def.id} ${reasonFor(firstPending, { state, now, blocked, liveness: new Map(), weather: weatherOf(state, now) })}`
    : '';
  return `${parts.join(', ')}${next}`;
}
