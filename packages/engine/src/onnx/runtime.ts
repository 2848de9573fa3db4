import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type * as Ort from 'onnxruntime-node';
import { z } from 'zod';
import { DEFAULT_MODELS_DIR } from '../config.js';
import { ModelError, readManifest } from '../models.js';

/** Networks with an ONNX model, by their manifest name, and what each is used for here. */
export const ONNX_NETWORKS = {
  detector: 'ssdMobilenetv1',
  landmarks: 'faceLandmark68Net',
  recognition: 'faceRecognitionNet',
} as const;

/** Input sizes of the three graphs (square, RGB, NHWC, values 0..255). */
export const ONNX_INPUT_SIZE = { detector: 512, landmarks: 112, recognition: 150 } as const;

const OptionsSchema = z
  .object({
    modelsDir: z.string().min(1).default(DEFAULT_MODELS_DIR),
    /** Threads ORT may use inside one operator; 1 suits one inference process per core. */
    intraOpNumThreads: z.number().int().min(1).max(256).default(1),
  })
  .strict();
export type OnnxNetsOptions = z.input<typeof OptionsSchema>;

export interface Detections {
  /** [5118, 4] box corners per anchor, as face-api's output layer decodes them (0..1 of the input). */
  readonly boxes: Float32Array;
  /** [5118] face scores (sigmoid), before non-maximum suppression. */
  readonly scores: Float32Array;
}

type Session = Ort.InferenceSession;

const require = createRequire(import.meta.url);

/**
 * face-api's three networks on onnxruntime-node (CPU). Each model file is checked against its
 * sha256 in models/manifest.json before ORT sees it; a missing or altered one stops start-up with
 * a ModelError that says how to regenerate it. Mind that onnxruntime-node 1.30 runs a session
 * synchronously on the JavaScript thread (its promise only defers the start to setImmediate), so
 * every call blocks the event loop for its whole duration: use this, like tfjs, inside the
 * inference processes, never in a process that must keep renewing queue locks.
 */
export class OnnxNets {
  private constructor(
    private readonly ort: typeof Ort,
    private readonly detector: Session,
    private readonly landmarker: Session,
    private readonly recognizer: Session,
    readonly threads: number,
  ) {}

  static async create(input: OnnxNetsOptions = {}): Promise<OnnxNets> {
    const options = OptionsSchema.parse(input);
    const manifest = await readManifest(options.modelsDir);
    const fix = 'Run "npx facefleet models install" (or "npm run build") to generate it again.';

    // Every file is checked before any session is made, so that a bad one leaks nothing. ORT
    // then reads each checked file by its path: given the bytes instead, it keeps that buffer
    // beside its own copy as long as the session lives (measured: 20 MiB more per process).
    const verified: string[] = [];
    for (const network of Object.values(ONNX_NETWORKS)) {
      const entry = manifest.onnx.find((e) => e.network === network);
      if (!entry) {
        throw new ModelError(
          `models/manifest.json lists no ONNX model for ${network}; restore it from the facefleet repository.`,
        );
      }
      const path = join(options.modelsDir, entry.file);
      const bytes = await readFile(path).catch(() => {
        throw new ModelError(`ONNX model ${path} is missing. ${fix}`);
      });
      const digest = createHash('sha256').update(bytes).digest('hex');
      if (digest !== entry.sha256) {
        throw new ModelError(
          `ONNX model ${path} is corrupt or out of date (sha256 ${digest}, expected ${entry.sha256}). ${fix}`,
        );
      }
      verified.push(path);
    }

    // The native binding is loaded only by processes that use ORT.
    const ort = require('onnxruntime-node') as typeof Ort;
    const sessionOptions: Ort.InferenceSession.SessionOptions = {
      intraOpNumThreads: options.intraOpNumThreads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      // A memory pattern plans one block per input shape and keeps it: with a new batch shape
      // for every face count, measured about 70 MiB more per process, and no faster.
      enableMemPattern: false,
    };
    // ORT's CPU arena reuses freed buffers instead of returning them to malloc. The detector has
    // one input shape and gains from it; the landmark and recognition nets see a new batch
    // shape for every face count, and their arenas would only grow.
    const arenas = [true, false, false];
    const sessions: Session[] = [];
    try {
      for (const [i, path] of verified.entries()) {
        sessions.push(
          await ort.InferenceSession.create(path, {
            ...sessionOptions,
            enableCpuMemArena: arenas[i] ?? false,
          }),
        );
      }
    } catch (error) {
      await Promise.all(sessions.map((s) => s.release()));
      throw error;
    }
    const [detector, landmarker, recognizer] = sessions as [Session, Session, Session];
    return new OnnxNets(ort, detector, landmarker, recognizer, options.intraOpNumThreads);
  }

  /** The onnxruntime-node version in use. */
  get version(): string {
    return this.ort.env.versions.node ?? this.ort.env.versions.common;
  }

  /**
   * SSD MobileNet v1 on one image: `input` is [512, 512, 3] RGB 0..255 (the image padded to a
   * square at the bottom/right and resized, as face-api's NetInput.toBatchTensor(512, false)).
   */
  async detect(input: Float32Array): Promise<Detections> {
    const size = ONNX_INPUT_SIZE.detector;
    checkLength('detect', input, 1, size);
    const out = await this.detector.run({
      input: new this.ort.Tensor('float32', input, [1, size, size, 3]),
    });
    return { boxes: floats(out, 'boxes'), scores: floats(out, 'scores') };
  }

  /**
   * 68 landmarks for `n` faces: `batch` is [n, 112, 112, 3] RGB 0..255; the answer is [n, 136],
   * (x, y) pairs relative to the 112x112 input (face-api's FaceLandmark68Net.runNet).
   */
  async landmarks(batch: Float32Array, n: number): Promise<Float32Array> {
    return this.runBatch(this.landmarker, 'landmarks', ONNX_INPUT_SIZE.landmarks, batch, n);
  }

  /** 128-d descriptors for `n` faces: `batch` is [n, 150, 150, 3] RGB 0..255; answer [n, 128]. */
  async describe(batch: Float32Array, n: number): Promise<Float32Array> {
    return this.runBatch(this.recognizer, 'descriptor', ONNX_INPUT_SIZE.recognition, batch, n);
  }

  async release(): Promise<void> {
    await Promise.all([
      this.detector.release(),
      this.landmarker.release(),
      this.recognizer.release(),
    ]);
  }

  private async runBatch(
    session: Session,
    output: string,
    size: number,
    batch: Float32Array,
    n: number,
  ): Promise<Float32Array> {
    checkLength(output, batch, n, size);
    if (n === 0) return new Float32Array(0);
    const out = await session.run({
      input: new this.ort.Tensor('float32', batch, [n, size, size, 3]),
    });
    return floats(out, output);
  }
}

function checkLength(what: string, data: Float32Array, n: number, size: number): void {
  if (!Number.isInteger(n) || n < 0)
    throw new RangeError(`${what}: batch size ${n} is not a count`);
  const expected = n * size * size * 3;
  if (data.length !== expected) {
    throw new RangeError(
      `${what}: input has ${data.length} values, expected ${expected} (${n} x ${size} x ${size} x 3)`,
    );
  }
}

function floats(out: Ort.InferenceSession.ReturnType, name: string): Float32Array {
  const tensor = out[name];
  if (!tensor || !(tensor.data instanceof Float32Array)) {
    throw new Error(`ONNX output ${name} is missing or not float32`);
  }
  return tensor.data;
}
