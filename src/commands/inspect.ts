import { describeError, formatSpan, reasonFor, type ReasonContext } from '../core/reasons.js';
import { findTask, type ApplyResult, type TaskRecord } from '../core/queueState.js';
import { visible } from '../core/visible.js';
import { WorkerError } from '../errors.js';
import { idempotencyKey } from '../core/newTasks.js';
import type { Store } from '../store.js';
import { inspectQueue, taskStatus } from './status.js';
import { isTaskEvent, type ChangeRecord, type TaskStatus } from '../types.js';

/** One attempt as the log tells it: a claim that counted, and its outcome if one was recorded. */
export interface AttemptRecord {
  attempt: number;
  worker: string;
  pid: number;
  host: string;
  claimed_at: string;
  outcome: 'completed' | 'failed' | 'retry' | 'released' | 'taken over' | 'in progress';
  duration_ms?: number;
  http_status?: number;
  error?: string;
  retry_at?: string;
}

export interface TaskDetail {
  task: TaskStatus;
  /** The key its next call sends (null while the queue has no id: no task was ever added through this version). */
  idempotency_key: string | null;
  dependencies: Array<{ id: string; state: string; reason: string }>;
  dependents: Array<{ id: string; state: string }>;
  attempts: AttemptRecord[];
  history: string[];
  result?: unknown;
}

/** `worker show`: everything about one task. */
export async function showTask(store: Store, now: number, id: string): Promise<TaskDetail> {
  const context = await inspectQueue(store, now);
  const task = findTask(context.state, id);
  const status = taskStatus(task, context);
  const queueId = await store.queueId();
  const attempts: AttemptRecord[] = [];
  const history: string[] = [];
  await store.history((event, result) => {
    if (!isTaskEvent(event) || event.task !== id) return;
    history.push(describeEvent(event, result));
    if (result !== 'accepted') return;
    if (event.type === 'claim') {
      const previous = attempts.at(-1);
      if (previous?.outcome === 'in progress') previous.outcome = 'taken over';
      attempts.push({ attempt: event.attempt, worker: event.worker, pid: event.pid, host: event.host, claimed_at: event.at, outcome: 'in progress' });
    } else if (event.type === 'outcome') {
      const attempt = attempts.at(-1);
      if (!attempt) return;
      attempt.outcome = event.outcome;
      attempt.duration_ms = event.duration_ms;
      if (event.http_status !== undefined) attempt.http_status = event.http_status;
      if (event.error) attempt.error = describeError(event.error);
      if (event.retry_at) attempt.retry_at = event.retry_at;
    }
  });
  const state = context.state;
  const detail: TaskDetail = {
    task: status,
    idempotency_key: queueId === null ? null : idempotencyKey(queueId, id, task.generation),
    dependencies: task.def.deps.map((depId) => {
      const dep = findTask(state, depId);
      return { id: depId, state: state.stateOf(dep, context.blocked), reason: reasonFor(dep, context) };
    }),
    dependents: (task.dependents ?? []).map((dependent) => ({ id: dependent.def.id, state: state.stateOf(dependent, context.blocked) })),
    attempts,
    history,
  };
  const result = task.resultRef !== null ? (await store.readResult(task.resultRef)).value : task.result;
  if (result !== undefined) detail.result = result;
  return detail;
}

/**
 * `worker result`: a completed task's result, as the API sent it (`raw`: a result kept apart byte for
 * byte; one kept in the log as its text, or its JSON), and parsed.
 */
export async function taskResult(store: Store, now: number, id: string): Promise<{ raw: string; parsed: unknown }> {
  const context = await inspectQueue(store, now);
  const task = findTask(context.state, id);
  if (task.state !== 'completed') {
    const state = context.state.stateOf(task, context.blocked);
    throw new WorkerError('REJECTED', `task "${id}" is ${state}: only a completed task has a result`, { hint: `see worker show ${id}` });
  }
  if (task.resultRef !== null) {
    const { text, value } = await store.readResult(task.resultRef);
    return { raw: text, parsed: value };
  }
  const parsed = task.result;
  return { raw: typeof parsed === 'string' ? parsed : parsed === undefined ? '' : JSON.stringify(parsed), parsed: parsed ?? null };
}

/** One event as a readable line: what happened to which task, and whether the fold counted it. */
export function describeEvent(event: ChangeRecord, result: ApplyResult): string {
  const ignored =
    result === 'accepted'
      ? ''
      : result === 'held-back'
        ? ' (not counted: the queue was paused, by hand or by the API, or the rate limit was reached)'
        : ' (ignored: it came after another claim or outcome)';
  switch (event.type) {
    case 'claim':
      return `${event.at}  ${event.task}  ${event.prev ? 'taken over' : 'claimed'} by ${event.worker} (attempt ${event.attempt}, pid ${event.pid} on ${event.host})${event.reason ? `: ${event.reason}` : ''}${ignored}`;
    case 'outcome': {
      const status = event.http_status === undefined || event.error ? '' : `, http ${event.http_status}`;
      const error = event.error ? `: ${describeError(event.error)}` : '';
      const retry = event.retry_at ? `; retry at ${event.retry_at}` : '';
      const pause = event.pause_until ? `; the API paused the queue until ${event.pause_until}` : '';
      const notAttempt = event.called && event.charged === false ? ' (not counted as an attempt)' : '';
      const what = event.outcome === 'released' ? `given back${event.called ? '' : ' before the call'}` : event.outcome;
      return `${event.ended_at}  ${event.task}  attempt ${event.attempt} ${what}${notAttempt} by ${event.worker} in ${event.duration_ms} ms${status}${error}${retry}${pause}${ignored}`;
    }
    case 'retry':
      return `${event.at}  ${event.task}  retried by ${event.by ?? 'hand'}: pending again with fresh attempts and a new idempotency key${ignored}`;
    case 'cancel':
      return `${event.at}  ${event.task}  cancelled by hand${ignored}`;
    case 'edit':
      return `${event.at}  ${event.task}  instruction edited by ${event.by ?? 'hand'}`;
    case 'rerun':
      return `${event.at}  ${event.task}  rerun by ${event.by ?? 'hand'}: pending again with fresh attempts and a new idempotency key${ignored}`;
    case 'paused':
      return `${event.at}  (queue)  paused by ${event.by}: no claim counts until \`worker resume\`${result === 'accepted' ? '' : ' (it was paused already)'}`;
    case 'removed': {
      const more = event.count > event.tasks.length ? ` and ${(event.count - event.tasks.length).toLocaleString('en')} more` : '';
      return `${event.at}  (queue)  ${event.command === 'clean' ? 'cleaned' : 'removed'} by ${event.by}: ${event.tasks.join(', ')}${more}`;
    }
    case 'resumed':
      return `${event.at}  (queue)  resumed by ${event.by}${result === 'accepted' ? '' : ' (it was not paused)'}`;
  }
}

export function renderDetail(detail: TaskDetail, now: number): string {
  const { task } = detail;
  const lines = [
    `task       ${task.id}`,
    `state      ${task.state}${task.worker ? ` (${task.worker})` : ''}`,
    `reason     ${task.reason}`,
    `attempts   ${task.attempts}`,
    `key        ${detail.idempotency_key ?? '(none yet: the queue gets its id when a task is added)'}`,
    `budget     min ${task.min_budget}, max ${task.max_budget}, intensity ${task.intensity}`,
    `added      ${task.added_at} (${formatSpan(now - Date.parse(task.added_at))} ago)`,
    `instruction`,
    ...task.instruction.split('\n').map((line) => `  ${line}`),
    `dependencies (${detail.dependencies.length})`,
    ...detail.dependencies.map((dep) => `  ${dep.id}  ${dep.reason}`),
    `dependents (${detail.dependents.length})`,
    ...detail.dependents.map((dependent) => `  ${dependent.id}  ${dependent.state}`),
    `history`,
    ...(detail.history.length === 0 ? ['  (no events yet)'] : detail.history.map((line) => `  ${line}`)),
  ];
  if (detail.result !== undefined) {
    lines.push(
      'result',
      ...JSON.stringify(detail.result, null, 2)
        .split('\n')
        .map((line) => `  ${line}`),
    );
  }
  // Every line may carry text from outside: the instruction, the API's errors and result.
  return `${lines.map(visible).join('\n')}\n`;
}

/** `worker logs`: the execution log as readable lines, optionally of one task. */
export async function logLines(store: Store, id: string | undefined): Promise<string[]> {
  const lines: string[] = [];
  await store.history((event, result) => {
    if (id === undefined || (isTaskEvent(event) && event.task === id)) lines.push(visible(describeEvent(event, result)));
  }, id);
  return lines;
}

export type GraphFormat = 'mermaid' | 'dot';

const FILL: Record<string, string> = { pending: '#f5f5f5', running: '#d1ecf1', completed: '#d4edda', failed: '#f8d7da', blocked: '#fff3cd' };

/** `worker graph`: the dependency graph with each task's state, as Mermaid or Graphviz dot. */
export function renderGraph(context: ReasonContext, format: GraphFormat): string {
  const { state, blocked } = context;
  const tasks = state.tasks();
  if (format === 'dot') {
    const lines = ['digraph queue {', '  rankdir=LR;', '  node [shape=box, style="rounded,filled"];'];
    for (const task of tasks) {
      const taskState = state.stateOf(task, blocked);
      lines.push(`  "${task.def.id}" [label="${task.def.id}\\n${taskState}", fillcolor="${FILL[taskState]}"];`);
      for (const dep of task.def.deps) lines.push(`  "${dep}" -> "${task.def.id}";`);
    }
    lines.push('}');
    return `${lines.join('\n')}\n`;
  }
  // Mermaid node ids cannot hold every character of a task id: n<index>, with the id as the label.
  const node = (task: TaskRecord) => `n${task.index}`;
  const lines = ['flowchart LR'];
  for (const task of tasks) lines.push(`  ${node(task)}["${task.def.id} · ${state.stateOf(task, blocked)}"]:::${state.stateOf(task, blocked)}`);
  for (const task of tasks) {
    for (const depId of task.def.deps) lines.push(`  ${node(state.get(depId)!)} --> ${node(task)}`);
  }
  for (const [name, fill] of Object.entries(FILL)) lines.push(`  classDef ${name} fill:${fill}`);
  return `${lines.join('\n')}\n`;
}

/** `worker logs --follow`: prints events as they are recorded, until `signal` aborts. */
export async function followLog(store: Store, id: string | undefined, write: (line: string) => void, signal: AbortSignal): Promise<void> {
  await store.followHistory((event, result) => write(`${visible(describeEvent(event, result))}\n`), id, signal);
}
