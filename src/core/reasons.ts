import type { QueueState, TaskRecord } from './queueState.js';
import type { AttemptError, ClaimEvent, HandPause, TaskHead } from '../types.js';
import { rateWindowMs, type Outage, type Pause, type RateLimit } from './apiWeather.js';
import { formatDuration } from './duration.js';

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
  /** What holds the whole queue back (weatherOf), found once for all the tasks whose reasons are asked. */
  weather: string | null;
}

/** "1 task", "3 tasks". */
export function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? '' : 's'}`;
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

/** A time of day, UTC, as logs show it: 12:03:05. */
export function clock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 19);
}

export function describeOutage(outage: Outage): string {
  const tasks = `${outage.tasks} tasks in a row${outage.failures > outage.tasks ? `, ${outage.failures} calls` : ''}`;
  return `API unreachable since ${clock(outage.since)} (${tasks}: ${describeError(outage.lastError)})`;
}

export function describePause(pause: Pause): string {
  return `paused by the API until ${clock(pause.until)} (${pause.status ?? '?'} on ${pause.task})`;
}

/** `rate limit 60/m`, `rate limit 10/30s`. */
export function describeRate(rate: RateLimit): string {
  const unit = ({ 1000: 's', 60000: 'm', 3600000: 'h', 86400000: 'd' } as Record<number, string>)[rate.per_ms] ?? formatDuration(rate.per_ms);
  return `rate limit ${rate.calls}/${unit}`;
}

/**
 * What holds the whole queue back, in words, or null: an outage, a pause the API asked for, a rate limit
 * that is reached. From the log alone, so status sees what the workers see.
 */
export function weatherOf(state: QueueState, now: number): string | null {
  if (state.pausedByHand !== null) return describeHandPause(state.pausedByHand);
  const weather = state.weather;
  const pause = weather.pause(now);
  if (pause !== null) return describePause(pause);
  const outage = weather.outage();
  if (outage !== null) return `${describeOutage(outage)}; next probe at ${clock(Math.max(now, weather.nextProbeAt(outage)))}`;
  const rate = weather.lastRateSeen;
  // A full window matters only to a task that could start now.
  if (rate !== null && state.readyTasks(now, 1).length > 0) {
    const slot = weather.nextRateSlot(rate, now);
    if (slot > now)
      return `${describeRate(rate)} reached (${weather.startsWithin(rateWindowMs(rate), now)} calls started within ${formatDuration(rate.per_ms)}), next call at ${clock(slot)}`;
  }
  return null;
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
      return `failed after ${plural(task.attempts, 'attempt')}: ${task.lastError ? describeError(task.lastError) : 'no error recorded'}`;
    case 'running': {
      const stuck = stuckReason(task, ctx.liveness.get(task.def.id), ctx.now);
      const claim = task.claim!;
      return stuck ?? `running on ${claim.worker} for ${formatSpan(ctx.now - Date.parse(claim.at))} (attempt ${task.attempts}${inFlightOf(claim, ctx)})`;
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
    return `waiting on ${plural(waiting.length, 'dep')}: ${shown.join(', ')}${waiting.length > 3 ? ', …' : ''}`;
  }
  if (task.retryAt !== null && task.retryAt > ctx.now) {
    const max = outcome?.max_attempts;
    return `retry ${task.attempts + 1}${max ? `/${max}` : ''} after backoff, at ${clock(task.retryAt)} (last: ${shortError(task.lastError)})`;
  }
  const tried = task.attempts > 0 || task.waits > 0;
  const ready = tried ? `ready for attempt ${task.attempts + 1} (last: ${shortError(task.lastError)})` : 'ready';
  if (ctx.weather !== null) return `${ready}, held back: ${ctx.weather}`;
  return tried ? ready : 'ready: waiting for a free worker';
}

/** What an attempt left besides its result, in a word or two: `http 200`; empty when nothing. */
export function describeDetail(detail: { http_status?: number | undefined }): string {
  return detail.http_status === undefined ? '' : `http ${detail.http_status}`;
}

/** `; 3 of 8 in flight` for a claim of a worker that keeps several tasks in flight (--concurrency); empty otherwise. */
function inFlightOf(claim: ClaimEvent, ctx: ReasonContext): string {
  if (claim.concurrency === undefined || claim.concurrency < 2) return '';
  const inFlight = ctx.state.runningTasks().filter((task) => task.claim?.worker === claim.worker).length;
  return `; ${inFlight} of ${claim.concurrency} in flight`;
}

/** `paused by ann@laptop since 12:03:05 (worker resume to go on)`. */
export function describeHandPause(pause: HandPause): string {
  return `paused by ${pause.by} since ${clock(Date.parse(pause.since))} (\`worker resume\` to go on)`;
}
