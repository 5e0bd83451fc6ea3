import { TASK_STATES, type StatusReport, type TaskStatus, type WorkerStatus } from './types.js';
import { describeError, formatSpan, plural } from './core/reasons.js';
import { palette, type Palette } from './colors.js';
import { visible } from './core/visible.js';

/** Text for people. Pure: the CLI decides where it goes. */

/** Ids for a one-line message: the first `shown`, then how many more, so a long list never floods the terminal. */
export function idList(ids: readonly string[], more: string, shown = 10): string {
  if (ids.length <= shown) return ids.join(', ');
  return `${ids.slice(0, shown).join(', ')} and ${(ids.length - shown).toLocaleString('en')} more (${more})`;
}

function clip(text: string, width: number): string {
  const flat = text.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ');
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat;
}

type Decorate = (row: number, column: number, cell: string) => string;

/**
 * Aligned columns, handed to `write` a few thousand lines at a time: a table of millions of rows is never
 * one string. `decorate` may colour a padded cell (row -1 is the header): escape codes do not upset the widths.
 */
export function writeTable(header: string[], rows: string[][], write: (text: string) => void, decorate: Decorate = (_r, _c, cell) => cell): void {
  // A loop, not Math.max(...cells): spreading 150,000 rows into arguments overflows the stack.
  const widths = header.map((title) => title.length);
  for (const row of rows) {
    row.forEach((cell, i) => {
      widths[i] = Math.max(widths[i]!, cell.length);
    });
  }
  const line = (cells: string[], row: number) =>
    cells
      .map((cell, i) => decorate(row, i, i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  let batch = [line(header, -1)];
  rows.forEach((cells, row) => {
    batch.push(line(cells, row));
    if (batch.length >= 4096) {
      write(`${batch.join('\n')}\n`);
      batch = [];
    }
  });
  if (batch.length > 0) write(`${batch.join('\n')}\n`);
}

export function renderTable(header: string[], rows: string[][], decorate?: Decorate): string {
  const pieces: string[] = [];
  writeTable(header, rows, (text) => pieces.push(text), decorate);
  return pieces.join('').slice(0, -1);
}

export function summaryLine(report: StatusReport, colors: Palette = palette(false)): string {
  const total = TASK_STATES.reduce((sum, state) => sum + report.counts[state], 0);
  const counts = TASK_STATES.map((state) => colors.state(state, `${report.counts[state]} ${state}`)).join(', ');
  return `${plural(total, 'task')}: ${counts}${report.eta === null ? '' : `; ${report.eta}`}`;
}

export function renderStatus(report: StatusReport, now: number, colors: Palette = palette(false)): string {
  const pieces: string[] = [];
  writeStatus(report, now, (text) => pieces.push(text), colors);
  return pieces.join('');
}

/**
 * `status --watch` on a terminal of `height` lines, like top: the summary and what holds the queue back,
 * then the tasks that matter most now (running ones, then the latest outcomes, then what runs next), and
 * how many rows were left out. Never taller than the terminal, so nothing scrolls away.
 */
export function renderWatch(report: StatusReport, now: number, screen: { height: number; width: number }, colors: Palette = palette(false)): string {
  const { height, width } = screen;
  const head = [summaryLine(report, colors)];
  if (report.weather !== null) head.push(`queue held back: ${visible(report.weather)}`);
  head.push(...report.warnings.map((warning) => `warning: ${visible(warning)}`));
  // One line for the table's header, one for what was left out, one for the cursor.
  const room = Math.max(0, height - head.length - 3);
  const byRecent = (a: TaskStatus, b: TaskStatus) => b.updated_at.localeCompare(a.updated_at);
  const running = report.tasks.filter((task) => task.state === 'running');
  const finished = report.tasks.filter((task) => task.state === 'completed' || task.state === 'failed').sort(byRecent);
  const next = report.tasks.filter((task) => task.state === 'pending');
  const shown = [...running, ...finished, ...next].slice(0, room);
  const left = report.tasks.length - shown.length;
  const table =
    shown.length === 0
      ? ''
      : `${renderStatus({ ...report, tasks: shown, weather: null, warnings: [] }, now, colors)
          .split('\n')
          .slice(0, -2)
          .join('\n')}\n`;
  const more = left > 0 ? `… ${plural(left, 'more task')} (\`worker status\` shows them all)\n` : '';
  // Lines wider than the terminal would wrap, and push the first ones off the top.
  return `${`${head.join('\n')}\n${table}${more}`
    .split('\n')
    .map((line) => clipToWidth(line, width))
    .join('\n')}`;
}

/** A line cut to `width` visible characters; colour codes are kept whole and do not count. */
function clipToWidth(line: string, width: number): string {
  let shown = 0;
  let out = '';
  for (let i = 0; i < line.length; i += 1) {
    const code = /^\u001b\[[0-9;]*m/.exec(line.slice(i, i + 12));
    if (code) {
      out += code[0];
      i += code[0].length - 1;
    } else if (shown < width) {
      out += line[i];
      shown += 1;
    }
  }
  return out;
}

/** The status table, its summary and what holds the queue back, written a few thousand lines at a time. */
export function writeStatus(report: StatusReport, now: number, write: (text: string) => void, colors: Palette = palette(false)): void {
  const rows = report.tasks.map((task) => [
    clip(task.id, 40),
    task.stuck ? 'running (stuck)' : task.state,
    String(task.attempts),
    clip(task.deps.join(',') || '-', 30),
    task.blocked_by ? `dependency ${task.blocked_by} failed` : task.last_error ? clip(describeError(task.last_error), 50) : '-',
    formatSpan(now - Date.parse(task.updated_at)),
    clip(task.reason, 90),
  ]);
  if (rows.length > 0) {
    writeTable(['ID', 'STATE', 'ATTEMPTS', 'DEPS', 'LAST ERROR', 'AGE', 'REASON'], rows, write, (row, column, cell) =>
      row === -1 ? colors.bold(cell) : column === 1 ? colors.state(report.tasks[row]!.state, cell) : cell,
    );
  }
  const parts = [summaryLine(report, colors)];
  if (report.weather !== null) parts.push(`queue held back: ${visible(report.weather)}`);
  parts.push(...report.warnings.map((warning) => `warning: ${visible(warning)}`));
  write(`${parts.join('\n')}\n`);
}

export function renderWorkers(workers: readonly WorkerStatus[], now: number): string {
  if (workers.length === 0) return 'no worker has run on this queue yet\n';
  const rows = workers.map((worker) => [
    worker.worker,
    worker.liveness,
    String(worker.pid),
    worker.host,
    describeTasks(worker),
    String(worker.tasks_done),
    `${formatSpan(now - Date.parse(worker.started_at))} ago`,
    `${formatSpan(now - Date.parse(worker.beat_at))} ago`,
  ]);
  return `${renderTable(['WORKER', 'STATE', 'PID', 'HOST', 'TASK', 'DONE', 'STARTED', 'LAST BEAT'], rows)}\n`;
}

/** What a worker has in flight, for its row: `fetch-3`, `fetch-3 +2 (3 of 8)`, or `-`. */
function describeTasks(worker: WorkerStatus): string {
  const tasks = worker.current_tasks ?? (worker.current_task === null ? [] : [worker.current_task]);
  if (tasks.length === 0) return '-';
  const more = tasks.length > 1 ? ` +${tasks.length - 1}` : '';
  const of = worker.concurrency !== undefined && worker.concurrency > 1 ? ` (${tasks.length} of ${worker.concurrency})` : '';
  return `${tasks[0]}${more}${of}`;
}
