import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { Queue, QueueEvents } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaceProducer } from '@facefleet/fleet';
import { data } from './helpers.js';
import {
  freshPrefix,
  obliterate,
  readStatuses,
  REDIS_URL,
  run,
  start,
  until,
  waitForLog,
  waitForStatuses,
  type Running,
  freePort,
} from './fleet-helpers.js';

let work: string;
const prefixes: string[] = [];
const running: Running[] = [];
const servers: ChildProcess[] = [];

function launch(args: string[], env: Record<string, string>): Running {
  const process = start(args, env);
  running.push(process);
  return process;
}

function fleetEnv(): Record<string, string> {
  const prefix = freshPrefix();
  prefixes.push(prefix);
  return { FACEFLEET_PREFIX: prefix };
}

function linkFolder(name: string, sources: string[]): string {
  const dir = join(work, name);
  mkdirSync(dir);
  sources.forEach((source, i) =>
    symlinkSync(
      data(source),
      join(
        dir,
        `${name}-${String(i + 1).padStart(4, '0')}${source.slice(source.lastIndexOf('.'))}`,
      ),
    ),
  );
  return dir;
}

function redisPing(port: number): boolean {
  return (
    spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() ===
    'PONG'
  );
}

beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'facefleet-robust-'));
});

afterAll(async () => {
  await Promise.all(running.map((r) => r.stop('SIGKILL')));
  for (const server of servers) server.kill('SIGKILL');
  for (const prefix of prefixes) await obliterate(prefix);
  rmSync(work, { recursive: true, force: true });
});

describe('a job whose inference takes longer than the lock duration', () => {
  it('is not reported stalled: the lock is renewed while the inference process works', async () => {
    const env = fleetEnv();
    const slow = linkFolder('slow', [
      'ageitgey_face_recognition/examples/obama-1080p.jpg',
      'lovell_sharp/test/fixtures/G31D.TIF',
      'justadudewhohacks_face-api.js/examples/images/bbt3.jpg',
      'justadudewhohacks_face-api.js/examples/images/bbt5.jpg',
      'justadudewhohacks_face-recognition.js/examples/data/got.jpg',
      'davisking_dlib/examples/faces/2008_002079.jpg',
    ]);
    const connection = { url: REDIS_URL };
    const events = new QueueEvents('faces', { connection, prefix: env.FACEFLEET_PREFIX! });
    const queue = new Queue('faces', { connection, prefix: env.FACEFLEET_PREFIX! });
    let stalled = 0;
    events.on('stalled', () => (stalled += 1));
    await events.waitUntilReady();

    try {
      // The wasm backend keeps each of these images over 300 ms in inference (onnx can be faster).
      const worker = launch(
        ['worker', '--concurrency', '1', '--lock-ms', '300', '--backend', 'wasm'],
        env,
      );
      await waitForLog(worker, /worker started/);
      await run(['enqueue', slow], env);
      await expect
        .poll(() => queue.getJobCounts('completed').then((c) => c.completed), {
          timeout: 90_000,
          interval: 200,
        })
        .toBe(6);

      const jobs = await queue.getJobs(['completed']);
      // Each job held its lock for longer than the lock lasts: only renewals kept it.
      expect(jobs.every((j) => (j.finishedOn ?? 0) - (j.processedOn ?? 0) > 300)).toBe(true);
      expect(jobs.every((j) => j.stalledCounter === 0 && j.attemptsMade === 1)).toBe(true);
      expect(stalled).toBe(0);
      expect(worker.log()).not.toMatch(/job stalled/);
    } finally {
      await events.close();
      await queue.close();
    }
  });
});

describe('a job whose workers keep dying', () => {
  it('fails as WORKER_CRASHED past the stall limit, and its image still gets exactly one status', async () => {
    const env: Record<string, string> = { ...fleetEnv(), FACEFLEET_MAX_STALLED: '0' };
    const out = join(work, 'out-stalled-out');
    const queue = new Queue('faces', {
      connection: { url: REDIS_URL },
      prefix: env.FACEFLEET_PREFIX!,
    });
    try {
      launch(['sink', '--out', out], env);
      const doomed = launch(['worker', '--concurrency', '1', '--lock-ms', '1000'], env);
      await waitForLog(doomed, /worker started/);
      await run(['enqueue', linkFolder('stallout', ['lovell_sharp/test/fixtures/G31D.TIF'])], env);
      await until(
        async () => (await queue.getActiveCount()) === 1,
        'the job to be active',
        30_000,
        20,
      );
      await doomed.stop('SIGKILL');

      launch(['worker', '--concurrency', '1', '--lock-ms', '1000'], env);
      const [status] = await waitForStatuses(out, 1);

      expect(status).toMatchObject({
        id: 'stallout-0001',
        status: 'failed',
        error: { code: 'WORKER_CRASHED' },
      });
      expect(status?.source).toMatch(/stallout-0001\.TIF$/);
      await new Promise((resolve) => setTimeout(resolve, 3_000));
      expect(readStatuses(out)).toHaveLength(1);
    } finally {
      await queue.close();
    }
  });
});

describe('bad jobs', () => {
  it('refuses a job that fails validation at enqueue time, with the reason, and sends nothing to Redis', async () => {
    const env = fleetEnv();
    const producer = await FaceProducer.connect({
      prefix: env.FACEFLEET_PREFIX!,
      redisUrl: REDIS_URL,
    });
    try {
      const result = await producer.enqueue([
        { id: 'a' },
        { id: 'b', file: '/x.jpg', url: 'http://h/x.jpg' },
        { file: '/y.jpg' },
        { id: 'ok', file: '/z.jpg' },
        { id: 'ftp', url: 'ftp://host/x.jpg' },
      ]);

      expect(result.added).toBe(1);
      expect(result.refused.map((r) => r.index)).toEqual([0, 1, 2, 4]);
      expect(result.refused[3]?.reason).toMatch(/^url: must be an http or https URL/);
      expect(result.refused[0]?.reason).toMatch(/exactly one of "url", "file" or "data"/);
      expect(result.refused[2]?.reason).toMatch(/^id: /);
    } finally {
      await producer.close();
    }
  });

  it('a worker fails a malformed job put straight into Redis with JOB_INVALID, and keeps running', async () => {
    const env = fleetEnv();
    const out = join(work, 'out-invalid');
    const queue = new Queue('faces', {
      connection: { url: REDIS_URL },
      prefix: env.FACEFLEET_PREFIX!,
    });
    try {
      const sink = launch(['sink', '--out', out], env);
      const worker = launch(['worker', '--concurrency', '1'], env);
      await queue.add('image', { id: 'rogue', file: 42 } as never, {
        jobId: 'rogue-key',
        attempts: 3,
      });
      await queue.add(
        'image',
        { id: 'missing', file: '/nonexistent/x.jpg' },
        { jobId: 'missing-key', attempts: 3 },
      );

      const statuses = await waitForStatuses(out, 2);
      const failed = await queue.getJobs(['failed']);

      expect(statuses.find((s) => s.id === 'rogue')).toMatchObject({
        status: 'failed',
        error: { code: 'JOB_INVALID' },
      });
      expect(statuses.find((s) => s.id === 'missing')).toMatchObject({
        status: 'failed',
        error: { code: 'FILE_NOT_FOUND' },
      });
      // Input that can never succeed fails at once: one attempt, kept in the failed set with its code.
      expect(
        failed.map((j) => [j.id, j.attemptsMade, j.failedReason.split(':')[0]]).sort(),
      ).toEqual([
        ['missing-key', 1, 'FILE_NOT_FOUND'],
        ['rogue-key', 1, 'JOB_INVALID'],
      ]);
      expect(worker.child.exitCode).toBeNull();
      expect(sink.child.exitCode).toBeNull();
    } finally {
      await queue.close();
    }
  });
});

describe('a malformed result put straight into the results queue', () => {
  it('is failed by the sink with the reason, and the results around it are written', async () => {
    const env = fleetEnv();
    const out = join(work, 'out-bad-result');
    const results = new Queue('faces-results', {
      connection: { url: REDIS_URL },
      prefix: env.FACEFLEET_PREFIX!,
    });
    const good = (id: string) => ({
      key: `${id}-key`,
      result: { status: { id, status: 'no_faces', faces: 0 }, records: [] },
    });
    try {
      const sink = launch(['sink', '--out', out], env);
      await waitForLog(sink, /sink started/);
      // In one burst: the sink takes all three in a row.
      await results.addBulk([
        { name: 'result', data: good('before'), opts: { jobId: 'before-key' } },
        {
          name: 'result',
          data: { key: 'bad-key', result: { faces: 'many' } },
          opts: { jobId: 'bad-key' },
        },
        { name: 'result', data: good('after'), opts: { jobId: 'after-key' } },
      ]);

      const statuses = await waitForStatuses(out, 2);
      await until(
        async () => (await results.getJobCounts('failed')).failed === 1,
        'the bad result to fail',
      );
      const [failed] = await results.getJobs(['failed']);

      expect(statuses.map((s) => [s.id, s.key, s.status])).toEqual([
        ['before', 'before-key', 'no_faces'],
        ['after', 'after-key', 'no_faces'],
      ]);
      expect(failed?.id).toBe('bad-key');
      expect(failed?.failedReason).toMatch(/status/);
      expect(await results.getJobCounts('completed', 'active', 'waiting')).toEqual({
        completed: 2,
        active: 0,
        waiting: 0,
      });
      expect(sink.log()).toMatch(/sink: result not written/);
      expect(sink.child.exitCode).toBeNull();

      // Idle, the sink waits in Redis; SIGTERM ends that wait at once, not when it times out (5 s).
      await delay(1_000);
      const stopping = Date.now();
      expect(await sink.stop('SIGTERM')).toBe(0);
      expect(Date.now() - stopping).toBeLessThan(3_000);
    } finally {
      await results.close();
    }
  });
});

describe('a transient fault (a URL that times out once)', () => {
  it('is retried with backoff and succeeds; URLs and paths come from a --list on stdin', async () => {
    const env: Record<string, string> = {
      ...fleetEnv(),
      FACEFLEET_BACKOFF_MS: '100',
      FACEFLEET_URL_ALLOW: '127.0.0.1',
    };
    const out = join(work, 'out-transient');
    const bytes = readFileSync(data('ageitgey_face_recognition/tests/test_images/obama.jpg'));
    let requests = 0;
    const server = createHttpServer((req, res) => {
      requests += 1;
      if (requests === 1) return; // the first answer never comes
      res.writeHead(200, { 'content-type': 'image/jpeg' }).end(bytes);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as { port: number }).port}/flaky-000001.jpg`;
    const queue = new Queue('faces', {
      connection: { url: REDIS_URL },
      prefix: env.FACEFLEET_PREFIX!,
    });

    try {
      launch(['sink', '--out', out], env);
      launch(['worker', '--concurrency', '1', '--url-timeout-ms', '500'], env);
      const folder = linkFolder('listed', [
        'ageitgey_face_recognition/tests/test_images/biden.jpg',
        'justadudewhohacks_face-api.js/test/images/white.png',
      ]);
      const list = `# an ingest list\n${url}\n\n${data('derived/empty.jpg')}\n${folder}\n`;
      const enqueued = await run(['enqueue', '--list', '-'], env, list);
      const statuses = await waitForStatuses(out, 4);
      const job = (await queue.getJobs(['completed'])).find((j) => j.data?.url === url);

      expect(enqueued.log).toContain('4 jobs added');
      expect(
        statuses
          .filter((s) => s.id.toString().startsWith('listed-'))
          .map((s) => s.status)
          .sort(),
      ).toEqual(['no_faces', 'ok']);
      expect(statuses.find((s) => s.id === 'flaky-000001')).toMatchObject({
        status: 'ok',
        faces: 1,
        source: url,
        group: 'flaky',
      });
      expect(statuses.find((s) => s.id === 'empty')).toMatchObject({
        status: 'failed',
        error: { code: 'IMAGE_EMPTY' },
      });
      expect(requests).toBe(2);
      expect(job).toBeDefined();
      expect(job?.attemptsMade).toBe(2);
      expect((job?.stacktrace ?? []).join('\n') ?? '').toContain('URL_TIMEOUT');
    } finally {
      server.closeAllConnections();
      server.close();
      await queue.close();
    }
  });
});

describe('when Redis goes away in the middle of the run and comes back', () => {
  it('workers and sink wait and reconnect, and every accepted job ends exactly once', async () => {
    const port = await freePort();
    const dir = join(work, 'redis-outage');
    mkdirSync(dir);
    const startRedis = () => {
      const server = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--dir',
          dir,
          '--appendonly',
          'yes',
          '--save',
          '',
        ],
        { stdio: 'ignore' },
      );
      servers.push(server);
      return server;
    };
    let redis = startRedis();
    await expect.poll(() => redisPing(port), { timeout: 10_000 }).toBe(true);

    const env = { ...fleetEnv(), REDIS_URL: `redis://127.0.0.1:${port}` };
    const images = linkFolder(
      'outage',
      Array.from(
        { length: 20 },
        (_, i) =>
          [
            'ageitgey_face_recognition/tests/test_images/obama.jpg',
            'ageitgey_face_recognition/examples/two_people.jpg',
            'justadudewhohacks_face-api.js/test/images/white.png',
            'ageitgey_face_recognition/tests/test_images/biden.jpg',
          ][i % 4]!,
      ),
    );
    const out = join(work, 'out-outage');
    const sink = launch(['sink', '--out', out], env);
    const worker = launch(['worker', '--concurrency', '1'], env);
    await waitForLog(worker, /worker started/);
    expect((await run(['enqueue', images], env)).log).toContain('20 jobs added');

    await waitForStatuses(out, 4);
    // SHUTDOWN writes the append-only file; the same server comes back on the same port and dir.
    spawnSync('redis-cli', ['-p', String(port), 'shutdown']);
    await new Promise((resolve) => redis.once('exit', resolve));
    await waitForLog(worker, /redis unreachable; waiting for it/);
    redis = startRedis();

    await waitForStatuses(out, 20);
    await expect.poll(() => worker.log(), { timeout: 30_000 }).toMatch(/redis reachable again/);
    const statuses = readStatuses(out);

    expect(statuses).toHaveLength(20);
    expect(new Set(statuses.map((s) => s.key)).size).toBe(20);
    expect(statuses.every((s) => s.status !== 'failed')).toBe(true);
    expect(worker.child.exitCode).toBeNull();
    expect(sink.child.exitCode).toBeNull();
    await Promise.all([worker.stop(), sink.stop()]);
  });
});

describe('a second sink on the same fleet', () => {
  it('is refused, even for another folder, so that no folder gets only part of the results', async () => {
    const env = fleetEnv();
    const first = launch(['sink', '--out', join(work, 'sink-one')], env);
    await waitForLog(first, /sink started/);

    const second = await run(['sink', '--out', join(work, 'sink-two')], env);

    expect(second.code).toBe(1);
    expect(second.log).toMatch(
      /another sink \(sink:[^)]+\) already takes the results of fleet "fftest-[0-9a-f]+"/,
    );
    expect(first.child.exitCode).toBeNull();
  });
});

describe('when nothing answers at REDIS_URL', () => {
  it.each([
    ['enqueue', 'derived'],
    ['status', ''],
  ])('facefleet %s says so and exits 1 at once', async (command, folder) => {
    const started = Date.now();
    const result = await run([command, ...(folder ? [data(folder)] : [])], {
      REDIS_URL: 'redis://127.0.0.1:1',
    });

    expect(result.code).toBe(1);
    expect(result.log).toMatch(
      /^facefleet: cannot reach Redis at redis:\/\/127\.0\.0\.1:1 \(.*ECONNREFUSED.*\); start Redis or set REDIS_URL\n$/,
    );
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});

describe('facefleet up where Redis does not run but is installed', () => {
  it('starts a private redis-server, processes a folder end to end, and stops it on SIGTERM', async () => {
    const port = await freePort();
    const env = {
      ...fleetEnv(),
      REDIS_URL: `redis://127.0.0.1:${port}`,
      XDG_STATE_HOME: join(work, 'state'),
    };
    const out = join(work, 'out-up');
    const images = linkFolder('up', [
      'ageitgey_face_recognition/tests/test_images/obama.jpg',
      'ageitgey_face_recognition/examples/two_people.jpg',
      'derived/empty.jpg',
    ]);
    expect(redisPing(port)).toBe(false);

    const fleet = launch(['up', '--workers', '1', '--out', out, '--port', '0'], env);
    await waitForLog(fleet, /started a private redis-server/);
    await waitForLog(fleet, /api listening/);
    const api = /"address":"(http:\/\/[^"]+)"/.exec(fleet.log())?.[1];
    expect((await fetch(`${api}/readyz`)).status).toBe(200);
    await run(['enqueue', images], env);
    const statuses = await waitForStatuses(out, 3);

    expect(statuses.map((s) => [s.id, s.status, s.faces]).sort()).toEqual([
      ['up-0001', 'ok', 1],
      ['up-0002', 'ok', 2],
      ['up-0003', 'failed', 0],
    ]);
    expect(await fleet.stop('SIGTERM')).toBe(0);
    await expect.poll(() => redisPing(port), { timeout: 10_000 }).toBe(false);
  });
});
