import type pg from 'pg';
import { WorkerError } from '../errors.js';

/** The schema this version of worker makes and understands. A newer one is refused, never changed. */
export const SCHEMA_VERSION = 1;

/** Taken (as a session advisory lock) while the schema is made: ten workers starting at once make it once. */
const SCHEMA_LOCK = 0x776f726b; // "work"

/**
 * The tables, in the public schema of the database named by the URL (or the user's search_path):
 * - worker_queues: one row per queue (its identity, a pause by hand, the API's pause, the last call starts
 *   under a rate limit);
 * - worker_tasks: a task's definition and the state a claim needs: unmet dependencies counted in the row,
 *   the claim in force (its token; when its worker last renewed it; the database session of that worker,
 *   whose end means the worker is gone), attempts and backoff, and the tasks that wait for it: kept in its
 *   row, so that an outcome, which locks the row, always finds a dependent added meanwhile. The ready index
 *   holds only claimable rows;
 * - worker_events: the history, in order: what every reader folds, as a folder queue's execution log;
 * - worker_results: results too large to keep in their outcome;
 * - worker_workers: heartbeats, and the database session each worker holds (its death is the worker's);
 * - worker_removed: ids taken out by `remove` and `clean`, never used again.
 * The tasks and the history grow and change fast: their statistics are refreshed after a fixed number of
 * changes, not a share of the table, so that the planner keeps each statement on its index.
 */
const DDL = `
CREATE TABLE worker_queues (
  name text PRIMARY KEY,
  queue_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  paused_by_hand jsonb,
  pause_until timestamptz,
  call_starts timestamptz[] NOT NULL DEFAULT '{}'
);
CREATE TABLE worker_tasks (
  queue text NOT NULL REFERENCES worker_queues (name) ON DELETE CASCADE,
  id text NOT NULL,
  seq bigserial NOT NULL,
  definition jsonb NOT NULL,
  deps text[] NOT NULL,
  dependents text[] NOT NULL DEFAULT '{}',
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'completed', 'failed')),
  unmet integer NOT NULL,
  retry_at timestamptz,
  attempts integer NOT NULL DEFAULT 0,
  generation integer NOT NULL DEFAULT 1,
  waits integer NOT NULL DEFAULT 0,
  waiting_since timestamptz,
  token text,
  claim jsonb,
  renewed_at timestamptz,
  session_pid integer,
  session_start timestamptz,
  PRIMARY KEY (queue, id)
) WITH (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 2000, autovacuum_vacuum_scale_factor = 0.02);
CREATE INDEX worker_tasks_ready ON worker_tasks (queue, seq) WHERE state = 'pending' AND unmet = 0;
CREATE INDEX worker_tasks_running ON worker_tasks (queue, seq) WHERE state = 'running';
-- Tasks added after a number, for readers; on an expression, so that no claim can walk it instead of the ready index.
CREATE INDEX worker_tasks_added ON worker_tasks ((seq + 0));
CREATE TABLE worker_events (
  queue text NOT NULL,
  seq bigserial NOT NULL,
  task text,
  body jsonb NOT NULL,
  xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
  PRIMARY KEY (queue, seq)
) WITH (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000);
CREATE INDEX worker_events_xid ON worker_events (xid);
CREATE TABLE worker_results (
  id bigserial PRIMARY KEY,
  queue text NOT NULL,
  task text NOT NULL,
  body text NOT NULL
);
CREATE INDEX worker_results_task ON worker_results (queue, task);
CREATE TABLE worker_workers (
  queue text NOT NULL,
  id text NOT NULL,
  heartbeat jsonb NOT NULL,
  session_pid integer,
  session_start timestamptz,
  beat_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (queue, id)
);
CREATE TABLE worker_removed (
  queue text NOT NULL,
  id text NOT NULL,
  PRIMARY KEY (queue, id)
);
`;

/**
 * Makes the tables on first use, once, under a lock; refuses a database whose tables are of a newer
 * version than this worker knows. Never changes or drops what is there.
 */
export async function ensureSchema(client: pg.ClientBase, server: string): Promise<void> {
  const found = await schemaVersion(client);
  if (found === SCHEMA_VERSION) return;
  if (found === null) {
    await client.query('SELECT pg_advisory_lock($1)', [SCHEMA_LOCK]);
    try {
      // Another process may have made them while this one waited for the lock.
      if ((await schemaVersion(client)) === null) {
        await client.query('BEGIN');
        try {
          await client.query('CREATE TABLE worker_schema (version integer NOT NULL)');
          await client.query(DDL);
          await client.query('INSERT INTO worker_schema (version) VALUES ($1)', [SCHEMA_VERSION]);
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK');
          throw error;
        }
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [SCHEMA_LOCK]);
    }
    return ensureSchema(client, server);
  }
  if (found > SCHEMA_VERSION) {
    throw new WorkerError('CONFIG', `the queue tables at ${server} are of schema version ${found}, newer than this worker knows (${SCHEMA_VERSION})`, {
      hint: 'a newer version of worker made them: upgrade this one; nothing was changed',
    });
  }
  throw new WorkerError('CONFIG', `the queue tables at ${server} are of schema version ${found}, which this worker cannot use (it knows ${SCHEMA_VERSION})`, {
    hint: 'nothing was changed; see CHANGELOG.md for how to move the queue',
  });
}

async function schemaVersion(client: pg.ClientBase): Promise<number | null> {
  const { rows } = await client.query<{ exists: boolean }>("SELECT to_regclass('worker_schema') IS NOT NULL AS exists");
  if (!rows[0]?.exists) return null;
  const version = await client.query<{ version: number | null }>('SELECT max(version) AS version FROM worker_schema');
  return version.rows[0]?.version ?? null;
}
