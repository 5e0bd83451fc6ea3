import pg from 'pg';
import { WorkerError } from '../errors.js';
import type { QueuePlace } from '../types.js';

/** Where a queue lives in a database: the server (its URL) and the queue's name there. */
export type DatabaseLocation = Extract<QueuePlace, { kind: 'database' }>;

/** A database URL for messages and logs: the password (in the URL or as a parameter) hidden. */
export function redactDatabaseUrl(text: string): string {
  try {
    const url = new URL(text);
    if (url.password) url.password = '***';
    if (url.searchParams.has('password')) url.searchParams.set('password', '***');
    return url.toString().replace('password=%2A%2A%2A', 'password=***');
  } catch {
    return text.replace(/:[^:/@]*@/, ':***@').replace(/password=[^&]*/g, 'password=***');
  }
}

/** `127.0.0.1:5432`: the server as a person names it, never with credentials. */
export function serverOf(url: string): string {
  try {
    const parsed = new URL(url);
    const host = parsed.hostname || parsed.searchParams.get('host') || process.env.PGHOST || 'localhost';
    return `${host}:${parsed.port || process.env.PGPORT || '5432'}`;
  } catch {
    return 'the database';
  }
}

/**
 * A pool of connections to the queue's database. An idle connection that dies (a restart, the network)
 * is replaced by the next query; without the error listener, its death would crash the process.
 */
export function openPool(location: DatabaseLocation, options: { max: number; applicationName: string; onIdleError?: (error: Error) => void }): pg.Pool {
  const pool = new pg.Pool({
    connectionString: location.url,
    max: options.max,
    application_name: options.applicationName,
    connectionTimeoutMillis: 10_000,
    idleTimeoutMillis: 30_000,
  });
  pool.on('error', (error) => options.onIdleError?.(error));
  return pool;
}

/** A connection of its own (LISTEN, the session that tells others this worker lives). */
export function newClient(location: DatabaseLocation, applicationName: string): pg.Client {
  return new pg.Client({ connectionString: location.url, application_name: applicationName, connectionTimeoutMillis: 10_000 });
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE']);

/** Whether an error says the database could not be reached or went away (worth trying again later). */
export function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: string } | undefined)?.code;
  if (code !== undefined && (UNREACHABLE.has(code) || code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03')) return true;
  const message = error instanceof Error ? error.message : '';
  return /Connection terminated|connection timeout|timeout expired|Client has encountered a connection error|not queryable/i.test(message);
}

/** A database error as a person reads it: the server named, the password never shown. */
export function databaseError(error: unknown, location: DatabaseLocation): WorkerError {
  if (error instanceof WorkerError) return error;
  const server = serverOf(location.url);
  const code = (error as { code?: string } | undefined)?.code;
  const message = error instanceof Error ? error.message : String(error);
  if (code === '28P01' || code === '28000') {
    return new WorkerError('CONFIG', `the database at ${server} refused the login: ${message}`, {
      hint: 'check the user and password of --database-url (env WORKER_DATABASE_URL), or PGPASSWORD',
      cause: error,
    });
  }
  if (code === '3D000') {
    return new WorkerError('CONFIG', `${message} at ${server}`, { hint: 'create it first (createdb), or name another in --database-url', cause: error });
  }
  if (isConnectionError(error)) {
    return new WorkerError('IO', `cannot reach the database at ${server}: ${message}`, {
      hint: 'is PostgreSQL running there, and does --database-url (env WORKER_DATABASE_URL) name the right host and port?',
      cause: error,
    });
  }
  if (code === '42501') {
    return new WorkerError('IO', `the database at ${server} refused: ${message}`, {
      hint: 'the user needs CREATE on the schema the first time (to make the tables), then SELECT, INSERT, UPDATE, DELETE on them',
      cause: error,
    });
  }
  return new WorkerError('IO', `the database at ${server} failed: ${redactDatabaseUrl(message)}`, { cause: error });
}
