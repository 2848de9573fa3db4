import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue, QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  byId,
  corpus60,
  freePort,
  freshPrefix,
  obliterate,
  readRecords,
  readStatuses,
  REDIS_URL,
  run,
  start,
  until,
  waitForLog,
  waitForStatuses,
  type Running,
} from './fleet-helpers.js';

let work: string;
let corpus: ReturnType<typeof corpus60>;
const prefixes: string[] = [];
const running: Running[] = [];
const servers: ChildProcess[] = [];

function launch(args: string[], env: Record<string, string>): Running {
  const process = start(args, env);
  running.push(process);
  return process;
}

function fleetEnv(): Record<string, string> {
  const prefix = freshPrefix();
  prefixes.push(prefix);
  return { FACEFLEET_PREFIX: prefix };
}

/** Every one of the 60 images exactly once: one status per key and id, one record per face. */
function expectExactlyOnce(out: string): void {
  const statuses = readStatuses(out);
  expect(statuses).toHaveLength(60);
  expect(new Set(statuses.map((s) => s.key)).size).toBe(60);
  expect(new Set(statuses.map((s) => s.id)).size).toBe(60);
  for (const [id, code] of corpus.brokenIds) {
    expect(statuses.find((s) => s.id === id)).toMatchObject({ status: 'failed', error: { code } });
  }
  expect(statuses.filter((s) => s.status === 'failed')).toHaveLength(corpus.brokenIds.size);
  const records = byId(readRecords(join(out, 'broadcast.json')));
  for (const s of statuses) expect(records.get(String(s.id))?.length ?? 0).toBe(s.faces);
  expect(records.size).toBe(statuses.filter((s) => s.faces > 0).length);
}

/** Both queues empty and idle, so that a late duplicate would have shown by now. */
async function drained(connection: { url: string }, prefix: string): Promise<void> {
  const queues = ['faces', 'faces-results'].map((name) => new Queue(name, { connection, prefix }));
  try {
    await until(
      async () => {
        const counts = await Promise.all(
          queues.map((q) => q.getJobCounts('waiting', 'prioritized', 'active', 'delayed')),
        );
        return counts.every((c) => Object.values(c).every((n) => n === 0));
      },
      'both queues to drain',
      // A result whose acknowledgement was lost waits out its lock (30 s) before it comes back.
      90_000,
      250,
    );
  } finally {
    await Promise.all(queues.map((q) => q.close()));
  }
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'facefleet-restarts-'));
  corpus = corpus60(join(work, 'corpus'));
});

afterAll(async () => {
  await Promise.all(running.map((r) => r.stop('SIGKILL')));
  for (const server of servers) server.kill('SIGKILL');
  for (const prefix of prefixes) await obliterate(prefix);
  rmSync(work, { recursive: true, force: true });
});

describe('a rolling restart: SIGTERM to each worker process in turn, a new one after each', () => {
  it('loses nothing and duplicates nothing; each stopped worker finishes its jobs in hand, exit 0', async () => {
    const env = fleetEnv();
    const prefix = env.FACEFLEET_PREFIX!;
    const out = join(work, 'out-rolling');
    const connection = { url: REDIS_URL };
    const queue = new Queue('faces', { connection, prefix });
    const events = new QueueEvents('faces', { connection, prefix });
    let stalled = 0;
    events.on('stalled', () => (stalled += 1));
    await events.waitUntilReady();

    try {
      launch(['sink', '--out', out], env);
      const first = [
        launch(['worker', '--concurrency', '1'], env),
        launch(['worker', '--concurrency', '1'], env),
      ];
      await Promise.all(first.map((w) => waitForLog(w, /worker started/)));
      expect((await run(['enqueue', corpus.dir], env)).log).toContain('60 jobs added');

      /** Jobs a worker process holds right now, found by the worker name BullMQ stores on them. */
      const inHand = async (worker: Running) =>
        (await queue.getJobs(['active'])).filter((j) =>
          j.processedBy?.includes(`:${worker.child.pid}:`),
        );
      const replacements: Running[] = [];
      const restarts: { worker: Running; at: number; code: number | null }[] = [];
      for (const [i, worker] of first.entries()) {
        await waitForStatuses(out, 10 + 15 * i);
        await until(async () => (await inHand(worker)).length > 0, 'a job in hand', 30_000, 20);
        const at = Date.now();
        const code = await worker.stop('SIGTERM');
        restarts.push({ worker, at, code });
        // Nothing it held is left behind: it finished every job before it exited.
        expect(await inHand(worker)).toEqual([]);
        const next = launch(['worker', '--concurrency', '1'], env);
        replacements.push(next);
        await waitForLog(next, /worker started/);
      }

      await waitForStatuses(out, 60);
      await drained(connection, prefix);
      expectExactlyOnce(out);

      const finished = await queue.getJobs(['completed', 'failed']);
      expect(finished).toHaveLength(60);
      // Every job ran once: none was taken from a stopping worker and run again.
      expect(finished.filter((j) => j.attemptsMade !== 1 || j.stalledCounter !== 0)).toEqual([]);
      expect(stalled).toBe(0);
      for (const { worker, at, code } of restarts) {
        expect(code).toBe(0);
        expect(worker.log()).toMatch(/stopping: finishing the jobs in hand/);
        expect(worker.log()).not.toMatch(/did not stop cleanly/);
        // It finished at least one job after the signal: it held work when told to stop.
        const late = finished.filter(
          (j) => j.processedBy?.includes(`:${worker.child.pid}:`) && (j.finishedOn ?? 0) > at,
        );
        expect(late.length).toBeGreaterThan(0);
      }
      for (const w of replacements) expect(w.child.exitCode).toBeNull();
    } finally {
      await events.close();
      await queue.close();
    }
  }, 150_000);
});

describe('Redis with append-only persistence, killed and started again in the middle of a run', () => {
  it('keeps every job enqueued before the kill, and every image ends exactly once', async () => {
    const port = await freePort();
    const dir = join(work, 'redis-aof');
    mkdirSync(dir);
    const url = `redis://127.0.0.1:${port}`;
    const ping = () =>
      spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() ===
      'PONG';
    const startRedis = () => {
      const server = spawn(
        'redis-server',
        [
          ...['--port', String(port), '--bind', '127.0.0.1', '--dir', dir],
          ...['--appendonly', 'yes', '--appendfsync', 'always', '--save', ''],
        ],
        { stdio: 'ignore' },
      );
      servers.push(server);
      return server;
    };
    let redis = startRedis();
    await until(ping, 'the private redis-server', 10_000);

    const prefix = freshPrefix();
    const env = { FACEFLEET_PREFIX: prefix, REDIS_URL: url };
    const out = join(work, 'out-aof');
    const sink = launch(['sink', '--out', out], env);
    const worker = launch(['worker', '--concurrency', '2'], env);
    await waitForLog(worker, /worker started/);
    expect((await run(['enqueue', corpus.dir], env)).log).toContain('60 jobs added');

    await waitForStatuses(out, 10);
    // SIGKILL, not SIGTERM: a crash, with no chance to flush anything on the way out. With
    // appendfsync always, every write Redis acknowledged is already on disk.
    redis.kill('SIGKILL');
    await new Promise((resolve) => redis.once('exit', resolve));
    const atKill = readStatuses(out).length;
    await waitForLog(worker, /redis unreachable; waiting for it/);
    redis = startRedis();
    await until(ping, 'redis to start again', 10_000);

    // Straight after the restart every job is still there, in whatever state it had reached.
    const queue = new Queue('faces', { connection: { url }, prefix });
    try {
      const counts = await queue.getJobCounts(
        'waiting',
        'prioritized',
        'active',
        'delayed',
        'completed',
        'failed',
      );
      expect(Object.values(counts).reduce((a, b) => a + b, 0)).toBe(60);
    } finally {
      await queue.close();
    }

    await waitForStatuses(out, 60);
    await drained({ url }, prefix);
    expect(atKill).toBeLessThan(60);
    expectExactlyOnce(out);
    await expect.poll(() => worker.log(), { timeout: 30_000 }).toMatch(/redis reachable again/);
    expect(worker.child.exitCode).toBeNull();
    expect(sink.child.exitCode).toBeNull();
    expect(await worker.stop('SIGTERM')).toBe(0);
    expect(await sink.stop('SIGTERM')).toBe(0);
  }, 150_000);
});
