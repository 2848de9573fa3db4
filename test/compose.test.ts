import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { REPO } from './helpers.js';

/**
 * The compose file as a compose implementation reads it. Debian's `docker-compose` (1.29) writes
 * volumes and ports in the short form; Compose v2 in the long one: both are read here.
 */
const VolumeSchema = z.union([
  z.string().transform((text) => {
    const [source, target, mode] = text.split(':');
    return { source, target, readOnly: mode === 'ro' };
  }),
  z
    .object({ source: z.string(), target: z.string(), read_only: z.boolean().optional() })
    .transform((v) => ({ source: v.source, target: v.target, readOnly: v.read_only === true })),
]);

const ServiceSchema = z.object({
  image: z.string().optional(),
  build: z.unknown().optional(),
  command: z.array(z.string()).optional(),
  container_name: z.string().optional(),
  init: z.boolean().optional(),
  environment: z.record(z.string(), z.string().nullable()).optional(),
  ports: z
    .array(
      z.union([
        z.string(),
        z.object({ published: z.union([z.number(), z.string()]), target: z.number() }),
      ]),
    )
    .optional(),
  volumes: z.array(VolumeSchema).optional(),
  depends_on: z.record(z.string(), z.object({ condition: z.string() })).optional(),
  healthcheck: z.object({ test: z.array(z.string()) }).optional(),
  stop_grace_period: z.string().optional(),
  deploy: z.unknown().optional(),
});

const ComposeSchema = z.object({
  services: z.record(z.string(), ServiceSchema),
  volumes: z.record(z.string(), z.unknown()),
});
type Compose = z.infer<typeof ComposeSchema>;

/** `docker-compose` (Debian's package, installed by .ci/run) or else Compose v2's `docker compose`. */
function composeCommand(): string[] {
  if (spawnSync('docker-compose', ['version'], { stdio: 'ignore' }).status === 0)
    return ['docker-compose'];
  if (spawnSync('docker', ['compose', 'version'], { stdio: 'ignore' }).status === 0)
    return ['docker', 'compose'];
  throw new Error(
    'no compose implementation: `apt-get install -y docker-compose` (.ci/run does this)',
  );
}

/** Runs `config` in a clean environment, so that only the given variables are interpolated. */
function composeConfig(env: Record<string, string> = {}): Compose {
  const [command, ...args] = composeCommand();
  const text = execFileSync(command!, [...args, '-f', join(REPO, 'docker-compose.yml'), 'config'], {
    cwd: REPO,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? '/tmp', ...env },
    encoding: 'utf8',
  });
  return ComposeSchema.parse(parseYaml(text));
}

function mount(service: z.infer<typeof ServiceSchema>, target: string) {
  return service.volumes?.find((v) => v.target === target);
}

describe('docker-compose.yml, as `docker-compose config` reads it', () => {
  let compose: Compose;
  beforeAll(() => {
    compose = composeConfig();
  });

  it('has Redis, the API, workers and the sink, all facefleet services on one image with an init', () => {
    const { services } = compose;
    expect(Object.keys(services).sort()).toEqual(['api', 'redis', 'sink', 'worker']);
    for (const name of ['api', 'worker', 'sink']) {
      expect(services[name]).toMatchObject({ image: 'facefleet:latest', init: true });
      expect(services[name]!.build).toBeDefined();
      expect(services[name]!.environment?.REDIS_URL).toBe('redis://redis:6379');
      // Nothing starts before Redis answers its health check.
      expect(services[name]!.depends_on).toEqual({ redis: { condition: 'service_healthy' } });
    }
  });

  it('runs Redis append-only on a volume, with a health check', () => {
    const redis = compose.services.redis!;
    const command = redis.command ?? [];
    expect(command[command.indexOf('--appendonly') + 1]).toBe('yes');
    expect(command).toContain('--appendonly');
    expect(mount(redis, '/data')).toEqual({
      source: 'redis-data',
      target: '/data',
      readOnly: false,
    });
    expect(redis.healthcheck?.test).toEqual(['CMD', 'redis-cli', 'ping']);
  });

  it('serves the API on 8088 on all addresses, with the images read-only and file roots set', () => {
    const api = compose.services.api!;
    expect(api.command).toEqual(['serve', '--host', '0.0.0.0', '--port', '8088']);
    expect(api.ports).toHaveLength(1);
    const port = api.ports![0]!;
    expect(typeof port === 'string' ? port : `${port.published}:${port.target}`).toBe('8088:8088');
    expect(api.environment?.FACEFLEET_FILE_ROOTS).toBe('/data/images');
    expect(mount(api, '/data/images')).toEqual({
      source: 'images',
      target: '/data/images',
      readOnly: true,
    });
    expect(api.healthcheck?.test.join(' ')).toContain('/healthz');
  });

  it('has workers that can be scaled: no container name, no published port, images read-only', () => {
    const worker = compose.services.worker!;
    expect(worker.container_name).toBeUndefined();
    expect(worker.ports).toBeUndefined();
    expect(worker.command).toEqual(['worker', '--autoscale', '1..2', '--scale-down-after', '60s']);
    expect(mount(worker, '/data/images')).toEqual({
      source: 'images',
      target: '/data/images',
      readOnly: true,
    });
    // Long enough for a worker to finish the jobs in hand after SIGTERM.
    expect(worker.stop_grace_period).toBe('2m');
  });

  it('has one sink writing to the output volume', () => {
    const sink = compose.services.sink!;
    expect(sink.command).toEqual(['sink', '--out', '/data/out']);
    expect(mount(sink, '/data/out')).toEqual({
      source: 'out',
      target: '/data/out',
      readOnly: false,
    });
    expect(Object.keys(compose.volumes).sort()).toEqual(['images', 'out', 'redis-data']);
  });

  it('takes the autoscale bounds, prefix and API port from the environment', () => {
    const tuned = composeConfig({
      FACEFLEET_AUTOSCALE: '2..8',
      FACEFLEET_SCALE_DOWN_AFTER: '5m',
      FACEFLEET_PREFIX: 'blue',
      FACEFLEET_API_PORT: '9099',
    });
    expect(tuned.services.worker!.command).toEqual([
      'worker',
      '--autoscale',
      '2..8',
      '--scale-down-after',
      '5m',
    ]);
    expect(tuned.services.sink!.environment?.FACEFLEET_PREFIX).toBe('blue');
    const port = tuned.services.api!.ports![0]!;
    expect(typeof port === 'string' ? port : `${port.published}:${port.target}`).toBe('9099:8088');
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
  const instructions = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .filter((line) => /^[A-Z]+\s/.test(line));

  it('builds in stages from Node 20, ships production dependencies only, runs as a user', () => {
    const stages = instructions.filter((line) => line.startsWith('FROM '));
    expect(stages.length).toBeGreaterThanOrEqual(3);
    expect(text).toMatch(/^ARG NODE_IMAGE=node:20-bookworm-slim$/m);
    expect(instructions.some((l) => /^RUN npm ci --omit=dev\b/.test(l))).toBe(true);
    const users = instructions.filter((line) => line.startsWith('USER '));
    expect(users.at(-1)).toBe('USER node');
  });

  it('installs and verifies the models at build, and starts the facefleet binary itself', () => {
    const run = instructions.filter((l) => l.startsWith('RUN ')).join('\n');
    expect(run).toMatch(/facefleet\.js models install/);
    expect(run).toMatch(/facefleet\.js models verify/);
    // Exec form, no shell and no npx in between: SIGTERM reaches facefleet.
    expect(instructions.find((l) => l.startsWith('ENTRYPOINT '))).toBe(
      'ENTRYPOINT ["/app/node_modules/.bin/facefleet"]',
    );
  });

  it('keeps dependencies, builds and weights of this checkout out of the build context', () => {
    const ignored = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n');
    for (const entry of ['**/node_modules', '**/dist', 'models/*', '!models/manifest.json'])
      expect(ignored).toContain(entry);
  });
});
