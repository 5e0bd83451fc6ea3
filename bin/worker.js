#!/usr/bin/env node
// Trampoline: the CLI is TypeScript compiled into dist/ by `npm install` (prepare) or `npm run build`.
await import('../dist/cli.js');
