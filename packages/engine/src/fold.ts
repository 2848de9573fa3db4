/*
 * Folding a per-channel affine step (a batch norm, dlib's scale layer) into the convolution before
 * it, in double precision and rounded once to float32: shared by the ONNX export (onnx/nets.ts)
 * and the fused tfjs networks (tfjs-nets.ts), so that both fold alike.
 */

/** Per channel: y = x * scale + shift. */
export interface Affine {
  readonly scale: Float64Array;
  readonly shift: Float64Array;
}

/** face-api's batch norm epsilon (SSD MobileNet v1's depthwise layers). */
export const BN_EPSILON = 0.0010000000474974513;

/** tf.batchNorm's (x - mean) * gamma / sqrt(variance + eps) + beta as scale and shift. */
export function batchNormAffine(
  gamma: ArrayLike<number>,
  beta: ArrayLike<number>,
  mean: ArrayLike<number>,
  variance: ArrayLike<number>,
): Affine {
  const scale = new Float64Array(gamma.length);
  const shift = new Float64Array(gamma.length);
  for (let i = 0; i < gamma.length; i += 1) {
    const k = (gamma[i] ?? 0) / Math.sqrt((variance[i] ?? 0) + BN_EPSILON);
    scale[i] = k;
    shift[i] = (beta[i] ?? 0) - (mean[i] ?? 0) * k;
  }
  return { scale, shift };
}

/** A convolution's bias with the affine step after it folded in: bias * scale + shift. */
export function foldedBias(
  bias: ArrayLike<number> | undefined,
  channels: number,
  affine?: Affine,
): Float32Array {
  const b = new Float32Array(channels);
  for (let c = 0; c < channels; c += 1) {
    const raw = bias?.[c] ?? 0;
    b[c] = affine ? raw * (affine.scale[c] ?? 1) + (affine.shift[c] ?? 0) : raw;
  }
  return b;
}
