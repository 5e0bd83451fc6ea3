import { TASK_STATES, type AttemptError, type TaskState } from '../types.js';
import { QueueStore } from '../queue/store.js';
import type { QueueState } from '../core/queueState.js';

/** One task as `status --json` shows it. Field names match the bulk file of `add --file`. */
export interface TaskStatus {
  id: string;
  instruction: string;
  deps: string[];
  state: TaskState;
  attempts: number;
  min_budget: number;
  max_budget: number;
  intensity: string;
  added_at: string;
  updated_at: string;
  worker?: string;
  last_error?: AttemptError;
  retry_at?: string;
  blocked_by?: string;
  result?: unknown;
}

export interface StatusReport {
  tasks: TaskStatus[];
  counts: Record<TaskState, number>;
  /** Problems a person should know of that do not stop the queue. */
  warnings: string[];
}

export async function readStatus(dir: string, filter: TaskState | undefined): Promise<StatusReport> {
  const store = await QueueStore.open(dir);
  try {
    const report = statusOf(store.state, filter);
    const health = store.logHealth();
    if (health.tornRecords > 0) {
      report.warnings.push(`${health.tornRecords} torn record(s) in the execution log were skipped: a worker died while writing; its task was run again`);
    }
    return report;
  } finally {
    store.close();
  }
}

export function statusOf(state: QueueState, filter: TaskState | undefined): StatusReport {
  const blocked = state.blockedTasks();
  const counts = Object.fromEntries(TASK_STATES.map((name) => [name, 0])) as Record<TaskState, number>;
  const tasks: TaskStatus[] = [];
  for (const task of state.tasks()) {
    const taskState = state.stateOf(task, blocked);
    counts[taskState] += 1;
    if (filter !== undefined && taskState !== filter) continue;
    const status: TaskStatus = {
      id: task.def.id,
      instruction: task.def.instruction,
      deps: task.def.deps,
      state: taskState,
      attempts: task.attempts,
      min_budget: task.def.min_budget,
      max_budget: task.def.max_budget,
      intensity: task.def.intensity,
      added_at: task.def.added_at,
      updated_at: task.updatedAt,
    };
    if (task.claim) status.worker = task.claim.worker;
    if (task.lastError) status.last_error = task.lastError;
    if (task.retryAt !== null && task.state === 'pending') status.retry_at = new Date(task.retryAt).toISOString();
    const root = blocked.get(task.def.id);
    if (root) status.blocked_by = root.def.id;
    if (task.result !== undefined) status.result = task.result;
    tasks.push(status);
  }
  return { tasks, counts, warnings: [] };
}
