import type { TaskState } from './types.js';

/** ANSI colours, or none: only on a terminal, and never with NO_COLOR (https://no-color.org). */
export interface Palette {
  state(state: TaskState, text?: string): string;
  dim(text: string): string;
  bold(text: string): string;
}

const CODES: Record<TaskState, number> = { pending: 0, running: 36, completed: 32, failed: 31, blocked: 33 };

export function palette(enabled: boolean): Palette {
  const wrap = (code: number, text: string) => (enabled && code !== 0 ? `\u001b[${code}m${text}\u001b[0m` : text);
  return {
    state: (state, text = state) => wrap(CODES[state], text),
    dim: (text) => wrap(2, text),
    bold: (text) => wrap(1, text),
  };
}
