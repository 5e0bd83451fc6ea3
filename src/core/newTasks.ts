import { WorkerError } from '../errors.js';
import { INTENSITIES, type Intensity, MAX_INSTRUCTION_LENGTH, TASK_ID_PATTERN, TASK_ID_RULE, type TaskDefinition } from '../types.js';

/** A task as a person writes it: on the command line or as one line of a bulk file. */
export interface NewTask {
  id: string;
  instruction: string;
  deps: string[];
  min_budget?: number | undefined;
  max_budget?: number | undefined;
  intensity?: Intensity | undefined;
}

export interface TaskDefaults {
  min_budget: number;
  max_budget: number;
  intensity: Intensity;
}

const BULK_FIELDS = new Set(['id', 'instruction', 'deps', 'min_budget', 'max_budget', 'intensity']);

/** `a,b`, `a, b` and `a,,b,` all mean [a, b]; repeats are kept once. */
export function parseDependencyList(text: string | undefined): string[] {
  if (text === undefined) return [];
  return [
    ...new Set(
      text
        .split(',')
        .map((dep) => dep.trim())
        .filter((dep) => dep.length > 0),
    ),
  ];
}

/**
 * Checks new tasks against the queue and against each other, all or nothing, and returns their
 * definitions. `where(i)` names the i-th task in messages (e.g. "line 7 of tasks.jsonl").
 */
export function defineNewTasks(
  queue: { ids: readonly string[]; removed: ReadonlySet<string> },
  tasks: readonly NewTask[],
  defaults: TaskDefaults,
  now: Date,
  where: (index: number) => string,
): TaskDefinition[] {
  // Ids differ in more than case, so one map by lower case answers both "does it exist" and "does it clash".
  const foldedIds = new Map<string, string>();
  for (const id of queue.ids) foldedIds.set(id.toLowerCase(), id);
  const exists = (id: string) => foldedIds.get(id.toLowerCase()) === id;
  const addedAt = now.toISOString();
  // Dependencies first: a task may depend on one further down its file, and queue.json keeps add order a
  // topological order. Each keeps its own index for messages.
  return dependenciesFirst(tasks, exists, where).map((index) => {
    const task = tasks[index]!;
    const reject = (message: string, hint: string) => {
      throw new WorkerError('REJECTED', `${where(index)}: ${message}`, { hint: `nothing was added; ${hint}` });
    };
    if (!TASK_ID_PATTERN.test(task.id)) {
      reject(`invalid task id ${quote(task.id)}`, `a task id is ${TASK_ID_RULE}`);
    }
    if (exists(task.id)) reject(`task "${task.id}" already exists`, 'choose another id');
    if (queue.removed.has(task.id)) reject(`task id "${task.id}" belonged to a task removed by \`worker clean\``, 'ids are never reused: choose another');
    const sameButCase = foldedIds.get(task.id.toLowerCase());
    if (sameButCase !== undefined) {
      reject(`task id "${task.id}" differs from "${sameButCase}" only in case`, 'ids name files, so they must differ in more than case');
    }
    if (task.instruction.length === 0) reject(`task "${task.id}" has an empty instruction`, 'give the instruction to send to the API');
    if (task.instruction.length > MAX_INSTRUCTION_LENGTH) {
      reject(`the instruction of task "${task.id}" has ${task.instruction.length} characters`, `the limit is ${MAX_INSTRUCTION_LENGTH}`);
    }
    const deps = [...new Set(task.deps.map((dep) => dep.trim()).filter((dep) => dep.length > 0))];
    for (const dep of deps) {
      if (dep === task.id) reject(`task "${task.id}" depends on itself`, 'remove it from its own dependencies');
      if (queue.removed.has(dep))
        reject(`task "${task.id}" depends on "${dep}", which was removed by \`worker clean\``, 'depend on tasks that are still in the queue');
      if (!exists(dep)) {
        reject(`task "${task.id}" depends on ${quote(dep)}, which does not exist`, 'add the dependency first, or in the same file');
      }
    }
    const definition: TaskDefinition = {
      id: task.id,
      instruction: task.instruction,
      deps,
      min_budget: task.min_budget ?? defaults.min_budget,
      max_budget: task.max_budget ?? defaults.max_budget,
      intensity: task.intensity ?? defaults.intensity,
      added_at: addedAt,
    };
    if (definition.min_budget > definition.max_budget) {
      reject(`task "${task.id}" has min_budget ${definition.min_budget} above max_budget ${definition.max_budget}`, 'raise max_budget or lower min_budget');
    }
    foldedIds.set(task.id.toLowerCase(), task.id);
    return definition;
  });
}

/**
 * The indices of `tasks` in an order where each comes after the new tasks it depends on, otherwise as
 * given (the order of the file). A cycle among them is refused, naming it.
 */
function dependenciesFirst(tasks: readonly NewTask[], exists: (id: string) => boolean, where: (index: number) => string): number[] {
  const indexOf = new Map<string, number>();
  tasks.forEach((task, index) => {
    if (!indexOf.has(task.id)) indexOf.set(task.id, index);
  });
  const order: number[] = [];
  const state = new Map<number, 'visiting' | 'done'>();
  const visit = (start: number) => {
    // Iterative depth-first: a chain of 100,000 tasks in one file must not overflow the stack.
    const stack: Array<{ index: number; next: number }> = [{ index: start, next: 0 }];
    state.set(start, 'visiting');
    while (stack.length > 0) {
      const frame = stack.at(-1)!;
      const deps = tasks[frame.index]!.deps;
      if (frame.next < deps.length) {
        const dep = deps[frame.next]!.trim();
        frame.next += 1;
        const depIndex = indexOf.get(dep);
        // Existing tasks, unknown ids and the task itself are judged by defineNewTasks, with their own messages.
        if (depIndex === undefined || depIndex === frame.index || exists(dep)) continue;
        if (state.get(depIndex) === 'done') continue;
        if (state.get(depIndex) === 'visiting') {
          const cycle = [...stack.slice(stack.findIndex((entry) => entry.index === depIndex)).map((entry) => tasks[entry.index]!.id), dep];
          throw new WorkerError('REJECTED', `${where(frame.index)}: the dependencies form a cycle: ${cycle.join(' → ')}`, {
            hint: 'nothing was added; a task cannot wait, directly or through others, for itself',
          });
        }
        state.set(depIndex, 'visiting');
        stack.push({ index: depIndex, next: 0 });
        continue;
      }
      state.set(frame.index, 'done');
      order.push(frame.index);
      stack.pop();
    }
  };
  tasks.forEach((_, index) => {
    if (!state.has(index)) visit(index);
  });
  return order;
}

/**
 * Reads a bulk file: one JSON object per line, blank lines skipped. Line numbers are 1-based. Takes the
 * lines one at a time, so a file of any size is never one string.
 */
export async function parseBulkTasks(rawLines: AsyncIterable<string> | Iterable<string>, source: string): Promise<{ tasks: NewTask[]; lines: number[] }> {
  const tasks: NewTask[] = [];
  const lines: number[] = [];
  let i = -1;
  for await (const raw of rawLines) {
    i += 1;
    const line = raw.trim();
    if (line.length === 0) continue;
    const lineNo = i + 1;
    const bad = (message: string): never => {
      throw new WorkerError('REJECTED', `${source} line ${lineNo}: ${message}`, {
        hint: 'nothing was added; each line is {"id": "…", "instruction": "…", "deps": ["…"]} with optional min_budget, max_budget, intensity',
      });
    };
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      bad('not valid JSON');
    }
    if (typeof json !== 'object' || json === null || Array.isArray(json)) bad('expected a JSON object');
    const record = json as Record<string, unknown>;
    const unknown = Object.keys(record).filter((key) => !BULK_FIELDS.has(key));
    if (unknown.length > 0) bad(`unknown field ${quote(unknown[0]!)}`);
    if (typeof record.id !== 'string') bad('"id" must be a string');
    if (typeof record.instruction !== 'string') bad('"instruction" must be a string');
    const deps = record.deps ?? [];
    if (!Array.isArray(deps) || deps.some((dep) => typeof dep !== 'string')) bad('"deps" must be an array of task ids');
    const task: NewTask = { id: record.id as string, instruction: record.instruction as string, deps: deps as string[] };
    for (const field of ['min_budget', 'max_budget'] as const) {
      const value = record[field];
      if (value === undefined) continue;
      if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) bad(`"${field}" must be a whole number of 0 or more`);
      task[field] = value as number;
    }
    if (record.intensity !== undefined) {
      if (!INTENSITIES.includes(record.intensity as Intensity)) bad(`"intensity" must be one of ${INTENSITIES.join(', ')}`);
      task.intensity = record.intensity as Intensity;
    }
    tasks.push(task);
    lines.push(lineNo);
  }
  return { tasks, lines };
}

/** Quotes a value for a message, showing control characters and cutting very long ones. */
export function quote(value: string): string {
  const shown = value.length > 60 ? `${value.slice(0, 60)}…` : value;
  return JSON.stringify(shown);
}

/**
 * The idempotency key of a task's try: the queue's id, the task's id and its generation (advanced by
 * `worker retry`). Automatic retries and takeovers keep it, so an API that honours it does one try's work once.
 */
export function idempotencyKey(queueId: string, taskId: string, generation: number): string {
  return `${queueId}:${taskId}:${generation}`;
}
