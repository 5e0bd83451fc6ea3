import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ApiCall {
  task_id: string;
  attempt: number;
  worker: string | undefined;
  idempotencyKey: string | undefined;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown>;
  receivedAt: number;
  /** Set when the response was sent; undefined while in flight or if the client went away. */
  answeredAt?: number;
}

/** What to do with one call: answer now, after a delay, hang, or drop the connection. */
export type Behaviour = (call: ApiCall, res: ServerResponse) => void | Promise<void>;

export const answerOk: Behaviour = (call, res) => {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ status: 'completed', echo: call.task_id }));
};

/** Answers like answerOk after a random delay of up to `maxMs`. */
export function answerOkWithin(maxMs: number): Behaviour {
  return (call, res) => {
    setTimeout(() => answerOk(call, res), Math.random() * maxMs);
  };
}

/** A real HTTP API on 127.0.0.1 that records every call it receives: the test's ground truth. */
export async function startApi(behaviour: Behaviour = answerOk, port = 0) {
  const calls: ApiCall[] = [];
  let current = behaviour;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      const call: ApiCall = {
        task_id: String(body.task_id),
        attempt: Number(body.attempt),
        worker: req.headers['x-worker-id'] as string | undefined,
        idempotencyKey: req.headers['idempotency-key'] as string | undefined,
        headers: req.headers,
        body,
        receivedAt: Date.now(),
      };
      calls.push(call);
      res.on('finish', () => (call.answeredAt = Date.now()));
      void current(call, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const bound = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${bound}/task`,
    port: bound,
    calls,
    setBehaviour: (next: Behaviour) => (current = next),
    callsFor: (taskId: string) => calls.filter((call) => call.task_id === taskId),
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export type Api = Awaited<ReturnType<typeof startApi>>;
