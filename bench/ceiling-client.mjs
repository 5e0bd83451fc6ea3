// The ceiling: the same calls with no queue at all, undici straight to the API, one at a time per process.
import { Agent, request } from 'undici';

const [url, first, count] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const agent = new Agent();
for (let i = first; i < first + count; i += 1) {
  const response = await request(url, {
    method: 'POST',
    dispatcher: agent,
    headers: { 'content-type': 'application/json', 'idempotency-key': `t${i}` },
    body: JSON.stringify({ task_id: `t${i}`, instruction: 'x', depends_on: [], attempt: 1, min_budget: 1000, max_budget: 4000, intensity: 'medium' }),
  });
  await response.body.text();
}
await agent.close();
