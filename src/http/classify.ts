import type { ErrorKind } from '../types.js';
import type { ExecutionResult } from '../executor.js';

type CallResult = ExecutionResult;

const CONNECT_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
]);
const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA']);
/** Codes that mean no connection was ever made: the request was not sent. A reset may come after the API read it. */
const NEVER_SENT_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT', ...DNS_CODES]);
const TIMEOUT_CODES: Record<string, string> = {
  UND_ERR_CONNECT_TIMEOUT: 'connecting',
  UND_ERR_HEADERS_TIMEOUT: 'waiting for the response headers',
  UND_ERR_BODY_TIMEOUT: 'reading the response body',
};

/** The first error code found in an error, its causes, or the errors of an AggregateError. */
export function findErrorCode(error: unknown, depth = 0): string | undefined {
  if (depth > 5 || typeof error !== 'object' || error === null) return undefined;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && code !== 'UND_ERR_ABORTED') return code;
  const nested = [(error as { cause?: unknown }).cause, ...((error as { errors?: unknown[] }).errors ?? [])];
  for (const inner of nested) {
    const found = findErrorCode(inner, depth + 1);
    if (found) return found;
  }
  return typeof code === 'string' ? code : undefined;
}

function failure(kind: ErrorKind, message: string, retryable: boolean, reachedApi = true): CallResult {
  return { ok: false, error: { kind, message }, retryable, reachedApi };
}

/**
 * Maps a thrown request error to a kind. `timedOut` and `aborted` come from the caller's own signals,
 * which undici reports as whatever reason they were aborted with; `sent: false` when the call ended before
 * the request was written to a connection.
 */
export function classifyThrown(error: unknown, context: { timedOut: boolean; aborted: boolean; timeoutMs: number; sent?: boolean }): CallResult {
  if (context.aborted) return failure('aborted', 'the call was abandoned: the worker is stopping or lost its claim', false, context.sent ?? true);
  if (context.timedOut) {
    const phase = context.sent === false ? ' (no connection was made)' : '';
    return failure('timeout', `no complete response within ${context.timeoutMs} ms (--timeout)${phase}`, true, context.sent ?? true);
  }
  const code = findErrorCode(error);
  const detail = error instanceof Error && error.message ? error.message : String(error);
  const reached = code === undefined || !NEVER_SENT_CODES.has(code);
  if (code !== undefined && TIMEOUT_CODES[code]) return failure('timeout', `timed out ${TIMEOUT_CODES[code]} (${code})`, true, reached);
  if (code !== undefined && DNS_CODES.has(code)) return failure('dns', `the API's host name did not resolve (${code}): ${detail}`, true, reached);
  if (code !== undefined && CONNECT_CODES.has(code)) return failure('connect', `${describeConnect(code)} (${code}): ${detail}`, true, reached);
  return failure('connect', `the request failed before a response${code ? ` (${code})` : ''}: ${detail}`, true);
}

function describeConnect(code: string): string {
  if (code === 'ECONNREFUSED') return 'connection refused: is the API running at --api-url?';
  if (code === 'ECONNRESET' || code === 'UND_ERR_SOCKET' || code === 'EPIPE') return 'the connection was reset or closed by the API';
  return 'could not reach the API';
}

/** The first 200 characters of a body, on one line: enough to tell what the API meant. */
export function bodyExcerpt(body: string): string {
  const flat = body.trim().replace(/\s+/g, ' ');
  return flat.length > 200 ? `${flat.slice(0, 200)}…` : flat;
}

/** 408, 429 and 5xx are worth another attempt; any other non-2xx status is final. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 429 || status >= 500;
}

/** Maps a complete response. `body` is the text; JSON is parsed when the body is JSON. */
export function classifyResponse(status: number, contentType: string | undefined, body: string, retryAfterMs: number | undefined): CallResult {
  if (status < 200 || status >= 300) {
    const excerpt = bodyExcerpt(body);
    const retryable = isRetryableStatus(status);
    return {
      ok: false,
      error: { kind: 'http', message: excerpt || '(empty body)', http_status: status },
      retryable,
      retryAfterMs: retryable ? retryAfterMs : undefined,
      reachedApi: true,
    };
  }
  const looksJson = /\bjson\b/i.test(contentType ?? '') || /^\s*[[{]/.test(body);
  let result: unknown = body;
  if (looksJson) {
    try {
      result = JSON.parse(body);
    } catch {
      if (/\bjson\b/i.test(contentType ?? '')) {
        return {
          ok: false,
          error: {
            kind: 'bad_response',
            message: `the API answered ${status} with content-type ${contentType} but a body that is not valid JSON: ${bodyExcerpt(body) || '(empty)'}`,
            http_status: status,
          },
          retryable: true,
          reachedApi: true,
        };
      }
    }
  }
  if (typeof result === 'object' && result !== null && (result as { status?: unknown }).status === 'failed') {
    const detail = (result as { errors?: unknown; error?: unknown }).errors ?? (result as { error?: unknown }).error;
    const message = Array.isArray(detail)
      ? detail.map(String).join('; ')
      : detail === undefined
        ? 'no error given'
        : typeof detail === 'string'
          ? detail
          : JSON.stringify(detail);
    return {
      ok: false,
      error: { kind: 'api_failed', message: `the API reported the task failed: ${message}`, http_status: status },
      retryable: false,
      reachedApi: true,
    };
  }
  return { ok: true, detail: { http_status: status }, result, body, json: result !== body };
}
