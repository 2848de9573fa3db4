import type { ImageResult, Job } from '@facefleet/protocol';
import type { BackendInfo } from './backend.js';

/** Messages between an EnginePool and its inference processes (Node IPC). */
export type ToChild =
  { type: 'job'; seq: number; job: Job; key?: string; urgent?: boolean } | { type: 'stop' };

export type FromChild =
  | { type: 'ready'; backend: BackendInfo; tensors: number }
  | { type: 'fatal'; message: string }
  | {
      type: 'result';
      seq: number;
      result: ImageResult;
      tensors: number;
      rss: number;
      /** The job the process took up next, from those waiting in it; none if it went idle. */
      next?: number;
    };

/** The environment variable that hands an inference process its engine configuration. */
export const ENGINE_CONFIG_ENV = 'FACEFLEET_ENGINE_CONFIG';
