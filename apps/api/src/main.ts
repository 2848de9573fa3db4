import { parseArgs } from 'node:util';
import { createLogger } from '@facefleet/engine';
import { fleetConfig, redactUrl } from '@facefleet/fleet';
import { apiConfig } from './config.js';
import { FleetClient } from './fleet.js';
import { buildServer } from './server.js';

/**
 * The API process: `facefleet serve` starts it (and `facefleet up` next to its workers).
 * Flags: --port, --host; the rest comes from the environment (see config.ts).
 */
const { values } = parseArgs({
  options: { port: { type: 'string' }, host: { type: 'string' }, 'log-level': { type: 'string' } },
});
const logger = createLogger('facefleet-api', (values['log-level'] as 'info' | undefined) ?? 'info');

try {
  const config = apiConfig({
    ...(values.port ? { port: Number(values.port) } : {}),
    ...(values.host ? { host: values.host } : {}),
  });
  const fleet = await FleetClient.connect(fleetConfig());

  let stopping = false;
  const stop = async (reason: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ reason }, 'stopping: draining requests in flight');
    await app.close();
    await fleet.close();
    process.exit(0);
  };
  const app = await buildServer({
    config,
    fleet,
    logger,
    onExit: () => void stop('POST /exitserver'),
  });
  const address = await app.listen({ port: config.port, host: config.host });
  logger.info(
    {
      address,
      redis: redactUrl(fleet.config.redisUrl),
      prefix: fleet.config.prefix,
      token: Boolean(config.token),
      fileRoots: config.fileRoots,
    },
    'api listening',
  );
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  // Started by `facefleet serve` or `up`: when that process is gone, so is the reason to run.
  if (process.send) process.on('disconnect', () => void stop('parent process exited'));
} catch (error) {
  logger.fatal({ err: error }, 'api cannot start');
  process.exit(1);
}
