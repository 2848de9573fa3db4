import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { decodeImage, FaceEngine, type DetectedFace } from '@facefleet/engine';
import { median, round } from './stats.js';

export type Pipeline =
  'facefleet onnx' | 'facefleet wasm' | 'facefleet wasm, tiny detector' | 'face-api reference';

export interface EngineRow {
  readonly corpus: string;
  readonly pipeline: Pipeline;
  readonly images: number;
  readonly faces: number;
  readonly imagesPerSecond: number;
  readonly facesPerSecond: number;
  readonly msRead: number;
  readonly msDecode: number;
  readonly msInfer: number;
  /** The three stages of `msInfer`; face-api's chain does not expose them. */
  readonly msDetect?: number;
  readonly msLandmarks?: number;
  readonly msDescriptor?: number;
}

/** How the Tiny Face Detector does against SSD MobileNet v1 on the same images. */
export interface TinyMisses {
  readonly corpus: string;
  readonly ssdFaces: number;
  readonly tinyFaces: number;
  /** SSD faces with no tiny box centred inside them (the two detectors frame faces differently). */
  readonly missed: number;
}

type Stage = 'read' | 'decode' | 'infer' | 'detect' | 'landmarks' | 'descriptor';
type Sums = Record<Stage, number>;

const zero = (): Sums => ({ read: 0, decode: 0, infer: 0, detect: 0, landmarks: 0, descriptor: 0 });

/**
 * The engine in this process (onnx; wasm with SSD and with the tiny detector) against face-api's
 * documented Node pipeline (its node-wasm demo: pixels into a tensor through a plain array, then
 * `detectAllFaces().withFaceLandmarks().withFaceDescriptors()`): same backend, same images, each
 * pipeline over the whole corpus in turn, medians of `repeats` passes after a warm-up pass.
 */
export async function benchEngine(
  corpus: string,
  files: string[],
  repeats: number,
): Promise<{ rows: EngineRow[]; tiny: TinyMisses }> {
  const onnxEngine = await FaceEngine.create({ backend: 'onnx' });
  const engine = await FaceEngine.create({ backend: 'wasm' });
  const tinyEngine = await FaceEngine.create({ backend: 'wasm', detector: 'tiny' });
  const faceapi = (
    engine as unknown as { runtime: { faceapi: typeof import('@vladmandic/face-api') } }
  ).runtime.faceapi;
  const tf = faceapi.tf;
  // The reference loads face-api's shared networks from its package as its Node demo does; the
  // engines hold instances of their own.
  const weights = join(
    dirname(createRequire(import.meta.url).resolve('@vladmandic/face-api/package.json')),
    'model',
  );
  await faceapi.nets.ssdMobilenetv1.loadFromDisk(weights);
  await faceapi.nets.faceLandmark68Net.loadFromDisk(weights);
  await faceapi.nets.faceRecognitionNet.loadFromDisk(weights);

  const pipelines: Pipeline[] = [
    'facefleet onnx',
    'facefleet wasm',
    'facefleet wasm, tiny detector',
    'face-api reference',
  ];
  const passes = new Map<Pipeline, Sums[]>(pipelines.map((p) => [p, []]));
  const faces = new Map<Pipeline, number>();
  const found = new Map<string, { ssd: DetectedFace[]; tiny: DetectedFace[] }>();

  const ours = async (which: FaceEngine, file: string, sums: Sums) => {
    let t = performance.now();
    const bytes = await readFile(file);
    sums.read += performance.now() - t;
    t = performance.now();
    const image = await decodeImage(bytes, 100_000_000);
    sums.decode += performance.now() - t;
    t = performance.now();
    const { faces: result, times } = await which.analyzeTimed(image);
    sums.infer += performance.now() - t;
    sums.detect += times.detect;
    sums.landmarks += times.landmarks;
    sums.descriptor += times.descriptor;
    return result;
  };

  const reference = async (file: string, sums: Sums) => {
    let t = performance.now();
    const bytes = await readFile(file);
    sums.read += performance.now() - t;
    t = performance.now();
    const { data, info } = await sharp(bytes)
      .ensureAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const tensor = tf.tidy(() => {
      const rgba = tf.tensor(Array.from(data), [info.height, info.width, 4], 'int32');
      const [r, g, b] = tf.unstack(rgba, 2) as unknown as [never, never, never];
      return tf.stack([r, g, b], 2);
    });
    sums.decode += performance.now() - t;
    t = performance.now();
    const result = await faceapi
      .detectAllFaces(tensor, new faceapi.SsdMobilenetv1Options({ minConfidence: 0.5 }))
      .withFaceLandmarks()
      .withFaceDescriptors();
    (tensor as unknown as { dispose(): void }).dispose();
    sums.infer += performance.now() - t;
    return result.length;
  };

  // Pipeline by pipeline within a pass, each over all the images, in an order that turns from
  // pass to pass: a pipeline runs with its own data in the caches (image by image alternation
  // charged each one with the reference's garbage and cold caches), and a drift in the
  // machine's load reaches every pipeline alike.
  const run = async (p: Pipeline, file: string, sums: Sums) => {
    if (p === 'face-api reference') return reference(file, sums);
    const which =
      p === 'facefleet onnx' ? onnxEngine : p === 'facefleet wasm' ? engine : tinyEngine;
    return ours(which, file, sums);
  };
  for (let pass = 0; pass <= repeats; pass += 1) {
    const order = pipelines.map((_, i) => pipelines[(i + pass) % pipelines.length]!);
    for (const p of order) {
      const sums = zero();
      let count = 0;
      for (const [i, file] of files.entries()) {
        const result = await run(p, file, sums);
        count += typeof result === 'number' ? result : result.length;
        if (typeof result === 'number') continue;
        const seen = found.get(`${i}`) ?? { ssd: [], tiny: [] };
        if (p === 'facefleet wasm') seen.ssd = result;
        if (p === 'facefleet wasm, tiny detector') seen.tiny = result;
        found.set(`${i}`, seen);
      }
      if (pass === 0) continue; // warm-up
      passes.get(p)!.push(sums);
      faces.set(p, count);
    }
  }

  const rows = pipelines.map((pipeline): EngineRow => {
    const list = passes.get(pipeline)!;
    const per = (stage: Stage) => round(median(list.map((s) => s[stage])) / files.length, 1);
    const total = median(list.map((s) => s.read + s.decode + s.infer)) / 1000;
    const n = faces.get(pipeline)!;
    return {
      corpus,
      pipeline,
      images: files.length,
      faces: n,
      imagesPerSecond: round(files.length / total),
      facesPerSecond: round(n / total),
      msRead: per('read'),
      msDecode: per('decode'),
      msInfer: per('infer'),
      ...(pipeline === 'face-api reference'
        ? {}
        : {
            msDetect: per('detect'),
            msLandmarks: per('landmarks'),
            msDescriptor: per('descriptor'),
          }),
    };
  });

  let missed = 0;
  let ssdFaces = 0;
  let tinyFaces = 0;
  for (const { ssd, tiny } of found.values()) {
    ssdFaces += ssd.length;
    tinyFaces += tiny.length;
    missed += ssd.filter((s) => !tiny.some((t) => centredIn(t.bbox, s.bbox))).length;
  }
  await Promise.all([onnxEngine.close(), engine.close(), tinyEngine.close()]);
  return { rows, tiny: { corpus, ssdFaces, tinyFaces, missed } };
}

/** Whether the centre of box `a` lies inside box `b`; boxes are [top, right, bottom, left]. */
function centredIn(a: readonly number[], b: readonly number[]): boolean {
  const [at, ar, ab, al] = a as [number, number, number, number];
  const [bt, br, bb, bl] = b as [number, number, number, number];
  const [y, x] = [(at + ab) / 2, (al + ar) / 2];
  return y >= bt && y <= bb && x >= bl && x <= br;
}
