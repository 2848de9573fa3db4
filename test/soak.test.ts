import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createLogger, EnginePool, type PoolOutcome } from '@facefleet/engine';
import { data } from './helpers.js';

// Both inference paths: tfjs keeps its tensors in a WebAssembly heap that never shrinks, and
// onnxruntime sizes its buffers per input shape; either could creep. The default backend (onnx)
// takes the full 2,000 images; wasm, four times slower, half as many.
describe.each([
  ['onnx', 2000],
  ['wasm', 1000],
] as const)('a soak of %s', (backend, images) => {
  it(`keeps resident memory over ${images} images within 10% of where it was after 200, and the tensor count flat`, async () => {
    const pool = await EnginePool.start({
      processes: 1,
      engine: { backend },
      logger: createLogger('soak', 'silent'),
      logLevel: 'silent',
    });
    const chips = data('justadudewhohacks_face-recognition.js/examples/data/faces');
    const photos = [
      'ageitgey_face_recognition/tests/test_images/obama.jpg',
      'ageitgey_face_recognition/examples/two_people.jpg',
      'justadudewhohacks_face-api.js/test/images/faces.jpg',
      'derived/obama_cmyk.jpg',
      'derived/empty.jpg',
    ].map(data);
    const files = readdirSync(chips).map((f) => join(chips, f));
    try {
      const samples: PoolOutcome[] = [];
      for (let i = 0; i < images; i += 1) {
        // Every fourth image is a photo through detection; the rest are chips in aligned mode.
        const job =
          i % 4 === 0
            ? { id: i, file: photos[(i / 4) % photos.length]! }
            : { id: i, file: files[i % files.length]!, options: { aligned: true } };
        samples.push(await pool.run(job));
      }
      const at200 = samples[199]!;
      const atEnd = samples[images - 1]!;

      expect(samples.filter((s) => s.result.status.error?.code === 'INTERNAL')).toEqual([]);
      expect(new Set(samples.map((s) => s.pid)).size).toBe(1);
      expect(atEnd.tensors).toBe(at200.tensors);
      expect(atEnd.rss).toBeLessThanOrEqual(at200.rss * 1.1);
      console.info(
        `soak (${backend}): rss ${Math.round(at200.rss / 2 ** 20)} MiB after 200, ${Math.round(atEnd.rss / 2 ** 20)} MiB after ${images}; tensors ${atEnd.tensors}`,
      );
    } finally {
      await pool.close();
    }
  }, 900_000);
});
