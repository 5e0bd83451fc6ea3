import { TASK_STATES, type ResultRef, type StatusReport, type TaskDefinition, type TaskState, type TaskStatus } from '../types.js';
import type { Store } from '../store.js';
import { reasonFor, stuckReason, weatherOf, type ReasonContext } from '../core/reasons.js';
import type { TaskRecord } from '../core/queueState.js';
import { safeJson } from '../core/visible.js';
import { describeEta, estimate } from '../core/eta.js';

/** The queue as status, show and graph see it: states, and the claims in force looked at from outside. */
export async function inspectQueue(store: Store, now: number): Promise<ReasonContext<TaskDefinition>> {
  const state = await store.read();
  const liveness = await store.liveness(state, now);
  return { state, now, blocked: state.blockedTasks(), liveness, weather: weatherOf(state, now) };
}

export async function readStatus(store: Store, now: number, filter: TaskState | undefined): Promise<StatusReport> {
  const report = statusOf(await inspectQueue(store, now), filter);
  report.warnings.push(...store.warnings());
  return report;
}

export function statusOf(context: ReasonContext<TaskDefinition>, filter: TaskState | undefined): StatusReport {
  const { state, blocked } = context;
  const counts = Object.fromEntries(TASK_STATES.map((name) => [name, 0])) as Record<TaskState, number>;
  const tasks: TaskStatus[] = [];
  const resultRefs = new Map<string, ResultRef>();
  const completedAt: number[] = [];
  for (const task of state.tasks()) {
    const taskState = state.stateOf(task, blocked);
    counts[taskState] += 1;
    if (taskState === 'completed') completedAt.push(Date.parse(task.updatedAt));
    if (filter !== undefined && taskState !== filter) continue;
    tasks.push(taskStatus(task, context));
    if (task.resultRef !== null) resultRefs.set(task.def.id, task.resultRef);
  }
  const eta = estimate(completedAt, counts.pending + counts.running, context.now);
  return { tasks, resultRefs, counts, weather: context.weather, eta: eta === null ? null : describeEta(eta), warnings: [] };
}

/** One task as status and show give it. */
export function taskStatus(task: TaskRecord<TaskDefinition>, context: ReasonContext<TaskDefinition>): TaskStatus {
  const status: TaskStatus = {
    id: task.def.id,
    instruction: task.def.instruction,
    deps: task.def.deps,
    state: context.state.stateOf(task, context.blocked),
    attempts: task.attempts,
    min_budget: task.def.min_budget,
    max_budget: task.def.max_budget,
    intensity: task.def.intensity,
    added_at: task.def.added_at,
    updated_at: task.updatedAt,
    reason: reasonFor(task, context),
  };
  if (task.claim) status.worker = task.claim.worker;
  const stuck = stuckReason(task, context.liveness.get(task.def.id), context.now);
  if (stuck) status.stuck = stuck;
  if (task.lastError) status.last_error = task.lastError;
  if (task.retryAt !== null && task.state === 'pending') status.retry_at = new Date(task.retryAt).toISOString();
  const root = context.blocked.get(task.def.id);
  if (root) status.blocked_by = root.def.id;
  if (task.result !== undefined) status.result = task.result;
  return status;
}

/**
 * `status --json`, one task at a time: a result kept apart is read just before its task is printed and
 * dropped after, so memory holds one result, not all of them.
 */
export async function printStatusJson(report: StatusReport, store: Pick<Store, 'readResult'>, print: (text: string) => void): Promise<void> {
  if (report.tasks.length === 0) {
    print('[]\n');
    return;
  }
  for (const [i, task] of report.tasks.entries()) {
    const ref = report.resultRefs.get(task.id);
    const shown = ref === undefined ? task : { ...task, result: (await store.readResult(ref)).value };
    const text = safeJson(shown, 2).replace(/^/gm, '  ');
    print(`${i === 0 ? '[\n' : ''}${text}${i === report.tasks.length - 1 ? '\n]\n' : ',\n'}`);
  }
}
