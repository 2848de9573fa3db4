import { execFile } from 'node:child_process';
import {
  copyFileSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Queue } from 'bullmq';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { data, REPO, TESTDATA } from './helpers.js';
import {
  freshPrefix,
  obliterate,
  REDIS_URL,
  run,
  start,
  waitForLog,
  type Running,
} from './fleet-helpers.js';

const exec = promisify(execFile);
const OBAMA = data('ageitgey_face_recognition/tests/test_images/obama.jpg');
const WHITE = data('justadudewhohacks_face-api.js/test/images/white.png');

let work: string;
const prefixes: string[] = [];
const running: Running[] = [];
let imageServer: Server;
let imageBase: string;

function fleetEnv(extra: Record<string, string> = {}): Record<string, string> {
  const prefix = freshPrefix();
  prefixes.push(prefix);
  return {
    FACEFLEET_PREFIX: prefix,
    FACEFLEET_FILE_ROOTS: `${TESTDATA}:${work}`,
    FACEFLEET_URL_ALLOW: '127.0.0.1',
    ...extra,
  };
}

/** Starts `facefleet serve` on a free port and answers its base URL. */
async function serve(env: Record<string, string>): Promise<{ api: Running; base: string }> {
  const api = start(['serve', '--port', '0'], env);
  running.push(api);
  await waitForLog(api, /api listening/);
  const address = /"address":"(http:\/\/[^"]+)"/.exec(api.log())?.[1];
  return { api, base: address! };
}

function launch(args: string[], env: Record<string, string>): Running {
  const process = start(args, env);
  running.push(process);
  return process;
}

/** POST with curl, as the seed's callers did (`-d` sends form encoding; the API takes it as JSON). */
async function curl(
  url: string,
  body: string,
  headers: string[] = [],
): Promise<{ status: number; body: string; type: string }> {
  const file = join(work, `body-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, body);
  const { stdout } = await exec(
    'curl',
    [
      '-s',
      '-X',
      'POST',
      '-d',
      `@${file}`,
      ...headers.flatMap((h) => ['-H', h]),
      '-w',
      '\n%{http_code} %{content_type}',
      url,
    ],
    { maxBuffer: 1 << 26 },
  );
  const cut = stdout.lastIndexOf('\n');
  const [status, type] = stdout.slice(cut + 1).split(' ');
  return { status: Number(status), body: stdout.slice(0, cut), type: type ?? '' };
}

async function embedLines(file: string, id: string): Promise<string> {
  const result = await run(['embed', file, '--workers', '1'], {});
  expect(result.code).toBe(0);
  // `embed` names an image by its file name; the API by the id given. Same records otherwise.
  return result.log
    .split('\n')
    .filter((l) => l.startsWith('{"id":'))
    .map((l) => l.replace(/^\{"id":"[^"]*"/, `{"id":${JSON.stringify(id)}`))
    .join('\n');
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'facefleet-api-'));
  const bytes = readFileSync(OBAMA);
  imageServer = createServer((req, res) => {
    if (req.url === '/obama.jpg') res.writeHead(200, { 'content-type': 'image/jpeg' }).end(bytes);
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => imageServer.listen(0, '127.0.0.1', resolve));
  imageBase = `http://127.0.0.1:${(imageServer.address() as { port: number }).port}`;
});

afterAll(async () => {
  await Promise.all(running.map((r) => r.stop('SIGKILL')));
  imageServer.close();
  for (const prefix of prefixes) await obliterate(prefix);
  rmSync(work, { recursive: true, force: true });
});

describe('the HTTP API with a running fleet', () => {
  let env: Record<string, string>;
  let base: string;
  let queue: Queue;

  beforeAll(async () => {
    env = fleetEnv();
    const worker = launch(['worker', '--concurrency', '2'], env);
    launch(['sink', '--out', join(work, 'out')], env);
    ({ base } = await serve(env));
    await waitForLog(worker, /worker started/);
    queue = new Queue('faces', { connection: { url: REDIS_URL }, prefix: env.FACEFLEET_PREFIX! });
  });
  afterAll(() => queue.close());

  it("answers the seed's three calls (url, file, data) with the same JSON-NL that facefleet embed gives", async () => {
    const expected = await embedLines(OBAMA, 'obama');
    const b64 = readFileSync(OBAMA).toString('base64');

    const byUrl = await curl(
      `${base}/faceembed`,
      JSON.stringify({ id: 'obama', url: `${imageBase}/obama.jpg` }),
    );
    const byFile = await curl(`${base}/faceembed`, JSON.stringify({ id: 'obama', file: OBAMA }));
    const byData = await curl(`${base}/faceembed`, JSON.stringify({ id: 'obama', data: b64 }));

    for (const answer of [byUrl, byFile, byData]) {
      expect(answer.status).toBe(200);
      expect(answer.type).toMatch(/^application\/x-ndjson/);
      expect(answer.body.trimEnd()).toBe(expected);
    }
    expect(expected.split('\n')).toHaveLength(1);
  });

  it('passes a numeric id through as a number and answers 200 with an empty body when there is no face', async () => {
    const none = await curl(`${base}/faceembed`, JSON.stringify({ id: 17, file: WHITE }));
    const one = await curl(`${base}/faceembed`, JSON.stringify({ id: 17, file: OBAMA }));

    expect(none).toMatchObject({ status: 200, body: '' });
    expect(JSON.parse(one.body).id).toBe(17);
  });

  it.each([
    ['bad JSON', '{"id": "x", "file": ', 400, 'REQUEST_MALFORMED'],
    ['no source', '{"id": "x"}', 400, 'JOB_INVALID'],
    [
      'two sources',
      JSON.stringify({ id: 'x', file: OBAMA, url: 'http://127.0.0.1/x.jpg' }),
      400,
      'JOB_INVALID',
    ],
    [
      'bad base64',
      JSON.stringify({ id: 'x', data: '***not base64***' }),
      400,
      'DATA_INVALID_BASE64',
    ],
    [
      'not an image',
      JSON.stringify({ id: 'x', file: data('derived/not_an_image.jpg') }),
      415,
      'IMAGE_UNSUPPORTED',
    ],
    [
      'a file outside the roots',
      JSON.stringify({ id: 'x', file: '/etc/passwd' }),
      403,
      'FILE_NOT_ALLOWED',
    ],
    ['an unknown field', JSON.stringify({ id: 'x', file: OBAMA, extra: 1 }), 400, 'JOB_INVALID'],
    [
      'an id over 1024 characters',
      JSON.stringify({ id: 'x'.repeat(1025), file: OBAMA }),
      400,
      'JOB_INVALID',
    ],
    [
      'JSON nested 10,000 deep',
      `${'['.repeat(10_000)}${']'.repeat(10_000)}`,
      400,
      'REQUEST_MALFORMED',
    ],
    [
      'a URL to a private address',
      JSON.stringify({ id: 'x', url: 'http://169.254.169.254/latest/meta-data/' }),
      403,
      'URL_FORBIDDEN',
    ],
  ])('refuses %s with its HTTP status and code', async (_what, body, status, code) => {
    const answer = await curl(`${base}/faceembed`, body);

    expect(answer.status).toBe(status);
    expect(JSON.parse(answer.body)).toMatchObject({ code, error: expect.any(String) });
  });

  it('serves 8 concurrent /faceembed clients in front of a 100-image bulk job, every answer right', async () => {
    const sources = [
      'ageitgey_face_recognition/tests/test_images/obama2.jpg',
      'ageitgey_face_recognition/tests/test_images/biden.jpg',
      'ageitgey_face_recognition/examples/two_people.jpg',
      'justadudewhohacks_face-api.js/test/images/faces.jpg',
    ];
    const bulk = join(work, 'bulk');
    mkdirSync(bulk);
    for (let i = 0; i < 100; i += 1)
      symlinkSync(data(sources[i % 4]!), join(bulk, `bulk-${String(i).padStart(4, '0')}.jpg`));
    const interactive = [0, 1, 2, 3, 0, 1, 2, 3].map((i) => ({
      id: `live-${i}`,
      file: data(sources[i]!),
    }));
    const expectedFaces = [1, 1, 2, 6];

    expect((await run(['enqueue', bulk], env)).log).toContain('100 jobs added');
    const answers = await Promise.all(
      interactive.map(async (job) => {
        const answer = await curl(`${base}/faceembed`, JSON.stringify(job));
        const left = await queue.getJobCounts('waiting', 'prioritized');
        return { answer, bulkLeft: left.waiting! + left.prioritized! };
      }),
    );

    answers.forEach(({ answer }, n) => {
      expect(answer.status).toBe(200);
      const records = answer.body
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(records).toHaveLength(expectedFaces[n % 4]!);
      expect(records.every((r) => r.id === `live-${n % 4}` && r.embed.length === 128)).toBe(true);
    });
    // Had they waited behind the bulk job, the bulk backlog would be gone by the time they answer.
    expect(Math.min(...answers.map((a) => a.bulkLeft))).toBeGreaterThan(50);
  });

  it('takes 50 jobs on POST /v1/jobs and gives, polled to completion, the records facefleet embed gives', async () => {
    const dir = join(work, 'v1');
    mkdirSync(dir);
    const sources = [
      'ageitgey_face_recognition/tests/test_images/obama3.jpg',
      'ageitgey_face_recognition/examples/knn_examples/test/kit_with_rose.jpg',
      WHITE.slice(TESTDATA.length + 1),
      'derived/obama_cmyk.jpg',
      'derived/empty.jpg',
    ];
    // Copies, not links: the API resolves links, and one real file is one job whatever its names.
    for (let i = 0; i < 50; i += 1)
      copyFileSync(data(sources[i % 5]!), join(dir, `v1-${String(i).padStart(3, '0')}.jpg`));
    const reference = await run(
      ['embed', dir, '--out', join(work, 'v1-ref'), '--workers', '2'],
      {},
    );
    expect(reference.code).toBe(0);
    const refStatuses = readFileSync(join(work, 'v1-ref', '_status.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    const refRecords = readFileSync(join(work, 'v1-ref', 'v1.json'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));

    const jobs = Array.from({ length: 50 }, (_, i) => ({
      id: `v1-${String(i).padStart(3, '0')}`,
      file: join(dir, `v1-${String(i).padStart(3, '0')}.jpg`),
    }));
    const posted = await fetch(`${base}/v1/jobs`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(jobs),
    });
    const { keys, added } = (await posted.json()) as { keys: string[]; added: number };
    expect(posted.status).toBe(202);
    expect(added).toBe(50);

    const finished = await Promise.all(
      keys.map(async (key) => {
        let body: {
          state: string;
          id: string;
          status?: { status: string; faces: number; error?: { code: string } };
          records?: unknown[];
        } = { state: 'waiting', id: '' };
        await expect
          .poll(
            async () => {
              body = (await (await fetch(`${base}/v1/jobs/${key}`)).json()) as typeof body;
              return body.state;
            },
            { timeout: 120_000, interval: 250 },
          )
          .toMatch(/completed|failed/);
        return body;
      }),
    );

    for (const job of finished) {
      const ref = refStatuses.find((s) => s.id === job.id);
      expect(job.status).toMatchObject({ status: ref.status, faces: ref.faces });
      if (ref.error)
        expect(job.status?.error, JSON.stringify(job)).toMatchObject({ code: ref.error.code });
      expect(job.records ?? []).toEqual(refRecords.filter((r) => r.id === job.id));
    }
    expect((await fetch(`${base}/v1/jobs/no-such-key`)).status).toBe(404);
  });

  it('moves the /metrics counters as jobs complete and fail', async () => {
    const scrape = async () => {
      const text = await (await fetch(`${base}/metrics`)).text();
      const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? 0);
      return {
        ok: value(/^facefleet_jobs_completed_total\{status="ok"\} (\d+)/m),
        unsupported: value(/^facefleet_jobs_failed_total\{code="IMAGE_UNSUPPORTED"\} (\d+)/m),
        timed: value(/^facefleet_job_duration_seconds_count (\d+)/m),
        workers: value(/^facefleet_workers (\d+)/m),
      };
    };
    const before = await scrape();

    await curl(`${base}/faceembed`, JSON.stringify({ id: 'm1', file: OBAMA }));
    await curl(
      `${base}/faceembed`,
      JSON.stringify({ id: 'm2', file: data('derived/not_an_image.jpg') }),
    );

    // The bulk job of an earlier test may still be finishing: other counts may move too.
    await expect
      .poll(async () => (await scrape()).unsupported, { timeout: 30_000 })
      .toBe(before.unsupported + 1);
    const after = await scrape();
    expect(after.ok).toBeGreaterThanOrEqual(before.ok + 1);
    expect(after.timed).toBeGreaterThan(before.timed);
    expect(after.workers).toBe(1);
  });

  it('shows the three queues and a failed job with its reason on the Bull Board dashboard (headless Chromium)', async () => {
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
      await page.goto(`${base}/admin/queues`);
      await expect
        .poll(() => page.getByText('faces-results').count(), { timeout: 30_000 })
        .toBeGreaterThan(0);
      await expect.poll(() => page.getByText(/^faces$/).count()).toBeGreaterThan(0);
      await expect.poll(() => page.getByText('faces-live').count()).toBeGreaterThan(0);

      // The /faceembed call with a text file above failed in the live queue.
      await page.goto(`${base}/admin/queues/queue/faces-live?status=failed`);
      await expect
        .poll(() => page.getByText(/IMAGE_UNSUPPORTED/).count(), { timeout: 30_000 })
        .toBeGreaterThan(0);
      mkdirSync(join(REPO, 'test', 'artifacts'), { recursive: true });
      await page.screenshot({
        path: join(REPO, 'test', 'artifacts', 'dashboard-failed.png'),
        fullPage: true,
      });
    } finally {
      await browser.close();
    }
  });

  it('reports ready while a worker is connected', async () => {
    const answer = await fetch(`${base}/readyz`);

    expect(answer.status).toBe(200);
    expect(await answer.json()).toMatchObject({ status: 'ready', workers: 1 });
  });
});

describe('the HTTP API with no worker', () => {
  it('is not ready, and answers /faceembed with 503 and Retry-After', async () => {
    const { base } = await serve(fleetEnv());

    const ready = await fetch(`${base}/readyz`);
    const answer = await fetch(`${base}/faceembed`, {
      method: 'POST',
      body: JSON.stringify({ id: 'x', file: OBAMA }),
    });

    expect(ready.status).toBe(503);
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect(answer.status).toBe(503);
    expect(answer.headers.get('retry-after')).toBe('5');
    expect(await answer.json()).toMatchObject({ code: 'NO_WORKERS' });
  });
});

describe('POST /exitserver', () => {
  it('is off by default', async () => {
    const { base } = await serve(fleetEnv());

    expect((await fetch(`${base}/exitserver`, { method: 'POST' })).status).toBe(404);
  });

  it('when allowed, drains and stops the API process cleanly', async () => {
    const { api, base } = await serve(fleetEnv({ FACEFLEET_ALLOW_EXIT: '1' }));

    const answer = await fetch(`${base}/exitserver`, { method: 'POST' });

    expect(answer.status).toBe(200);
    expect(await api.exited).toBe(0);
  });
});

describe('with a body size limit (FACEFLEET_MAX_BODY_BYTES)', () => {
  it('refuses a larger body with 413 REQUEST_TOO_LARGE before reading it all', async () => {
    const { base } = await serve(fleetEnv({ FACEFLEET_MAX_BODY_BYTES: String(1024 * 1024) }));
    const body = JSON.stringify({
      id: 'big',
      data: Buffer.alloc(2 * 1024 * 1024, 7).toString('base64'),
    });

    const answer = await curl(`${base}/faceembed`, body);

    expect(answer.status).toBe(413);
    expect(JSON.parse(answer.body)).toMatchObject({ code: 'REQUEST_TOO_LARGE' });
  });
});

describe('with FACEFLEET_TOKEN set', () => {
  it('answers 401 without the bearer token everywhere but health and readiness', async () => {
    const token = 'a-long-enough-secret';
    const { base } = await serve(fleetEnv({ FACEFLEET_TOKEN: token }));
    const paths: Array<[string, string]> = [
      ['POST', '/faceembed'],
      ['POST', '/v1/jobs'],
      ['GET', '/v1/jobs/x'],
      ['GET', '/metrics'],
      ['GET', '/admin/queues'],
      ['POST', '/exitserver'],
    ];

    for (const [method, path] of paths) {
      const answer = await fetch(`${base}${path}`, {
        method,
        ...(method === 'POST' ? { body: '{}' } : {}),
      });
      expect([path, answer.status]).toEqual([path, 401]);
      expect(await answer.json()).toMatchObject({ code: 'UNAUTHORIZED' });
    }
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
    expect(
      (await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } })).status,
    ).toBe(200);
    expect(
      (await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong-token-value!' } }))
        .status,
    ).toBe(401);
  });
});
