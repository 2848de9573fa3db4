import { createLogger, EnginePool } from '@facefleet/engine';

export interface MemoryRow {
  readonly backend: 'onnx' | 'wasm';
  readonly images: number;
  readonly rssMiB: Record<string, number>;
  readonly tensors: number;
}

/**
 * Resident memory of one inference process (the unit a worker runs N of) as it works through
 * `images` images of the corpus in turn: its RSS after the first, then at checkpoints.
 */
export async function benchMemory(
  corpus: string[],
  images: number,
  backend: 'onnx' | 'wasm',
): Promise<MemoryRow> {
  const pool = await EnginePool.start({
    processes: 1,
    engine: { backend },
    logger: createLogger('bench', 'warn'),
    logLevel: 'warn',
  });
  const checkpoints = new Set([1, 50, 100, 250, images]);
  const rssMiB: Record<string, number> = {};
  let tensors = 0;
  try {
    for (let i = 1; i <= images; i += 1) {
      const file = corpus[(i - 1) % corpus.length]!;
      const outcome = await pool.run({ id: `m-${i}`, file });
      if (outcome.result.status.status === 'failed')
        throw new Error(`bench: ${file} failed: ${JSON.stringify(outcome.result.status.error)}`);
      tensors = outcome.tensors;
      if (checkpoints.has(i)) rssMiB[`after ${i}`] = Math.round(outcome.rss / 2 ** 20);
    }
  } finally {
    await pool.close();
  }
  return { backend, images, rssMiB, tensors };
}
