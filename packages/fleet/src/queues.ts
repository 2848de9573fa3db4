import { Queue } from 'bullmq';
import { QUEUES, type Job } from '@facefleet/protocol';
import { connectionOptions, type FleetConfig, type RedisRole } from './config.js';
import type { JobReturn, PublishedResult } from './messages.js';

export type JobsQueue = Queue<Job, JobReturn>;
export type ResultsQueue = Queue<PublishedResult, void>;

/** The results queue, on its own connection held the way `role` says (see connectionOptions). */
export function resultsQueue(config: FleetConfig, role: RedisRole): ResultsQueue {
  return new Queue(QUEUES.results, {
    connection: connectionOptions(config, role),
    prefix: config.prefix,
  });
}

/** The Redis key of a job's hash, to ask whether a key is already queued, running or done. */
export function jobHashKey(config: FleetConfig, queue: string, id: string): string {
  return `${config.prefix}:${queue}:${id}`;
}
