import { Agent, request } from 'undici';
import type { TaskDefinition } from '../queue/schema.js';
import { parseRetryAfter } from '../core/retryPolicy.js';
import { redactor } from '../core/redact.js';
import { classifyResponse, classifyThrown, findErrorCode, type CallResult } from './classify.js';

/** A response body larger than this is refused (kind bad_response) rather than held in memory. */
export const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;
/** Connecting has its own, shorter bound than the whole request. */
export const MAX_CONNECT_TIMEOUT_MS = 10_000;

export interface ExecutorOptions {
  url: URL;
  /** Sent with every call (authentication). Never logged. */
  headers: Record<string, string>;
  timeoutMs: number;
}

export interface CallRequest {
  task: TaskDefinition;
  attempt: number;
  workerId: string;
  /** Aborted when the worker must give up the call: a second signal, or a lost claim. */
  signal: AbortSignal;
}

/** Sends one task to the API: POST, JSON body, bounded in time and size. Never throws. */
export class HttpExecutor {
  private readonly agent: Agent;
  private readonly redact: (text: string) => string;

  constructor(private readonly options: ExecutorOptions) {
    this.redact = redactor(Object.values(options.headers));
    this.agent = new Agent({
      connect: { timeout: Math.min(MAX_CONNECT_TIMEOUT_MS, options.timeoutMs) },
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      // undici counts the body as it arrives and drops the connection past this size.
      maxResponseSize: MAX_RESPONSE_BYTES,
    });
  }

  /** One call. Error messages never carry a header value, even when the API echoes one back. */
  async call(request: CallRequest): Promise<CallResult> {
    const result = await this.send(request);
    if (!result.ok) result.error.message = this.redact(result.error.message);
    return result;
  }

  private async send({ task, attempt, workerId, signal }: CallRequest): Promise<CallResult> {
    // One controller and one timer per call: AbortSignal.timeout and AbortSignal.any cost ~50 µs a call on
    // Node 20, a tenth of the queue's own work per task.
    const call = new AbortController();
    let timedOut = false;
    const deadline = setTimeout(() => {
      timedOut = true;
      call.abort();
    }, this.options.timeoutMs);
    const giveUp = () => call.abort();
    if (signal.aborted) call.abort();
    else signal.addEventListener('abort', giveUp, { once: true });
    const body = JSON.stringify({
      task_id: task.id,
      instruction: task.instruction,
      depends_on: task.deps,
      attempt,
      min_budget: task.min_budget,
      max_budget: task.max_budget,
      intensity: task.intensity,
    });
    try {
      const response = await request(this.options.url, {
        method: 'POST',
        dispatcher: this.agent,
        headers: {
          ...this.options.headers,
          'content-type': 'application/json',
          'idempotency-key': task.id,
          'x-worker-id': workerId,
        },
        body,
        signal: call.signal,
      });
      let text: string;
      try {
        text = await response.body.text();
      } catch (error) {
        if (findErrorCode(error) !== 'UND_ERR_RES_EXCEEDED_MAX_SIZE') throw error;
        return { ok: false, error: { kind: 'bad_response', message: `the response body is larger than ${MAX_RESPONSE_BYTES} bytes`, http_status: response.statusCode }, retryable: false };
      }
      const retryAfter = header(response.headers['retry-after']);
      return classifyResponse(response.statusCode, header(response.headers['content-type']), text, parseRetryAfter(retryAfter, Date.now()));
    } catch (error) {
      return classifyThrown(error, { timedOut, aborted: signal.aborted, timeoutMs: this.options.timeoutMs });
    } finally {
      clearTimeout(deadline);
      signal.removeEventListener('abort', giveUp);
    }
  }

  async close(): Promise<void> {
    await this.agent.close().catch(() => undefined);
  }
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
