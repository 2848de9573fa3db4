import { QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import {
  connectionOptions,
  connectRedis,
  FaceProducer,
  fleetConfig,
  resultsQueue,
  type FleetConfig,
  type ResultsQueue,
} from '@facefleet/fleet';
import { QUEUES } from '@facefleet/protocol';

/** The fleet as the API sees it: a producer, the results queue, and the events of both job queues. */
export class FleetClient {
  private workers = { count: 0, at: 0 };

  private constructor(
    readonly config: FleetConfig,
    readonly producer: FaceProducer,
    readonly results: ResultsQueue,
    /** Events of the bulk jobs queue. */
    readonly events: QueueEvents,
    /** Events of the live queue, where `/faceembed` waits for its own job. */
    readonly liveEvents: QueueEvents,
    /** For what BullMQ does not ask itself: heartbeats and finish-time ranges, for /metrics. */
    readonly redis: Redis,
  ) {}

  /** Connects, or throws RedisUnavailableError: the API does not start without Redis. */
  static async connect(config: FleetConfig = fleetConfig()): Promise<FleetClient> {
    const producer = await FaceProducer.connect(config, 'service');
    const results = resultsQueue(config, 'service');
    const [events, liveEvents] = [QUEUES.jobs, QUEUES.live].map(
      (name) =>
        new QueueEvents(name, {
          connection: connectionOptions(config, 'worker'),
          prefix: config.prefix,
        }),
    ) as [QueueEvents, QueueEvents];
    results.on('error', () => undefined);
    events.on('error', () => undefined);
    liveEvents.on('error', () => undefined);
    await Promise.all([
      results.waitUntilReady(),
      events.waitUntilReady(),
      liveEvents.waitUntilReady(),
    ]);
    const redis = await connectRedis(config, 'service');
    return new FleetClient(config, producer, results, events, liveEvents, redis);
  }

  /** Workers connected to the jobs queue, asked at most once a second. */
  async workersAlive(): Promise<number> {
    if (Date.now() - this.workers.at > 1_000) {
      this.workers = { count: await this.producer.jobs.getWorkersCount(), at: Date.now() };
    }
    return this.workers.count;
  }

  async close(): Promise<void> {
    await Promise.all([
      this.events.close(),
      this.liveEvents.close(),
      this.results.close(),
      this.producer.close(),
    ]);
    this.redis.disconnect();
  }
}
