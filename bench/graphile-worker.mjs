// The bar on PostgreSQL: the same drain through graphile-worker on the same server. `seed URL N` fills its
// queue; `work URL URL-OF-API` is one worker process (concurrency 1, like `worker run`) that exits once no
// job is left (graphile-worker's runOnce).
import { Logger, runOnce, runMigrations } from 'graphile-worker';
import { Agent, request } from 'undici';
import pg from 'pg';

const [mode, connectionString, arg] = process.argv.slice(2);
// graphile-worker's own Logger, saying nothing.
const silent = { logger: new Logger(() => () => undefined) };

if (mode === 'seed') {
  await runMigrations({ connectionString, ...silent });
  const client = new pg.Client({ connectionString });
  await client.connect();
  await client.query("SELECT graphile_worker.add_job('task', json_build_object('task_id', 't' || g)) FROM generate_series(0, $1::integer - 1) g", [
    Number(arg),
  ]);
  await client.end();
} else {
  const agent = new Agent();
  await runOnce({
    connectionString,
    concurrency: 1,
    noHandleSignals: true,
    ...silent,
    taskList: {
      task: async (payload) => {
        const response = await request(arg, {
          method: 'POST',
          dispatcher: agent,
          headers: { 'content-type': 'application/json', 'idempotency-key': payload.task_id },
          body: JSON.stringify({
            task_id: payload.task_id,
            instruction: 'x',
            depends_on: [],
            attempt: 1,
            min_budget: 1000,
            max_budget: 4000,
            intensity: 'medium',
          }),
        });
        await response.body.json();
      },
    },
  });
  await agent.close();
}
