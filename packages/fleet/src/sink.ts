import { randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as delay } from 'node:timers/promises';
import { Job, Queue, Worker, type JobJson } from 'bullmq';
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
 * Between looks at the results queue the sink naps, so that the results published meanwhile come
 * in one burst: one Redis round trip each, as the previous one is acknowledged. A Redis round
 * trip costs the sink about half a millisecond of CPU when it is not one of a burst (measured on
 * a two-core machine), and a sink woken for every result spent 3 to 5 ms a result
 * (BENCHMARKS.md). The nap doubles after a look that found nothing and halves after a burst of
 * BURST results or more, so it settles where a look finds about one result, whatever the rate; a
 * result waits at most NAP_MS.max before it is taken.
 */
const NAP_MS = { min: 25, max: 200 } as const;
const BURST = 2;

/** Looks that find the queue empty, in a row, before the sink waits in Redis for a result. */
const IDLE_LOOKS = 3;

/** After Redis refused a command, the sink tries again this much later. */
const RETRY_MS = 1_000;

/**
 * The single writer of an output folder: takes results off the results queue in bursts, one at a
 * time, and appends them. A result delivered again (the sink died before acknowledging it) is
 * recognised by its key and not written twice.
 */
export class FaceSink {
  private closing = false;
  private readonly wake = new AbortController();
  private consuming: Promise<void> = Promise.resolve();
  /** The loop waits inside BullMQ for a result to come: only closing the worker ends that wait. */
  private blocked = false;

  private constructor(
    private readonly worker: Worker<PublishedResult, void>,
    readonly folder: OutputFolder,
    /** Results written, and results skipped as already written (redelivered). */
    readonly counts: { written: number; duplicates: number },
    private readonly logger: Logger,
  ) {}

  static async start(options: FaceSinkOptions): Promise<FaceSink> {
    const config = fleetConfig(options.fleet);
    await refuseSecondSink(config);
    const folder = OutputFolder.open(
      options.out,
      options.groupPattern ? { groupPattern: options.groupPattern } : {},
    );

    // No processor: the sink fetches results itself (BullMQ's manual processing), so that it
    // can take them in bursts; BullMQ still holds each one's lock and returns stalled ones.
    const worker = new Worker<PublishedResult, void>(QUEUES.results, null, {
      connection: connectionOptions(config, 'worker'),
      prefix: config.prefix,
      name: `sink:${hostname()}:${process.pid}`,
      autorun: false,
      lockDuration: config.lockDurationMs,
      stalledInterval: config.stalledIntervalMs,
    });
    const sink = new FaceSink(worker, folder, { written: 0, duplicates: 0 }, options.logger);
    worker.on('error', (error) => options.logger.warn({ err: error.message }, 'sink: redis error'));
    // Results left active by a sink that died go back to the queue, as with a running worker.
    void worker.startStalledCheckTimer();
    sink.consuming = sink.consume(`sink-${randomUUID()}`);
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

  /** Writes what it has taken, acknowledges it, and stops. */
  async close(): Promise<void> {
    this.closing = true;
    this.wake.abort();
    // A loop waiting in Redis for a result holds none: closing the worker at once ends the wait.
    if (this.blocked) await this.worker.close(true);
    await this.consuming;
    await this.worker.close();
    this.folder.close();
  }

  private async consume(token: string): Promise<void> {
    let nap: number = NAP_MS.min;
    let empty = 0;
    while (!this.closing) {
      try {
        const block = empty >= IDLE_LOOKS;
        this.blocked = block;
        let job: Job<PublishedResult, void> | undefined = await this.worker.getNextJob(token, {
          block,
        });
        this.blocked = false;
        let taken = 0;
        while (job) {
          job = await this.take(job, token);
          taken += 1;
        }
        if (taken === 0) {
          empty += 1;
          // A wait that ended with nothing (a timeout): wait again.
          if (block) continue;
          nap = Math.min(NAP_MS.max, nap * 2);
        } else {
          empty = 0;
          if (taken >= BURST) nap = Math.max(NAP_MS.min, nap / 2);
        }
        await delay(nap, undefined, { signal: this.wake.signal }).catch(() => undefined);
      } catch (error) {
        this.blocked = false;
        if (this.closing) break;
        this.logger.warn({ err: (error as Error).message }, 'sink: redis error; trying again');
        await delay(RETRY_MS, undefined, { signal: this.wake.signal }).catch(() => undefined);
      }
    }
  }

  /** Writes one result, acknowledges it, and answers the next result waiting, if any. */
  private async take(
    job: Job<PublishedResult, void>,
    token: string,
  ): Promise<Job<PublishedResult, void> | undefined> {
    const fetchNext = !this.closing;
    try {
      this.write(job.data);
    } catch (error) {
      // A result that cannot be written (malformed, the disk refused it) fails; the rest go on.
      this.logger.error(
        { jobId: job.id, err: (error as Error).message },
        'sink: result not written',
      );
      return this.jobOf(await job.moveToFailed(error as Error, token, fetchNext));
    }
    // If this fails (Redis lost), the result stays active and comes back later: a duplicate,
    // recognised by its key.
    return this.jobOf(await job.moveToCompleted(undefined, token, fetchNext));
  }

  /** The next job that BullMQ handed back with an acknowledgement, if any. */
  private jobOf(next: void | unknown[]): Job<PublishedResult, void> | undefined {
    const [data, id] = (next ?? []) as [JobJson?, string?];
    return data ? Job.fromJSON<PublishedResult, void>(this.worker, data, id) : undefined;
  }

  private write(data: PublishedResult): void {
    const message = PublishedResultSchema.parse(data);
    const result = { ...message.result, status: { ...message.result.status, key: message.key } };
    if (this.folder.write(result, message.group)) this.counts.written += 1;
    else this.counts.duplicates += 1;
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
