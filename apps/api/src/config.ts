import { z } from 'zod';
import { parseSettings } from '@facefleet/protocol';

export const ApiConfigSchema = z
  .object({
    port: z.number().int().min(0).max(65535).default(8088),
    /** Loopback by default, as the seed server was; 0.0.0.0 in a container. */
    host: z.string().min(1).default('127.0.0.1'),
    /** When set, every endpoint but /healthz and /readyz wants `Authorization: Bearer <token>`. */
    token: z.string().min(8).optional(),
    /** Directories under which `file` jobs from HTTP may read; none means no file jobs from HTTP. */
    fileRoots: z.array(z.string().min(1)).default([]),
    /** The seed's POST /exitserver: off unless asked for. */
    allowExit: z.boolean().default(false),
    /** The most jobs in one POST /v1/jobs. */
    maxBatch: z.number().int().positive().default(1000),
    /** The largest request body; base64 data makes images a third larger. */
    maxBodyBytes: z
      .number()
      .int()
      .positive()
      .default(48 * 1024 * 1024),
    /** How long POST /faceembed waits for its job. */
    waitTimeoutMs: z.number().int().positive().default(120_000),
    /** Interactive requests allowed to wait at once in this process; more get 503. */
    maxWaiting: z.number().int().positive().default(256),
  })
  .strict();

export type ApiConfig = z.output<typeof ApiConfigSchema>;
export type ApiConfigInput = z.input<typeof ApiConfigSchema>;

/**
 * The API's settings: explicit ones over FACEFLEET_TOKEN, FACEFLEET_FILE_ROOTS (colon-separated),
 * FACEFLEET_ALLOW_EXIT (1/true), FACEFLEET_API_PORT and FACEFLEET_MAX_BODY_BYTES, over defaults. Every bad value is
 * reported in one error.
 */
export function apiConfig(
  input: ApiConfigInput = {},
  env: NodeJS.ProcessEnv = process.env,
): ApiConfig {
  const fromEnv: ApiConfigInput = {
    ...(env.FACEFLEET_TOKEN ? { token: env.FACEFLEET_TOKEN } : {}),
    ...(env.FACEFLEET_FILE_ROOTS
      ? { fileRoots: env.FACEFLEET_FILE_ROOTS.split(':').filter(Boolean) }
      : {}),
    ...(env.FACEFLEET_ALLOW_EXIT
      ? { allowExit: ['1', 'true', 'yes'].includes(env.FACEFLEET_ALLOW_EXIT.toLowerCase()) }
      : {}),
    ...(env.FACEFLEET_API_PORT ? { port: Number(env.FACEFLEET_API_PORT) } : {}),
    ...(env.FACEFLEET_MAX_BODY_BYTES ? { maxBodyBytes: Number(env.FACEFLEET_MAX_BODY_BYTES) } : {}),
  };
  const hint =
    'FACEFLEET_TOKEN, FACEFLEET_FILE_ROOTS, FACEFLEET_ALLOW_EXIT, FACEFLEET_MAX_BODY_BYTES';
  return parseSettings(ApiConfigSchema, { ...fromEnv, ...input }, 'API configuration', hint);
}
