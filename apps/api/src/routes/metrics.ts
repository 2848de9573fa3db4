import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { JobReturnSchema } from '@facefleet/fleet';
import type { FleetClient } from '../fleet.js';
import { parseFailedReason } from '../errors.js';

const STATES = ['waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed'] as const;

/**
 * Prometheus metrics. Queue sizes and workers are read from Redis at each scrape; completions,
 * failures, timings and faces come from the jobs queue's event stream, so every API process
 * counts the whole fleet's jobs since it started.
 */
export function metricsRoutes(app: FastifyInstance, fleet: FleetClient): Registry {
  const register = new Registry();
  collectDefaultMetrics({ register, prefix: 'facefleet_api_' });
  const queues = [fleet.producer.jobs, fleet.results];

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

  fleet.events.on('completed', ({ returnvalue }) => {
    const raw: unknown = returnvalue;
    const value = typeof raw === 'string' ? safeJson(raw) : raw;
    const parsed = JobReturnSchema.safeParse(value);
    if (!parsed.success) return;
    completed.inc({ status: parsed.data.status.status });
    seconds.observe(parsed.data.ms / 1000);
    faces.observe(parsed.data.status.faces);
  });
  fleet.events.on('failed', ({ failedReason }) =>
    failed.inc({ code: parseFailedReason(failedReason).code }),
  );

  app.get('/metrics', async (_request, reply) =>
    reply.type(register.contentType).send(await register.metrics()),
  );
  return register;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}
