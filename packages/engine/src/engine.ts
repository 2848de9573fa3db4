import type { BBox, ImageResult, ImageStatus, Job } from '@facefleet/protocol';
import { sourceOf, statusBase } from '@facefleet/protocol';
import type { BackendInfo, FaceApi, Runtime } from './backend.js';
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
import { UrlPolicy } from './url-policy.js';

/** The networks of the pipeline: a detector, the 68-point landmarks, the 128-d descriptor. */
function networksFor(detector: DetectorName) {
  const finder = detector === 'tiny' ? 'tinyFaceDetector' : 'ssdMobilenetv1';
  return [finder, 'faceLandmark68Net', 'faceRecognitionNet'] as const;
}

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
    const names = networksFor(config.detector);
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
    const { faceapi } = this.runtime;
    const times = { detect: 0, landmarks: 0, descriptor: 0 };
    const input = faceapi.tf.tensor3d(image.data, [image.height, image.width, 3], 'int32');

    try {
      if (options.aligned) {
        const started = performance.now();
        const face = await this.describeWhole(input, image);
        times.descriptor = performance.now() - started;
        return { faces: [face], times };
      }

      let started = performance.now();
      const detections = (
        await this.detect(input, options.minConfidence ?? this.config.minConfidence)
      ).filter((d) => !isEmpty(d.box.clipAtImageBorders(image.width, image.height)));
      times.detect = performance.now() - started;
      if (detections.length === 0) return { faces: [], times };

      started = performance.now();
      const crops = await faceapi.extractFaceTensors(input, detections);
      const landmarks = await faceapi.nets.faceLandmark68Net
        .detectLandmarks(crops)
        .finally(() => crops.forEach((t) => t.dispose()));
      times.landmarks = performance.now() - started;

      started = performance.now();
      // face-api's dlib-style alignment: a square around the eyes and mouth, in image pixels.
      const faces = asList(landmarks)
        .map((marks, i) => {
          const detection = detections[i]!;
          const chip = marks
            .shiftBy(detection.box.x, detection.box.y)
            .align(null, { useDlibAlignment: true })
            .clipAtImageBorders(image.width, image.height);
          return { detection, chip };
        })
        .filter((face) => !isEmpty(face.chip));
      const chips = await faceapi.extractFaceTensors(
        input,
        faces.map((f) => f.chip),
      );
      const descriptors =
        chips.length === 0
          ? []
          : asList(
              await faceapi.nets.faceRecognitionNet
                .computeFaceDescriptor(chips)
                .finally(() => chips.forEach((t) => t.dispose())),
            );
      times.descriptor = performance.now() - started;

      return {
        faces: faces.map(({ detection }, i) => ({
          bbox: toBBox(detection.box, image),
          score: detection.score,
          descriptor: descriptors[i]!,
        })),
        times,
      };
    } finally {
      input.dispose();
    }
  }

  /** Face boxes and scores, best first, from the configured detector. */
  private async detect(input: FaceApiTensor, minConfidence: number): Promise<FaceDetection[]> {
    const { faceapi } = this.runtime;
    if (this.config.detector === 'tiny') {
      const options = new faceapi.TinyFaceDetectorOptions({
        inputSize: this.config.tinyInputSize,
        scoreThreshold: minConfidence,
      });
      const found = await faceapi.nets.tinyFaceDetector.locateFaces(input, options);
      return found.sort((a, b) => b.score - a.score).slice(0, this.config.maxFaces);
    }
    const options = new faceapi.SsdMobilenetv1Options({
      minConfidence,
      maxResults: this.config.maxFaces,
    });
    return faceapi.nets.ssdMobilenetv1.locateFaces(input, options);
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
type FaceDetection = InstanceType<FaceApi['FaceDetection']>;

/** Milliseconds spent in each stage of the pipeline for one image. */
export interface StageTimes {
  readonly detect: number;
  readonly landmarks: number;
  readonly descriptor: number;
}

function asList<T>(value: T | T[]): T[] {
  return Array.isArray(value) ? value : [value];
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
