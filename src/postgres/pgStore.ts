import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { WorkerError } from '../errors.js';
import { defineNewTasks, type NewTask, type TaskDefaults } from '../core/newTasks.js';
import { noSuchTask, type ApplyResult, type QueueState } from '../core/queueState.js';
import type { ClaimLiveness } from '../core/reasons.js';
import { repeatUntil } from '../core/sleep.js';
import type { LockView, QueueChange, QueueCopy, Store } from '../store.js';
import {
  isTaskEvent,
  type ChangeRecord,
  type CompactionReport,
  type FoldRecord,
  type Heartbeat,
  type ResultRef,
  type TaskDefinition,
  type WorkerLiveness,
  type WorkerStatus,
} from '../types.js';
import { databaseError, type DatabaseLocation, openPool, serverOf } from './connection.js';
import { QueueView, type Queryable } from './queueView.js';
import { ensureSchema } from './schema.js';

/** Adds of this many tasks or more refresh the planner's statistics of the tasks table. */
const ANALYZE_AFTER_ADDING = 500;
/** How often `followHistory` looks for new events. */
const FOLLOW_POLL_MS = 250;
/** A heartbeat older than this means its worker is frozen, or its host cut off. */
const SILENT_AFTER_MS = 5000;

export interface PgStoreOptions {
  /** Make the queue if the database holds none of this name (`add`); every other command refuses. */
  create: boolean;
  /** How long a claim may go unrenewed before it counts as stuck (--lock-stale). */
  lockStaleMs: number;
}

/** What the commands see of a running task's claim: its worker, when it was last renewed, and whether its session lives. */
export interface ClaimRow {
  id: string;
  token: string;
  /** `worker unlock` gave the claim up. */
  given_up: boolean;
  /** The claim names a session from before the server last started: it ended with that restart, not with its worker. */
  session_before_restart: boolean;
  worker: string | null;
  pid: number | null;
  host: string | null;
  age_ms: number | null;
  session_alive: boolean;
}

/** A key for the transaction-level advisory lock that serialises changes of one queue's definitions and hand changes. */
export function queueLockKey(queue: string): string {
  return `worker queue ${queue}`;
}

/**
 * The PostgreSQL store as the commands use it: one queue of a database (--queue), its tables shared with
 * every other queue there. Adds and changes by hand are transactions serialised per queue by an advisory
 * lock; claims and outcomes (see PgWorkerStore) never take it.
 */
export class PgStore implements Store {
  private constructor(
    private readonly pool: pg.Pool,
    private readonly location: DatabaseLocation,
    private readonly options: PgStoreOptions,
  ) {}

  static async open(location: DatabaseLocation, options: PgStoreOptions): Promise<PgStore> {
    const pool = openPool(location, { max: 2, applicationName: 'worker' });
    const store = new PgStore(pool, location, options);
    try {
      await store.withClient(async (client) => {
        await ensureSchema(client, serverOf(location.url));
        if (!options.create && (await queueRow(client, location.queue)) === null) {
          throw new WorkerError('NOT_FOUND', `no queue "${location.queue}" in the database at ${serverOf(location.url)}`, {
            hint: `add a task first (worker --queue ${location.queue} add …), or name another with --queue (env WORKER_QUEUE)`,
          });
        }
      });
      return store;
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw databaseError(error, location);
    }
  }

  describe(): string {
    return `queue "${this.location.queue}" at ${serverOf(this.location.url)}`;
  }

  private async withClient<T>(use: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (error) {
      throw databaseError(error, this.location);
    }
    try {
      return await use(client);
    } catch (error) {
      throw databaseError(error, this.location);
    } finally {
      client.release();
    }
  }

  /** A transaction holding the queue's advisory lock: adds and changes by hand never interleave. */
  private inQueueTransaction<T>(use: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.withClient(async (client) => {
      await client.query('BEGIN');
      try {
        await client.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [queueLockKey(this.location.queue)]);
        const result = await use(client);
        await client.query('COMMIT');
        return result;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      }
    });
  }

  async addTasks(tasks: readonly NewTask[], defaults: TaskDefaults, now: Date, where: (index: number) => string): Promise<TaskDefinition[]> {
    const { queue } = this.location;
    const added = await this.inQueueTransaction(async (client) => {
      await client.query('INSERT INTO worker_queues (name, queue_id) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING', [queue, randomUUID()]);
      const ids = await client.query<{ id: string }>('SELECT id FROM worker_tasks WHERE queue = $1 ORDER BY seq', [queue]);
      const removed = await client.query<{ id: string }>('SELECT id FROM worker_removed WHERE queue = $1', [queue]);
      const added = defineNewTasks({ ids: ids.rows.map((row) => row.id), removed: new Set(removed.rows.map((row) => row.id)) }, tasks, defaults, now, where);
      if (added.length === 0) return added;
      // A dependency's row names its dependents, and is locked while they are added: an outcome recorded
      // meanwhile waits, then finds them (and decrements their counts); one recorded before is seen here.
      const depIds = [...new Set(added.flatMap((task) => task.deps))].sort();
      const existing =
        depIds.length === 0
          ? { rows: [] }
          : await client.query<{ id: string; state: string }>(
              `UPDATE worker_tasks t SET dependents = t.dependents || d.dependents
         FROM (SELECT dep, array_agg(id ORDER BY id) AS dependents FROM jsonb_to_recordset($2::jsonb) AS x(id text, deps text[]), unnest(x.deps) AS dep GROUP BY dep) d,
              (SELECT id FROM worker_tasks WHERE queue = $1 AND id = ANY($3::text[]) ORDER BY id FOR UPDATE) locked
         WHERE t.queue = $1 AND t.id = d.dep AND t.id = locked.id
         RETURNING t.id, t.state`,
              [queue, JSON.stringify(added.map((task) => ({ id: task.id, deps: task.deps }))), depIds],
            );
      const completed = new Set(existing.rows.filter((row) => row.state === 'completed').map((row) => row.id));
      const dependentsOf = new Map<string, string[]>();
      for (const task of added) for (const dep of task.deps) dependentsOf.set(dep, [...(dependentsOf.get(dep) ?? []), task.id]);
      await client.query(
        `INSERT INTO worker_tasks (queue, id, definition, deps, dependents, unmet)
         SELECT $1, x.item->'definition'->>'id', x.item->'definition',
           ARRAY(SELECT jsonb_array_elements_text(x.item->'deps')), ARRAY(SELECT jsonb_array_elements_text(x.item->'dependents')), (x.item->>'unmet')::integer
         FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS x(item, n)
         ORDER BY x.n`,
        [
          queue,
          JSON.stringify(
            added.map((task) => ({
              definition: task,
              deps: task.deps,
              dependents: dependentsOf.get(task.id) ?? [],
              unmet: new Set(task.deps.filter((dep) => !completed.has(dep))).size,
            })),
          ),
        ],
      );
      await client.query('SELECT pg_notify($1, $2)', [changeChannel(queue), 'added']);
      return added;
    });
    // Statistics of the tables as they are now: planned with those of a much smaller table, a claim can scan
    // every row instead of taking the first of its index. (Only their owner may; others' ANALYZE is skipped.)
    if (added.length >= ANALYZE_AFTER_ADDING) await this.withClient((client) => client.query('ANALYZE worker_tasks'));
    return added;
  }

  async read(): Promise<QueueState<TaskDefinition>> {
    const view = new QueueView<TaskDefinition>(this.location.queue, true, true);
    await this.withClient((client) => view.refresh(client));
    return view.state;
  }

  async liveness(state: QueueState<TaskDefinition>): Promise<ReadonlyMap<string, ClaimLiveness>> {
    if (state.running === 0) return new Map();
    const rows = await this.withClient((client) => runningClaims(client, this.location.queue));
    return new Map(rows.map((row) => [row.id, this.livenessOf(row)]));
  }

  private livenessOf(row: ClaimRow): ClaimLiveness {
    return { ownerAlive: row.session_alive, lockAgeMs: row.age_ms, stale: row.age_ms === null || row.age_ms > this.options.lockStaleMs };
  }

  warnings(): string[] {
    return [];
  }

  async change<T>(apply: (queue: QueueChange) => T | Promise<T>): Promise<T> {
    const { queue } = this.location;
    const { lockStaleMs } = this.options;
    return this.inQueueTransaction(async (client) => {
      const view = new QueueView<TaskDefinition>(queue, true, true);
      await view.refresh(client);
      const change: QueueChange = {
        get state() {
          return view.state;
        },
        async append(events: ChangeRecord[]) {
          for (const event of events) await applyByHand(client, queue, event);
          await view.refresh(client);
        },
        async lockOf(taskId: string): Promise<LockView | null> {
          const row = (await runningClaims(client, queue)).find((claim) => claim.id === taskId);
          // A claim given up by `unlock` holds nothing any more: the next worker takes the task over.
          if (row === undefined || row.given_up) return null;
          const ageMs = row.age_ms ?? 0;
          return {
            holder: row.worker === null ? null : { worker: row.worker, pid: row.pid ?? 0, host: row.host ?? '?' },
            ageMs,
            holderGone: !row.session_alive,
            stale: ageMs > lockStaleMs,
          };
        },
        async removeLock(taskId: string) {
          // A claim's lease, given up: the next worker that looks takes the task over.
          await client.query("UPDATE worker_tasks SET renewed_at = '-infinity', session_pid = NULL WHERE queue = $1 AND id = $2 AND state = 'running'", [
            queue,
            taskId,
          ]);
        },
        async editInstruction(taskId: string, instruction: string) {
          await client.query("UPDATE worker_tasks SET definition = jsonb_set(definition, '{instruction}', to_jsonb($3::text)) WHERE queue = $1 AND id = $2", [
            queue,
            taskId,
            instruction,
          ]);
        },
        async removeTasks(ids: ReadonlySet<string>): Promise<CompactionReport> {
          return removeTasks(client, queue, [...ids]);
        },
      };
      return apply(change);
    });
  }

  /** The history keeps what each remaining task needs, and no more: `remove` and `clean` take the rest with them. */
  async compact(): Promise<CompactionReport> {
    return this.withClient(async (client) => {
      const { events, bytes } = await historySize(client, this.location.queue);
      return {
        generation: null,
        bytesBefore: bytes,
        bytesAfter: bytes,
        eventsBefore: events,
        eventsKept: events,
        resultFilesRemoved: 0,
        resultBytesRemoved: 0,
      };
    });
  }

  async history(onEvent: (event: ChangeRecord, counted: ApplyResult) => void, onlyTask?: string): Promise<void> {
    const view = new QueueView(this.location.queue, false, true);
    await this.withClient(async (client) => {
      await this.requireTask(client, onlyTask);
      await view.refresh(client, historyListener(onEvent, onlyTask));
    });
  }

  /** The history of a task that does not exist is refused, as the folder store refuses it. */
  private async requireTask(client: Queryable, id: string | undefined): Promise<void> {
    if (id === undefined) return;
    const { rows } = await client.query('SELECT 1 FROM worker_tasks WHERE queue = $1 AND id = $2', [this.location.queue, id]);
    if (rows.length === 0) throw noSuchTask(id);
  }

  async followHistory(onEvent: (event: ChangeRecord, counted: ApplyResult) => void, onlyTask: string | undefined, signal: AbortSignal): Promise<void> {
    await this.withClient((client) => this.requireTask(client, onlyTask));
    const view = new QueueView(this.location.queue, false, true);
    const listener = historyListener(onEvent, onlyTask);
    const readOn = () => this.withClient((client) => view.refresh(client, listener));
    await repeatUntil(signal, FOLLOW_POLL_MS, readOn);
    // What was recorded before the signal is all delivered.
    await readOn();
  }

  async readResult(ref: ResultRef): Promise<{ text: string; value: unknown }> {
    const { rows } = await this.withClient((client) =>
      client.query<{ body: string }>('SELECT body FROM worker_results WHERE id = $1 AND queue = $2', [ref.offset, this.location.queue]),
    );
    const text = rows[0]?.body;
    if (text === undefined)
      throw new WorkerError('DAMAGED', `the result kept apart as ${ref.offset} is missing from worker_results`, { hint: 'was it deleted by hand?' });
    return { text, value: ref.json ? JSON.parse(text) : text };
  }

  async queueId(): Promise<string | null> {
    return this.withClient(async (client) => (await queueRow(client, this.location.queue))?.queue_id ?? null);
  }

  async workers(_host: string, now: number): Promise<WorkerStatus[]> {
    const { rows } = await this.withClient((client) =>
      client.query<{ heartbeat: Heartbeat; session_alive: boolean; silent_ms: number }>(
        `SELECT heartbeat,
           EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = w.session_pid AND a.backend_start = w.session_start) AS session_alive,
           (extract(epoch FROM ($2::timestamptz - beat_at)) * 1000)::float8 AS silent_ms
         FROM worker_workers w WHERE queue = $1 ORDER BY heartbeat->>'started_at'`,
        [this.location.queue, new Date(now)],
      ),
    );
    return rows.map((row) => ({ ...row.heartbeat, liveness: judgeWorker(row.heartbeat, row.session_alive, row.silent_ms) }));
  }

  async receive(copy: QueueCopy): Promise<number> {
    const { queue } = this.location;
    return this.inQueueTransaction(async (client) => {
      const { rows } = await client.query<{ tasks: string }>('SELECT count(*) AS tasks FROM worker_tasks WHERE queue = $1', [queue]);
      const held = Number(rows[0]!.tasks);
      if (held > 0) {
        throw new WorkerError('REJECTED', `the queue "${queue}" at ${serverOf(this.location.url)} holds ${held} task${held === 1 ? '' : 's'} already`, {
          hint: 'nothing was copied; copy into a new queue (--to-queue NAME)',
        });
      }
      const { state } = copy;
      await client.query(
        `INSERT INTO worker_queues (name, queue_id, paused_by_hand, pause_until) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET queue_id = EXCLUDED.queue_id, paused_by_hand = EXCLUDED.paused_by_hand, pause_until = EXCLUDED.pause_until`,
        [queue, copy.queueId, state.pausedByHand === null ? null : JSON.stringify(state.pausedByHand), pauseUntil(state, Date.now())],
      );
      for (const tasks of chunks(state.tasks(), COPY_CHUNK)) {
        await client.query(
          `INSERT INTO worker_tasks (queue, id, definition, deps, dependents, state, unmet, retry_at, attempts, generation, waits, waiting_since)
           SELECT $1, x.item->'definition'->>'id', x.item->'definition', ARRAY(SELECT jsonb_array_elements_text(x.item->'definition'->'deps')),
             ARRAY(SELECT jsonb_array_elements_text(x.item->'dependents')), x.item->>'state', (x.item->>'unmet')::integer,
             (x.item->>'retry_at')::timestamptz, (x.item->>'attempts')::integer, (x.item->>'generation')::integer, (x.item->>'waits')::integer,
             (x.item->>'waiting_since')::timestamptz
           FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS x(item, n) ORDER BY x.n`,
          [
            queue,
            JSON.stringify(
              tasks.map((task) => ({
                definition: task.def,
                dependents: (task.dependents ?? []).map((dependent) => dependent.def.id),
                state: task.state,
                unmet: task.unmetDeps,
                retry_at: task.retryAt === null ? null : new Date(task.retryAt).toISOString(),
                attempts: task.attempts,
                generation: task.generation,
                waits: task.waits,
                waiting_since: task.waitingSince === null ? null : new Date(task.waitingSince).toISOString(),
              })),
            ),
          ],
        );
      }
      const removed = [...state.removedIds()];
      if (removed.length > 0) await client.query('INSERT INTO worker_removed (queue, id) SELECT $1, unnest($2::text[])', [queue, removed]);
      // The history, in order; a result kept apart moves into worker_results, and its outcome refers to it there.
      await client.query('SELECT pg_current_xact_id()');
      for (const records of chunks(copy.history, COPY_CHUNK)) {
        const bodies: ChangeRecord[] = [];
        for (const record of records) {
          if (record.type === 'outcome' && record.result_ref !== undefined) {
            const { text } = await copy.result(record.result_ref);
            const kept = await client.query<{ id: string }>('INSERT INTO worker_results (queue, task, body) VALUES ($1, $2, $3) RETURNING id', [
              queue,
              record.task,
              text,
            ]);
            bodies.push({
              ...record,
              result_ref: { file: 'worker_results', offset: Number(kept.rows[0]!.id), length: Buffer.byteLength(text), json: record.result_ref.json },
            });
          } else bodies.push(record);
        }
        await client.query(
          `INSERT INTO worker_events (queue, task, body)
           SELECT $1, x.body->>'task', x.body FROM jsonb_array_elements($2::jsonb) WITH ORDINALITY AS x(body, n) ORDER BY x.n`,
          [queue, JSON.stringify(bodies)],
        );
      }
      return copy.history.length;
    });
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => undefined);
  }
}

/** Rows written per statement by a copy. */
const COPY_CHUNK = 1000;

function chunks<T>(items: readonly T[], size: number): T[][] {
  const pieces: T[][] = [];
  for (let i = 0; i < items.length; i += size) pieces.push(items.slice(i, i + size));
  return pieces;
}

/** The end of the pause the API asked for, if one is in force. */
function pauseUntil(state: QueueState<TaskDefinition>, now: number): Date | null {
  const pause = state.weather.pause(now);
  return pause === null ? null : new Date(pause.until);
}

function judgeWorker(beat: Heartbeat, sessionAlive: boolean, silentMs: number): WorkerLiveness {
  if (beat.state === 'stopped') return 'stopped';
  if (!sessionAlive) return 'dead';
  return silentMs > SILENT_AFTER_MS ? 'silent' : 'alive';
}

/** The channel NOTIFY wakes a queue's idle workers on. */
export function changeChannel(queue: string): string {
  return `worker_queue_${Buffer.from(queue).toString('hex').slice(0, 48)}`;
}

async function queueRow(client: Queryable, queue: string): Promise<{ queue_id: string } | null> {
  const { rows } = await client.query<{ queue_id: string }>('SELECT queue_id FROM worker_queues WHERE name = $1', [queue]);
  return rows[0] ?? null;
}

/**
 * Running tasks' claims, with how long since each was renewed and whether its worker's session lives. Ages
 * are by the database's clock, as renewals are: the hosts' clocks may differ.
 */
export async function runningClaims(client: Queryable, queue: string): Promise<ClaimRow[]> {
  const { rows } = await client.query<ClaimRow>(
    `SELECT id, claim->>'worker' AS worker, (claim->>'pid')::integer AS pid, claim->>'host' AS host, token,
       renewed_at = '-infinity' AS given_up, coalesce(session_start < pg_postmaster_start_time(), false) AS session_before_restart,
       CASE WHEN renewed_at = '-infinity' THEN NULL ELSE (extract(epoch FROM (now() - renewed_at)) * 1000)::float8 END AS age_ms,
       session_pid IS NOT NULL AND EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = t.session_pid AND a.backend_start = t.session_start) AS session_alive
     FROM worker_tasks t WHERE queue = $1 AND state = 'running' ORDER BY queue, seq`,
    [queue],
  );
  return rows;
}

function historyListener(onEvent: (event: ChangeRecord, counted: ApplyResult) => void, onlyTask: string | undefined) {
  return (event: FoldRecord, counted: ApplyResult) => {
    if (event.type === 'weather') return;
    if (onlyTask === undefined || (isTaskEvent(event) && event.task === onlyTask)) onEvent(event, counted);
  };
}

/**
 * Records a change by hand, and makes it in the task's row when the row allows it, by the rules the fold
 * judges it with: a retry only of a failed task, a rerun of a completed one (its dependents wait again),
 * a cancel of a pending one (it fails) or a running one (its worker is asked to stop).
 */
async function applyByHand(client: Queryable, queue: string, event: ChangeRecord): Promise<void> {
  const insert = 'INSERT INTO worker_events (queue, task, body) SELECT $1::text, $2::text, $3::jsonb';
  const task = isTaskEvent(event) ? event.task : null;
  const params = [queue, task, JSON.stringify(event)];
  switch (event.type) {
    case 'retry':
      await client.query(
        `WITH changed AS (UPDATE worker_tasks SET state = 'pending', attempts = 0, waits = 0, waiting_since = NULL, generation = generation + 1, retry_at = NULL
           WHERE queue = $1 AND id = $2 AND state = 'failed' RETURNING id)
         ${insert} FROM changed`,
        params,
      );
      break;
    case 'rerun':
      await client.query(
        `WITH changed AS (UPDATE worker_tasks SET state = 'pending', attempts = 0, waits = 0, waiting_since = NULL, generation = generation + 1, retry_at = NULL
           WHERE queue = $1 AND id = $2 AND state = 'completed' RETURNING dependents),
         waiting AS (SELECT t.id FROM worker_tasks t, changed WHERE t.queue = $1 AND t.id = ANY(changed.dependents) ORDER BY t.id FOR UPDATE OF t),
         again AS (UPDATE worker_tasks t SET unmet = t.unmet + 1 FROM waiting WHERE t.queue = $1 AND t.id = waiting.id)
         ${insert} FROM changed`,
        params,
      );
      break;
    case 'cancel':
      await client.query(
        `WITH changed AS (UPDATE worker_tasks SET state = CASE WHEN state = 'pending' THEN 'failed' ELSE state END, retry_at = NULL
           WHERE queue = $1 AND id = $2 AND state IN ('pending', 'running') RETURNING id)
         ${insert} FROM changed`,
        params,
      );
      break;
    case 'paused':
    case 'resumed':
      await client.query(
        `WITH changed AS (UPDATE worker_queues SET paused_by_hand = $4::jsonb WHERE name = $1 RETURNING name)
         ${insert} FROM changed`,
        [...params, event.type === 'paused' ? JSON.stringify({ since: event.at, by: event.by }) : null],
      );
      break;
    default:
      // An edit (the definition was changed before), a removal (the rows are gone already): a record only.
      // Its transaction has an id before the record draws its number (see QueueView).
      await client.query('SELECT pg_current_xact_id()');
      await client.query(insert, params);
  }
  await client.query('SELECT pg_notify($1, $2)', [changeChannel(queue), event.type]);
}

/** Removes tasks for good: their rows, their history and their results; their ids are kept, never used again. */
async function removeTasks(client: Queryable, queue: string, ids: string[]): Promise<CompactionReport> {
  const before = await historySize(client, queue);
  const gone = await client.query<{ events: string; bytes: string; results: string; result_bytes: string }>(
    `WITH tasks AS (DELETE FROM worker_tasks WHERE queue = $1 AND id = ANY($2::text[]) RETURNING id),
       kept AS (INSERT INTO worker_removed (queue, id) SELECT $1, id FROM tasks ON CONFLICT DO NOTHING),
       events AS (DELETE FROM worker_events WHERE queue = $1 AND task = ANY($2::text[]) RETURNING pg_column_size(body) AS bytes),
       results AS (DELETE FROM worker_results WHERE queue = $1 AND task = ANY($2::text[]) RETURNING length(body) AS bytes)
     SELECT (SELECT count(*) FROM events) AS events, (SELECT coalesce(sum(bytes), 0) FROM events) AS bytes,
       (SELECT count(*) FROM results) AS results, (SELECT coalesce(sum(bytes), 0) FROM results) AS result_bytes`,
    [queue, ids],
  );
  const row = gone.rows[0]!;
  return {
    generation: null,
    bytesBefore: before.bytes,
    bytesAfter: before.bytes - Number(row.bytes),
    eventsBefore: before.events,
    eventsKept: before.events - Number(row.events),
    resultFilesRemoved: Number(row.results),
    resultBytesRemoved: Number(row.result_bytes),
  };
}

/** How many records a queue's history holds, and their bytes as stored. */
async function historySize(client: Queryable, queue: string): Promise<{ events: number; bytes: number }> {
  const { rows } = await client.query<{ events: string; bytes: string }>(
    'SELECT count(*) AS events, coalesce(sum(pg_column_size(body)), 0) AS bytes FROM worker_events WHERE queue = $1',
    [queue],
  );
  return { events: Number(rows[0]!.events), bytes: Number(rows[0]!.bytes) };
}
