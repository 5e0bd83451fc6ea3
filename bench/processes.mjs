// Processes of the benchmarks: started, followed for their peak resident memory, awaited.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';

/**
 * Starts `node args…` and follows its peak resident memory (VmHWM) until it exits: `exited` resolves to
 * the peak in kB, and rejects on a non-zero exit. With `captureStdout`, `output()` is what it printed.
 */
export function startTracked(args, { captureStdout = false, everyMs = 50 } = {}) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', captureStdout ? 'pipe' : 'ignore', 'inherit'] });
  let peakKb = 0;
  let out = '';
  child.stdout?.on('data', (chunk) => {
    out += chunk;
  });
  const sample = () => {
    try {
      const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
      if (match) peakKb = Math.max(peakKb, Number(match[1]));
    } catch {
      // exited
    }
  };
  const timer = setInterval(sample, everyMs);
  const exited = new Promise((resolveExit, rejectExit) => {
    child.on('exit', (code) => {
      clearInterval(timer);
      if (code === 0) resolveExit(peakKb);
      else rejectExit(new Error(`${args.join(' ')} exited ${code}`));
    });
  });
  return { child, exited, sample, output: () => out };
}
