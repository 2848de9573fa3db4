import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, FaceEngine } from '@facefleet/engine';
import { data, distance } from './helpers.js';

const SAME_PERSON = 0.6;

let engine: FaceEngine;

// Every engine test runs on both inference paths: face-api's nets on tfjs, and onnxruntime.
describe.each(['wasm', 'onnx'] as const)('on the %s backend', (backend) => {
  beforeAll(async () => {
    engine = await FaceEngine.create({ backend });
  });
  afterAll(() => engine.close());

  async function describeChips(files: Array<{ path: string; label: string }>) {
    const out: Array<{ label: string; descriptor: Float32Array }> = [];
    for (const { path, label } of files) {
      const faces = await engine.analyze(await decodeImage(await readFile(path), 1e8), {
        aligned: true,
      });
      expect(faces).toHaveLength(1);
      out.push({ label, descriptor: faces[0]!.descriptor });
    }
    return out;
  }

  /** Share of all pairs that the 0.6 threshold puts right: same label under it, different over it. */
  function pairAccuracy(items: Array<{ label: string; descriptor: Float32Array }>): {
    right: number;
    pairs: number;
  } {
    let right = 0;
    let pairs = 0;
    for (let i = 0; i < items.length; i += 1) {
      for (let j = i + 1; j < items.length; j += 1) {
        const a = items[i]!;
        const b = items[j]!;
        const same = distance(a.descriptor, b.descriptor) < SAME_PERSON;
        if (same === (a.label === b.label)) right += 1;
        pairs += 1;
      }
    }
    return { right, pairs };
  }

  describe('aligned mode on labelled identity chips', () => {
    it('classifies >= 99% of all pairs of face-api.js examples (8 people x 5) right at 0.6', async () => {
      const root = data('justadudewhohacks_face-api.js/examples/images');
      const people = [
        'amy',
        'bernadette',
        'howard',
        'leonard',
        'penny',
        'raj',
        'sheldon',
        'stuart',
      ];
      const files = people.flatMap((p) =>
        [1, 2, 3, 4, 5].map((i) => ({ path: join(root, p, `${p}${i}.png`), label: p })),
      );

      const { right, pairs } = pairAccuracy(await describeChips(files));

      expect(pairs).toBe(780);
      expect(right / pairs).toBeGreaterThanOrEqual(0.99);
    });

    it('classifies >= 93% of all pairs of face-recognition.js chips (5 people, 100 chips) right at 0.6', async () => {
      const root = data('justadudewhohacks_face-recognition.js/examples/data/faces');
      const files = readdirSync(root)
        .filter((f) => f.endsWith('.png'))
        .map((f) => ({ path: join(root, f), label: f.split('_')[0]! }));

      const items = await describeChips(files);
      const { right, pairs } = pairAccuracy(items);

      expect(files).toHaveLength(100);
      expect(right / pairs).toBeGreaterThanOrEqual(0.93);
      // Byte-identical chips must give identical descriptors.
      const byName = new Map(files.map((f, i) => [f.path.split('/').pop(), items[i]!.descriptor]));
      expect(distance(byName.get('howard_2.png')!, byName.get('howard_16.png')!)).toBe(0);
    });
  });
});
