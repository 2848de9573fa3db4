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
import { pipelineStages, type Networks, type Stages, type TinyFaceDetector } from './stages.js';
import { fusedTfjsNets } from './tfjs-nets.js';
import { UrlPolicy } from './url-policy.js';

/** face-api's network classes, by the names of models/manifest.json. */
const NETWORK_CLASSES = {
  ssdMobilenetv1: 'SsdMobilenetv1',
  tinyFaceDetector: 'TinyFaceDetector',
  faceLandmark68Net: 'FaceLandmark68Net',
  faceRecognitionNet: 'FaceRecognitionNet',
} as const;
type NetworkName = keyof typeof NETWORK_CLASSES;
type FaceApiNet<N extends NetworkName> = InstanceType<FaceApi[(typeof NETWORK_CLASSES)[N]]>;

/** The networks an engine runs, and what releases them. */
interface EngineNetworks {
  readonly nets: Networks;
  readonly tiny: TinyFaceDetector | undefined;
  dispose(): void;
}

/**
 * Loads the engine's networks. On onnx, ORT runs all but the Tiny Face Detector, which is
 * loaded on tfjs when it is asked for (it has no ONNX export). On tfjs, face-api's detector and
 * recognition net are loaded, folded into the fused ports of tfjs-nets.ts and released at once:
 * only the fused copies stay. Each engine has instances of its own, never face-api's shared
 * `faceapi.nets`, so engines and face-api's own pipeline can live side by side in one process.
 */
async function loadNetworks(runtime: Runtime, config: EngineConfig): Promise<EngineNetworks> {
  const { faceapi, onnx } = runtime;
  const tiny = config.detector === 'tiny';
  const names: NetworkName[] = onnx
    ? tiny
      ? ['tinyFaceDetector']
      : []
    : [tiny ? 'tinyFaceDetector' : 'ssdMobilenetv1', 'faceLandmark68Net', 'faceRecognitionNet'];
  const files = await readNetworks(config.modelsDir, names);
  const load = <N extends NetworkName>(name: N): FaceApiNet<N> => {
    const read = files.get(name);
    if (!read) throw new Error(`network ${name} was not read`);
    const net = new faceapi[NETWORK_CLASSES[name]]() as FaceApiNet<N>;
    net.loadFromWeightMap(
      faceapi.tf.io.decodeWeights(read.shards, read.specs.flatMap((g) => g.weights) as never),
    );
    return net;
  };

  const tinyDetector = tiny ? load('tinyFaceDetector') : undefined;
  if (onnx) {
    return {
      nets: onnx,
      tiny: tinyDetector,
      dispose: () => tinyDetector?.dispose(),
    };
  }
  const ssd = tiny ? undefined : load('ssdMobilenetv1');
  const recognition = load('faceRecognitionNet');
  const landmarks = load('faceLandmark68Net');
  const fused = fusedTfjsNets(faceapi, {
    ...(ssd ? { ssdMobilenetv1: ssd } : {}),
    faceLandmark68Net: landmarks,
    faceRecognitionNet: recognition,
  });
  ssd?.dispose();
  recognition.dispose();
  return {
    nets: fused,
    tiny: tinyDetector,
    dispose: () => {
      fused.dispose();
      landmarks.dispose();
      tinyDetector?.dispose();
    },
  };
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

  private constructor(
    readonly config: EngineConfig,
    private readonly runtime: Runtime,
    private readonly networks: EngineNetworks,
  ) {
    this.urlPolicy = new UrlPolicy(config.urlAllow, config.urlConnectTimeoutMs);
    this.stages = pipelineStages(runtime.faceapi, networks.nets, config, networks.tiny);
  }

  static async create(input: EngineConfigInput = {}, logger?: Logger): Promise<FaceEngine> {
    const config = parseEngineConfig(input);
    const runtime = await loadRuntime(config.backend, {
      modelsDir: config.modelsDir,
      threads: config.threads,
    });
    const engine = new FaceEngine(config, runtime, await loadNetworks(runtime, config));
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

  /** Releases the ONNX sessions and the tfjs networks' weights. */
  async close(): Promise<void> {
    this.networks.dispose();
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
   * of every face crop, and the descriptors of the dlib-aligned chips (both in batches of up to
   * MAX_BATCH faces).
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
