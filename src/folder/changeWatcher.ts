import { watch, type FSWatcher } from 'node:fs';
import { sleep } from '../core/sleep.js';

/**
 * Wakes an idle worker as soon as the queue folder changes (a task added, an outcome appended), so a
 * dependent task starts within milliseconds instead of a poll interval. The poll stays as a fallback
 * for file systems without change events (network mounts).
 *
 * It watches only while the worker is idle: a busy worker does not want to hear of every other worker's
 * append (two per task each), which would wake its event loop for nothing.
 */
export class ChangeWatcher {
  private watcher: FSWatcher | undefined;
  private changed = false;
  private wake: (() => void) | undefined;
  /** Watching failed once (no change events here): the poll alone wakes the worker. */
  private unsupported = false;

  constructor(private readonly dir: string) {}

  markLooked(): void {
    this.changed = false;
  }

  /** Busy: stop listening until the next wait. */
  pause(): void {
    this.close();
  }

  /**
   * Resolves after `ms`, on a change since markLooked, or when `signal` aborts. When it was not watching
   * yet, it starts and resolves at once: what changed before it watched is seen by looking again.
   */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.watcher === undefined && !this.unsupported) {
      this.start();
      if (this.watcher !== undefined) return Promise.resolve();
    }
    if (this.changed || signal.aborted) return Promise.resolve();
    // Even a wait of 0 goes through a timer: a loop of waits that end at once must still let timers and
    // I/O run (a lock's refresh, a call's deadline), or the process freezes.
    const waiting = sleep(Math.max(1, ms), signal);
    // Waking an ended wait does nothing, so the last one may stay here until the next.
    this.wake = waiting.wake;
    return waiting.done;
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }

  private start(): void {
    try {
      this.watcher = watch(this.dir, { persistent: false }, () => {
        this.changed = true;
        this.wake?.();
      });
      this.watcher.on('error', () => {
        this.unsupported = true;
        this.close();
      });
    } catch {
      this.unsupported = true;
    }
  }
}
