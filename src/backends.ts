import type { RunConfig } from './config.js';
import type { Executor } from './executor.js';
import type { Store, WorkerStore } from './store.js';
import type { Logger, QueuePlace } from './types.js';

/**
 * Which store and which executor a command works with: chosen here, and only here. A queue is a folder
 * (the folder store) or a queue of a PostgreSQL database (the PostgreSQL store); calls go to an HTTP API
 * (the HTTP executor). Each is loaded only by the commands that use it.
 */
export interface WorkerBackendOptions {
  place: QueuePlace;
  config: RunConfig;
  logger: Logger;
  host: string;
  pid: number;
  now: () => number;
  random: () => number;
}

export interface StoreOptions {
  place: QueuePlace;
  /** Make the queue if there is none yet (`add`); every other command refuses a place that holds no queue. */
  create: boolean;
  /** How long a claim may go unrefreshed before it counts as stuck (--lock-stale). */
  lockStaleMs: number;
  host: string;
}

export async function openStore(options: StoreOptions): Promise<Store> {
  const { place } = options;
  if (place.kind === 'database') {
    const { PgStore } = await import('./postgres/pgStore.js');
    return PgStore.open(place, options);
  }
  const { FolderStore } = await import('./folder/folderStore.js');
  return new FolderStore(place.dir, options);
}

export async function openWorkerStore(options: WorkerBackendOptions): Promise<WorkerStore> {
  const { place, config } = options;
  if (place.kind === 'database') {
    const { PgWorkerStore } = await import('./postgres/pgWorkerStore.js');
    return PgWorkerStore.open(place, { ...options, workerId: config.workerId, lockStaleMs: config.lockStaleMs, concurrency: config.concurrency });
  }
  const { FolderWorkerStore } = await import('./folder/workerStore.js');
  return FolderWorkerStore.open(place.dir, { ...options, workerId: config.workerId, lockStaleMs: config.lockStaleMs });
}

/** Loaded when a worker starts: the HTTP client is no cost to the commands that call nothing. */
export async function openExecutor(config: RunConfig): Promise<Executor> {
  const { HttpExecutor } = await import('./http/executor.js');
  return new HttpExecutor(config.api);
}
