import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage, FaceEngine, FaceFleetError } from '@facefleet/engine';
import type { ImageResult, Job } from '@facefleet/protocol';
import { data, distance, iou } from './helpers.js';

const OBAMA = 'ageitgey_face_recognition/tests/test_images/obama.jpg';
const SHARP = 'lovell_sharp/test/fixtures';

let engine: FaceEngine;
let original: ImageResult;

async function run(job: Omit<Job, 'id'>): Promise<ImageResult> {
  return engine.process({ id: 'x', ...job } as Job);
}

// Every engine test runs on both inference paths: face-api's nets on tfjs, and onnxruntime.
describe.each(['wasm', 'onnx'] as const)('on the %s backend', (backend) => {
  beforeAll(async () => {
    engine = await FaceEngine.create({ backend, urlAllow: ['127.0.0.1'] });
    original = await run({ file: data(OBAMA) });
    expect(original.records).toHaveLength(1);
  });
  afterAll(() => engine.close());

  describe('when given the derived/ variants of obama.jpg', () => {
    it.each([
      ['obama_exif3.jpg', 1],
      ['obama_exif5.jpg', 1],
      ['obama_exif6.jpg', 1],
      ['obama_exif8.jpg', 1],
      ['obama_cmyk.jpg', 1],
      ['obama_gray.jpg', 1],
      ['obama.webp', 1],
      ['obama_progressive.jpg', 1],
      ['obama_40pct_16bit.png', 0.4],
      ['obama_40pct_anim.gif', 0.4],
    ])(
      'finds the one face of %s where the original has it, with the same descriptor',
      async (name, scale) => {
        const result = await run({ file: data(`derived/${name}`) });
        const face = result.records[0]!;
        const want = original.records[0]!;

        expect(result.status).toMatchObject({ status: 'ok', faces: 1 });
        expect(result.records).toHaveLength(1);
        expect(
          iou(
            face.bbox.map((v) => v / scale),
            want.bbox,
          ),
        ).toBeGreaterThanOrEqual(0.8);
        expect(distance(face.embed, want.embed)).toBeLessThan(0.2);
      },
    );

    it('decodes a truncated JPEG leniently, finds the face in the part that is there, and says so', async () => {
      const result = await run({ file: data('derived/obama_truncated_50pct.jpg') });

      expect(result.status).toMatchObject({ status: 'ok', faces: 1 });
      expect(result.status.warnings?.map((w) => w.code)).toEqual(['IMAGE_TRUNCATED']);
      expect(iou(result.records[0]!.bbox, original.records[0]!.bbox)).toBeGreaterThanOrEqual(0.8);
    });

    it('reads a really sideways photo (no EXIF) as it is, not rotated back', async () => {
      const image = await decodeImage(
        await readFile(data('derived/obama_rot90ccw_noexif.jpg')),
        1e8,
      );

      expect([image.width, image.height]).toEqual([1137, 910]);
    });
  });

  describe('when given files that are not usable images', () => {
    it.each([
      ['derived/empty.jpg', 'IMAGE_EMPTY'],
      ['derived/not_an_image.jpg', 'IMAGE_UNSUPPORTED'],
      [`${SHARP}/check.svg`, 'IMAGE_UNSUPPORTED'],
      [`${SHARP}/corrupt-header.jpg`, 'IMAGE_CORRUPT'],
      [`${SHARP}/giant-image.jpg`, 'IMAGE_TOO_LARGE'],
      [`${SHARP}/65536-uint32-limit.png`, 'IMAGE_TOO_LARGE'],
      ['derived/does-not-exist.jpg', 'FILE_NOT_FOUND'],
      ['derived', 'FILE_UNREADABLE'],
    ])('gives %s a failed status with code %s and a message', async (path, code) => {
      const result = await run({ file: data(path) });

      expect(result.records).toEqual([]);
      expect(result.status).toMatchObject({ status: 'failed', faces: 0, error: { code } });
      expect(result.status.error?.message.length).toBeGreaterThan(10);
    });

    it.each(['truncated.jpg', 'truncated.png'])(
      'decodes %s leniently and marks it IMAGE_TRUNCATED',
      async (name) => {
        const result = await run({ file: data(`${SHARP}/${name}`) });

        expect(result.status.status).not.toBe('failed');
        expect(result.status.warnings?.[0]?.code).toBe('IMAGE_TRUNCATED');
      },
    );

    it('refuses a PDF by its content, whatever its name says', async () => {
      const pdf = Buffer.from(
        '%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n',
      );

      expect((await run({ data: pdf.toString('base64') })).status.error?.code).toBe(
        'IMAGE_UNSUPPORTED',
      );
    });

    it('refuses a TIFF that declares 100000 x 100000 pixels from its header, without decoding', async () => {
      const result = await run({ data: hugeTiff(100_000, 100_000).toString('base64') });

      expect(result.status.error?.code).toBe('IMAGE_TOO_LARGE');
    });

    it('refuses an image over a lower configured pixel limit from its header', async () => {
      await expect(decodeImage(await readFile(data(OBAMA)), 1_000_000)).rejects.toMatchObject({
        code: 'IMAGE_TOO_LARGE',
      });
    });
  });

  /** A minimal little-endian grey TIFF whose header declares the given size over a tiny strip. */
  function hugeTiff(width: number, height: number): Buffer {
    const tags: Array<[number, number, number]> = [
      [256, 4, width], // ImageWidth (LONG)
      [257, 4, height], // ImageLength
      [258, 3, 8], // BitsPerSample
      [259, 3, 1], // Compression: none
      [262, 3, 1], // Photometric: black is zero
      [273, 4, 8 + 2 + tagsLength(9) + 4], // StripOffsets: right after the IFD
      [277, 3, 1], // SamplesPerPixel
      [278, 4, height], // RowsPerStrip
      [279, 4, 16], // StripByteCounts
    ];
    const ifd = Buffer.alloc(2 + tagsLength(tags.length) + 4);
    ifd.writeUInt16LE(tags.length, 0);
    tags.forEach(([tag, type, value], i) => {
      const at = 2 + i * 12;
      ifd.writeUInt16LE(tag, at);
      ifd.writeUInt16LE(type, at + 2);
      ifd.writeUInt32LE(1, at + 4);
      if (type === 3) ifd.writeUInt16LE(value, at + 8);
      else ifd.writeUInt32LE(value, at + 8);
    });
    const header = Buffer.from([0x49, 0x49, 42, 0, 8, 0, 0, 0]);
    return Buffer.concat([header, ifd, Buffer.alloc(16)]);
  }

  function tagsLength(count: number): number {
    return count * 12;
  }

  describe('when given decoder edge cases from sharp', () => {
    it.each([
      ['Landscape_1.jpg', 600, 450],
      ['Landscape_3.jpg', 600, 450],
      ['Landscape_5.jpg', 600, 450],
      ['Landscape_6.jpg', 600, 450],
      ['Landscape_8.jpg', 600, 450],
      ['Portrait_1.jpg', 450, 600],
      ['Portrait_6.jpg', 450, 600],
      ['Portrait_8.jpg', 450, 600],
      ['Channel_digital_image_CMYK_color_no_profile.jpg', 0, 0],
      ['bggn4a16.png', 32, 32],
      ['tbgn2c16.png', 32, 32],
      ['5_webp_a.webp', 0, 0],
      ['animated-loop-3.gif', 370, 285],
      ['animated-loop-3.webp', 370, 285],
      ['full-transparent.png', 300, 300],
      ['pitm.avif', 0, 0],
      ['G31D.TIF', 0, 0],
      ['concert.jpg', 400, 267],
      ['testimgl.jpg', 227, 149],
    ])('decodes %s upright to 8-bit RGB', async (name, width, height) => {
      const image = await decodeImage(await readFile(data(`${SHARP}/${name}`)), 1e8);

      expect(image.data.length).toBe(image.width * image.height * 3);
      if (width > 0) expect([image.width, image.height]).toEqual([width, height]);
    });
  });

  describe('when the same image comes as a file, base64 data and a URL', () => {
    let server: Server;
    let base: string;

    beforeAll(async () => {
      const bytes = await readFile(data(OBAMA));
      server = createServer((req, res) => {
        if (req.url === '/obama.jpg')
          res.writeHead(200, { 'content-type': 'image/jpeg' }).end(bytes);
        else res.writeHead(404).end('not found');
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    });
    afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

    it('gives the same face records for all three', async () => {
      const fromData = await run({ data: (await readFile(data(OBAMA))).toString('base64') });
      const fromUrl = await run({ url: `${base}/obama.jpg` });

      expect(fromData.records).toEqual(original.records);
      expect(fromUrl.records).toEqual(original.records);
      expect(fromUrl.status.source).toBe(`${base}/obama.jpg`);
    });

    it('fails a URL that answers 404 with URL_HTTP_ERROR', async () => {
      const result = await run({ url: `${base}/missing.jpg` });

      expect(result.status.error?.code).toBe('URL_HTTP_ERROR');
    });

    it('fails a URL that is not http(s) with URL_INVALID', async () => {
      expect((await run({ url: 'file:///etc/passwd' })).status.error?.code).toBe('URL_INVALID');
    });

    it('fails invalid base64 with DATA_INVALID_BASE64', async () => {
      expect((await run({ data: 'not base64 at all!' })).status.error?.code).toBe(
        'DATA_INVALID_BASE64',
      );
    });
  });

  describe('FaceFleetError', () => {
    it('carries whether a retry can help from the registry', () => {
      expect(new FaceFleetError('URL_TIMEOUT', 'slow').retryable).toBe(true);
      expect(new FaceFleetError('IMAGE_CORRUPT', 'bad').retryable).toBe(false);
    });
  });
});
