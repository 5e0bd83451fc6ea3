import { QueueState, type TaskRecord } from '../../src/core/queueState.js';
import { idempotencyKey } from '../../src/core/newTasks.js';
import type { ChangeNotifier, Claimant, HeldClaim, NewOutcome, Presence, Recorded, WorkerStore } from '../../src/store.js';
import type { ClaimEvent, Heartbeat, OutcomeEvent, TaskDefinition, TaskHead } from '../../src/types.js';

/** Virtual time: `wait` moves it on at once, so a loop that idles for minutes runs in microseconds. */
export class FakeClock {
  constructor(public ms = Date.parse('2026-01-01T00:00:00.000Z')) {}
  readonly now = () => this.ms;
  /** Total virtual time spent waiting, by the loop's idle waits. */
  waited = 0;
  async wait(ms: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    this.ms += ms;
    this.waited += ms;
    // Lets other promises (a signal sent from a test) run between waits.
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * A WorkerStore held in memory, over the same fold (QueueState) the folder store uses: for tests of the
 * worker loop's policy alone. It takes no locks and writes no files; claims and outcomes are events
 * applied to the fold, so readiness, fencing and the API's weather behave as in the real store.
 */
export class MemoryStore implements WorkerStore {
  readonly state = new QueueState<TaskHead>({ keepDetails: true });
  lost: Error | undefined;
  /** Every event applied, in order. */
  readonly events: Array<ClaimEvent | OutcomeEvent> = [];
  readonly changes: ChangeNotifier;
  looks = 0;
  tidies = 0;
  private readonly definitions = new Map<string, TaskDefinition>();
  private tokens = 0;

  constructor(
    tasks: Array<Partial<TaskDefinition> & { id: string }>,
    private readonly clock: FakeClock,
  ) {
    const defs = tasks.map((task) => ({
      instruction: `do ${task.id}`,
      deps: [],
      min_budget: 1000,
      max_budget: 4000,
      intensity: 'medium' as const,
      added_at: new Date(clock.ms).toISOString(),
      ...task,
    }));
    for (const def of defs) this.definitions.set(def.id, def);
    this.state.addDefinitions({ tasks: defs, removed: new Set() });
    this.changes = { markLooked: () => undefined, pause: () => undefined, wait: (ms, signal) => clock.wait(ms, signal) };
  }

  describe(): string {
    return 'memory';
  }

  async look(): Promise<void> {
    this.looks += 1;
    if (this.lost) throw this.lost;
  }

  async claimStuck(): Promise<HeldClaim | null> {
    return null;
  }

  async claimReady(claimant: Claimant): Promise<HeldClaim | null> {
    const [task] = this.state.readyTasks(this.clock.now(), 1);
    return task === undefined ? null : this.claim(task, claimant);
  }

  private claim(task: TaskRecord<TaskHead>, claimant: Claimant): HeldClaim | null {
    this.tokens += 1;
    const event: ClaimEvent = {
      type: 'claim',
      task: task.def.id,
      token: `t${this.tokens}`,
      prev: null,
      attempt: task.attempts + 1,
      worker: claimant.workerId,
      pid: claimant.pid,
      host: claimant.host,
      at: new Date(this.clock.now()).toISOString(),
    };
    if (claimant.rate) event.rate = claimant.rate;
    this.events.push(event);
    if (this.state.apply(event) !== 'accepted') return null;
    return {
      taskId: task.def.id,
      definition: this.definitions.get(task.def.id)!,
      token: event.token,
      attempt: event.attempt,
      claimedAt: this.clock.now(),
      idempotencyKey: idempotencyKey('memory', task.def.id, task.generation),
      waits: task.waits,
      waitingSince: task.waitingSince,
      takeoverReason: null,
      abandon: new AbortController(),
    };
  }

  claimingElsewhere(): readonly TaskRecord<TaskHead>[] {
    return [];
  }

  async record(claim: HeldClaim, outcome: NewOutcome): Promise<Recorded> {
    const current = this.state.get(claim.taskId)?.claim;
    if (current?.token !== claim.token) return { recorded: false, lostTo: current?.worker ?? null };
    const event: OutcomeEvent = {
      type: 'outcome',
      task: claim.taskId,
      token: claim.token,
      attempt: claim.attempt,
      worker: current.worker,
      outcome: outcome.outcome,
      called: outcome.called,
      started_at: new Date(outcome.startedAt).toISOString(),
      ended_at: new Date(outcome.endedAt).toISOString(),
      duration_ms: Math.max(0, outcome.endedAt - outcome.startedAt),
    };
    if (outcome.charged === false) event.charged = false;
    if (outcome.error) event.error = outcome.error;
    if (outcome.detail?.http_status !== undefined) event.http_status = outcome.detail.http_status;
    if (outcome.retryAt !== undefined) event.retry_at = new Date(outcome.retryAt).toISOString();
    if (outcome.pauseUntil !== undefined) event.pause_until = new Date(outcome.pauseUntil).toISOString();
    if (outcome.result !== undefined) event.result = outcome.result.value;
    this.events.push(event);
    this.state.apply(event);
    return { recorded: true };
  }

  /** The outcomes recorded, as `task:outcome`. */
  outcomes(): string[] {
    return this.events.filter((event): event is OutcomeEvent => event.type === 'outcome').map((event) => `${event.task}:${event.outcome}`);
  }

  abandon(): void {}

  async tidy(): Promise<void> {
    this.tidies += 1;
  }

  async settle(): Promise<void> {}

  async enter(heartbeat: Heartbeat): Promise<Presence> {
    return { heartbeat, leave: async () => undefined };
  }

  close(): void {}
}
