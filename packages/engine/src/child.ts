import sharp from 'sharp';
import type { EngineConfigInput } from './config.js';
import { FaceEngine } from './engine.js';
import { ENGINE_CONFIG_ENV, type FromChild, type ToChild } from './ipc.js';
import { createLogger } from './log.js';

/**
 * An inference process: loads the models once, then handles one job at a time for its parent
 * EnginePool. Inference runs on this process's own event loop, never on the parent's.
 */
const logger = createLogger(
  'facefleet-engine',
  (process.env.FACEFLEET_LOG_LEVEL as 'info' | undefined) ?? 'info',
);

// One libvips thread per process: the pool already runs one process per core. No libvips
// operation cache: every job is a new image, so it would only hold memory (up to 50 MB).
sharp.concurrency(1);
sharp.cache(false);

function send(message: FromChild): void {
  // The parent may be gone (killed): then nobody waits for this message and 'disconnect' ends us.
  if (process.connected) process.send?.(message, undefined, {}, () => undefined);
}

async function main(): Promise<void> {
  let engine: FaceEngine;
  try {
    engine = await FaceEngine.create(
      JSON.parse(process.env[ENGINE_CONFIG_ENV] ?? '{}') as EngineConfigInput,
      logger,
    );
  } catch (error) {
    send({ type: 'fatal', message: error instanceof Error ? error.message : String(error) });
    process.disconnect?.();
    process.exitCode = 1;
    return;
  }

  let stopping = false;
  let busy = false;
  const stop = () => {
    stopping = true;
    if (!busy) process.disconnect?.();
  };
  // Ctrl-C reaches the whole process group; the parent decides when its processes stop.
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', stop);
  process.on('message', (message: ToChild) => {
    if (message.type === 'stop') {
      stop();
      return;
    }

    busy = true;
    void engine.process(message.job, message.key).then((result) => {
      busy = false;
      send({
        type: 'result',
        seq: message.seq,
        result,
        tensors: engine.tensorCount(),
        rss: process.memoryUsage.rss(),
      });
      if (stopping) process.disconnect?.();
    });
  });
  // The parent is gone: nothing more will come, and nobody waits for results.
  process.on('disconnect', () => process.exit(0));

  send({ type: 'ready', backend: engine.backend, tensors: engine.tensorCount() });
}

void main();
