import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { Logger } from '@facefleet/engine';
import { redactUrl } from '@facefleet/fleet';

/** Whether something answers PING at the URL, within a second. */
export async function redisAnswers(url: string): Promise<boolean> {
  const client = new Redis(url, {
    lazyConnect: true,
    connectTimeout: 1_000,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
  });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return (await client.ping()) === 'PONG';
  } catch {
    return false;
  } finally {
    client.disconnect();
  }
}

/**
 * Makes sure Redis answers at `url`. Where nothing does, the URL points at this machine and
 * `redis-server` is installed, starts a private one on that port (append-only file, so queued
 * jobs survive a restart) that stops when this process does. Otherwise says how to get Redis.
 */
export async function ensureRedis(url: string, logger: Logger): Promise<ChildProcess | undefined> {
  if (await redisAnswers(url)) return undefined;

  const parsed = new URL(url);
  const local = ['127.0.0.1', 'localhost', '[::1]'].includes(parsed.hostname);
  const installed = spawnSync('redis-server', ['--version'], { stdio: 'ignore' }).status === 0;
  if (!local || !installed || parsed.protocol !== 'redis:') {
    throw new Error(
      `Redis does not answer at ${redactUrl(url)}. Start one (on Debian: apt-get install redis-server), ` +
        'or point REDIS_URL at a running Redis.',
    );
  }

  const port = parsed.port || '6379';
  const dir = join(
    process.env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state'),
    'facefleet',
    `redis-${port}`,
  );
  mkdirSync(dir, { recursive: true });
  const args = [
    '--port',
    port,
    '--bind',
    '127.0.0.1',
    '--dir',
    dir,
    '--appendonly',
    'yes',
    '--save',
    '',
  ];
  if (parsed.password) args.push('--requirepass', decodeURIComponent(parsed.password));
  const server = spawn('redis-server', args, { stdio: 'ignore' });

  for (let i = 0; i < 50; i += 1) {
    if (await redisAnswers(url)) {
      logger.info(
        { port: Number(port), dir, pid: server.pid },
        'nothing answered at REDIS_URL: started a private redis-server; it stops with this process',
      );
      return server;
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  server.kill();
  throw new Error(`redis-server did not start on port ${port}`);
}
