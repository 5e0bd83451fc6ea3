// The bar to beat: the same drain through BullMQ on a loopback Redis. `seed PORT N` fills the queue;
// `work PORT N URL [CONCURRENCY]` is one worker process (concurrency 1 unless given, like `worker run`) that
// exits once N jobs are done.
import { Queue, Worker } from 'bullmq';
import { Agent, request } from 'undici';

const [mode, port, total, url, concurrency = '1'] = process.argv.slice(2);
const connection = { host: '127.0.0.1', port: Number(port) };

if (mode === 'seed') {
  const queue = new Queue('bench', { connection });
  await queue.obliterate({ force: true });
  const count = Number(total);
  for (let first = 0; first < count; first += 1000) {
    const jobs = [];
    for (let i = first; i < Math.min(count, first + 1000); i += 1) {
      jobs.push({ name: 'task', data: { task_id: `t${i}` }, opts: { jobId: `t${i}`, removeOnComplete: true } });
    }
    await queue.addBulk(jobs);
  }
  await queue.close();
} else {
  const agent = new Agent();
  const queue = new Queue('bench', { connection });
  const worker = new Worker(
    'bench',
    async (job) => {
      const response = await request(url, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': 'application/json', 'idempotency-key': job.data.task_id },
        body: JSON.stringify({
          task_id: job.data.task_id,
          instruction: 'x',
          depends_on: [],
          attempt: job.attemptsMade + 1,
          min_budget: 1000,
          max_budget: 4000,
          intensity: 'medium',
        }),
      });
      return response.body.json();
    },
    { connection, concurrency: Number(concurrency) },
  );
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
    if (counts.waiting + counts.active + counts.delayed + counts.prioritized === 0) break;
  }
  await worker.close();
  await queue.close();
  await agent.close();
}
