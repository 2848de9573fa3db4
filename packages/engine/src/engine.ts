import type { BBox, ImageResult, ImageStatus, Job } from '@facefleet/protocol';
import { sourceOf, statusBase } from '@facefleet/protocol';
import type { BackendInfo, FaceApi, Runtime } from './backend.js';
import { loadRuntime } from './backend.js';
import { parseEngineConfig, type EngineConfig, type EngineConfigInput } from './config.js';
import { decodeImage, type DecodedImage } from './decode.js';
import { toProblem } from './errors.js';
import type { Logger } from './log.js';
import { readNetworks } from './models.js';
import { readSource } from './source.js';
import { UrlPolicy } from './url-policy.js';

/** The three networks of the pipeline: detector, 68-point landmarks, 128-d descriptor. */
const NETWORKS = ['ssdMobilenetv1', 'faceLandmark68Net', 'faceRecognitionNet'] as const;

export interface DetectedFace {
  readonly bbox: BBox;
  /** Detector score; 1 in aligned mode, where nothing is detected. */
  readonly score: number;
  readonly descriptor: Float32Array;
}

export interface AnalyzeOptions {
  readonly minConfidence?: number;
  /** Take the whole image as one aligned face chip: no detection, no landmarks. */
  readonly aligned?: boolean;
}

/**
 * The face pipeline with its models resident: one per process, created once, then fed images.
 * `process` never throws for bad input: every image ends as a status.
 */
export class FaceEngine {
  private readonly urlPolicy: UrlPolicy;

  private constructor(
    readonly config: EngineConfig,
    private readonly runtime: Runtime,
  ) {
    this.urlPolicy = new UrlPolicy(config.urlAllow, config.urlConnectTimeoutMs);
  }

  static async create(input: EngineConfigInput = {}, logger?: Logger): Promise<FaceEngine> {
    const config = parseEngineConfig(input);
    const runtime = await loadRuntime(config.backend);
    const networks = await readNetworks(config.modelsDir, NETWORKS);

    const { faceapi } = runtime;
    for (const name of NETWORKS) {
      const files = networks.get(name);
      if (!files) throw new Error(`network ${name} was not read`);
      const weights = faceapi.tf.io.decodeWeights(
        files.shards,
        files.specs.flatMap((g) => g.weights) as never,
      );
      faceapi.nets[name].loadFromWeightMap(weights);
    }

    const engine = new FaceEngine(config, runtime);
    await engine.warmUp();
    logger?.debug({ backend: runtime.backend, modelsDir: config.modelsDir }, 'face engine ready');
    return engine;
  }

  get backend(): BackendInfo {
    return this.runtime.backend;
  }

  /** Live tensors in this process: the model weights, plus anything leaked. */
  tensorCount(): number {
    return this.runtime.tf.memory().numTensors;
  }

  /** Loads, decodes and analyses one job's image; failures become a `failed` status. */
  async process(job: Job, key?: string): Promise<ImageResult> {
    const source = sourceOf(job);
    const base = statusBase(job, key);

    try {
      const bytes = await readSource(source, { ...this.config, urlPolicy: this.urlPolicy });
      const image = await decodeImage(bytes, this.config.maxPixels);
      const faces = await this.analyze(image, job.options ?? {});
      const status: ImageStatus = {
        ...base,
        status: faces.length > 0 ? 'ok' : 'no_faces',
        faces: faces.length,
        ...(image.warnings.length > 0 ? { warnings: image.warnings } : {}),
      };
      const records = faces.map((face) => ({
        id: job.id,
        bbox: face.bbox,
        embed: Array.from(face.descriptor),
      }));
      return { status, records };
    } catch (error) {
      return {
        status: { ...base, status: 'failed', faces: 0, error: toProblem(error) },
        records: [],
      };
    }
  }

  /** Finds the faces of a decoded image and describes each with a 128-d descriptor. */
  async analyze(image: DecodedImage, options: AnalyzeOptions = {}): Promise<DetectedFace[]> {
    const { faceapi } = this.runtime;
    const input = faceapi.tf.tensor3d(image.data, [image.height, image.width, 3], 'int32');

    try {
      if (options.aligned) return [await this.describeWhole(input, image)];

      const minConfidence = options.minConfidence ?? this.config.minConfidence;
      const detectorOptions = new faceapi.SsdMobilenetv1Options({
        minConfidence,
        maxResults: this.config.maxFaces,
      });
      const results = await faceapi
        .detectAllFaces(input, detectorOptions)
        .withFaceLandmarks()
        .withFaceDescriptors();
      return results.map((r) => ({
        bbox: toBBox(r.detection.box, image),
        score: r.detection.score,
        descriptor: r.descriptor,
      }));
    } finally {
      input.dispose();
    }
  }

  private async describeWhole(input: FaceApiTensor, image: DecodedImage): Promise<DetectedFace> {
    const descriptor = await this.runtime.faceapi.computeFaceDescriptor(input);
    if (Array.isArray(descriptor)) throw new Error('expected one descriptor for one image');
    return { bbox: [0, image.width, image.height, 0], score: 1, descriptor };
  }

  /** The first inference compiles kernels and sizes buffers; do it before the first real image. */
  private async warmUp(): Promise<void> {
    const size = 64;
    const blank = {
      data: Buffer.alloc(size * size * 3, 128),
      width: size,
      height: size,
      warnings: [],
    };
    await this.analyze(blank);
    // A blank image has no face, so the landmark and descriptor nets are warmed up directly.
    const input = this.runtime.faceapi.tf.tensor3d(blank.data, [size, size, 3], 'int32');
    try {
      await this.runtime.faceapi.detectFaceLandmarks(input);
      await this.describeWhole(input, blank);
    } finally {
      input.dispose();
    }
  }
}

type FaceApiTensor = ReturnType<FaceApi['tf']['tensor3d']>;

/** face-api's box (x, y, width, height in float pixels) as the seed's [top, right, bottom, left]. */
export function toBBox(
  box: { x: number; y: number; width: number; height: number },
  image: { width: number; height: number },
): BBox {
  const clamp = (value: number, max: number) => Math.min(Math.max(Math.round(value), 0), max);
  return [
    clamp(box.y, image.height),
    clamp(box.x + box.width, image.width),
    clamp(box.y + box.height, image.height),
    clamp(box.x, image.width),
  ];
}
