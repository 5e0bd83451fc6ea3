import { WorkerError } from '../errors.js';
import { plural } from '../core/reasons.js';
import type { Store } from '../store.js';
import type { ChangeRecord } from '../types.js';

/**
 * `worker copy-to`: the whole queue of a folder into a queue of a database that holds no task yet:
 * definitions, states, attempts, the history that counted, results, and the queue's identity (so that
 * a task's idempotency key stays the same). Refused while a task runs: its worker would record its outcome
 * into the folder, not the copy.
 */
export async function copyQueue(source: Store, target: Store): Promise<{ tasks: number; records: number }> {
  const state = await source.read();
  const running = state.runningTasks();
  if (running.length > 0) {
    throw new WorkerError(
      'REJECTED',
      `${plural(running.length, 'task')} ${running.length === 1 ? 'is' : 'are'} running: ${running.map((task) => task.def.id).join(', ')}`,
      {
        hint: 'nothing was copied; stop the workers (Ctrl-C lets them finish their calls), then copy',
      },
    );
  }
  const queueId = await source.queueId();
  if (queueId === null || state.size === 0) {
    throw new WorkerError('REJECTED', 'the queue holds no task: there is nothing to copy', { hint: 'add tasks to the database queue itself' });
  }
  const history: ChangeRecord[] = [];
  await source.history((event, counted) => {
    if (counted === 'accepted') history.push(event);
  });
  const records = await target.receive({ queueId, state, history, result: (ref) => source.readResult(ref) });
  return { tasks: state.size, records };
}
