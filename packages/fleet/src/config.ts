import { z } from 'zod';
import { parseSettings } from '@facefleet/protocol';

export const FleetConfigSchema = z
  .object({
    /** Redis to use; `rediss://` for TLS, a password in the URL for AUTH. */
    redisUrl: z.string().url().default('redis://127.0.0.1:6379'),
    /** BullMQ key prefix: fleets that share a Redis keep apart by prefix. */
    prefix: z.string().min(1).max(100).default('facefleet'),
    /** Tries per job for transient faults (URL timeouts, crashed processes); bad input gets one. */
    attempts: z.number().int().min(1).max(50).default(3),
    /** First retry delay; doubles with each further try. */
    backoffMs: z.number().int().min(0).default(2_000),
    /** How long a worker's claim on a job lasts without renewal (renewed at half of it). */
    lockDurationMs: z.number().int().min(100).default(30_000),
    /** How often workers look for jobs whose claim ran out (their worker died). */
    stalledIntervalMs: z.number().int().min(100).default(30_000),
    /** Times a job may lose its worker before it fails as WORKER_CRASHED. */
    maxStalledCount: z.number().int().min(0).max(100).default(3),
    /** Keep completed jobs so that enqueueing the same image again adds nothing (costs Redis memory). */
    keepCompleted: z.boolean().default(true),
  })
  .strict();

export type FleetConfig = z.output<typeof FleetConfigSchema>;
export type FleetConfigInput = z.input<typeof FleetConfigSchema>;

/** Environment variables that set fleet options, under explicit ones. */
const FROM_ENV = {
  REDIS_URL: 'redisUrl',
  FACEFLEET_PREFIX: 'prefix',
  FACEFLEET_ATTEMPTS: 'attempts',
  FACEFLEET_BACKOFF_MS: 'backoffMs',
  FACEFLEET_MAX_STALLED: 'maxStalledCount',
} as const;

/**
 * Fleet settings: explicit ones over the environment (FROM_ENV), over defaults. Every bad value
 * is reported in one error.
 */
export function fleetConfig(
  input: FleetConfigInput = {},
  env: NodeJS.ProcessEnv = process.env,
): FleetConfig {
  const fromEnv: Record<string, string | number> = {};
  for (const [name, key] of Object.entries(FROM_ENV)) {
    const value = env[name];
    if (value === undefined || value === '') continue;
    fromEnv[key] = key === 'redisUrl' || key === 'prefix' ? value : Number(value);
  }
  const hint = Object.keys(FROM_ENV).join(', ');
  return parseSettings(FleetConfigSchema, { ...fromEnv, ...input }, 'fleet configuration', hint);
}

/** The Redis URL with any password replaced, for logs and messages. */
export function redactUrl(url: string): string {
  if (!URL.canParse(url)) return '<invalid url>';
  const parsed = new URL(url);
  if (parsed.password) parsed.password = '***';
  return parsed.toString();
}

/**
 * How a process holds its Redis connection:
 * - `worker` (workers, sink, event listeners): waits through outages, commands queue meanwhile;
 * - `service` (the API): reconnects forever, but a command fails at once while Redis is away, so
 *   that a request can be answered 503 instead of hanging;
 * - `cli` (enqueue, status): one connection attempt with a short timeout, then a clear error.
 */
export type RedisRole = 'worker' | 'service' | 'cli';

export function connectionOptions(config: FleetConfig, role: RedisRole) {
  const backoff = (times: number) => Math.min(200 * 2 ** Math.min(times, 6), 5_000);
  return {
    url: config.redisUrl,
    maxRetriesPerRequest: role === 'worker' ? null : 1,
    enableOfflineQueue: role === 'worker',
    connectTimeout: role === 'cli' ? 3_000 : 10_000,
    retryStrategy: role === 'cli' ? (times: number) => (times > 2 ? null : 200) : backoff,
  };
}
