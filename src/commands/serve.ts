import { WorkerError } from '../errors.js';
import { integerSetting } from '../core/settings.js';
import { parseDuration } from '../core/duration.js';
import { parseLatency, startReferenceApi } from '../serve/referenceApi.js';

export interface ServeFlags {
  port: string;
  host: string;
  latency: string;
  failRate: string;
  statusCode: string;
}

/** `worker serve`: the reference API until `stopped` aborts. */
export async function serve(flags: ServeFlags, write: (text: string) => void, stopped: AbortSignal): Promise<void> {
  const latencyMs = parseLatency(flags.latency, parseDuration);
  if (latencyMs === undefined) {
    throw new WorkerError('CONFIG', `expected --latency to be a duration like 50ms or a range like 20ms..200ms, got ${JSON.stringify(flags.latency)}`, {
      hint: 'worker serve --latency 20ms..200ms',
    });
  }
  const failRate = Number(flags.failRate);
  if (!(failRate >= 0 && failRate <= 1)) {
    throw new WorkerError('CONFIG', `expected --fail-rate to be a share from 0 to 1, got ${JSON.stringify(flags.failRate)}`, {
      hint: 'worker serve --fail-rate 0.1',
    });
  }
  const api = await startReferenceApi({
    host: flags.host,
    port: integerSetting({ flag: '--port', value: flags.port, fallback: 8787, minimum: 0 }),
    latencyMs,
    failRate,
    statusCode: integerSetting({ flag: '--status-code', value: flags.statusCode, fallback: 503, minimum: 100 }),
    log: (line) => write(`${line}\n`),
    random: Math.random,
  }).catch((error: unknown) => {
    throw new WorkerError('IO', `could not listen on ${flags.host}:${flags.port}: ${error instanceof Error ? error.message : String(error)}`, {
      hint: 'choose another --port, or --port 0 for any free one',
    });
  });
  write(`reference API listening at ${api.url} (Ctrl-C to stop)\n`);
  await new Promise((resolve) => stopped.addEventListener('abort', resolve, { once: true }));
  await api.close();
  write(`stopped after ${api.calls()} calls\n`);
}
