import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Integration tests start real worker processes; two cores are shared between files.
    fileParallelism: true,
    maxWorkers: 2,
  },
});
