import { availableParallelism } from 'node:os';
import ms from 'ms';
import { z } from 'zod';
import { BACKENDS, createLogger, DETECTORS, type Logger } from '@facefleet/engine';
import {
  FaceProducer,
  FaceSink,
  FaceWorker,
  fleetStatus,
  imageFiles,
  isRedisDown,
  jobFor,
  RedisUnavailableError,
  listSources,
  redactUrl,
} from '@facefleet/fleet';
import { QUEUES } from '@facefleet/protocol';
import { exited, spawnApi } from '../api-process.js';
import { ensureRedis } from '../redis-server.js';
import { plural, Progress } from '../progress.js';
import { optionIssues, regexOption, UsageError } from '../usage.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

function parse<S extends z.ZodType>(schema: S, raw: unknown): z.output<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new UsageError(optionIssues(parsed.error));
  return parsed.data;
}

/** Runs until SIGINT or SIGTERM, then closes what runs, in order. */
function untilSignal(logger: Logger, close: () => Promise<void>): Promise<number> {
  return new Promise((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      logger.info({ signal }, 'stopping: finishing the jobs in hand');
      close().then(
        () => resolve(0),
        (error: unknown) => {
          logger.error({ err: error }, 'did not stop cleanly');
          resolve(1);
        },
      );
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

const EnqueueSchema = z
  .object({
    list: z.string().optional(),
    group: regexOption,
    priority: z.coerce.number().int().min(1).max(2_097_152).optional(),
    batch: z.coerce.number().int().min(1).max(10_000).default(500),
  })
  .strict();

/** `facefleet enqueue`: streams paths (walked folders, files, a list) into the jobs queue in bulk. */
export async function enqueue(paths: string[], raw: Record<string, unknown>): Promise<number> {
  const options = parse(EnqueueSchema, raw);
  if (paths.length === 0 && !options.list)
    throw new UsageError('give files, folders or --list FILE');

  const entries = async function* () {
    if (paths.length > 0) yield* imageFiles(paths);
    if (options.list) yield* listSources(options.list);
  };
  // A second, cheaper walk counts the files meanwhile, so that the progress bar can show an ETA.
  const progress = new Progress(undefined, 'jobs');
  if (!options.list && process.stderr.isTTY)
    void countAll(imageFiles(paths)).then(
      (n) => progress.setTotal(n),
      () => undefined,
    );

  const producer = await FaceProducer.connect();
  const started = performance.now();
  const totals = { added: 0, existing: 0, refused: 0 };
  let batch: unknown[] = [];
  const flush = async () => {
    const result = await producer.enqueue(
      batch,
      options.priority ? { priority: options.priority } : {},
    );
    for (const r of result.refused)
      process.stderr.write(
        `facefleet enqueue: refused ${JSON.stringify(batch[r.index])}: ${r.reason}\n`,
      );
    totals.added += result.added;
    totals.existing += result.existing;
    totals.refused += result.refused.length;
    progress.tick(batch.length, `${totals.added} new`);
    batch = [];
  };

  try {
    for await (const entry of entries()) {
      batch.push(jobFor(entry, options.group));
      if (batch.length >= options.batch) await flush();
    }
    if (batch.length > 0) await flush();
  } catch (error) {
    progress.stop();
    await producer.close();
    if (isRedisDown(error)) {
      throw new RedisUnavailableError(
        `lost Redis at ${redactUrl(producer.config.redisUrl)} while enqueueing (${(error as Error).message}); run the same command again to resume`,
      );
    }
    throw error;
  }
  progress.stop();
  await producer.close();

  const seconds = (performance.now() - started) / 1000;
  const total = totals.added + totals.existing + totals.refused;
  process.stderr.write(
    `facefleet enqueue: ${plural(totals.added, 'job')} added, ${totals.existing} already queued or done, ` +
      `${totals.refused} refused; ${(total / seconds).toFixed(0)} jobs/s (${seconds.toFixed(1)} s)\n`,
  );
  return 0;
}

async function countAll(files: AsyncIterable<string>): Promise<number> {
  let n = 0;
  for await (const _ of files) n += 1;
  return n;
}

/** A duration flag: `30s`, `2m`, `1500ms`, or a bare number of milliseconds. */
const durationOption = z.string().transform((text, ctx) => {
  const value = /^\d+$/.test(text) ? Number(text) : ms(text as ms.StringValue);
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    ctx.addIssue({ code: 'custom', message: `not a duration (say 30s, 2m or 1500ms): ${text}` });
    return z.NEVER;
  }
  return Math.round(value);
});

/** `MIN..MAX` inference processes, e.g. `1..8`. */
const rangeOption = z
  .string()
  .optional()
  .transform((text, ctx) => {
    if (text === undefined) return undefined;
    const match = /^(\d+)\.\.(\d+)$/.exec(text.trim());
    const [min, max] = [Number(match?.[1]), Number(match?.[2])];
    if (!match || min < 1 || max > 256 || min > max) {
      ctx.addIssue({
        code: 'custom',
        message: `give MIN..MAX with 1 <= MIN <= MAX <= 256, not ${text}`,
      });
      return z.NEVER;
    }
    return { min, max };
  });

const WorkerSchema = z
  .object({
    concurrency: z.coerce.number().int().min(1).max(256).default(availableParallelism()),
    autoscale: rangeOption,
    scaleUpAfter: durationOption.default(2_000),
    scaleDownAfter: durationOption.default(60_000),
    backlogPerProcess: z.coerce.number().min(0.1).max(10_000).default(2),
    maxJobsPerProcess: z.coerce.number().int().min(0).default(0),
    backend: z.enum(BACKENDS).default('auto'),
    detector: z.enum(DETECTORS).default('ssd'),
    threads: z.coerce.number().int().min(1).max(64).default(1),
    minConfidence: z.coerce.number().min(0).max(1).default(0.5),
    lockMs: z.coerce.number().int().min(100).optional(),
    urlTimeoutMs: z.coerce.number().int().min(1).default(30_000),
    logLevel: z.enum(LOG_LEVELS).default('info'),
  })
  .strict();

function startWorker(options: z.output<typeof WorkerSchema>, logger: Logger): Promise<FaceWorker> {
  return FaceWorker.start({
    processes: options.concurrency,
    ...(options.autoscale
      ? {
          autoscale: {
            ...options.autoscale,
            upPerProcess: options.backlogPerProcess,
            scaleUpAfterMs: options.scaleUpAfter,
            scaleDownAfterMs: options.scaleDownAfter,
          },
        }
      : {}),
    maxJobsPerProcess: options.maxJobsPerProcess,
    engine: {
      backend: options.backend,
      detector: options.detector,
      threads: options.threads,
      minConfidence: options.minConfidence,
      urlTimeoutMs: options.urlTimeoutMs,
    },
    fleet: options.lockMs
      ? { lockDurationMs: options.lockMs, stalledIntervalMs: options.lockMs }
      : {},
    logger,
    logLevel: options.logLevel,
  });
}

/**
 * `facefleet worker`: N inference processes on this machine, fed from the jobs queue; with
 * `--autoscale MIN..MAX`, N follows the backlog between those bounds.
 */
export async function worker(raw: Record<string, unknown>): Promise<number> {
  const options = parse(WorkerSchema, raw);
  const logger = createLogger('facefleet-worker', options.logLevel);
  const running = await startWorker(options, logger);
  return untilSignal(logger, () => running.close());
}

const SinkSchema = z
  .object({
    out: z.string().min(1),
    group: regexOption,
    logLevel: z.enum(LOG_LEVELS).default('info'),
  })
  .strict();

/** `facefleet sink`: the single writer of an output folder, fed from the results queue. */
export async function sink(raw: Record<string, unknown>): Promise<number> {
  const options = parse(SinkSchema, raw);
  const logger = createLogger('facefleet-sink', options.logLevel);
  const running = await FaceSink.start({
    out: options.out,
    logger,
    ...(options.group ? { groupPattern: options.group } : {}),
  });
  return untilSignal(logger, async () => {
    await running.close();
    logger.info(
      { ...running.counts },
      'sink stopped: results written, and redelivered ones skipped',
    );
  });
}

const UpSchema = WorkerSchema.omit({ concurrency: true })
  .extend({
    workers: z.coerce.number().int().min(1).max(256).default(availableParallelism()),
    out: z.string().min(1).default('facefleet-out'),
    group: regexOption,
    port: z.coerce.number().int().min(0).max(65535).default(8088),
    host: z.string().min(1).default('127.0.0.1'),
    api: z.boolean().default(true),
  })
  .strict();

/** `facefleet up`: one machine's whole fleet: Redis if none answers, workers and the sink. */
export async function up(raw: Record<string, unknown>): Promise<number> {
  const { workers, out, group, port, host, api, ...rest } = parse(UpSchema, raw);
  const logger = createLogger('facefleet', rest.logLevel);
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const redis = await ensureRedis(redisUrl, logger);

  const sinkRunning = await FaceSink.start({
    out,
    logger,
    ...(group ? { groupPattern: group } : {}),
  });
  const workerRunning = await startWorker({ ...rest, concurrency: workers }, logger);
  const apiProcess = api ? spawnApi({ port, host, logLevel: rest.logLevel }) : undefined;
  logger.info(
    { out, workers, redis: redactUrl(redisUrl), api: api ? `http://${host}:${port}` : 'off' },
    'fleet up: enqueue with "npx facefleet enqueue <paths>"',
  );
  return untilSignal(logger, async () => {
    apiProcess?.kill('SIGTERM');
    if (apiProcess) await exited(apiProcess);
    await workerRunning.close();
    await sinkRunning.close();
    redis?.kill('SIGTERM');
  });
}

const ServeSchema = z
  .object({
    port: z.coerce.number().int().min(0).max(65535).default(8088),
    host: z.string().min(1).default('127.0.0.1'),
    logLevel: z.enum(LOG_LEVELS).default('info'),
  })
  .strict();

/** `facefleet serve`: the HTTP API (/faceembed, /v1/jobs, the dashboard, health, metrics). */
export async function serve(raw: Record<string, unknown>): Promise<number> {
  const options = parse(ServeSchema, raw);
  const child = spawnApi(options);
  // The API drains its requests on SIGTERM; pass ours on and wait for it.
  const forward = (signal: NodeJS.Signals) => child.kill(signal);
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  const code = await exited(child);
  process.off('SIGINT', forward);
  process.off('SIGTERM', forward);
  return code;
}

/** `facefleet status`: counts per queue and state, workers, last minute's throughput. */
export async function status(raw: { json?: boolean }): Promise<number> {
  const queues = await fleetStatus();
  if (raw.json) {
    process.stdout.write(`${JSON.stringify(queues)}\n`);
    return 0;
  }
  for (const q of queues) {
    const counts = Object.entries(q.counts)
      .map(([state, n]) => `${state} ${n}`)
      .join(', ');
    const scaled = (q.jobWorkers ?? []).flatMap((w) =>
      w.autoscale ? [`${w.id} autoscaling ${w.autoscale.min}..${w.autoscale.max}`] : [],
    );
    const processes =
      q.name === QUEUES.jobs
        ? ` (${[plural(q.inferenceProcesses, 'inference process', 'inference processes'), ...scaled].join('; ')})`
        : '';
    process.stdout.write(
      `${q.name}: ${counts}; ${plural(q.workers, q.name === QUEUES.results ? 'sink' : 'worker')}${processes}; ${q.finishedLastMinute} finished in the last minute\n`,
    );
  }
  return 0;
}
