import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, FaceEngine, type DetectedFace } from '@facefleet/engine';
import { data, distance, iou, readJson } from './helpers.js';

let engine: FaceEngine;

async function facesOf(
  relative: string,
  options: { minConfidence?: number; aligned?: boolean } = {},
): Promise<DetectedFace[]> {
  const image = await decodeImage(await readFile(data(relative)), 100_000_000);
  return engine.analyze(image, options);
}

/** face-api.js's tests sort boxes by the distance of their top-left corner from the origin. */
function sortedLikeFaceApi(faces: DetectedFace[]): DetectedFace[] {
  const key = (f: DetectedFace) => Math.hypot(f.bbox[3], f.bbox[0]);
  return [...faces].sort((a, b) => key(a) - key(b));
}

// Every engine test runs on both inference paths: face-api's nets on tfjs, and onnxruntime.
describe.each(['wasm', 'onnx'] as const)('on the %s backend', (backend) => {
  beforeAll(async () => {
    engine = await FaceEngine.create({ backend });
  });
  afterAll(() => engine.close());

  describe('when given face-api.js test/images/faces.jpg (gold for our exact models)', () => {
    const FACES = 'justadudewhohacks_face-api.js/test/images/faces.jpg';
    const gold = readJson<{
      images: Record<
        string,
        { boxes: { values: Array<{ x: number; y: number; width: number; height: number }> } }
      >;
    }>('EXPECTED.json').images[FACES]!.boxes.values;

    it('finds exactly 6 faces at minimum confidence 0.5, each box within 5 px of the gold box', async () => {
      const faces = sortedLikeFaceApi(await facesOf(FACES, { minConfidence: 0.5 }));

      expect(faces).toHaveLength(6);
      faces.forEach((face, i) => {
        const [top, right, bottom, left] = face.bbox;
        const want = gold[i]!;
        expect(Math.hypot(left - want.x, top - want.y)).toBeLessThanOrEqual(5);
        expect(
          Math.hypot(right - left - want.width, bottom - top - want.height),
        ).toBeLessThanOrEqual(5);
      });
    });

    it('describes each face within Euclidean 0.2 of face-api.js reference descriptors', async () => {
      const faces = sortedLikeFaceApi(await facesOf(FACES));
      const reference = readJson<number[][]>(
        'justadudewhohacks_face-api.js/test/data/facesFaceDescriptors.json',
      );

      expect(faces).toHaveLength(reference.length);
      faces.forEach((face, i) =>
        expect(distance(face.descriptor, reference[i]!)).toBeLessThan(0.2),
      );
    });

    it('finds 4 faces at minimum confidence 0.7', async () => {
      expect(await facesOf(FACES, { minConfidence: 0.7 })).toHaveLength(4);
    });
  });

  describe('when given single aligned chips (face-api.js faceRecognitionNet tests)', () => {
    it.each([
      ['face1.png', 'faceDescriptor1.json'],
      ['face2.png', 'faceDescriptor2.json'],
      ['face_rectangular.png', 'faceDescriptorRect.json'],
    ])('aligned mode describes %s within 0.1 of %s', async (image, reference) => {
      const faces = await facesOf(`justadudewhohacks_face-api.js/test/images/${image}`, {
        aligned: true,
      });
      const want = readJson<number[]>(`justadudewhohacks_face-api.js/test/data/${reference}`);

      expect(faces).toHaveLength(1);
      expect(distance(faces[0]!.descriptor, want)).toBeLessThan(0.1);
    });
  });

  describe("when given face_recognition's test images (dlib's answers)", () => {
    const T = 'ageitgey_face_recognition/tests/test_images';
    let obama: DetectedFace;

    beforeAll(async () => {
      const faces = await facesOf(`${T}/obama.jpg`);
      expect(faces).toHaveLength(1);
      obama = faces[0]!;
    });

    it("finds Obama's face overlapping dlib's HOG box (142, 617, 409, 349) with IoU >= 0.5", () => {
      expect(iou(obama.bbox, [142, 617, 409, 349])).toBeGreaterThanOrEqual(0.5);
    });

    it.each(['obama2.jpg', 'obama3.jpg'])(
      'places %s under 0.6 from obama.jpg (same person)',
      async (other) => {
        const faces = await facesOf(`${T}/${other}`);

        expect(faces).toHaveLength(1);
        expect(distance(faces[0]!.descriptor, obama.descriptor)).toBeLessThan(0.6);
      },
    );

    it('places biden.jpg over 0.6 from obama.jpg (different person)', async () => {
      const faces = await facesOf(`${T}/biden.jpg`);

      expect(faces).toHaveLength(1);
      expect(distance(faces[0]!.descriptor, obama.descriptor)).toBeGreaterThan(0.6);
    });

    it('finds 2 faces in two_people.jpg, Obama on the left and Biden on the right', async () => {
      const faces = await facesOf('ageitgey_face_recognition/examples/two_people.jpg');
      const [left, right] = [...faces].sort((a, b) => a.bbox[3] - b.bbox[3]);

      expect(faces).toHaveLength(2);
      expect(distance(left!.descriptor, obama.descriptor)).toBeLessThan(0.6);
      expect(distance(right!.descriptor, obama.descriptor)).toBeGreaterThan(0.6);
    });

    it('keeps a face that touches the left edge inside the image (obama_partial_face.jpg)', async () => {
      const faces = await facesOf(`${T}/obama_partial_face.jpg`);

      expect(faces).toHaveLength(1);
      expect(faces[0]!.bbox[3]).toBe(0);
      expect(iou(faces[0]!.bbox, [142, 191, 365, 0])).toBeGreaterThanOrEqual(0.5);
    });

    it('finds no face in a blank image (white.png)', async () => {
      expect(await facesOf('justadudewhohacks_face-api.js/test/images/white.png')).toEqual([]);
    });
  });
});
