import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  readSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';

export const ROOT = resolve(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'apps', 'cli', 'bin', 'facefleet.js');
export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** `facefleet <args>` as its own process; its output is kept for when something goes wrong. */
export function facefleet(
  args: string[],
  env: Record<string, string>,
): ChildProcess & { log: () => string } {
  const child = spawn(process.execPath, [CLI, ...args, '--log-level', 'warn'], {
    cwd: ROOT,
    env: { ...process.env, REDIS_URL, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout.on('data', (chunk: Buffer) => (log += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (log += chunk.toString()));
  return Object.assign(child, { log: () => log });
}

export async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((done) => child.once('exit', done));
  child.kill('SIGTERM');
  await exited;
}

/** `count` distinct paths (so distinct job keys) that all point at one image. */
export function copiesOf(image: string, count: number, stem: string): string[] {
  const dir = mkdtempSync(join(tmpdir(), 'facefleet-bench-'));
  mkdirSync(dir, { recursive: true });
  return Array.from({ length: count }, (_, i) => {
    const path = join(dir, `${stem}-${String(i).padStart(6, '0')}.jpg`);
    symlinkSync(image, path);
    return path;
  });
}

/**
 * Counts the lines of a file that only grows, reading only what was added since the last call:
 * the bench polls the sink's status file and must not cost the machine it measures.
 */
export function lineCounter(path: string): () => number {
  let offset = 0;
  let lines = 0;
  return () => {
    let fd: number;
    try {
      fd = openSync(path, 'r');
    } catch {
      return 0;
    }
    try {
      const size = fstatSync(fd).size;
      if (size > offset) {
        const chunk = Buffer.alloc(size - offset);
        readSync(fd, chunk, 0, chunk.length, offset);
        // Only whole lines count; a partly written last line is read again next time.
        const end = chunk.lastIndexOf(10);
        if (end >= 0) {
          for (let i = 0; i <= end; i += 1) if (chunk[i] === 10) lines += 1;
          offset += end + 1;
        }
      }
      return lines;
    } finally {
      closeSync(fd);
    }
  };
}

export async function until(
  check: () => boolean,
  what: string,
  timeoutMs: number,
  everyMs = 20,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, everyMs));
  }
}

/** Removes every key of a bench fleet from Redis. */
export async function obliterate(prefix: string): Promise<void> {
  for (const name of ['faces', 'faces-live', 'faces-results']) {
    const queue = new Queue(name, { connection: { url: REDIS_URL }, prefix });
    await queue.obliterate({ force: true });
    await queue.close();
  }
}

/** The fields of /proc/<pid>/stat after the command's name; undefined without /proc or the process. */
function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}

/** CPU milliseconds (user and system) a process has used so far; /proc counts 100 ticks a second. */
export function cpuMs(pid: number): number | undefined {
  const fields = procStat(pid);
  return fields ? (Number(fields[11]) + Number(fields[12])) * 10 : undefined;
}

/** The processes whose parent is `pid` (a worker's inference processes). */
export function childrenOf(pid: number): number[] {
  let entries: string[];
  try {
    entries = readdirSync('/proc');
  } catch {
    return [];
  }
  return entries
    .filter((name) => /^\d+$/.test(name))
    .map(Number)
    .filter((child) => procStat(child)?.[1] === String(pid));
}

/** The Redis server's process id, if it runs on this machine (else its CPU cannot be read). */
export async function localRedisPid(): Promise<number | undefined> {
  const redis = new Redis(REDIS_URL, { lazyConnect: true });
  try {
    await redis.connect();
    const pid = Number(/process_id:(\d+)/.exec(await redis.info('server'))?.[1]);
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8');
    return comm.startsWith('redis') ? pid : undefined;
  } catch {
    return undefined;
  } finally {
    redis.disconnect();
  }
}

/**
 * Adds up the CPU time of named groups of processes over the spans it is told to measure, so a
 * report can say what each part of a pipeline costs per image.
 */
export class CpuMeter {
  private readonly spent = new Map<string, number>();
  private images = 0;

  constructor(private readonly groups: () => Record<string, number[]>) {}

  /** Runs `span`, which processes `images` images, and charges each group its CPU time. */
  async measure<T>(images: number, span: () => Promise<T>): Promise<T> {
    const read = () =>
      Object.entries(this.groups()).map(
        ([name, pids]) => [name, pids.reduce((sum, pid) => sum + (cpuMs(pid) ?? 0), 0)] as const,
      );
    const before = new Map(read());
    const result = await span();
    for (const [name, ms] of read())
      this.spent.set(name, (this.spent.get(name) ?? 0) + ms - (before.get(name) ?? ms));
    this.images += images;
    return result;
  }

  /** CPU milliseconds per image of each group, over every measured span. */
  perImage(): Record<string, number> {
    return Object.fromEntries(
      [...this.spent].map(([name, ms]) => [name, Math.round((ms / this.images) * 10) / 10]),
    );
  }
}
