import { readFile, writeFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeFolder, folderOnly, onDatabase, runCli, withTempDir } from '../helpers/cli.js';
import { queueSnapshot } from '../helpers/queue.js';

const queueFile = (dir: string) => join(dir, 'queue', 'queue.json');

async function statusJson(dir: string): Promise<Array<Record<string, unknown>>> {
  const result = await runCli(['--dir', dir, 'status', '--json']);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as Array<Record<string, unknown>>;
}

describe('worker add', () => {
  it('adds tasks with dependencies written "a,b" or "a, b", with budgets', async () => {
    await withTempDir(async (dir) => {
      expect((await runCli(['--dir', dir, 'add', 'a', 'Do a'])).stdout).toBe('added a\n');
      expect((await runCli(['--dir', dir, 'add', 'b', 'Do b'])).code).toBe(0);
      expect((await runCli(['--dir', dir, 'add', 'c', 'Do c', 'a, b', '--min-budget', '5', '--max-budget', '9', '--intensity', 'high'])).code).toBe(0);
      expect((await runCli(['--dir', dir, 'add', 'd', 'Do d', 'a,b,a,'])).code).toBe(0);
      const tasks = await statusJson(dir);
      expect(tasks.map((task) => [task.id, task.deps])).toEqual([
        ['a', []],
        ['b', []],
        ['c', ['a', 'b']],
        ['d', ['a', 'b']],
      ]);
      expect(tasks[2]).toMatchObject({ min_budget: 5, max_budget: 9, intensity: 'high', state: 'pending', attempts: 0 });
      expect(tasks[0]).toMatchObject({ min_budget: 1000, max_budget: 4000, intensity: 'medium' });
    });
  });

  it('takes budget defaults from the environment', async () => {
    await withTempDir(async (dir) => {
      const result = await runCli(['--dir', dir, 'add', 'a', 'Do a'], { env: { WORKER_MIN_BUDGET: '7', WORKER_MAX_BUDGET: '70', WORKER_INTENSITY: 'low' } });
      expect(result.code).toBe(0);
      expect((await statusJson(dir))[0]).toMatchObject({ min_budget: 7, max_budget: 70, intensity: 'low' });
    });
  });

  folderOnly('works from any current folder given --dir or WORKER_DIR, creating the folders', async () => {
    await withTempDir(async (dir) => {
      const root = join(dir, 'nested', 'queue-root');
      expect((await runCli(['add', 'a', 'Do a'], { env: { WORKER_DIR: root }, cwd: '/' })).code).toBe(0);
      expect((await stat(join(root, 'locks'))).isDirectory()).toBe(true);
      const result = await runCli(['--dir', root, 'status'], { cwd: '/' });
      expect(result.stdout).toContain('1 task: 1 pending');
    });
  });

  const refusals: Array<[string, string[], RegExp]> = [
    ['an id with a slash', ['../escape', 'x'], /invalid task id "..\/escape"/],
    ['an id with a space', ['a b', 'x'], /invalid task id "a b"/],
    ['an id that starts with a dot', ['.hidden', 'x'], /invalid task id/],
    ['an id that is too long', ['x'.repeat(101), 'x'], /invalid task id/],
    ['an id with a control character', ['a\u0007', 'x'], /invalid task id "a\\u0007"/],
    ['a duplicate id', ['base', 'again'], /task "base" already exists/],
    ['an id differing only in case', ['BASE', 'x'], /differs from "base" only in case/],
    ['an empty instruction', ['e', ''], /empty instruction/],
    ['an unknown dependency', ['f', 'x', 'base,nope'], /depends on "nope", which does not exist/],
    ['a self-dependency', ['g', 'x', 'base,g'], /task "g" depends on itself/],
    ['min above max budget', ['h', 'x', '--min-budget', '10', '--max-budget', '5'], /above --max-budget/],
    ['a budget that is not a number', ['h', 'x', '--min-budget', 'lots'], /expected --min-budget .* whole number/],
    ['an unknown intensity', ['h', 'x', '--intensity', 'extreme'], /--intensity .* one of low, medium, high/],
  ];

  it.each(refusals)('refuses %s with one line on stderr, a non-zero exit, and the queue unchanged', async (_name, args, message) => {
    await withTempDir(async (dir) => {
      expect((await runCli(['--dir', dir, 'add', 'base', 'Base task'])).code).toBe(0);
      const before = await queueSnapshot(dir);
      const result = await runCli(['--dir', dir, 'add', ...args]);
      expect(result.code).not.toBe(0);
      expect(result.stderr).toMatch(message);
      expect(result.stderr.trimEnd().split('\n')).toHaveLength(1);
      expect(result.stdout).toBe('');
      expect(await queueSnapshot(dir)).toEqual(before);
    });
  });

  it('takes any text as an instruction, whitespace alone included', async () => {
    await withTempDir(async (dir) => {
      expect((await runCli(['--dir', dir, 'add', 'spaces', '   '])).code).toBe(0);
      expect((await runCli(['--dir', dir, 'show', 'spaces', '--json'])).stdout).toMatch(/"instruction": " {3}"/);
    });
  });

  it('loses nothing when 20 `worker add` processes run at once', async () => {
    await withTempDir(async (dir) => {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => runCli(['--dir', dir, 'add', `t${i}`, `task ${i}`])));
      for (const result of results) expect(result.code, result.stderr).toBe(0);
      const ids = (await statusJson(dir)).map((task) => task.id).sort();
      expect(ids).toEqual(Array.from({ length: 20 }, (_, i) => `t${i}`).sort());
      if (!onDatabase) {
        const leftovers = (await readdir(join(dir, 'queue'))).filter((name) => /^queue\.json\.\d+$/.test(name));
        expect(leftovers).toEqual([]);
      }
    });
  });
});

describe('worker add: the instruction from standard input or a file', () => {
  it('reads it from standard input with "-", and from --instruction-file, as written but for one final line break', async () => {
    await withTempDir(async (dir) => {
      const long = `${'A very long prompt, line after line.\n'.repeat(6000)}Last line`;
      const fromStdin = await runCli(['--dir', dir, 'add', 'piped', '-'], { input: `${long}\n` });
      expect(fromStdin.code, fromStdin.stderr).toBe(0);
      const file = join(dir, 'prompt.md');
      await writeFile(file, '# Title\n\n"quotes" and $HOME stay as they are\n');
      const fromFile = await runCli(['--dir', dir, 'add', 'filed', '--instruction-file', file, 'piped']);
      expect(fromFile.code, fromFile.stderr).toBe(0);
      const tasks = await statusJson(dir);
      expect(tasks[0]).toMatchObject({ id: 'piped', instruction: long, deps: [] });
      expect(tasks[1]).toMatchObject({ id: 'filed', instruction: '# Title\n\n"quotes" and $HOME stay as they are', deps: ['piped'] });
    });
  });

  it('refuses an instruction given twice, a missing file and an empty one, adding nothing', async () => {
    await withTempDir(async (dir) => {
      await runCli(['--dir', dir, 'add', 'existing', 'E']);
      const file = join(dir, 'prompt.md');
      await writeFile(file, 'text');
      const twice = await runCli(['--dir', dir, 'add', 'x', 'inline', 'existing', '--instruction-file', file]);
      expect(twice.code).toBe(2);
      expect(twice.stderr).toMatch(/given both as an argument and by --instruction-file/);
      const missing = await runCli(['--dir', dir, 'add', 'x', '--instruction-file', join(dir, 'nope.md')]);
      expect(missing.code).toBe(5);
      expect(missing.stderr).toMatch(/nope\.md/);
      const empty = await runCli(['--dir', dir, 'add', 'x', '-'], { input: '' });
      expect(empty.code).toBe(3);
      expect(empty.stderr).toMatch(/empty instruction/);
      expect((await statusJson(dir)).map((task) => task.id)).toEqual(['existing']);
    });
  });
});

describe('worker --version', () => {
  it('prints the version of package.json', async () => {
    const { version } = JSON.parse(await readFile(join(import.meta.dirname, '../../package.json'), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      const result = await runCli([flag]);
      expect(result.code).toBe(0);
      expect(result.stdout).toBe(`${version}\n`);
    }
  });
});

describe('worker add --file', () => {
  it('adds every line, with dependencies on earlier lines, from a file or standard input', async () => {
    await withTempDir(async (dir) => {
      const file = join(dir, 'tasks.jsonl');
      await writeFile(file, ['{"id":"a","instruction":"A"}', '', '{"id":"b","instruction":"B","deps":["a"],"max_budget":9000}'].join('\n'));
      expect((await runCli(['--dir', dir, 'add', '--file', file])).stdout).toBe('added 2 tasks\n');
      const fromStdin = await runCli(['--dir', dir, 'add', '--file', '-'], { input: '{"id":"c","instruction":"C","deps":["a","b"],"intensity":"low"}\n' });
      expect(fromStdin.code, fromStdin.stderr).toBe(0);
      const tasks = await statusJson(dir);
      expect(tasks.map((task) => task.id)).toEqual(['a', 'b', 'c']);
      expect(tasks[1]).toMatchObject({ deps: ['a'], max_budget: 9000 });
      expect(tasks[2]).toMatchObject({ deps: ['a', 'b'], intensity: 'low' });
    });
  });

  it('accepts dependencies on lines further down, and keeps dependencies before their dependents', async () => {
    await withTempDir(async (dir) => {
      const file = join(dir, 'tasks.jsonl');
      const lines = [
        '{"id":"publish","instruction":"P","deps":["review","index"]}',
        '{"id":"review","instruction":"R","deps":["outline"]}',
        '{"id":"outline","instruction":"O"}',
        '{"id":"index","instruction":"I","deps":["outline"]}',
      ];
      await writeFile(file, lines.join('\n'));
      const result = await runCli(['--dir', dir, 'add', '--file', file]);
      expect(result.code, result.stderr).toBe(0);
      expect((await statusJson(dir)).map((task) => task.id)).toEqual(['outline', 'review', 'index', 'publish']);
      const run = await runCli(['--dir', dir, 'graph', '--format', 'dot']);
      expect(run.stdout).toContain('"review" -> "publish"');
    });
  });

  it('adds nothing from an empty file, and says so', async () => {
    await withTempDir(async (dir) => {
      await runCli(['--dir', dir, 'add', 'existing', 'E']);
      const result = await runCli(['--dir', dir, 'add', '--file', '-'], { input: '\n\n' });
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toBe('added 0 tasks\n');
      expect((await statusJson(dir)).map((task) => task.id)).toEqual(['existing']);
    });
  });

  it.each([
    ['not JSON', '{"id":"z","instruction":', /line 3: not valid JSON/],
    ['an unknown field', '{"id":"z","instruction":"Z","dependencies":["a"]}', /line 3: unknown field "dependencies"/],
    ['a dependency that is nowhere', '{"id":"z","instruction":"Z","deps":["nowhere"]}', /line 3: task "z" depends on "nowhere", which does not exist/],
    [
      'a cycle through a later line',
      '{"id":"z","instruction":"Z","deps":["later"]}\n{"id":"later","instruction":"L","deps":["z"]}',
      /line 4: the dependencies form a cycle: z → later → z/,
    ],
    ['a duplicate of an earlier line', '{"id":"a","instruction":"again"}', /line 3: task "a" already exists/],
  ])('adds nothing when a line holds %s, naming the line', async (_name, badLine, message) => {
    await withTempDir(async (dir) => {
      await runCli(['--dir', dir, 'add', 'existing', 'E']);
      const before = await queueSnapshot(dir);
      const file = join(dir, 'tasks.jsonl');
      await writeFile(file, ['{"id":"a","instruction":"A"}', '{"id":"b","instruction":"B"}', badLine, '{"id":"later","instruction":"L"}'].join('\n'));
      const result = await runCli(['--dir', dir, 'add', '--file', file]);
      expect(result.code).toBe(3);
      expect(result.stderr).toMatch(message);
      expect(await queueSnapshot(dir)).toEqual(before);
    });
  });
});

describeFolder('a damaged queue.json', () => {
  it('makes every command refuse, naming the file, and leaves it byte-identical', async () => {
    await withTempDir(async (dir) => {
      for (const id of ['a', 'b', 'c']) await runCli(['--dir', dir, 'add', id, `Do ${id}`]);
      const whole = await readFile(queueFile(dir));
      const truncated = whole.subarray(0, Math.floor(whole.length / 2));
      await writeFile(queueFile(dir), truncated);
      const commands = [
        ['status'],
        ['status', '--json'],
        ['add', 'd', 'Do d'],
        ['retry', 'a'],
        ['run', '--api-url', 'http://127.0.0.1:9/none', '--drain', '--max-idle', '1', '--poll-interval', '10ms'],
      ];
      for (const command of commands) {
        const result = await runCli(['--dir', dir, ...command]);
        expect(result.code, `${command.join(' ')}: ${result.stderr}`).toBe(4);
        expect(result.stderr).toContain(queueFile(dir));
        expect(result.stderr).toMatch(/damaged/);
        expect(await readFile(queueFile(dir))).toEqual(truncated);
      }
    });
  });

  it('refuses an empty file and a comma left before the end (an edit by hand), and adds nothing to either', async () => {
    await withTempDir(async (dir) => {
      for (const id of ['a', 'b']) await runCli(['--dir', dir, 'add', id, `Do ${id}`]);
      const lines = (await readFile(queueFile(dir), 'utf8')).split('\n');
      const trailingComma = [...lines.slice(0, 2), `${lines[2]},`, ...lines.slice(3)].join('\n');
      for (const damaged of ['', trailingComma]) {
        await writeFile(queueFile(dir), damaged);
        for (const command of [['status'], ['add', 'c', 'Do c']]) {
          const result = await runCli(['--dir', dir, ...command]);
          expect(result.code, `${command.join(' ')} on ${JSON.stringify(damaged.slice(0, 40))}: ${result.stderr}`).toBe(4);
          expect(await readFile(queueFile(dir), 'utf8')).toBe(damaged);
        }
      }
    });
  });

  it('refuses valid JSON of the wrong shape, naming the place', async () => {
    await withTempDir(async (dir) => {
      await runCli(['--dir', dir, 'add', 'a', 'Do a']);
      const wrong = '{"version":1,"tasks":[{"id":"a","instruction":"","deps":[]}]}';
      await writeFile(queueFile(dir), wrong);
      const result = await runCli(['--dir', dir, 'status']);
      expect(result.code).toBe(4);
      expect(result.stderr).toMatch(/queue\.json is damaged \(at tasks\[0\]\./);
      expect(await readFile(queueFile(dir), 'utf8')).toBe(wrong);
    });
  });
});

describeFolder('worker add reads only what changed since the last add (queue/checked.json)', () => {
  const logFile = (dir: string) => join(dir, 'queue', 'execution-log.jsonl');
  const claimOf = (task: string) =>
    `${JSON.stringify({ type: 'claim', task, token: `t-${task}`, prev: null, attempt: 1, worker: 'w', pid: 1, host: 'h', at: '2026-01-01T00:00:00.000Z' })}\n`;

  it('still refuses a queue.json edited since, even when its size did not change', async () => {
    await withTempDir(async (dir) => {
      for (const id of ['a', 'b']) expect((await runCli(['--dir', dir, 'add', id, `Do ${id}`])).code).toBe(0);
      const edited = (await readFile(queueFile(dir), 'utf8')).replace('"intensity":"medium"', '"intensity":"mediun"');
      await writeFile(queueFile(dir), edited);
      const result = await runCli(['--dir', dir, 'add', 'c', 'Do c']);
      expect(result.code, result.stderr).toBe(4);
      expect(result.stderr).toMatch(/queue\.json is damaged \(at tasks\[0\]/);
      expect(await readFile(queueFile(dir), 'utf8')).toBe(edited);
    });
  });

  it('a worker validates a queue.json edited since the last add, even when its size did not change', async () => {
    await withTempDir(async (dir) => {
      for (const id of ['a', 'b']) expect((await runCli(['--dir', dir, 'add', id, `Do ${id}`])).code).toBe(0);
      const text = await readFile(queueFile(dir), 'utf8');
      const edited = `${text.slice(0, text.lastIndexOf('"medium"'))}"mediun"${text.slice(text.lastIndexOf('"medium"') + '"medium"'.length)}`;
      await writeFile(queueFile(dir), edited);
      const result = await runCli(['--dir', dir, 'run', '--api-url', 'http://127.0.0.1:9/none', '--drain', '--max-idle', '1', '--poll-interval', '10ms']);
      expect(result.code, result.stderr).toBe(4);
      // Found when reading the file at start, not only when b is claimed.
      expect(result.stderr).toMatch(/queue\.json is damaged \(at tasks\[1\], line 3\)/);
      expect(await readFile(queueFile(dir), 'utf8')).toBe(edited);
    });
  });

  it('still refuses events of undefined tasks appended to the log since, and an older copy of queue.json', async () => {
    await withTempDir(async (dir) => {
      expect((await runCli(['--dir', dir, 'add', 'a', 'Do a'])).code).toBe(0);
      const older = await readFile(queueFile(dir));
      // The log's first line names its queue; the events below are written after it, as workers would.
      const header = `${(await readFile(logFile(dir), 'utf8')).split('\n')[0]}\n`;
      await writeFile(logFile(dir), header + claimOf('a'));
      // This add reads the log to its end; the next one reads only what comes after.
      expect((await runCli(['--dir', dir, 'add', 'b', 'Do b'])).code).toBe(0);
      await writeFile(logFile(dir), claimOf('ghost'), { flag: 'a' });
      const afterGhost = await runCli(['--dir', dir, 'add', 'c', 'Do c']);
      expect(afterGhost.code, afterGhost.stderr).toBe(4);
      expect(afterGhost.stderr).toMatch(/records events of task "ghost"/);

      await writeFile(logFile(dir), header + claimOf('a') + claimOf('b'));
      expect((await runCli(['--dir', dir, 'add', 'c', 'Do c'])).code).toBe(0);
      // A backup of queue.json from before b was added, while the log has b's claim: b must not be added again.
      await writeFile(queueFile(dir), older);
      const afterRestore = await runCli(['--dir', dir, 'add', 'b', 'Do b again']);
      expect(afterRestore.code, afterRestore.stderr).toBe(4);
      expect(afterRestore.stderr).toMatch(/records events of task "b"/);
      expect(await readFile(queueFile(dir))).toEqual(older);
    });
  });

  it('works as before without its record, or with a damaged one', async () => {
    await withTempDir(async (dir) => {
      const checked = join(dir, 'queue', 'checked.json');
      expect((await runCli(['--dir', dir, 'add', 'a', 'Do a'])).code).toBe(0);
      expect(JSON.parse(await readFile(checked, 'utf8'))).toMatchObject({ queue: { size: (await stat(queueFile(dir))).size } });
      await writeFile(checked, '{"queue":');
      expect((await runCli(['--dir', dir, 'add', 'b', 'Do b', 'a'])).code).toBe(0);
      await writeFile(checked, '');
      expect((await runCli(['--dir', dir, 'add', 'a', 'Do a again'])).stderr).toMatch(/task "a" already exists/);
      await writeFile(logFile(dir), claimOf('a'));
      expect((await runCli(['--dir', dir, 'add', 'c', 'Do c'])).code).toBe(0);
      // A record whose numbers make no sense is no record.
      const record = JSON.parse(await readFile(checked, 'utf8'));
      await writeFile(checked, JSON.stringify({ ...record, log: { ...record.log, offset: -5 } }));
      expect((await runCli(['--dir', dir, 'add', 'd', 'Do d'])).code).toBe(0);
      expect((await statusJson(dir)).map((task) => task.id)).toEqual(['a', 'b', 'c', 'd']);
    });
  });
});

describe('worker status', () => {
  it('prints a table with a summary line, and JSON with the fields of add --file', async () => {
    await withTempDir(async (dir) => {
      await runCli(['--dir', dir, 'add', 'fetch', 'Fetch it']);
      await runCli(['--dir', dir, 'add', 'parse', 'Parse it', 'fetch']);
      const table = await runCli(['--dir', dir, 'status']);
      expect(table.code).toBe(0);
      const lines = table.stdout.trimEnd().split('\n');
      expect(lines[0]).toMatch(/^ID\s+STATE\s+ATTEMPTS\s+DEPS\s+LAST ERROR\s+AGE\s+REASON$/);
      expect(lines[1]).toMatch(/^fetch\s+pending\s+0\s+-\s+-\s+\d+s\s+ready: waiting for a free worker$/);
      expect(lines[2]).toMatch(/^parse\s+pending\s+0\s+fetch\s+-\s+\d+s\s+waiting on 1 dep: fetch \(pending\)$/);
      expect(lines[3]).toBe('2 tasks: 2 pending, 0 running, 0 completed, 0 failed, 0 blocked');
      const tasks = await statusJson(dir);
      expect(tasks[1]).toMatchObject({
        id: 'parse',
        instruction: 'Parse it',
        deps: ['fetch'],
        state: 'pending',
        attempts: 0,
        reason: 'waiting on 1 dep: fetch (pending)',
      });
      expect(tasks[1]).not.toHaveProperty('last_error');
    });
  });

  folderOnly('a folder with no queue (a typo in --dir): commands that read refuse, exit 3, and create nothing', async () => {
    await withTempDir(async (dir) => {
      const typo = join(dir, 'queus');
      for (const command of [
        ['status'],
        ['status', '--json'],
        ['show', 'a'],
        ['logs'],
        ['graph'],
        ['workers'],
        ['retry', '--failed'],
        ['cancel', 'a'],
        ['unlock', 'a'],
        ['clean', '--completed'],
      ]) {
        const result = await runCli(['--dir', typo, ...command]);
        expect(result.code, command.join(' ')).toBe(3);
        expect(result.stderr).toBe(`worker: no queue at ${typo} (worker add creates one); check --dir (or WORKER_DIR) for a typo\n`);
      }
      expect(await readdir(dir)).toEqual([]);
    });
  });

  it('prints an empty queue', async () => {
    await withTempDir(async (dir) => {
      // A worker started before any task was added makes the queue.
      expect((await runCli(['--dir', dir, 'run', '--api-url', 'http://127.0.0.1:9/', '--drain'])).code).toBe(0);
      expect((await runCli(['--dir', dir, 'status'])).stdout).toBe('0 tasks: 0 pending, 0 running, 0 completed, 0 failed, 0 blocked\n');
      expect((await runCli(['--dir', dir, 'status', '--json'])).stdout).toBe('[]\n');
    });
  });
});

describe('the command line', () => {
  it('suggests the closest command for a typo and exits 2', async () => {
    const result = await runCli(['staus']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/Did you mean status\?/);
  });

  it('worker --help lists the global option and every environment variable; every error has one prefix', async () => {
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    for (const name of [
      '--dir',
      'WORKER_DIR',
      'WORKER_API_URL',
      'WORKER_API_HEADERS',
      'WORKER_API_TIMEOUT',
      'WORKER_POLL_INTERVAL',
      'WORKER_MAX_IDLE',
      'WORKER_MAX_ATTEMPTS',
      'WORKER_LOCK_STALE',
      'WORKER_BACKOFF',
      'WORKER_RATE',
      'WORKER_MAX_API_WAIT',
      'WORKER_ID',
      'WORKER_MIN_BUDGET',
      'WORKER_MAX_BUDGET',
      'WORKER_INTENSITY',
      'NO_COLOR',
    ]) {
      expect(help.stdout).toContain(name);
    }
    const unknown = await runCli(['--bogus']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^worker: unknown option '--bogus'/);
  });
});
