import { Command, CommanderError, Option } from 'commander';
import { text as readStream } from 'node:stream/consumers';
import { EXIT_BUG, EXIT_CODES, WorkerError } from './errors.js';
import { resolveDir, resolveRunConfig, resolveTaskDefaults, type Env } from './config.js';
import { retryTasks } from './commands/retry.js';

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

  program
    .command('run')
    .description('drain the queue: claim ready tasks one at a time and send each to the API; run several at once')
    .argument('[max-iterations]', 'exit after executing this many tasks (default: no limit)')
    .option('--api-url <url>', 'the API to POST each task to (env WORKER_API_URL; required)')
    .option('--header <line>', "'Name: value' sent with every call, repeatable (env WORKER_API_HEADERS, one per line)", (line: string, all: string[] = []) => [...all, line])
    .option('--timeout <duration>', 'bound on one whole request (env WORKER_API_TIMEOUT; default 120s)')
    .option('--poll-interval <duration>', 'wait between idle checks (env WORKER_POLL_INTERVAL; default 2s)')
    .option('--max-idle <n>', 'exit after this many idle checks in a row, 0 never (env WORKER_MAX_IDLE; default 10)')
    .option('--max-attempts <n>', 'attempts per task before it fails (env WORKER_MAX_ATTEMPTS; default 3)')
    .option('--lock-stale <duration>', "a claim whose lock is not refreshed for this long is taken over (env WORKER_LOCK_STALE; default 30s)")
    .option('--backoff <duration>', 'first retry delay, doubled each attempt, with jitter (env WORKER_BACKOFF; default 1s)')
    .option('--worker-id <id>', 'name in logs and claims (env WORKER_ID; default w-<4 hex>)')
    .option('--drain', 'exit as soon as nothing is ready or running anywhere')
    .option('--verbose', 'also log claim attempts, lost races and lock checks')
    .option('--quiet', 'log only warnings and errors')
    .option('--log-format <format>', 'text or json (one object per line)', 'text')
    .addHelpText(
      'after',
      examples(
        'worker run --api-url http://127.0.0.1:8787/task          # in as many terminals as you like',
        "WORKER_API_URL=https://api.example/v1/tasks worker run --header 'Authorization: Bearer sk-…'",
        'worker run --drain --max-idle 0 --api-url http://127.0.0.1:8787/task   # for scripts and CI',
      ),
    )
    .action(async (maxIterations: string | undefined, flags, command: Command) => {
      const config = resolveRunConfig(flags, maxIterations, env);
      const stop = new AbortController();
      const abort = new AbortController();
      const onSignal = (signal: NodeJS.Signals) => {
        if (!stop.signal.aborted) {
          process.stderr.write(`${new Date().toISOString()} WARN  ${config.workerId} received ${signal}: finishing the running task, then exiting (send it again to abandon the task)\n`);
          stop.abort();
        } else abort.abort();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      try {
        // Loaded only here: undici is the slowest module to load, and only `run` needs it.
        const { runWorker } = await import('./commands/run.js');
        await runWorker({ dir: dirOf(command), config, writeLog: (line) => process.stderr.write(line), signals: { stop: stop.signal, abort: abort.signal } });
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
    });

  program
    .command('retry')
    .description('put failed tasks back to pending with fresh attempts; their blocked dependents can run again')
    .argument('[task-ids...]', 'failed tasks to retry')
    .option('--failed', 'retry every failed task')
    .addHelpText('after', examples('worker retry fetch-7', 'worker retry --failed'))
    .action(async (ids: string[], flags: { failed?: boolean }, command: Command) => {
      const retried = await retryTasks(dirOf(command), ids, flags.failed ?? false, () => new Date());
      process.stdout.write(retried.length === 0 ? 'no failed tasks\n' : `pending again: ${retried.join(', ')}\n`);
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
