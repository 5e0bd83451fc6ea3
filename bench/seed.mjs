// The queue every drain of the benchmarks starts from: `count` independent tasks, added by the CLI under
// test with one `worker add --file`.
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Seeds the queue in `dir` with `bin` (a bin/worker.cjs); returns how long the add took, in ms. */
export function seedQueue(bin, dir, count) {
  const file = join(dir, 'tasks.jsonl');
  writeFileSync(file, Array.from({ length: count }, (_, i) => JSON.stringify({ id: `t${i}`, instruction: `Summarize chapter ${i}`, deps: [] })).join('\n'));
  const started = performance.now();
  execFileSync(process.execPath, [bin, '--dir', dir, 'add', '--file', file], { stdio: ['ignore', 'ignore', 'inherit'] });
  return performance.now() - started;
}
