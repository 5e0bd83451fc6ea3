import { randomUUID } from 'node:crypto';
import type pg from 'pg';
import { WorkerError, asWorkerError } from '../errors.js';
import { idempotencyKey } from '../core/newTasks.js';
import type { QueueState, TaskRecord } from '../core/queueState.js';
import { stuckReason } from '../core/reasons.js';
import { bytesKeptApart, claimRecord, outcomeRecord } from '../store.js';
import type { Claimant, HeldClaim, NewOutcome, Presence, Recorded, WorkerStore } from '../store.js';
import type { ClaimEvent, Heartbeat, Logger, TaskDefinition, TaskHead } from '../types.js';
import { databaseError, type DatabaseLocation, openPool, serverOf } from './connection.js';
import { Presence as DatabasePresence } from './presence.js';
import { changeChannel, runningClaims, type ClaimRow } from './pgStore.js';
import { type NewRead, QueueView } from './queueView.js';
import { ensureSchema } from './schema.js';

/** A claim this soon after a read (a look) does not read again; later claims of one look (--concurrency) do. */
const READ_FRESH_MS = 25;
/** How often a worker looks for tasks whose worker died or froze. */
const TAKEOVER_SCAN_MS = 1000;

export interface PgWorkerOptions {
  workerId: string;
  pid: number;
  host: string;
  lockStaleMs: number;
  concurrency: number;
  logger: Logger;
  now: () => number;
}

/** A claim of the PostgreSQL store: the token its row holds while it is in force. */
interface PgClaim extends HeldClaim {
  readonly event: ClaimEvent;
}

interface ClaimedRow {
  id: string;
  definition: TaskDefinition;
  attempts: number;
  generation: number;
  waits: number;
  /** As JSON gives a timestamp: text. */
  waiting_since: string | null;
  claim: ClaimEvent;
}

const CLAIMED_COLUMNS = 't.id, t.definition, t.attempts, t.generation, t.waits, t.waiting_since, t.claim';

/**
 * The PostgreSQL store as a worker uses it. A claim is one statement: the first ready row in add order
 * that no other transaction holds (FOR UPDATE SKIP LOCKED) becomes running under a new token, and its
 * record joins the history in the same statement. An outcome counts only while the row still holds the
 * claim's token. While a call runs, the claim is renewed; a claim not renewed for --lock-stale, or whose
 * worker's database session ended, is taken over by another worker.
 */
export class PgWorkerStore implements WorkerStore {
  private readonly view: QueueView<TaskHead>;
  private lastTakeoverScan = -Infinity;
  private readonly held = new Map<string, PgClaim>();
  private renewTimer: NodeJS.Timeout | undefined;
  private queueId = '';

  private constructor(
    private readonly pool: pg.Pool,
    private readonly presence: DatabasePresence,
    private readonly location: DatabaseLocation,
    private readonly options: PgWorkerOptions,
  ) {
    this.view = new QueueView<TaskHead>(location.queue, false, false);
  }

  static async open(location: DatabaseLocation, options: PgWorkerOptions): Promise<PgWorkerStore> {
    const { logger } = options;
    const pool = openPool(location, {
      // One connection per call in flight at most, and one for looks.
      max: Math.min(options.concurrency, 20) + 1,
      applicationName: `worker ${options.workerId}`,
      onIdleError: (error) => logger.debug(`a pooled database connection ended: ${error.message}`),
    });
    const presence = new DatabasePresence(location, options.workerId, logger);
    const store = new PgWorkerStore(pool, presence, location, options);
    // Back after a lost connection: its claims name its new session at once, before others judge them.
    presence.onReconnect = () => void store.renew();
    try {
      const client = await pool.connect();
      try {
        await ensureSchema(client, serverOf(location.url));
        // A worker started before any task was added makes the queue, as it does a folder's.
        const { rows } = await client.query<{ queue_id: string }>(
          `WITH made AS (INSERT INTO worker_queues (name, queue_id) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING queue_id)
           SELECT queue_id FROM made UNION ALL SELECT queue_id FROM worker_queues WHERE name = $1`,
          [location.queue, randomUUID()],
        );
        store.queueId = rows[0]!.queue_id;
        await store.view.refresh(client);
      } finally {
        client.release();
      }
      return store;
    } catch (error) {
      await pool.end().catch(() => undefined);
      throw databaseError(error, location);
    }
  }

  get state(): QueueState<TaskHead> {
    return this.view.state;
  }

  /** A database store is never lost: a connection that ends is made again. */
  readonly lost = undefined;

  get changes() {
    return this.presence.changes;
  }

  describe(): string {
    const size = this.view.state.size;
    return `queue "${this.location.queue}" at ${serverOf(this.location.url)} (${size} task${size === 1 ? '' : 's'})`;
  }

  private async query<R extends pg.QueryResultRow>(statement: pg.QueryConfig): Promise<pg.QueryResult<R>> {
    try {
      return await this.pool.query<R>(statement);
    } catch (error) {
      throw databaseError(error, this.location);
    }
  }

  /**
   * Brings the fold up to date. Always a read: what the loop decides next (the API's weather, a probe
   * already in flight) must see every outcome recorded before, or workers would keep calling an API that
   * other workers have found down.
   */
  async look(): Promise<void> {
    await this.readNow();
  }

  private async readNow(): Promise<void> {
    try {
      await this.view.refresh(this.pool);
    } catch (error) {
      throw databaseError(error, this.location);
    }
  }

  /** Runs a statement that may carry the fold's read (`read`), and folds what that read found. */
  private async withRead(read: { columns: string; values: unknown[] } | null, statement: pg.QueryConfig): Promise<pg.QueryResultRow> {
    let row: pg.QueryResultRow;
    try {
      row = (await this.query(statement)).rows[0]!;
    } catch (error) {
      if (read !== null) this.view.abandonPiggyback();
      throw error;
    }
    if (read !== null)
      await this.view
        .applyPiggyback(this.pool, row as NewRead<TaskHead>)
        .catch((error: unknown) => this.options.logger.debug(`could not fold what was new: ${asWorkerError(error).message}`));
    return row;
  }

  async enter(heartbeat: Heartbeat): Promise<Presence> {
    await this.presence.start(heartbeat);
    this.renewTimer = setInterval(() => void this.renew(), Math.max(100, Math.min(this.options.lockStaleMs / 3, 10_000)));
    this.renewTimer.unref();
    return {
      heartbeat,
      leave: async () => {
        clearInterval(this.renewTimer);
        await this.presence.stop();
      },
    };
  }

  /**
   * Renews every claim this worker holds, under its session of now. A claim whose row no longer holds its
   * token was taken over (this worker froze, or lost its connection too long): its call stops. A renewal
   * that fails (the database is away) changes nothing: it is tried again.
   */
  async renew(): Promise<void> {
    if (this.held.size === 0) return;
    const session = this.presence.session;
    const tokens = [...this.held.keys()];
    let kept: Set<string>;
    try {
      const { rows } = await this.pool.query<{ token: string }>(
        `UPDATE worker_tasks SET renewed_at = now(), session_pid = $3, session_start = $4
         WHERE queue = $1 AND token = ANY($2::text[]) AND state = 'running' RETURNING token`,
        [this.location.queue, tokens, session?.pid ?? null, session?.start ?? null],
      );
      kept = new Set(rows.map((row) => row.token));
    } catch (error) {
      this.options.logger.debug(`could not renew claims: ${asWorkerError(error).message}`);
      return;
    }
    for (const token of tokens) {
      const claim = this.held.get(token);
      if (claim === undefined || kept.has(token) || claim.abandon.signal.aborted) continue;
      this.options.logger.warn(`lost the claim on ${claim.taskId}: another worker took it over; abandoning the attempt`);
      claim.abandon.abort(new WorkerError('IO', `the claim on ${claim.taskId} was taken over`));
    }
  }

  claimingElsewhere(): readonly TaskRecord<TaskHead>[] {
    // Rows other workers hold are skipped, never waited for: there is nothing to report.
    return [];
  }

  async claimReady(claimant: Claimant): Promise<HeldClaim | null> {
    this.options.logger.debug('trying to claim the first ready task');
    return this.claim(claimant, null, null);
  }

  /**
   * Claims, in one statement with its record in the history, the first ready task in add order (FOR UPDATE
   * SKIP LOCKED: a row another transaction holds is passed over, never waited for), or the stuck claim
   * `stuck` if the row still holds it. The queue's pauses (by hand, or asked by the API) and its rate limit
   * are judged in the same statement: no claim counts within a pause or beyond the rate. The call starts of a
   * rate-limited queue are kept in its row, whose lock serialises such claims.
   */
  private async claim(claimant: Claimant, stuck: ClaimRow | null, reason: string | null): Promise<HeldClaim | null> {
    const token = randomUUID();
    const claimedAt = this.options.now();
    const session = this.presence.session;
    const { rate } = claimant;
    const picking =
      stuck === null
        ? `SELECT id FROM worker_tasks
           WHERE queue = $1 AND state = 'pending' AND unmet = 0 AND (retry_at IS NULL OR retry_at <= $2) AND coalesce((SELECT open FROM open), false)
           -- Only the ready index gives this order (see schema.ts): no plan walks the queue to its first ready task.
           ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED`
        : `SELECT id FROM worker_tasks
           WHERE queue = $1 AND id = $9 AND state = 'running' AND token = $10 AND coalesce((SELECT open FROM open), false)
           FOR UPDATE SKIP LOCKED`;
    const slot =
      rate === undefined
        ? ''
        : `slot AS (
             UPDATE worker_queues q SET call_starts = ARRAY(SELECT s FROM unnest(q.call_starts) s WHERE s > $2::timestamptz - $4 * interval '1 millisecond') || $2::timestamptz
             FROM picked WHERE q.name = $1
               AND (SELECT count(*) FROM unnest(q.call_starts) s WHERE s > $2::timestamptz - $4 * interval '1 millisecond') < $3::integer
             RETURNING 1
           ),`;
    const values = [
      this.location.queue,
      new Date(claimedAt),
      rate?.calls ?? null,
      rate?.per_ms ?? null,
      token,
      JSON.stringify(claimRecord(claimant, { task: '', token, prev: stuck?.token ?? null, attempt: 0, at: claimedAt, reason })),
      session?.pid ?? null,
      session?.start ?? null,
      ...(stuck === null ? [] : [stuck.id, stuck.token]),
    ];
    // A read rides on the claim unless one was made a moment ago (the look before it): every read costs.
    const read = Date.now() - this.view.readAt < READ_FRESH_MS ? null : this.view.piggyback(values.length + 1);
    const row = await this.withRead(read, {
      // Prepared once per connection: planning this statement costs about what running it does.
      name: `worker-claim-${stuck === null ? 'ready' : 'stuck'}${rate === undefined ? '' : '-rated'}${read === null ? '' : '-read'}`,
      text: `WITH open AS (
         -- The rate limit ($3 calls per $4 ms) is named here for its types, whether or not the queue has one.
         SELECT paused_by_hand IS NULL AND (pause_until IS NULL OR pause_until <= $2) AS open, $3::integer AS calls, $4::float8 AS per_ms
         FROM worker_queues WHERE name = $1
       ), picked AS (
         ${picking}
       ), ${slot} claimed AS (
         UPDATE worker_tasks t SET state = 'running', token = $5, attempts = t.attempts + 1, retry_at = NULL,
           claim = $6::jsonb || jsonb_build_object('task', t.id, 'attempt', t.attempts + 1),
           renewed_at = now(), session_pid = $7, session_start = $8
         FROM picked WHERE t.queue = $1 AND t.id = picked.id ${rate === undefined ? '' : 'AND EXISTS (SELECT 1 FROM slot)'}
         RETURNING ${CLAIMED_COLUMNS}
       ), logged AS (
         INSERT INTO worker_events (queue, task, body) SELECT $1, id, claim FROM claimed
       )
       SELECT (SELECT row_to_json(t) FROM claimed t) AS claimed ${read === null ? '' : `, ${read.columns}`}`,
      values: [...values, ...(read?.values ?? [])],
    });
    const claimed = (row as { claimed: ClaimedRow | null }).claimed;
    if (claimed !== null) return this.hold(claimed, claimedAt, reason);
    // Nothing to claim: what the worker decides next (idle, drained) needs the queue as it is now.
    if (read === null) await this.readNow();
    return null;
  }

  async claimStuck(claimant: Claimant): Promise<HeldClaim | null> {
    const { now, lockStaleMs, host, pid, logger } = this.options;
    if (now() - this.lastTakeoverScan < TAKEOVER_SCAN_MS) return null;
    this.lastTakeoverScan = now();
    const running = await this.claimsQuery();
    for (const row of running) {
      if (row.host === host && row.pid === pid) continue;
      const stale = row.age_ms === null || row.age_ms > lockStaleMs;
      // A session that ended with a restart of the server says nothing of its worker, which renews its claims
      // under a new session once it is connected again: only a stale claim of such a session is taken over.
      if (!stale && (row.session_alive || row.session_before_restart)) continue;
      const task = this.view.state.get(row.id);
      const reason =
        (task && stuckReason(task, { ownerAlive: row.session_alive ? undefined : false, lockAgeMs: row.age_ms, stale }, now())) ??
        `held by ${row.worker ?? 'a worker'}, ${row.session_alive ? 'whose claim was not renewed' : 'whose database session ended'}`;
      // Supersedes it only while the row still holds it: of two workers that try, one succeeds.
      const claim = await this.claim(claimant, row, reason);
      if (claim !== null) {
        logger.warn(`taking over ${row.id}: ${reason}`);
        // A dead worker may have left several (--concurrency): the next free slot looks again at once.
        this.lastTakeoverScan = -Infinity;
        return claim;
      }
    }
    return null;
  }

  private async claimsQuery(): Promise<ClaimRow[]> {
    try {
      return await runningClaims(this.pool, this.location.queue);
    } catch (error) {
      throw databaseError(error, this.location);
    }
  }

  private hold(row: ClaimedRow, claimedAt: number, takeoverReason: string | null): PgClaim {
    const claim: PgClaim = {
      taskId: row.id,
      definition: row.definition,
      token: row.claim.token,
      attempt: row.attempts,
      claimedAt,
      idempotencyKey: idempotencyKey(this.queueId, row.id, row.generation),
      waits: row.waits,
      waitingSince: row.waiting_since === null ? null : Date.parse(row.waiting_since),
      takeoverReason,
      abandon: new AbortController(),
      event: row.claim,
    };
    this.held.set(claim.token, claim);
    return claim;
  }

  async record(held: HeldClaim, outcome: NewOutcome): Promise<Recorded> {
    const claim = held as PgClaim;
    const { queue } = this.location;
    // A result too large for the history is kept in worker_results, which the outcome refers to.
    const apartBytes = bytesKeptApart(outcome);
    const apart = apartBytes !== null;
    const event = outcomeRecord(claim, claim.event.worker, outcome, apart);
    if (apart) event.result_ref = { file: 'worker_results', offset: 0, length: apartBytes, json: outcome.result!.json };
    const uncharged = !outcome.called || outcome.charged === false;
    const state = outcome.outcome === 'retry' || outcome.outcome === 'released' ? 'pending' : outcome.outcome;
    const values = [
      queue,
      claim.taskId,
      claim.token,
      state,
      outcome.outcome === 'retry' && outcome.retryAt !== undefined ? new Date(outcome.retryAt) : null,
      uncharged,
      uncharged ? (outcome.called ? 'add' : 'keep') : 'reset',
      outcome.called,
      outcome.waitingSince === undefined ? null : new Date(outcome.waitingSince),
      outcome.pauseUntil === undefined ? null : new Date(outcome.pauseUntil),
      apart ? outcome.result!.body : null,
      JSON.stringify(event),
      changeChannel(queue),
    ];
    const row = (
      await this.query({
        name: 'worker-record',
        text: `WITH done AS (
         UPDATE worker_tasks t SET state = $4, token = NULL, claim = NULL, renewed_at = NULL, session_pid = NULL, session_start = NULL,
           retry_at = $5, attempts = t.attempts - CASE WHEN $6 THEN 1 ELSE 0 END,
           waits = CASE $7::text WHEN 'add' THEN t.waits + 1 WHEN 'reset' THEN 0 ELSE t.waits END,
           waiting_since = CASE WHEN $8 THEN $9::timestamptz ELSE t.waiting_since END
         WHERE t.queue = $1 AND t.id = $2 AND t.token = $3 AND t.state = 'running'
         RETURNING t.id, CASE WHEN t.state = 'completed' THEN t.dependents ELSE '{}'::text[] END AS freed
       ), waiting AS (
         SELECT w.id FROM worker_tasks w, done WHERE w.queue = $1 AND w.id = ANY(done.freed) ORDER BY w.id FOR UPDATE OF w
       ), ready AS (
         UPDATE worker_tasks w SET unmet = w.unmet - 1 FROM waiting WHERE w.queue = $1 AND w.id = waiting.id RETURNING w.unmet
       ), paused AS (
         UPDATE worker_queues SET pause_until = greatest(pause_until, $10::timestamptz) FROM done WHERE name = $1 AND $10::timestamptz IS NOT NULL
       ), kept AS (
         INSERT INTO worker_results (queue, task, body) SELECT $1, id, $11::text FROM done WHERE $11::text IS NOT NULL RETURNING id
       ), logged AS (
         INSERT INTO worker_events (queue, task, body)
         SELECT $1, done.id, CASE WHEN kept.id IS NULL THEN $12::jsonb ELSE jsonb_set($12::jsonb, '{result_ref,offset}', to_jsonb(kept.id)) END
         FROM done LEFT JOIN kept ON true RETURNING 1
       )
       SELECT (SELECT count(*) FROM logged)::integer AS recorded,
         (SELECT claim->>'worker' FROM worker_tasks WHERE queue = $1 AND id = $2) AS holder,
         CASE WHEN $4 = 'pending' OR EXISTS (SELECT 1 FROM ready WHERE unmet = 0) THEN pg_notify($13, 'ready') END AS woken`,
        values,
      })
    ).rows[0] as { recorded: number; holder: string | null };
    this.held.delete(claim.token);
    return row.recorded > 0 ? { recorded: true } : { recorded: false, lostTo: row.holder };
  }

  /** The task stays claimed, its claim no longer renewed: another worker takes it over once it goes stale. */
  abandon(claim: HeldClaim): void {
    this.held.delete(claim.token);
  }

  async tidy(): Promise<void> {
    // Nothing is left behind by a dead worker: its claims are taken over, its heartbeat says it stopped.
  }

  async settle(): Promise<void> {}

  close(): void {
    clearInterval(this.renewTimer);
    void this.presence.stop();
    void this.pool.end().catch(() => undefined);
  }
}
