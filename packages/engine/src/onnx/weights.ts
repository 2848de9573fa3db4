import { z } from 'zod';
import type { NetworkFiles } from '../models.js';

const QuantizationSchema = z.object({
  dtype: z.enum(['uint8', 'uint16']),
  scale: z.number(),
  min: z.number(),
});

const WeightSpecSchema = z.object({
  name: z.string(),
  shape: z.array(z.number().int().nonnegative()),
  dtype: z.enum(['float32', 'int32']),
  quantization: QuantizationSchema.optional(),
});

export interface Weight {
  readonly shape: readonly number[];
  readonly values: Float32Array;
}

/**
 * Turns a network's weights manifest and shards into named float32 arrays, value for value as
 * tfjs's `io.decodeWeights` does: shards are read back to back in manifest order, and a value
 * quantised to uint8/uint16 becomes `q * scale + min`, computed in double precision and then
 * stored as float32. int32 entries (shape constants of the original TensorFlow graph, which
 * face-api never reads) are skipped.
 */
export function decodeWeightMap(files: NetworkFiles): Map<string, Weight> {
  const specs = z.array(WeightSpecSchema).parse(files.specs.flatMap((group) => group.weights));
  const total = files.shards.reduce((sum, shard) => sum + shard.byteLength, 0);
  const all = new Uint8Array(total);
  let at = 0;
  for (const shard of files.shards) {
    all.set(new Uint8Array(shard), at);
    at += shard.byteLength;
  }

  const view = new DataView(all.buffer);
  const out = new Map<string, Weight>();
  let offset = 0;
  for (const spec of specs) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    const q = spec.quantization;
    const width = q ? (q.dtype === 'uint8' ? 1 : 2) : 4;
    if (offset + size * width > total) {
      throw new Error(
        `weights end before ${spec.name} (${offset + size * width} > ${total} bytes)`,
      );
    }
    if (spec.dtype === 'float32') {
      const values = new Float32Array(size);
      for (let i = 0; i < size; i += 1) {
        const p = offset + i * width;
        if (!q) values[i] = view.getFloat32(p, true);
        else {
          const raw = q.dtype === 'uint8' ? view.getUint8(p) : view.getUint16(p, true);
          values[i] = raw * q.scale + q.min;
        }
      }
      out.set(spec.name, { shape: spec.shape, values });
    }
    offset += size * width;
  }
  if (offset !== total) throw new Error(`weights manifest covers ${offset} of ${total} bytes`);
  return out;
}
