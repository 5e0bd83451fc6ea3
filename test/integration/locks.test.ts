import { execFileSync } from 'node:child_process';
import { linkSync, mkdirSync, readdirSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { buildSync } from 'esbuild';
import lockfile from 'proper-lockfile';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { pruneSlots, slotsDir } from '../../src/folder/lock/lockSlots.js';
import { TaskLocks, type LockOwner } from '../../src/folder/lock/taskLock.js';
import { lockFileSystem } from '../../src/folder/lock/lockFileSystem.js';
import { queuePaths, taskLockPaths, type QueuePaths } from '../../src/folder/paths.js';
import { withTempDir } from '../helpers/cli.js';

// Task locks on a real file system, as two worker processes would take them (each TaskLocks stands for one
// process: its pid names its slots).

const HOST = hostname();
const SRC = join(import.meta.dirname, '..', '..', 'src');

function ownerWith(pid: number): LockOwner {
  return { worker: `w${pid}`, pid, host: HOST };
}

/** The locks of a worker process with this pid. */
function locksOf(paths: QueuePaths, pid: number, staleMs = 10_000): TaskLocks {
  return new TaskLocks(paths, staleMs, { owner: ownerWith(pid) });
}

/** Sets a lock's mtime an hour back, as if its holder had stopped refreshing it; returns that time. */
function leaveUnrefreshed(paths: QueuePaths, taskId: string): number {
  const hourAgo = new Date(Date.now() - 3_600_000);
  utimesSync(taskLockPaths(paths, taskId).lock, hourAgo, hourAgo);
  return hourAgo.getTime();
}

/** The lock still shows the time `leaveUnrefreshed` gave it: nothing done since refreshed it, so it goes stale as it should. */
function expectUnrefreshedSince(paths: QueuePaths, taskId: string, since: number): void {
  expect(statSync(taskLockPaths(paths, taskId).lock).mtimeMs).toBeCloseTo(since, 0);
}

function lockInode(paths: QueuePaths, taskId: string): number {
  return statSync(taskLockPaths(paths, taskId).lock).ino;
}

function slotNames(paths: QueuePaths): string[] {
  try {
    return readdirSync(slotsDir(paths));
  } catch {
    return [];
  }
}

async function withLocksFolder(body: (paths: QueuePaths) => Promise<void>): Promise<void> {
  await withTempDir(async (dir) => {
    const paths = queuePaths(dir);
    mkdirSync(paths.locksDir);
    await body(paths);
  });
}

const neverCompromised = () => {
  throw new Error('the lock was reported compromised');
};

describe('task locks', () => {
  it('are hard links to a slot of their worker: 30 claims in a row make one file, not one per claim', async () => {
    await withLocksFolder(async (paths) => {
      const locks = locksOf(paths, 4242);
      const inodes = new Set<number>();
      for (let i = 0; i < 30; i += 1) {
        const held = await locks.tryAcquire(`task-${i}`, neverCompromised);
        expect(held).not.toBeNull();
        inodes.add(lockInode(paths, `task-${i}`));
        expect(statSync(taskLockPaths(paths, `task-${i}`).lock).nlink).toBe(2);
        await held!.release();
        expect(() => statSync(taskLockPaths(paths, `task-${i}`).lock)).toThrow(/ENOENT/);
      }
      expect(inodes.size).toBe(1);
      expect(slotNames(paths)).toEqual([`${HOST}-4242.0`]);
      locks.close();
      expect(slotNames(paths)).toEqual([]);
    });
  });

  it("refuse a second holder while held, name their maker, and are made from the new holder's own slot once released", async () => {
    await withLocksFolder(async (paths) => {
      const first = locksOf(paths, 1001);
      const second = locksOf(paths, 1002);
      const held = await first.tryAcquire('shared', neverCompromised);
      expect(held).not.toBeNull();
      const firstInode = lockInode(paths, 'shared');
      expect(await second.tryAcquire('shared', neverCompromised)).toBeNull();
      expect(first.inspector.ownerOf('shared')).toEqual(ownerWith(1001));
      await held!.release();
      expect(first.inspector.ownerOf('shared')).toBeNull();
      const taken = await second.tryAcquire('shared', neverCompromised);
      expect(taken).not.toBeNull();
      expect(lockInode(paths, 'shared')).not.toBe(firstInode);
      expect(first.inspector.ownerOf('shared')).toEqual(ownerWith(1002));
      await taken!.release();
      // The slot the refused attempt had taken served the next one: one slot each.
      expect(slotNames(paths).sort()).toEqual([`${HOST}-1001.0`, `${HOST}-1002.0`]);
      first.close();
      second.close();
    });
  });

  it('never make a lock from the slot of a lock that was compromised: that lock may still be there, and would look refreshed', async () => {
    await withLocksFolder(async (paths) => {
      // stale 2 s: proper-lockfile refreshes every second, and finds the mtime it set changed.
      const locks = locksOf(paths, 3003, 2000);
      let compromised: Error | undefined;
      const held = await locks.tryAcquire('frozen', (error) => {
        compromised = error;
      });
      const hourAgo = leaveUnrefreshed(paths, 'frozen');
      for (let waited = 0; compromised === undefined && waited < 5000; waited += 50) await sleep(50);
      expect((compromised as NodeJS.ErrnoException | undefined)?.code).toBe('ECOMPROMISED');
      await held!.release();
      const leftover = lockInode(paths, 'frozen');
      const next = await locks.tryAcquire('next', neverCompromised);
      expect(lockInode(paths, 'next')).not.toBe(leftover);
      expectUnrefreshedSince(paths, 'frozen', hourAgo);
      await next!.release();
      locks.close();
    });
  });

  it('never share a slot between two processes with the same pid (a pid reused; containers with one host name)', async () => {
    await withLocksFolder(async (paths) => {
      // A lock of a process that had this pid is still there, not refreshed for an hour.
      const gone = locksOf(paths, 5005);
      const old = await gone.tryAcquire('old', neverCompromised);
      expect(old).not.toBeNull();
      const hourAgo = leaveUnrefreshed(paths, 'old');
      const locks = locksOf(paths, 5005);
      const held = await locks.tryAcquire('new', neverCompromised);
      expect(lockInode(paths, 'new')).not.toBe(lockInode(paths, 'old'));
      expect(slotNames(paths)).toHaveLength(2);
      expectUnrefreshedSince(paths, 'old', hourAgo);
      await held!.release();
      locks.close();
    });
  });

  it('make a new slot when one was removed from outside while the worker ran', async () => {
    await withLocksFolder(async (paths) => {
      const locks = locksOf(paths, 6006);
      const first = await locks.tryAcquire('a', neverCompromised);
      await first!.release();
      for (const name of slotNames(paths)) unlinkSync(join(slotsDir(paths), name));
      const second = await locks.tryAcquire('b', neverCompromised);
      expect(second).not.toBeNull();
      expect(statSync(taskLockPaths(paths, 'b').lock).nlink).toBe(2);
      await second!.release();
      locks.close();
      expect(slotNames(paths)).toEqual([]);
    });
  });
});

describe('slots left behind', () => {
  it("go with the next sweep when their process is gone, or was killed while writing one; a live one's stay", async () => {
    await withLocksFolder(async (paths) => {
      const dead = Number(execFileSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }));
      mkdirSync(slotsDir(paths));
      const slot = (name: string, contents: string, ageMs: number) => {
        const file = join(slotsDir(paths), name);
        writeFileSync(file, contents);
        const then = new Date(Date.now() - ageMs);
        utimesSync(file, then, then);
      };
      slot(`${HOST}-${dead}.0`, JSON.stringify(ownerWith(dead)), 0);
      slot(`${HOST}-${process.pid}.0`, JSON.stringify(ownerWith(process.pid)), 3_600_000);
      slot(`${HOST}-${dead}.1`, '', 0);
      slot(`another-host-${process.pid}.0`, '', 60_000);
      slot(`${HOST}-${process.pid}.1`, '', 0);
      pruneSlots(paths, HOST, Date.now(), 7 * 86_400_000);
      expect(slotNames(paths).sort()).toEqual([`${HOST}-${process.pid}.0`, `${HOST}-${process.pid}.1`]);
    });
  });
});

describe('proper-lockfile on the link-based file system', () => {
  /** proper-lockfile driven directly through lockFileSystem, recording every call it makes. */
  async function recordedCalls(paths: QueuePaths, use: (options: { fs: typeof import('node:fs'); lockfilePath: string }) => Promise<void>): Promise<string[]> {
    const calls: string[] = [];
    const slot = join(paths.locksDir, 'slot');
    writeFileSync(slot, '');
    const lockFs = lockFileSystem({ make: (lockPath) => linkSync(slot, lockPath), remove: (lockPath) => unlinkSync(lockPath) });
    const recording = new Proxy(lockFs, {
      get(target, name) {
        const value = Reflect.get(target, name);
        if (typeof name === 'string') calls.push(name);
        return value;
      },
    });
    await use({ fs: recording, lockfilePath: join(paths.locksDir, 'task.lock') });
    return [...new Set(calls)].sort();
  }

  it('uses only the calls the link-based fs gives it: lock, refresh, stale takeover, release', async () => {
    await withLocksFolder(async (paths) => {
      const calls = await recordedCalls(paths, async ({ fs, lockfilePath }) => {
        const release = await lockfile.lock(lockfilePath, { lockfilePath, realpath: false, stale: 2000, update: 1000, retries: 0, fs });
        await sleep(1200); // one refresh
        await release();
        writeFileSync(join(paths.locksDir, 'other'), '');
        linkSync(join(paths.locksDir, 'other'), lockfilePath);
        const hourAgo = new Date(Date.now() - 3_600_000);
        utimesSync(lockfilePath, hourAgo, hourAgo);
        const again = await lockfile.lock(lockfilePath, { lockfilePath, realpath: false, stale: 2000, update: 1000, retries: 0, fs });
        await again();
      });
      expect(calls).toEqual(['mkdir', 'rmdir', 'stat', 'utimes']);
    });
  });

  it("a process that exits while holding a lock leaves none behind (proper-lockfile's exit hook)", async () => {
    await withLocksFolder(async (paths) => {
      // A real process: the hook runs on its 'exit'. Built from the sources as the CLI is.
      const script = join(paths.root, 'hold-and-exit.cjs');
      buildSync({
        stdin: {
          contents: `const { TaskLocks } = require(${JSON.stringify(join(SRC, 'folder/lock/taskLock.ts'))});
            const { queuePaths } = require(${JSON.stringify(join(SRC, 'folder/paths.ts'))});
            const locks = new TaskLocks(queuePaths(process.argv[2]), 30000, { owner: { worker: 'w-exit', pid: process.pid, host: 'h' } });
            locks.tryAcquire('held', () => {}).then((lock) => { process.stdout.write(lock ? 'held' : 'none'); process.exit(0); });`,
          resolveDir: SRC,
          loader: 'js',
        },
        bundle: true,
        platform: 'node',
        format: 'cjs',
        outfile: script,
        logLevel: 'silent',
      });
      expect(execFileSync(process.execPath, [script, paths.root], { encoding: 'utf8' })).toBe('held');
      expect(() => statSync(taskLockPaths(paths, 'held').lock)).toThrowError(/ENOENT/);
    });
  });
});
