// Bundles the CLI into dist/: Node 20 loads one bundle far faster than hundreds of small modules, and a
// CommonJS bundle can be run through V8's code cache (bin/loadCli.cjs), which this script then writes
// by running a few commands once. undici, needed by `worker run` only, and pg, needed only for a queue in a
// database, are bundles of their own that the CLI requires when it needs them.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../bin/worker.cjs', import.meta.url));
const ROOT = fileURLToPath(new URL('..', import.meta.url));
/**
 * What the CLI uses of undici, and the module of undici that defines each. Not undici's index: it loads
 * fetch, WebSocket, cookies and mocks as well, and makes Node load its own internal copy of undici,
 * ~40 ms of every worker's start. undici is pinned by the lockfile; a module that moves fails the build.
 */
const UNDICI_EXPORTS = { Agent: 'undici/lib/dispatcher/agent.js' };

async function bundle() {
  const dist = join(ROOT, 'dist');
  rmSync(dist, { recursive: true, force: true });
  // absWorkingDir: `undici` resolves from the project's node_modules wherever the build is started from.
  const common = { absWorkingDir: ROOT, bundle: true, format: 'cjs', platform: 'node', target: 'node20.18', logLevel: 'warning' };
  const undiciEntry = Object.entries(UNDICI_EXPORTS)
    .map(([name, module]) => `exports.${name} = require(${JSON.stringify(module)});`)
    .join('\n');
  await build({ ...common, stdin: { contents: undiciEntry, resolveDir: ROOT, loader: 'js' }, outfile: join(dist, 'undici.cjs') });
  // The PostgreSQL client, loaded by commands on a database only. pg-native is an optional binding pg never needs.
  await build({
    ...common,
    stdin: { contents: "module.exports = require('pg');", resolveDir: ROOT, loader: 'js' },
    external: ['pg-native'],
    outfile: join(dist, 'pg.cjs'),
  });
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
  await build({
    ...common,
    define: { WORKER_VERSION: JSON.stringify(version) },
    entryPoints: [join(ROOT, 'src/cli.ts')],
    outfile: join(dist, 'cli.cjs'),
    sourcemap: true,
    plugins: [
      { name: 'undici-bundle', setup: (b) => b.onResolve({ filter: /^undici$/ }, () => ({ path: './undici.cjs', external: true })) },
      { name: 'pg-bundle', setup: (b) => b.onResolve({ filter: /^pg$/ }, () => ({ path: './pg.cjs', external: true })) },
    ],
  });
  const used = new Set([...readFileSync(join(dist, 'cli.cjs'), 'utf8').matchAll(/\bimport_undici\d*\.(\w+)/g)].map((match) => match[1]));
  const missing = [...used].filter((name) => !(name in UNDICI_EXPORTS));
  if (missing.length > 0)
    throw new Error(`src/ uses ${missing.join(', ')} of undici: add ${missing.length === 1 ? 'it' : 'them'} to UNDICI_EXPORTS in scripts/build.mjs`);
}

/** Runs typical commands on a scratch queue in this process, then writes what V8 compiled for them. */
async function writeCodeCache() {
  const { loadCli, CODE_CACHE } = createRequire(import.meta.url)('../bin/loadCli.cjs');
  const cli = loadCli();
  const dir = mkdtempSync(join(tmpdir(), 'worker-build-'));
  try {
    const worker = async (...args) => {
      const code = await cli.main([process.execPath, BIN, '--dir', dir, ...args], BIN);
      if (code !== 0) throw new Error(`worker ${args.join(' ')} exited ${code}`);
    };
    await worker('add', 'warm-up', 'Warm the code cache');
    await worker('add', 'warm-up-2', 'Warm the code cache', 'warm-up');
    await worker('status');
    await worker('show', 'warm-up-2');
    await worker('--help');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  writeFileSync(CODE_CACHE, cli.codeCache());
}

if (process.argv[2] === '--write-code-cache') {
  await writeCodeCache().catch((error) => {
    process.stderr.write(error.message);
    process.exitCode = 1;
  });
} else {
  await bundle();
  // In a process of its own: the cache must come from a fresh V8 with Node's default flags. Without a
  // cache the CLI works as well, only starts slower: an install does not fail for it.
  try {
    execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--write-code-cache'], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    console.warn(`warning: dist/cli.cjs.cache not written (the CLI works, but starts slower): ${String(error.stderr ?? error.message).trim()}`);
  }
}
