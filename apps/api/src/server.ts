import { randomUUID, timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from '@facefleet/engine';
import { isRedisDown } from '@facefleet/fleet';
import type { ApiConfig } from './config.js';
import { ApiError, sendError } from './errors.js';
import type { FleetClient } from './fleet.js';
import { dashboardRoutes } from './routes/dashboard.js';
import { faceembedRoutes } from './routes/faceembed.js';
import { healthRoutes } from './routes/health.js';
import { jobRoutes } from './routes/jobs.js';
import { metricsRoutes } from './routes/metrics.js';

const OPEN_PATHS = new Set(['/healthz', '/readyz']);

/** Jobs are flat objects; a deeply nested body is an attack on the parser, not a job. */
const MAX_JSON_DEPTH = 8;

/** The deepest nesting of arrays and objects in JSON text, strings skipped: one pass, no parse. */
function nesting(text: string): number {
  let depth = 0;
  let deepest = 0;
  let inString = false;
  for (let i = 0; i < text.length; i += 1) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 92)
        i += 1; // a backslash escapes the next character
      else if (c === 34) inString = false;
    } else if (c === 34) inString = true;
    else if (c === 123 || c === 91) deepest = Math.max(deepest, ++depth);
    else if (c === 125 || c === 93) depth -= 1;
  }
  return deepest;
}

export interface ApiServerOptions {
  readonly config: ApiConfig;
  readonly fleet: FleetClient;
  readonly logger: Logger;
  /** Called when POST /exitserver asks the process to stop. */
  readonly onExit?: () => void;
}

/** The HTTP API: /faceembed, /exitserver, /v1/jobs, /admin/queues, /healthz, /readyz, /metrics. */
export async function buildServer(options: ApiServerOptions): Promise<FastifyInstance> {
  const { config, fleet } = options;
  const app = Fastify({
    // tsc needs the cast (pino's Logger and FastifyBaseLogger differ in generics); the linter does not.
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion
    loggerInstance: options.logger as FastifyBaseLogger,
    bodyLimit: config.maxBodyBytes,
    requestIdHeader: 'x-request-id',
    genReqId: () => randomUUID(),
  });

  // The seed's callers post JSON with whatever content type curl picks (-d sends form encoding).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => {
    const text = String(body);
    if (nesting(text) > MAX_JSON_DEPTH) {
      return done(
        new ApiError('REQUEST_MALFORMED', `the body nests deeper than ${MAX_JSON_DEPTH} levels`),
        undefined,
      );
    }
    try {
      done(null, JSON.parse(text));
    } catch {
      done(new ApiError('REQUEST_MALFORMED', 'the body is not valid JSON'), undefined);
    }
  });

  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', request.id);
    if (!config.token || OPEN_PATHS.has(request.url.split('?')[0] ?? '')) return;
    if (!bearerMatches(request.headers.authorization, config.token)) {
      return sendError(reply, 'UNAUTHORIZED', 'send Authorization: Bearer <FACEFLEET_TOKEN>');
    }
  });

  app.setErrorHandler((error, request, reply) => {
    if (error instanceof ApiError) return sendError(reply, error.code, error.message);
    const fastifyError = error as { code?: string; statusCode?: number; message: string };
    if (fastifyError.code === 'FST_ERR_CTP_BODY_TOO_LARGE')
      return sendError(
        reply,
        'REQUEST_TOO_LARGE',
        `bodies are limited to ${config.maxBodyBytes} bytes`,
      );
    if (fastifyError.statusCode !== undefined && fastifyError.statusCode < 500)
      return sendError(reply, 'REQUEST_MALFORMED', fastifyError.message);
    if (isRedisDown(error))
      return sendError(reply, 'REDIS_UNAVAILABLE', 'the queue (Redis) does not answer right now');

    request.log.error({ err: error }, 'request failed');
    return sendError(reply, 'INTERNAL', 'the server could not handle this request');
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, 'NOT_FOUND', `no endpoint ${request.method} ${request.url}`),
  );

  healthRoutes(app, fleet);
  faceembedRoutes(app, config, fleet, options.onExit ?? (() => undefined));
  jobRoutes(app, config, fleet);
  metricsRoutes(app, fleet);
  await dashboardRoutes(app, fleet);
  return app;
}

function bearerMatches(header: string | undefined, token: string): boolean {
  const sent = Buffer.from(/^Bearer (.+)$/i.exec(header ?? '')?.[1] ?? '');
  const want = Buffer.from(token);
  return sent.length === want.length && timingSafeEqual(sent, want);
}
