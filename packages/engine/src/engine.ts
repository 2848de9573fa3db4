import type { BBox, ImageResult, ImageStatus, Job } from '@facefleet/protocol';
import { sourceOf, statusBase } from '@facefleet/protocol';
import type { BackendInfo, Runtime } from './backend.js';
import { loadRuntime } from './backend.js';
import {
  parseEngineConfig,
  type DetectorName,
  type EngineConfig,
  type EngineConfigInput,
} from './config.js';
import { decodeImage, type DecodedImage } from './decode.js';
import { toProblem } from './errors.js';
import type { Logger } from './log.js';
import { readNetworks } from './models.js';
import { readSource } from './source.js';
import { pipelineStages, type Networks, type Stages } from './stages.js';
import { fusedTfjsNets } from './tfjs-nets.js';
import { UrlPolicy } from './url-policy.js';

/**
 * The tfjs networks to load: all three on a tfjs backend; on onnx only the Tiny Face Detector,
 * when it is asked for (it has no ONNX export).
 */
function tfjsNetworksFor(detector: DetectorName, onnx: boolean) {
  const finder = detector === 'tiny' ? 'tinyFaceDetector' : 'ssdMobilenetv1';
  if (onnx) return detector === 'tiny' ? (['tinyFaceDetector'] as const) : ([] as const);
  return [finder, 'faceLandmark68Net', 'faceRecognitionNet'] as const;
}

export interface DetectedFace {
  readonly bbox: BBox;
  /** Detector score; 1 in aligned mode, where nothing is detected. */
  readonly score: number;
  readonly descriptor: Float32Array;
  /** The 68 landmarks as x, y pairs in image pixels; empty in aligned mode. */
  readonly landmarks: Float32Array;
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
  private readonly stages: Stages;
  /** The networks on tfjs, when ONNX does not run them: their folded weights are released on close. */
  private readonly tfjsNets?: Networks & { dispose(): void };

  private constructor(
    readonly config: EngineConfig,
    private readonly runtime: Runtime,
  ) {
    this.urlPolicy = new UrlPolicy(config.urlAllow, config.urlConnectTimeoutMs);
    const nets = runtime.onnx ?? (this.tfjsNets = fusedTfjsNets(runtime.faceapi));
    this.stages = pipelineStages(runtime.faceapi, nets, config);
  }

  static async create(input: EngineConfigInput = {}, logger?: Logger): Promise<FaceEngine> {
    const config = parseEngineConfig(input);
    const runtime = await loadRuntime(config.backend, {
      modelsDir: config.modelsDir,
      threads: config.threads,
    });
    const names = tfjsNetworksFor(config.detector, runtime.onnx !== undefined);
    const networks = await readNetworks(config.modelsDir, names);

    const { faceapi } = runtime;
    for (const name of names) {
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
    logger?.debug(
      { backend: runtime.backend, detector: config.detector, modelsDir: config.modelsDir },
      'face engine ready',
    );
    return engine;
  }

  get backend(): BackendInfo {
    return this.runtime.backend;
  }

  /** Releases the ONNX sessions or the fused tfjs networks' folded weights. */
  async close(): Promise<void> {
    this.tfjsNets?.dispose();
    await this.runtime.onnx?.release();
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
    return (await this.analyzeTimed(image, options)).faces;
  }

  /**
   * The pipeline in its three stages, each timed: detection on the whole image, the 68 landmarks
   * of every face crop (one batch), and the descriptors of the dlib-aligned chips (one batch).
   * The same steps and arithmetic as face-api's `detectAllFaces().withFaceLandmarks()
   * .withFaceDescriptors()`, which runs the landmark and descriptor nets once per face.
   */
  async analyzeTimed(
    image: DecodedImage,
    options: AnalyzeOptions = {},
  ): Promise<{ faces: DetectedFace[]; times: StageTimes }> {
    const times = { detect: 0, landmarks: 0, descriptor: 0 };
    const stages = this.stages.open(image);

    try {
      if (options.aligned) {
        const started = performance.now();
        const [descriptor] = await stages.describe();
        times.descriptor = performance.now() - started;
        if (!descriptor) throw new Error('expected one descriptor for the whole image');
        const whole: DetectedFace = {
          bbox: [0, image.width, image.height, 0],
          score: 1,
          descriptor,
          landmarks: new Float32Array(0),
        };
        return { faces: [whole], times };
      }

      let started = performance.now();
      const detections = (
        await stages.detect(options.minConfidence ?? this.config.minConfidence)
      ).filter((d) => !isEmpty(d.box.clipAtImageBorders(image.width, image.height)));
      times.detect = performance.now() - started;
      if (detections.length === 0) return { faces: [], times };

      started = performance.now();
      const landmarks = await stages.landmarks(detections);
      times.landmarks = performance.now() - started;

      started = performance.now();
      // face-api's dlib-style alignment: a square around the eyes and mouth, in image pixels.
      const faces = landmarks
        .map((marks, i) => {
          const detection = detections[i]!;
          const shifted = marks.shiftBy(detection.box.x, detection.box.y);
          const chip = shifted
            .align(null, { useDlibAlignment: true })
            .clipAtImageBorders(image.width, image.height);
          return { detection, chip, points: shifted.positions };
        })
        .filter((face) => !isEmpty(face.chip));
      const descriptors = await stages.describe(faces.map((f) => f.chip));
      times.descriptor = performance.now() - started;

      return {
        faces: faces.map(({ detection, points }, i) => ({
          bbox: toBBox(detection.box, image),
          score: detection.score,
          descriptor: descriptors[i]!,
          landmarks: Float32Array.from(points.flatMap((p) => [p.x, p.y])),
        })),
        times,
      };
    } finally {
      stages.close();
    }
  }

  /** The first inference compiles kernels and sizes buffers; do it before the first real image. */
  private async warmUp(): Promise<void> {
    const size = 64;
    const { faceapi } = this.runtime;
    const blank = {
      data: Buffer.alloc(size * size * 3, 128),
      width: size,
      height: size,
      warnings: [],
    };
    await this.analyze(blank);
    // A blank image has no face, so the landmark and descriptor stages are warmed up directly.
    const stages = this.stages.open(blank);
    try {
      const whole = new faceapi.FaceDetection(1, new faceapi.Rect(0, 0, 1, 1), blank);
      await stages.landmarks([whole]);
      await stages.describe();
    } finally {
      stages.close();
    }
  }
}

/** Milliseconds spent in each stage of the pipeline for one image. */
export interface StageTimes {
  readonly detect: number;
  readonly landmarks: number;
  readonly descriptor: number;
}

function isEmpty(box: { width: number; height: number }): boolean {
  return !(box.width > 0 && box.height > 0);
}

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
