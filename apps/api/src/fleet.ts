import { QueueEvents } from 'bullmq';
import { connectionOptions, FaceProducer, fleetConfig, resultsQueue, type FleetConfig, type ResultsQueue } from '@facefleet/fleet';
import { QUEUES } from '@facefleet/protocol';

/** The fleet as the API sees it: a producer, the results queue, and the jobs queue's events. */
export class FleetClient {
  readonly config: FleetConfig;
  readonly producer: FaceProducer;
  readonly results: ResultsQueue;
  readonly events: QueueEvents;
  private workers = { count: 0, at: 0 };

  constructor(config: FleetConfig = fleetConfig()) {
    this.config = config;
    this.producer = new FaceProducer(config);
    this.results = resultsQueue(config, 'producer');
    this.events = new QueueEvents(QUEUES.jobs, { connection: connectionOptions(config, 'worker'), prefix: config.prefix });
  }

  async ready(): Promise<void> {
    await Promise.all([this.producer.jobs.waitUntilReady(), this.results.waitUntilReady(), this.events.waitUntilReady()]);
  }

  /** Workers connected to the jobs queue, asked at most once a second. */
  async workersAlive(): Promise<number> {
    if (Date.now() - this.workers.at > 1_000) {
      this.workers = { count: await this.producer.jobs.getWorkersCount(), at: Date.now() };
    }
    return this.workers.count;
  }

  async close(): Promise<void> {
    await Promise.all([this.events.close(), this.results.close(), this.producer.close()]);
  }
}
