import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { decodeImage, FaceEngine } from '@facefleet/engine';
import { median, round } from './stats.js';

export interface EngineRow {
  readonly corpus: string;
  readonly pipeline: 'facefleet' | 'face-api reference';
  readonly images: number;
  readonly faces: number;
  readonly imagesPerSecond: number;
  readonly msRead: number;
  readonly msDecode: number;
  readonly msInfer: number;
}

/**
 * The engine in this process against face-api's documented Node pipeline (its node-wasm demo:
 * pixels into a tensor through a plain array, then detectAllFaces().withFaceLandmarks()
 * .withFaceDescriptors()), same backend, same images, alternating image by image, medians of
 * `repeats` passes after a warm-up pass.
 */
export async function benchEngine(
  corpus: string,
  files: string[],
  repeats: number,
): Promise<EngineRow[]> {
  const engine = await FaceEngine.create({ backend: 'wasm' });
  const faceapi = (
    engine as unknown as { runtime: { faceapi: typeof import('@vladmandic/face-api') } }
  ).runtime.faceapi;
  const tf = faceapi.tf;

  const ours = {
    read: [] as number[],
    decode: [] as number[],
    infer: [] as number[],
    total: [] as number[],
    faces: 0,
  };
  const ref = {
    read: [] as number[],
    decode: [] as number[],
    infer: [] as number[],
    total: [] as number[],
    faces: 0,
  };

  for (let pass = 0; pass <= repeats; pass += 1) {
    const warm = pass === 0;
    let [oRead, oDecode, oInfer, rRead, rDecode, rInfer] = [0, 0, 0, 0, 0, 0];
    let [oFaces, rFaces] = [0, 0];
    for (const file of files) {
      let t = performance.now();
      const bytes = await readFile(file);
      oRead += performance.now() - t;
      t = performance.now();
      const image = await decodeImage(bytes, 100_000_000);
      oDecode += performance.now() - t;
      t = performance.now();
      oFaces += (await engine.analyze(image)).length;
      oInfer += performance.now() - t;

      t = performance.now();
      const refBytes = await readFile(file);
      rRead += performance.now() - t;
      t = performance.now();
      const { data, info } = await sharp(refBytes)
        .ensureAlpha()
        .raw()
        .toBuffer({ resolveWithObject: true });
      const tensor = tf.tidy(() => {
        const rgba = tf.tensor(Array.from(data), [info.height, info.width, 4], 'int32');
        const [r, g, b] = tf.unstack(rgba, 2) as unknown as [never, never, never];
        return tf.stack([r, g, b], 2);
      });
      rDecode += performance.now() - t;
      t = performance.now();
      const result = await faceapi
        .detectAllFaces(tensor, new faceapi.SsdMobilenetv1Options({ minConfidence: 0.5 }))
        .withFaceLandmarks()
        .withFaceDescriptors();
      (tensor as unknown as { dispose(): void }).dispose();
      rFaces += result.length;
      rInfer += performance.now() - t;
    }
    if (warm) continue;
    ours.read.push(oRead);
    ours.decode.push(oDecode);
    ours.infer.push(oInfer);
    ours.total.push(oRead + oDecode + oInfer);
    ref.read.push(rRead);
    ref.decode.push(rDecode);
    ref.infer.push(rInfer);
    ref.total.push(rRead + rDecode + rInfer);
    ours.faces = oFaces;
    ref.faces = rFaces;
  }

  const row = (pipeline: EngineRow['pipeline'], s: typeof ours): EngineRow => ({
    corpus,
    pipeline,
    images: files.length,
    faces: s.faces,
    imagesPerSecond: round(files.length / (median(s.total) / 1000)),
    msRead: round(median(s.read) / files.length, 1),
    msDecode: round(median(s.decode) / files.length, 1),
    msInfer: round(median(s.infer) / files.length, 1),
  });
  return [row('facefleet', ours), row('face-api reference', ref)];
}
