import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { BACKENDS, createLogger, DETECTORS, EnginePool, type PoolOutcome } from '@facefleet/engine';
import { imageFiles, OutputFolder } from '@facefleet/fleet';
import { idFromPath, jobKey, type ImageResult } from '@facefleet/protocol';
import { optionIssues, regexOption, UsageError } from '../usage.js';
import { plural, Progress } from '../progress.js';

export const EmbedOptionsSchema = z
  .object({
    out: z.string().min(1).optional(),
    group: regexOption,
    workers: z.coerce.number().int().min(1).max(256).default(availableParallelism()),
    minConfidence: z.coerce.number().min(0).max(1).default(0.5),
    aligned: z.boolean().default(false),
    backend: z.enum(BACKENDS).default('auto'),
    detector: z.enum(DETECTORS).default('ssd'),
    threads: z.coerce.number().int().min(1).max(64).default(1),
    maxPixels: z.coerce.number().int().positive().default(100_000_000),
    maxJobsPerProcess: z.coerce.number().int().min(0).default(0),
    retryFailed: z.boolean().default(false),
    logLevel: z
      .enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'])
      .default('info'),
  })
  .strict();
export type EmbedOptions = z.output<typeof EmbedOptionsSchema>;

interface Totals {
  images: number;
  faces: number;
  noFaces: number;
  failed: number;
}

/**
 * `facefleet embed`: every face in the given files and folders as JSON-NL, on stdout or into an
 * output folder, through N inference processes and one writer. Returns the exit code.
 */
export async function embed(paths: string[], rawOptions: Record<string, unknown>): Promise<number> {
  const parsed = EmbedOptionsSchema.safeParse(rawOptions);
  if (!parsed.success) throw new UsageError(optionIssues(parsed.error));
  const options = parsed.data;
  const logger = createLogger('facefleet', options.logLevel);

  const folder = options.out
    ? OutputFolder.open(options.out, options.group ? { groupPattern: options.group } : {})
    : undefined;
  const todo: string[] = [];
  let skipped = 0;
  for await (const file of imageFiles(paths)) {
    if (folder?.isDone(jobKey({ file }), options.retryFailed)) skipped += 1;
    else todo.push(file);
  }

  if (todo.length === 0) {
    folder?.close();
    const what =
      skipped > 0
        ? `all ${skipped} images are already in ${options.out}`
        : `no image files found in: ${paths.join(', ')}`;
    process.stderr.write(`facefleet embed: ${what}\n`);
    return skipped > 0 ? 0 : 1;
  }
  if (skipped > 0)
    logger.info(
      { skipped, remaining: todo.length },
      'resuming: images already in the output folder are skipped',
    );

  const pool = await EnginePool.start({
    processes: Math.min(options.workers, todo.length),
    engine: {
      backend: options.backend,
      detector: options.detector,
      threads: options.threads,
      minConfidence: options.minConfidence,
      maxPixels: options.maxPixels,
    },
    maxJobsPerProcess: options.maxJobsPerProcess,
    logger,
    logLevel: options.logLevel,
  });

  const processes = pool.size;
  const backend = pool.backend.name;
  const totals: Totals = { images: 0, faces: 0, noFaces: 0, failed: 0 };
  const progress = new Progress(todo.length);
  const started = performance.now();
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  // A reader that goes away (`| head`) ends the run quietly, not with an EPIPE stack trace. The
  // listener stays: the last write's error may arrive after the run.
  let outputClosed = false;
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    outputClosed = true;
  });

  const write = (outcome: PoolOutcome) => {
    const { result } = outcome;
    if (folder) folder.write(result);
    else writeStdout(result);
    count(totals, result);
    const { id, source, error, warnings } = result.status;
    if (error) logger.warn({ id, source, error }, 'image failed');
    else if (warnings) logger.warn({ id, source, warnings }, 'image processed with a warning');
    progress.tick(1, `${totals.faces} faces`);
  };

  try {
    await runAll(
      todo,
      pool,
      write,
      options.aligned,
      options.minConfidence,
      () => interrupted || outputClosed,
    );
  } finally {
    progress.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await pool.close();
    folder?.close();
  }

  const seconds = (performance.now() - started) / 1000;
  process.stderr.write(
    `facefleet embed: ${plural(totals.images, 'image')}, ${plural(totals.faces, 'face')}, ${totals.noFaces} without faces, ` +
      `${totals.failed} failed, ${(totals.images / seconds).toFixed(2)} images/s (${seconds.toFixed(1)} s, ` +
      `${plural(processes, 'process', 'processes')}, ${backend} backend${options.detector === 'tiny' ? ', tiny detector' : ''})` +
      (skipped > 0 ? `; ${skipped} skipped as already done` : '') +
      (interrupted ? `; interrupted: ${todo.length - totals.images} not processed` : '') +
      (outputClosed ? `; stdout was closed: ${todo.length - totals.images} not processed` : '') +
      '\n',
  );
  return interrupted ? 130 : 0;
}

/** Keeps every process busy, with a short queue in front of them, until all files are done. */
async function runAll(
  files: string[],
  pool: EnginePool,
  write: (outcome: PoolOutcome) => void,
  aligned: boolean,
  minConfidence: number,
  stop: () => boolean,
): Promise<void> {
  const window = pool.size * 2;
  let next = 0;
  const feed = async (): Promise<void> => {
    while (next < files.length && !stop()) {
      const file = files[next++] as string;
      const job = {
        id: idFromPath(file),
        file,
        options: { minConfidence, ...(aligned ? { aligned } : {}) },
      };
      write(await pool.run(job, jobKey({ file })));
    }
  };
  await Promise.all(Array.from({ length: window }, feed));
}

function writeStdout(result: ImageResult): void {
  if (result.records.length === 0) return;
  process.stdout.write(result.records.map((r) => `${JSON.stringify(r)}\n`).join(''));
}

function count(totals: Totals, result: ImageResult): void {
  totals.images += 1;
  totals.faces += result.records.length;
  if (result.status.status === 'no_faces') totals.noFaces += 1;
  if (result.status.status === 'failed') totals.failed += 1;
}
