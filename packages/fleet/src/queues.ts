import { Queue } from 'bullmq';
import { QUEUES } from '@facefleet/protocol';
import { connectionOptions, type FleetConfig } from './config.js';
import type { PublishedResult, JobReturn } from './messages.js';
import type { Job } from '@facefleet/protocol';

export type JobsQueue = Queue<Job, JobReturn>;
export type ResultsQueue = Queue<PublishedResult, void>;

export function jobsQueue(config: FleetConfig, role: 'worker' | 'producer'): JobsQueue {
  return new Queue(QUEUES.jobs, { connection: connectionOptions(config, role), prefix: config.prefix });
}

export function resultsQueue(config: FleetConfig, role: 'worker' | 'producer'): ResultsQueue {
  return new Queue(QUEUES.results, { connection: connectionOptions(config, role), prefix: config.prefix });
}

/** The Redis key of a job's hash, to ask whether a key is already queued, running or done. */
export function jobHashKey(config: FleetConfig, queue: string, id: string): string {
  return `${config.prefix}:${queue}:${id}`;
}
