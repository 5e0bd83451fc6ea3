// A local API that answers at once (or after `latencyMs`, as a slow LLM API would) and counts calls per
// task: the benchmark's ground truth.
import { createServer } from 'node:http';

export async function startBenchApi({ latencyMs = 0 } = {}) {
  const calls = new Map();
  let total = 0;
  const times = new Map();
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      calls.set(body.task_id, (calls.get(body.task_id) ?? 0) + 1);
      if (!times.has(body.task_id)) times.set(body.task_id, performance.now());
      total += 1;
      const answer = () => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(`{"status":"completed","task":${JSON.stringify(body.task_id)}}`);
      };
      if (latencyMs > 0) setTimeout(answer, latencyMs);
      else answer();
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/task`,
    calls,
    times,
    get total() {
      return total;
    },
    reset() {
      calls.clear();
      times.clear();
      total = 0;
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(resolve);
      }),
  };
}
