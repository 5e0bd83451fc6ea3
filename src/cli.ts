import { userInfo } from 'node:os';
import { Command, CommanderError, Option } from 'commander';
import { EXIT_BUG, EXIT_CODES, WorkerError } from './errors.js';
import {
  colorsEnabled,
  durationSetting,
  HOST,
  lockStaleSetting,
  resolvePlace,
  resolveRunConfig,
  resolveTaskDefaults,
  type Env,
  type PlaceFlags,
} from './config.js';
import { palette } from './colors.js';
import { plural } from './core/reasons.js';
import { safeJson, visible, visibleLines } from './core/visible.js';
import { repeatUntil } from './core/sleep.js';
import { addTasks, oneTask, readInstruction } from './commands/add.js';
import type { ServeFlags } from './commands/serve.js';
import { inspectQueue, printStatusJson, readStatus } from './commands/status.js';
import { followLog, logLines, renderDetail, renderGraph, showTask, taskResult, type GraphFormat } from './commands/inspect.js';
import {
  cancelTask,
  cleanTasks,
  compactQueue,
  describeCompaction,
  editTask,
  pauseQueue,
  removeTasks,
  rerunTasks,
  resumeQueue,
  retryTasks,
  unlockTask,
} from './commands/repair.js';
import { idList, renderWatch, renderWorkers, writeStatus } from './render.js';
import { openStore } from './backends.js';
import type { Store } from './store.js';
import { TASK_STATES, type QueuePlace, type TaskState } from './types.js';

/** Commander wiring only: argv → options objects → commands. Exit codes are chosen in main(), nowhere else. */

const env: Env = process.env;

function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((line) => `  $ ${line}`).join('\n')}\n`;
}

function placeOf(command: Command): QueuePlace {
  return resolvePlace(command.optsWithGlobals<PlaceFlags>(), env, process.cwd());
}

/**
 * Runs `use` with the store of the command's queue (--dir), closed after. Only `add` creates a queue; every
 * other command refuses a place that holds none. `--lock-stale` of the command, where it has one, judges
 * whether a claim is stuck.
 */
async function withStore<T>(command: Command, use: (store: Store) => Promise<T>, create = false): Promise<T> {
  const { lockStale } = command.opts<{ lockStale?: string }>();
  const store = await openStore({ place: placeOf(command), create, lockStaleMs: lockStaleSetting(lockStale, env), host: HOST });
  try {
    return await use(store);
  } finally {
    await store.close();
  }
}

/** How `status` and `show` judge a running task's lock: the same setting as the workers'. */
const LOCK_STALE_OPTION = [
  '--lock-stale <duration>',
  'a running task whose lock is not refreshed for this long is shown stuck (env WORKER_LOCK_STALE; default 30s)',
] as const;

const ENVIRONMENT = `
Environment (flags win over these, these over defaults):
  WORKER_DIR            --dir: the folder that holds queue/ and locks/
  WORKER_DATABASE_URL   --database-url: the queue in PostgreSQL instead of a folder
  WORKER_QUEUE          --queue: which queue of that database (default: default)
  WORKER_API_URL        run --api-url
  WORKER_API_HEADERS    run --header, one "Name: value" per line
  WORKER_API_TIMEOUT    run --timeout
  WORKER_POLL_INTERVAL  run --poll-interval
  WORKER_MAX_IDLE       run --max-idle
  WORKER_MAX_ATTEMPTS   run --max-attempts
  WORKER_LOCK_STALE     run, status, show, unlock --lock-stale
  WORKER_BACKOFF        run --backoff
  WORKER_RATE           run --rate
  WORKER_CONCURRENCY    run --concurrency
  WORKER_MAX_API_WAIT   run --max-api-wait
  WORKER_ID             run --worker-id
  WORKER_MIN_BUDGET     add --min-budget
  WORKER_MAX_BUDGET     add --max-budget
  WORKER_INTENSITY      add --intensity
  NO_COLOR              no colours
Each command's options: worker <command> --help.
`;

const print = (text: string) => process.stdout.write(text);

/** package.json's version, put in by the build (scripts/build.mjs); `dev` when run from the sources. */
declare const WORKER_VERSION: string | undefined;
const VERSION = typeof WORKER_VERSION === 'string' ? WORKER_VERSION : 'dev';

/** Aborts on the first SIGINT/SIGTERM: for commands that run until stopped (serve, --watch, --follow). */
function untilStopped(): AbortSignal {
  const controller = new AbortController();
  const stop = () => controller.abort();
  // Kept, not once: signal-exit (in proper-lockfile, loaded with a store) kills the process on a signal that
  // it finds no other listener for, and it runs after these when loaded after them.
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('SIGHUP', stop);
  return controller.signal;
}

/** Who runs this command, for the history: `ann@laptop`. */
function whoAmI(): string {
  try {
    return `${userInfo().username}@${HOST}`;
  } catch {
    return `uid ${process.getuid?.() ?? '?'}@${HOST}`;
  }
}

/** `bin`: the path of bin/worker.cjs, which `demo` starts its workers with. */
function buildProgram(bin: string): Command {
  const program = new Command('worker')
    .description('A crash-safe task queue in one folder of files, drained by many `worker run` processes that call an HTTP API.')
    .option('--dir <path>', 'folder that holds queue/ and locks/ (env WORKER_DIR; default: the current folder)')
    .option('--database-url <url>', 'keep the queue in PostgreSQL instead: postgres://user:password@host:5432/db (env WORKER_DATABASE_URL)')
    .option('--queue <name>', 'with --database-url: which queue of the database (env WORKER_QUEUE; default: default)')
    .showSuggestionAfterError(true)
    .showHelpAfterError('(run with --help for usage)')
    // One prefix for every error, commander's own included.
    .configureOutput({ outputError: (message, write) => write(message.replace(/^error: /, 'worker: ')) })
    .addHelpText('after', ENVIRONMENT)
    .version(VERSION, '-V, --version', 'print the version')
    .exitOverride();

  program
    .command('add')
    .description('add one task, or many from a JSON-lines file (all or none)')
    .argument('[task-id]', 'letters, digits, ".", "_", "-"; 1 to 100 characters, starting with a letter or digit')
    .argument('[instruction]', 'what the API is asked to do; "-" reads it from standard input')
    .argument('[deps]', 'comma-separated ids of tasks that must complete first, e.g. "a,b" or "a, b"')
    .option('--file <path>', 'add every task of a JSON-lines file ("-" for standard input)')
    .option('--instruction-file <path>', 'read the instruction of the one task added from this file')
    .option('--min-budget <n>', 'min_budget sent to the API (env WORKER_MIN_BUDGET; default 1000)')
    .option('--max-budget <n>', 'max_budget sent to the API (env WORKER_MAX_BUDGET; default 4000)')
    .option('--intensity <level>', 'low, medium or high (env WORKER_INTENSITY; default medium)')
    .addHelpText(
      'after',
      examples(
        'worker add summarize-1 "Summarize chapter 1"',
        'worker add outline "Outline the book" summarize-1,summarize-2',
        'worker add --file tasks.jsonl      # {"id": "a", "instruction": "…", "deps": []} per line',
        'worker add chapter-9 --instruction-file prompt.md summarize-8',
        'pbpaste | worker add chapter-9 -',
      ),
    )
    .action(async (id: string | undefined, instruction: string | undefined, deps: string | undefined, flags, command: Command) => {
      const task = id === undefined ? undefined : await oneTask(id, instruction, deps, flags.instructionFile);
      const options = {
        task,
        file: flags.file,
        defaults: resolveTaskDefaults(flags, env),
        stdin: process.stdin,
        now: () => new Date(),
      };
      const added = await withStore(command, (store) => addTasks(store, options), true);
      print(added.length === 1 ? `added ${added[0]!.id}\n` : `added ${added.length} tasks\n`);
    });

  program
    .command('status')
    .description('show every task: state, attempts, dependencies, last error, age, and why it is where it is')
    .option('--json', 'print a JSON array instead of the table')
    .addOption(new Option('--state <state>', 'show only tasks in this state').choices(TASK_STATES))
    .option('--watch [interval]', 'redraw every interval (default 1s) until Ctrl-C')
    .option(...LOCK_STALE_OPTION)
    .addHelpText(
      'after',
      examples('worker status', 'worker status --state failed', 'worker status --watch', 'worker status --json | jq \'.[] | select(.state == "failed")\''),
    )
    .action(async (flags: { json?: boolean; state?: TaskState; watch?: string | boolean }, command: Command) => {
      const colors = palette(!flags.json && colorsEnabled(process.stdout, env));
      const show = async () => {
        await withStore(command, async (store) => {
          const report = await readStatus(store, Date.now(), flags.state);
          if (flags.json) await printStatusJson(report, store, print);
          else writeStatus(report, Date.now(), print, colors);
          for (const warning of flags.json ? report.warnings : []) process.stderr.write(`warning: ${warning}\n`);
        });
      };
      if (flags.watch === undefined) return show();
      const everyMs = durationSetting({ flag: '--watch', value: typeof flags.watch === 'string' ? flags.watch : undefined, fallback: '1s', minimumMs: 100 });
      if (!process.stdout.isTTY || flags.json) {
        // Into a pipe or a file: every task, each time.
        return repeatUntil(untilStopped(), everyMs, async () => {
          print('\n');
          await show();
        });
      }
      // On a terminal, like top: what fits, redrawn in place.
      return repeatUntil(untilStopped(), everyMs, async () => {
        const screen = await withStore(command, async (store) =>
          renderWatch(
            await readStatus(store, Date.now(), flags.state),
            Date.now(),
            { height: process.stdout.rows ?? 24, width: process.stdout.columns ?? 80 },
            colors,
          ),
        );
        print(`\u001b[H\u001b[2J${screen}`);
      });
    });

  program
    .command('run')
    .description('drain the queue: claim ready tasks and send each to the API, --concurrency at a time; run several at once')
    .argument('[max-iterations]', 'exit after executing this many tasks (default: no limit)')
    .option('--api-url <url>', 'the API to POST each task to (env WORKER_API_URL; required)')
    .option('--header <line>', "'Name: value' sent with every call, repeatable (env WORKER_API_HEADERS, one per line)", (line: string, all: string[] = []) => [
      ...all,
      line,
    ])
    .option('--timeout <duration>', 'bound on one whole request (env WORKER_API_TIMEOUT; default 120s)')
    .option('--poll-interval <duration>', 'wait between idle checks (env WORKER_POLL_INTERVAL; default 2s)')
    .option('--max-idle <n>', 'exit after this many idle checks in a row, 0 never (env WORKER_MAX_IDLE; default 10)')
    .option('--max-attempts <n>', 'attempts per task before it fails (env WORKER_MAX_ATTEMPTS; default 3)')
    .option('--lock-stale <duration>', 'a claim whose lock is not refreshed for this long is taken over (env WORKER_LOCK_STALE; default 30s)')
    .option('--backoff <duration>', 'first retry delay, doubled each attempt, with jitter (env WORKER_BACKOFF; default 1s)')
    .option('--worker-id <id>', 'name in logs and claims (env WORKER_ID; default w-<8 hex>)')
    .option('--drain', 'exit as soon as nothing is ready or running anywhere')
    .option('--concurrency <n>', 'tasks this process keeps in flight at once, 1 to 1000 (env WORKER_CONCURRENCY; default 1)')
    .option(
      '--rate <calls/period>',
      'all workers of the queue together start at most this many calls per period: 60/m, 5/s, 1000/h (env WORKER_RATE; default none)',
    )
    .option('--no-pause-on-429', "a 429 is one task's retryable error, not a pause of the whole queue")
    .option('--max-api-wait <duration>', 'a task the API keeps asking to wait (429) for this long fails; 0 never (env WORKER_MAX_API_WAIT; default 1h)')
    .option('--verbose', 'also log claim attempts, lost races and lock refreshes')
    .option('--quiet', 'log only warnings and errors; no progress line')
    .option('--log-format <format>', 'text or json (one object per line)', 'text')
    .addHelpText(
      'after',
      examples(
        'worker run --api-url http://127.0.0.1:8787/task          # in as many terminals as you like',
        "WORKER_API_URL=https://api.example/v1/tasks worker run --header 'Authorization: Bearer sk-…'",
        'worker run --drain --api-url http://127.0.0.1:8787/task   # for scripts and CI',
      ),
    )
    .action(async (maxIterations: string | undefined, flags, command: Command) => {
      const config = resolveRunConfig(flags, maxIterations, env);
      const stop = new AbortController();
      const abort = new AbortController();
      const onSignal = (signal: NodeJS.Signals) => {
        if (!stop.signal.aborted) {
          process.stderr.write(
            `${new Date().toISOString()} WARN  ${config.workerId} received ${signal}: finishing the running task, then exiting (send it again to abandon the task)\n`,
          );
          stop.abort();
        } else abort.abort();
      };
      // Kept until the process ends: a second signal that arrives while it exits must not kill it mid-way.
      // SIGHUP (the terminal closed) is a first signal too: the call in flight is finished and recorded.
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      process.on('SIGHUP', onSignal);
      // A log nobody can read any more (the terminal or the pipe closed: EIO, EPIPE) is no reason to drop a
      // call in flight: the worker stops as on a first signal, and its log lines go nowhere.
      process.stderr.on('error', () => stop.abort());
      // Loaded only here: undici is the slowest module to load, and only `run` needs it.
      const { runWorker } = await import('./commands/run.js');
      await runWorker({
        place: placeOf(command),
        config,
        writeLog: (line) => process.stderr.write(line),
        signals: { stop: stop.signal, abort: abort.signal },
        progress: process.stderr.isTTY === true && config.verbosity !== 'quiet' && config.logFormat === 'text',
        colors: colorsEnabled(process.stderr, env),
      });
    });

  program
    .command('show')
    .description('everything about one task: definition, state and why, dependencies, dependents, every attempt, result')
    .argument('<task-id>')
    .option('--json', 'print JSON')
    .option(...LOCK_STALE_OPTION)
    .addHelpText('after', examples('worker show fetch-7', 'worker show outline --json | jq .result'))
    .action(async (id: string, flags: { json?: boolean }, command: Command) => {
      const detail = await withStore(command, (store) => showTask(store, Date.now(), id));
      print(flags.json ? `${safeJson(detail, 2)}\n` : renderDetail(detail, Date.now()));
    });

  program
    .command('result')
    .description("one completed task's result alone, as the API sent it, for scripts")
    .argument('<task-id>')
    .option('--json', 'the parsed form, as JSON (a text result becomes a JSON string)')
    .addHelpText('after', examples('worker result outline > outline.md', 'worker result fetch-1 --json | jq .output'))
    .action(async (id: string, flags: { json?: boolean }, command: Command) => {
      const result = await withStore(command, (store) => taskResult(store, Date.now(), id));
      // As the API sent it into a pipe or a file; on a terminal, its controls escaped.
      print(flags.json ? `${safeJson(result.parsed, 2)}\n` : process.stdout.isTTY ? visibleLines(result.raw) : result.raw);
    });

  program
    .command('logs')
    .description('the execution log as readable lines, of every task or of one')
    .argument('[task-id]')
    .option('--follow', 'keep printing new events until Ctrl-C')
    .addHelpText('after', examples('worker logs', 'worker logs fetch-7', 'worker logs --follow'))
    .action(async (id: string | undefined, flags: { follow?: boolean }, command: Command) => {
      await withStore(command, async (store) => {
        if (flags.follow) await followLog(store, id, print, untilStopped());
        else print((await logLines(store, id)).map((line) => `${line}\n`).join(''));
      });
    });

  program
    .command('graph')
    .description("the dependency graph with each task's state, as Mermaid (default) or Graphviz dot")
    .addOption(new Option('--format <format>', 'mermaid or dot').choices(['mermaid', 'dot']).default('mermaid'))
    .addHelpText('after', examples('worker graph > queue.mmd', 'worker graph --format dot | dot -Tsvg > queue.svg'))
    .action(async (flags: { format: GraphFormat }, command: Command) => {
      const context = await withStore(command, (store) => inspectQueue(store, Date.now()));
      print(renderGraph(context, flags.format));
    });

  program
    .command('workers')
    .description('every worker that ran here, from its heartbeat: alive, stopped, dead or silent, and what it is doing')
    .option('--json', 'print JSON')
    .addHelpText('after', examples('worker workers'))
    .action(async (flags: { json?: boolean }, command: Command) => {
      const workers = await withStore(command, async (store) => store.workers(HOST, Date.now()));
      print(flags.json ? `${safeJson(workers, 2)}\n` : renderWorkers(workers, Date.now()));
    });

  program
    .command('retry')
    .description('put failed tasks back to pending with fresh attempts; their blocked dependents can run again')
    .argument('[task-ids...]', 'failed tasks to retry')
    .option('--failed', 'retry every failed task')
    .addHelpText('after', examples('worker retry fetch-7', 'worker retry --failed'))
    .action(async (ids: string[], flags: { failed?: boolean }, command: Command) => {
      const retried = await withStore(command, (store) => retryTasks(store, ids, flags.failed ?? false, { by: whoAmI(), now: () => new Date() }));
      print(retried.length === 0 ? 'no failed tasks\n' : `pending again: ${idList(retried, 'see worker status --state pending')}\n`);
    });

  program
    .command('rerun')
    .description('run completed tasks again, with a new idempotency key; their dependents wait for them again')
    .argument('[task-ids...]', 'completed tasks to run again')
    .option('--completed', 'every completed task')
    .option('--with-dependents', 'also the completed tasks built on them, directly or through others')
    .addHelpText('after', examples('worker rerun outline', 'worker rerun summarize-3 --with-dependents'))
    .action(async (ids: string[], flags: { completed?: boolean; withDependents?: boolean }, command: Command) => {
      const options = { completed: flags.completed ?? false, withDependents: flags.withDependents ?? false, by: whoAmI(), now: () => new Date() };
      const rerun = await withStore(command, (store) => rerunTasks(store, ids, options));
      print(rerun.length === 0 ? 'no completed tasks\n' : `pending again: ${idList(rerun, 'see worker status --state pending')}\n`);
    });

  program
    .command('cancel')
    .description('a task will not run, or stops running: it fails (kind cancelled) and its dependents are blocked; `retry` undoes it')
    .argument('<task-id>')
    .addHelpText('after', examples('worker cancel appendix', 'worker cancel fetch-3     # running: its worker stops the call'))
    .action(async (id: string, _flags, command: Command) => {
      const options = { by: whoAmI(), now: () => new Date(), waitMs: 10_000, sleep: (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)) };
      const { blocked, stopped } = await withStore(command, (store) => cancelTask(store, id, options));
      const how = {
        cancelled: `cancelled ${id}: its worker stopped the call`,
        requested: `cancel of ${id} requested: its worker stops the call at its next look (see \`worker show ${id}\`)`,
        'finished first': `${id} finished before its worker saw the cancel: see \`worker show ${id}\``,
      };
      const said = stopped === undefined ? `cancelled ${id}` : how[stopped];
      print(`${said}${blocked.length > 0 ? `; blocked now: ${idList(blocked, 'see worker status --state blocked')}` : ''}\n`);
    });

  program
    .command('edit')
    .description('change the instruction of a task that is still to run (pending, blocked, failed): its next attempt sends it')
    .argument('<task-id>')
    .option('--instruction <text>', 'the new instruction')
    .option('--instruction-file <path>', 'read the new instruction from a file ("-" for standard input)')
    .addHelpText('after', examples('worker edit fetch-7 --instruction "Fetch chapter 7 from the archive"', 'worker edit outline --instruction-file prompt.md'))
    .action(async (id: string, flags: { instruction?: string; instructionFile?: string }, command: Command) => {
      if ((flags.instruction === undefined) === (flags.instructionFile === undefined)) {
        throw new WorkerError('USAGE', 'give the new instruction with --instruction or --instruction-file, one of them', {
          hint: 'worker edit <task-id> --instruction "…"   or   worker edit <task-id> --instruction-file prompt.md',
        });
      }
      const instruction = flags.instruction ?? (await readInstruction(flags.instructionFile!));
      print(`${await withStore(command, (store) => editTask(store, id, instruction, { by: whoAmI(), now: () => new Date() }))}\n`);
    });

  program
    .command('remove')
    .description('take pending, blocked, failed or cancelled tasks out of the queue for good (completed ones: clean)')
    .argument('<task-ids...>', 'tasks to remove')
    .option('--with-dependents', 'also remove the tasks that depend on them, directly or through others')
    .addHelpText('after', examples('worker remove fetch-7', 'worker remove fetch-7 --with-dependents'))
    .action(async (ids: string[], flags: { withDependents?: boolean }, command: Command) => {
      const options = { withDependents: flags.withDependents ?? false, now: () => new Date(), by: whoAmI() };
      const { removed, compaction } = await withStore(command, (store) => removeTasks(store, ids, options));
      print(`removed ${idList(removed, 'see worker status')}\n${describeCompaction(compaction)}\n`);
    });

  program
    .command('unlock')
    .description('remove the lock of a task whose worker is gone or whose lock is stale (a live lock is refused)')
    .argument('<task-id>')
    .option('--lock-stale <duration>', 'a lock not refreshed for this long is stale (env WORKER_LOCK_STALE; default 30s)')
    .addHelpText('after', examples('worker unlock fetch-3'))
    .action(async (id: string, _flags: { lockStale?: string }, command: Command) => {
      print(`${await withStore(command, (store) => unlockTask(store, id, Date.now))}\n`);
    });

  program
    .command('clean')
    .description('remove completed tasks from queue.json, keeping those that remaining tasks depend on')
    .argument('[task-ids...]', 'completed tasks to remove')
    .option('--completed', 'remove every completed task no remaining task depends on')
    .option('--older-than <duration>', 'with --completed: only tasks completed at least this long ago, e.g. 7d')
    .addHelpText('after', examples('worker clean --completed --older-than 7d', 'worker clean fetch-1 summarize-1'))
    .action(async (ids: string[], flags: { completed?: boolean; olderThan?: string }, command: Command) => {
      const olderThanMs =
        flags.olderThan === undefined
          ? undefined
          : durationSetting({ flag: '--older-than', value: flags.olderThan, fallback: '0s', minimumMs: 0, maximumMs: Number.MAX_SAFE_INTEGER });
      const { removed, kept, compaction } = await withStore(command, (store) =>
        cleanTasks(store, ids, { completed: flags.completed ?? false, olderThanMs, now: Date.now, by: whoAmI() }),
      );
      print(
        `removed ${plural(removed.length, 'completed task')}${kept.length > 0 ? `; kept ${kept.length} that remaining tasks depend on: ${idList(kept, 'see worker status --state completed')}` : ''}\n`,
      );
      if (compaction) print(`${describeCompaction(compaction)}\n`);
    });

  program
    .command('pause')
    .description('claim nothing more, from any worker, until `worker resume`; calls in flight finish and are recorded')
    .addHelpText('after', examples('worker pause', 'worker resume'))
    .action(async (_flags, command: Command) => {
      print(`${await withStore(command, (store) => pauseQueue(store, whoAmI(), () => new Date()))}\n`);
    });

  program
    .command('resume')
    .description('workers claim again after `worker pause`')
    .addHelpText('after', examples('worker resume'))
    .action(async (_flags, command: Command) => {
      print(`${await withStore(command, (store) => resumeQueue(store, whoAmI(), () => new Date()))}\n`);
    });

  program
    .command('compact')
    .description(
      'rewrite the execution log without what it no longer needs (events of removed tasks, events that did not count, unused results), while workers run',
    )
    .addHelpText('after', examples('worker compact', 'worker clean --completed --older-than 7d   # compacts too'))
    .action(async (_flags, command: Command) => {
      print(`${describeCompaction(await withStore(command, (store) => compactQueue(store, () => new Date())))}\n`);
    });

  program
    .command('copy-to')
    .description("copy this folder's queue into a queue of a PostgreSQL database that holds no task yet: definitions, states, attempts, history, results")
    .argument('<database-url>', 'postgres://user:password@host:5432/db (or "-" for the one WORKER_DATABASE_URL names)')
    .option('--to-queue <name>', 'the queue of the database to copy into', 'default')
    .addHelpText('after', examples('worker --dir ./queue-folder copy-to postgres://worker@db.example/queues', 'worker copy-to - --to-queue book'))
    .action(async (url: string, flags: { toQueue: string }, command: Command) => {
      const source = placeOf(command);
      if (source.kind !== 'folder') {
        throw new WorkerError('USAGE', 'copy-to copies the queue of a folder (--dir), and --database-url was given', {
          hint: 'worker --dir <folder> copy-to postgres://…',
        });
      }
      const target = resolvePlace({ databaseUrl: url === '-' ? env.WORKER_DATABASE_URL : url, queue: flags.toQueue }, {}, process.cwd());
      if (target.kind !== 'database')
        throw new WorkerError('USAGE', 'copy-to needs a database URL, and WORKER_DATABASE_URL is not set', { hint: 'give it: worker copy-to postgres://…' });
      const { copyQueue } = await import('./commands/copy.js');
      const copied = await withStore(command, async (from) => {
        const into = await openStore({ place: target, create: true, lockStaleMs: 30_000, host: HOST });
        try {
          return { ...(await copyQueue(from, into)), where: into.describe() };
        } finally {
          await into.close();
        }
      });
      print(`copied ${plural(copied.tasks, 'task')} and ${plural(copied.records, 'history record')} into ${copied.where}\n`);
    });

  program
    .command('serve')
    .description('a reference API that speaks the task contract, for trying worker out and for tests (not for production)')
    .option('--port <n>', 'port to listen on (0: any free port)', '8787')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--latency <duration>', 'time per call, fixed (50ms) or a random range (20ms..200ms)', '50ms')
    .option('--fail-rate <share>', 'share of calls, 0 to 1, answered with --status-code instead', '0')
    .option('--status-code <n>', 'status of those failures', '503')
    .addHelpText(
      'after',
      examples('worker serve', 'worker serve --latency 20ms..200ms --fail-rate 0.1 --status-code 500', 'worker run --api-url http://127.0.0.1:8787/task'),
    )
    .action(async (flags: ServeFlags) => {
      const { serve } = await import('./commands/serve.js');
      await serve(flags, print, untilStopped());
    });

  program
    .command('demo')
    .description('see it work in one command: a reference API, about 20 tasks with dependencies, 3 workers, live progress')
    .addHelpText(
      'after',
      examples(
        'worker demo',
        'worker --dir /tmp/my-demo demo      # keep the queue where you can look at it',
        'worker --database-url postgres://localhost/queues --queue demo demo',
      ),
    )
    .action(async (_flags, command: Command) => {
      const { runDemo } = await import('./commands/demo.js');
      const place = placeOf(command);
      const explicit = command.optsWithGlobals<PlaceFlags>().dir ?? env.WORKER_DIR;
      await runDemo({
        place: place.kind === 'folder' && explicit === undefined ? undefined : place,
        bin,
        write: print,
        progress: process.stdout.isTTY === true,
        colors: colorsEnabled(process.stdout, env),
      });
    });

  return program;
}

/** Runs one command line; resolves to the process's exit code. Called by bin/worker.cjs. */
export async function main(argv: string[], bin: string): Promise<number> {
  // `worker status | head` closes the pipe early: that is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(0);
    throw error;
  });
  try {
    await buildProgram(bin).parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Commander has already printed its message; help and version are not failures.
      return error.exitCode === 0 ? 0 : EXIT_CODES.USAGE;
    }
    if (error instanceof WorkerError) {
      process.stderr.write(`worker: ${visible(`${error.message}${error.hint ? `; ${error.hint}` : ''}`)}\n`);
      return EXIT_CODES[error.code];
    }
    process.stderr.write(`worker: internal error (a bug; please report it with this output):\n${error instanceof Error ? error.stack : String(error)}\n`);
    return EXIT_BUG;
  }
}
