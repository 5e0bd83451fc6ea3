import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { WorkerError, ioError } from '../errors.js';
import { parseBulkTasks, parseDependencyList, type NewTask, type TaskDefaults } from '../core/newTasks.js';
import type { Store } from '../store.js';
import type { TaskDefinition } from '../types.js';

export interface AddOptions {
  /** One task from the command line… */
  task?: { id: string; instruction: string; deps: string | undefined } | undefined;
  /** …or a bulk file of JSON lines (`-` for standard input). */
  file?: string | undefined;
  defaults: TaskDefaults;
  stdin: NodeJS.ReadableStream;
  now: () => Date;
}

export async function addTasks(store: Store, options: AddOptions): Promise<TaskDefinition[]> {
  const { tasks, where } = await collectTasks(options);
  return store.addTasks(tasks, options.defaults, options.now(), where);
}

async function collectTasks(options: AddOptions): Promise<{ tasks: NewTask[]; where: (index: number) => string }> {
  if (options.file !== undefined && options.task !== undefined) {
    throw new WorkerError('USAGE', 'give either <task-id> <instruction> [deps] or --file, not both', {
      hint: 'worker add summarize-1 "Summarize chapter 1"   or   worker add --file tasks.jsonl',
    });
  }
  if (options.task !== undefined) {
    const { id, instruction, deps } = options.task;
    return { tasks: [{ id, instruction, deps: parseDependencyList(deps) }], where: () => 'refused' };
  }
  if (options.file === undefined) {
    throw new WorkerError('USAGE', 'missing <task-id> and <instruction>', {
      hint: 'worker add summarize-1 "Summarize chapter 1" [deps]   or   worker add --file tasks.jsonl',
    });
  }
  const source = options.file === '-' ? 'standard input' : options.file;
  const input = options.file === '-' ? options.stdin : createReadStream(options.file);
  // Line by line: a bulk file past 512 MiB is never one string.
  const lines = createInterface({ input, crlfDelay: Infinity });
  try {
    const { tasks, lines: lineNumbers } = await parseBulkTasks(lines, source);
    return { tasks, where: (index) => `${source} line ${lineNumbers[index]}` };
  } catch (error) {
    if (error instanceof WorkerError) throw error;
    throw ioError('read', source, error);
  } finally {
    lines.close();
  }
}

/**
 * The one task of `worker add <id> <instruction> [deps]`: its instruction given, read from standard input
 * (`-`), or from `--instruction-file` (then the second argument, if any, is the dependencies).
 */
export async function oneTask(
  id: string,
  instruction: string | undefined,
  deps: string | undefined,
  instructionFile: string | undefined,
): Promise<{ id: string; instruction: string; deps: string | undefined }> {
  if (instructionFile !== undefined) {
    if (deps !== undefined) {
      throw new WorkerError('USAGE', 'an instruction was given both as an argument and by --instruction-file', {
        hint: 'worker add <task-id> --instruction-file <path> [deps]',
      });
    }
    return { id, instruction: await readInstruction(instructionFile), deps: instruction };
  }
  if (instruction === undefined) {
    throw new WorkerError('USAGE', `missing <instruction> for task "${id}"`, {
      hint: 'worker add <task-id> <instruction> [deps], with "-" to read it from standard input, or --instruction-file <path>',
    });
  }
  return { id, instruction: instruction === '-' ? await readInstruction('-') : instruction, deps };
}

/** An instruction from a file or standard input (`-`), as written, but for one final line break. */
export async function readInstruction(source: string, stdin: NodeJS.ReadableStream = process.stdin): Promise<string> {
  let text: string;
  try {
    if (source === '-') {
      const chunks: Buffer[] = [];
      for await (const chunk of stdin) chunks.push(chunk as Buffer);
      text = Buffer.concat(chunks).toString('utf8');
    } else {
      text = await readFile(source, 'utf8');
    }
  } catch (error) {
    throw ioError('read', source === '-' ? 'standard input' : source, error);
  }
  return text.replace(/\r?\n$/, '');
}
