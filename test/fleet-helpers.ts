import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { expect } from 'vitest';
import {
  FaceRecordSchema,
  ImageStatusSchema,
  type FaceRecord,
  type ImageStatus,
} from '@facefleet/protocol';
import { CLI, data, REPO } from './helpers.js';

export const REDIS_URL = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';

/** A queue prefix no other test uses: each test gets its own fleet in the shared Redis. */
export function freshPrefix(): string {
  return `fftest-${randomBytes(4).toString('hex')}`;
}

export interface Running {
  readonly child: ChildProcess;
  readonly log: () => string;
  readonly exited: Promise<number | null>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `facefleet <args>` as its own process, with the fleet's environment. */
export function start(args: string[], env: Record<string, string>, input?: string): Running {
  const child = spawn(process.execPath, [CLI, ...args], {
    cwd: REPO,
    env: { ...process.env, REDIS_URL, ...env },
    stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (input !== undefined) child.stdin?.end(input);
  let log = '';
  child.stdout?.on('data', (chunk: Buffer) => (log += chunk));
  child.stderr?.on('data', (chunk: Buffer) => (log += chunk));
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => resolve(code)),
  );
  // 'exit', not 'close': a grandchild still holding the pipes must not keep a stop waiting.
  const ended = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return {
    child,
    log: () => log,
    exited,
    stop: (signal = 'SIGTERM') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return ended;
    },
  };
}

/** Runs `facefleet <args>` to the end. */
export async function run(
  args: string[],
  env: Record<string, string>,
  input?: string,
): Promise<{ code: number | null; log: string }> {
  const running = start(args, env, input);
  const code = await running.exited;
  return { code, log: running.log() };
}

/** Polls `check` until it holds; usable in hooks as well as tests (unlike expect.poll). */
export async function until(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeout = 60_000,
  interval = 100,
): Promise<void> {
  const deadline = Date.now() + timeout;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

export async function waitForLog(
  running: Running,
  pattern: RegExp,
  timeout = 60_000,
): Promise<void> {
  await until(
    () => pattern.test(running.log()),
    `${pattern} in the log of ${running.child.spawnargs.slice(2, 4).join(' ')}:\n${running.log()}`,
    timeout,
  );
}

export function readStatuses(out: string): ImageStatus[] {
  const path = join(out, '_status.jsonl');
  if (!existsSync(path)) return [];
  return lines(path).map((l) => ImageStatusSchema.parse(JSON.parse(l)));
}

export function readRecords(path: string): FaceRecord[] {
  return lines(path).map((l) => FaceRecordSchema.parse(JSON.parse(l)));
}

function lines(path: string): string[] {
  return readFileSync(path, 'utf8').split('\n').filter(Boolean);
}

export async function waitForStatuses(
  out: string,
  count: number,
  timeout = 120_000,
): Promise<ImageStatus[]> {
  await expect
    .poll(() => readStatuses(out).length, { timeout, interval: 200 })
    .toBeGreaterThanOrEqual(count);
  return readStatuses(out);
}

/** Removes every key of a test's fleet from Redis. */
export async function obliterate(prefix: string): Promise<void> {
  for (const name of ['faces', 'faces-live', 'faces-results']) {
    const queue = new Queue(name, { connection: { url: REDIS_URL }, prefix });
    await queue.obliterate({ force: true });
    await queue.close();
  }
}

const GOOD = [
  'ageitgey_face_recognition/tests/test_images/obama.jpg',
  'ageitgey_face_recognition/tests/test_images/obama2.jpg',
  'ageitgey_face_recognition/tests/test_images/obama3.jpg',
  'ageitgey_face_recognition/tests/test_images/biden.jpg',
  'ageitgey_face_recognition/tests/test_images/32bit.png',
  'ageitgey_face_recognition/tests/test_images/obama_partial_face.jpg',
  'ageitgey_face_recognition/tests/test_images/obama_partial_face2.jpg',
  'ageitgey_face_recognition/examples/two_people.jpg',
  'ageitgey_face_recognition/examples/obama-240p.jpg',
  'ageitgey_face_recognition/examples/obama-480p.jpg',
  'ageitgey_face_recognition/examples/obama_small.jpg',
  'ageitgey_face_recognition/examples/alex-lacamoire.png',
  'ageitgey_face_recognition/examples/lin-manuel-miranda.png',
  'ageitgey_face_recognition/examples/knn_examples/test/alex_lacamoire1.jpg',
  'ageitgey_face_recognition/examples/knn_examples/test/johnsnow_test1.jpg',
  'ageitgey_face_recognition/examples/knn_examples/test/kit_with_rose.jpg',
  'ageitgey_face_recognition/examples/knn_examples/test/obama1.jpg',
  'ageitgey_face_recognition/examples/knn_examples/test/obama_and_biden.jpg',
  'ageitgey_face_recognition/examples/knn_examples/train/biden/biden2.jpg',
  'ageitgey_face_recognition/examples/knn_examples/train/kit_harington/john1.jpeg',
  'ageitgey_face_recognition/examples/knn_examples/train/kit_harington/john2.jpeg',
  'ageitgey_face_recognition/examples/knn_examples/train/rose_leslie/img1.jpg',
  'ageitgey_face_recognition/examples/knn_examples/train/rose_leslie/img2.jpg',
  'justadudewhohacks_face-api.js/test/images/faces.jpg',
  'justadudewhohacks_face-api.js/test/images/white.png',
  'justadudewhohacks_face-api.js/test/images/angry_cropped.jpg',
  'justadudewhohacks_face-api.js/test/images/surprised_cropped.jpg',
  'justadudewhohacks_face-api.js/test/images/face_rectangular.png',
  'justadudewhohacks_face-api.js/examples/images/angry.jpg',
  'justadudewhohacks_face-api.js/examples/images/happy.jpg',
  'justadudewhohacks_face-api.js/examples/images/sad.jpg',
  'justadudewhohacks_face-api.js/examples/images/neutral.jpg',
  'justadudewhohacks_face-api.js/examples/images/bbt1.jpg',
  'justadudewhohacks_face-api.js/examples/images/bbt2.jpg',
  'derived/obama_exif3.jpg',
  'derived/obama_exif6.jpg',
  'derived/obama_exif8.jpg',
  'derived/obama_cmyk.jpg',
  'derived/obama_gray.jpg',
  'derived/obama.webp',
  'derived/obama_40pct_16bit.png',
  'derived/obama_40pct_anim.gif',
  'derived/obama_truncated_50pct.jpg',
  'lovell_sharp/test/fixtures/Landscape_1.jpg',
  'lovell_sharp/test/fixtures/Landscape_6.jpg',
  'lovell_sharp/test/fixtures/Portrait_8.jpg',
  'lovell_sharp/test/fixtures/2x2_fdcce6.png',
  'lovell_sharp/test/fixtures/full-transparent.png',
  'lovell_sharp/test/fixtures/animated-loop-3.gif',
  'lovell_sharp/test/fixtures/concert.jpg',
  'lovell_sharp/test/fixtures/random.jpg',
  'vladmandic_face-api/demo/sample1.jpg',
  'vladmandic_face-api/demo/sample2.jpg',
  'vladmandic_face-api/demo/sample3.jpg',
  'vladmandic_face-api/demo/sample4.jpg',
  'vladmandic_face-api/demo/sample5.jpg',
  'vladmandic_face-api/demo/sample6.jpg',
];

export const BROKEN: Record<string, string> = {
  'derived/empty.jpg': 'IMAGE_EMPTY',
  'derived/not_an_image.jpg': 'IMAGE_UNSUPPORTED',
  'lovell_sharp/test/fixtures/corrupt-header.jpg': 'IMAGE_CORRUPT',
};

/**
 * 60 real images (57 that decode, some without faces; 3 broken) as a folder of links named
 * `broadcast-000001.jpg`…: one broadcast, so every record goes to `broadcast.json`.
 */
export function corpus60(dir: string): { dir: string; brokenIds: Map<string, string> } {
  mkdirSync(dir, { recursive: true });
  const brokenIds = new Map<string, string>();
  [...GOOD, ...Object.keys(BROKEN)].forEach((source, i) => {
    const id = `broadcast-${String(i + 1).padStart(6, '0')}`;
    const ext = source.slice(source.lastIndexOf('.'));
    symlinkSync(data(source), join(dir, `${id}${ext}`));
    if (BROKEN[source]) brokenIds.set(id, BROKEN[source]);
  });
  expect(GOOD.length + Object.keys(BROKEN).length).toBe(60);
  return { dir, brokenIds };
}

/** Face records grouped by image id, each group in a stable order. */
export function byId(records: FaceRecord[]): Map<string, FaceRecord[]> {
  const map = new Map<string, FaceRecord[]>();
  for (const r of records) map.set(String(r.id), [...(map.get(String(r.id)) ?? []), r]);
  for (const list of map.values())
    list.sort((a, b) => a.bbox[0] - b.bbox[0] || a.bbox[3] - b.bbox[3]);
  return map;
}

/** A TCP port on 127.0.0.1 that nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
