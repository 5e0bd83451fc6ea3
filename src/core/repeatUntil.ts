/** Runs `step`, then again every `everyMs`, until `stopped` aborts (the wait ends at once when it does). */
export async function repeatUntil(stopped: AbortSignal, everyMs: number, step: () => Promise<void> | void): Promise<void> {
  while (!stopped.aborted) {
    await step();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, everyMs);
      stopped.addEventListener(
        'abort',
        () => {
          clearTimeout(timer);
          resolve();
        },
        { once: true },
      );
    });
  }
}
