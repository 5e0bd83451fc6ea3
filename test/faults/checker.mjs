// The guarantees, checked from the outside: the API's own record of calls and the final execution log.
// Plain JavaScript, so that both the fault suite (vitest) and the soak script (node) use the same checks.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * - every task ends completed;
 * - a task is called again only if a worker died during an earlier call of it, or the API failed that call
 *   (retryable), always with the same idempotency key: the queue's id, the task's id, generation 1;
 * - no call of a task starts before all its dependencies were answered;
 * - in the log, every counted claim comes when all its task's dependencies are completed, and every task
 *   has exactly one counted final outcome.
 */
export async function checkGuarantees(queue, tasks, calls, kills, finalStates) {
  const problems = [];
  const { id: queueId, events } = queue;
  const callsByTask = new Map();
  for (const call of calls) callsByTask.set(call.task_id, [...(callsByTask.get(call.task_id) ?? []), call]);
  // A killed worker died during its calls in flight (or before recording them): only those may be repeated.
  // One that made one call at a time was in its last; one with several in flight (--concurrency) in those
  // whose claims the log shows with no outcome of theirs.
  const killed = new Set(kills.map((kill) => kill.worker));
  const lastCallOf = new Map();
  for (const call of calls) if (!lastCallOf.has(call.worker) || lastCallOf.get(call.worker).receivedAt <= call.receivedAt) lastCallOf.set(call.worker, call);
  const unrecorded = claimsWithoutOutcome(events);
  const cutByKill = (call) =>
    killed.has(call.worker) && (lastCallOf.get(call.worker) === call || unrecorded.has(`${call.task_id}|${call.worker}|${call.attempt}`));
  let explainedRepeats = 0;
  let retriedRepeats = 0;
  for (const task of tasks) {
    const state = finalStates.get(task.id)?.state;
    if (state !== 'completed') problems.push(`${task.id} ended ${state ?? 'missing'}`);
    const taskCalls = callsByTask.get(task.id) ?? [];
    if (taskCalls.length === 0) problems.push(`${task.id} was never called`);
    taskCalls.forEach((call, i) => {
      if (call.idempotencyKey !== `${queueId}:${task.id}:1`) problems.push(`${task.id} call ${i + 1} had idempotency key ${call.idempotencyKey}`);
      if (i === 0) return;
      const earlier = taskCalls.slice(0, i);
      if (earlier.some((previous) => previous.failedOnPurpose)) retriedRepeats += 1;
      else if (earlier.some(cutByKill)) explainedRepeats += 1;
      else problems.push(`${task.id} was called again (by ${call.worker}) with no earlier caller killed during its call`);
    });
    for (const call of taskCalls) {
      for (const dep of task.deps) {
        const done = (callsByTask.get(dep) ?? []).some((depCall) => depCall.answeredAt !== undefined && depCall.answeredAt <= call.receivedAt);
        if (!done) problems.push(`${task.id} was called before its dependency ${dep} was answered`);
      }
    }
  }
  problems.push(...checkLog(events, tasks));
  return { tasks: tasks.length, calls: calls.length, explainedRepeats, retriedRepeats, problems };
}

/** Every record of the log that parses: a torn record, or the unfinished last line, is skipped, as the tool skips it. */
/** A folder queue as the checks read it: its id, and the events of its log (a torn line skipped). */
export async function readFolderQueue(dir) {
  return { id: (await readFile(join(dir, 'queue', 'queue-id'), 'utf8')).trim(), events: await readLog(dir) };
}

async function readLog(dir) {
  const text = await readFile(join(dir, 'queue', 'execution-log.jsonl'), 'utf8');
  const events = [];
  for (const line of text.split('\n')) {
    try {
      events.push(JSON.parse(line));
    } catch {
      // torn or unfinished
    }
  }
  return events;
}

/** `task|worker|attempt` of every claim in the log that no outcome of the same token followed. */
function claimsWithoutOutcome(events) {
  const claims = new Map();
  for (const event of events) {
    if (event.type === 'claim') claims.set(event.token, `${event.task}|${event.worker}|${event.attempt}`);
    else if (event.type === 'outcome') claims.delete(event.token);
  }
  return new Set(claims.values());
}

/** Replays the log independently of the tool's own fold. */
function checkLog(events, tasks) {
  const problems = [];
  const deps = new Map(tasks.map((task) => [task.id, task.deps]));
  const completed = new Set();
  const claimInForce = new Map();
  const finals = new Map();
  for (const event of events) {
    const task = event.task;
    if (event.type === 'claim') {
      const fresh = event.prev === null && !claimInForce.has(task) && !completed.has(task);
      const takeover = event.prev !== null && claimInForce.get(task) === event.prev;
      if (!fresh && !takeover) continue;
      for (const dep of deps.get(task) ?? []) if (!completed.has(dep)) problems.push(`log: ${task} was claimed before its dependency ${dep} completed`);
      claimInForce.set(task, event.token);
    } else if (event.type === 'outcome' && claimInForce.get(task) === event.token) {
      claimInForce.delete(task);
      if (event.outcome === 'completed' || event.outcome === 'failed') finals.set(task, (finals.get(task) ?? 0) + 1);
      if (event.outcome === 'completed') completed.add(task);
    }
  }
  for (const task of tasks) if (finals.get(task.id) !== 1) problems.push(`log: ${task.id} has ${finals.get(task.id) ?? 0} final outcomes`);
  return problems;
}
