import { TASK_STATES, type AttemptError } from './types.js';
import type { StatusReport } from './commands/status.js';

/** Text for people. Pure: the CLI decides where it goes. */

export function describeError(error: AttemptError): string {
  const status = error.http_status === undefined || error.kind !== 'http' ? '' : ` ${error.http_status}`;
  return `${error.kind}${status}: ${error.message}`;
}

export function formatAge(fromIso: string, now: number): string {
  const seconds = Math.max(0, Math.round((now - Date.parse(fromIso)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

function clip(text: string, width: number): string {
  const flat = text.replace(/[\u0000-\u001f\u007f]+/g, ' ');
  return flat.length > width ? `${flat.slice(0, width - 1)}…` : flat;
}

export function renderTable(header: string[], rows: string[][]): string {
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

export function summaryLine(report: StatusReport): string {
  const total = TASK_STATES.reduce((sum, state) => sum + report.counts[state], 0);
  return `${total} task${total === 1 ? '' : 's'}: ${TASK_STATES.map((state) => `${report.counts[state]} ${state}`).join(', ')}`;
}

export function renderStatus(report: StatusReport, now: number): string {
  const rows = report.tasks.map((task) => [
    clip(task.id, 40),
    task.state === 'running' && task.worker ? `running on ${task.worker}` : task.state,
    String(task.attempts),
    clip(task.deps.join(',') || '-', 30),
    task.blocked_by ? `dependency ${task.blocked_by} failed` : task.last_error ? clip(describeError(task.last_error), 60) : '-',
    formatAge(task.updated_at, now),
  ]);
  const parts = [];
  if (rows.length > 0) parts.push(renderTable(['ID', 'STATE', 'ATTEMPTS', 'DEPS', 'LAST ERROR', 'AGE'], rows));
  parts.push(summaryLine(report));
  parts.push(...report.warnings.map((warning) => `warning: ${warning}`));
  return `${parts.join('\n')}\n`;
}
