import { cpSync, mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger, EnginePool, type PoolOutcome } from '@facefleet/engine';
import { jobKey } from '@facefleet/protocol';
import { data, REPO } from './helpers.js';

const logger = createLogger('test', 'silent');
const OBAMA = data('ageitgey_face_recognition/tests/test_images/obama.jpg');

function fileJob(file: string, aligned = false) {
  return { id: file.split('/').pop()!, file, ...(aligned ? { options: { aligned } } : {}) };
}

describe('an EnginePool of 2 inference processes on the onnx backend', () => {
  let pool: EnginePool;

  beforeAll(async () => {
    pool = await EnginePool.start({ processes: 2, engine: {}, logger, logLevel: 'silent' });
  });
  afterAll(() => pool.close());

  it('is what auto chooses here: onnxruntime-node, one thread per process', () => {
    expect(pool.backend).toMatchObject({ name: 'onnx', threads: 1, onnxruntime: '1.30.0' });
  });

  it('gives the same image the same embedding in every process', async () => {
    const outcomes = await Promise.all(Array.from({ length: 6 }, () => pool.run(fileJob(OBAMA))));

    expect(new Set(outcomes.map((o) => o.pid)).size).toBe(2);
    expect(outcomes[0]!.result.records).toHaveLength(1);
    for (const outcome of outcomes)
      expect(outcome.result.records).toEqual(outcomes[0]!.result.records);
  });
});

describe('an EnginePool of 2 inference processes', () => {
  let pool: EnginePool;

  beforeAll(async () => {
    pool = await EnginePool.start({
      processes: 2,
      engine: { backend: 'wasm' },
      logger,
      logLevel: 'silent',
    });
  });
  afterAll(() => pool.close());

  it('runs on the wasm backend with SIMD', () => {
    expect(pool.backend).toMatchObject({ name: 'wasm', simd: true });
  });

  it('gives the same image the same embedding in every process', async () => {
    const outcomes = await Promise.all(Array.from({ length: 6 }, () => pool.run(fileJob(OBAMA))));

    expect(new Set(outcomes.map((o) => o.pid)).size).toBe(2);
    for (const outcome of outcomes)
      expect(outcome.result.records).toEqual(outcomes[0]!.result.records);
  });

  it('releases every tensor: the count after 200 images equals the count after the first', async () => {
    const chips = data('justadudewhohacks_face-recognition.js/examples/data/faces');
    const files = readdirSync(chips).map((f) => join(chips, f));
    // 200 images: 100 chips through the detector, the same 100 as aligned faces.
    const jobs = [...files.map((f) => fileJob(f)), ...files.map((f) => fileJob(f, true))];
    expect(jobs).toHaveLength(200);

    const outcomes: PoolOutcome[] = await Promise.all(jobs.map((job) => pool.run(job)));
    const firstByPid = new Map<number, number>();
    const lastByPid = new Map<number, number>();
    for (const o of outcomes) {
      if (!firstByPid.has(o.pid)) firstByPid.set(o.pid, o.tensors);
      lastByPid.set(o.pid, o.tensors);
    }

    expect(outcomes.every((o) => o.result.status.status !== 'failed')).toBe(true);
    expect(outcomes.slice(100).every((o) => o.result.records.length === 1)).toBe(true);
    expect(lastByPid.size).toBe(2);
    for (const [pid, last] of lastByPid) expect(last).toBe(firstByPid.get(pid));
  });

  it('replaces a process killed mid-job and still finishes the job', async () => {
    const job = fileJob(OBAMA);
    const running = pool.run(job, jobKey({ file: OBAMA }));
    const victim = (
      pool as unknown as {
        slots: Set<{ child: { pid: number; kill(s: string): void }; running?: unknown }>;
      }
    ).slots;
    const busy = [...victim].find((s) => s.running !== undefined);
    busy?.child.kill('SIGKILL');

    const outcome = await running;

    expect(busy).toBeDefined();
    expect(outcome.result.status).toMatchObject({ status: 'ok', faces: 1 });
    expect(outcome.pid).not.toBe(busy!.child.pid);
    expect(pool.crashes).toBe(1);
    await expect.poll(() => pool.size).toBe(2);
  });
});

/** The pool's view of one process, read from its private state: what it holds and runs. */
interface SlotView {
  child: { pid: number; kill(signal: string): void };
  tasks: { seq: number; job: { id: string } }[];
  running?: { job: { id: string } };
}
const slotsOf = (pool: EnginePool) => [...(pool as unknown as { slots: Set<SlotView> }).slots];

describe('an EnginePool of 1 process that holds the next job', () => {
  let pool: EnginePool;

  beforeAll(async () => {
    pool = await EnginePool.start({ processes: 1, engine: {}, logger, logLevel: 'silent' });
  });
  afterAll(() => pool.close());

  it("runs a waiting caller's job before the bulk job waiting inside the process", async () => {
    const order: string[] = [];
    const run = (id: string, urgent = false) =>
      pool.run({ id, file: OBAMA }, undefined, urgent).then((o) => {
        order.push(o.result.status.id as string);
        return o;
      });
    const bulk = ['a', 'b', 'c'].map((id) => run(id));
    // a runs, b waits inside the process, c waits in the pool.
    expect(slotsOf(pool)[0]!.tasks.map((t) => t.job.id)).toEqual(['a', 'b']);
    expect(pool.queued).toBe(1);
    const urgent = run('u', true);
    // The caller's job goes to the process at once, as a third.
    expect(slotsOf(pool)[0]!.tasks.map((t) => t.job.id)).toEqual(['a', 'b', 'u']);

    const outcomes = await Promise.all([...bulk, urgent]);

    expect(order).toEqual(['a', 'u', 'b', 'c']);
    expect(outcomes.every((o) => o.result.status.faces === 1)).toBe(true);
  });

  it('charges a crash to the running job only: the one waiting in the process is not failed', async () => {
    const crashesBefore = pool.crashes;
    const killed = new Set<number>();
    // The process that runs `running` with another job waiting in it; not one already killed.
    const holding = (running: string) =>
      slotsOf(pool).find(
        (s) => !killed.has(s.child.pid) && s.running?.job.id === running && s.tasks.length === 2,
      );
    const killWhenHolding = async (running: string) => {
      // A replacement process loads its models first: seconds on a loaded machine.
      await expect.poll(() => holding(running), { interval: 5, timeout: 60_000 }).toBeDefined();
      const slot = holding(running)!;
      killed.add(slot.child.pid);
      slot.child.kill('SIGKILL');
    };
    const poison = pool.run({ id: 'poison', file: OBAMA });
    const innocent = pool.run({ id: 'innocent', file: OBAMA });
    // Killed twice while it runs "poison" with "innocent" waiting behind it: "poison" has had its
    // two attempts, "innocent" none, so it runs in the third process.
    await killWhenHolding('poison');
    await killWhenHolding('poison');

    const [p, i] = await Promise.all([poison, innocent]);

    expect(p.result.status).toMatchObject({ status: 'failed', error: { code: 'WORKER_CRASHED' } });
    expect(i.result.status).toMatchObject({ status: 'ok', faces: 1 });
    expect(pool.crashes - crashesBefore).toBe(2);
  });
});

describe('an EnginePool that recycles its processes', () => {
  it('replaces each process after maxJobsPerProcess images and loses none', async () => {
    const pool = await EnginePool.start({
      processes: 1,
      engine: { backend: 'wasm' },
      maxJobsPerProcess: 2,
      logger,
      logLevel: 'silent',
    });
    try {
      const chip = data('justadudewhohacks_face-api.js/test/images/face1.png');
      const outcomes = await Promise.all(
        Array.from({ length: 5 }, () => pool.run(fileJob(chip, true))),
      );

      expect(outcomes.every((o) => o.result.records.length === 1)).toBe(true);
      expect(new Set(outcomes.map((o) => o.pid)).size).toBe(3);
      expect(pool.crashes).toBe(0);
    } finally {
      await pool.close();
    }
  });
});

describe('when a model file is missing or corrupt', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'facefleet-models-'));
    cpSync(join(REPO, 'models'), dir, { recursive: true });
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('stops start-up with a message naming the file and how to fix it', async () => {
    writeFileSync(join(dir, 'face_recognition_model.bin'), 'not the weights');

    const start = EnginePool.start({
      processes: 1,
      engine: { backend: 'wasm', modelsDir: dir },
      logger,
      logLevel: 'silent',
    });

    await expect(start).rejects.toThrow(
      /face_recognition_model\.bin is corrupt .*npx facefleet models install/,
    );
  });

  it('says which file is missing', async () => {
    unlinkSync(join(dir, 'ssd_mobilenetv1_model.bin'));

    const start = EnginePool.start({
      processes: 1,
      engine: { backend: 'wasm', modelsDir: dir },
      logger,
      logLevel: 'silent',
    });

    await expect(start).rejects.toThrow(/ssd_mobilenetv1_model\.bin is missing/);
  });
});
