import { defineConfig } from 'vitest/config';

/**
 * Two projects: `folder` runs every test on the folder store; `postgres` runs the tests of what both stores
 * promise (the commands, the worker, the kill storm) again, each `--dir` of theirs turned into a queue of a
 * real PostgreSQL (test/helpers/postgresSetup.ts), and the tests of what only a database has
 * (database.test.ts).
 */
export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Integration tests start real worker processes; two cores are shared between files.
    fileParallelism: true,
    maxWorkers: 2,
    projects: [
      { extends: true, test: { name: 'folder', include: ['test/**/*.test.ts'], exclude: ['test/integration/database.test.ts'] } },
      {
        extends: true,
        test: {
          name: 'postgres',
          include: ['test/integration/*.test.ts', 'test/faults/faults.test.ts'],
          exclude: ['test/integration/{compaction,files,locks,startup}.test.ts'],
          globalSetup: ['test/helpers/postgresSetup.ts'],
          env: { WORKER_TEST_STORE: 'postgres' },
        },
      },
    ],
  },
});
