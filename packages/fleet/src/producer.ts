import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { Queue, type Job as BullJob } from 'bullmq';
import type { Redis } from 'ioredis';
import { jobKey, JobSchema, QUEUES, sourceOf, type Job } from '@facefleet/protocol';
import { fleetConfig, type FleetConfig, type FleetConfigInput, type RedisRole } from './config.js';
import type { JobReturn } from './messages.js';
import { jobHashKey, type JobsQueue } from './queues.js';
import { connectRedis } from './redis.js';

export interface EnqueueOptions {
  /**
   * BullMQ priority, 1 (highest) to 2,097,152. Without one, jobs wait in plain FIFO order, which
   * is the cheapest to add; interactive calls go in front of them all (see `submitInteractive`).
   */
  readonly priority?: number;
}

export interface EnqueueResult {
  /** The key of every accepted job, in input order (refused ones are left out). */
  readonly keys: string[];
  /** Jobs new to the queue. */
  readonly added: number;
  /** Jobs whose key was already waiting, running or done: not added again. */
  readonly existing: number;
  /** Jobs that failed validation, with the reason; nothing of them reached Redis. */
  readonly refused: Array<{ index: number; reason: string }>;
}

/**
 * The typed client for programs that enqueue. Every job is validated here, before Redis; its key
 * comes from its source, so the same image enqueued twice is one job.
 */
export class FaceProducer {
  private readonly queue: JobsQueue;
  private readonly live: JobsQueue;

  private constructor(
    readonly config: FleetConfig,
    private readonly redis: Redis,
  ) {
    // One connection, shared with BullMQ, that also answers the "already queued?" question.
    this.queue = new Queue(QUEUES.jobs, { connection: redis, prefix: config.prefix });
    this.live = new Queue(QUEUES.live, { connection: redis, prefix: config.prefix });
    this.queue.on('error', () => undefined);
    this.live.on('error', () => undefined);
  }

  /**
   * Connects, or throws RedisUnavailableError at once. A command-line producer (`cli`, the
   * default) gives up when Redis goes away; a long-lived one (`service`) reconnects.
   */
  static async connect(
    config: FleetConfigInput | FleetConfig = {},
    role: Exclude<RedisRole, 'worker'> = 'cli',
  ): Promise<FaceProducer> {
    const parsed = fleetConfig(config);
    return new FaceProducer(parsed, await connectRedis(parsed, role));
  }

  /** Adds one batch (hundreds of jobs per round trip is the sweet spot) and says what happened. */
  async enqueue(inputs: readonly unknown[], options: EnqueueOptions = {}): Promise<EnqueueResult> {
    const refused: EnqueueResult['refused'] = [];
    const accepted: Array<{ key: string; job: Job }> = [];
    inputs.forEach((input, index) => {
      const parsed = JobSchema.safeParse(input);
      if (!parsed.success) {
        refused.push({
          index,
          reason: parsed.error.issues
            .map((i) => `${i.path.join('.') || 'job'}: ${i.message}`)
            .join('; '),
        });
        return;
      }
      const job =
        parsed.data.file !== undefined
          ? { ...parsed.data, file: resolve(parsed.data.file) }
          : parsed.data;
      accepted.push({ key: jobKey(sourceOf(job)), job });
    });

    const fresh = await this.notYetQueued(accepted);
    if (fresh.length > 0) {
      await this.queue.addBulk(
        fresh.map(({ key, job }) => ({
          name: 'image',
          data: job,
          opts: {
            jobId: key,
            ...(options.priority ? { priority: options.priority } : {}),
            attempts: this.config.attempts,
            backoff: { type: 'exponential', delay: this.config.backoffMs },
            removeOnComplete: !this.config.keepCompleted,
            removeOnFail: false,
          },
        })),
      );
    }
    return {
      keys: accepted.map((a) => a.key),
      added: fresh.length,
      existing: accepted.length - fresh.length,
      refused,
    };
  }

  /** Keys already in Redis, asked in one round trip. BullMQ would ignore them anyway; this counts them. */
  private async notYetQueued(
    jobs: Array<{ key: string; job: Job }>,
  ): Promise<Array<{ key: string; job: Job }>> {
    if (jobs.length === 0) return [];

    const pipeline = this.redis.pipeline();
    const unique = new Map(jobs.map((j) => [j.key, j]));
    for (const key of unique.keys()) pipeline.exists(jobHashKey(this.config, QUEUES.jobs, key));
    const answers = (await pipeline.exec()) ?? [];
    const failure = answers.find(([error]) => error);
    if (failure?.[0]) throw failure[0];
    return [...unique.values()].filter((_, i) => answers[i]?.[1] === 0);
  }

  /**
   * Adds one job for a caller who waits for it (the seed-compatible `/faceembed`): a fresh key, so
   * the same image is processed again as the seed server did; in the live queue, which workers
   * take before any bulk work, first come first served; one attempt (the caller decides whether
   * to retry); records returned in the job, not published to the output files. Kept an hour
   * after it finishes.
   */
  async submitInteractive(job: Job): Promise<BullJob<Job, JobReturn>> {
    const interactive = {
      ...job,
      options: { ...job.options, returnRecords: true, publish: false },
    };
    return this.live.add('interactive', JobSchema.parse(interactive), {
      jobId: `live_${randomUUID()}`,
      attempts: 1,
      removeOnComplete: { age: 3600 },
      removeOnFail: { age: 24 * 3600 },
    });
  }

  /** The jobs queue, for callers that read job states (the HTTP API). */
  get jobs(): JobsQueue {
    return this.queue;
  }

  /** The live queue of interactive jobs. */
  get liveJobs(): JobsQueue {
    return this.live;
  }

  async close(): Promise<void> {
    await Promise.all([this.queue.close(), this.live.close()]);
    this.redis.disconnect();
  }
}
