import { getEventListeners } from 'node:events';
import { describe, expect, it } from 'vitest';
import { sleep } from '../../src/core/sleep.js';

describe('sleep', () => {
  it('ends when woken or aborted long before its time, and leaves no listener on the signal', async () => {
    const controller = new AbortController();
    const started = performance.now();
    const woken = sleep(60_000, controller.signal);
    woken.wake();
    await woken.done;
    const aborted = sleep(60_000, controller.signal);
    controller.abort();
    await aborted.done;
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('leaves no listener behind when it runs out, however many times it waits', async () => {
    const controller = new AbortController();
    for (let i = 0; i < 20; i += 1) await sleep(1, controller.signal).done;
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });
});
