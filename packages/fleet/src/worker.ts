import { Queue, UnrecoverableError, Worker, type Job as BullJob } from 'bullmq';
import { Redis } from 'ioredis';
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
import {
  autoscaleConfig,
  ScalePolicy,
  type AutoscaleConfig,
  type AutoscaleInput,
  type ScaleDecision,
  type ScaleSample,
} from './autoscale.js';
import { PublishedResultSchema, type JobReturn } from './messages.js';
import { resultsQueue, type ResultsQueue } from './queues.js';
import { isRedisDown } from './redis.js';
import {
  HEARTBEAT_EVERY_MS,
  HEARTBEAT_TTL_MS,
  heartbeatKey,
  workerId,
  type Heartbeat,
} from './status.js';

export interface FaceWorkerOptions {
  readonly fleet?: FleetConfigInput;
  /** Inference processes on this machine; each loads the models once. */
  readonly processes: number;
  /** Size the pool by the backlog between these bounds instead (starts at the minimum). */
  readonly autoscale?: AutoscaleInput;
  /** Recycle an inference process after this many images (0 = never). */
  readonly maxJobsPerProcess?: number;
  readonly engine?: EngineConfigInput;
  readonly logger: Logger;
  readonly logLevel?: string;
}

/** Jobs a BullMQ worker holds per inference process: the next image is ready when one frees up. */
const JOBS_PER_PROCESS = 2;

/**
 * A machine's worker: a BullMQ Worker whose event loop only moves jobs and renews their locks,
 * feeding N inference processes that keep the models resident. Each image's result is published
 * to the results queue under its job key, so a job run twice publishes once. With autoscaling,
 * N follows the backlog; either way the worker's heartbeat in Redis carries N.
 */
export class FaceWorker {
  private readonly id = workerId();
  private heartbeat: NodeJS.Timeout | undefined;
  private scaler: NodeJS.Timeout | undefined;
  /** A size change under way: the autoscaler waits for it before deciding again. */
  private scaling: Promise<void> | undefined;
  private sampling = false;
  private closing = false;
  private jobs: Queue | undefined;

  private constructor(
    private readonly worker: Worker<Job, JobReturn>,
    /** Takes the live queue's jobs (callers waiting), one per process at most, before bulk work. */
    private readonly live: Worker<Job, JobReturn>,
    private readonly pool: EnginePool,
    private readonly results: ResultsQueue,
    private readonly redis: Redis,
    private readonly config: FleetConfig,
    private readonly autoscale: AutoscaleConfig | undefined,
    private readonly logger: Logger,
  ) {}

  /** Inference processes now. */
  get processes(): number {
    return this.pool.size;
  }

  static async start(options: FaceWorkerOptions): Promise<FaceWorker> {
    const config = fleetConfig(options.fleet);
    const { logger } = options;
    const autoscale = options.autoscale ? autoscaleConfig(options.autoscale) : undefined;
    const pool = await EnginePool.start({
      processes: autoscale?.min ?? options.processes,
      engine: options.engine ?? {},
      maxJobsPerProcess: options.maxJobsPerProcess ?? 0,
      logger,
      ...(options.logLevel ? { logLevel: options.logLevel } : {}),
    });
    const results = resultsQueue(config, 'worker');
    // A connection of its own for the heartbeat and the autoscaler's look at the backlog; like
    // the BullMQ worker's, it waits for Redis rather than failing.
    const { url, ...redisOptions } = connectionOptions(config, 'worker');
    const redis = new Redis(url, redisOptions);
    redis.on('error', () => undefined);

    const settings = {
      connection: connectionOptions(config, 'worker'),
      prefix: config.prefix,
      // The starting process count rides in the name, for `facefleet status` when no
      // heartbeat has been written yet.
      name: `${workerId()}:n=${pool.size}`,
      lockDuration: config.lockDurationMs,
      stalledInterval: config.stalledIntervalMs,
      maxStalledCount: config.maxStalledCount,
    };
    const worker = new Worker<Job, JobReturn>(
      QUEUES.jobs,
      (job) => processJob(job, pool, results, false),
      { ...settings, concurrency: pool.size * JOBS_PER_PROCESS },
    );
    // A job taken from here goes before the bulk jobs waiting in the pool, so a caller waits at
    // most for the images in hand, not for a backlog.
    const live = new Worker<Job, JobReturn>(
      QUEUES.live,
      (job) => processJob(job, pool, results, true),
      { ...settings, concurrency: pool.size },
    );
    const fleetWorker = new FaceWorker(
      worker,
      live,
      pool,
      results,
      redis,
      config,
      autoscale,
      logger,
    );
    fleetWorker.watch(config);
    fleetWorker.beat();
    fleetWorker.heartbeat = setInterval(() => fleetWorker.beat(), HEARTBEAT_EVERY_MS);
    if (autoscale) fleetWorker.startAutoscaler(autoscale);
    return fleetWorker;
  }

  /** Writes this worker's heartbeat; a missed one (Redis away) is simply written at the next. */
  private beat(): void {
    const beat: Heartbeat = {
      processes: this.pool.size,
      busy: this.pool.busy,
      autoscale: this.autoscale ? { min: this.autoscale.min, max: this.autoscale.max } : null,
      at: Date.now(),
    };
    const key = heartbeatKey(this.config.prefix, this.id);
    this.redis.set(key, JSON.stringify(beat), 'PX', HEARTBEAT_TTL_MS).catch(() => undefined);
  }

  private startAutoscaler(autoscale: AutoscaleConfig): void {
    const policy = new ScalePolicy(autoscale);
    const jobs = new Queue(QUEUES.jobs, { connection: this.redis, prefix: this.config.prefix });
    jobs.on('error', () => undefined);
    this.jobs = jobs;
    this.logger.info(
      {
        min: autoscale.min,
        max: autoscale.max,
        upPerProcess: autoscale.upPerProcess,
        scaleUpAfterMs: autoscale.scaleUpAfterMs,
        scaleDownAfterMs: autoscale.scaleDownAfterMs,
      },
      'autoscaling inference processes',
    );
    this.scaler = setInterval(() => void this.scaleTick(policy, jobs), autoscale.intervalMs);
  }

  /** One look at the backlog and the load; at most one size change at a time. */
  private async scaleTick(policy: ScalePolicy, jobs: Queue): Promise<void> {
    if (this.sampling || this.scaling || this.closing) return;
    this.sampling = true;
    try {
      const counts = await jobs.getJobCounts('waiting', 'prioritized');
      if (this.scaling || this.closing) return;
      const backlog = (counts.waiting ?? 0) + (counts.prioritized ?? 0);
      const sample = {
        at: performance.now(),
        backlog,
        size: this.pool.size,
        busy: this.pool.busy,
      };
      const decision = policy.decide(sample);
      if (!decision) return;

      this.scaling = this.resize(decision, sample).finally(() => {
        policy.reset();
        this.scaling = undefined;
        this.beat();
      });
    } catch (error) {
      this.logger.debug({ err: error }, 'autoscaler could not read the backlog');
    } finally {
      this.sampling = false;
    }
  }

  /** Grows or shrinks the pool to `to` processes and sets the BullMQ concurrency to match. */
  private async resize(decision: ScaleDecision, sample: ScaleSample): Promise<void> {
    const { from, to, why, heldMs, reason } = decision;
    const started = performance.now();
    const numbers = {
      autoscale: why,
      from,
      to,
      backlog: sample.backlog,
      busy: sample.busy,
      heldMs,
      reason,
    };
    this.logger.info(
      numbers,
      `autoscale: ${to > from ? 'adding' : 'retiring'} inference processes (${from} → ${to})`,
    );
    try {
      if (to > from) {
        // Processes first, then the jobs to feed them: a job taken early would only wait.
        await this.pool.grow(to - from);
        this.followPool();
      } else {
        // Take fewer jobs first; the processes that leave finish the job they hold.
        this.worker.concurrency = Math.max(1, to * JOBS_PER_PROCESS);
        this.live.concurrency = Math.max(1, to);
        await this.pool.shrink(from - to);
        this.followPool();
      }
    } catch (error) {
      this.logger.error({ err: error, ...numbers }, 'autoscale: the change failed');
      this.followPool();
    }
    const size = this.pool.size;
    this.logger.info(
      {
        autoscaled: why,
        from,
        processes: size,
        concurrency: this.worker.concurrency,
        ms: Math.round(performance.now() - started),
      },
      `autoscale: ${size} inference ${size === 1 ? 'process' : 'processes'} now`,
    );
  }

  /** Sets both BullMQ workers' concurrency to what the pool's processes can take. */
  private followPool(): void {
    this.worker.concurrency = Math.max(1, this.pool.size * JOBS_PER_PROCESS);
    this.live.concurrency = Math.max(1, this.pool.size);
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
    this.closing = true;
    clearInterval(this.scaler);
    clearInterval(this.heartbeat);
    await Promise.all([this.worker.close(), this.live.close()]);
    await this.scaling;
    await this.pool.close();
    await this.results.close();
    await this.jobs?.close();
    // Gone from the fleet's count at once; with Redis away, the heartbeat simply expires.
    const forget = this.redis.del(heartbeatKey(this.config.prefix, this.id));
    await Promise.race([
      forget,
      new Promise((resolve) => setTimeout(resolve, 1_000).unref()),
    ]).catch(() => undefined);
    this.redis.disconnect();
  }

  private watch(config: FleetConfig): void {
    const redis = redactUrl(config.redisUrl);
    let probe: NodeJS.Timeout | undefined;
    const onError = (error: Error) => {
      if (!isRedisDown(error)) {
        // Not an outage (a lock that could not be renewed, say): say what it was.
        this.logger.warn({ err: error.message }, 'worker error');
        return;
      }
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
    this.live.on('error', onError);
    this.results.on('error', onError);
    for (const worker of [this.worker, this.live])
      worker.on('stalled', (jobId) =>
        this.logger.warn({ jobId }, 'job stalled; it will run again'),
      );
    this.live.on('failed', (job, error) =>
      this.logger.warn(
        { jobId: job?.id, id: job?.data.id, reason: error.message },
        'live job failed',
      ),
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
  urgent: boolean,
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
  const { result } = await pool.run(parsed.data, key, urgent);
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
