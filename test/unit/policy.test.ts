import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../../src/core/duration.js';
import { backoffMs, MAX_BACKOFF_MS, MAX_RETRY_AFTER_MS, parseRetryAfter, retryDelayMs } from '../../src/core/retryPolicy.js';
import { classifyResponse, classifyThrown, findErrorCode } from '../../src/http/classify.js';
import { parseDependencyList } from '../../src/core/newTasks.js';
import { resolveRunConfig } from '../../src/config.js';
import { parseHeaders } from '../../src/http/settings.js';

describe('durations', () => {
  it.each([
    ['500ms', 500],
    ['2s', 2000],
    ['1.5s', 1500],
    ['5m', 300_000],
    ['1h', 3_600_000],
    ['7d', 604_800_000],
    ['30', 30_000],
    [' 2s ', 2000],
  ])('%s is %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });
  it.each(['', 'abc', '-1s', '2 weeks', '1e3', 's'])('%j is refused', (text) => expect(parseDuration(text)).toBeUndefined());
  it('formats the shortest exact form', () => {
    expect([250, 1500, 120_000, 90_000, 7_200_000].map(formatDuration)).toEqual(['250ms', '1.5s', '2m', '90s', '2h']);
  });
});

describe('retry policy', () => {
  it('doubles per attempt, with jitter in [0.5, 1), capped', () => {
    expect(backoffMs(1, 1000, 0)).toBe(500);
    expect(backoffMs(3, 1000, 0.999)).toBeLessThan(4000);
    expect(backoffMs(3, 1000, 0)).toBe(2000);
    expect(backoffMs(50, 1000, 0.999)).toBeLessThanOrEqual(MAX_BACKOFF_MS);
  });
  it('reads Retry-After as seconds or a date, and waits for the later of it and the backoff', () => {
    const now = Date.parse('2026-01-01T00:00:00Z');
    expect(parseRetryAfter('5', now)).toBe(5000);
    expect(parseRetryAfter('Thu, 01 Jan 2026 00:00:10 GMT', now)).toBe(10_000);
    expect(parseRetryAfter('soon', now)).toBeUndefined();
    expect(parseRetryAfter('86400', now)).toBe(MAX_RETRY_AFTER_MS);
    expect(retryDelayMs(1, 100, 0, 5000)).toBe(5000);
    expect(retryDelayMs(1, 100, 0, undefined)).toBe(50);
  });
});

describe('error classification', () => {
  it('finds codes inside causes and AggregateErrors', () => {
    const refused = new AggregateError([Object.assign(new Error('connect ECONNREFUSED ::1'), { code: 'ECONNREFUSED' })], 'failed');
    expect(findErrorCode(new TypeError('fetch failed', { cause: refused }))).toBe('ECONNREFUSED');
  });
  it.each([
    ['ECONNREFUSED', 'connect'],
    ['ECONNRESET', 'connect'],
    ['UND_ERR_SOCKET', 'connect'],
    ['ENOTFOUND', 'dns'],
    ['UND_ERR_CONNECT_TIMEOUT', 'timeout'],
    ['UND_ERR_HEADERS_TIMEOUT', 'timeout'],
  ])('%s is kind %s, retryable', (code, kind) => {
    const result = classifyThrown(Object.assign(new Error('x'), { code }), { timedOut: false, aborted: false, timeoutMs: 1000 });
    expect(result).toMatchObject({ ok: false, retryable: true, error: { kind } });
  });
  it('our own deadline is a timeout; our own abort is not retried', () => {
    expect(classifyThrown(new Error('x'), { timedOut: true, aborted: false, timeoutMs: 1000 })).toMatchObject({ error: { kind: 'timeout' }, retryable: true });
    expect(classifyThrown(new Error('x'), { timedOut: false, aborted: true, timeoutMs: 1000 })).toMatchObject({ error: { kind: 'aborted' }, retryable: false });
  });
  it.each([
    [408, true],
    [429, true],
    [500, true],
    [503, true],
    [400, false],
    [401, false],
    [404, false],
    [422, false],
    [302, false],
  ])('http %d retryable: %s', (status, retryable) => {
    expect(classifyResponse(status, undefined, '', undefined)).toMatchObject({ ok: false, retryable, error: { kind: 'http', http_status: status } });
  });
  it('keeps 2xx bodies as results, parsed when JSON; "status": "failed" fails the task', () => {
    expect(classifyResponse(200, 'application/json', '{"a":1}', undefined)).toEqual({
      ok: true,
      detail: { http_status: 200 },
      result: { a: 1 },
      body: '{"a":1}',
      json: true,
    });
    expect(classifyResponse(201, 'text/plain', 'hello', undefined)).toEqual({
      ok: true,
      detail: { http_status: 201 },
      result: 'hello',
      body: 'hello',
      json: false,
    });
    expect(classifyResponse(200, 'application/json', '{"status":"failed","error":"nope"}', undefined)).toMatchObject({
      retryable: false,
      error: { kind: 'api_failed', message: expect.stringContaining('nope') },
    });
    expect(classifyResponse(200, 'application/json', '{"trunc', undefined)).toMatchObject({ error: { kind: 'bad_response' } });
  });
});

describe('settings', () => {
  it('splits dependency lists, dropping blanks and repeats', () => {
    expect(parseDependencyList('a, b,,a , ')).toEqual(['a', 'b']);
    expect(parseDependencyList(undefined)).toEqual([]);
  });
  it('never shows a header value in a refusal', () => {
    expect(() => parseHeaders(['Authorization Bearer secret-value'])).toThrowError(/header #1 is not of the form/);
    expect(() => parseHeaders(['Bad Name: secret-value'])).toThrowError(/header #1/);
    expect(() => parseHeaders(['Bad Name: secret-value'])).not.toThrowError(/secret-value/);
    expect(() => parseHeaders(['Idempotency-Key: x'])).toThrowError(/set by the worker itself/);
    expect(parseHeaders(['Authorization: Bearer a:b'])).toEqual({ authorization: 'Bearer a:b' });
    for (const bad of ['Bearer sec\rret-value', 'Bearer sec\u0001ret-value', 'Bearer sec€ret-value']) {
      expect(() => parseHeaders([`Authorization: ${bad}`])).toThrowError(/value of header "Authorization" holds a character HTTP does not allow/);
      expect(() => parseHeaders([`Authorization: ${bad}`])).not.toThrowError(/ret-value/);
    }
    expect(parseHeaders(['X-Note: tab\there, café'])).toEqual({ 'x-note': 'tab\there, café' });
  });
  it('takes flags over environment over defaults', () => {
    const env = { WORKER_API_URL: 'http://env/', WORKER_API_TIMEOUT: '5s', WORKER_MAX_IDLE: '4', WORKER_API_HEADERS: 'A: 1\nB: 2' };
    const config = resolveRunConfig({ timeout: '9s' }, undefined, env);
    expect(config).toMatchObject({
      api: { timeoutMs: 9000, headers: { a: '1', b: '2' } },
      maxIdle: 4,
      maxAttempts: 3,
      pollIntervalMs: 2000,
      lockStaleMs: 30_000,
    });
    expect(config.api.url.href).toBe('http://env/');
    expect(config.workerId).toMatch(/^w-[0-9a-f]{8}$/);
    expect(() => resolveRunConfig({ pollInterval: 'soon' }, undefined, env)).toThrowError(
      /expected --poll-interval \(or WORKER_POLL_INTERVAL\) to be a duration/,
    );
    expect(() => resolveRunConfig({ lockStale: '1s' }, undefined, env)).toThrowError(/at least 2000ms/);
    expect(() => resolveRunConfig({ apiUrl: 'ftp://x' }, undefined, {})).toThrowError(/http:\/\/ or https:\/\//);
  });
});
