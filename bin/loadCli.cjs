// Loads the CLI bundle (dist/cli.cjs) through V8's code cache (dist/cli.cjs.cache, written by
// `npm run build`): Node 20 has no compile cache of its own, and compiling the bundle at every start
// was about a fifth of a short command's time. V8 checks only that the source has the same length and
// does not check the cache's own bytes, so the file starts with a SHA-1 of the bundle and the cache
// together: a cache of another build, or a damaged one, is never used. A missing, foreign or rejected
// cache (another Node version) only means compiling as usual.
const { createHash } = require('node:crypto');
const { readFileSync } = require('node:fs');
const Module = require('node:module');
const { dirname, join } = require('node:path');
const { Script } = require('node:vm');

const BUNDLE = join(__dirname, '..', 'dist', 'cli.cjs');
const CODE_CACHE = `${BUNDLE}.cache`;
const DIGEST_BYTES = 20;

const digestOf = (bundle, cache) => createHash('sha1').update(bundle).update(cache).digest();

function readCodeCache(bundle) {
  let file;
  try {
    file = readFileSync(CODE_CACHE);
  } catch {
    return undefined;
  }
  const cache = file.subarray(DIGEST_BYTES);
  return file.length > DIGEST_BYTES && digestOf(bundle, cache).equals(file.subarray(0, DIGEST_BYTES)) ? cache : undefined;
}

/**
 * Runs the bundle as a CommonJS module. `codeCacheUsed`: V8 took the cache; `codeCache()`: what to
 * write to CODE_CACHE after running some commands (scripts/build.mjs).
 */
function loadCli() {
  let bytes;
  try {
    bytes = readFileSync(BUNDLE);
  } catch (error) {
    if (error.code !== 'ENOENT') throw error;
    process.stderr.write(`worker: ${BUNDLE} is missing: run \`npm install\` (or \`npm run build\`) in ${dirname(dirname(BUNDLE))}\n`);
    process.exit(1);
  }
  const cachedData = readCodeCache(bytes);
  const script = new Script(Module.wrap(bytes.toString('utf8')), { filename: BUNDLE, cachedData });
  const bundle = { exports: {} };
  script.runInThisContext()(bundle.exports, Module.createRequire(BUNDLE), bundle, BUNDLE, dirname(BUNDLE));
  return {
    main: bundle.exports.main,
    codeCacheUsed: cachedData !== undefined && !script.cachedDataRejected,
    codeCache: () => {
      const cache = script.createCachedData();
      return Buffer.concat([digestOf(bytes, cache), cache]);
    },
  };
}

module.exports = { loadCli, CODE_CACHE };
