/*
 * Times each of face-api's three networks on onnxruntime-node and on tfjs-wasm, one thread each
 * (tfjs-wasm never runs threads under Node), on the same face-api-made input tensors. Not a test:
 *
 *   node packages/engine/dist/onnx/timing.js [image] [--runs N] [--batch N] [--models DIR]
 *
 * Without an image it times face-api's own demo photo sample1.jpg. Prints one line per network
 * (median and min ms per call, per image for the detector and per face for the others) and a
 * JSON summary on the last line. Run it on an otherwise idle machine.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { loadRuntime } from '../backend.js';
import { DEFAULT_MODELS_DIR } from '../config.js';
import { decodeImage } from '../decode.js';
import { readNetworks } from '../models.js';
import { OnnxNets } from './runtime.js';

const ArgsSchema = z.object({
  image: z.string().optional(),
  runs: z.coerce.number().int().min(1).max(1000).default(10),
  batch: z.coerce.number().int().min(1).max(64).default(8),
  models: z.string().default(DEFAULT_MODELS_DIR),
});

interface Timing {
  median: number;
  min: number;
}

async function time(runs: number, fn: () => Promise<unknown>): Promise<Timing> {
  await fn();
  await fn();
  const ms: number[] = [];
  for (let i = 0; i < runs; i += 1) {
    const start = performance.now();
    await fn();
    ms.push(performance.now() - start);
  }
  ms.sort((a, b) => a - b);
  return { median: ms[Math.floor(ms.length / 2)] ?? NaN, min: ms[0] ?? NaN };
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { runs: { type: 'string' }, batch: { type: 'string' }, models: { type: 'string' } },
  });
  const args = ArgsSchema.parse({ ...values, image: positionals[0] });
  const require = createRequire(import.meta.url);
  const demo = join(
    dirname(require.resolve('@vladmandic/face-api/package.json')),
    'demo',
    'sample1.jpg',
  );
  const imagePath = args.image ?? demo;

  const runtime = await loadRuntime('wasm');
  const { faceapi } = runtime;
  const tf = faceapi.tf;
  const names = ['ssdMobilenetv1', 'faceLandmark68Net', 'faceRecognitionNet'] as const;
  const networks = await readNetworks(args.models, names);
  for (const name of names) {
    const files = networks.get(name);
    if (!files) throw new Error(`network ${name} was not read`);
    const specs = files.specs.flatMap((g) => g.weights);
    faceapi.nets[name].loadFromWeightMap(tf.io.decodeWeights(files.shards, specs as never));
  }
  const onnx = await OnnxNets.create({ modelsDir: args.models, intraOpNumThreads: 1 });

  const decoded = await decodeImage(await readFile(imagePath), 100_000_000);
  const image = tf.tensor3d(decoded.data, [decoded.height, decoded.width, 3], 'int32');
  // Faces of the image, repeated up to the batch size, as landmark and descriptor inputs.
  const detections = await faceapi.nets.ssdMobilenetv1.locateFaces(image, { minConfidence: 0.5 });
  const found = await faceapi.extractFaceTensors(
    image,
    detections.length ? detections : [new faceapi.Rect(0, 0, decoded.width, decoded.height)],
  );
  const crops = Array.from({ length: args.batch }, (_, i) => found[i % found.length]!);

  const batchOf = (tensors: typeof crops, size: number, centre: boolean): Float32Array =>
    tf.tidy(() =>
      tf.cast(new faceapi.NetInput(tensors).toBatchTensor(size, centre), 'float32').dataSync(),
    ) as Float32Array;
  const ssdInput = batchOf([image], 512, false);

  const rows: Array<{ net: string; batch: number; per: string; ort: Timing; tfjs: Timing }> = [];
  const measure = async (
    net: string,
    batch: number,
    per: string,
    ort: () => Promise<unknown>,
    wasm: () => void,
  ) => {
    const ortTime = await time(args.runs, ort);
    const tfjsTime = await time(args.runs, () => Promise.resolve(wasm()));
    const scale = (t: Timing) => ({ median: t.median / batch, min: t.min / batch });
    rows.push({ net, batch, per, ort: scale(ortTime), tfjs: scale(tfjsTime) });
  };

  await measure(
    'ssdMobilenetv1',
    1,
    'image',
    () => onnx.detect(ssdInput),
    () => {
      const out = faceapi.nets.ssdMobilenetv1.forwardInput(new faceapi.NetInput([image]));
      out.scores[0]?.dataSync();
      out.boxes.forEach((t) => t.dispose());
      out.scores.forEach((t) => t.dispose());
    },
  );
  for (const batch of [1, args.batch]) {
    const faces = crops.slice(0, batch);
    const lm = batchOf(faces, 112, true);
    await measure(
      'faceLandmark68Net',
      batch,
      'face',
      () => onnx.landmarks(lm, batch),
      () => {
        const out = faceapi.nets.faceLandmark68Net.runNet(new faceapi.NetInput(faces));
        out.dataSync();
        out.dispose();
      },
    );
    const rec = batchOf(faces, 150, true);
    await measure(
      'faceRecognitionNet',
      batch,
      'face',
      () => onnx.describe(rec, batch),
      () => {
        const out = faceapi.nets.faceRecognitionNet.forwardInput(new faceapi.NetInput(faces));
        out.dataSync();
        out.dispose();
      },
    );
  }

  const f = (x: number) => x.toFixed(1).padStart(7);
  process.stdout.write(
    `onnxruntime-node ${onnx.version} (1 intra-op thread) vs tfjs ${runtime.backend.tfjs} wasm ` +
      `(simd ${String(runtime.backend.simd)}), ${args.runs} runs after 2 warm-ups, image ${imagePath}\n`,
  );
  process.stdout.write(
    'net                  batch  per     ORT median/min    tfjs-wasm median/min  speed-up\n',
  );
  for (const r of rows) {
    process.stdout.write(
      `${r.net.padEnd(20)} ${String(r.batch).padStart(5)}  ${r.per.padEnd(5)} ${f(r.ort.median)} ${f(r.ort.min)}    ${f(r.tfjs.median)} ${f(r.tfjs.min)}        ${(r.tfjs.median / r.ort.median).toFixed(1)}x\n`,
    );
  }
  process.stdout.write(`${JSON.stringify({ ort: onnx.version, rows })}\n`);

  image.dispose();
  found.forEach((t) => t.dispose());
  await onnx.release();
}

main().catch((error: unknown) => {
  process.stderr.write(
    `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
  );
  process.exitCode = 1;
});
