import { Command, CommanderError, Option } from 'commander';
import { text as readStream } from 'node:stream/consumers';
import { EXIT_BUG, EXIT_CODES, WorkerError } from './errors.js';
import { resolveDir, resolveTaskDefaults, type Env } from './config.js';
import { addTasks } from './commands/add.js';
import { readStatus } from './commands/status.js';
import { renderStatus } from './render.js';
import { TASK_STATES, type TaskState } from './types.js';

/** Commander wiring only: argv → options objects → commands. Exit codes are chosen in main(), nowhere else. */

const env: Env = process.env;

function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((line) => `  $ ${line}`).join('\n')}\n`;
}

function dirOf(command: Command): string {
  return resolveDir(command.optsWithGlobals<{ dir?: string }>().dir, env, process.cwd());
}

function buildProgram(): Command {
  const program = new Command('worker')
    .description('A crash-safe task queue in one folder of files, drained by many `worker run` processes that call an HTTP API.')
    .option('--dir <path>', 'folder that holds queue/ and locks/ (env WORKER_DIR; default: the current folder)')
    .showSuggestionAfterError(true)
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ outputError: (message, write) => write(message) })
    .exitOverride();

  program
    .command('add')
    .description('add one task, or many from a JSON-lines file (all or none)')
    .argument('[task-id]', 'letters, digits, ".", "_", "-"; 1 to 100 characters, starting with a letter or digit')
    .argument('[instruction]', 'what the API is asked to do')
    .argument('[deps]', 'comma-separated ids of tasks that must complete first, e.g. "a,b" or "a, b"')
    .option('--file <path>', 'add every task of a JSON-lines file ("-" for standard input)')
    .option('--min-budget <n>', 'min_budget sent to the API (env WORKER_MIN_BUDGET; default 1000)')
    .option('--max-budget <n>', 'max_budget sent to the API (env WORKER_MAX_BUDGET; default 4000)')
    .option('--intensity <level>', 'low, medium or high (env WORKER_INTENSITY; default medium)')
    .addHelpText(
      'after',
      examples(
        'worker add summarize-1 "Summarize chapter 1"',
        'worker add outline "Outline the book" summarize-1,summarize-2',
        'worker add --file tasks.jsonl      # {"id": "a", "instruction": "…", "deps": []} per line',
      ),
    )
    .action(async (id: string | undefined, instruction: string | undefined, deps: string | undefined, flags, command: Command) => {
      if (id !== undefined && instruction === undefined) {
        throw new WorkerError('USAGE', `missing <instruction> for task "${id}"`, { hint: 'worker add <task-id> <instruction> [deps]' });
      }
      const added = await addTasks({
        dir: dirOf(command),
        task: id !== undefined && instruction !== undefined ? { id, instruction, deps } : undefined,
        file: flags.file,
        defaults: resolveTaskDefaults(flags, env),
        readStdin: () => readStream(process.stdin),
        now: () => new Date(),
      });
      process.stdout.write(added.length === 1 ? `added ${added[0]!.id}\n` : `added ${added.length} tasks\n`);
    });

  program
    .command('status')
    .description('show every task: state, attempts, dependencies, last error, age')
    .option('--json', 'print a JSON array instead of the table')
    .addOption(new Option('--state <state>', 'show only tasks in this state').choices(TASK_STATES))
    .addHelpText('after', examples('worker status', 'worker status --state failed', 'worker status --json | jq ".[] | select(.state == \\"failed\\")"'))
    .action(async (flags: { json?: boolean; state?: TaskState }, command: Command) => {
      const report = await readStatus(dirOf(command), flags.state);
      if (flags.json) process.stdout.write(`${JSON.stringify(report.tasks, null, 2)}\n`);
      else process.stdout.write(renderStatus(report, Date.now()));
      for (const warning of flags.json ? report.warnings : []) process.stderr.write(`warning: ${warning}\n`);
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  try {
    await buildProgram().parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has already printed its message; help and version are not failures.
      return error.exitCode === 0 ? 0 : EXIT_CODES.USAGE;
    }
    if (error instanceof WorkerError) {
      process.stderr.write(`worker: ${error.message}${error.hint ? `; ${error.hint}` : ''}\n`);
      return EXIT_CODES[error.code];
    }
    process.stderr.write(`worker: internal error (a bug; please report it with this output):\n${error instanceof Error ? error.stack : String(error)}\n`);
    return EXIT_BUG;
  }
}

process.exitCode = await main(process.argv);
