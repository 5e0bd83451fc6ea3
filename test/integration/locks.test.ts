import { mkdirSync, readdirSync, statSync, utimesSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { slotsDir } from '../../src/lock/lockSlots.js';
import { TaskLocks, type LockOwner } from '../../src/lock/taskLock.js';
import { queuePaths, taskLockPaths, type QueuePaths } from '../../src/queue/paths.js';
import { withTempDir } from '../helpers/cli.js';

// Task locks on a real file system, as two worker processes would take them (each TaskLocks stands for one
// process: its pid names its register and slots).

const HOST = hostname();

function ownerWith(pid: number): LockOwner {
  return { worker: `w${pid}`, pid, host: HOST };
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
      const locks = new TaskLocks(paths, 10_000);
      const inodes = new Set<number>();
      for (let i = 0; i < 30; i += 1) {
        const held = await locks.tryAcquire(`task-${i}`, ownerWith(4242), neverCompromised);
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

  it('refuse a second holder while held, name their maker, and are made from the new holder\'s own slot once released', async () => {
    await withLocksFolder(async (paths) => {
      const first = new TaskLocks(paths, 10_000);
      const second = new TaskLocks(paths, 10_000);
      const held = await first.tryAcquire('shared', ownerWith(1001), neverCompromised);
      expect(held).not.toBeNull();
      const firstInode = lockInode(paths, 'shared');
      expect(await second.tryAcquire('shared', ownerWith(1002), neverCompromised)).toBeNull();
      expect(first.ownerOf('shared')).toEqual(ownerWith(1001));
      await held!.release();
      expect(first.ownerOf('shared')).toBeNull();
      const taken = await second.tryAcquire('shared', ownerWith(1002), neverCompromised);
      expect(taken).not.toBeNull();
      expect(lockInode(paths, 'shared')).not.toBe(firstInode);
      expect(first.ownerOf('shared')).toEqual(ownerWith(1002));
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
      const locks = new TaskLocks(paths, 2000);
      let compromised: Error | undefined;
      const held = await locks.tryAcquire('frozen', ownerWith(3003), (error) => {
        compromised = error;
      });
      const hourAgo = new Date(Date.now() - 3_600_000);
      utimesSync(taskLockPaths(paths, 'frozen').lock, hourAgo, hourAgo);
      for (let waited = 0; compromised === undefined && waited < 5000; waited += 50) await sleep(50);
      expect((compromised as NodeJS.ErrnoException | undefined)?.code).toBe('ECOMPROMISED');
      await held!.release();
      const leftover = lockInode(paths, 'frozen');
      const next = await locks.tryAcquire('next', ownerWith(3003), neverCompromised);
      expect(lockInode(paths, 'next')).not.toBe(leftover);
      expect(statSync(taskLockPaths(paths, 'frozen').lock).mtimeMs).toBeCloseTo(hourAgo.getTime(), 0);
      await next!.release();
      locks.close();
    });
  });

  it('never share a slot between two processes with the same pid (a pid reused; containers with one host name)', async () => {
    await withLocksFolder(async (paths) => {
      // A lock of a process that had this pid is still there, not refreshed for an hour.
      const gone = new TaskLocks(paths, 10_000);
      const old = await gone.tryAcquire('old', ownerWith(5005), neverCompromised);
      expect(old).not.toBeNull();
      const hourAgo = new Date(Date.now() - 3_600_000);
      utimesSync(taskLockPaths(paths, 'old').lock, hourAgo, hourAgo);
      const locks = new TaskLocks(paths, 10_000);
      const held = await locks.tryAcquire('new', ownerWith(5005), neverCompromised);
      expect(lockInode(paths, 'new')).not.toBe(lockInode(paths, 'old'));
      expect(slotNames(paths)).toHaveLength(2);
      // The old lock still shows its age: it goes stale as it should.
      expect(statSync(taskLockPaths(paths, 'old').lock).mtimeMs).toBeCloseTo(hourAgo.getTime(), 0);
      await held!.release();
      locks.close();
    });
  });

  it('make a new slot when one was removed from outside while the worker ran', async () => {
    await withLocksFolder(async (paths) => {
      const locks = new TaskLocks(paths, 10_000);
      const first = await locks.tryAcquire('a', ownerWith(6006), neverCompromised);
      await first!.release();
      for (const name of slotNames(paths)) (await import('node:fs')).unlinkSync(join(slotsDir(paths), name));
      const second = await locks.tryAcquire('b', ownerWith(6006), neverCompromised);
      expect(second).not.toBeNull();
      expect(statSync(taskLockPaths(paths, 'b').lock).nlink).toBe(2);
      await second!.release();
      locks.close();
      expect(slotNames(paths)).toEqual([]);
    });
  });
});

describe('slots left behind', () => {
  it('go with the next sweep when their process is gone, or was killed while writing one; a live one\'s stay', async () => {
    await withLocksFolder(async (paths) => {
      const { pruneSlots } = await import('../../src/lock/lockSlots.js');
      const { execFileSync } = await import('node:child_process');
      const { writeFileSync } = await import('node:fs');
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
