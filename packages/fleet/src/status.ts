import { hostname } from 'node:os';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { QUEUES } from '@facefleet/protocol';
import { fleetConfig, type FleetConfigInput } from './config.js';
import { jobHashKey } from './queues.js';
import { connectRedis } from './redis.js';

/**
 * What a worker says about itself in Redis, renewed every few seconds and at each change of size,
 * under a key that expires when the worker stops renewing it.
 */
export const HeartbeatSchema = z.object({
  /** Inference processes now (they change under --autoscale). */
  processes: z.number().int().min(0),
  /** Of those, how many held a job at the last beat. */
  busy: z.number().int().min(0),
  /** The autoscaler's bounds, or null for a fixed size. */
  autoscale: z.object({ min: z.number().int(), max: z.number().int() }).nullable(),
  /** When this was written (ms since the epoch). */
  at: z.number(),
});
export type Heartbeat = z.infer<typeof HeartbeatSchema>;

/** A heartbeat outlives three missed beats, then Redis drops it. */
export const HEARTBEAT_EVERY_MS = 5_000;
export const HEARTBEAT_TTL_MS = 3 * HEARTBEAT_EVERY_MS + 1_000;

/** This process as the fleet knows it: host and pid, also the start of its BullMQ worker name. */
export function workerId(): string {
  return `${hostname()}:${process.pid}`;
}

export function heartbeatKey(prefix: string, id: string): string {
  return `${prefix}:heartbeat:${id}`;
}

/** One worker connected to the jobs queue. */
export interface WorkerStatus {
  /** Host and pid. */
  readonly id: string;
  readonly processes: number;
  /** Processes holding a job at the last heartbeat (unknown without one). */
  readonly busy: number | null;
  readonly autoscale: { readonly min: number; readonly max: number } | null;
}

/**
 * The workers connected to the jobs queue with their inference processes. Being connected is
 * what counts as alive (a worker that dies drops its connection); the current size comes from
 * the heartbeat, else from the size the worker started with, which its connection name carries.
 */
export async function jobWorkers(
  queue: Queue,
  redis: Redis,
  prefix: string,
): Promise<WorkerStatus[]> {
  const started = (await queue.getWorkers()).flatMap((w) => {
    const match = /:w:(.+):n=(\d+)$/.exec(String(w.rawname ?? ''));
    return match ? [{ id: match[1]!, processes: Number(match[2]) }] : [];
  });
  if (started.length === 0) return [];

  const beats = await redis.mget(started.map((w) => heartbeatKey(prefix, w.id)));
  return started.map((w, i) => {
    const beat = parseBeat(beats[i]);
    return {
      id: w.id,
      processes: beat?.processes ?? w.processes,
      busy: beat?.busy ?? null,
      autoscale: beat?.autoscale ?? null,
    };
  });
}

function parseBeat(text: string | null | undefined): Heartbeat | undefined {
  if (!text) return undefined;
  try {
    return HeartbeatSchema.parse(JSON.parse(text));
  } catch {
    return undefined;
  }
}

export interface QueueStatus {
  readonly name: string;
  readonly counts: Record<string, number>;
  /**
   * BullMQ workers connected: on the jobs and live queues one per `facefleet worker` or `up`, on
   * the results queue the sink.
   */
  readonly workers: number;
  /** Inference processes behind those workers (jobs queue only). */
  readonly inferenceProcesses: number;
  /** Jobs that finished (completed or failed) in the last 60 seconds. */
  readonly finishedLastMinute: number;
  /** Each worker of the jobs queue with its processes and autoscale bounds (jobs queue only). */
  readonly jobWorkers?: WorkerStatus[];
}

/** Counts per queue and state, workers connected, throughput of the last minute. */
export async function fleetStatus(fleet: FleetConfigInput = {}): Promise<QueueStatus[]> {
  const config = fleetConfig(fleet);
  const redis = await connectRedis(config, 'cli');
  // The live queue last: `--json` readers that took the jobs queue first still find it there.
  const queues = [QUEUES.jobs, QUEUES.results, QUEUES.live].map(
    (name) => new Queue(name, { connection: redis, prefix: config.prefix }),
  );
  try {
    const since = Date.now() - 60_000;
    return await Promise.all(
      queues.map(async (queue) => {
        const [counts, workers, completed, failed] = await Promise.all([
          queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'),
          queue.getWorkers(),
          // BullMQ keeps finished jobs in sorted sets scored by finish time: a range count is exact.
          redis.zcount(jobHashKey(config, queue.name, 'completed'), since, '+inf'),
          redis.zcount(jobHashKey(config, queue.name, 'failed'), since, '+inf'),
        ]);
        const base = {
          name: queue.name,
          counts,
          workers: workers.length,
          inferenceProcesses: 0,
          finishedLastMinute: completed + failed,
        };
        if (queue.name !== QUEUES.jobs) return base;
        const members = await jobWorkers(queue, redis, config.prefix);
        return {
          ...base,
          inferenceProcesses: members.reduce((sum, w) => sum + w.processes, 0),
          jobWorkers: members,
        };
      }),
    );
  } finally {
    await Promise.all(queues.map((q) => q.close()));
    redis.disconnect();
  }
}
