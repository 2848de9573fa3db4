import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FaceRecord, ImageStatus } from '@facefleet/protocol';
import {
  byId,
  corpus60,
  freshPrefix,
  obliterate,
  readRecords,
  readStatuses,
  REDIS_URL,
  run,
  start,
  waitForLog,
  waitForStatuses,
  type Running,
} from './fleet-helpers.js';

let work: string;
let corpus: ReturnType<typeof corpus60>;
let reference: Map<string, FaceRecord[]>;
const prefixes: string[] = [];
const running: Running[] = [];

function fleetEnv(): Record<string, string> {
  const prefix = freshPrefix();
  prefixes.push(prefix);
  return { FACEFLEET_PREFIX: prefix };
}

function launch(args: string[], env: Record<string, string>): Running {
  const process = start(args, env);
  running.push(process);
  return process;
}

/** Every image exactly once, broken ones failed with their codes, records as `facefleet embed` gives. */
function expectExactlyOnce(out: string): void {
  const statuses = readStatuses(out);
  const records = readRecords(join(out, 'broadcast.json'));

  expect(statuses).toHaveLength(60);
  expect(new Set(statuses.map((s) => s.key)).size).toBe(60);
  expect(new Set(statuses.map((s) => s.id)).size).toBe(60);
  for (const [id, code] of corpus.brokenIds) {
    expect(statuses.find((s) => s.id === id)).toMatchObject({ status: 'failed', error: { code } });
  }
  expect(byId(records)).toEqual(reference);
  const faces = (s: ImageStatus) => (s.status === 'ok' ? s.faces : 0);
  expect(records).toHaveLength(statuses.reduce((sum, s) => sum + faces(s), 0));
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'facefleet-fleet-'));
  corpus = corpus60(join(work, 'corpus'));
  const embedded = await run(
    ['embed', corpus.dir, '--out', join(work, 'reference'), '--workers', '2'],
    {},
  );
  expect(embedded.code).toBe(0);
  reference = byId(readRecords(join(work, 'reference', 'broadcast.json')));
  expect(reference.size).toBeGreaterThan(30);
});

afterAll(async () => {
  await Promise.all(running.map((r) => r.stop('SIGKILL')));
  for (const prefix of prefixes) await obliterate(prefix);
  rmSync(work, { recursive: true, force: true });
});

describe('enqueue → 2 worker processes → sink', () => {
  it('writes every image exactly once, records equal to facefleet embed, and enqueueing twice adds nothing', async () => {
    const env = fleetEnv();
    const out = join(work, 'out-a');

    const first = await run(['enqueue', corpus.dir], env);
    const second = await run(['enqueue', corpus.dir], env);
    expect(first.log).toContain('60 jobs added, 0 already queued or done, 0 refused');
    expect(second.log).toContain('0 jobs added, 60 already queued or done');

    launch(['sink', '--out', out], env);
    const workers = [
      launch(['worker', '--concurrency', '1'], env),
      launch(['worker', '--concurrency', '1'], env),
    ];
    await waitForStatuses(out, 60);
    expectExactlyOnce(out);

    const again = await run(['enqueue', corpus.dir], env);
    expect(again.log).toContain('0 jobs added, 60 already queued or done');
    for (const w of workers) expect(w.log()).toMatch(/"msg":"worker started"/);

    const status = await run(['status'], env);
    expect(status.log).toMatch(
      /faces: waiting 0, prioritized 0, active 0, delayed 0, completed 57, failed 3; 2 workers \(2 inference processes\); 60 finished in the last minute/,
    );
    expect(status.log).toMatch(
      /faces-results: waiting 0, prioritized 0, active 0, delayed 0, completed 60, failed 0; 1 sink; 60 finished in the last minute/,
    );
    expect(status.log).toMatch(
      /faces-live: waiting 0, prioritized 0, active 0, delayed 0, completed 0, failed 0; 2 workers; 0 finished in the last minute/,
    );
  });
});

describe('when a worker process is killed in the middle of the run', () => {
  it('the other finishes its jobs: every image exactly once, nothing duplicated or missing', async () => {
    const env = fleetEnv();
    const out = join(work, 'out-kill-worker');
    launch(['sink', '--out', out], env);
    const doomed = launch(['worker', '--concurrency', '1', '--lock-ms', '1500'], env);
    const survivor = launch(['worker', '--concurrency', '1', '--lock-ms', '1500'], env);
    await Promise.all([
      waitForLog(doomed, /worker started/),
      waitForLog(survivor, /worker started/),
    ]);

    await run(['enqueue', corpus.dir], env);
    await waitForStatuses(out, 10);
    // One inference process of the survivor dies too: its pool replaces it and retries the image.
    const child = execFileSync('pgrep', ['-P', String(survivor.child.pid)])
      .toString()
      .trim()
      .split('\n')[0];
    process.kill(Number(child), 'SIGKILL');
    await doomed.stop('SIGKILL');

    await waitForStatuses(out, 60);
    await drained(env.FACEFLEET_PREFIX!);
    expectExactlyOnce(out);
    expect(survivor.log()).toMatch(/inference process died; starting another/);
  });
});

describe('when the sink is killed in the middle of the run and started again', () => {
  it('writes every image exactly once', async () => {
    const env = fleetEnv();
    const out = join(work, 'out-kill-sink');
    const sink = launch(['sink', '--out', out], env);
    launch(['worker', '--concurrency', '2'], env);

    await run(['enqueue', corpus.dir], env);
    await waitForStatuses(out, 15);
    await sink.stop('SIGKILL');
    const before = readStatuses(out).length;
    launch(['sink', '--out', out], env);

    await waitForStatuses(out, 60);
    await drained(env.FACEFLEET_PREFIX!);
    expect(before).toBeLessThan(60);
    expectExactlyOnce(out);
  });
});

/** Waits until both queues are empty and idle, so that a late duplicate would have shown. */
async function drained(prefix: string): Promise<void> {
  const queues = ['faces', 'faces-results'].map(
    (name) => new Queue(name, { connection: { url: REDIS_URL }, prefix }),
  );
  try {
    await expect
      .poll(
        async () => {
          const counts = await Promise.all(
            queues.map((q) => q.getJobCounts('waiting', 'prioritized', 'active', 'delayed')),
          );
          return counts.every((c) => Object.values(c).every((n) => n === 0));
        },
        { timeout: 60_000, interval: 250 },
      )
      .toBe(true);
  } finally {
    await Promise.all(queues.map((q) => q.close()));
  }
}
