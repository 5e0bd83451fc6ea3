/** Reading files as bytes, a piece at a time: no file is ever decoded as one string, nor held whole twice. */
import { closeSync, openSync, readFileSync, readSync } from 'node:fs';
import { StringDecoder } from 'node:string_decoder';
import { ioError } from '../errors.js';

/** `length` bytes of an open file from `offset`, as text; null when the file is shorter. */
export function readBytesAt(fd: number, offset: number, length: number): string | null {
  try {
    const buffer = Buffer.allocUnsafe(length);
    const read = readSync(fd, buffer, 0, length, offset);
    return read === length ? buffer.toString('utf8') : null;
  } catch {
    return null;
  }
}

/** A buffer in pieces of CHUNK_BYTES, for the line reader: a whole file is never decoded as one string. */
export function* piecesOf(bytes: Buffer): Generator<Buffer> {
  for (let start = 0; start < bytes.length; start += CHUNK_BYTES) yield bytes.subarray(start, start + CHUNK_BYTES);
}

/** A file's bytes, or null when there is no file (an empty one is damage, found by parsing). */
export function readFileBytes(file: string): Buffer | null {
  try {
    return readFileSync(file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw ioError('read', file, error);
  }
}

export const CHUNK_BYTES = 1 << 20;

/** One line of queue.json: its text, without the newline, the byte offset where it starts, and its length in bytes. */
export interface Line {
  text: string;
  offset: number;
  bytes: number;
}

/**
 * A file, a megabyte at a time: a large queue.json is never held whole in memory beside its parsed tasks.
 * Each chunk is used before the next.
 */
export function* fileChunks(file: string): Generator<Buffer> {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (error) {
    throw ioError('read', file, error);
  }
  try {
    yield* chunksOf(fd, file);
  } finally {
    closeSync(fd);
  }
}

/** The chunks of an open file from byte `from` (`file` names it in errors). */
export function* chunksOf(fd: number, file: string, from = 0): Generator<Buffer> {
  const chunk = Buffer.allocUnsafe(CHUNK_BYTES);
  for (let position = from; ; ) {
    let bytes: number;
    try {
      bytes = readSync(fd, chunk, 0, CHUNK_BYTES, position);
    } catch (error) {
      throw ioError('read', file, error);
    }
    if (bytes === 0) return;
    position += bytes;
    yield chunk.subarray(0, bytes);
  }
}

/** The lines of UTF-8 bytes that start at byte `from` of their file, with the offset of each. */
export function* linesOf(chunks: Iterable<Buffer>, from = 0): Generator<Line> {
  const decoder = new StringDecoder('utf8');
  let rest = '';
  let offset = from;
  for (const chunk of chunks) {
    const lines = (rest + decoder.write(chunk)).split('\n');
    rest = lines.pop()!;
    for (const text of lines) {
      const bytes = Buffer.byteLength(text);
      yield { text, offset, bytes };
      offset += bytes + 1;
    }
  }
  const last = rest + decoder.end();
  yield { text: last, offset, bytes: Buffer.byteLength(last) };
}
