import { readdirSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { extname, join, relative } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, FaceEngine, type DetectedFace } from '@facefleet/engine';
import { distance, TESTDATA } from './helpers.js';

/** Every image file under ../shared/testdata, in a fixed order. */
function imagesUnder(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...imagesUnder(path));
    else if (/^\.(jpe?g|png|webp|gif|tiff?|avif)$/i.test(extname(entry.name))) found.push(path);
  }
  return found.sort();
}

let wasm: FaceEngine;
let onnx: FaceEngine;

beforeAll(async () => {
  [wasm, onnx] = await Promise.all([
    FaceEngine.create({ backend: 'wasm' }),
    FaceEngine.create({ backend: 'onnx' }),
  ]);
});
afterAll(() => Promise.all([wasm.close(), onnx.close()]));

/** Largest absolute difference over the pairs of two equally long arrays. */
function maxGap(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let gap = 0;
  for (let i = 0; i < a.length; i += 1) gap = Math.max(gap, Math.abs(a[i]! - b[i]!));
  return gap;
}

describe('the onnx backend against the tfjs (wasm) backend on every image in testdata', () => {
  it('finds the same faces: boxes and landmarks within 1 px, descriptors within 0.01', async () => {
    const images = imagesUnder(TESTDATA);
    let compared = 0;
    let faces = 0;
    const worst = { box: 0, landmark: 0, descriptor: 0 };
    const disagreements: string[] = [];

    for (const path of images) {
      const name = relative(TESTDATA, path);
      // Images the decoder refuses (giant, empty, not images) are the decoder's tests, not these.
      const image = await readFile(path)
        .then((bytes) => decodeImage(bytes, 100_000_000))
        .catch(() => undefined);
      if (!image) continue;
      compared += 1;
      const a: DetectedFace[] = await wasm.analyze(image);
      const b: DetectedFace[] = await onnx.analyze(image);
      if (a.length !== b.length) {
        disagreements.push(`${name}: ${a.length} faces on wasm, ${b.length} on onnx`);
        continue;
      }
      a.forEach((face, i) => {
        const other = b[i]!;
        worst.box = Math.max(worst.box, maxGap(face.bbox, other.bbox));
        worst.landmark = Math.max(worst.landmark, maxGap(face.landmarks, other.landmarks));
        worst.descriptor = Math.max(worst.descriptor, distance(face.descriptor, other.descriptor));
      });
      faces += a.length;
    }

    console.log(
      `onnx vs wasm: ${compared} images, ${faces} faces; worst box ${worst.box} px, landmark ${worst.landmark.toExponential(2)} px, descriptor ${worst.descriptor.toExponential(2)}`,
    );
    expect(disagreements).toEqual([]);
    expect(compared).toBeGreaterThan(200);
    expect(faces).toBeGreaterThan(200);
    expect(worst.box).toBeLessThanOrEqual(1);
    expect(worst.landmark).toBeLessThanOrEqual(1);
    expect(worst.descriptor).toBeLessThan(0.01);
  }, 600_000);

  it('describes whole aligned chips alike', async () => {
    const chip = join(TESTDATA, 'justadudewhohacks_face-api.js/test/images/face1.png');
    const image = await decodeImage(await readFile(chip), 100_000_000);
    const [a] = await wasm.analyze(image, { aligned: true });
    const [b] = await onnx.analyze(image, { aligned: true });

    expect(distance(a!.descriptor, b!.descriptor)).toBeLessThan(0.01);
    expect(a!.bbox).toEqual(b!.bbox);
  });
});
