import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { jobHashKey, jobWorkers, JobReturnSchema } from '@facefleet/fleet';
import type { FleetClient } from '../fleet.js';
import { parseFailedReason } from '../errors.js';

const STATES = ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'] as const;

/**
 * Prometheus metrics. Queue sizes and workers are read from Redis at each scrape; completions,
 * failures, timings and faces come from the job queues' event streams, so every API process
 * counts the whole fleet's jobs since it started.
 */
export function metricsRoutes(app: FastifyInstance, fleet: FleetClient): Registry {
  const register = new Registry();
  collectDefaultMetrics({ register, prefix: 'facefleet_api_' });
  const queues = [fleet.producer.jobs, fleet.producer.liveJobs, fleet.results];

  new Gauge({
    name: 'facefleet_queue_jobs',
    help: 'Jobs per queue and state.',
    labelNames: ['queue', 'state'],
    registers: [register],
    async collect() {
      for (const queue of queues) {
        const counts = await queue.getJobCounts(...STATES);
        for (const state of STATES) this.set({ queue: queue.name, state }, counts[state] ?? 0);
      }
    },
  });
  new Gauge({
    name: 'facefleet_workers',
    help: 'Worker processes connected to the jobs queue.',
    registers: [register],
    async collect() {
      this.set(await fleet.producer.jobs.getWorkersCount());
    },
  });
  scalingGauges(register, fleet);
  const completed = new Counter({
    name: 'facefleet_jobs_completed_total',
    help: 'Images processed.',
    labelNames: ['status'],
    registers: [register],
  });
  const failed = new Counter({
    name: 'facefleet_jobs_failed_total',
    help: 'Images failed, by error code.',
    labelNames: ['code'],
    registers: [register],
  });
  const seconds = new Histogram({
    name: 'facefleet_job_duration_seconds',
    help: 'Time an inference process spent on one image, reading and decoding included.',
    buckets: [0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5, 10, 30],
    registers: [register],
  });
  const faces = new Histogram({
    name: 'facefleet_faces_per_image',
    help: 'Faces found per processed image.',
    buckets: [0, 1, 2, 3, 5, 10, 20, 50, 100],
    registers: [register],
  });

  for (const events of [fleet.events, fleet.liveEvents]) {
    events.on('completed', ({ returnvalue }) => {
      const raw: unknown = returnvalue;
      const value = typeof raw === 'string' ? safeJson(raw) : raw;
      const parsed = JobReturnSchema.safeParse(value);
      if (!parsed.success) return;
      completed.inc({ status: parsed.data.status.status });
      seconds.observe(parsed.data.ms / 1000);
      faces.observe(parsed.data.status.faces);
    });
    events.on('failed', ({ failedReason }) =>
      failed.inc({ code: parseFailedReason(failedReason).code }),
    );
  }

  app.get('/metrics', async (_request, reply) =>
    reply.type(register.contentType).send(await register.metrics()),
  );
  return register;
}

/** The fleet's numbers that scaling rules need, read from Redis at most once per scrape. */
interface ScalingSnapshot {
  readonly backlog: number;
  readonly active: number;
  readonly processes: number;
  readonly busy: number;
  readonly finishedLastMinute: number;
}

/**
 * Gauges for an outside autoscaler (KEDA, a Kubernetes HPA on external metrics, a script): how
 * much waits, how much runs, how many inference processes serve it and how fast jobs finish.
 * A scrape reads them all from one snapshot, so they agree with each other.
 */
function scalingGauges(register: Registry, fleet: FleetClient): void {
  const jobs = fleet.producer.jobs;
  let cached: { at: number; value: Promise<ScalingSnapshot> } | undefined;
  const snapshot = (): Promise<ScalingSnapshot> => {
    if (!cached || Date.now() - cached.at > 500) {
      const value = read();
      cached = { at: Date.now(), value };
      value.catch(() => (cached = undefined));
    }
    return cached.value;
  };
  const read = async (): Promise<ScalingSnapshot> => {
    const since = Date.now() - 60_000;
    const key = (state: string) => jobHashKey(fleet.config, jobs.name, state);
    const [counts, workers, completed, failed] = await Promise.all([
      jobs.getJobCounts('waiting', 'prioritized', 'delayed', 'active'),
      jobWorkers(jobs, fleet.redis, fleet.config.prefix),
      // Finished jobs sit in sorted sets scored by finish time: the last minute is a range count.
      fleet.redis.zcount(key('completed'), since, '+inf'),
      fleet.redis.zcount(key('failed'), since, '+inf'),
    ]);
    return {
      backlog: (counts.waiting ?? 0) + (counts.prioritized ?? 0) + (counts.delayed ?? 0),
      active: counts.active ?? 0,
      processes: workers.reduce((sum, w) => sum + w.processes, 0),
      busy: workers.reduce((sum, w) => sum + (w.busy ?? 0), 0),
      finishedLastMinute: completed + failed,
    };
  };
  const gauge = (name: string, help: string, value: (s: ScalingSnapshot) => number) =>
    new Gauge({
      name,
      help,
      registers: [register],
      async collect() {
        this.set(value(await snapshot()));
      },
    });

  gauge(
    'facefleet_backlog_jobs',
    'Jobs waiting for a worker (waiting + prioritized + delayed in the jobs queue).',
    (s) => s.backlog,
  );
  gauge('facefleet_active_jobs', 'Jobs being processed now.', (s) => s.active);
  gauge(
    'facefleet_inference_processes',
    'Inference processes across the fleet (every connected worker, at its current size).',
    (s) => s.processes,
  );
  gauge(
    'facefleet_inference_processes_busy',
    "Inference processes holding a job, from the workers' heartbeats (up to 5 s old).",
    (s) => s.busy,
  );
  gauge(
    'facefleet_backlog_per_process',
    'facefleet_backlog_jobs divided by facefleet_inference_processes (the backlog itself when there are none).',
    (s) => s.backlog / Math.max(1, s.processes),
  );
  gauge(
    'facefleet_jobs_finished_per_second',
    'Jobs completed or failed per second, averaged over the last minute.',
    (s) => s.finishedLastMinute / 60,
  );
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
