#!/usr/bin/env node
// Trampoline into the CLI, which `npm install` (prepare) or `npm run build` bundles into dist/.
// CommonJS, like the bundle: Node starts a CommonJS entry without setting up its ESM loader.
const { loadCli } = require('./loadCli.cjs');

loadCli()
  .main(process.argv, __filename)
  .then((code) => {
    // 130: aborted by a second signal, so now: a connection still being made for the abandoned call
    // would otherwise keep the process until its own timeout (10 s).
    if (code === 130) process.exit(code);
    process.exitCode = code;
  });
