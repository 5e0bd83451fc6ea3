import { Agent, type Dispatcher } from 'undici';
import { parseRetryAfter } from '../core/retryPolicy.js';
import { redactor } from '../core/redact.js';
import { bodyExcerpt, classifyResponse, classifyThrown, findErrorCode } from './classify.js';
import type { Attempt, ExecutionResult, Executor } from '../executor.js';
import { redactUrl, type HttpApiConfig } from './settings.js';
import { formatDuration } from '../core/duration.js';

/** A response body larger than this is refused (kind bad_response) rather than held in memory. */
export const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;
/** Connecting has its own, shorter bound than the whole request. */
export const MAX_CONNECT_TIMEOUT_MS = 10_000;

/** Sends one task to the API: POST, JSON body, bounded in time and size. Never throws. */
export class HttpExecutor implements Executor {
  private readonly agent: Agent;
  private readonly redact: (text: string) => string;

  constructor(private readonly options: HttpApiConfig) {
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
  async execute(attempt: Attempt, signal: AbortSignal): Promise<ExecutionResult> {
    const result = await this.send(attempt, signal);
    if (!result.ok) result.error.message = this.redact(result.error.message);
    return result;
  }

  describe(): string {
    const { url, headers, timeoutMs } = this.options;
    const names = Object.keys(headers);
    return `api ${redactUrl(url.toString())}${names.length > 0 ? ` with headers ${names.map((name) => `${name}: ***`).join(', ')}` : ''}, timeout ${formatDuration(timeoutMs)}`;
  }

  private send({ task, attempt, idempotencyKey, workerId }: Attempt, signal: AbortSignal): Promise<ExecutionResult> {
    const body = JSON.stringify({
      task_id: task.id,
      instruction: task.instruction,
      depends_on: task.deps,
      attempt,
      min_budget: task.min_budget,
      max_budget: task.max_budget,
      intensity: task.intensity,
    });
    return new Promise((resolve) => {
      const exchange = new Exchange(this.options.timeoutMs, signal, resolve);
      // dispatch, not request(): request() wraps every response in a Node stream and its own abort
      // bookkeeping, a quarter of the CPU a call costs here; the exchange gathers the few bytes itself.
      this.agent.dispatch(
        {
          origin: this.options.url.origin,
          path: `${this.options.url.pathname}${this.options.url.search}`,
          method: 'POST',
          headers: { ...this.options.headers, 'content-type': 'application/json', 'idempotency-key': idempotencyKey, 'x-worker-id': workerId },
          body,
        },
        exchange,
      );
    });
  }

  /**
   * At exit every call has settled: nothing is left to wait for. Waiting for undici to close would wait
   * for a connection still being made for a call given up (a second signal), up to the connect bound.
   */
  close(): void {
    this.agent.destroy().catch(() => undefined);
  }
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * One call as undici's dispatch handler: collects the response and settles once, with a result for every
 * way a call can end. Bounded by its own timer (the whole call) besides the agent's connect, headers and
 * body timeouts; `signal` abandons it at once.
 */
class Exchange implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private settled = false;
  private status = 0;
  private headers: Record<string, string | string[] | undefined> = {};
  private readonly chunks: Buffer[] = [];
  private readonly deadline: NodeJS.Timeout;
  private readonly giveUp = () => this.stop(false);

  constructor(
    private readonly timeoutMs: number,
    private readonly signal: AbortSignal,
    private readonly settle: (result: ExecutionResult) => void,
  ) {
    this.deadline = setTimeout(() => this.stop(true), timeoutMs);
    if (signal.aborted) this.stop(false);
    else signal.addEventListener('abort', this.giveUp, { once: true });
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    // Given up while the request waited for a connection: it is never sent.
    if (this.settled) controller.abort(new Error('the call was given up before it was sent'));
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>): void {
    this.status = statusCode;
    this.headers = headers;
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.chunks.push(chunk);
  }

  onResponseEnd(): void {
    // TextDecoder drops a leading byte-order mark, as undici's body.text() does.
    const text = new TextDecoder().decode(Buffer.concat(this.chunks));
    this.finish(classifyResponse(this.status, header(this.headers['content-type']), text, parseRetryAfter(header(this.headers['retry-after']), Date.now())));
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (findErrorCode(error) === 'UND_ERR_RES_EXCEEDED_MAX_SIZE') {
      const start = bodyExcerpt(new TextDecoder().decode(Buffer.concat(this.chunks).subarray(0, 400)));
      const message = `the response body is larger than ${MAX_RESPONSE_BYTES} bytes; it starts: ${start || '(nothing)'}`;
      this.finish({ ok: false, error: { kind: 'bad_response', message, http_status: this.status }, retryable: false, reachedApi: true });
      return;
    }
    // Only an error before the call was stopped counts: undici reports its own timeouts by their codes.
    this.finish(classifyThrown(error, { timedOut: false, aborted: this.signal.aborted, timeoutMs: this.timeoutMs }));
  }

  /** The deadline passed (`timedOut`) or the caller gave up: settles now, and aborts the request if it started. */
  private stop(timedOut: boolean): void {
    if (this.settled) return;
    // undici starts a request (onRequestStart) only once it writes it to a connected socket.
    this.finish(classifyThrown(undefined, { timedOut, aborted: this.signal.aborted, timeoutMs: this.timeoutMs, sent: this.controller !== undefined }));
    this.controller?.abort(new Error(timedOut ? 'the call timed out' : 'the call was abandoned'));
  }

  private finish(result: ExecutionResult): void {
    if (this.settled) return;
    this.settled = true;
    clearTimeout(this.deadline);
    this.signal.removeEventListener('abort', this.giveUp);
    this.settle(result);
  }
}
