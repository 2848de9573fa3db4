import { hostname } from 'node:os';
import { UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import { EnginePool, type EngineConfigInput, type Logger } from '@facefleet/engine';
import {
  ERRORS,
  JobSchema,
  QUEUES,
  statusBase,
  type ImageResult,
  type Job,
} from '@facefleet/protocol';
import {
  connectionOptions,
  fleetConfig,
  redactUrl,
  type FleetConfig,
  type FleetConfigInput,
} from './config.js';
import { PublishedResultSchema, type JobReturn } from './messages.js';
import { resultsQueue, type ResultsQueue } from './queues.js';

export interface FaceWorkerOptions {
  readonly fleet?: FleetConfigInput;
  /** Inference processes on this machine; each loads the models once. */
  readonly processes: number;
  /** Recycle an inference process after this many images (0 = never). */
  readonly maxJobsPerProcess?: number;
  readonly engine?: EngineConfigInput;
  readonly logger: Logger;
  readonly logLevel?: string;
}

/**
 * A machine's worker: a BullMQ Worker whose event loop only moves jobs and renews their locks,
 * feeding N inference processes that keep the models resident. Each image's result is published
 * to the results queue under its job key, so a job run twice publishes once.
 */
export class FaceWorker {
  private constructor(
    private readonly worker: Worker<Job, JobReturn>,
    private readonly pool: EnginePool,
    private readonly results: ResultsQueue,
    private readonly logger: Logger,
  ) {}

  static async start(options: FaceWorkerOptions): Promise<FaceWorker> {
    const config = fleetConfig(options.fleet);
    const { logger } = options;
    const pool = await EnginePool.start({
      processes: options.processes,
      engine: options.engine ?? {},
      maxJobsPerProcess: options.maxJobsPerProcess ?? 0,
      logger,
      ...(options.logLevel ? { logLevel: options.logLevel } : {}),
    });
    const results = resultsQueue(config, 'worker');

    const worker = new Worker<Job, JobReturn>(
      QUEUES.jobs,
      (job) => processJob(job, pool, results),
      {
        connection: connectionOptions(config, 'worker'),
        prefix: config.prefix,
        // The process count rides in the name, so that `facefleet status` can add them up.
        name: `${hostname()}:${process.pid}:n=${pool.size}`,
        // Two jobs in hand per process: the next image is ready when a process frees up.
        concurrency: pool.size * 2,
        lockDuration: config.lockDurationMs,
        stalledInterval: config.stalledIntervalMs,
        maxStalledCount: config.maxStalledCount,
      },
    );
    const fleetWorker = new FaceWorker(worker, pool, results, logger);
    fleetWorker.watch(config);
    return fleetWorker;
  }

  private probing = false;

  /** While Redis is lost, asks it a cheap question each second; the first answer ends the outage. */
  private async probeRedis(redis: string, regained: () => void): Promise<void> {
    if (this.probing) return;
    this.probing = true;
    try {
      await this.results.getJobCounts('waiting');
      regained();
      this.logger.info({ redis }, 'redis reachable again');
    } catch {
      // Still down; the next tick asks again.
    } finally {
      this.probing = false;
    }
  }

  /** Stops taking jobs, finishes the ones in hand, then stops the inference processes. */
  async close(): Promise<void> {
    await this.worker.close();
    await this.pool.close();
    await this.results.close();
  }

  private watch(config: FleetConfig): void {
    const redis = redactUrl(config.redisUrl);
    let probe: NodeJS.Timeout | undefined;
    const onError = (error: Error) => {
      // Redis outages surface here while ioredis reconnects by itself: log the change, not each retry.
      if (probe) return;
      this.logger.warn({ err: error.message, redis }, 'redis unreachable; waiting for it');
      const regained = () => {
        clearInterval(probe);
        probe = undefined;
      };
      probe = setInterval(() => void this.probeRedis(redis, regained), 1_000);
    };
    this.worker.on('error', onError);
    this.results.on('error', onError);
    this.worker.on('stalled', (jobId) =>
      this.logger.warn({ jobId }, 'job stalled; it will run again'),
    );
    this.worker.on('failed', (job, error) => {
      this.logger.warn(
        { jobId: job?.id, id: job?.data.id, attempt: job?.attemptsMade, reason: error.message },
        'job failed',
      );
      // BullMQ fails a job that lost its worker too often without running it: its image still
      // gets a status, so that the output folder accounts for every image.
      const publishes = job?.data.options?.publish !== false;
      if (job?.id && publishes && /stalled more than allowable limit/.test(error.message)) {
        const status = crashedStatus(job.id, job.data, error.message);
        publish(this.results, job.id, job.data.group, { status, records: [] }).catch(
          (e: unknown) => {
            this.logger.error(
              { jobId: job.id, err: e },
              'cannot publish the status of a job that stalled out',
            );
          },
        );
      }
    });
    this.logger.info(
      { redis: redactUrl(config.redisUrl), prefix: config.prefix, processes: this.pool.size },
      'worker started',
    );
  }
}

async function processJob(
  job: BullJob<Job, JobReturn>,
  pool: EnginePool,
  results: ResultsQueue,
): Promise<JobReturn> {
  const key = job.id ?? '';
  const parsed = JobSchema.safeParse(job.data);
  if (!parsed.success) {
    const message = parsed.error.issues.map((i) => i.message).join('; ');
    await publish(results, key, undefined, {
      status: {
        ...statusBase(job.data, key),
        status: 'failed',
        faces: 0,
        error: { code: 'JOB_INVALID', message },
      },
      records: [],
    });
    throw coded(`JOB_INVALID: ${message}`);
  }

  const started = performance.now();
  const { result } = await pool.run(parsed.data, key);
  const ms = Math.round(performance.now() - started);
  const error = result.status.error;
  const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
  if (error && ERRORS[error.code as keyof typeof ERRORS]?.retryable && !lastAttempt) {
    // A transient fault: BullMQ retries with backoff; nothing is published until the outcome is final.
    throw new Error(`${error.code}: ${error.message}`);
  }

  const options = parsed.data.options ?? {};
  if (options.publish !== false) await publish(results, key, parsed.data.group, result);
  // The reason starts with the code: callers waiting on the job (the HTTP API) read it back.
  if (error) throw coded(`${error.code}: ${error.message}`);
  return {
    status: result.status,
    ms,
    ...(options.returnRecords ? { records: result.records } : {}),
  };
}

function crashedStatus(key: string, data: Partial<Job>, reason: string): ImageResult['status'] {
  const message = `the job lost its worker more than the allowed number of times (${reason})`;
  return {
    ...statusBase(data, key),
    status: 'failed',
    faces: 0,
    error: { code: 'WORKER_CRASHED', message },
  };
}

/** A final failure of the input, not of facefleet: its stack would only bury the reason in the dashboard. */
function coded(reason: string): UnrecoverableError {
  const error = new UnrecoverableError(reason);
  error.stack = reason;
  return error;
}

function publish(
  results: ResultsQueue,
  key: string,
  group: string | undefined,
  result: ImageResult,
) {
  // Validated here as well as in the sink: a malformed result is a bug, caught where it is made.
  const message = PublishedResultSchema.parse({ key, ...(group ? { group } : {}), result });
  return results.add(
    'result',
    message,
    // The job key as id: a retried or redelivered job cannot publish twice while the first waits.
    { jobId: key, removeOnComplete: { count: 1000 }, removeOnFail: false },
  );
}
