import * as fs from 'node:fs';

/** How a lock is made and removed at its path: a hard link from a slot (task locks), or a folder (named locks). */
export interface LockCalls {
  make: (lockPath: string) => void;
  remove: (lockPath: string) => void;
  /** Told of each refresh (for --verbose). */
  onRefresh?: ((lockPath: string) => void) | undefined;
}

/**
 * The file-system calls proper-lockfile is given, and the only ones it may make: a call it makes beyond
 * these (a new version of the library) throws, and the lock is not taken, rather than going to the real
 * file system behind the lock's back. Its `mkdir` makes the lock, `rmdir` and its exit hook's `rmdirSync`
 * remove it, `stat` and `utimes` judge and refresh it.
 *
 * Synchronous, each call answered before it returns: a refresh (a stat, then a utimes) can then never be
 * under way while its process releases the lock, so it never touches a lock another process made at the
 * same path since. It is also cheaper: these are tiny metadata operations, and a thread-pool round trip
 * costs more than each.
 */
export function lockFileSystem(calls: LockCalls): typeof fs {
  const callbackStyle =
    <A extends unknown[], R>(call: (...args: A) => R) =>
    (...args: [...A, (error: Error | null, result?: R) => void]) => {
      const callback = args.pop() as (error: Error | null, result?: R) => void;
      let result: R;
      try {
        result = call(...(args as unknown as A));
      } catch (error) {
        callback(error as Error);
        return;
      }
      callback(null, result);
    };
  return {
    mkdir: callbackStyle((path: fs.PathLike) => calls.make(String(path))),
    stat: callbackStyle((path: fs.PathLike) => fs.statSync(path)),
    rmdir: callbackStyle((path: fs.PathLike) => calls.remove(String(path))),
    // proper-lockfile's exit hook: the locks of a process that exits while holding them go with it.
    rmdirSync: (path: fs.PathLike) => calls.remove(String(path)),
    utimes: callbackStyle((path: fs.PathLike, atime: fs.TimeLike, mtime: fs.TimeLike) => {
      calls.onRefresh?.(String(path));
      fs.utimesSync(path, atime, mtime);
    }),
  } as unknown as typeof fs;
}
