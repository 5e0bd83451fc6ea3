import type pg from 'pg';
import { type ApplyResult, QueueState } from '../core/queueState.js';
import type { FoldRecord, TaskHead } from '../types.js';

/** Events read per query: a reader far behind catches up in pieces. */
const EVENTS_PER_READ = 5000;

export type Queryable = Pick<pg.ClientBase, 'query'>;

/** A PostgreSQL snapshot: transactions below xmin are over; those listed in `inProgress` were not. */
interface Snapshot {
  inProgress: string[];
}

function parseSnapshot(text: string): Snapshot {
  const [, , list = ''] = text.split(':');
  return { inProgress: list === '' ? [] : list.split(',') };
}

/**
 * The queue as a fold of its history table, kept current by reading only what is new. The database decides
 * every race (a claim is one statement), so the fold takes each record as decided (`decidedByStore`).
 *
 * Events are numbered by a sequence, but transactions commit in their own order: one that drew a smaller
 * number may commit after a larger one was read. So each read also notes the transactions still in
 * progress, and the next read takes, besides what is past the last number read, whatever those
 * transactions wrote since. Events of one task are always in order: a change of a task waits for the row
 * lock of the change before it, and draws its number after that one committed.
 */
export class QueueView<Def extends TaskHead> {
  readonly state: QueueState<Def>;
  private lastTask = 0;
  private lastEvent = 0;
  private inProgress: string[] = [];
  private removed: ReadonlySet<string> = new Set();

  constructor(
    private readonly queue: string,
    /** Whole definitions (instructions too), or what a worker's fold needs. */
    private readonly whole: boolean,
    keepDetails: boolean,
  ) {
    this.state = new QueueState<Def>({ keepDetails, decidedByStore: true });
  }

  /** Reads what was added and recorded since the last refresh; `onEvent` hears each record with its verdict. */
  async refresh(db: Queryable, onEvent?: (event: FoldRecord, counted: ApplyResult) => void): Promise<void> {
    for (;;) {
      const { rows } = await db.query<{ snapshot: string; events: Array<{ seq: number; body: FoldRecord }> }>(
        `SELECT pg_current_snapshot()::text AS snapshot,
           (SELECT coalesce(json_agg(e ORDER BY e.seq), '[]'::json) FROM (
              SELECT seq, body FROM worker_events
              WHERE queue = $1 AND (seq > $2 OR (xid = ANY($3::xid8[]) AND seq <= $2))
              ORDER BY seq LIMIT ${EVENTS_PER_READ}) e) AS events`,
        [this.queue, this.lastEvent, this.inProgress],
      );
      const { snapshot, events } = rows[0]!;
      // Definitions after the events: every task those events name was added before them.
      if (events.some((event) => event.body.type === 'removed') || this.lastTask === 0) await this.readRemoved(db);
      await this.readDefinitions(db);
      for (const { seq, body } of events) {
        const counted = this.state.apply(body);
        onEvent?.(body, counted);
        if (seq > this.lastEvent) this.lastEvent = seq;
      }
      this.inProgress = parseSnapshot(snapshot).inProgress;
      if (events.length < EVENTS_PER_READ) return;
    }
  }

  private async readDefinitions(db: Queryable): Promise<void> {
    const columns = this.whole ? 'seq, definition' : "seq, jsonb_build_object('id', id, 'deps', deps, 'added_at', definition->'added_at') AS definition";
    const { rows } = await db.query<{ seq: string; definition: Def }>(`SELECT ${columns} FROM worker_tasks WHERE queue = $1 AND seq > $2 ORDER BY seq`, [
      this.queue,
      this.lastTask,
    ]);
    if (rows.length > 0) this.lastTask = Number(rows.at(-1)!.seq);
    this.state.addDefinitions({ tasks: rows.map((row) => row.definition), removed: this.removed });
  }

  private async readRemoved(db: Queryable): Promise<void> {
    const { rows } = await db.query<{ id: string }>('SELECT id FROM worker_removed WHERE queue = $1', [this.queue]);
    this.removed = new Set(rows.map((row) => row.id));
  }
}
