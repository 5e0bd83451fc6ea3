import type { QueueState } from '../core/queueState.js';
import type { Palette } from '../colors.js';
import { formatDuration } from '../core/duration.js';

const REDRAW_MS = 250;
const CLEAR_LINE = '\r\u001b[2K';

/**
 * A progress line kept at the bottom of a terminal, under the log: each log line clears it, prints, and
 * draws it again. Counting blocked tasks is a pass over the queue, so it is drawn at most 4 times a second.
 */
export class ProgressLine {
  private timer: NodeJS.Timeout | undefined;
  private line = '';
  private completedAtStart: number | undefined;

  constructor(
    private readonly write: (text: string) => void,
    private readonly state: () => QueueState,
    private readonly colors: Palette,
    private readonly now: () => number,
    /** This process's attempts in flight and its slots, when it has more than one. */
    private readonly slots?: () => { inFlight: number; of: number },
    private readonly started = now(),
  ) {}

  start(): void {
    this.redraw();
    this.timer = setInterval(() => this.redraw(), REDRAW_MS);
    this.timer.unref();
  }

  /** Writes one log line above the progress line. */
  log(text: string): void {
    this.write(`${CLEAR_LINE}${text}${this.line}`);
  }

  stop(): void {
    clearInterval(this.timer);
    this.write(CLEAR_LINE);
    this.line = '';
  }

  private redraw(): void {
    const state = this.state();
    const blocked = state.blockedTasks().size;
    let completed = 0;
    let failed = 0;
    for (const task of state.tasks()) {
      if (task.state === 'completed') completed += 1;
      else if (task.state === 'failed') failed += 1;
    }
    this.completedAtStart ??= completed;
    const elapsed = this.now() - this.started;
    const rate = elapsed > 0 ? ((completed - this.completedAtStart) * 1000) / elapsed : 0;
    // Pending and running, not blocked: what may still complete, at this run's rate.
    const left = state.size - completed - failed - blocked;
    const c = this.colors;
    this.line = [
      c.state('completed', `${completed}/${state.size} completed`),
      c.state('running', `${state.running} running${this.slots && this.slots().of > 1 ? ` (${this.slots().inFlight}/${this.slots().of} here)` : ''}`),
      c.state('failed', `${failed} failed`),
      c.state('blocked', `${blocked} blocked`),
      `${rate.toFixed(1)}/s`,
      formatDuration(Math.round(elapsed / 100) * 100),
      ...(rate > 0 && left > 0 ? [`ETA ${formatDuration(Math.max(1000, Math.round(left / rate) * 1000))}`] : []),
    ].join(c.dim(' · '));
    this.write(`${CLEAR_LINE}${this.line}`);
  }
}
