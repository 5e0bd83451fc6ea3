import type { RunConfig } from './config.js';
import type { Executor } from './executor.js';
import type { Store, WorkerStore } from './store.js';
import { FolderStore } from './folder/folderStore.js';
import type { Logger } from './types.js';

/**
 * Which store and which executor a command works with: chosen here, and only here. There is one of each
 * today, the folder store and the HTTP executor; a second is added here and nowhere else.
 */
export interface WorkerBackendOptions {
  dir: string;
  config: RunConfig;
  logger: Logger;
  host: string;
  pid: number;
  now: () => number;
  random: () => number;
}

export interface StoreOptions {
  dir: string;
  /** Make the queue if there is none yet (`add`); every other command refuses a place that holds no queue. */
  create: boolean;
  /** How long a claim's lock may go unrefreshed before its claim counts as stuck (--lock-stale). */
  lockStaleMs: number;
  host: string;
}

export async function openStore(options: StoreOptions): Promise<Store> {
  return new FolderStore(options.dir, options);
}

export async function openWorkerStore(options: WorkerBackendOptions): Promise<WorkerStore> {
  const { FolderWorkerStore } = await import('./folder/workerStore.js');
  const { config } = options;
  return FolderWorkerStore.open(options.dir, { ...options, workerId: config.workerId, lockStaleMs: config.lockStaleMs });
}

/** Loaded when a worker starts: the HTTP client is no cost to the commands that call nothing. */
export async function openExecutor(config: RunConfig): Promise<Executor> {
  const { HttpExecutor } = await import('./http/executor.js');
  return new HttpExecutor(config.api);
}
