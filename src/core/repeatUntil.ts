/** Runs `step`, then again every `everyMs`, until `stopped` aborts (the wait ends at once when it does). */
export async function repeatUntil(stopped: AbortSignal, everyMs: number, step: () => Promise<void> | void): Promise<void> {
  while (!stopped.aborted) {
    await step();
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        stopped.removeEventListener('abort', done);
        resolve();
      };
      // The listener goes with each wait: one left per round piles up on the signal (Node warns at 11).
      const timer = setTimeout(done, everyMs);
      stopped.addEventListener('abort', done, { once: true });
    });
  }
}
