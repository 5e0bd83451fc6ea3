import { WorkerError } from '../errors.js';
import { describeHandPause, formatSpan, plural } from '../core/reasons.js';
import { findTask, type TaskRecord } from '../core/queueState.js';
import type { Store } from '../store.js';
import { MAX_INSTRUCTION_LENGTH, REMOVAL_IDS_RECORDED, type CancelEvent, type CompactionReport, type RemovalRecord, type RetryEvent } from '../types.js';

/*
 * The commands people reach for when something went wrong: retry, cancel, unlock, clean. Each is a change
 * by hand (Store.change): two never interleave, and each checks the state fresh inside it.
 */

function refuse(message: string, hint: string): never {
  throw new WorkerError('REJECTED', message, { hint: `nothing was changed; ${hint}` });
}

/** `worker retry`: failed tasks go back to pending with fresh attempts, which unblocks their dependents. */
export async function retryTasks(store: Store, ids: readonly string[], allFailed: boolean, options: { by: string; now: () => Date }): Promise<string[]> {
  if (allFailed === ids.length > 0) {
    throw new WorkerError('USAGE', allFailed ? 'give either task ids or --failed, not both' : 'name the task to retry, or give --failed', {
      hint: 'worker retry fetch-7   or   worker retry --failed',
    });
  }
  return store.change(async (queue) => {
    const state = queue.state;
    const targets = allFailed ? state.tasks().filter((task) => task.state === 'failed') : ids.map((id) => findTask(state, id));
    for (const task of targets) {
      if (task.state !== 'failed')
        refuse(`task "${task.def.id}" is ${state.stateOf(task, state.blockedTasks())}; only failed tasks can be retried`, 'see `worker status --state failed`');
    }
    const at = options.now().toISOString();
    const events: RetryEvent[] = targets.map((task) => ({ type: 'retry', task: task.def.id, at, by: options.by }));
    if (events.length > 0) await queue.append(events);
    return targets.map((task) => task.def.id);
  });
}

/**
 * `worker rerun`: completed tasks run again, with fresh attempts and a new idempotency key generation (the
 * API does their work anew); with `withDependents`, the completed tasks built on them too. Their dependents
 * wait for them again.
 */
export async function rerunTasks(
  store: Store,
  ids: readonly string[],
  options: { completed: boolean; withDependents: boolean; by: string; now: () => Date },
): Promise<string[]> {
  if (options.completed === ids.length > 0) {
    throw new WorkerError('USAGE', options.completed ? 'give either task ids or --completed, not both' : 'name the tasks to run again, or give --completed', {
      hint: 'worker rerun outline --with-dependents   or   worker rerun --completed',
    });
  }
  return store.change(async (queue) => {
    const state = queue.state;
    const blocked = state.blockedTasks();
    const named = options.completed ? state.tasks().filter((task) => task.state === 'completed') : ids.map((id) => findTask(state, id));
    for (const task of named) {
      if (task.state !== 'completed') {
        const hint = task.state === 'failed' ? `\`worker retry ${task.def.id}\` runs a failed task again` : `see \`worker show ${task.def.id}\``;
        refuse(`task "${task.def.id}" is ${state.stateOf(task, blocked)}; only completed tasks can be rerun`, hint);
      }
    }
    const chosen = new Set(named.map((task) => task.def.id));
    if (options.withDependents) {
      for (const task of state.tasks()) {
        // Add order is topological: every dependency of a task is judged before it.
        if (chosen.has(task.def.id) || !task.def.deps.some((dep) => chosen.has(dep))) continue;
        if (task.state === 'running') {
          refuse(
            `task "${task.def.id}", built on what is rerun, is running on ${task.claim?.worker ?? 'a worker'}`,
            'wait for its outcome, or rerun without --with-dependents',
          );
        }
        if (task.state === 'completed') chosen.add(task.def.id);
      }
    }
    const at = options.now().toISOString();
    const rerun = state.tasks().filter((task) => chosen.has(task.def.id));
    if (rerun.length > 0) await queue.append(rerun.map((task) => ({ type: 'rerun', task: task.def.id, at, by: options.by })));
    return rerun.map((task) => task.def.id);
  });
}

/**
 * `worker cancel`: a pending (or blocked) task will not run: it fails with kind `cancelled`, and its
 * dependents are blocked. A running task's worker stops its call at its next look and records the same;
 * the command waits for that, up to `waitMs`, and says what became of it.
 */
export async function cancelTask(
  store: Store,
  id: string,
  options: { by: string; now: () => Date; waitMs: number; sleep: (ms: number) => Promise<void> },
): Promise<{ blocked: string[]; stopped: 'cancelled' | 'requested' | 'finished first' | undefined }> {
  const wasRunning = await store.change(async (queue) => {
    const task = findTask(queue.state, id);
    if (task.state === 'running' && task.cancelRequested !== undefined) refuse(`task "${id}" is being cancelled already`, `see \`worker show ${id}\``);
    if (task.state !== 'pending' && task.state !== 'running') {
      refuse(`task "${id}" is ${task.state}; only pending, blocked or running tasks can be cancelled`, `see \`worker show ${id}\``);
    }
    const event: CancelEvent = { type: 'cancel', task: id, at: options.now().toISOString(), by: options.by };
    await queue.append([event]);
    const after = queue.state.get(id);
    if (task.state === 'running') return after?.cancelRequested !== undefined;
    // A worker may have claimed it between our read and our append: the log decides.
    if (after?.lastError?.kind !== 'cancelled') {
      throw new WorkerError('REJECTED', `task "${id}" was claimed by a worker just before it could be cancelled`, {
        hint: `run \`worker cancel ${id}\` again to stop its call`,
      });
    }
    return false;
  });
  let stopped: 'cancelled' | 'requested' | 'finished first' | undefined;
  if (wasRunning) {
    // Its worker stops the call at its next look (each --poll-interval while busy).
    stopped = 'requested';
    for (let waited = 0; waited < options.waitMs; waited += 100) {
      await options.sleep(100);
      const task = (await store.read()).get(id);
      if (task === undefined || task.state === 'running') continue;
      stopped = task.lastError?.kind === 'cancelled' ? 'cancelled' : 'finished first';
      break;
    }
  }
  const state = await store.read();
  const blocked = state.blockedTasks();
  return { blocked: [...blocked.entries()].filter(([, root]) => root.def.id === id).map(([blockedId]) => blockedId), stopped };
}

/** `worker unlock`: removes a task's lock whose holder is gone or stale. A live holder's lock is refused. */
export async function unlockTask(store: Store, id: string, now: () => number): Promise<string> {
  return store.change(async (queue) => {
    const task = findTask(queue.state, id);
    const lock = await queue.lockOf(id, now());
    if (lock === null) refuse(`task "${id}" has no lock`, 'there is nothing to unlock');
    const { holder } = lock;
    const who = holder ? `${holder.worker} (pid ${holder.pid} on ${holder.host})` : 'an unknown worker';
    if (!lock.holderGone && !lock.stale) {
      refuse(
        `the lock of "${id}" is held by ${who}, which is alive (refreshed ${formatSpan(lock.ageMs)} ago)`,
        'stop that worker first, or wait: a lock that is not refreshed goes stale by itself',
      );
    }
    await queue.removeLock(id);
    const why = lock.holderGone ? 'whose process is gone' : `whose lock was not refreshed for ${formatSpan(lock.ageMs)}`;
    const next = task.state === 'running' ? '; the task is still running under that claim, and the next worker takes it over' : '';
    return `removed the lock of ${id}, held by ${who}, ${why}${next}`;
  });
}

export interface CleanResult {
  removed: string[];
  /** Completed tasks kept because a task that is not removed depends on them. */
  kept: string[];
  /** The compaction that followed, when tasks were removed. */
  compaction: CompactionReport | undefined;
}

/** `worker compact`: the execution log without what it no longer needs, while workers run. */
export async function compactQueue(store: Store, now: () => Date): Promise<CompactionReport> {
  return store.compact(now);
}

/** A compaction in one line, for people. */
export function describeCompaction(report: CompactionReport): string {
  const results =
    report.resultFilesRemoved > 0
      ? `; removed ${plural(report.resultFilesRemoved, 'results file')} (${formatBytes(report.resultBytesRemoved)}) no remaining task refers to`
      : '';
  const kept = `${report.eventsKept.toLocaleString('en')} of ${report.eventsBefore.toLocaleString('en')} events kept${results}`;
  if (report.generation === null) return `the history: ${formatBytes(report.bytesBefore)} → ${formatBytes(report.bytesAfter)}, ${kept}`;
  return `compacted the execution log to generation ${report.generation}: ${formatBytes(report.bytesBefore)} → ${formatBytes(report.bytesAfter)}, ${kept}`;
}

function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GB`;
}

/**
 * `worker clean`: removes completed tasks from queue.json (their events stay in the log). A task that a
 * remaining task depends on is kept: with --completed silently counted, when named it is refused.
 */
export async function cleanTasks(
  store: Store,
  ids: readonly string[],
  options: { completed: boolean; olderThanMs: number | undefined; now: () => number; by: string },
): Promise<CleanResult> {
  if (options.completed === ids.length > 0) {
    throw new WorkerError('USAGE', options.completed ? 'give either task ids or --completed, not both' : 'name the tasks to remove, or give --completed', {
      hint: 'worker clean --completed --older-than 7d   or   worker clean fetch-1 fetch-2',
    });
  }
  return store.change(async (queue) => {
    const state = queue.state;
    const cutoff = options.olderThanMs === undefined ? Infinity : options.now() - options.olderThanMs;
    const named = new Set(ids);
    for (const id of ids) {
      const task = findTask(state, id);
      if (task.state !== 'completed')
        refuse(`task "${id}" is ${state.stateOf(task, state.blockedTasks())}; only completed tasks can be removed`, 'see `worker status --state completed`');
    }
    const wanted = (task: TaskRecord) => task.state === 'completed' && (options.completed ? Date.parse(task.updatedAt) <= cutoff : named.has(task.def.id));
    // Dependents come after their dependencies: from the end, a task goes only if all its dependents go.
    const removed = new Set<string>();
    const kept: string[] = [];
    const tasks = state.tasks();
    for (let i = tasks.length - 1; i >= 0; i -= 1) {
      const task = tasks[i]!;
      if (!wanted(task)) continue;
      const stays = (task.dependents ?? []).find((dependent) => !removed.has(dependent.def.id));
      if (stays === undefined) removed.add(task.def.id);
      else if (named.has(task.def.id))
        refuse(
          `task "${task.def.id}" is needed by "${stays.def.id}", which would be left depending on a task that no longer exists`,
          `remove "${stays.def.id}" too, or leave "${task.def.id}"`,
        );
      else kept.push(task.def.id);
    }
    let compaction: CompactionReport | undefined;
    if (removed.size > 0) {
      const ids = tasks.filter((task) => removed.has(task.def.id)).map((task) => task.def.id);
      compaction = await queue.removeTasks(removed, () => new Date(options.now()));
      // After the rewrite, so that the history never names as removed a task that is still there.
      await queue.append([removalRecord('clean', ids, options.by, new Date(options.now()))]);
    }
    return { removed: tasks.filter((task) => removed.has(task.def.id)).map((task) => task.def.id), kept: kept.reverse(), compaction };
  });
}

/**
 * `worker pause`: no claim counts from now on, whichever worker makes it, until `worker resume`; calls in
 * flight finish and are recorded. `by` names who paused it, for `status`.
 */
export async function pauseQueue(store: Store, by: string, now: () => Date): Promise<string> {
  return store.change(async (queue) => {
    const paused = queue.state.pausedByHand;
    if (paused !== null) refuse(`the queue is already ${describeHandPause(paused)}`, 'see `worker status`');
    await queue.append([{ type: 'paused', at: now().toISOString(), by }]);
    const running = queue.state.running;
    return `paused: workers claim nothing until \`worker resume\`${running > 0 ? `; ${plural(running, 'task')} in flight will finish` : ''}`;
  });
}

/** `worker resume`: workers claim again. */
export async function resumeQueue(store: Store, by: string, now: () => Date): Promise<string> {
  return store.change(async (queue) => {
    const paused = queue.state.pausedByHand;
    if (paused === null) refuse('the queue is not paused', 'see `worker status`');
    await queue.append([{ type: 'resumed', at: now().toISOString(), by }]);
    return `resumed: the queue was ${describeHandPause(paused)}`.replace(/ \(`worker resume` to go on\)$/, '');
  });
}

export interface RemoveResult {
  removed: string[];
  compaction: CompactionReport;
}

/**
 * `worker remove`: pending, blocked, failed or cancelled tasks leave the queue for good (their ids are
 * never used again), with what they left in the log. A task another one depends on is refused, unless
 * `withDependents` removes those too; a running task is refused, and a completed one is `clean`'s.
 */
export async function removeTasks(
  store: Store,
  ids: readonly string[],
  options: { withDependents: boolean; now: () => Date; by: string },
): Promise<RemoveResult> {
  if (ids.length === 0)
    throw new WorkerError('USAGE', 'name the tasks to remove', { hint: 'worker remove fetch-7   or   worker remove fetch-7 --with-dependents' });
  return store.change(async (queue) => {
    const state = queue.state;
    const blocked = state.blockedTasks();
    const refuseUnlessRemovable = (task: TaskRecord, why: string) => {
      if (task.state === 'running') {
        refuse(
          `task "${task.def.id}"${why} is running on ${task.claim?.worker ?? 'a worker'}`,
          `wait for its outcome, or \`worker cancel ${task.def.id}\` first`,
        );
      }
      if (task.state === 'completed' && why === '')
        refuse(`task "${task.def.id}" is completed`, `completed tasks are removed by \`worker clean ${task.def.id}\``);
    };
    const chosen = new Set<string>();
    for (const id of ids) {
      const task = findTask(state, id);
      refuseUnlessRemovable(task, '');
      chosen.add(task.def.id);
    }
    // Add order is topological: every dependency of a task is judged before it.
    for (const task of state.tasks()) {
      if (chosen.has(task.def.id)) continue;
      const dep = task.def.deps.find((id) => chosen.has(id));
      if (dep === undefined) continue;
      if (!options.withDependents) {
        refuse(`task "${task.def.id}" (${state.stateOf(task, blocked)}) depends on "${dep}"`, `remove it too (--with-dependents), or leave "${dep}"`);
      }
      refuseUnlessRemovable(task, `, which depends on "${dep}",`);
      chosen.add(task.def.id);
    }
    const removed = state
      .tasks()
      .filter((task) => chosen.has(task.def.id))
      .map((task) => task.def.id);
    const compaction = await queue.removeTasks(chosen, options.now);
    // After the rewrite, so that the history never names as removed a task that is still there.
    await queue.append([removalRecord('remove', removed, options.by, options.now())]);
    return { removed, compaction };
  });
}

/**
 * `worker edit`: a task's instruction, changed for its next attempt. A running task is refused (its call
 * was sent with what it had), and so is a completed one (it will not run again unless rerun).
 */
export async function editTask(store: Store, id: string, instruction: string, options: { by: string; now: () => Date }): Promise<string> {
  if (instruction.length === 0)
    throw new WorkerError('REJECTED', `the new instruction of task "${id}" is empty`, { hint: 'nothing was changed; give the instruction to send to the API' });
  if (instruction.length > MAX_INSTRUCTION_LENGTH) {
    throw new WorkerError('REJECTED', `the new instruction of task "${id}" has ${instruction.length} characters`, {
      hint: `nothing was changed; the limit is ${MAX_INSTRUCTION_LENGTH}`,
    });
  }
  return store.change(async (queue) => {
    const task = findTask(queue.state, id);
    if (task.state === 'running') {
      refuse(
        `task "${id}" is running on ${task.claim?.worker ?? 'a worker'}: its call was sent with its instruction as it was`,
        `wait for its outcome, or \`worker cancel ${id}\` first`,
      );
    }
    if (task.state === 'completed') refuse(`task "${id}" is completed`, `edit a task that is still to run; \`worker rerun ${id}\` runs it again`);
    if (task.def.instruction === instruction) return `task ${id} already has that instruction: nothing changed`;
    await queue.editInstruction(id, instruction);
    await queue.append([{ type: 'edit', task: id, at: options.now().toISOString(), by: options.by }]);
    // Claims take no queue-wide lock: one may have come between the look and the rewrite.
    const claimed = queue.state.get(id);
    if (claimed?.state === 'running')
      return `edited ${id}; ${claimed.claim?.worker ?? 'a worker'} claimed it just before, and that attempt may send the earlier instruction`;
    return `edited ${id}: its next attempt sends the new instruction`;
  });
}

/** The history's record of a removal: who, when, which tasks (the first REMOVAL_IDS_RECORDED, and how many). */
function removalRecord(command: RemovalRecord['command'], ids: readonly string[], by: string, at: Date): RemovalRecord {
  return { type: 'removed', at: at.toISOString(), by, command, tasks: ids.slice(0, REMOVAL_IDS_RECORDED), count: ids.length };
}
