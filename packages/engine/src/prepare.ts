/** An 8-bit RGB image, row by row, 3 bytes per pixel. */
export interface RgbImage {
  readonly data: Uint8Array;
  readonly width: number;
  readonly height: number;
}

/** A rectangle of whole pixels inside an image. */
export interface PixelRegion {
  readonly x: number;
  readonly y: number;
  readonly width: number;
  readonly height: number;
}

/**
 * A network input made the way face-api's NetInput.toBatchTensor makes it, without tfjs: the
 * region padded with zeros to a square (at the bottom or right, or `centred` with the odd pixel
 * before), then resized to `size` x `size` by bilinear interpolation with tfjs's
 * resizeBilinear arithmetic (corners not aligned, no half-pixel centres). Written as RGB float32
 * values 0..255 into `out` from `offset`. Working straight from the 8-bit pixels avoids the
 * full-size int32 and float32 copies that tfjs makes (11 MB and more for a 720p frame).
 */
export function squareResize(
  image: RgbImage,
  region: PixelRegion,
  size: number,
  centred: boolean,
  out: Float32Array,
  offset = 0,
): void {
  const { width: w, height: h } = region;
  const side = Math.max(w, h);
  const diff = Math.abs(h - w);
  const before = centred ? diff - Math.round(diff * 0.5) : 0;
  const offX = h > w ? before : 0;
  const offY = w > h ? before : 0;
  const stride = image.width * 3;
  const src = image.data;

  /** Offset in `src` of padded-square pixel (row, col), or -1 in the padding. */
  const at = (row: number, col: number): number => {
    const y = row - offY;
    const x = col - offX;
    if (y < 0 || y >= h || x < 0 || x >= w) return -1;
    return (region.y + y) * stride + (region.x + x) * 3;
  };

  if (side === size) {
    for (let row = 0; row < size; row += 1) {
      for (let col = 0; col < size; col += 1) {
        const o = offset + (row * size + col) * 3;
        const p = at(row, col);
        out[o] = p < 0 ? 0 : src[p]!;
        out[o + 1] = p < 0 ? 0 : src[p + 1]!;
        out[o + 2] = p < 0 ? 0 : src[p + 2]!;
      }
    }
    return;
  }

  // Per output column and row: the two source pixels (as offsets into `src`, -1 in the
  // padding) and the interpolation weight, computed once.
  const ratio = side / size;
  const col0 = new Int32Array(size);
  const col1 = new Int32Array(size);
  const colFrac = new Float64Array(size);
  const colOffset = (col: number) => {
    const x = col - offX;
    return x < 0 || x >= w ? -1 : (region.x + x) * 3;
  };
  for (let col = 0; col < size; col += 1) {
    const f = ratio * col;
    const lo = Math.floor(f);
    col0[col] = colOffset(lo);
    col1[col] = colOffset(Math.min(side - 1, Math.ceil(f)));
    colFrac[col] = f - lo;
  }
  const rowOffset = (row: number) => {
    const y = row - offY;
    return y < 0 || y >= h ? -1 : (region.y + y) * stride;
  };

  for (let row = 0; row < size; row += 1) {
    const f = ratio * row;
    const lo = Math.floor(f);
    const r0 = rowOffset(lo);
    const r1 = rowOffset(Math.min(side - 1, Math.ceil(f)));
    const rf = f - lo;
    let o = offset + row * size * 3;
    for (let col = 0; col < size; col += 1, o += 3) {
      const x0 = col0[col]!;
      const x1 = col1[col]!;
      const cf = colFrac[col]!;
      const tl = r0 < 0 || x0 < 0 ? -1 : r0 + x0;
      const tr = r0 < 0 || x1 < 0 ? -1 : r0 + x1;
      const bl = r1 < 0 || x0 < 0 ? -1 : r1 + x0;
      const br = r1 < 0 || x1 < 0 ? -1 : r1 + x1;
      for (let c = 0; c < 3; c += 1) {
        const vtl = tl < 0 ? 0 : src[tl + c]!;
        const vtr = tr < 0 ? 0 : src[tr + c]!;
        const vbl = bl < 0 ? 0 : src[bl + c]!;
        const vbr = br < 0 ? 0 : src[br + c]!;
        const top = vtl + (vtr - vtl) * cf;
        const bottom = vbl + (vbr - vbl) * cf;
        out[o + c] = top + (bottom - top) * rf;
      }
    }
  }
}

/** The regions of `count` faces as one batch of `size` x `size` inputs. */
export function batchOf(
  image: RgbImage,
  regions: readonly PixelRegion[],
  size: number,
  centred: boolean,
): Float32Array {
  const out = new Float32Array(regions.length * size * size * 3);
  regions.forEach((region, i) =>
    squareResize(image, region, size, centred, out, i * size * size * 3),
  );
  return out;
}
