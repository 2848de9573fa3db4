import { createHash } from 'node:crypto';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  decodeImage,
  exportOnnx,
  fusedTfjsNets,
  installModels,
  loadRuntime,
  MAX_BATCH,
  ModelError,
  type Networks,
  OnnxNets,
  parseEngineConfig,
  pipelineStages,
  readManifest,
  readNetworks,
  type Runtime,
} from '@facefleet/engine';
import { data, distance, REPO } from './helpers.js';

/*
 * The two ports of face-api's networks against face-api itself: the ONNX export on
 * onnxruntime-node, and the fused tfjs networks the wasm backend runs (tfjs-nets.ts: batch norms
 * and scale layers folded into the convolutions, bias and activation fused into them). The tfjs
 * port runs face-api's own landmark net, so for it the landmark case checks only the way inputs
 * reach that net; its detector and descriptor cases hold it to the same bounds as ONNX (measured:
 * scores 1.4e-6, boxes 2.7e-6, descriptors 1.4e-6).
 *
 * The ONNX export of face-api's three networks against face-api itself: the same input tensors,
 * built by face-api's own NetInput from real photos, go through face-api's forward pass on tfjs
 * (wasm) and through the ONNX model on onnxruntime-node, and the outputs are compared.
 *
 * Why the bounds hold and are tight enough: both sides run the same float32 arithmetic, but in a
 * different order (ORT's im2col/GEMM kernels, folded batch norms and scale layers, fused
 * bias/activation) and with different exp/sigmoid approximations, so results differ by rounding
 * only: a few float32 ulps per layer, growing over ~30 layers to about 1e-6..1e-5 relative. A
 * genuine export mistake (wrong padding side, transposed filter, a missing layer, anchors in the
 * wrong order) moves outputs by 1e-2 or more. Measured on these three photos (9 faces), at
 * most: scores 7.8e-7, boxes 2.2e-6, landmarks 1.3e-5 px, descriptors 1.1e-6. The bounds below
 * sit two orders of magnitude or more above that, leaving room for other CPUs' kernels (ORT picks
 * AVX2 or AVX-512 GEMMs at run time), and far below what a mistake gives:
 * - scores: 1e-4 absolute (NMS thresholds 0.5 confidence / 0.5 IoU are insensitive to that);
 * - boxes: 1e-3 of the 512-pixel input (0.5 px);
 * - landmarks: 1 px at 112 x 112 (the 0..1 output times 112);
 * - descriptors: Euclidean 0.01, against 0.6 between different people.
 */

const MODELS = join(REPO, 'models');
const IMAGES = [
  'justadudewhohacks_face-api.js/test/images/faces.jpg',
  'ageitgey_face_recognition/examples/two_people.jpg',
  'ageitgey_face_recognition/tests/test_images/obama.jpg',
];

type FaceApi = Runtime['faceapi'];
type Tensor = ReturnType<FaceApi['tf']['tensor3d']>;

let runtime: Runtime;
let onnx: OnnxNets;
let fused: ReturnType<typeof fusedTfjsNets>;
/** The port under test, by name. */
const port = (name: 'onnx' | 'fused tfjs') => (name === 'onnx' ? onnx : fused);

beforeAll(async () => {
  runtime = await loadRuntime('wasm');
  const { faceapi } = runtime;
  const names = ['ssdMobilenetv1', 'faceLandmark68Net', 'faceRecognitionNet'] as const;
  const networks = await readNetworks(MODELS, names);
  for (const name of names) {
    const files = networks.get(name)!;
    const weights = faceapi.tf.io.decodeWeights(
      files.shards,
      files.specs.flatMap((g) => g.weights) as never,
    );
    faceapi.nets[name].loadFromWeightMap(weights);
  }
  onnx = await OnnxNets.create({ modelsDir: MODELS, intraOpNumThreads: 1 });
  fused = fusedTfjsNets(faceapi, {
    ssdMobilenetv1: faceapi.nets.ssdMobilenetv1,
    faceLandmark68Net: faceapi.nets.faceLandmark68Net,
    faceRecognitionNet: faceapi.nets.faceRecognitionNet,
  });
});

afterAll(async () => {
  fused?.dispose();
  await onnx?.release();
});

async function imageTensor(relative: string): Promise<Tensor> {
  const image = await decodeImage(await readFile(data(relative)), 100_000_000);
  return runtime.faceapi.tf.tensor3d(image.data, [image.height, image.width, 3], 'int32');
}

/** face-api's batch tensor for `size` as float32 values, exactly what its nets receive. */
function batchOf(tensors: Tensor[], size: number, centre: boolean): Float32Array {
  const { faceapi } = runtime;
  const input = new faceapi.NetInput(tensors);
  return faceapi.tf.tidy(() =>
    faceapi.tf.cast(input.toBatchTensor(size, centre), 'float32').dataSync(),
  ) as Float32Array;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i += 1) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** Measured differences per port, printed once at the end for the record. */
const measured: Record<string, Record<string, number[]>> = {};
afterAll(() => {
  for (const [name, of] of Object.entries(measured)) {
    const worst = Object.entries(of).map(([k, v]) => `${k} ${Math.max(...v).toExponential(2)}`);
    process.stderr.write(`${name} against face-api, worst differences: ${worst.join(', ')}\n`);
  }
});

const CASES = (['onnx', 'fused tfjs'] as const).flatMap((name) =>
  IMAGES.map((image) => [name, image] as const),
);

describe.each(CASES)('the %s port on %s agrees with face-api (tfjs wasm)', (name, relative) => {
  const nets = () => port(name);
  const record = (what: string, value: number) =>
    ((measured[name] ??= {})[what] ??= []).push(value);
  let image: Tensor;
  let crops: Tensor[] = [];

  beforeAll(async () => {
    image = await imageTensor(relative);
    const { faceapi } = runtime;
    const detections = await faceapi.nets.ssdMobilenetv1.locateFaces(image, { minConfidence: 0.5 });
    crops = (await faceapi.extractFaceTensors(image, detections)) as Tensor[];
  });

  afterAll(() => {
    image?.dispose();
    crops.forEach((c) => c.dispose());
  });

  it('detector: scores within 1e-4, boxes within 1e-3 of the input size', async () => {
    const { faceapi } = runtime;
    const input = batchOf([image], 512, false);
    const reference = faceapi.nets.ssdMobilenetv1.forwardInput(new faceapi.NetInput([image]));
    const refBoxes = reference.boxes[0]!.dataSync() as Float32Array;
    const refScores = reference.scores[0]!.dataSync() as Float32Array;
    reference.boxes.forEach((t) => t.dispose());
    reference.scores.forEach((t) => t.dispose());

    const { boxes, scores } = await nets().detect(input);
    expect(scores).toHaveLength(5118);
    expect(boxes).toHaveLength(5118 * 4);
    const scoreDiff = maxAbsDiff(scores, refScores);
    const boxDiff = maxAbsDiff(boxes, refBoxes);
    record('scores', scoreDiff);
    record('boxes', boxDiff);
    expect(scoreDiff).toBeLessThan(1e-4);
    expect(boxDiff).toBeLessThan(1e-3);
    // The comparison means something only if faces are there to be found.
    expect(Math.max(...scores)).toBeGreaterThan(0.9);
  });

  it('landmarks: every point within 1 px at 112 x 112, for the whole batch at once', async () => {
    const { faceapi } = runtime;
    expect(crops.length).toBeGreaterThan(0);
    const batch = batchOf(crops, 112, true);
    const refTensor = faceapi.nets.faceLandmark68Net.runNet(new faceapi.NetInput(crops));
    const reference = refTensor.dataSync() as Float32Array;
    refTensor.dispose();

    const landmarks = await nets().landmarks(batch, crops.length);
    expect(landmarks).toHaveLength(crops.length * 136);
    const px = maxAbsDiff(landmarks, reference) * 112;
    record('landmarksPx', px);
    expect(px).toBeLessThan(1);
  });

  it('descriptors: each within Euclidean 0.01, for the whole batch at once', async () => {
    const { faceapi } = runtime;
    const batch = batchOf(crops, 150, true);
    const refTensor = faceapi.nets.faceRecognitionNet.forwardInput(new faceapi.NetInput(crops));
    const reference = refTensor.dataSync() as Float32Array;
    refTensor.dispose();

    const descriptors = await nets().describe(batch, crops.length);
    expect(descriptors).toHaveLength(crops.length * 128);
    for (let i = 0; i < crops.length; i += 1) {
      const d = distance(
        descriptors.subarray(i * 128, (i + 1) * 128),
        reference.subarray(i * 128, (i + 1) * 128),
      );
      record('descriptor', d);
      expect(d).toBeLessThan(0.01);
    }
  });
});

describe.each(['onnx', 'fused tfjs'] as const)(
  'the pipeline on the %s port with more faces than one batch holds',
  (name) => {
    it(`runs the 10 or more faces of dlib's bald_guys.jpg in batches of at most MAX_BATCH, each face as it comes out alone`, async () => {
      const image = await decodeImage(
        await readFile(data('davisking_dlib/examples/faces/bald_guys.jpg')),
        100_000_000,
      );
      const runs: Record<'landmarks' | 'describe', number[]> = { landmarks: [], describe: [] };
      const inner = port(name);
      const counting: Networks = {
        detect: (input) => inner.detect(input),
        landmarks: (batch, n) => (runs.landmarks.push(n), inner.landmarks(batch, n)),
        describe: (batch, n) => (runs.describe.push(n), inner.describe(batch, n)),
      };
      const stages = pipelineStages(runtime.faceapi, counting, parseEngineConfig({})).open(image);
      const detections = await stages.detect(0.5);
      expect(detections.length).toBeGreaterThanOrEqual(10);
      expect(detections.length).toBeGreaterThan(MAX_BATCH);

      const landmarks = await stages.landmarks(detections);
      // The engine's chips: face-api's dlib-style alignment, in image pixels.
      const regions = landmarks.map((marks, i) =>
        marks
          .shiftBy(detections[i]!.box.x, detections[i]!.box.y)
          .align(null, { useDlibAlignment: true })
          .clipAtImageBorders(image.width, image.height),
      );
      const descriptors = await stages.describe(regions);
      // All faces in ceil(n / MAX_BATCH) runs of each net, none larger than MAX_BATCH.
      const runsOf = Math.ceil(detections.length / MAX_BATCH);
      for (const sizes of [runs.landmarks, runs.describe]) {
        expect(sizes).toHaveLength(runsOf);
        expect(Math.max(...sizes)).toBe(MAX_BATCH);
        expect(sizes.reduce((a, b) => a + b, 0)).toBe(detections.length);
      }

      // Each face run alone gives what it got in its batch: same points, same descriptor.
      for (const [i, detection] of detections.entries()) {
        const [alone] = await stages.landmarks([detection]);
        const points = alone!.positions.flatMap((p) => [p.x, p.y]);
        const batched = landmarks[i]!.positions.flatMap((p) => [p.x, p.y]);
        expect(maxAbsDiff(Float32Array.from(points), Float32Array.from(batched))).toBeLessThan(
          1e-4,
        );
        const [descriptor] = await stages.describe([regions[i]!]);
        expect(distance(descriptor!, descriptors[i]!)).toBeLessThan(1e-4);
      }
      stages.close();
    });
  },
);

describe('OnnxNets', () => {
  it('refuses input of the wrong size before ORT sees it, and answers an empty batch', async () => {
    await expect(onnx.detect(new Float32Array(10))).rejects.toThrow(/expected 786432/);
    await expect(onnx.landmarks(new Float32Array(112 * 112 * 3), 2)).rejects.toThrow(RangeError);
    await expect(onnx.describe(new Float32Array(0), 0)).resolves.toHaveLength(0);
    expect(onnx.version).toBe('1.30.0');
  });
});

describe('the ONNX models on disk', () => {
  it('are what the exporter writes, byte for byte, as recorded in the manifest', async () => {
    const manifest = await readManifest(MODELS);
    expect(manifest.onnx.map((e) => e.network).sort()).toEqual([
      'faceLandmark68Net',
      'faceRecognitionNet',
      'ssdMobilenetv1',
    ]);
    for (const entry of manifest.onnx) {
      const first = await exportOnnx(MODELS, entry.network);
      const second = await exportOnnx(MODELS, entry.network);
      const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
      expect(sha(first)).toBe(entry.sha256);
      expect(sha(second)).toBe(entry.sha256);
      expect(first.length).toBe(entry.bytes);
      expect(sha(readFileSync(join(MODELS, entry.file)))).toBe(entry.sha256);
    }
  });

  it('are generated by models install where missing, then kept', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'facefleet-onnx-'));
    try {
      copyFileSync(join(MODELS, 'manifest.json'), join(dir, 'manifest.json'));
      const first = await installModels(dir);
      expect(first.generated.sort()).toEqual([
        'face_landmark_68.onnx',
        'face_recognition.onnx',
        'ssd_mobilenetv1.onnx',
      ]);
      const second = await installModels(dir);
      expect(second.generated).toEqual([]);
      expect(second.kept).toContain('ssd_mobilenetv1.onnx');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('stop start-up when one is corrupt, with a message naming npx facefleet models install', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'facefleet-onnx-'));
    try {
      const manifest = await readManifest(MODELS);
      copyFileSync(join(MODELS, 'manifest.json'), join(dir, 'manifest.json'));
      for (const entry of manifest.onnx)
        copyFileSync(join(MODELS, entry.file), join(dir, entry.file));
      const target = join(dir, 'face_landmark_68.onnx');
      const bytes = readFileSync(target);
      const middle = bytes.length >> 1;
      bytes[middle] = bytes[middle]! ^ 0xff;
      writeFileSync(target, bytes);

      const start = OnnxNets.create({ modelsDir: dir });
      await expect(start).rejects.toBeInstanceOf(ModelError);
      await expect(start).rejects.toThrow(
        /face_landmark_68\.onnx is corrupt.*npx facefleet models install/,
      );

      rmSync(target);
      await expect(OnnxNets.create({ modelsDir: dir })).rejects.toThrow(
        /face_landmark_68\.onnx is missing.*npx facefleet models install/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
