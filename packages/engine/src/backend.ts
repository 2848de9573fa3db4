import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type * as FaceApiTypes from '@vladmandic/face-api';
import type { BackendName } from './config.js';

export type FaceApi = typeof FaceApiTypes;

/** The parts of the full tfjs API the engine uses beyond face-api's own `tf` export. */
interface TfRuntime {
  setBackend(name: string): Promise<boolean>;
  ready(): Promise<void>;
  getBackend(): string;
  enableProdMode(): void;
  memory(): { numTensors: number; numBytes: number };
  env(): { getAsync(flag: string): Promise<unknown> };
  version_core: string;
}

export interface BackendInfo {
  readonly name: Exclude<BackendName, 'auto'>;
  readonly tfjs: string;
  /** For wasm: whether the SIMD build runs. */
  readonly simd?: boolean;
  /** For `auto`: why a faster backend was not taken. */
  readonly fallbackReason?: string;
}

export interface Runtime {
  readonly faceapi: FaceApi;
  readonly tf: TfRuntime;
  readonly backend: BackendInfo;
}

const require = createRequire(import.meta.url);

/**
 * Loads tfjs and face-api on the requested backend. `auto` takes tfjs-node where it is installed
 * and loads (its native binding needs libtensorflow, which its install downloads), else wasm.
 * The pure-JS cpu backend is never a silent fallback: it runs only when asked for by name.
 */
export async function loadRuntime(requested: BackendName): Promise<Runtime> {
  if (requested === 'tfjs-node') return loadTfjsNode();
  if (requested === 'wasm') return loadWasm();
  if (requested === 'cpu') return loadCpu();

  try {
    return await loadTfjsNode();
  } catch (error) {
    const reason = error instanceof Error ? error.message.split('\n', 1)[0] : String(error);
    return loadWasm(`tfjs-node not usable: ${reason}`);
  }
}

async function loadTfjsNode(): Promise<Runtime> {
  let tf: TfRuntime;
  try {
    tf = require('@tensorflow/tfjs-node') as TfRuntime;
  } catch (error) {
    throw new Error(
      `@tensorflow/tfjs-node does not load (${(error as Error).message.split('\n', 1)[0]})`,
    );
  }
  const faceapi = require('@vladmandic/face-api/dist/face-api.node.js') as FaceApi;
  await activate(tf, 'tensorflow');
  return { faceapi, tf, backend: { name: 'tfjs-node', tfjs: tf.version_core } };
}

async function loadWasm(fallbackReason?: string): Promise<Runtime> {
  const tf = require('@tensorflow/tfjs') as TfRuntime;
  const wasm = require('@tensorflow/tfjs-backend-wasm') as { setWasmPaths(prefix: string): void };
  // The .wasm binaries ship inside the npm package: load them from disk, never from a CDN.
  const wasmDir = dirname(
    require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm-simd.wasm'),
  );
  wasm.setWasmPaths(`${wasmDir}/`);
  const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js') as FaceApi;
  await activate(tf, 'wasm');
  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
  return {
    faceapi,
    tf,
    backend: {
      name: 'wasm',
      tfjs: tf.version_core,
      simd,
      ...(fallbackReason ? { fallbackReason } : {}),
    },
  };
}

async function loadCpu(): Promise<Runtime> {
  const tf = require('@tensorflow/tfjs') as TfRuntime;
  const faceapi = require('@vladmandic/face-api/dist/face-api.node-wasm.js') as FaceApi;
  await activate(tf, 'cpu');
  return { faceapi, tf, backend: { name: 'cpu', tfjs: tf.version_core } };
}

async function activate(tf: TfRuntime, name: string): Promise<void> {
  const ok = await tf.setBackend(name);
  await tf.ready();
  if (!ok || tf.getBackend() !== name) {
    throw new Error(`the tfjs ${name} backend did not initialise (active: ${tf.getBackend()})`);
  }
  tf.enableProdMode();
}
