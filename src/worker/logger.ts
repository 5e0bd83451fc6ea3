import type { LogFormat, Verbosity } from '../config.js';
import { redactor } from '../core/redact.js';
import { safeJson, visible } from '../core/visible.js';
import type { LogFields, Logger } from '../types.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const LEAST: Record<Verbosity, LogLevel> = { verbose: 'debug', normal: 'info', quiet: 'warn' };

export interface LoggerOptions {
  workerId: string;
  verbosity: Verbosity;
  format: LogFormat;
  write: (line: string) => void;
  now: () => Date;
  /** Values never to print (header values): replaced by ***. */
  secrets: readonly string[];
}

/** One line per event on stderr: ISO time with ms, level, worker id, message; or one JSON object. */
export function createLogger(options: LoggerOptions): Logger {
  const redact = redactor(options.secrets);
  const least = RANK[LEAST[options.verbosity]];
  const log =
    (level: LogLevel) =>
    (message: string, fields: LogFields = {}) => {
      if (RANK[level] < least) return;
      const time = options.now().toISOString();
      if (options.format === 'json') {
        options.write(`${redact(safeJson({ time, level, worker: options.workerId, msg: message, ...fields }))}\n`);
        return;
      }
      const stack = typeof fields.stack === 'string' ? `\n${fields.stack}` : '';
      // A message carries the API's words: they never reach the terminal raw.
      options.write(`${redact(`${time} ${level.toUpperCase().padEnd(5)} ${options.workerId} ${visible(message)}${stack}`)}\n`);
    };
  return { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}
