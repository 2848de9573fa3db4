import { randomBytes } from 'node:crypto';
import { Queue } from 'bullmq';
import { FaceProducer } from '@facefleet/fleet';
import { round } from './stats.js';

/** Jobs per second for `count` file jobs added in batches of 500, on a fresh prefix, removed after. */
export async function benchEnqueue(
  count: number,
): Promise<{ jobs: number; jobsPerSecond: number }> {
  const prefix = `bench-${randomBytes(4).toString('hex')}`;
  const producer = await FaceProducer.connect({ prefix });
  const jobs = Array.from({ length: count }, (_, i) => ({
    id: `frame-${i}`,
    file: `/bench/frames/frame-${String(i).padStart(7, '0')}.jpg`,
  }));
  try {
    const started = performance.now();
    for (let i = 0; i < jobs.length; i += 500) await producer.enqueue(jobs.slice(i, i + 500));
    const seconds = (performance.now() - started) / 1000;
    return { jobs: count, jobsPerSecond: round(count / seconds, 0) };
  } finally {
    await producer.close();
    const queue = new Queue('faces', {
      connection: { url: process.env.REDIS_URL ?? 'redis://127.0.0.1:6379' },
      prefix,
    });
    await queue.obliterate({ force: true });
    await queue.close();
  }
}
