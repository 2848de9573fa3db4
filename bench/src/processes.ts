import { spawn, type ChildProcess } from 'node:child_process';
import {
  closeSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readSync,
  symlinkSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Queue } from 'bullmq';

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
 * the bench polls the sink's status file every 20 ms and must not cost the machine it measures.
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

export async function until(check: () => boolean, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 20));
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
