import { appendFileSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ExecutionLogReader, ExecutionLogWriter, parseLines, serializeEvent } from '../../src/folder/executionLog.js';
import { DamagedFileError } from '../../src/errors.js';
import type { QueueEvent } from '../../src/types.js';

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
    const outcome = {
      type: 'outcome',
      task: 'a',
      token: 't1',
      attempt: 1,
      worker: 'w',
      outcome: 'completed',
      called: true,
      started_at: '2026-01-01T00:00:01.000Z',
      ended_at: '2026-01-01T00:00:00.000Z',
      duration_ms: -1000,
    } as QueueEvent;
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

describe('reading the log as it grows (a real file)', () => {
  it('re-checks read what was appended, in order, however much and however cut; a full read still finds a replaced log', () => {
    const dir = mkdtempSync(join(tmpdir(), 'worker-log-'));
    const file = join(dir, 'log.jsonl');
    const writer = new ExecutionLogWriter(file);
    const reader = new ExecutionLogReader(file);
    const retryOf = (i: number): QueueEvent => ({ type: 'retry', task: `task-${i}-${'x'.repeat(60)}`, at: '2026-01-01T00:00:00.000Z' });
    try {
      writer.append([claim]);
      expect(reader.readNew()).toEqual([claim]);
      expect(reader.readAppended()).toEqual([]);
      // More than the reader's 64 KB buffer at once: read in several pieces, none lost or doubled.
      const many = Array.from({ length: 1500 }, (_, i) => retryOf(i));
      writer.append(many);
      expect(reader.readAppended()).toEqual(many);
      // One record larger than the buffer (a large result): cut by the first read, completed by the second.
      const large: QueueEvent = {
        type: 'outcome',
        task: 'a',
        token: 't1',
        attempt: 1,
        worker: 'w',
        outcome: 'completed',
        called: true,
        started_at: '2026-01-01T00:00:00.000Z',
        ended_at: '2026-01-01T00:00:01.000Z',
        duration_ms: 1000,
        max_attempts: 3,
        result: { text: 'y'.repeat(200_000) },
      };
      writer.append([large]);
      expect(reader.readAppended()).toEqual([large]);
      // A record still being written is not read until its newline is there.
      const text = serializeEvent(retryOf(9999));
      appendFileSync(file, text.slice(0, 20));
      expect(reader.readAppended()).toEqual([]);
      appendFileSync(file, text.slice(20));
      expect(reader.readAppended()).toEqual([retryOf(9999)]);
      renameSync(file, join(dir, 'old.jsonl'));
      writeFileSync(file, serializeEvent(claim));
      expect(() => reader.readNew()).toThrowError(/replaced/);
    } finally {
      writer.close();
      reader.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
