import { describe, expect, it } from 'vitest';
import { describeEta, estimate, ETA_WINDOW_MS } from '../../src/core/eta.js';

describe('the estimate of what is left', () => {
  const now = Date.parse('2026-01-01T12:00:00Z');

  it('takes the rate of completions in the window, from the first of them to now', () => {
    // 10 completions over the last 5 minutes: 2 a minute; 6 left take 3 minutes.
    const times = Array.from({ length: 10 }, (_, i) => now - 5 * 60_000 + i * 30_000);
    const eta = estimate(times, 6, now);
    expect(eta).toMatchObject({ left: 6 });
    expect(eta!.perMinute).toBeCloseTo(2, 5);
    expect(eta!.ms).toBeCloseTo(3 * 60_000, -2);
    expect(describeEta(eta!)).toBe('about 3m left at 2.0/min');
  });

  it('knows no rate from one completion, from completions older than the window, or when nothing is left', () => {
    expect(estimate([now - 1000], 5, now)).toBeNull();
    expect(estimate([now - ETA_WINDOW_MS - 2000, now - ETA_WINDOW_MS - 1000], 5, now)).toBeNull();
    expect(estimate([now - 2000, now - 1000], 0, now)).toBeNull();
  });
});
