import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { cp, readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cleanEnv, withTempDir } from '../helpers/cli.js';

const ROOT = resolve(import.meta.dirname, '../..');

/** A copy of the installed CLI (bin/ and dist/) that a test may alter. */
async function copyOfCli(dir: string): Promise<{ bin: string; bundle: string; cache: string }> {
  await cp(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
  await cp(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true });
  return { bin: join(dir, 'bin', 'worker.cjs'), bundle: join(dir, 'dist', 'cli.cjs'), cache: join(dir, 'dist', 'cli.cjs.cache') };
}

function add(bin: string, queueDir: string, id: string) {
  return spawnSync(process.execPath, [bin, '--dir', queueDir, 'add', id, 'Do it'], { env: cleanEnv(), encoding: 'utf8' });
}

/** Whether the loader beside `bin` takes its code cache (in a fresh process, as the CLI would). */
function loaderUsesCache(bin: string): boolean {
  const loader = join(bin, '..', 'loadCli.cjs');
  const script = `process.stdout.write(String(require(${JSON.stringify(loader)}).loadCli().codeCacheUsed))`;
  return execFileSync(process.execPath, ['-e', script], { env: cleanEnv(), encoding: 'utf8' }) === 'true';
}

describe('start-up through the code cache', () => {
  it('uses the code cache the build wrote', () => {
    expect(loaderUsesCache(join(ROOT, 'bin', 'worker.cjs')), 'V8 rejected dist/cli.cjs.cache, or the build did not write it').toBe(true);
  });

  it('never runs a cache made from another build, even one of the same length', async () => {
    await withTempDir(async (dir) => {
      const cli = await copyOfCli(dir);
      const bundle = await readFile(cli.bundle, 'latin1');
      const altered = bundle.replaceAll('`added ', '`ADDED ');
      expect(altered.length).toBe(bundle.length);
      expect(altered).not.toBe(bundle);
      await writeFile(cli.bundle, altered, 'latin1');
      expect(loaderUsesCache(cli.bin)).toBe(false);
      const result = add(cli.bin, join(dir, 'queue-home'), 'a');
      expect(result.stderr).toBe('');
      expect(result.stdout).toBe('ADDED a\n');
    });
  });

  it('runs as usual without a cache, or with a damaged one', async () => {
    await withTempDir(async (dir) => {
      const cli = await copyOfCli(dir);
      const cache = await readFile(cli.cache);
      // One byte changed in the middle: V8 itself would take it (it checks only the header).
      const flipped = Buffer.from(cache);
      flipped[Math.floor(flipped.length / 2)]! ^= 0xff;
      await writeFile(cli.cache, flipped);
      expect(loaderUsesCache(cli.bin)).toBe(false);
      expect(add(cli.bin, join(dir, 'queue-home'), 'a')).toMatchObject({ status: 0, stdout: 'added a\n', stderr: '' });
      // A well-formed file whose V8 data is not a cache at all (as after a Node upgrade): V8 refuses it.
      const foreign = Buffer.alloc(4096, 7);
      const bundle = await readFile(cli.bundle);
      await writeFile(cli.cache, Buffer.concat([createHash('sha1').update(bundle).update(foreign).digest(), foreign]));
      expect(loaderUsesCache(cli.bin)).toBe(false);
      expect(add(cli.bin, join(dir, 'queue-home'), 'a2')).toMatchObject({ status: 0, stdout: 'added a2\n', stderr: '' });
      await writeFile(cli.cache, cache.subarray(0, 10));
      expect(add(cli.bin, join(dir, 'queue-home'), 'b')).toMatchObject({ status: 0, stdout: 'added b\n', stderr: '' });
      await rm(cli.cache);
      expect(add(cli.bin, join(dir, 'queue-home'), 'c')).toMatchObject({ status: 0, stdout: 'added c\n', stderr: '' });
    });
  });

  it('says what to do when the CLI was never built', async () => {
    await withTempDir(async (dir) => {
      const cli = await copyOfCli(dir);
      await rm(join(dir, 'dist'), { recursive: true });
      const result = add(cli.bin, join(dir, 'queue-home'), 'a');
      expect(result.status).toBe(1);
      expect(result.stderr).toBe(`worker: ${cli.bundle} is missing: run \`npm install\` (or \`npm run build\`) in ${dir}\n`);
    });
  });
});
