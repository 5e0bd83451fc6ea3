import { WorkerError } from '../errors.js';
import { withQueueLock } from '../queue/queueLock.js';
import type { RetryEvent } from '../queue/schema.js';
import { QueueStore } from '../queue/store.js';

/**
 * `worker retry`: failed tasks go back to pending with fresh attempts, which unblocks their dependents.
 * Under the queue-wide lock, so two retries of one task cannot both count.
 */
export async function retryTasks(dir: string, ids: readonly string[], allFailed: boolean, now: () => Date): Promise<string[]> {
  if (allFailed === (ids.length > 0)) {
    throw new WorkerError('USAGE', allFailed ? 'give either task ids or --failed, not both' : 'name the task to retry, or give --failed', {
      hint: 'worker retry fetch-7   or   worker retry --failed',
    });
  }
  const store = await QueueStore.open(dir);
  try {
    return await withQueueLock(store.paths.queueLock, async () => {
      store.refresh();
      const state = store.state;
      const targets = allFailed ? state.tasks().filter((task) => task.state === 'failed') : ids.map((id) => {
        const task = state.get(id);
        if (!task) throw new WorkerError('NOT_FOUND', `no task "${id}"`, { hint: 'see `worker status` for the task ids' });
        return task;
      });
      for (const task of targets) {
        if (task.state !== 'failed') {
          throw new WorkerError('REJECTED', `task "${task.def.id}" is ${task.state}; only failed tasks can be retried`, { hint: 'nothing was changed' });
        }
      }
      const at = now().toISOString();
      const events: RetryEvent[] = targets.map((task) => ({ type: 'retry', task: task.def.id, at }));
      if (events.length > 0) store.append(events);
      return targets.map((task) => task.def.id);
    });
  } finally {
    store.close();
  }
}
