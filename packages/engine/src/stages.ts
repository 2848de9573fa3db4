import type { FaceApi } from './backend.js';
import type { EngineConfig } from './config.js';
import { ONNX_INPUT_SIZE } from './onnx/runtime.js';
import { batchOf, type PixelRegion } from './prepare.js';
import type { DecodedImage } from './decode.js';

type Tensor3D = ReturnType<FaceApi['tf']['tensor3d']>;
export type TinyFaceDetector = InstanceType<FaceApi['TinyFaceDetector']>;
export type FaceDetection = InstanceType<FaceApi['FaceDetection']>;
export type FaceLandmarks68 = InstanceType<FaceApi['FaceLandmarks68']>;
/** A face region in image pixels (face-api's Box/Rect). */
export type Region = ReturnType<FaceLandmarks68['align']>;

/** The three network stages of the pipeline for one image. */
export interface ImageStages {
  /** Face boxes with scores, best first, at most `maxFaces`. */
  detect(minConfidence: number): Promise<FaceDetection[]>;
  /** 68 landmarks per detection, relative to the detection's crop (face-api's convention). */
  landmarks(detections: FaceDetection[]): Promise<FaceLandmarks68[]>;
  /** One 128-d descriptor per region of the image, or for the whole image when none are given. */
  describe(regions?: Region[]): Promise<Float32Array[]>;
  /** Releases what the image holds (its tensor, on tfjs). */
  close(): void;
}

export interface Stages {
  open(image: DecodedImage): ImageStages;
}

/**
 * Faces per run of the landmark and recognition nets. A group photo's faces go in batches of at
 * most this many, so that the working memory of a run stays bounded whatever the face count (a
 * batch's feature maps take about 6 MiB per face in the landmark net on tfjs) at no cost in speed:
 * both nets cost the same per face at any batch size from 4 up.
 */
export const MAX_BATCH = 8;

/** Runs `net` on the regions in batches of at most MAX_BATCH; the outputs joined in order. */
async function inBatches(
  image: DecodedImage,
  regions: readonly PixelRegion[],
  size: number,
  perFace: number,
  net: (batch: Float32Array, n: number) => Promise<Float32Array>,
): Promise<Float32Array> {
  const out = new Float32Array(regions.length * perFace);
  for (let i = 0; i < regions.length; i += MAX_BATCH) {
    const part = regions.slice(i, i + MAX_BATCH);
    out.set(await net(batchOf(image, part, size, true), part.length), i * perFace);
  }
  return out;
}

/** The detector stage of both paths when the Tiny Face Detector is asked for (tfjs only). */
async function detectTiny(
  faceapi: FaceApi,
  tiny: TinyFaceDetector,
  config: EngineConfig,
  input: Tensor3D,
  minConfidence: number,
): Promise<FaceDetection[]> {
  const options = new faceapi.TinyFaceDetectorOptions({
    inputSize: config.tinyInputSize,
    scoreThreshold: minConfidence,
  });
  const found = await tiny.locateFaces(input, options);
  return found.sort((a, b) => b.score - a.score).slice(0, config.maxFaces);
}

/**
 * The networks themselves, on prepared inputs (RGB float32 0..255, NHWC): SSD MobileNet v1 on one
 * 512x512 image giving [5118, 4] boxes and [5118] scores before suppression, the landmark net on
 * n 112x112 crops giving [n, 136], the recognition net on n 150x150 chips giving [n, 128].
 * OnnxNets is one; fusedTfjsNets (tfjs-nets.ts) is the other.
 */
export interface Networks {
  detect(input: Float32Array): Promise<{ boxes: Float32Array; scores: Float32Array }>;
  landmarks(batch: Float32Array, n: number): Promise<Float32Array>;
  describe(batch: Float32Array, n: number): Promise<Float32Array>;
}

/**
 * The stages around either set of networks: inputs made from the 8-bit pixels with NetInput's
 * arithmetic (see prepare.ts), outputs decoded with face-api's arithmetic (in float32, as its
 * tensors do it). Both give face-api's own results to the networks' rounding noise. No
 * full-size tensor is made, except for the Tiny Face Detector, which runs through face-api's own
 * code on tfjs whatever the networks.
 */
export function pipelineStages(
  faceapi: FaceApi,
  nets: Networks,
  config: EngineConfig,
  tinyDetector?: TinyFaceDetector,
): Stages {
  if (config.detector === 'tiny' && !tinyDetector)
    throw new Error('the Tiny Face Detector is asked for but not loaded');
  const f = Math.fround;
  /** face-api's crop of a box: clipped to the image and floored (extractFaceTensors). */
  const cropOf = (box: Region, image: DecodedImage): PixelRegion =>
    box.clipAtImageBorders(image.width, image.height);

  return {
    open(image) {
      let tiny: Tensor3D | undefined;
      const whole = { x: 0, y: 0, width: image.width, height: image.height };
      return {
        async detect(minConfidence) {
          if (config.detector === 'tiny' && tinyDetector) {
            tiny ??= faceapi.tf.tensor3d(image.data, [image.height, image.width, 3], 'int32');
            return detectTiny(faceapi, tinyDetector, config, tiny, minConfidence);
          }
          const size = ONNX_INPUT_SIZE.detector;
          const { boxes, scores } = await nets.detect(batchOf(image, [whole], size, false));
          const picked = nonMaxSuppression(boxes, scores, config.maxFaces, 0.5, minConfidence);

          // As face-api's SsdMobilenetv1.locateFaces: boxes clipped to the input, then scaled
          // back from the padded square to the image.
          const scale = size / Math.max(image.height, image.width);
          const padX = size / Math.round(image.width * scale);
          const padY = size / Math.round(image.height * scale);
          const dims = { height: image.height, width: image.width };
          return picked.map((i) => {
            const top = Math.max(0, boxes[4 * i]!) * padY;
            const left = Math.max(0, boxes[4 * i + 1]!) * padX;
            const bottom = Math.min(1, boxes[4 * i + 2]!) * padY;
            const right = Math.min(1, boxes[4 * i + 3]!) * padX;
            const box = new faceapi.Rect(left, top, right - left, bottom - top);
            return new faceapi.FaceDetection(scores[i]!, box, dims);
          });
        },

        async landmarks(detections) {
          const size = ONNX_INPUT_SIZE.landmarks;
          const crops = detections
            .map((d) => cropOf(d.box, image))
            .filter((c) => c.width > 0 && c.height > 0);
          const out = await inBatches(image, crops, size, 136, (b, n) => nets.landmarks(b, n));

          // face-api's FaceLandmark68NetBase.postProcess: from the centred, padded square back
          // to fractions of the crop, in float32 like its tensors.
          return crops.map(({ width, height }, b) => {
            const scale = size / Math.max(height, width);
            const [wide, high] = [width * scale, height * scale];
            const padX = wide < high ? f(Math.abs(wide - high) / 2) : 0;
            const padY = high < wide ? f(Math.abs(wide - high) / 2) : 0;
            const [w, h] = [f(wide), f(high)];
            const points = Array.from({ length: 68 }, (__, k) => {
              const x = f(f(f(out[b * 136 + 2 * k]! * size) - padX) / w);
              const y = f(f(f(out[b * 136 + 2 * k + 1]! * size) - padY) / h);
              return new faceapi.Point(x, y);
            });
            return new faceapi.FaceLandmarks68(points, { height, width });
          });
        },

        async describe(regions) {
          const crops = regions
            ? regions.map((r) => cropOf(r, image)).filter((c) => c.width > 0 && c.height > 0)
            : [whole];
          if (crops.length === 0) return [];
          const size = ONNX_INPUT_SIZE.recognition;
          const out = await inBatches(image, crops, size, 128, (b, n) => nets.describe(b, n));
          return crops.map((_, i) => out.slice(i * 128, (i + 1) * 128));
        },

        close() {
          tiny?.dispose();
        },
      };
    },
  };
}

/**
 * Greedy non-maximum suppression over [n, 4] corner boxes, as face-api's SSD does it: candidates
 * above `minScore` best first; one is kept unless it overlaps a kept box by more than `maxIou`.
 */
export function nonMaxSuppression(
  boxes: Float32Array,
  scores: Float32Array,
  maxOutput: number,
  maxIou: number,
  minScore: number,
): number[] {
  const candidates: number[] = [];
  for (let i = 0; i < scores.length; i += 1) if (scores[i]! > minScore) candidates.push(i);
  candidates.sort((a, b) => scores[b]! - scores[a]!);

  const kept: number[] = [];
  const limit = Math.min(maxOutput, scores.length);
  for (const c of candidates) {
    if (kept.length >= limit) break;
    if (kept.every((k) => iou(boxes, c, k) <= maxIou)) kept.push(c);
  }
  return kept;
}

function iou(boxes: Float32Array, i: number, j: number): number {
  const corners = (k: number) => {
    const [y0, x0, y1, x1] = [
      boxes[4 * k]!,
      boxes[4 * k + 1]!,
      boxes[4 * k + 2]!,
      boxes[4 * k + 3]!,
    ];
    return [Math.min(y0, y1), Math.min(x0, x1), Math.max(y0, y1), Math.max(x0, x1)] as const;
  };
  const [ay0, ax0, ay1, ax1] = corners(i);
  const [by0, bx0, by1, bx1] = corners(j);
  const areaA = (ay1 - ay0) * (ax1 - ax0);
  const areaB = (by1 - by0) * (bx1 - bx0);
  if (areaA <= 0 || areaB <= 0) return 0;
  const inter =
    Math.max(Math.min(ay1, by1) - Math.max(ay0, by0), 0) *
    Math.max(Math.min(ax1, bx1) - Math.max(ax0, bx0), 0);
  return inter / (areaA + areaB - inter);
}
