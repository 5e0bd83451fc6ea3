import * as fs from 'node:fs';
import { ioError } from '../../errors.js';

/** Makes a folder below locks/ unless it exists (another process may make it at the same moment). */
export function makeFolder(dir: string): void {
  // Looked for first: a mkdir that fails with EEXIST costs an exception, and most folders exist already.
  if (fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) return;
  try {
    // Not recursive: locks/ exists, and a recursive mkdir reports ENOENT instead of EROFS or EACCES.
    fs.mkdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw ioError('create the folder', dir, error);
  }
}
