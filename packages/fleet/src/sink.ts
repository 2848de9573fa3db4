import { hostname } from 'node:os';
import { Queue, Worker } from 'bullmq';
import type { Logger } from '@facefleet/engine';
import { QUEUES } from '@facefleet/protocol';
import {
  connectionOptions,
  fleetConfig,
  redactUrl,
  type FleetConfig,
  type FleetConfigInput,
} from './config.js';
import { PublishedResultSchema, type PublishedResult } from './messages.js';
import { OutputFolder } from './output-folder.js';
import { connectRedis } from './redis.js';

export interface FaceSinkOptions {
  readonly fleet?: FleetConfigInput;
  /** The output folder: `<group>.json` files and `_status.jsonl`. */
  readonly out: string;
  readonly groupPattern?: RegExp;
  readonly logger: Logger;
}

/**
 * The single writer of an output folder: takes results off the results queue, one at a time, and
 * appends them. A result delivered again (the sink died before acknowledging it) is recognised
 * by its key and not written twice.
 */
export class FaceSink {
  private constructor(
    private readonly worker: Worker<PublishedResult, void>,
    readonly folder: OutputFolder,
    /** Results written, and results skipped as already written (redelivered). */
    readonly counts: { readonly written: number; readonly duplicates: number },
  ) {}

  static async start(options: FaceSinkOptions): Promise<FaceSink> {
    const config = fleetConfig(options.fleet);
    await refuseSecondSink(config);
    const folder = OutputFolder.open(
      options.out,
      options.groupPattern ? { groupPattern: options.groupPattern } : {},
    );
    const counts = { written: 0, duplicates: 0 };

    // Writing is synchronous: one result at a time, in the order they are taken.
    const worker = new Worker<PublishedResult, void>(
      QUEUES.results,
      (job) => {
        const message = PublishedResultSchema.parse(job.data);
        const result = {
          ...message.result,
          status: { ...message.result.status, key: message.key },
        };
        if (folder.write(result, message.group)) counts.written += 1;
        else counts.duplicates += 1;
        return Promise.resolve();
      },
      {
        connection: connectionOptions(config, 'worker'),
        prefix: config.prefix,
        name: `sink:${hostname()}:${process.pid}`,
        concurrency: 1,
        lockDuration: config.lockDurationMs,
        stalledInterval: config.stalledIntervalMs,
        removeOnComplete: { count: 1000 },
      },
    );
    const sink = new FaceSink(worker, folder, counts);
    worker.on('error', (error) => options.logger.warn({ err: error.message }, 'sink: redis error'));
    worker.on('failed', (job, error) =>
      options.logger.error({ jobId: job?.id, err: error.message }, 'sink: result not written'),
    );
    options.logger.info(
      {
        out: options.out,
        done: folder.size,
        redis: redactUrl(config.redisUrl),
        prefix: config.prefix,
      },
      'sink started',
    );
    return sink;
  }

  async close(): Promise<void> {
    await this.worker.close();
    this.folder.close();
  }
}

/**
 * One sink per fleet: a second one, even writing another folder, would take half the results
 * and leave both folders incomplete. A sink killed with SIGKILL drops its Redis connection with
 * its process, so a restart is not refused.
 */
async function refuseSecondSink(config: FleetConfig): Promise<void> {
  const redis = await connectRedis(config, 'cli');
  const results = new Queue(QUEUES.results, { connection: redis, prefix: config.prefix });
  try {
    const others = (await results.getWorkers()).map(
      (w) => String(w.rawname ?? '').split(':w:')[1] ?? '?',
    );
    if (others.length > 0) {
      throw new Error(
        `another sink (${others.join(', ')}) already takes the results of fleet "${config.prefix}"; one sink per fleet: stop it, or use another FACEFLEET_PREFIX`,
      );
    }
  } finally {
    await results.close();
    redis.disconnect();
  }
}
