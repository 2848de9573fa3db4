import { Redis } from 'ioredis';
import { connectionOptions, fleetConfig, type FleetConfigInput } from './config.js';
import { jobHashKey, jobsQueue, resultsQueue } from './queues.js';

export interface QueueStatus {
  readonly name: string;
  readonly counts: Record<string, number>;
  readonly workers: number;
  /** Jobs that finished (completed or failed) in the last 60 seconds. */
  readonly finishedLastMinute: number;
}

/** Counts per queue and state, workers connected, throughput of the last minute. */
export async function fleetStatus(fleet: FleetConfigInput = {}): Promise<QueueStatus[]> {
  const config = fleetConfig(fleet);
  const queues = [jobsQueue(config, 'producer'), resultsQueue(config, 'producer')];
  const { url, ...options } = connectionOptions(config, 'producer');
  const redis = new Redis(url, options);
  try {
    await Promise.all(queues.map((q) => q.waitUntilReady()));
    const since = Date.now() - 60_000;
    return await Promise.all(
      queues.map(async (queue) => {
        const [counts, workers, completed, failed] = await Promise.all([
          queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'),
          queue.getWorkersCount(),
          // BullMQ keeps finished jobs in sorted sets scored by finish time: a range count is exact.
          redis.zcount(jobHashKey(config, queue.name, 'completed'), since, '+inf'),
          redis.zcount(jobHashKey(config, queue.name, 'failed'), since, '+inf'),
        ]);
        return { name: queue.name, counts, workers, finishedLastMinute: completed + failed };
      }),
    );
  } finally {
    await Promise.all(queues.map((q) => q.close()));
    redis.disconnect();
  }
}


