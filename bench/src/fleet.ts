import { randomBytes } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createLogger, EnginePool } from '@facefleet/engine';
import { FaceProducer } from '@facefleet/fleet';
import { copiesOf, facefleet, lineCount, obliterate, stop, until } from './processes.js';
import { median, round } from './stats.js';

export interface FleetRow {
  readonly processes: number;
  /** Images per timed round. */
  readonly images: number;
  readonly rounds: number;
  /** The median round's seconds and rate. */
  readonly seconds: number;
  readonly imagesPerSecond: number;
}

/** Timed rounds of `images` each, summed up by the median round. */
async function rounds(
  processes: number,
  images: number,
  count: number,
  round1: (i: number) => Promise<number>,
): Promise<FleetRow> {
  const seconds: number[] = [];
  for (let i = 0; i < count; i += 1) seconds.push(await round1(i));
  const mid = median(seconds);
  return {
    processes,
    images,
    rounds: count,
    seconds: round(mid, 1),
    imagesPerSecond: round(images / mid),
  };
}

/**
 * The whole fleet through Redis: `facefleet worker --concurrency N` and `facefleet sink`, fed by
 * the typed producer. A warm-up batch first (models loaded, kernels compiled, buffers grown: five
 * images per process), then `count` rounds of `images` copies of one frame, each timed from the
 * enqueue to the sink's last status line; the median round counts. A round must be long enough
 * that the first job's wait and the last status line's are a small part of it.
 */
export async function benchFleet(
  frame: string,
  images: number,
  processes: number,
  backend: 'onnx' | 'wasm',
  count = 3,
): Promise<FleetRow> {
  const prefix = `bench-${randomBytes(4).toString('hex')}`;
  const env = { FACEFLEET_PREFIX: prefix };
  const out = mkdtempSync(join(tmpdir(), 'facefleet-bench-out-'));
  const status = join(out, '_status.jsonl');
  const worker = facefleet(
    ['worker', '--concurrency', String(processes), '--backend', backend],
    env,
  );
  const sink = facefleet(['sink', '--out', out], env);
  const producer = await FaceProducer.connect({ prefix });
  const job = (file: string) => ({ id: basename(file, '.jpg'), file });
  try {
    const warm = copiesOf(frame, 5 * processes, 'warm');
    await producer.enqueue(warm.map(job));
    await until(() => lineCount(status) >= warm.length, 'the warm-up batch', 300_000);

    return await rounds(processes, images, count, async (i) => {
      const files = copiesOf(frame, images, `frame-${i}`);
      const started = performance.now();
      await producer.enqueue(files.map(job));
      await until(
        () => lineCount(status) >= warm.length + (i + 1) * images,
        `${images} images through the fleet`,
        600_000,
      );
      return (performance.now() - started) / 1000;
    });
  } catch (error) {
    process.stderr.write(`worker log:\n${worker.log()}\nsink log:\n${sink.log()}\n`);
    throw error;
  } finally {
    await producer.close();
    await Promise.all([stop(worker), stop(sink)]);
    await obliterate(prefix);
  }
}

export interface PoolRow extends FleetRow {
  /** Median time of one image with nothing else in flight: the engine's own time per request. */
  readonly msOneAtATime: number;
}

/**
 * The same inference processes as a worker runs, fed straight from this process with no Redis,
 * queue or sink: what the fleet's throughput is compared with, in as many rounds. As in the
 * worker, two jobs per process are in flight. Then `single` images one at a time, for the
 * engine's own latency.
 */
export async function benchPool(
  frame: string,
  images: number,
  processes: number,
  backend: 'onnx' | 'wasm',
  count = 3,
  single = 20,
): Promise<PoolRow> {
  const pool = await EnginePool.start({
    processes,
    engine: { backend },
    logger: createLogger('bench', 'warn'),
    logLevel: 'warn',
  });
  const run = async (files: string[], inFlight: number) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next < files.length) {
          const i = next++;
          const { result } = await pool.run({ id: `frame-${i}`, file: files[i]! });
          if (result.status.status !== 'ok') throw new Error(`bench: ${files[i]} was not ok`);
        }
      }),
    );
  };
  try {
    await run(copiesOf(frame, 5 * processes, 'warm'), 2 * processes);
    const row = await rounds(processes, images, count, async (i) => {
      const files = copiesOf(frame, images, `frame-${i}`);
      const started = performance.now();
      await run(files, 2 * processes);
      return (performance.now() - started) / 1000;
    });
    const times: number[] = [];
    for (const file of copiesOf(frame, single, 'single')) {
      const t = performance.now();
      await run([file], 1);
      times.push(performance.now() - t);
    }
    return { ...row, msOneAtATime: round(median(times), 1) };
  } finally {
    await pool.close();
  }
}
