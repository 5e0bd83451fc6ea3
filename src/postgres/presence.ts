import type pg from 'pg';
import { WorkerError, asWorkerError } from '../errors.js';
import type { ChangeNotifier } from '../store.js';
import type { Heartbeat, Logger } from '../types.js';
import { databaseError, type DatabaseLocation, newClient, serverOf } from './connection.js';
import { changeChannel } from './pgStore.js';

/** How often the heartbeat row is written. */
const HEARTBEAT_MS = 1000;
/** Waits between attempts to connect again: doubling, up to this. */
const RECONNECT_MAX_MS = 5000;

/** This worker's database session: its end (a killed process, a lost host) tells others the worker is gone. */
export interface Session {
  pid: number;
  /** Its backend_start, as text: to the microsecond, so that a reused pid is told apart. */
  start: string;
}

/**
 * A worker's own connection, apart from the pool: it holds the worker id (a session advisory lock, let go
 * by the server when the connection ends), listens for changes to the queue (LISTEN), and is the session
 * whose life other workers judge this one's claims by. When it ends, it is made again with backoff, and
 * the worker looks at the queue once more (notifications sent meanwhile are lost).
 */
export class Presence {
  readonly changes = new NotifiedChanges();
  private client: pg.Client | undefined;
  private heartbeat: Heartbeat | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  session: Session | undefined;
  /** Called when the connection is made again after it was lost. */
  onReconnect: (() => void) | undefined;

  constructor(
    private readonly location: DatabaseLocation,
    private readonly workerId: string,
    private readonly logger: Logger,
  ) {}

  /** Takes the worker id (refused while a live worker holds it), then keeps the heartbeat row current. */
  async start(heartbeat: Heartbeat): Promise<void> {
    this.heartbeat = heartbeat;
    try {
      await this.connect();
    } catch (error) {
      throw databaseError(error, this.location);
    }
    await this.beat();
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_MS);
    this.timer.unref();
  }

  private async connect(): Promise<void> {
    const client = newClient(this.location, `worker ${this.workerId}`);
    client.on('error', (error) => this.lost(client, error));
    client.on('end', () => this.lost(client, new Error('the connection ended')));
    client.on('notification', () => this.changes.notify());
    await client.connect();
    try {
      const { rows } = await client.query<{ held: boolean; pid: number; start: string }>(
        `SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS held, pg_backend_pid() AS pid,
           (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())::text AS start`,
        [`worker id ${this.location.queue}/${this.workerId}`],
      );
      const row = rows[0]!;
      if (!row.held) {
        throw new WorkerError('USAGE', `worker id "${this.workerId}" is held by a live worker of queue "${this.location.queue}"`, {
          hint: 'give this worker another --worker-id (env WORKER_ID), or none for a generated one',
        });
      }
      await client.query(`LISTEN ${changeChannel(this.location.queue)}`);
      this.session = { pid: row.pid, start: row.start };
      this.client = client;
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
  }

  private lost(client: pg.Client, error: Error): void {
    if (this.client !== client || this.stopped) return;
    this.client = undefined;
    this.session = undefined;
    client.end().catch(() => undefined);
    this.logger.warn(`lost the connection to the database at ${serverOf(this.location.url)} (${error.message}); connecting again`);
    void this.reconnect();
  }

  private async reconnect(): Promise<void> {
    for (let waitMs = 100; !this.stopped; waitMs = Math.min(waitMs * 2, RECONNECT_MAX_MS)) {
      await new Promise((resolve) => setTimeout(resolve, waitMs));
      if (this.stopped) return;
      try {
        await this.connect();
        this.logger.info(`connected to the database at ${serverOf(this.location.url)} again`);
        // Notifications sent while away are lost: look at the queue once more.
        this.changes.notify();
        this.onReconnect?.();
        await this.beat();
        return;
      } catch (error) {
        this.logger.debug(`could not connect again: ${asWorkerError(databaseError(error, this.location)).message}`);
      }
    }
  }

  private async beat(): Promise<void> {
    const client = this.client;
    if (client === undefined || this.heartbeat === undefined) return;
    this.heartbeat.beat_at = new Date().toISOString();
    try {
      await client.query(
        `INSERT INTO worker_workers (queue, id, heartbeat, session_pid, session_start, beat_at) VALUES ($1, $2, $3, $4, $5, now())
         ON CONFLICT (queue, id) DO UPDATE SET heartbeat = EXCLUDED.heartbeat, session_pid = EXCLUDED.session_pid,
           session_start = EXCLUDED.session_start, beat_at = now()`,
        [this.location.queue, this.workerId, JSON.stringify(this.heartbeat), this.session?.pid, this.session?.start],
      );
    } catch (error) {
      this.logger.debug(`could not write the heartbeat: ${asWorkerError(error).message}`);
    }
  }

  /** Writes a last heartbeat (`stopped`) and ends the session, which lets the worker id go. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    clearInterval(this.timer);
    if (this.heartbeat !== undefined) {
      this.heartbeat.state = 'stopped';
      this.heartbeat.current_task = null;
      this.heartbeat.current_tasks = [];
      await this.beat();
    }
    this.stopped = true;
    this.changes.close();
    await this.client?.end().catch(() => undefined);
    this.client = undefined;
  }
}

/** Wakes an idle worker when the queue changes: a NOTIFY on the queue's channel, sent at the commit of the change. */
class NotifiedChanges implements ChangeNotifier {
  private changed = false;
  private busy = false;
  private wake: (() => void) | undefined;

  notify(): void {
    if (this.busy) return;
    this.changed = true;
    this.wake?.();
  }

  /** A look starts: any change from now on may matter, even one that comes before the next wait. */
  markLooked(): void {
    this.changed = false;
    this.busy = false;
  }

  wait(ms: number, signal: AbortSignal): Promise<void> {
    this.busy = false;
    // Every wait goes through a timer, even one of 0: the worker's other timers (renewals) keep running.
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, this.changed || signal.aborted ? 0 : ms);
      signal.addEventListener('abort', done);
      this.wake = () => setTimeout(done, 0);
    });
  }

  pause(): void {
    this.busy = true;
  }

  close(): void {
    this.wake?.();
  }
}
