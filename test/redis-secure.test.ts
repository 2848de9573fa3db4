import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { data } from './helpers.js';
import {
  freePort,
  run,
  start,
  until,
  waitForLog,
  waitForStatuses,
  type Running,
} from './fleet-helpers.js';

const PASSWORD = 'not-in-any-log-7f3a';
let work: string;
let redis: ChildProcess;
let port: number;
const running: Running[] = [];

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), 'facefleet-tls-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      join(work, 'key.pem'),
      '-out',
      join(work, 'cert.pem'),
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { stdio: 'ignore' },
  );
  port = await freePort();
  redis = spawn(
    'redis-server',
    [
      '--port',
      '0',
      '--tls-port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--tls-cert-file',
      join(work, 'cert.pem'),
      '--tls-key-file',
      join(work, 'key.pem'),
      '--tls-ca-cert-file',
      join(work, 'cert.pem'),
      '--tls-auth-clients',
      'no',
      '--requirepass',
      PASSWORD,
      '--save',
      '',
      '--appendonly',
      'no',
    ],
    { stdio: 'ignore' },
  );
  await until(
    async () => (await run(['status'], env())).code === 0,
    'the TLS redis-server to answer',
    15_000,
    200,
  );
});

afterAll(async () => {
  await Promise.all(running.map((r) => r.stop('SIGKILL')));
  redis.kill('SIGKILL');
  rmSync(work, { recursive: true, force: true });
});

/** The fleet's environment for this Redis: TLS, a password in the URL, the test CA trusted by Node. */
function env(password = PASSWORD): Record<string, string> {
  return {
    REDIS_URL: `rediss://:${password}@127.0.0.1:${port}`,
    NODE_EXTRA_CA_CERTS: join(work, 'cert.pem'),
    FACEFLEET_PREFIX: 'tls',
  };
}

describe('a Redis with TLS and a password, through REDIS_URL', () => {
  it('carries a whole run, and no log shows the password', async () => {
    const images = join(work, 'images');
    mkdirSync(images);
    symlinkSync(
      data('ageitgey_face_recognition/tests/test_images/obama.jpg'),
      join(images, 'tls-000001.jpg'),
    );
    symlinkSync(data('derived/empty.jpg'), join(images, 'tls-000002.jpg'));
    const sink = start(['sink', '--out', join(work, 'out')], env());
    const worker = start(['worker', '--concurrency', '1'], env());
    running.push(sink, worker);
    await waitForLog(worker, /worker started/);

    const enqueued = await run(['enqueue', images], env());
    const statuses = await waitForStatuses(join(work, 'out'), 2);

    expect(statuses.map((s) => [s.id, s.status]).sort()).toEqual([
      ['tls-000001', 'ok'],
      ['tls-000002', 'failed'],
    ]);
    expect(worker.log()).toContain(`rediss://:***@127.0.0.1:${port}`);
    for (const log of [enqueued.log, sink.log(), worker.log()]) expect(log).not.toContain(PASSWORD);
  });

  it('says the credentials were refused, without repeating them', async () => {
    const result = await run(['status'], env('wrong-password-123'));

    expect(result.code).toBe(1);
    expect(result.log).toMatch(
      /Redis at rediss:\/\/:\*\*\*@127\.0\.0\.1:\d+ refused the credentials in REDIS_URL/,
    );
    expect(result.log).not.toContain('wrong-password-123');
  });
});
