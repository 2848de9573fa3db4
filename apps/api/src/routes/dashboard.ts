import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { FastifyAdapter } from '@bull-board/fastify';
import type { FastifyInstance } from 'fastify';
import type { FleetClient } from '../fleet.js';

export const DASHBOARD_PATH = '/admin/queues';

/** Bull Board over both queues: jobs with their states, failed jobs with reasons, retry. */
export async function dashboardRoutes(app: FastifyInstance, fleet: FleetClient): Promise<void> {
  const serverAdapter = new FastifyAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: [
      new BullMQAdapter(fleet.producer.jobs),
      new BullMQAdapter(fleet.producer.liveJobs),
      new BullMQAdapter(fleet.results, { readOnlyMode: false }),
    ],
    serverAdapter,
    options: { uiConfig: { boardTitle: 'facefleet' } },
  });
  await app.register(serverAdapter.registerPlugin(), { prefix: DASHBOARD_PATH });
}
