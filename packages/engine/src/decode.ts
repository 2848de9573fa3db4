import sharp from 'sharp';
import type { Problem } from '@facefleet/protocol';
import { FaceFleetError } from './errors.js';

/** An upright 8-bit sRGB image, 3 channels, row-major. */
export interface DecodedImage {
  readonly data: Buffer;
  readonly width: number;
  readonly height: number;
  /** Things worth knowing that did not stop the image, e.g. IMAGE_TRUNCATED. */
  readonly warnings: Problem[];
}

/** Formats facefleet processes, by what sharp finds in the bytes (never by file name). */
const ACCEPTED_FORMATS = new Set(['jpeg', 'png', 'webp', 'gif', 'tiff', 'heif', 'avif']);

/** libvips/libjpeg/libpng phrases for data that stops early; such images are decoded leniently. */
const TRUNCATION =
  /premature end|read error|truncated|unexpected end|end of (file|stream)|short read/i;

/**
 * Decodes any accepted image into upright 8-bit sRGB: EXIF orientation applied, CMYK, grey and
 * 16-bit converted, alpha dropped (as PIL's convert('RGB') in the seed did), first frame only.
 * Images over `maxPixels` are refused from their header, before any pixel is decoded.
 */
export async function decodeImage(bytes: Buffer, maxPixels: number): Promise<DecodedImage> {
  if (bytes.length === 0) throw new FaceFleetError('IMAGE_EMPTY', 'the image has zero bytes');

  const format = await probeFormat(bytes, maxPixels);
  if (!ACCEPTED_FORMATS.has(format)) {
    throw new FaceFleetError(
      'IMAGE_UNSUPPORTED',
      `${format} images are not processed; send JPEG, PNG, WebP, GIF, TIFF or AVIF`,
    );
  }

  try {
    return { ...(await toRgb(bytes, maxPixels, 'warning')), warnings: [] };
  } catch (error) {
    const message = errorMessage(error);
    if (!TRUNCATION.test(message)) throw decodeError(message);

    // What is there is decoded and searched; the status says the image was cut short.
    const image = await toRgb(bytes, maxPixels, 'none').catch((e: unknown) => {
      throw decodeError(errorMessage(e));
    });
    const warning = {
      code: 'IMAGE_TRUNCATED',
      message: `the ${format} data ends early (${firstLine(message)}); the part that was there was searched`,
    };
    return { ...image, warnings: [warning] };
  }
}

async function probeFormat(bytes: Buffer, maxPixels: number): Promise<string> {
  try {
    const meta = await sharp(bytes, { limitInputPixels: maxPixels }).metadata();
    return meta.format;
  } catch (error) {
    throw decodeError(errorMessage(error));
  }
}

async function toRgb(bytes: Buffer, maxPixels: number, failOn: 'warning' | 'none') {
  const { data, info } = await sharp(bytes, { limitInputPixels: maxPixels, failOn })
    .autoOrient()
    .removeAlpha()
    .toColourspace('srgb')
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });

  if (info.channels !== 3) {
    throw new FaceFleetError('IMAGE_CORRUPT', `decoded to ${info.channels} channels instead of 3`);
  }
  return { data, width: info.width, height: info.height };
}

function decodeError(message: string): FaceFleetError {
  const line = firstLine(message);
  if (/exceeds pixel limit/i.test(message)) {
    return new FaceFleetError(
      'IMAGE_TOO_LARGE',
      `the image has more pixels than the limit (${line})`,
    );
  }
  if (/unsupported image format|empty/i.test(message)) {
    return new FaceFleetError(
      'IMAGE_UNSUPPORTED',
      'the bytes are not an image in a format facefleet reads',
    );
  }
  return new FaceFleetError('IMAGE_CORRUPT', `the image cannot be decoded: ${line}`);
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function firstLine(message: string): string {
  return message.split('\n', 1)[0] ?? message;
}
