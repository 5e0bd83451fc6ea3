import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { visible } from '../core/visible.js';

/**
 * A small API that speaks the task contract, for trying worker out and for tests: it echoes each task
 * after a configurable latency, fails a configurable share of calls, and fails for good any task whose
 * instruction starts with "fail:". It honours idempotency keys as paid APIs do: a final answer (a result,
 * or the task's refusal) is stored under its key and replayed for the same key, marked as a replay,
 * instead of doing the work again; transient failures (5xx, 429) are not stored.
 */
/** Bodies larger than this are refused with 413: a task's instruction is at most a few MB. */
export const MAX_BODY_BYTES = 16 * 1024 * 1024;

export interface ReferenceApiOptions {
  host: string;
  port: number;
  /** Each call waits a random time in [min, max] ms. */
  latencyMs: { min: number; max: number };
  /** Share of calls (0..1) answered with `statusCode` instead of the result. */
  failRate: number;
  statusCode: number;
  log: (line: string) => void;
  random: () => number;
}

export interface ReferenceApi {
  url: string;
  calls: () => number;
  close: () => Promise<void>;
}

/** Parses `50ms` or a range `20ms..200ms` with the given duration parser. */
export function parseLatency(text: string, parseDuration: (text: string) => number | undefined): { min: number; max: number } | undefined {
  const [low, high] = text.split('..');
  const min = parseDuration(low ?? '');
  const max = high === undefined ? min : parseDuration(high);
  // Each call waits on one timer: a latency beyond what a timer can wait would answer at once.
  if (min === undefined || max === undefined || max < min || max > 2 ** 31 - 1) return undefined;
  return { min, max };
}

export async function startReferenceApi(options: ReferenceApiOptions): Promise<ReferenceApi> {
  const answered = new Map<string, { status: number; body: string }>();
  let calls = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const tooLarge = () => {
      res.writeHead(413, { 'content-type': 'application/json', connection: 'close' });
      res.end(JSON.stringify({ status: 'failed', error: `the body is larger than ${MAX_BODY_BYTES} bytes` }));
      options.log(`${new Date().toISOString()} ${visible(req.method ?? '?')} ${visible(req.url ?? '')} → 413 (body over ${MAX_BODY_BYTES} bytes)`);
      req.destroy();
    };
    // Refused before it is read whole: one request must not take the server's memory.
    if (Number(req.headers['content-length'] ?? 0) > MAX_BODY_BYTES) {
      tooLarge();
      return;
    }
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        chunks.length = 0;
        if (!res.headersSent) tooLarge();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (size > MAX_BODY_BYTES) return;
      calls += 1;
      void answer(req, res, Buffer.concat(chunks).toString('utf8'));
    });
    req.on('error', () => undefined);
  });

  async function answer(req: IncomingMessage, res: ServerResponse, text: string): Promise<void> {
    const started = Date.now();
    const send = (status: number, body: unknown, note = '') => {
      const json = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(json);
      options.log(
        `${new Date().toISOString()} ${visible(`${req.method} ${req.url} task=${JSON.stringify(task?.task_id ?? '?')} attempt=${String(task?.attempt ?? '?')} worker=${String(req.headers['x-worker-id'] ?? '?')}`)} → ${status} in ${Date.now() - started} ms${note}`,
      );
      return json;
    };
    let task: { task_id?: unknown; instruction?: unknown; attempt?: unknown } | undefined;
    if (req.method !== 'POST') {
      send(405, { status: 'failed', error: 'POST a task as JSON' });
      return;
    }
    try {
      task = JSON.parse(text) as typeof task;
    } catch {
      send(400, { status: 'failed', error: 'the body is not JSON' });
      return;
    }
    if (typeof task?.task_id !== 'string' || typeof task.instruction !== 'string') {
      send(400, { status: 'failed', error: 'the body needs "task_id" and "instruction" strings' });
      return;
    }
    const key = typeof req.headers['idempotency-key'] === 'string' ? req.headers['idempotency-key'] : undefined;
    const replay = key === undefined ? undefined : answered.get(key);
    if (replay !== undefined) {
      res.writeHead(replay.status, { 'content-type': 'application/json', 'idempotent-replayed': 'true' });
      res.end(replay.body);
      options.log(
        `${new Date().toISOString()} ${visible(`POST ${req.url} task=${JSON.stringify(task.task_id)} attempt=${String(task.attempt)}`)} → ${replay.status} (replayed: this idempotency key was answered before)`,
      );
      return;
    }
    const { min, max } = options.latencyMs;
    await new Promise((resolve) => setTimeout(resolve, min + options.random() * (max - min)));
    if (task.instruction.startsWith('fail:')) {
      const refusal = send(422, { status: 'failed', error: `refused: ${task.instruction.slice(5).trim() || 'this task always fails'}` });
      if (key !== undefined) answered.set(key, { status: 422, body: refusal });
      return;
    }
    if (options.random() < options.failRate) {
      send(options.statusCode, { status: 'failed', error: `simulated failure (--fail-rate ${options.failRate})` }, ' (simulated)');
      return;
    }
    const body = send(200, { status: 'completed', task_id: task.task_id, output: `done: ${task.instruction}` });
    if (key !== undefined) answered.set(key, { status: 200, body });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${host}:${address.port}/task`,
    calls: () => calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
