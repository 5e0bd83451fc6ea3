#!/usr/bin/env node
// Trampoline into the CLI, which `npm install` (prepare) or `npm run build` bundles into dist/.
// CommonJS, like the bundle: Node starts a CommonJS entry without setting up its ESM loader.
const { loadCli } = require('./loadCli.cjs');

loadCli()
  .main(process.argv, __filename)
  .then((code) => {
    process.exitCode = code;
  });
