import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import lockfile from 'proper-lockfile';
import { WorkerError, ioError } from '../errors.js';
import { goneFromThisHost } from '../lock/processes.js';
import type { QueuePaths } from '../queue/paths.js';
import { heartbeatDir } from './heartbeat.js';

interface Holder {
  pid: number;
  host: string;
}

/** How long a holder is given to write its name into a lock it just made. */
const NAMING_GRACE_MS = 1000;
/** A lock with no name this long after it was made (or last refreshed) was left by a worker killed while making it. */
const UNNAMED_LOCK_KEPT_MS = 10_000;

/**
 * One live worker per worker id: two with one id (an `export WORKER_ID` in a shell profile) would share a
 * heartbeat and their logs and claims could not be told apart. The id is held with proper-lockfile
 * (locks/workers/<id>.lock, refreshed while the worker runs), and <id>.holder beside it names the holding
 * process, so that one left by a killed worker on this host is taken at once, not after going stale.
 */
export async function holdWorkerId(paths: QueuePaths, workerId: string, self: Holder, staleMs: number): Promise<() => void> {
  const dir = heartbeatDir(paths);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (error) {
    throw ioError('create the folder', dir, error);
  }
  removeLeftByGoneProcesses(dir, self.host);
  const lockPath = join(dir, `${workerId}.lock`);
  const holderFile = join(dir, `${workerId}.holder`);
  const giveUpAt = Date.now() + NAMING_GRACE_MS;
  for (;;) {
    try {
      const release = await lockfile.lock(lockPath, {
        lockfilePath: lockPath,
        realpath: false,
        stale: staleMs,
        retries: 0,
        // Lost to a stale takeover while frozen: the worker goes on; its claims are fenced on their own.
        onCompromised: () => undefined,
      });
      writeFileSync(holderFile, JSON.stringify(self));
      return () => {
        // The name first: a holder file is never left naming a process that no longer holds the lock.
        rmSync(holderFile, { force: true });
        release().catch(() => undefined);
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ELOCKED') throw ioError('lock', lockPath, error);
    }
    const holder = readHolder(holderFile);
    if (holder !== undefined && goneFromThisHost(holder, self.host)) {
      removeHeld(dir, workerId);
      continue;
    }
    if (holder !== undefined || Date.now() > giveUpAt) {
      const who = holder ? `pid ${holder.pid} on ${holder.host}` : 'a worker that is starting';
      throw new WorkerError('CONFIG', `worker id "${workerId}" is in use by a live worker (${who})`, {
        hint: 'give each worker its own --worker-id, or none for a random one (is WORKER_ID set in your shell profile?)',
      });
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function readHolder(file: string): Holder | undefined {
  try {
    const holder = JSON.parse(readFileSync(file, 'utf8')) as Partial<Holder>;
    return typeof holder.pid === 'number' && typeof holder.host === 'string' ? { pid: holder.pid, host: holder.host } : undefined;
  } catch {
    return undefined;
  }
}

function removeHeld(dir: string, workerId: string): void {
  rmSync(join(dir, `${workerId}.lock`), { recursive: true, force: true });
  rmSync(join(dir, `${workerId}.holder`), { force: true });
}

/**
 * Worker-id locks of killed workers of this host, which would stay until a worker of the same id came;
 * and those that name no holder long after they were made (a worker killed between the two steps).
 */
function removeLeftByGoneProcesses(dir: string, host: string): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    if (name.endsWith('.holder')) {
      const holder = readHolder(join(dir, name));
      if (holder !== undefined && goneFromThisHost(holder, host)) removeHeld(dir, name.slice(0, -'.holder'.length));
    } else if (name.endsWith('.lock') && !names.includes(`${name.slice(0, -'.lock'.length)}.holder`)) {
      try {
        if (Date.now() - statSync(join(dir, name)).mtimeMs > UNNAMED_LOCK_KEPT_MS) removeHeld(dir, name.slice(0, -'.lock'.length));
      } catch {
        // gone meanwhile
      }
    }
  }
}
