import * as fs from 'node:fs';
import { dirname, join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import type { QueuePaths } from './paths.js';
import { goneFromThisHost } from './lock/processes.js';
import type { Heartbeat, WorkerLiveness, WorkerStatus } from '../types.js';

export const HEARTBEAT_MS = 1000;
/**
 * Files of workers gone this long are removed by the workers that come after: heartbeats (so that `worker
 * workers` stays readable) and lock slots of processes on other hosts (which cannot be checked from here).
 */
export const GONE_WORKER_FILES_KEPT_MS = 7 * 86_400_000;
/** A heartbeat older than this many intervals means its worker is dead or frozen. */
const MISSED_BEATS = 5;

export function heartbeatDir(paths: QueuePaths): string {
  return join(paths.locksDir, 'workers');
}

/**
 * Keeps the heartbeat file fresh on a timer: the worker loop only changes fields in memory, so a claim
 * costs no extra write. The timer is unref'd and never keeps the process alive.
 */
export class HeartbeatWriter {
  private readonly file: string;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    paths: QueuePaths,
    readonly beat: Heartbeat,
    private readonly now: () => number,
  ) {
    this.file = join(heartbeatDir(paths), `${beat.worker}.json`);
  }

  start(): void {
    try {
      fs.mkdirSync(dirname(this.file), { recursive: true });
    } catch {
      // a read-only queue: the worker reports that itself; heartbeats just stay unwritten
    }
    this.pruneOld();
    this.write();
    this.timer = setInterval(() => this.write(), HEARTBEAT_MS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.beat.state = 'stopped';
    this.beat.current_task = null;
    this.beat.current_tasks = [];
    this.write();
  }

  private pruneOld(): void {
    const dir = dirname(this.file);
    let names: string[];
    try {
      names = fs.readdirSync(dir).filter((name) => name.endsWith('.json'));
    } catch {
      return;
    }
    const cutoff = this.now() - GONE_WORKER_FILES_KEPT_MS;
    for (const name of names) {
      try {
        const beat = JSON.parse(fs.readFileSync(join(dir, name), 'utf8')) as Heartbeat;
        if (Date.parse(beat.beat_at) < cutoff) fs.unlinkSync(join(dir, name));
      } catch {
        // unreadable or already gone: leave it
      }
    }
  }

  private write(): void {
    this.beat.beat_at = new Date(this.now()).toISOString();
    try {
      writeFileAtomic.sync(this.file, `${JSON.stringify(this.beat)}\n`, { fsync: false });
    } catch {
      // A missed beat is not worth stopping work for; the next one tries again.
    }
  }
}

/** Every heartbeat on file, judged: alive, stopped (exited cleanly), dead (pid gone), silent (no beat lately). */
export function readWorkers(paths: QueuePaths, host: string, now: number): WorkerStatus[] {
  let names: string[];
  try {
    names = fs.readdirSync(heartbeatDir(paths)).filter((name) => name.endsWith('.json'));
  } catch {
    return [];
  }
  const workers: WorkerStatus[] = [];
  for (const name of names) {
    let beat: Heartbeat;
    try {
      beat = JSON.parse(fs.readFileSync(join(heartbeatDir(paths), name), 'utf8')) as Heartbeat;
    } catch {
      continue;
    }
    workers.push({ ...beat, liveness: judge(beat, host, now) });
  }
  return workers.sort((a, b) => a.started_at.localeCompare(b.started_at));
}

function judge(beat: Heartbeat, host: string, now: number): WorkerLiveness {
  if (beat.state === 'stopped') return 'stopped';
  if (goneFromThisHost(beat, host)) return 'dead';
  return now - Date.parse(beat.beat_at) > HEARTBEAT_MS * MISSED_BEATS ? 'silent' : 'alive';
}
