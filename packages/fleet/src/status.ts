import { Queue } from 'bullmq';
import { QUEUES } from '@facefleet/protocol';
import { fleetConfig, type FleetConfigInput } from './config.js';
import { jobHashKey } from './queues.js';
import { connectRedis } from './redis.js';

export interface QueueStatus {
  readonly name: string;
  readonly counts: Record<string, number>;
  /** BullMQ workers connected: one per `facefleet worker`, `up` or `sink` process. */
  readonly workers: number;
  /** Inference processes behind those workers (jobs queue only). */
  readonly inferenceProcesses: number;
  /** Jobs that finished (completed or failed) in the last 60 seconds. */
  readonly finishedLastMinute: number;
}

/** Counts per queue and state, workers connected, throughput of the last minute. */
export async function fleetStatus(fleet: FleetConfigInput = {}): Promise<QueueStatus[]> {
  const config = fleetConfig(fleet);
  const redis = await connectRedis(config, 'cli');
  const queues = [QUEUES.jobs, QUEUES.results].map(
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
        return {
          name: queue.name,
          counts,
          workers: workers.length,
          inferenceProcesses: workers.reduce(
            (sum, w) => sum + Number(/:n=(\d+)$/.exec(String(w.rawname ?? ''))?.[1] ?? 0),
            0,
          ),
          finishedLastMinute: completed + failed,
        };
      }),
    );
  } finally {
    await Promise.all(queues.map((q) => q.close()));
    redis.disconnect();
  }
}
