/** A wait that ends after `ms`, when `signal` aborts, or when `wake` is called, whichever comes first. */
export interface Sleep {
  done: Promise<void>;
  wake(): void;
}

/**
 * Waits `ms`, ending early when `signal` aborts or `wake()` is called. Nothing of it is left behind: the
 * timer and the abort listener go with each wait (one listener left per wait piles up on a long-lived
 * signal, and Node warns from the eleventh).
 */
export function sleep(ms: number, signal: AbortSignal): Sleep {
  let wake!: () => void;
  const done = new Promise<void>((resolve) => {
    wake = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', wake);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    signal.addEventListener('abort', wake, { once: true });
  });
  return { done, wake };
}

/** Runs `step`, then again every `everyMs`, until `stopped` aborts (the wait ends at once when it does). */
export async function repeatUntil(stopped: AbortSignal, everyMs: number, step: () => Promise<void> | void): Promise<void> {
  while (!stopped.aborted) {
    await step();
    await sleep(everyMs, stopped).done;
  }
}
