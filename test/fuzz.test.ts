import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FaceEngine } from '@facefleet/engine';
import { FaceProducer } from '@facefleet/fleet';
import { ERROR_CODES, jobKey } from '@facefleet/protocol';
import { data } from './helpers.js';
import {
  freshPrefix,
  obliterate,
  start,
  waitForLog,
  waitForStatuses,
  type Running,
} from './fleet-helpers.js';

const SEED = 20261203;
const COUNT = 1000;
const SOURCES = [
  'ageitgey_face_recognition/examples/obama_small.jpg',
  'derived/obama_progressive.jpg',
  'justadudewhohacks_face-api.js/test/images/face1.png',
  'derived/obama_40pct_16bit.png',
  'derived/obama.webp',
  'derived/obama_40pct_anim.gif',
  'lovell_sharp/test/fixtures/2x2_fdcce6.png',
  'lovell_sharp/test/fixtures/Landscape_6.jpg',
];
const HEADERS = [
  Buffer.from('89504e470d0a1a0a', 'hex'),
  Buffer.from('ffd8ffe0', 'hex'),
  Buffer.from('RIFF\0\0\0\0WEBP'),
  Buffer.from('GIF89a'),
  Buffer.from('II*\0'),
];

/** A small, seeded generator (mulberry32): the same mutations on every run and machine. */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One mutant: bit flips, a cut, a foreign header, a zeroed or repeated stretch, or several. */
function mutate(original: Buffer, rand: () => number): Buffer {
  let bytes = Buffer.from(original);
  const at = () => Math.floor(rand() * bytes.length);
  for (let steps = 1 + Math.floor(rand() * 3); steps > 0; steps -= 1) {
    const kind = Math.floor(rand() * 5);
    if (kind === 0)
      for (let n = 1 + Math.floor(rand() * 32); n > 0; n -= 1)
        bytes[at()]! ^= 1 << Math.floor(rand() * 8);
    else if (kind === 1) bytes = bytes.subarray(0, at());
    else if (kind === 2) HEADERS[Math.floor(rand() * HEADERS.length)]!.copy(bytes, 0);
    else if (kind === 3) bytes.fill(0, at(), at());
    else {
      const from = at();
      bytes = Buffer.concat([
        bytes.subarray(0, from),
        bytes.subarray(from, from + 4096),
        bytes.subarray(from),
      ]);
    }
  }
  return bytes;
}

let dir: string;
const running: Running[] = [];
const prefixes: string[] = [];

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'facefleet-fuzz-'));
  const rand = random(SEED);
  const originals = SOURCES.map((s) => ({
    bytes: readFileSync(data(s)),
    ext: s.slice(s.lastIndexOf('.')),
  }));
  for (let i = 0; i < COUNT; i += 1) {
    const source = originals[i % originals.length]!;
    writeFileSync(
      join(dir, `fuzz-${String(i).padStart(4, '0')}${source.ext}`),
      mutate(source.bytes, rand),
    );
  }
});

afterAll(async () => {
  await Promise.all(running.map((r) => r.stop('SIGKILL')));
  for (const prefix of prefixes) await obliterate(prefix);
  rmSync(dir, { recursive: true, force: true });
});

describe(`${COUNT} mutated images (seed ${SEED})`, () => {
  it('through the engine: every input ends with a status and a registered code, and the process lives', async () => {
    // Aligned mode for most (the decoder is what is under attack), detection for every fifth.
    const engine = await FaceEngine.create({ backend: 'onnx' });
    const tensors = engine.tensorCount();
    const outcomes = new Map<string, number>();
    for (const [i, name] of readdirSync(dir).sort().entries()) {
      const result = await engine.process({
        id: name,
        file: join(dir, name),
        options: { aligned: i % 5 !== 0 },
      });
      const outcome = result.status.error?.code ?? result.status.status;
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }

    const total = [...outcomes.values()].reduce((a, b) => a + b, 0);
    expect(total).toBe(COUNT);
    for (const outcome of outcomes.keys())
      expect(['ok', 'no_faces', ...ERROR_CODES]).toContain(outcome);
    expect(outcomes.get('INTERNAL') ?? 0).toBe(0);
    // Mutants are a mix: some still decode, some are refused for what they are.
    expect((outcomes.get('ok') ?? 0) + (outcomes.get('no_faces') ?? 0)).toBeGreaterThan(100);
    expect(outcomes.get('IMAGE_CORRUPT') ?? 0).toBeGreaterThan(100);
    expect(engine.tensorCount()).toBe(tensors);
  });

  it('through a worker: no process dies and every input gets exactly one status line', async () => {
    const prefix = freshPrefix();
    prefixes.push(prefix);
    const env = { FACEFLEET_PREFIX: prefix };
    const out = join(dir, '..', `${prefix}-out`);
    running.push(start(['sink', '--out', out], env));
    const worker = start(['worker', '--concurrency', '2'], env);
    running.push(worker);
    await waitForLog(worker, /worker started/);

    const producer = await FaceProducer.connect({ prefix });
    try {
      const jobs = readdirSync(dir)
        .sort()
        .map((name, i) => ({ id: name, file: join(dir, name), options: { aligned: i % 5 !== 0 } }));
      expect((await producer.enqueue(jobs)).added).toBe(COUNT);
    } finally {
      await producer.close();
    }
    const statuses = await waitForStatuses(out, COUNT, 600_000);

    expect(statuses).toHaveLength(COUNT);
    expect(new Set(statuses.map((s) => s.key))).toEqual(
      new Set(readdirSync(dir).map((f) => jobKey({ file: join(dir, f) }))),
    );
    expect(
      statuses.filter((s) => s.error?.code === 'INTERNAL' || s.error?.code === 'WORKER_CRASHED'),
    ).toEqual([]);
    expect(worker.child.exitCode).toBeNull();
    expect(worker.log()).not.toMatch(/inference process died/);
    rmSync(out, { recursive: true, force: true });
  }, 900_000);
});
