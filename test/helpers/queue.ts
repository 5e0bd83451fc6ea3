import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ServerResponse } from 'node:http';
import { expect } from 'vitest';
import { answerOk, type Api, type ApiCall } from './apiServer.js';
import pg from 'pg';
import { databaseUrl, onDatabase, queueFor, runCli } from './cli.js';

/** Adds tasks through `worker add --file`, as a user would. */
export async function addAll(dir: string, tasks: Array<{ id: string; deps?: string[]; instruction?: string }>): Promise<void> {
  const file = join(dir, 'tasks.jsonl');
  await writeFile(
    file,
    tasks.map((task) => JSON.stringify({ id: task.id, instruction: task.instruction ?? `do ${task.id}`, deps: task.deps ?? [] })).join('\n'),
  );
  const result = await runCli(['--dir', dir, 'add', '--file', file]);
  expect(result.code, result.stderr).toBe(0);
}

/** `worker status --json`, by task id. */
export async function statusById(dir: string): Promise<Map<string, Record<string, any>>> {
  const result = await runCli(['--dir', dir, 'status', '--json']);
  expect(result.code, result.stderr).toBe(0);
  return new Map((JSON.parse(result.stdout) as Array<Record<string, any>>).map((task) => [task.id as string, task]));
}

/** Runs one query on the test database (the `postgres` project). */
export async function queryDatabase<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<R[]> {
  const client = new pg.Client({ connectionString: databaseUrl() });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** The queue's identity (queue/queue-id, or its row in the database): the first part of every idempotency key. */
export async function queueIdOf(dir: string): Promise<string> {
  if (onDatabase) return (await queryDatabase<{ queue_id: string }>('SELECT queue_id FROM worker_queues WHERE name = $1', [queueFor(dir)]))[0]!.queue_id;
  return (await readFile(join(dir, 'queue', 'queue-id'), 'utf8')).trim();
}

/** Every event recorded, in order: the execution log's lines, or the history table's rows. */
export async function logEvents(dir: string): Promise<Array<Record<string, any>>> {
  if (onDatabase) {
    const rows = await queryDatabase<{ body: Record<string, any> }>('SELECT body FROM worker_events WHERE queue = $1 ORDER BY seq', [queueFor(dir)]);
    return rows.map((row) => row.body);
  }
  const text = await readFile(join(dir, 'queue', 'execution-log.jsonl'), 'utf8');
  return text
    .trim()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, any>);
}

/** Lock slots (locks/slots/) still on disk: a worker removes its own when it exits, and dead workers' ones go at the next sweep. */
export async function lockSlots(dir: string): Promise<string[]> {
  return readdir(join(dir, 'locks', 'slots')).catch(() => []);
}

/** What each slot left says (its process), for the message of a failed check: which process left it, and whether it finished writing it. */
export async function describeSlots(dir: string): Promise<string> {
  const names = await lockSlots(dir);
  const described = await Promise.all(
    names.map(async (name) => `${name}: ${JSON.stringify(await readFile(join(dir, 'locks', 'slots', name), 'utf8').catch(String))}`),
  );
  return `slots left: ${described.join('; ')}`;
}

/**
 * Task locks left below locks/ (shard folders, heartbeats and slots may stay, and so may the worker-id lock
 * of a SIGKILLed worker until the next worker starts: see workerIdLock.ts).
 */
export async function lockFiles(dir: string): Promise<string[]> {
  const entries = await readdir(join(dir, 'locks'), { recursive: true });
  return entries.filter((name) => /\.lock$/.test(name) && !name.startsWith('workers/'));
}

/** Holds every call for `taskId` until the test answers it; other tasks are answered at once. */
export function holdCallsFor(api: Api, taskId: string) {
  const held: Array<{ call: ApiCall; res: ServerResponse }> = [];
  let notify: (() => void) | undefined;
  api.setBehaviour((call, res) => {
    if (call.task_id !== taskId) return answerOk(call, res);
    held.push({ call, res });
    notify?.();
  });
  return {
    held,
    arrived: (count = 1) =>
      new Promise<void>((resolve) => {
        const check = () => held.length >= count && resolve();
        notify = check;
        check();
      }),
  };
}

/**
 * What a refused change must leave as it was: queue.json's bytes, or the queue's rows in the database
 * (definitions, states, history).
 */
export async function queueSnapshot(dir: string): Promise<unknown> {
  if (!onDatabase) return readFile(join(dir, 'queue', 'queue.json'));
  const queue = queueFor(dir);
  return {
    tasks: await queryDatabase('SELECT * FROM worker_tasks WHERE queue = $1 ORDER BY seq', [queue]),
    events: await queryDatabase('SELECT seq, body FROM worker_events WHERE queue = $1 ORDER BY seq', [queue]),
  };
}

/** Final outcomes (completed or failed) that counted, per task, replayed from the events in order by token. */
export function finalOutcomes(events: Array<Record<string, any>>): Map<string, number> {
  const inForce = new Map<string, string>();
  const finals = new Map<string, number>();
  for (const event of events) {
    if (event.type === 'claim' && (event.prev === null ? !inForce.has(event.task) : inForce.get(event.task) === event.prev))
      inForce.set(event.task, event.token);
    if (event.type === 'outcome' && inForce.get(event.task) === event.token) {
      inForce.delete(event.task);
      if (event.outcome === 'completed' || event.outcome === 'failed') finals.set(event.task, (finals.get(event.task) ?? 0) + 1);
    }
  }
  return finals;
}

/**
 * What still holds a task after the workers are gone: lock files below locks/ on a folder, claims in
 * force (running tasks) in a database. A worker that exits leaves none; a dead one's are taken over.
 */
export async function heldClaims(dir: string): Promise<string[]> {
  if (!onDatabase) return lockFiles(dir);
  const rows = await queryDatabase<{ id: string }>("SELECT id FROM worker_tasks WHERE queue = $1 AND state = 'running' ORDER BY seq", [queueFor(dir)]);
  return rows.map((row) => row.id);
}
