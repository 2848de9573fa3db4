import { randomBytes } from 'node:crypto';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { createLogger, EnginePool } from '@facefleet/engine';
import { FaceProducer } from '@facefleet/fleet';
import {
  childrenOf,
  copiesOf,
  CpuMeter,
  facefleet,
  lineCounter,
  localRedisPid,
  obliterate,
  stop,
  until,
} from './processes.js';
import { median, round } from './stats.js';

export interface FleetRow {
  readonly processes: number;
  /** Images per timed round. */
  readonly images: number;
  readonly rounds: number;
  /** The median round's seconds and rate. */
  readonly seconds: number;
  readonly imagesPerSecond: number;
  /**
   * CPU milliseconds per image over the timed rounds, by part: the inference processes, and the
   * fleet's worker process, sink and Redis, or the process that feeds the pool directly.
   */
  readonly cpuMsPerImage: Record<string, number>;
}

export interface PoolRow extends FleetRow {
  /** Median time of one image with nothing else in flight: the engine's own time per request. */
  readonly msOneAtATime: number;
}

/** One way of running the rounds: warmed up on start, timed per round, stopped on close. */
interface Side {
  /** Seconds for round `i` of `images` copies of the frame. */
  round(i: number): Promise<number>;
  /** CPU milliseconds per image of each part, over the rounds so far. */
  cpu(): Record<string, number>;
  close(): Promise<void>;
}

/**
 * The whole fleet through Redis: `facefleet worker --concurrency N` and `facefleet sink`, fed by
 * the typed producer. A warm-up batch first (models loaded, kernels compiled, buffers grown: five
 * images per process); a round is timed from its enqueue to the sink's last status line.
 */
async function fleetSide(
  frame: string,
  images: number,
  processes: number,
  backend: 'onnx' | 'wasm',
): Promise<Side> {
  const prefix = `bench-${randomBytes(4).toString('hex')}`;
  const env = { FACEFLEET_PREFIX: prefix };
  const out = mkdtempSync(join(tmpdir(), 'facefleet-bench-out-'));
  const status = join(out, '_status.jsonl');
  const lines = lineCounter(status);
  const worker = facefleet(
    ['worker', '--concurrency', String(processes), '--backend', backend],
    env,
  );
  const sink = facefleet(['sink', '--out', out], env);
  const producer = await FaceProducer.connect({ prefix });
  const job = (file: string) => ({ id: basename(file, '.jpg'), file });
  let done = 0;
  const close = async () => {
    await producer.close();
    await Promise.all([stop(worker), stop(sink)]);
    await obliterate(prefix);
  };
  const through = async (files: string[], what: string, timeoutMs: number) => {
    try {
      await producer.enqueue(files.map(job));
      // A look four times a second costs the machine nothing; the round's end is read off the
      // status file's modification time, which its last line set (to the kernel's clock tick, a
      // few milliseconds).
      await until(() => lines() >= done + files.length, what, timeoutMs, 250);
      done += files.length;
      return statSync(status).mtimeMs;
    } catch (error) {
      process.stderr.write(`worker log:\n${worker.log()}\nsink log:\n${sink.log()}\n`);
      throw error;
    }
  };
  let redis: number | undefined;
  try {
    await through(copiesOf(frame, 5 * processes, 'warm'), 'the warm-up batch', 300_000);
    redis = await localRedisPid();
  } catch (error) {
    await close();
    throw error;
  }
  const pid = (child: { pid?: number | undefined }) => (child.pid ? [child.pid] : []);
  const meter = new CpuMeter(() => ({
    inference: childrenOf(worker.pid ?? 0),
    worker: pid(worker),
    sink: pid(sink),
    ...(redis ? { redis: [redis] } : {}),
  }));
  return {
    async round(i) {
      const files = copiesOf(frame, images, `frame-${i}`);
      const started = Date.now();
      const ended = await meter.measure(images, () =>
        through(files, `${images} images through the fleet`, 600_000),
      );
      return (ended - started) / 1000;
    },
    cpu: () => meter.perImage(),
    close,
  };
}

/**
 * The same inference processes as a worker runs, fed straight from this process with no Redis,
 * queue or sink. As in the worker, two jobs per process are in flight.
 */
async function poolSide(
  frame: string,
  images: number,
  processes: number,
  backend: 'onnx' | 'wasm',
): Promise<Side & { oneAtATime(count: number): Promise<number> }> {
  const pool = await EnginePool.start({
    processes,
    engine: { backend },
    logger: createLogger('bench', 'warn'),
    logLevel: 'warn',
  });
  const pids = new Set<number>();
  const run = async (files: string[], inFlight: number) => {
    let next = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next < files.length) {
          const i = next++;
          const { result, pid } = await pool.run({ id: `frame-${i}`, file: files[i]! });
          if (result.status.status !== 'ok') throw new Error(`bench: ${files[i]} was not ok`);
          pids.add(pid);
        }
      }),
    );
  };
  const meter = new CpuMeter(() => ({ inference: [...pids], feeder: [process.pid] }));
  try {
    await run(copiesOf(frame, 5 * processes, 'warm'), 2 * processes);
  } catch (error) {
    await pool.close();
    throw error;
  }
  return {
    async round(i) {
      const files = copiesOf(frame, images, `frame-${i}`);
      const started = performance.now();
      await meter.measure(images, () => run(files, 2 * processes));
      return (performance.now() - started) / 1000;
    },
    cpu: () => meter.perImage(),
    /** Median milliseconds of `count` images sent one at a time. */
    async oneAtATime(count) {
      const times: number[] = [];
      for (const file of copiesOf(frame, count, 'single')) {
        const t = performance.now();
        await run([file], 1);
        times.push(performance.now() - t);
      }
      return median(times);
    },
    close: () => pool.close(),
  };
}

const rowOf = (processes: number, images: number, seconds: number[], side: Side): FleetRow => {
  const mid = median(seconds);
  return {
    processes,
    images,
    rounds: seconds.length,
    seconds: round(mid, 1),
    imagesPerSecond: round(images / mid),
    cpuMsPerImage: side.cpu(),
  };
};

/**
 * The fleet through Redis against the same number of inference processes fed directly, in
 * alternating rounds: both are started and warmed up, then round i runs the fleet and then the
 * direct feed, round i + 1 the other way round, so that a drift in the machine's load reaches both
 * alike. The overhead of Redis, BullMQ and the sink is the median over rounds of the fleet's time
 * against the direct feed's in the same round. A round must be long enough that the first job's
 * wait and the last status line's are a small part of it.
 */
export async function benchFleet(
  frame: string,
  images: number,
  processes: number,
  backend: 'onnx' | 'wasm',
  count = 5,
): Promise<{ fleet: FleetRow; direct: PoolRow; overheadPercent: number }> {
  const direct = await poolSide(frame, images, processes, backend);
  let fleet: Side | undefined;
  try {
    fleet = await fleetSide(frame, images, processes, backend);
    const seconds = { fleet: [] as number[], direct: [] as number[] };
    for (let i = 0; i < count; i += 1) {
      if (i % 2 === 0) {
        seconds.fleet.push(await fleet.round(i));
        seconds.direct.push(await direct.round(i));
      } else {
        seconds.direct.push(await direct.round(i));
        seconds.fleet.push(await fleet.round(i));
      }
    }
    const ratios = seconds.fleet.map((s, i) => s / seconds.direct[i]! - 1);
    return {
      fleet: rowOf(processes, images, seconds.fleet, fleet),
      direct: {
        ...rowOf(processes, images, seconds.direct, direct),
        msOneAtATime: round(await direct.oneAtATime(20), 1),
      },
      overheadPercent: round(median(ratios) * 100, 1),
    };
  } finally {
    await fleet?.close();
    await direct.close();
  }
}

/** The engine's own time per request: one inference process fed one frame at a time. */
export async function engineMsOneAtATime(frame: string, count = 20): Promise<number> {
  const direct = await poolSide(frame, 0, 1, 'onnx');
  try {
    return round(await direct.oneAtATime(count), 1);
  } finally {
    await direct.close();
  }
}
