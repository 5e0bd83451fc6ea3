import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';

/**
 * The layers of src/, each in one line, as src/README.md states them: a module may import only what its
 * layer's rule allows (static and dynamic imports alike). The first rule that matches a module is its own.
 */
const RULES: Array<{ layer: string; modules: RegExp; may: RegExp; rule: string }> = [
  { layer: 'vocabulary', modules: /^(types|errors)\.ts$/, may: /^$/, rule: 'types.ts and errors.ts import nothing of the project' },
  { layer: 'core', modules: /^core\//, may: /^(types|errors)\.ts$|^core\//, rule: 'core/ imports only the vocabulary and core/' },
  {
    layer: 'seams',
    modules: /^(store|executor)\.ts$/,
    may: /^(types|errors|store|executor)\.ts$|^core\//,
    rule: 'the seams (store.ts, executor.ts) import only the vocabulary and core/',
  },
  {
    layer: 'folder store',
    modules: /^folder\//,
    may: /^(types|errors|store|executor)\.ts$|^core\/|^folder\//,
    rule: 'folder/ imports the vocabulary, core/ and the seams: never commands, the loop or an executor',
  },
  {
    layer: 'postgres store',
    modules: /^postgres\//,
    may: /^(types|errors|store|executor)\.ts$|^core\/|^postgres\//,
    rule: 'postgres/ imports the vocabulary, core/ and the seams: never commands, the loop, an executor or the folder store',
  },
  {
    layer: 'http executor',
    modules: /^http\//,
    may: /^(types|errors|executor)\.ts$|^core\/|^http\//,
    rule: 'http/ imports the vocabulary, core/ and the executor seam: never a store or a command',
  },
  {
    layer: 'worker loop',
    modules: /^worker\//,
    may: /^(types|errors|store|executor|config|colors)\.ts$|^core\/|^worker\//,
    rule: 'worker/ (the loop) imports the seams, never a store or an executor itself',
  },
  { layer: 'rendering', modules: /^(render|colors)\.ts$/, may: /^(types|errors|colors)\.ts$|^core\//, rule: 'render.ts imports no command, store or executor' },
  {
    layer: 'settings',
    modules: /^config\.ts$/,
    may: /^(types|errors)\.ts$|^core\/|^http\/settings\.ts$/,
    rule: "config.ts imports the vocabulary, core/ and the executors' settings",
  },
  {
    layer: 'reference API',
    modules: /^serve\//,
    may: /^(types|errors)\.ts$|^core\//,
    rule: 'serve/ (the reference API) imports only the vocabulary and core/',
  },
  {
    layer: 'choice',
    modules: /^backends\.ts$/,
    may: /^(types|errors|store|executor|config)\.ts$|^core\/|^folder\/|^postgres\/|^http\//,
    rule: 'backends.ts chooses the store and the executor',
  },
  { layer: 'commands', modules: /^commands\//, may: /^(?!cli\.ts$)/, rule: 'commands/ compose anything but the CLI' },
  { layer: 'cli', modules: /^cli\.ts$/, may: /.*/, rule: 'cli.ts wires commands' },
];

const SRC = join(import.meta.dirname, '..', '..', 'src');

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

/** The project modules a file imports, as paths relative to src/ (`folder/store.ts`). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/(?:from\s*|import\s*\(\s*)['"](\.{1,2}\/[^'"]+)['"]/g)].map((match) => match[1]!);
  return specs.map((spec) => relative(SRC, normalize(join(dirname(file), spec.replace(/\.js$/, '.ts')))));
}

function violations(): string[] {
  const found: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const module = relative(SRC, file);
    const rule = RULES.find((candidate) => candidate.modules.test(module));
    if (rule === undefined) {
      found.push(`${module}: in no layer; add it to a rule in test/unit/layering.test.ts and src/README.md`);
      continue;
    }
    for (const imported of importsOf(file)) {
      if (imported.startsWith('..')) found.push(`${module} imports ${imported}, outside src/`);
      else if (!rule.may.test(imported)) found.push(`${module} imports ${imported}: ${rule.rule}`);
    }
  }
  return found;
}

describe('layering', () => {
  it('every module of src/ imports only what its layer allows', () => {
    expect(violations()).toEqual([]);
  });

  it('would report an import that breaks a rule', () => {
    const core = RULES.find((rule) => rule.layer === 'core')!;
    expect(core.may.test('folder/store.ts')).toBe(false);
    expect(core.may.test('types.ts')).toBe(true);
    const loop = RULES.find((rule) => rule.layer === 'worker loop')!;
    expect(['folder/lock/taskLock.ts', 'folder/paths.ts', 'folder/executionLog.ts', 'http/executor.ts'].filter((module) => loop.may.test(module))).toEqual([]);
  });
});
