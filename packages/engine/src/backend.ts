import { createRequire } from 'node:module';
import { dirname } from 'node:path';
import type * as FaceApiTypes from '@vladmandic/face-api';
import { DEFAULT_MODELS_DIR, type BackendName } from './config.js';
import { ModelError } from './models.js';
import { OnnxNets } from './onnx/runtime.js';

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
  /** For onnx: the onnxruntime-node version and its threads per operator. */
  readonly onnxruntime?: string;
  readonly threads?: number;
}

/**
 * tfjs with face-api, and for the onnx backend the ONNX sessions. On onnx, tfjs (wasm) still
 * builds the networks' inputs (crops, padding, resizing), so both paths share that code.
 */
export interface Runtime {
  readonly faceapi: FaceApi;
  readonly tf: TfRuntime;
  readonly backend: BackendInfo;
  readonly onnx?: OnnxNets;
}

export interface RuntimeOptions {
  readonly modelsDir: string;
  /** onnxruntime's threads per operator. */
  readonly threads: number;
}

const require = createRequire(import.meta.url);

/**
 * Loads the requested backend. `auto` takes onnx where onnxruntime-node's native binding loads,
 * else tfjs-node where it is installed and loads (its install downloads libtensorflow), else
 * wasm; each step down is named in `fallbackReason`. A missing or corrupt ONNX model is not a
 * reason to step down: it stops start-up like any model error. The pure-JS cpu backend is never
 * a silent fallback: it runs only when asked for by name.
 */
export async function loadRuntime(
  requested: BackendName,
  options: RuntimeOptions = { modelsDir: DEFAULT_MODELS_DIR, threads: 1 },
): Promise<Runtime> {
  if (requested === 'onnx') return loadOnnx(options);
  if (requested === 'tfjs-node') return loadTfjsNode();
  if (requested === 'wasm') return loadWasm();
  if (requested === 'cpu') return loadCpu();

  const reasons: string[] = [];
  try {
    return await loadOnnx(options);
  } catch (error) {
    if (error instanceof ModelError) throw error;
    reasons.push(`onnx not usable: ${firstLine(error)}`);
  }
  try {
    return await loadTfjsNode();
  } catch (error) {
    reasons.push(`tfjs-node not usable: ${firstLine(error)}`);
    return loadWasm(reasons.join('; '));
  }
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split('\n', 1)[0] ?? '';
}

async function loadOnnx(options: RuntimeOptions): Promise<Runtime> {
  const onnx = await OnnxNets.create({
    modelsDir: options.modelsDir,
    intraOpNumThreads: options.threads,
  });
  const pre = await loadWasm();
  return {
    ...pre,
    onnx,
    backend: {
      name: 'onnx',
      tfjs: pre.backend.tfjs,
      ...(pre.backend.simd !== undefined ? { simd: pre.backend.simd } : {}),
      onnxruntime: onnx.version,
      threads: onnx.threads,
    },
  };
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
