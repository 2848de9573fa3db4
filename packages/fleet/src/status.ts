import { QUEUES } from '@facefleet/protocol';
import { fleetConfig, type FleetConfigInput } from './config.js';
import { jobsQueue, resultsQueue } from './queues.js';

export interface QueueStatus {
  readonly name: string;
  readonly counts: Record<string, number>;
  readonly workers: number;
  /** Jobs completed in the last full minute (BullMQ metrics, kept by workers). */
  readonly completedLastMinute: number;
}

/** Counts per queue and state, workers connected, throughput of the last minute. */
export async function fleetStatus(fleet: FleetConfigInput = {}): Promise<QueueStatus[]> {
  const config = fleetConfig(fleet);
  const queues = [jobsQueue(config, 'producer'), resultsQueue(config, 'producer')];
  try {
    return await Promise.all(
      queues.map(async (queue) => {
        const [counts, workers, metrics] = await Promise.all([
          queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'),
          queue.getWorkersCount(),
          queue.name === QUEUES.jobs ? queue.getMetrics('completed', 0, 0) : Promise.resolve(undefined),
        ]);
        return { name: queue.name, counts, workers, completedLastMinute: Number(metrics?.data[0] ?? 0) };
      }),
    );
  } finally {
    await Promise.all(queues.map((q) => q.close()));
  }
}
