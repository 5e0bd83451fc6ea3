import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { answerOk, answerOkWithin, startApi, type Api } from '../helpers/apiServer.js';
import { databaseUrl, runCli, startCli, withTempDir, type RunningCli } from '../helpers/cli.js';
import { freePort, startPostgres, type TestPostgres } from '../helpers/postgres.mjs';
import { finalOutcomes, holdCallsFor } from '../helpers/queue.js';
import pg from 'pg';

// What only a database has: its server restarted under the workers, out of reach, refusing a password, a
// worker's connections cut. Each test that stops a server has one of its own.

let api: Api;
beforeEach(async () => {
  api = await startApi();
});
afterEach(async () => {
  await api.close();
});

const FAST = ['--poll-interval', '100ms', '--backoff', '50ms'];

/** A command on a folder, as it is given: this file's tests are on the database, but for the folder they copy. */
function runFolderCli(args: string[], input?: string) {
  return runCli(['--dir-as-given', ...args], input === undefined ? {} : { input });
}

function on(url: string, queue: string, ...args: string[]): string[] {
  return ['--database-url', url, '--queue', queue, ...args];
}

async function addTasks(url: string, queue: string, count: number): Promise<string[]> {
  const ids = Array.from({ length: count }, (_, i) => `t${i}`);
  const input = ids.map((id, i) => JSON.stringify({ id, instruction: `do ${id}`, deps: i >= 10 ? [`t${i - 10}`] : [] })).join('\n');
  const added = await runCli(on(url, queue, 'add', '--file', '-'), { input });
  expect(added.code, added.stderr).toBe(0);
  return ids;
}

async function historyOf(url: string, queue: string): Promise<Array<Record<string, any>>> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<{ body: Record<string, any> }>('SELECT body FROM worker_events WHERE queue = $1 ORDER BY seq', [queue])).rows.map(
      (row) => row.body,
    );
  } finally {
    await client.end();
  }
}

describe('the database restarted mid-drain', () => {
  let server: TestPostgres;
  beforeAll(async () => {
    server = await startPostgres();
  });
  afterAll(async () => {
    await server.remove();
  });

  it.each(['fast', 'immediate'] as const)(
    'pg_ctl stop -m %s, then start: workers say so, connect again and drain; nothing lost, no task finished twice',
    async (mode) => {
      const queue = `restart-${mode}`;
      const ids = await addTasks(server.url, queue, 300);
      api.setBehaviour(answerOkWithin(30));
      const workers: RunningCli[] = Array.from({ length: 3 }, (_, i) =>
        startCli(on(server.url, queue, 'run', '--api-url', api.url, ...FAST, '--drain', '--max-idle', '0', '--concurrency', '2', '--worker-id', `w${i}`)),
      );
      while (new Set(api.calls.map((call) => call.task_id)).size < 100) await sleep(10);
      const stoppedAt = Date.now();
      server.stop(mode);
      await sleep(1000);
      server.start();
      const restartedAt = Date.now();
      const results = await Promise.all(workers.map((worker) => worker.exited));
      for (const result of results) expect(result.code, result.stderr).toBe(0);
      const logs = results.map((result) => result.stderr).join('\n');
      expect(logs).toMatch(/lost the connection to the database at 127\.0\.0\.1:\d+/);
      expect(logs).toMatch(/connected to the database at 127\.0\.0\.1:\d+ again/);
      expect(logs).not.toContain(server.password);
      const finals = finalOutcomes(await historyOf(server.url, queue));
      for (const id of ids) expect(finals.get(id), id).toBe(1);
      // A task is called again only if a call of it was in flight at the restart.
      const byTask = new Map<string, typeof api.calls>();
      for (const call of api.calls) byTask.set(call.task_id, [...(byTask.get(call.task_id) ?? []), call]);
      for (const [id, calls] of byTask) {
        if (calls.length === 1) continue;
        expect(calls[0]!.receivedAt, `${id} was called ${calls.length} times`).toBeLessThan(restartedAt);
        expect(calls[0]!.answeredAt ?? Infinity, `${id} was called ${calls.length} times`).toBeGreaterThan(stoppedAt - 100);
      }
      const status = await runCli(on(server.url, queue, 'status'));
      expect(status.stdout).toMatch(/^300 tasks: 0 pending, 0 running, 300 completed, 0 failed, 0 blocked$/m);
    },
    120_000,
  );
});

describe('connecting', () => {
  it('an unreachable database: exit 5, naming host and port, never the password', async () => {
    const port = await freePort();
    const url = `postgres://someone:hunter2-secret@127.0.0.1:${port}/queues`;
    for (const args of [['status'], ['add', 'a', 'do a'], ['run', '--api-url', api.url, '--drain']]) {
      const result = await runCli(['--database-url', url, ...args]);
      expect(result.code, args.join(' ')).toBe(5);
      expect(result.stderr).toMatch(new RegExp(`cannot reach the database at 127\\.0\\.0\\.1:${port}`));
      expect(result.stdout + result.stderr).not.toContain('hunter2-secret');
    }
  });

  it('a wrong password: a clear message, exit 2; the password appears in no output, row or heartbeat', async () => {
    const url = new URL(databaseUrl());
    url.password = 'not-the-password';
    const wrong = await runCli(['--database-url', url.toString(), '--queue', 'wrong-password', 'status']);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/refused the login: password authentication failed for user "postgres"; check the user and password/);
    expect(wrong.stdout + wrong.stderr).not.toContain('not-the-password');
    // With the right one, nothing a worker writes or prints holds it.
    const right = new URL(databaseUrl());
    const queue = 'no-password-anywhere';
    await addTasks(right.toString(), queue, 3);
    const run = await runCli(on(right.toString(), queue, 'run', '--api-url', api.url, ...FAST, '--drain', '--verbose'));
    expect(run.code, run.stderr).toBe(0);
    const secret = decodeURIComponent(right.password);
    for (const command of [['workers', '--json'], ['status', '--json'], ['logs'], ['show', 't0']]) {
      const shown = await runCli(on(right.toString(), queue, ...command));
      expect(shown.stdout + shown.stderr, command.join(' ')).not.toContain(secret);
    }
    expect(run.stderr).not.toContain(secret);
    const client = new pg.Client({ connectionString: right.toString() });
    await client.connect();
    try {
      for (const table of ['worker_workers', 'worker_events', 'worker_tasks', 'worker_queues']) {
        const { rows } = await client.query(`SELECT * FROM ${table} WHERE ${table === 'worker_queues' ? 'name' : 'queue'} = $1`, [queue]);
        expect(JSON.stringify(rows), table).not.toContain(secret);
      }
    } finally {
      await client.end();
    }
  });
});

describe("a worker's connections cut mid-call", () => {
  async function cutConnectionsOf(workerId: string): Promise<number> {
    const client = new pg.Client({ connectionString: databaseUrl() });
    await client.connect();
    try {
      const { rows } = await client.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [`worker ${workerId}`]);
      return rows.length;
    } finally {
      await client.end();
    }
  }

  it('alone: once connected again it records the outcome, its claim still in force', async () => {
    const queue = `cut-alone-${process.pid}`;
    await addTasks(databaseUrl(), queue, 1);
    const hold = holdCallsFor(api, 't0');
    const worker = startCli(on(databaseUrl(), queue, 'run', '--api-url', api.url, ...FAST, '--drain', '--worker-id', 'w-cut'));
    await hold.arrived();
    expect(await cutConnectionsOf('w-cut')).toBeGreaterThan(0);
    await worker.waitForLog(/lost the connection to the database/);
    answerOk(hold.held[0]!.call, hold.held[0]!.res);
    const result = await worker.exited;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/completed t0/);
    expect(api.calls).toHaveLength(1);
    expect(finalOutcomes(await historyOf(databaseUrl(), queue)).get('t0')).toBe(1);
  });

  it('cut off while another worker runs: that one takes the task over at once; the cut one, back, records nothing and says so', async () => {
    const queue = `cut-other-${process.pid}`;
    await addTasks(databaseUrl(), queue, 1);
    const hold = holdCallsFor(api, 't0');
    const cut = startCli(on(databaseUrl(), queue, 'run', '--api-url', api.url, ...FAST, '--max-idle', '0', '--worker-id', 'w-cut-2', '--lock-stale', '60s'));
    await hold.arrived();
    // Its host cut off: frozen, so that it cannot connect again before the other worker judges its claim.
    cut.process.kill('SIGSTOP');
    expect(await cutConnectionsOf('w-cut-2')).toBeGreaterThan(0);
    const other = startCli(on(databaseUrl(), queue, 'run', '--api-url', api.url, ...FAST, '--drain', '--worker-id', 'w-other', '--lock-stale', '60s'));
    // Not after --lock-stale: the ended session says at once that the claim's worker is gone.
    await hold.arrived(2);
    answerOk(hold.held[1]!.call, hold.held[1]!.res);
    expect((await other.exited).code).toBe(0);
    answerOk(hold.held[0]!.call, hold.held[0]!.res);
    cut.process.kill('SIGCONT');
    await cut.waitForLog(/lost the claim on t0/);
    cut.process.kill('SIGTERM');
    expect((await cut.exited).code).toBe(0);
    expect(finalOutcomes(await historyOf(databaseUrl(), queue)).get('t0')).toBe(1);
    expect((await runCli(on(databaseUrl(), queue, 'show', 't0', '--json'))).stdout).toMatch(/"state": "completed"/);
  });
});

describe('worker copy-to', () => {
  /** The status table without its AGE column, which moves with the clock. */
  const table = (stdout: string) =>
    stdout
      .split('\n')
      .map((line) => line.replace(/\s+\d+[smhd]\s+/, ' '))
      .filter((line) => !/^\d+ tasks?:/.test(line));

  it('copies a folder queue into a database: the same table, results, history and keys; refused into a queue with tasks', async () => {
    await withTempDir(async (dir) => {
      const folder = ['--dir', dir];
      const input = ['{"id":"a","instruction":"A"}', '{"id":"big","instruction":"B","deps":["a"]}', '{"id":"c","instruction":"C","deps":["big"]}'].join('\n');
      expect((await runFolderCli([...folder, 'add', '--file', '-'], input)).code).toBe(0);
      // A result over 4 KB is kept apart in the folder, and in its own table in the database.
      api.setBehaviour((call, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ status: 'completed', output: call.task_id === 'big' ? 'x'.repeat(10_000) : call.task_id }));
      });
      expect((await runFolderCli([...folder, 'run', '2', '--api-url', api.url, ...FAST])).code).toBe(0);
      const queue = `copied-${process.pid}`;
      const copied = await runFolderCli([...folder, 'copy-to', databaseUrl(), '--to-queue', queue]);
      expect(copied.code, copied.stderr).toBe(0);
      expect(copied.stdout).toMatch(new RegExp(`^copied 3 tasks and 4 history records into queue "${queue}" at 127\\.0\\.0\\.1:\\d+\\n$`));
      expect(copied.stdout + copied.stderr).not.toContain(new URL(databaseUrl()).password);
      const onFolder = await runFolderCli([...folder, 'status']);
      const onDatabase = await runCli(on(databaseUrl(), queue, 'status'));
      expect(table(onDatabase.stdout)).toEqual(table(onFolder.stdout));
      const folderShow = JSON.parse((await runFolderCli([...folder, 'show', 'big', '--json'])).stdout);
      const databaseShow = JSON.parse((await runCli(on(databaseUrl(), queue, 'show', 'big', '--json'))).stdout);
      expect(databaseShow.result).toEqual(folderShow.result);
      expect(databaseShow.idempotency_key).toBe(folderShow.idempotency_key);
      expect(databaseShow.history).toEqual(folderShow.history);
      expect((await runCli(on(databaseUrl(), queue, 'result', 'big'))).stdout).toBe(JSON.stringify({ status: 'completed', output: 'x'.repeat(10_000) }));
      // The copy runs on: the pending task, once.
      expect((await runCli(on(databaseUrl(), queue, 'run', '--api-url', api.url, ...FAST, '--drain'))).code).toBe(0);
      expect(api.callsFor('c')).toHaveLength(1);
      const again = await runFolderCli([...folder, 'copy-to', databaseUrl(), '--to-queue', queue]);
      expect(again.code).toBe(3);
      expect(again.stderr).toMatch(new RegExp(`the queue "${queue}" at 127\\.0\\.0\\.1:\\d+ holds 3 tasks already; nothing was copied`));
    });
  });
});

describe('the tables', () => {
  it('ten connections at once on a new database make them once; a newer version of them is refused, and left as it is', async () => {
    const name = `worker_schema_${process.pid}`;
    const admin = new pg.Client({ connectionString: databaseUrl() });
    await admin.connect();
    try {
      await admin.query(`DROP DATABASE IF EXISTS ${name}`);
      await admin.query(`CREATE DATABASE ${name}`);
      const url = new URL(databaseUrl());
      url.pathname = `/${name}`;
      // Ten connections make the tables at the same moment (processes would start one after another).
      const { ensureSchema } = await import('../../src/postgres/schema.js');
      const clients = Array.from({ length: 10 }, () => new pg.Client({ connectionString: url.toString() }));
      await Promise.all(clients.map((client) => client.connect()));
      try {
        await Promise.all(clients.map((client) => ensureSchema(client, 'the test server')));
      } finally {
        await Promise.all(clients.map((client) => client.end()));
      }
      const adds = await Promise.all(Array.from({ length: 10 }, (_, i) => runCli(on(url.toString(), 'fresh', 'add', `t${i}`, `do ${i}`))));
      for (const add of adds) expect(add.code, add.stderr).toBe(0);
      expect((await runCli(on(url.toString(), 'fresh', 'status'))).stdout).toMatch(/^10 tasks: 10 pending/m);
      const client = new pg.Client({ connectionString: url.toString() });
      await client.connect();
      try {
        expect((await client.query('SELECT version FROM worker_schema')).rows).toEqual([{ version: 1 }]);
        await client.query('UPDATE worker_schema SET version = 2');
        const newer = await runCli(on(url.toString(), 'fresh', 'status'));
        expect(newer.code).toBe(2);
        expect(newer.stderr).toMatch(
          /the queue tables at 127\.0\.0\.1:\d+ are of schema version 2, newer than this worker knows \(1\); a newer version of worker made them: upgrade this one; nothing was changed/,
        );
        expect((await runCli(on(url.toString(), 'fresh', 'add', 'later', 'x'))).code).toBe(2);
        expect((await client.query('SELECT version FROM worker_schema')).rows).toEqual([{ version: 2 }]);
        expect((await client.query("SELECT count(*)::integer AS tasks FROM worker_tasks WHERE queue = 'fresh'")).rows).toEqual([{ tasks: 10 }]);
      } finally {
        await client.end();
      }
    } finally {
      await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => undefined);
      await admin.end();
    }
  });
});
