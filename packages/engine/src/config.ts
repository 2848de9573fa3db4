import { fileURLToPath } from 'node:url';
import { z } from 'zod';

/** Where models live: `FACEFLEET_MODELS_DIR`, else `models/` at the root of the facefleet checkout. */
export const DEFAULT_MODELS_DIR =
  process.env.FACEFLEET_MODELS_DIR ?? fileURLToPath(new URL('../../../models/', import.meta.url));

export const BACKENDS = ['auto', 'onnx', 'tfjs-node', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];

export const DETECTORS = ['ssd', 'tiny'] as const;
export type DetectorName = (typeof DETECTORS)[number];

export const EngineConfigSchema = z
  .object({
    /** Directory holding `manifest.json` and the weight files it lists. */
    modelsDir: z.string().min(1).default(DEFAULT_MODELS_DIR),
    /**
     * `auto` takes onnx (onnxruntime-node) where it loads, else tfjs-node, else wasm. The pure-JS
     * `cpu` backend is ~35× slower than wasm and runs only when asked for by name.
     */
    backend: z.enum(BACKENDS).default('auto'),
    /**
     * The face detector: `ssd` (SSD MobileNet v1, the default and the accurate one) or `tiny` (the
     * Tiny Face Detector: faster, misses small and turned faces; see BENCHMARKS.md).
     */
    detector: z.enum(DETECTORS).default('ssd'),
    /** Input size of the Tiny Face Detector (a multiple of 32); larger finds smaller faces. */
    tinyInputSize: z.number().int().min(128).max(1024).multipleOf(32).default(416),
    /** Threads one onnxruntime operator may use; 1 suits one inference process per core. */
    threads: z.number().int().min(1).max(64).default(1),
    /** Minimum detection score, for either detector. */
    minConfidence: z.number().min(0).max(1).default(0.5),
    /** The most faces reported for one image. */
    maxFaces: z.number().int().positive().default(100),
    /** Images that declare more pixels than this are refused before decoding. */
    maxPixels: z.number().int().positive().default(100_000_000),
    /** The most bytes read for one image from a file, a URL or base64 data. */
    maxBytes: z
      .number()
      .int()
      .positive()
      .default(64 * 1024 * 1024),
    /** Total time allowed for fetching one URL, redirects included. */
    urlTimeoutMs: z.number().int().positive().default(30_000),
    /** Time allowed for a URL's connection to open. */
    urlConnectTimeoutMs: z.number().int().positive().default(10_000),
    /** Redirects followed for one URL; each is checked like the first address. */
    maxRedirects: z.number().int().min(0).max(10).default(3),
    /** Hosts or CIDR ranges that URL jobs may reach although private (FACEFLEET_URL_ALLOW). */
    urlAllow: z.array(z.string().min(1)).default(() =>
      (process.env.FACEFLEET_URL_ALLOW ?? '')
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  })
  .strict();

export type EngineConfig = z.output<typeof EngineConfigSchema>;
export type EngineConfigInput = z.input<typeof EngineConfigSchema>;

export function parseEngineConfig(input: EngineConfigInput = {}): EngineConfig {
  return EngineConfigSchema.parse(input);
}
