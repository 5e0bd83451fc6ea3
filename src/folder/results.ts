import { closeSync, fstatSync, mkdirSync, openSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { WorkerError, ioError } from '../errors.js';
import type { QueuePaths } from './paths.js';
import type { ResultRef } from '../types.js';

/**
 * Results larger than this are kept apart from the events, in queue/results/: what the fold reads stays a
 * few hundred bytes per event, so that a worker's and `status`'s memory and time do not grow with the
 * bytes of results. Smaller ones stay in their outcome, where reading them costs nothing more.
 */

export function resultsDir(paths: Pick<QueuePaths, 'queueDir'>): string {
  return join(paths.queueDir, 'results');
}

/**
 * Appends results, as the API sent them, to queue/results/<name>.results: one file per worker, which only
 * that worker writes (its id is held while it runs), so it knows where each result starts. Written before
 * the outcome that refers to it; bytes of a worker killed in between are never referred to.
 */
export class ResultsWriter {
  private fd: number | undefined;
  private size = 0;
  private readonly file: string;

  constructor(
    private readonly paths: Pick<QueuePaths, 'queueDir'>,
    private readonly name: string,
  ) {
    this.file = join(resultsDir(paths), `${name}.results`);
  }

  write(text: string, json: boolean): ResultRef {
    const bytes = Buffer.from(text, 'utf8');
    try {
      if (this.fd === undefined) {
        mkdirSync(resultsDir(this.paths), { recursive: true });
        this.fd = openSync(this.file, 'a');
        this.size = fstatSync(this.fd).size;
      }
      const offset = this.size;
      let written = 0;
      while (written < bytes.length) written += writeSync(this.fd, bytes, written, bytes.length - written);
      this.size += bytes.length;
      return { file: `${this.name}.results`, offset, length: bytes.length, json };
    } catch (error) {
      this.close();
      throw ioError('write a result to', this.file, error);
    }
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}

/** A result kept apart, as the API sent it. */
export function readResultText(paths: Pick<QueuePaths, 'queueDir'>, ref: ResultRef): string {
  const file = join(resultsDir(paths), ref.file);
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new WorkerError('NOT_FOUND', `the result is no longer in ${file}: a compaction moved it since this process read the log`, {
        hint: 'run the command again',
      });
    }
    throw ioError('read', file, error);
  }
  try {
    const buffer = Buffer.allocUnsafe(ref.length);
    let filled = 0;
    while (filled < ref.length) {
      const read = readSync(fd, buffer, filled, ref.length - filled, ref.offset + filled);
      if (read === 0) break;
      filled += read;
    }
    if (filled < ref.length)
      throw new WorkerError('DAMAGED', `${file} is damaged: it ends before the result at byte ${ref.offset} (${ref.length} bytes)`, {
        hint: 'restore it from a backup',
      });
    return buffer.toString('utf8');
  } catch (error) {
    if (error instanceof WorkerError) throw error;
    throw ioError('read', file, error);
  } finally {
    closeSync(fd);
  }
}
