import { describe, expect, it } from 'vitest';
import { idList } from '../../src/render.js';

describe('id lists in one-line messages', () => {
  it('shows up to ten ids, then says how many more and where to see them', () => {
    expect(idList(['a', 'b'], 'see status')).toBe('a, b');
    const many = Array.from({ length: 100_001 }, (_, i) => `t${i}`);
    expect(idList(many, 'see status')).toBe('t0, t1, t2, t3, t4, t5, t6, t7, t8, t9 and 99,991 more (see status)');
  });
});
