import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DamagedFileError } from '../../src/errors.js';
import { formatQueueFile, keepWholeDefinitions, parseWhole, checkDefinitions, readAncestry, readQueue, scanIds } from '../../src/folder/queueFormat.js';
import { QueueIndex } from '../../src/folder/queueIndex.js';
import type { QueueContents, TaskDefinition, TaskHead } from '../../src/types.js';

/**
 * A property of queue.json's parsers, over generated files: the line parser (with its fall-back to a whole
 * parse), the whole parser and the worker's index all read a file alike, or all refuse it naming the file;
 * the id scan and the ancestry scan, where they read a file at all, read what the others read.
 */

const dir = mkdtempSync(join(tmpdir(), 'queue-format-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A small deterministic generator (mulberry32): every run tries the same files, and a failure names its seed. */
function generator(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (max: number) => Math.floor(next() * max);
  const pick = <T>(items: readonly T[]): T => items[int(items.length)]!;
  return { next, int, pick };
}

type Gen = ReturnType<typeof generator>;

const TEXT_PIECES = [
  'Summarize',
  ' chapter',
  ' "quoted"',
  '\\back\\slash',
  '\nnew line',
  '\ttab',
  ' é ü ß',
  ' 中文',
  ' 🙂',
  ' ,\n',
  ' {"id":"x"}',
  ' ]}',
  '\u2028',
  ' \u0000',
];

function contentsOf(gen: Gen): QueueContents {
  const count = gen.int(12);
  const tasks: TaskDefinition[] = [];
  for (let i = 0; i < count; i += 1) {
    const id = `${gen.pick(['t', 'fetch', 'a.b', 'x_y', 'Z-9'])}${i}`;
    const deps = tasks.filter(() => gen.next() < 0.3).map((task) => task.id);
    const instruction = Array.from({ length: 1 + gen.int(5) }, () => gen.pick(TEXT_PIECES)).join('');
    tasks.push({
      id,
      instruction,
      deps,
      min_budget: gen.int(5000),
      max_budget: 5000 + gen.int(5000),
      intensity: gen.pick(['low', 'medium', 'high'] as const),
      added_at: new Date(1_700_000_000_000 + gen.int(1e9)).toISOString(),
    });
  }
  const removed = new Set(Array.from({ length: gen.int(3) }, (_, i) => `gone${i}`));
  return { tasks, removed };
}

/** The file as this tool writes it, or damaged or reformatted one of the ways people and crashes do. */
function fileOf(gen: Gen, contents: QueueContents): { bytes: Buffer; how: string } {
  const bytes = formatQueueFile(contents);
  const how = gen.pick([
    'as written',
    'as written',
    'truncated',
    'a byte changed',
    'a line doubled',
    'lines swapped',
    'pretty-printed',
    'one line',
    'no final newline',
    'garbage appended',
    'CRLF',
  ]);
  const text = bytes.toString('utf8');
  const lines = text.split('\n');
  switch (how) {
    case 'truncated':
      return { bytes: bytes.subarray(0, gen.int(bytes.length)), how };
    case 'a byte changed': {
      const copy = Buffer.from(bytes);
      copy[gen.int(copy.length)] = gen.pick([0x22, 0x2c, 0x7b, 0x7d, 0x0a, 0x41, 0x5d]);
      return { bytes: copy, how };
    }
    case 'a line doubled': {
      const at = 1 + gen.int(Math.max(1, lines.length - 2));
      lines.splice(at, 0, lines[at]!);
      return { bytes: Buffer.from(lines.join('\n')), how };
    }
    case 'lines swapped': {
      if (lines.length < 5) return { bytes, how: 'as written' };
      const at = 1 + gen.int(lines.length - 4);
      [lines[at], lines[at + 1]] = [lines[at + 1]!, lines[at]!];
      return { bytes: Buffer.from(lines.join('\n')), how };
    }
    case 'pretty-printed':
      return { bytes: Buffer.from(JSON.stringify(JSON.parse(text), null, 2)), how };
    case 'one line':
      return { bytes: Buffer.from(JSON.stringify(JSON.parse(text))), how };
    case 'no final newline':
      return { bytes: bytes.subarray(0, -1), how };
    case 'garbage appended':
      return { bytes: Buffer.concat([bytes, Buffer.from(gen.pick(['x', '{}', '\n\n', ',']))]), how };
    case 'CRLF':
      return { bytes: Buffer.from(text.replace(/\n/g, '\r\n')), how };
    default:
      return { bytes, how };
  }
}

/** What a parser made of a file: the tasks' definitions (or heads) and removed ids, or the refusal. */
type Reading = { tasks: unknown[]; removed: string[] } | { refused: string };

function reading(read: () => QueueContents<TaskHead>, file: string, keep: (task: never) => unknown = (task) => task): Reading {
  try {
    const contents = read();
    return { tasks: contents.tasks.map((task) => keep(task as never)), removed: [...contents.removed].sort() };
  } catch (error) {
    // A refusal names the file; anything else is a parser's bug.
    expect(error).toBeInstanceOf(DamagedFileError);
    expect((error as DamagedFileError).file).toBe(file);
    return { refused: (error as Error).message };
  }
}

const headOf = (task: TaskDefinition) => ({ id: task.id, deps: task.deps, added_at: task.added_at });

describe('queue.json parsers', () => {
  it('agree on every generated file, or all refuse it', () => {
    const seen = new Map<string, number>();
    for (let seed = 1; seed <= 400; seed += 1) {
      const gen = generator(seed);
      const { bytes, how } = fileOf(gen, contentsOf(gen));
      const file = join(dir, `queue-${seed}.json`);
      writeFileSync(file, bytes);
      const context = `seed ${seed} (${how})`;
      const byLine = reading(() => readQueue(file, keepWholeDefinitions()), file);
      const whole = reading(() => checkDefinitions(file, parseWhole(file, bytes.toString('utf8'))), file);
      const index = reading(
        () => new QueueIndex(file).read(() => false).contents,
        file,
        ({ offset: _offset, length: _length, ...head }: { offset: number; length: number }) => head,
      );
      seen.set(`${how}: ${'refused' in byLine ? 'refused' : 'read'}`, (seen.get(`${how}: ${'refused' in byLine ? 'refused' : 'read'}`) ?? 0) + 1);
      expect('refused' in whole, context).toBe('refused' in byLine);
      expect('refused' in index, context).toBe('refused' in byLine);
      if ('refused' in byLine || 'refused' in whole || 'refused' in index) continue;
      expect(byLine, context).toEqual(whole);
      expect(index, context).toEqual({ tasks: (whole.tasks as TaskDefinition[]).map(headOf), removed: whole.removed });
      // The scans read only files in the layout this tool writes, and then what the parsers read.
      const ids = scanIds(bytes);
      if (how === 'as written') expect(ids, context).toBeDefined();
      if (ids !== undefined)
        expect({ ids: ids.ids, removed: [...ids.removed].sort() }, context).toEqual({
          ids: (whole.tasks as TaskDefinition[]).map((task) => task.id),
          removed: whole.removed,
        });
      const ancestry = readAncestry(
        file,
        (whole.tasks as TaskDefinition[]).map((task) => task.id),
      );
      if (how === 'as written') expect(ancestry, context).toBeDefined();
      if (ancestry !== undefined) expect(ancestry, context).toEqual((whole.tasks as TaskDefinition[]).map(headOf));
    }
    // The generator reaches both outcomes of the damaging cases, and reads every intact layout.
    for (const how of ['as written', 'pretty-printed', 'one line', 'no final newline', 'CRLF']) expect(seen.get(`${how}: read`), how).toBeGreaterThan(0);
    for (const how of ['truncated', 'a byte changed', 'a line doubled', 'garbage appended']) expect(seen.get(`${how}: refused`), how).toBeGreaterThan(0);
  });
});
