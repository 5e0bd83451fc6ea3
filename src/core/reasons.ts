import type { QueueState, TaskRecord } from './queueState.js';
import type { AttemptError } from '../types.js';
import type { TaskHead } from '../queue/schema.js';

/** What can be learnt of a running task's claim from outside: is its worker alive, is its lock fresh? */
export interface ClaimLiveness {
  /** False when the owner ran on this host and its pid is gone; undefined when it cannot be known (another host). */
  ownerAlive: boolean | undefined;
  /** Milliseconds since the lock was last refreshed; null when there is no lock. */
  lockAgeMs: number | null;
  stale: boolean;
}

export interface ReasonContext<Def extends TaskHead = TaskHead> {
  state: QueueState<Def>;
  now: number;
  blocked: ReadonlyMap<string, TaskRecord<Def>>;
  liveness: ReadonlyMap<string, ClaimLiveness>;
}

/** "41s", "3m", "2h", "4d": how long, for people. */
export function formatSpan(ms: number): string {
  const seconds = Math.max(0, Math.round(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

export function describeError(error: AttemptError): string {
  const status = error.http_status === undefined || error.kind !== 'http' ? '' : ` ${error.http_status}`;
  return `${error.kind}${status}: ${error.message}`;
}

function shortError(error: AttemptError | null): string {
  if (error === null) return 'no error recorded';
  return error.kind === 'http' && error.http_status !== undefined ? `http ${error.http_status}` : error.kind;
}

/** Whether a running task's claim looks abandoned, and why, in words; null while it looks alive. */
export function stuckReason(task: TaskRecord, liveness: ClaimLiveness | undefined, now: number): string | null {
  const claim = task.claim;
  if (claim === null || liveness === undefined) return null;
  const stuckFor = formatSpan(now - Date.parse(claim.at));
  if (liveness.ownerAlive === false) return `held by ${claim.worker}, whose process is gone (stuck ${stuckFor})`;
  if (liveness.lockAgeMs === null) return `held by ${claim.worker}, whose lock is gone (stuck ${stuckFor})`;
  if (liveness.stale) return `held by ${claim.worker}, whose lock was last refreshed ${formatSpan(liveness.lockAgeMs)} ago (stale; stuck ${stuckFor})`;
  return null;
}

function shortState(dep: TaskRecord, ctx: ReasonContext): string {
  if (dep.state === 'running' && dep.claim) return `running on ${dep.claim.worker}, ${formatSpan(ctx.now - Date.parse(dep.claim.at))}`;
  if (ctx.blocked.has(dep.def.id)) return 'blocked';
  if (dep.state === 'pending' && dep.unmetDeps > 0) return 'waiting on deps';
  if (dep.state === 'pending' && dep.retryAt !== null && dep.retryAt > ctx.now) return 'in backoff';
  return dep.state;
}

function clock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 19);
}

/**
 * Why a task is where it is, in words: the answer to "why is it not running?" that status, show and an
 * idle worker's log all give.
 */
export function reasonFor(task: TaskRecord, ctx: ReasonContext): string {
  const outcome = task.lastOutcome;
  switch (task.state) {
    case 'completed':
      return outcome ? `completed by ${outcome.worker} in ${outcome.duration_ms} ms (attempt ${outcome.attempt})` : 'completed';
    case 'failed':
      if (task.lastError?.kind === 'cancelled') return 'cancelled by hand';
      return `failed after ${task.attempts} attempt${task.attempts === 1 ? '' : 's'}: ${task.lastError ? describeError(task.lastError) : 'no error recorded'}`;
    case 'running': {
      const stuck = stuckReason(task, ctx.liveness.get(task.def.id), ctx.now);
      const claim = task.claim!;
      return stuck ?? `running on ${claim.worker} for ${formatSpan(ctx.now - Date.parse(claim.at))} (attempt ${task.attempts})`;
    }
    case 'pending':
      break;
  }
  const root = ctx.blocked.get(task.def.id);
  if (root) {
    const rootWhy = root.lastError?.kind === 'cancelled' ? 'was cancelled' : `failed (${shortError(root.lastError)})`;
    if (task.def.deps.includes(root.def.id)) return `blocked: dependency ${root.def.id} ${rootWhy}`;
    const via = task.def.deps.find((dep) => ctx.blocked.has(dep)) ?? '?';
    return `blocked: dependency ${via} is blocked by ${root.def.id}, which ${rootWhy}`;
  }
  if (task.unmetDeps > 0) {
    const waiting = task.def.deps.map((id) => ctx.state.get(id)).filter((dep): dep is TaskRecord => dep !== undefined && dep.state !== 'completed');
    const shown = waiting.slice(0, 3).map((dep) => `${dep.def.id} (${shortState(dep, ctx)})`);
    return `waiting on ${waiting.length} dep${waiting.length === 1 ? '' : 's'}: ${shown.join(', ')}${waiting.length > 3 ? ', …' : ''}`;
  }
  if (task.retryAt !== null && task.retryAt > ctx.now) {
    const max = outcome?.max_attempts;
    return `retry ${task.attempts + 1}${max ? `/${max}` : ''} after backoff, at ${clock(task.retryAt)} (last: ${shortError(task.lastError)})`;
  }
  return task.attempts > 0 ? `ready for attempt ${task.attempts + 1} (last: ${shortError(task.lastError)})` : 'ready: waiting for a free worker';
}
