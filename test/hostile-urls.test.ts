import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaceEngine, FaceFleetError, UrlPolicy } from '@facefleet/engine';
import type { Job } from '@facefleet/protocol';
import { readFileSync } from 'node:fs';
import { data } from './helpers.js';

const JPEG = readFileSync(data('ageitgey_face_recognition/tests/test_images/obama.jpg'));
const MAX_BYTES = 4 * 1024 * 1024;

interface Loopback {
  server: Server;
  base: string;
  hits: string[];
  sent: { bytes: number };
}

/** A test server on a loopback address, counting the requests that reach it and the bytes it sent. */
async function loopback(
  host: string,
  handler: (path: string, res: import('node:http').ServerResponse, sent: { bytes: number }) => void,
): Promise<Loopback> {
  const hits: string[] = [];
  const sent = { bytes: 0 };
  const server = createServer((req, res) => {
    hits.push(req.url ?? '');
    handler(req.url ?? '', res, sent);
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  return {
    server,
    base: `http://${host}:${(server.address() as { port: number }).port}`,
    hits,
    sent,
  };
}

let engine: FaceEngine;
let allowedEngine: FaceEngine;
let target: Loopback;
let front: Loopback;

async function codeOf(e: FaceEngine, url: string): Promise<string | undefined> {
  return (await e.process({ id: 'u', url } as Job)).status.error?.code;
}

beforeAll(async () => {
  target = await loopback('127.0.0.1', (path, res, sent) => {
    if (path === '/face.jpg') return res.writeHead(200, { 'content-type': 'image/jpeg' }).end(JPEG);
    if (path === '/page.html')
      return res.writeHead(200, { 'content-type': 'text/html' }).end('<html>hi</html>');
    if (path === '/loop') return res.writeHead(302, { location: '/loop' }).end();
    if (path === '/slow')
      return res.writeHead(200, { 'content-type': 'image/jpeg' }).write(JPEG.subarray(0, 100));
    if (path === '/huge-declared')
      return res
        .writeHead(200, { 'content-type': 'image/jpeg', 'content-length': String(2 ** 31) })
        .write(JPEG);
    if (path === '/huge-chunked') {
      res.writeHead(200, { 'content-type': 'image/jpeg' });
      const chunk = Buffer.alloc(64 * 1024, 0xff);
      const pump = () => {
        while (sent.bytes < 2 ** 31 && !res.destroyed) {
          sent.bytes += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      return pump();
    }
    res.writeHead(404).end();
  });
  // The "public" host: exempted by FACEFLEET_URL_ALLOW, and redirecting to a private one.
  front = await loopback('127.0.0.2', (path, res) => {
    if (path === '/to-private')
      return res.writeHead(302, { location: `${target.base}/face.jpg` }).end();
    if (path === '/face.jpg') return res.writeHead(200, { 'content-type': 'image/jpeg' }).end(JPEG);
    res.writeHead(404).end();
  });
  engine = await FaceEngine.create({
    backend: 'wasm',
    urlAllow: ['127.0.0.2'],
    urlTimeoutMs: 1_500,
    maxBytes: MAX_BYTES,
  });
  allowedEngine = await FaceEngine.create({
    backend: 'wasm',
    urlAllow: ['127.0.0.0/8'],
    urlTimeoutMs: 1_500,
    maxBytes: MAX_BYTES,
  });
});

afterAll(() => {
  for (const s of [target, front]) {
    s.server.closeAllConnections();
    s.server.close();
  }
});

describe('URL jobs and private addresses', () => {
  it('refuses 127.0.0.1 without connecting to it', async () => {
    expect(await codeOf(engine, `${target.base}/face.jpg`)).toBe('URL_FORBIDDEN');
    expect(target.hits).toEqual([]);
  });

  it('refuses a name that resolves to loopback (localhost), checked on the resolved address', async () => {
    expect(await codeOf(engine, `${target.base.replace('127.0.0.1', 'localhost')}/face.jpg`)).toBe(
      'URL_FORBIDDEN',
    );
    expect(target.hits).toEqual([]);
  });

  it('refuses an allowed host that redirects to a private one, at the redirect', async () => {
    expect(await codeOf(engine, `${front.base}/to-private`)).toBe('URL_FORBIDDEN');
    expect(front.hits).toContain('/to-private');
    expect(target.hits).toEqual([]);
  });

  it('fetches from an allowed host, and from loopback when a CIDR range allows it', async () => {
    expect(
      (await engine.process({ id: 'u', url: `${front.base}/face.jpg` } as Job)).status,
    ).toMatchObject({ status: 'ok', faces: 1 });
    expect(
      (await allowedEngine.process({ id: 'u', url: `${target.base}/face.jpg` } as Job)).status,
    ).toMatchObject({ status: 'ok', faces: 1 });
  });

  it.each([
    'http://10.1.2.3/x.jpg',
    'http://172.20.0.1/x.jpg',
    'http://192.168.1.1/x.jpg',
    'http://169.254.169.254/latest/meta-data/',
    'http://100.64.0.1/x.jpg',
    'http://0.0.0.0/x.jpg',
    'http://[::1]/x.jpg',
    'http://[fd00::1]/x.jpg',
    'http://[::ffff:10.0.0.1]/x.jpg',
  ])('refuses the address literal %s before any connection', (url) => {
    // The policy alone: no packet is ever sent to these addresses, even if this test failed.
    const policy = new UrlPolicy([], 1_000);
    expect(() => policy.check(new URL(url))).toThrow(FaceFleetError);
    expect(() => policy.check(new URL(url))).toThrow(/URL jobs may not reach it/);
  });

  it('lets a CIDR range in FACEFLEET_URL_ALLOW exempt an address literal', () => {
    expect(() =>
      new UrlPolicy(['10.0.0.0/8'], 1_000).check(new URL('http://10.1.2.3/x.jpg')),
    ).not.toThrow();
    expect(() =>
      new UrlPolicy(['10.0.0.0/8'], 1_000).check(new URL('http://192.168.1.1/x.jpg')),
    ).toThrow(FaceFleetError);
  });
});

describe('data jobs over the byte limit', () => {
  it('are refused from the length of the base64 text, before it is decoded', async () => {
    const data = Buffer.alloc(MAX_BYTES + 1024 * 1024, 1).toString('base64');

    expect((await engine.process({ id: 'd', data } as Job)).status.error?.code).toBe(
      'DATA_TOO_LARGE',
    );
  });
});

describe('URL jobs and hostile servers', () => {
  it('gives up on a server that never finishes, at the timeout', async () => {
    const started = Date.now();

    expect(await codeOf(allowedEngine, `${target.base}/slow`)).toBe('URL_TIMEOUT');
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('refuses a 2 GB answer from its declared length, and a chunked one at the byte limit', async () => {
    expect(await codeOf(allowedEngine, `${target.base}/huge-declared`)).toBe('URL_TOO_LARGE');
    expect(await codeOf(allowedEngine, `${target.base}/huge-chunked`)).toBe('URL_TOO_LARGE');
    // Cut off near the limit, not read to the end (socket buffers let a few MB more through).
    expect(target.sent.bytes).toBeLessThan(MAX_BYTES + 32 * 1024 * 1024);
  });

  it('stops after a few redirects', async () => {
    expect(await codeOf(allowedEngine, `${target.base}/loop`)).toBe('URL_TOO_MANY_REDIRECTS');
  });

  it('refuses an answer that is not an image before decoding it', async () => {
    const result = await allowedEngine.process({ id: 'u', url: `${target.base}/page.html` } as Job);

    expect(result.status.error).toMatchObject({
      code: 'URL_NOT_IMAGE',
      message: expect.stringContaining('text/html'),
    });
  });
});
