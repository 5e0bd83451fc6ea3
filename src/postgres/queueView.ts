import type pg from 'pg';
import { type ApplyResult, QueueState } from '../core/queueState.js';
import type { FoldRecord, TaskHead } from '../types.js';

/** Events read per query: a reader far behind catches up in pieces. */
const EVENTS_PER_READ = 5000;

export type Queryable = Pick<pg.ClientBase, 'query'>;

/** What a read of the queue returns: a snapshot, then the events and the tasks new in it. */
export interface NewRead<Def> {
  snapshot: string;
  events: Array<{ seq: number; body: FoldRecord }>;
  tasks: Array<{ seq: number; definition: Def }>;
}

/**
 * A PostgreSQL snapshot, as far as it tells which transactions may still commit: those it lists in
 * progress, and every one from xmax on (a transaction that took its id after the latest one completed is
 * not listed, but may be running).
 */
interface Snapshot {
  inProgress: string[];
  xmax: string;
}

function parseSnapshot(text: string): Snapshot {
  const [, xmax = '0', list = ''] = text.split(':');
  return { inProgress: list === '' ? [] : list.split(','), xmax };
}

/**
 * The queue as a fold of its history table, kept current by reading only what is new. The database decides
 * every race (a claim is one statement), so the fold takes each record as decided (`decidedByStore`).
 *
 * Events are numbered by a sequence, but transactions commit in their own order: one that drew a smaller
 * number may commit after a larger one was read. So each read also notes the transactions that may still
 * commit (its snapshot's list of those in progress, and any from its xmax on), and the next read takes,
 * besides what is past the last number read, whatever those transactions wrote since. A transaction takes
 * its id (with its first change of a row) before its record draws a number. Events of one task are always
 * in order: a change of a task waits for the row lock of the change before it, and draws its number after
 * that one committed.
 */
export class QueueView<Def extends TaskHead> {
  readonly state: QueueState<Def>;
  private lastTask = 0;
  private lastEvent = 0;
  /** The transactions that were still open at the last read: what they write may come in below lastEvent. */
  private stillOpen: Snapshot = { inProgress: [], xmax: '0' };
  private removed: ReadonlySet<string> = new Set();
  private removedRead = false;
  /** The read under way, if any: reads run one at a time. */
  private reading: Promise<void> | null = null;
  private endPiggyback: (() => void) | undefined;
  private lastReadAt = 0;

  constructor(
    private readonly queue: string,
    /** Whole definitions (instructions too), or what a worker's fold needs. */
    private readonly whole: boolean,
    keepDetails: boolean,
  ) {
    this.state = new QueueState<Def>({ keepDetails, decidedByStore: true });
  }

  /** When the fold last read what was new. */
  get readAt(): number {
    return this.lastReadAt;
  }

  /**
   * Reads what was added and recorded since the last read; `onEvent` hears each record with its verdict.
   * Reads run one at a time (see `piggyback`): two at once would both fold what is new, and a record folded
   * twice after a later one of its task (a claim after its own outcome) would count again.
   */
  async refresh(db: Queryable, onEvent?: (event: FoldRecord, counted: ApplyResult) => void): Promise<void> {
    for (;;) {
      while (this.reading !== null) await this.reading;
      let done!: () => void;
      this.reading = new Promise((resolve) => (done = resolve));
      try {
        if (!this.removedRead) await this.readRemoved(db);
        const read = this.readQuery(1);
        const { rows } = await db.query<NewRead<Def>>({
          name: `worker-refresh-${this.whole ? 'whole' : 'heads'}`,
          text: `SELECT ${read.columns}`,
          values: read.values,
        });
        if (!(await this.apply(db, rows[0]!, onEvent))) return;
      } finally {
        this.reading = null;
        done();
      }
    }
  }

  /**
   * The read of what is new, as columns to add to another statement (a claim, an outcome), so that one
   * round trip does both; null while another read is under way. `first`: the number of its first parameter.
   * The statement's result goes to `applyPiggyback`, or `abandonPiggyback` if it failed.
   */
  piggyback(first: number): { columns: string; values: unknown[] } | null {
    if (this.reading !== null) return null;
    this.reading = new Promise((resolve) => (this.endPiggyback = resolve));
    return this.readQuery(first);
  }

  async applyPiggyback(db: Queryable, row: NewRead<Def>): Promise<void> {
    try {
      await this.apply(db, row);
    } finally {
      this.abandonPiggyback();
    }
  }

  abandonPiggyback(): void {
    this.reading = null;
    this.endPiggyback?.();
    this.endPiggyback = undefined;
  }

  /**
   * The snapshot, the events past the last read (and those of transactions still open then), and the tasks
   * added since: in one statement, so one snapshot, in which every task an event names was added before it.
   */
  private readQuery(first: number): { columns: string; values: unknown[] } {
    const $ = (n: number) => `$${first + n}`;
    const definition = this.whole ? 'definition' : "jsonb_build_object('id', id, 'deps', deps, 'added_at', definition->'added_at')";
    return {
      columns: `pg_current_snapshot()::text AS snapshot,
        (SELECT coalesce(json_agg(e ORDER BY e.seq), '[]'::json) FROM (
           -- Each part a range of one index, however stale the planner's statistics are (a new queue is in
           -- none of them, and a queue grows fast): never a scan of the queue's whole history. \`queue || ''\`
           -- is a condition no index serves, so that the parts by transaction take the index of xid.
           (SELECT seq, body FROM worker_events WHERE queue = ${$(0)} AND seq > ${$(1)} ORDER BY queue, seq LIMIT ${EVENTS_PER_READ})
           UNION ALL
           (SELECT seq, body FROM worker_events WHERE xid = ANY(${$(2)}::xid8[]) AND queue || '' = ${$(0)} ORDER BY xid LIMIT ${EVENTS_PER_READ})
           UNION ALL
           (SELECT seq, body FROM worker_events WHERE xid >= ${$(3)}::xid8 AND queue || '' = ${$(0)} ORDER BY xid LIMIT ${EVENTS_PER_READ})
           ORDER BY seq LIMIT ${EVENTS_PER_READ}) e) AS events,
        (SELECT coalesce(json_agg(d ORDER BY d.seq), '[]'::json) FROM (
           SELECT seq, ${definition} AS definition FROM worker_tasks WHERE seq + 0 > ${$(4)} AND queue || '' = ${$(0)} ORDER BY seq + 0) d) AS tasks`,
      values: [this.queue, this.lastEvent, this.stillOpen.inProgress, this.stillOpen.xmax, this.lastTask],
    };
  }

  /** Folds a read; true when it was cut short (EVENTS_PER_READ) and there is more to read. */
  private async apply(db: Queryable, read: NewRead<Def>, onEvent?: (event: FoldRecord, counted: ApplyResult) => void): Promise<boolean> {
    const { snapshot, events, tasks } = read;
    if (events.some((event) => event.body.type === 'removed')) await this.readRemoved(db);
    if (tasks.length > 0) this.lastTask = tasks.at(-1)!.seq;
    this.state.addDefinitions({ tasks: tasks.map((task) => task.definition), removed: this.removed });
    let previous = 0;
    for (const { seq, body } of events) {
      // Late records come in by their transactions, and may also be past the last number read: once each.
      if (seq === previous) continue;
      previous = seq;
      const counted = this.state.apply(body);
      onEvent?.(body, counted);
      if (seq > this.lastEvent) this.lastEvent = seq;
    }
    this.stillOpen = parseSnapshot(snapshot);
    const more = events.length === EVENTS_PER_READ;
    if (!more) this.lastReadAt = Date.now();
    return more;
  }

  private async readRemoved(db: Queryable): Promise<void> {
    const { rows } = await db.query<{ id: string }>('SELECT id FROM worker_removed WHERE queue = $1', [this.queue]);
    this.removed = new Set(rows.map((row) => row.id));
    this.removedRead = true;
  }
}
