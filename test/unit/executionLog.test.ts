import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExecutionLogWriter, parseLines, serializeEvent } from '../../src/queue/executionLog.js';
import type { QueueEvent } from '../../src/queue/schema.js';
import { DamagedFileError } from '../../src/errors.js';

const claim: QueueEvent = { type: 'claim', task: 'a', token: 't1', prev: null, attempt: 1, worker: 'w', pid: 1, host: 'h', at: '2026-01-01T00:00:00.000Z' };
const retry: QueueEvent = { type: 'retry', task: 'b', at: '2026-01-01T00:00:00.000Z' };
const line = (event: QueueEvent) => serializeEvent(event).trimEnd();

describe('execution log lines', () => {
  it('writes one line per event, starting with its type', () => {
    expect(serializeEvent(retry)).toBe('{"type":"retry","task":"b","at":"2026-01-01T00:00:00.000Z"}\n');
    const typeLast = { task: 'b', at: '2026-01-01T00:00:00.000Z', type: 'retry' } as QueueEvent;
    expect(serializeEvent(typeLast)).toBe('{"type":"retry","task":"b","at":"2026-01-01T00:00:00.000Z"}\n');
  });

  it('refuses to write an event that readers would refuse: nothing of its batch reaches the log', () => {
    const outcome = { type: 'outcome', task: 'a', token: 't1', attempt: 1, worker: 'w', outcome: 'completed', called: true, started_at: '2026-01-01T00:00:01.000Z', ended_at: '2026-01-01T00:00:00.000Z', duration_ms: -1000 } as QueueEvent;
    expect(() => serializeEvent(outcome)).toThrowError(/schema refuses.*duration_ms/);
    const dir = mkdtempSync(join(tmpdir(), 'worker-log-'));
    const writer = new ExecutionLogWriter(join(dir, 'log.jsonl'));
    try {
      writer.append([claim]);
      expect(() => writer.append([retry, outcome])).toThrowError(/schema refuses/);
      expect(readFileSync(writer.file, 'utf8')).toBe(serializeEvent(claim));
    } finally {
      writer.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('keeps the record that follows a torn one on the same line, and counts the torn prefix', () => {
    const whole = line(claim);
    for (let cut = 1; cut < whole.length; cut += 1) {
      const chunk = parseLines('log', [whole.slice(0, cut) + line(retry)], 1);
      expect(chunk.events, `cut at ${cut}`).toEqual([retry]);
      expect(chunk.torn).toBe(1);
    }
  });

  it('keeps both records when one was written whole but without its newline', () => {
    expect(parseLines('log', [line(claim) + line(retry)], 1)).toEqual({ events: [claim, retry], torn: 0 });
  });

  it('refuses garbage and wrong shapes, naming the line', () => {
    expect(() => parseLines('log', [line(claim), 'hello world'], 1)).toThrowError(/log is damaged \(line 2\): not valid JSON/);
    expect(() => parseLines('log', ['{"type":"claim","task":"a"}'], 7)).toThrowError(DamagedFileError);
    expect(() => parseLines('log', ['{"type":"claim","task":"a"}'], 7)).toThrowError(/line 7/);
    expect(() => parseLines('log', ['[1,2,3]'], 1)).toThrowError(/damaged/);
  });
});
