/**
 * Every error a user can cause or meet is a WorkerError with a code; cli.ts is the only place that
 * turns a code into an exit code. Anything else that escapes is a bug and is printed with its stack.
 */
export type ErrorCode =
  | 'USAGE' // the command line is wrong (unknown option, bad argument)
  | 'CONFIG' // a setting is missing or malformed (flag or environment variable)
  | 'REJECTED' // the queue's rules refuse the request (invalid or duplicate task, unknown dependency, wrong state)
  | 'NOT_FOUND' // a named task does not exist
  | 'DAMAGED' // queue.json or the execution log cannot be read as what it should be
  | 'IO' // the file system refused (permission, disk full, lock held too long)
  | 'TASKS_FAILED' // `run` ended, and tasks it ran failed (their dependents are blocked)
  | 'CREDENTIALS_REFUSED' // `run` stopped: the API refused its credentials (401, 403, 407)
  | 'INTERRUPTED'; // a second SIGINT/SIGTERM aborted the work in progress

export const EXIT_CODES: Record<ErrorCode, number> = {
  USAGE: 2,
  CONFIG: 2,
  REJECTED: 3,
  NOT_FOUND: 3,
  DAMAGED: 4,
  IO: 5,
  TASKS_FAILED: 6,
  CREDENTIALS_REFUSED: 7,
  INTERRUPTED: 130,
};

export const EXIT_BUG = 1;

export class WorkerError extends Error {
  readonly code: ErrorCode;
  /** What the user can do about it; printed after the message. */
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, options: { hint?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'WorkerError';
    this.code = code;
    this.hint = options.hint;
  }
}

/** A file of the queue is damaged or of the wrong shape. It is never rewritten while in this state. */
export class DamagedFileError extends WorkerError {
  readonly file: string;

  constructor(file: string, where: string, what: string) {
    super('DAMAGED', `${file} is damaged (${where}): ${what}`, {
      hint: `nothing was changed. Restore ${file} from a backup or repair it by hand; every command refuses to run until it reads cleanly`,
    });
    this.name = 'DamagedFileError';
    this.file = file;
  }
}

const IO_HINTS: Record<string, string> = {
  ENOSPC: 'the disk is full: free some space and run the command again',
  EDQUOT: 'the disk quota is exhausted: free some space and run the command again',
  EACCES: 'check the permissions of the queue folder (--dir) or run as a user who may write there',
  EPERM: 'check the permissions of the queue folder (--dir) or run as a user who may write there',
  EROFS: 'the file system is read-only: choose another --dir',
};

/** Wraps a failed file-system call so that the user learns which file and what to do. */
export function ioError(action: string, file: string, cause: unknown): WorkerError {
  const code = (cause as NodeJS.ErrnoException | undefined)?.code ?? 'EIO';
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new WorkerError('IO', `could not ${action} ${file}: ${reason}`, {
    hint: IO_HINTS[code] ?? 'the queue is unchanged; run the command again once the cause is fixed',
    cause,
  });
}

/** Any error as a WorkerError: a WorkerError as it is, anything else as an IO error that keeps it as its cause. */
export function asWorkerError(error: unknown): WorkerError {
  if (error instanceof WorkerError) return error;
  return new WorkerError('IO', error instanceof Error ? error.message : String(error), { cause: error });
}
