import { Redis } from 'ioredis';
import { connectionOptions, redactUrl, type FleetConfig, type RedisRole } from './config.js';

/** Redis did not answer: the message says where it was looked for and how to fix it. */
export class RedisUnavailableError extends Error {
  override name = 'RedisUnavailableError';
}

/**
 * An ioredis connection that is up before it is returned, or a RedisUnavailableError. Its error
 * events are handled here (ioredis would otherwise print each retry to the console); failures
 * reach callers through the commands they send.
 */
export async function connectRedis(config: FleetConfig, role: RedisRole): Promise<Redis> {
  const { url, ...options } = connectionOptions(config, role);
  const redis = new Redis(url, { ...options, lazyConnect: true });
  let lastError: Error | undefined;
  redis.on('error', (error: Error) => {
    lastError = error;
  });

  try {
    await redis.connect();
    return redis;
  } catch (error) {
    redis.disconnect();
    const reason = (lastError ?? (error as Error)).message;
    if (/WRONGPASS|NOAUTH|invalid password/i.test(reason)) {
      throw new RedisUnavailableError(
        `Redis at ${redactUrl(url)} refused the credentials in REDIS_URL (${reason})`,
      );
    }
    throw new RedisUnavailableError(
      `cannot reach Redis at ${redactUrl(url)} (${reason}); start Redis or set REDIS_URL`,
    );
  }
}

/** Whether an error means "Redis is not reachable right now", as opposed to a bad command. */
export function isRedisDown(error: unknown): boolean {
  const message = error instanceof Error ? error.message : String(error);
  return /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENETUNREACH|EPIPE|Stream isn't writeable|Connection is closed|max retries per request/i.test(
    message,
  );
}
