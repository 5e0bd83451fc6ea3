import { watch, type FSWatcher } from 'node:fs';

/**
 * Wakes an idle worker as soon as the queue folder changes (a task added, an outcome appended), so a
 * dependent task starts within milliseconds instead of a poll interval. The poll stays as a fallback
 * for file systems without change events (network mounts).
 */
export class ChangeWatcher {
  private watcher: FSWatcher | undefined;
  private changed = false;
  private wake: (() => void) | undefined;

  constructor(dir: string) {
    try {
      this.watcher = watch(dir, { persistent: false }, () => {
        this.changed = true;
        this.wake?.();
      });
      this.watcher.on('error', () => this.close());
    } catch {
      this.watcher = undefined;
    }
  }

  markLooked(): void {
    this.changed = false;
  }

  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.changed || signal.aborted || ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }
}
