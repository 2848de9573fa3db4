import sharp from 'sharp';
import type { EngineConfigInput } from './config.js';
import { FaceEngine } from './engine.js';
import { ENGINE_CONFIG_ENV, type FromChild, type ToChild } from './ipc.js';
import { createLogger } from './log.js';

/**
 * An inference process: loads the models once, then runs its parent EnginePool's jobs one at a
 * time, holding the next ones the parent sends ahead. Inference runs on this process's own event
 * loop, never on the parent's.
 */
const logger = createLogger(
  'facefleet-engine',
  (process.env.FACEFLEET_LOG_LEVEL as 'info' | undefined) ?? 'info',
);

// One libvips thread per process: the pool already runs one process per core. No libvips
// operation cache: every job is a new image, so it would only hold memory (up to 50 MB).
sharp.concurrency(1);
sharp.cache(false);

type JobMessage = Extract<ToChild, { type: 'job' }>;

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
  /** Jobs sent ahead by the parent: the next starts as soon as the running one is answered. */
  const waiting: JobMessage[] = [];
  const stop = () => {
    stopping = true;
    if (!busy && waiting.length === 0) process.disconnect?.();
  };
  const run = (message: JobMessage) => {
    busy = true;
    void engine.process(message.job, message.key).then((result) => {
      // The next job starts before this result is sent, and the parent learns which it is.
      const next = waiting.shift();
      send({
        type: 'result',
        seq: message.seq,
        result,
        tensors: engine.tensorCount(),
        rss: process.memoryUsage.rss(),
        ...(next ? { next: next.seq } : {}),
      });
      if (next) run(next);
      else {
        busy = false;
        if (stopping) process.disconnect?.();
      }
    });
  };
  // Ctrl-C reaches the whole process group; the parent decides when its processes stop.
  process.on('SIGINT', () => undefined);
  process.on('SIGTERM', stop);
  process.on('message', (message: ToChild) => {
    if (message.type === 'stop') stop();
    else if (!busy) run(message);
    else if (message.urgent) {
      // A caller waits for it: before every bulk job waiting here, after the urgent ones.
      const at = waiting.findIndex((m) => !m.urgent);
      waiting.splice(at < 0 ? waiting.length : at, 0, message);
    } else waiting.push(message);
  });
  // The parent is gone: nothing more will come, and nobody waits for results.
  process.on('disconnect', () => process.exit(0));

  send({ type: 'ready', backend: engine.backend, tensors: engine.tensorCount() });
}

void main();
