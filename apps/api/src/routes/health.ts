import type { FastifyInstance } from 'fastify';
import type { FleetClient } from '../fleet.js';

/** Liveness (the process answers) and readiness (Redis answers and a worker is connected). */
export function healthRoutes(app: FastifyInstance, fleet: FleetClient): void {
  app.get('/healthz', (_request, reply) => reply.send({ status: 'ok' }));

  app.get('/readyz', async (_request, reply) => {
    try {
      const workers = await fleet.workersAlive();
      return reply
        .code(workers > 0 ? 200 : 503)
        .send({ status: workers > 0 ? 'ready' : 'no workers', redis: 'ok', workers });
    } catch (error) {
      return reply.code(503).send({
        status: 'redis unreachable',
        redis: (error as Error).message.split('\n', 1)[0],
        workers: 0,
      });
    }
  });
}
