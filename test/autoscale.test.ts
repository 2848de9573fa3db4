import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { z } from 'zod';
import { createLogger, EnginePool } from '@facefleet/engine';
import { autoscaleConfig, ScalePolicy } from '@facefleet/fleet';
import {
  freshPrefix,
  obliterate,
  readRecords,
  REDIS_URL,
  run,
  start,
  until,
  waitForLog,
  waitForStatuses,
  type Running,
} from './fleet-helpers.js';
import { data } from './helpers.js';

/** A small portrait (one face): the backlog is what matters here, not the pictures. */
const FACE = data('ageitgey_face_recognition/examples/obama_small.jpg');
const JOBS = 100;
const QUIET_MS = 4_000;
const UP_AFTER_MS = 1_000;

let work: string;
const prefix = freshPrefix();
const env = { FACEFLEET_PREFIX: prefix };
const running: Running[] = [];

function launch(args: string[]): Running {
  const process = start(args, env);
  running.push(process);
  return process;
}

/** The worker's log lines about autoscaling, as pino wrote them. */
const ScaleLine = z.object({
  time: z.number(),
  msg: z.string(),
  autoscale: z.enum(['up', 'down', 'min']).optional(),
  autoscaled: z.enum(['up', 'down', 'min']).optional(),
  from: z.number().optional(),
  to: z.number().optional(),
  processes: z.number().optional(),
  concurrency: z.number().optional(),
  backlog: z.number().optional(),
  heldMs: z.number().optional(),
});

function scaleLines(log: string) {
  return log
    .split('\n')
    .filter((line) => line.startsWith('{') && line.includes('"autoscale'))
    .map((line) => ScaleLine.parse(JSON.parse(line)))
    .filter((line) => line.autoscale ?? line.autoscaled);
}

/** Inference processes of the worker, counted by the operating system. */
function children(worker: Running): number {
  try {
    return execFileSync('pgrep', ['-P', String(worker.child.pid)])
      .toString()
      .trim()
      .split('\n').length;
  } catch {
    return 0;
  }
}

interface Gauges {
  backlog: number;
  active: number;
  processes: number;
  perProcess: number;
  perSecond: number;
}

async function gauges(base: string): Promise<Gauges> {
  const text = await (await fetch(`${base}/metrics`)).text();
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
  return {
    backlog: value('facefleet_backlog_jobs'),
    active: value('facefleet_active_jobs'),
    processes: value('facefleet_inference_processes'),
    perProcess: value('facefleet_backlog_per_process'),
    perSecond: value('facefleet_jobs_finished_per_second'),
  };
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'facefleet-autoscale-'));
  // One broadcast of 100 frames, every one a link to the same small portrait: 100 distinct jobs.
  mkdirSync(join(work, 'frames'));
  for (let i = 1; i <= JOBS; i += 1)
    symlinkSync(FACE, join(work, 'frames', `burst-${String(i).padStart(6, '0')}.jpg`));
});

afterAll(async () => {
  await Promise.all(running.map((r) => r.stop('SIGKILL')));
  await obliterate(prefix);
  rmSync(work, { recursive: true, force: true });
});

describe('facefleet worker --autoscale 1..2', () => {
  it('grows to 2 processes under a 100-job backlog, back to 1 after the quiet period; every job once', async () => {
    const out = join(work, 'out');
    launch(['sink', '--out', out]);
    const api = launch(['serve', '--port', '0']);
    // On a failure, the last words of every process tell what happened.
    onTestFailed(() => {
      for (const r of running)
        console.error(
          `--- ${r.child.spawnargs.slice(2, 3).join(' ')} (exit ${r.child.exitCode ?? r.child.signalCode}):\n` +
            r.log().split('\n').slice(-15).join('\n'),
        );
    });
    const worker = launch([
      'worker',
      '--autoscale',
      '1..2',
      '--scale-up-after',
      `${UP_AFTER_MS}ms`,
      '--scale-down-after',
      `${QUIET_MS / 1000}s`,
      // The fast detector keeps the test short on two shared cores; the backlog does the rest.
      '--backend',
      'wasm',
      '--detector',
      'tiny',
    ]);
    await Promise.all([
      waitForLog(worker, /"msg":"autoscaling inference processes"/),
      waitForLog(api, /api listening/),
    ]);
    const base = /"address":"(http:\/\/[^"]+)"/.exec(api.log())![1]!;
    expect(children(worker)).toBe(1);
    await until(async () => (await gauges(base)).processes === 1, 'the worker in /metrics', 10_000);

    const enqueued = Date.now();
    const added = await run(['enqueue', join(work, 'frames')], env);
    expect(added.log).toContain(`${JOBS} jobs added`);

    // Watch the gauges an outside autoscaler would read while the backlog drains.
    const seen: Gauges[] = [];
    let watching = true;
    const watch = (async () => {
      while (watching) {
        seen.push(await gauges(base));
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    })();

    await waitForLog(worker, /"autoscaled":"up"/, 30_000);
    expect(children(worker)).toBe(2);
    await waitForStatuses(out, JOBS, 120_000);
    const drained = Date.now();
    await waitForLog(worker, /"autoscaled":"down"/, QUIET_MS + 15_000);
    watching = false;
    await watch;
    seen.push(await gauges(base));

    // The changes, from the log: exactly one up (1 → 2) and one down (2 → 1), never out of bounds.
    const lines = scaleLines(worker.log());
    const decisions = lines.filter((l) => l.autoscale);
    const done = lines.filter((l) => l.autoscaled);
    expect(decisions.map((l) => [l.autoscale, l.from, l.to])).toEqual([
      ['up', 1, 2],
      ['down', 2, 1],
    ]);
    expect(done.map((l) => [l.autoscaled, l.processes, l.concurrency])).toEqual([
      ['up', 2, 4],
      ['down', 1, 2],
    ]);
    const [up, down] = decisions as [z.infer<typeof ScaleLine>, z.infer<typeof ScaleLine>];
    const [grown, shrunk] = done as [z.infer<typeof ScaleLine>, z.infer<typeof ScaleLine>];

    // Up within seconds of the backlog: the pressure held for --scale-up-after, then the decision.
    expect(up.backlog).toBeGreaterThanOrEqual(2);
    expect(up.heldMs).toBeGreaterThanOrEqual(UP_AFTER_MS);
    expect(up.time - enqueued).toBeLessThan(UP_AFTER_MS + 6_000);
    // Down only after the quiet period, and not long after it.
    expect(down.heldMs).toBeGreaterThanOrEqual(QUIET_MS);
    expect(down.time - grown.time).toBeGreaterThan(QUIET_MS);
    expect(down.time - drained).toBeLessThan(QUIET_MS + 5_000);
    expect(shrunk.time).toBeGreaterThanOrEqual(down.time);
    expect(children(worker)).toBe(1);
    console.log(
      `autoscale: up decided ${up.time - enqueued} ms after enqueue (held ${up.heldMs} ms), ` +
        `second process ready ${grown.time - up.time} ms later; queue drained ${drained - enqueued} ms ` +
        `after enqueue; down decided ${down.time - drained} ms after the last status (quiet ${down.heldMs} ms), ` +
        `done in ${shrunk.time - down.time} ms`,
    );

    // The gauges followed: backlog seen, 2 processes at the peak, 1 again at the end.
    expect(Math.max(...seen.map((g) => g.backlog))).toBeGreaterThan(0);
    expect(Math.max(...seen.map((g) => g.perProcess))).toBeGreaterThan(0);
    expect(Math.max(...seen.map((g) => g.processes))).toBe(2);
    expect(seen.every((g) => g.processes >= 1 && g.processes <= 2)).toBe(true);
    expect(seen.at(-1)).toMatchObject({ backlog: 0, active: 0, processes: 1 });
    expect(seen.at(-1)!.perSecond).toBeGreaterThan(0);
    expect(seen.at(-1)!.perSecond).toBeLessThanOrEqual(JOBS / 60);

    // Every job ended exactly once: in Redis, in the status lines and in the records.
    const queue = new Queue('faces', { connection: { url: REDIS_URL }, prefix });
    const counts = await queue.getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed');
    await queue.close();
    expect(counts).toEqual({ waiting: 0, active: 0, delayed: 0, completed: JOBS, failed: 0 });
    const statuses = await waitForStatuses(out, JOBS);
    expect(statuses).toHaveLength(JOBS);
    expect(new Set(statuses.map((s) => s.id)).size).toBe(JOBS);
    expect(statuses.every((s) => s.status === 'ok' && s.faces === 1)).toBe(true);
    const records = readRecords(join(out, 'burst.json'));
    expect(records).toHaveLength(JOBS);
    expect(new Set(records.map((r) => r.id)).size).toBe(JOBS);

    // `facefleet status` carries the current size and the bounds.
    const status = await run(['status', '--json'], env);
    const faces = (JSON.parse(status.log) as Array<{ name: string; jobWorkers?: unknown[] }>)[0]!;
    expect(faces.jobWorkers).toEqual([
      expect.objectContaining({ processes: 1, autoscale: { min: 1, max: 2 } }),
    ]);

    expect(await worker.stop('SIGTERM')).toBe(0);
  }, 150_000);
});

describe('the scaling rules', () => {
  const config = autoscaleConfig({
    min: 1,
    max: 4,
    upPerProcess: 2,
    scaleUpAfterMs: 2_000,
    scaleDownAfterMs: 10_000,
  });

  it('adds processes only after the pressure has lasted, at most doubling, never past the maximum', () => {
    const policy = new ScalePolicy(config);
    expect(policy.decide({ at: 0, backlog: 500, size: 1, busy: 1 })).toBeUndefined();
    expect(policy.decide({ at: 1_999, backlog: 500, size: 1, busy: 1 })).toBeUndefined();
    expect(policy.decide({ at: 2_000, backlog: 500, size: 1, busy: 1 })).toMatchObject({
      why: 'up',
      from: 1,
      to: 2,
      heldMs: 2_000,
    });
    expect(policy.decide({ at: 3_000, backlog: 500, size: 3, busy: 3 })).toBeUndefined();
    expect(policy.decide({ at: 5_000, backlog: 500, size: 3, busy: 3 })).toMatchObject({ to: 4 });
    expect(policy.decide({ at: 9_000, backlog: 500, size: 4, busy: 4 })).toBeUndefined();
  });

  it('does not add processes while one is idle or the backlog is short', () => {
    const policy = new ScalePolicy(config);
    for (let at = 0; at <= 10_000; at += 1_000) {
      expect(policy.decide({ at, backlog: 500, size: 2, busy: 1 })).toBeUndefined();
      expect(policy.decide({ at, backlog: 3, size: 2, busy: 2 })).toBeUndefined();
    }
  });

  it('retires processes after the quiet period, down to the most that were busy, never below the minimum', () => {
    const policy = new ScalePolicy(config);
    expect(policy.decide({ at: 0, backlog: 0, size: 4, busy: 2 })).toBeUndefined();
    expect(policy.decide({ at: 5_000, backlog: 0, size: 4, busy: 3 })).toBeUndefined();
    expect(policy.decide({ at: 10_000, backlog: 0, size: 4, busy: 0 })).toMatchObject({
      why: 'down',
      from: 4,
      to: 3,
      heldMs: 10_000,
    });
    // A job waiting again restarts the quiet period.
    expect(policy.decide({ at: 15_000, backlog: 0, size: 3, busy: 0 })).toBeUndefined();
    expect(policy.decide({ at: 16_000, backlog: 1, size: 3, busy: 3 })).toBeUndefined();
    expect(policy.decide({ at: 17_000, backlog: 0, size: 3, busy: 0 })).toBeUndefined();
    expect(policy.decide({ at: 26_999, backlog: 0, size: 3, busy: 0 })).toBeUndefined();
    expect(policy.decide({ at: 27_000, backlog: 0, size: 3, busy: 0 })).toMatchObject({ to: 1 });
    expect(policy.decide({ at: 99_000, backlog: 0, size: 1, busy: 0 })).toBeUndefined();
  });

  it('restores the minimum when processes are missing, and refuses bounds that cross', () => {
    expect(new ScalePolicy(config).decide({ at: 0, backlog: 0, size: 0, busy: 0 })).toMatchObject({
      why: 'min',
      to: 1,
    });
    expect(() => autoscaleConfig({ min: 3, max: 2 })).toThrow(/minimum is above the maximum/);
  });
});

describe('EnginePool.grow and shrink', () => {
  it('adds a process, then retires a busy one only after it has answered its job', async () => {
    const pool = await EnginePool.start({
      processes: 1,
      engine: { backend: 'wasm' },
      logger: createLogger('test', 'silent'),
      logLevel: 'silent',
    });
    try {
      await pool.grow(1);
      expect(pool.size).toBe(2);

      const job = (i: number) => ({ id: `grow-${i}`, file: FACE });
      const outcomes = Promise.all([0, 1, 2, 3].map((i) => pool.run(job(i))));
      await until(() => pool.busy === 2, 'both processes busy', 10_000, 5);
      // Both hold a job: the one retired takes no other and leaves once it has answered.
      expect(await pool.shrink(1)).toBe(1);
      expect(pool.size).toBe(1);

      const results = await outcomes;
      expect(results.map((o) => o.result.records.length)).toEqual([1, 1, 1, 1]);
      expect(new Set(results.map((o) => o.pid)).size).toBe(2);
      expect(pool.crashes).toBe(0);
      // Never the last one.
      expect(await pool.shrink(5)).toBe(0);
      expect(pool.size).toBe(1);
    } finally {
      await pool.close();
    }
  });
});
