import type { FastifyInstance } from 'fastify';
import { JobReturnSchema } from '@facefleet/fleet';
import { JobSchema, type Job } from '@facefleet/protocol';
import type { ApiConfig } from '../config.js';
import { ApiError, parseFailedReason, sendError } from '../errors.js';
import type { FleetClient } from '../fleet.js';
import { allowedFile } from '../files.js';

/**
 * The seed server's contract, unchanged: `{"id", "url" | "file" | "data"}` in, one JSON line per
 * face out (`{"id", "bbox", "embed"}`), an empty 200 when there are none. The job runs on the
 * fleet in front of all bulk work, and this request waits for it.
 */
export function faceembedRoutes(
  app: FastifyInstance,
  config: ApiConfig,
  fleet: FleetClient,
  onExit: () => void,
): void {
  let waiting = 0;

  app.post('/faceembed', async (request, reply) => {
    const job = await validJob(request.body, config);
    if (waiting >= config.maxWaiting)
      return sendError(reply, 'QUEUE_FULL', `${waiting} requests are already waiting here`);
    if ((await fleet.workersAlive()) === 0)
      return sendError(reply, 'NO_WORKERS', 'no worker is connected to the queue');

    waiting += 1;
    try {
      const submitted = await fleet.producer.submitInteractive(job);
      const finished = JobReturnSchema.parse(
        await submitted.waitUntilFinished(fleet.liveEvents, config.waitTimeoutMs),
      );
      const lines = (finished.records ?? []).map(
        (r) => `${JSON.stringify({ id: r.id, bbox: r.bbox, embed: r.embed })}\n`,
      );
      return reply.code(200).type('application/x-ndjson').send(lines.join(''));
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      if (/timed out before finishing/i.test(reason)) {
        return sendError(reply, 'RESULT_TIMEOUT', `no result within ${config.waitTimeoutMs} ms`);
      }
      const { code, message } = parseFailedReason(reason);
      return sendError(reply, code, message);
    } finally {
      waiting -= 1;
    }
  });

  app.post('/exitserver', async (request, reply) => {
    if (!config.allowExit)
      return sendError(
        reply,
        'NOT_FOUND',
        'POST /exitserver is off (set FACEFLEET_ALLOW_EXIT=1 to allow it)',
      );

    request.log.warn('exit requested over HTTP: draining and stopping');
    void reply.code(200).send({ status: 'exiting' });
    setImmediate(onExit);
    return reply;
  });
}

/** A job from an HTTP body: the shared schema, and `file` only under the configured roots. */
export async function validJob(body: unknown, config: ApiConfig): Promise<Job> {
  const parsed = JobSchema.safeParse(body);
  if (!parsed.success) {
    throw new ApiError(
      'JOB_INVALID',
      parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
    );
  }
  const job = parsed.data;
  return job.file === undefined
    ? job
    : { ...job, file: await allowedFile(job.file, config.fileRoots) };
}
