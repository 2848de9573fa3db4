import type { FastifyInstance } from 'fastify';
import { JobReturnSchema } from '@facefleet/fleet';
import type { Job } from '@facefleet/protocol';
import type { ApiConfig } from '../config.js';
import { ApiError, parseFailedReason, sendError } from '../errors.js';
import type { FleetClient } from '../fleet.js';
import { validJob } from './faceembed.js';

/** The asynchronous API for bulk callers: enqueue now, read the outcome later by key. */
export function jobRoutes(app: FastifyInstance, config: ApiConfig, fleet: FleetClient): void {
  app.post('/v1/jobs', async (request, reply) => {
    const bodies = Array.isArray(request.body) ? request.body : [request.body];
    if (bodies.length === 0 || bodies.length > config.maxBatch) {
      return sendError(
        reply,
        'JOB_INVALID',
        `send 1 to ${config.maxBatch} jobs, not ${bodies.length}`,
      );
    }

    // All or nothing: one bad job refuses the request, so that callers never half-enqueue.
    const jobs: Job[] = [];
    const refused: Array<{ index: number; code: string; error: string }> = [];
    for (const [index, body] of bodies.entries()) {
      try {
        const job = await validJob(body, config);
        jobs.push({ ...job, options: { ...job.options, returnRecords: true } });
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        refused.push({ index, code: error.code, error: error.message });
      }
    }
    if (refused.length > 0) {
      return reply.code(400).send({
        error: `${refused.length} of ${bodies.length} jobs refused; none enqueued`,
        code: 'JOB_INVALID',
        refused,
      });
    }

    const result = await fleet.producer.enqueue(jobs);
    return reply
      .code(202)
      .send({ keys: result.keys, added: result.added, existing: result.existing });
  });

  app.get<{ Params: { key: string } }>('/v1/jobs/:key', async (request, reply) => {
    // Interactive (`/faceembed`) jobs live in their own queue; their keys say so.
    const { key } = request.params;
    const queue = key.startsWith('live_') ? fleet.producer.liveJobs : fleet.producer.jobs;
    // The state first, then the job: read the other way round, a job that ends in between is
    // seen 'failed' or 'completed' with the fields of before (no reason, no return value).
    const state = await queue.getJobState(key);
    const job = state === 'unknown' ? undefined : await queue.getJob(key);
    if (!job) return sendError(reply, 'NOT_FOUND', `no job with key ${request.params.key}`);

    const base = { key: job.id, id: job.data.id, state, attempts: job.attemptsMade };
    if (state === 'completed') {
      const { status, records } = JobReturnSchema.parse(job.returnvalue);
      return reply.send({ ...base, status, ...(records ? { records } : {}) });
    }
    if (state === 'failed') {
      const error = parseFailedReason(job.failedReason);
      return reply.send({
        ...base,
        status: { id: job.data.id, key: job.id, status: 'failed', faces: 0, error },
        error,
      });
    }
    return reply.send(base);
  });
}
