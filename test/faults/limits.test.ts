import { open, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startApi, type Api } from '../helpers/apiServer.js';
import { runCli, withTempDir } from '../helpers/cli.js';
import { addAll } from '../helpers/queue.js';

/** At the limits of size and input: escape codes from outside, durations past what a timer can wait, large tables and logs. */

let api: Api;
beforeEach(async () => {
  api = await startApi();
});
afterEach(async () => {
  await api.close();
});

const RAW_CONTROLS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/;

describe('nothing from the API or a task reaches a terminal raw', () => {
  it('escape codes in an error body and in an instruction are escaped in every command and log line', async () => {
    await withTempDir(async (dir) => {
      api.setBehaviour((_call, res) => {
        res.writeHead(422, { 'content-type': 'text/plain' });
        res.end('bad\u001b[2J\u0007 and \u009b2J');
      });
      await addAll(dir, [{ id: 'evil', instruction: 'clear \u009b2J the \u001b]0;title\u0007 screen' }]);
      const outputs: Array<[string, string]> = [];
      for (const format of ['text', 'json']) {
        const run = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--drain', '--log-format', format]);
        outputs.push([`run --log-format ${format}`, run.stderr]);
        await runCli(['--dir', dir, 'retry', 'evil']);
      }
      for (const command of [['status'], ['status', '--json'], ['show', 'evil'], ['show', 'evil', '--json'], ['logs'], ['logs', 'evil'], ['graph']]) {
        const result = await runCli(['--dir', dir, ...command]);
        expect(result.code, `${command.join(' ')}: ${result.stderr}`).toBe(0);
        outputs.push([command.join(' '), result.stdout + result.stderr]);
      }
      for (const [command, text] of outputs) expect(RAW_CONTROLS.test(text), `${command}: ${JSON.stringify(text)}`).toBe(false);
      const shown = (await runCli(['--dir', dir, 'show', 'evil'])).stdout;
      expect(shown).toContain('\\u009b2J');
      expect(shown).toContain('bad\\u001b[2J\\u0007');
      // Escaped, the JSON still says the same.
      const json = JSON.parse((await runCli(['--dir', dir, 'show', 'evil', '--json'])).stdout);
      expect(json.task.instruction).toBe('clear \u009b2J the \u001b]0;title\u0007 screen');
    });
  });
});

describe('durations past what a timer can wait', () => {
  it.each([
    [['run', '--api-url', 'http://127.0.0.1:9/', '--timeout', '25d'], '--timeout'],
    [['run', '--api-url', 'http://127.0.0.1:9/', '--poll-interval', '25d'], '--poll-interval'],
    [['run', '--api-url', 'http://127.0.0.1:9/', '--backoff', '30d'], '--backoff'],
    [['run', '--api-url', 'http://127.0.0.1:9/', '--lock-stale', '1000d'], '--lock-stale'],
    [['status', '--watch', '25d'], '--watch'],
  ])('%j is refused naming %s', async (args, option) => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      const result = await runCli(['--dir', dir, ...args]);
      expect(result.code).toBe(2);
      expect(result.stderr).toContain(`expected ${option}`);
      expect(result.stderr).toMatch(/at most 24d \(the longest a timer can wait\)/);
    });
  });

  it('from the environment too', async () => {
    await withTempDir(async (dir) => {
      const result = await runCli(['--dir', dir, 'run', '--api-url', 'http://127.0.0.1:9/'], { env: { WORKER_API_TIMEOUT: '25d' } });
      expect(result.code).toBe(2);
      expect(result.stderr).toMatch(/expected --timeout \(or WORKER_API_TIMEOUT\) .* at most 24d/);
    });
  });
});

describe('large tables and logs', () => {
  it('status prints a table of 150,000 tasks', async () => {
    await withTempDir(async (dir) => {
      const file = join(dir, 'tasks.jsonl');
      await writeFile(file, Array.from({ length: 150_000 }, (_, i) => JSON.stringify({ id: `t${i}`, instruction: 'x', deps: [] })).join('\n'));
      expect((await runCli(['--dir', dir, 'add', '--file', file])).code).toBe(0);
      const status = await runCli(['--dir', dir, 'status']);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout.split('\n').length).toBe(150_003);
      expect(status.stdout).toMatch(/150000 tasks: 150000 pending/);
    });
  }, 60_000);

  it('a queue.json past 512 MiB: add --file, add one more, status and a worker', async () => {
    await withTempDir(async (dir) => {
      // 540 tasks with instructions of a million characters, the longest allowed.
      const file = join(dir, 'tasks.jsonl');
      const handle = await open(file, 'w');
      const instruction = 'y'.repeat(999_000);
      for (let i = 0; i < 540; i += 1) await handle.write(`${i === 0 ? '' : '\n'}${JSON.stringify({ id: `t${i}`, instruction, deps: [] })}`);
      await handle.close();
      const bulk = await runCli(['--dir', dir, 'add', '--file', file]);
      expect(bulk.code, bulk.stderr).toBe(0);
      expect((await stat(join(dir, 'queue', 'queue.json'))).size).toBeGreaterThan(512 * 1024 * 1024);
      const one = await runCli(['--dir', dir, 'add', 'one', 'more']);
      expect(one.code, one.stderr).toBe(0);
      const status = await runCli(['--dir', dir, 'status']);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toMatch(/541 tasks: 541 pending/);
      expect((await runCli(['--dir', dir, 'run', '1', '--api-url', api.url])).code).toBe(0);
      expect(api.calls.map((call) => call.task_id)).toEqual(['t0']);
      expect(api.calls[0]!.body.instruction).toBe(instruction);
    });
  }, 120_000);

  it('a log past 512 MiB is read in pieces: status and a worker read it', async () => {
    await withTempDir(async (dir) => {
      await addAll(dir, [{ id: 'a' }]);
      // Six records of 90 MB each: retries of a task that is not failed, which count for nothing.
      const log = await open(join(dir, 'queue', 'execution-log.jsonl'), 'a');
      const pad = 'x'.repeat(90 * 1024 * 1024);
      for (let i = 0; i < 6; i += 1) await log.write(`{"type":"retry","task":"a","at":"2026-01-01T00:00:00.000Z","pad":"${pad}"}\n`);
      await log.close();
      const status = await runCli(['--dir', dir, 'status']);
      expect(status.code, status.stderr).toBe(0);
      expect(status.stdout).toMatch(/1 task: 1 pending/);
      const run = await runCli(['--dir', dir, 'run', '--api-url', api.url, '--drain']);
      expect(run.code, run.stderr).toBe(0);
      expect(api.calls.map((call) => call.task_id)).toEqual(['a']);
    });
  }, 120_000);
});
