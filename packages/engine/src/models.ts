import { createHash } from 'node:crypto';
import { copyFile, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { z } from 'zod';

const FileEntrySchema = z.object({
  file: z.string(),
  network: z.string(),
  bytes: z.number().int().positive(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

const ManifestSchema = z.object({
  source: z.object({ package: z.string(), version: z.string(), path: z.string() }),
  files: z.array(FileEntrySchema),
  /** ONNX models generated from the weights of `network` by facefleet's exporter (never copied). */
  onnx: z.array(FileEntrySchema).default([]),
});
export type ModelManifest = z.infer<typeof ManifestSchema>;

/** A network's weights as read from disk and checked: the weights manifest and its binary shards. */
export interface NetworkFiles {
  readonly specs: WeightsManifest;
  readonly shards: ArrayBuffer[];
}

type WeightsManifest = Array<{
  paths: string[];
  weights: Array<{ name: string; shape: number[]; dtype: string }>;
}>;

/** Start-up stops with this when a model file is missing or altered; the message says how to fix it. */
export class ModelError extends Error {
  override name = 'ModelError';
}

export async function readManifest(modelsDir: string): Promise<ModelManifest> {
  const path = join(modelsDir, 'manifest.json');
  let text;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    throw new ModelError(
      `The model manifest ${path} is missing. Restore models/manifest.json from the facefleet repository.`,
    );
  }
  return ManifestSchema.parse(JSON.parse(text));
}

function fixHint(manifest: ModelManifest): string {
  const { package: pkg, version } = manifest.source;
  return `Run "npx facefleet models install" (or "npm run build") to copy it again from ${pkg}@${version}.`;
}

/**
 * Reads the files of the named networks and checks each against its sha256 in the manifest.
 * Every weight byte the engine uses passes through here, so a corrupt file cannot load quietly.
 */
export async function readNetworks(
  modelsDir: string,
  networks: readonly string[],
): Promise<Map<string, NetworkFiles>> {
  const manifest = await readManifest(modelsDir);
  const contents = new Map<string, Buffer>();

  for (const entry of manifest.files.filter((f) => networks.includes(f.network))) {
    const path = join(modelsDir, entry.file);
    const bytes = await readFile(path).catch(() => {
      throw new ModelError(`Model file ${path} is missing. ${fixHint(manifest)}`);
    });
    const digest = createHash('sha256').update(bytes).digest('hex');
    if (digest !== entry.sha256) {
      throw new ModelError(
        `Model file ${path} is corrupt (sha256 ${digest}, expected ${entry.sha256}). ${fixHint(manifest)}`,
      );
    }
    contents.set(entry.file, bytes);
  }

  const result = new Map<string, NetworkFiles>();
  for (const network of networks) {
    const specFile = manifest.files.find(
      (f) => f.network === network && f.file.endsWith('-weights_manifest.json'),
    );
    if (!specFile)
      throw new ModelError(`The model manifest lists no weights manifest for network ${network}.`);

    const specs = JSON.parse(String(contents.get(specFile.file))) as WeightsManifest;
    const shards = specs
      .flatMap((group) => group.paths)
      .map((shard) => {
        const bytes = contents.get(shard);
        if (!bytes)
          throw new ModelError(
            `The model manifest does not list ${shard}, which ${specFile.file} needs.`,
          );
        return bytes.buffer.slice(
          bytes.byteOffset,
          bytes.byteOffset + bytes.byteLength,
        ) as ArrayBuffer;
      });
    result.set(network, { specs, shards });
  }
  return result;
}

/**
 * Copies the manifest's files from the pinned npm package into `modelsDir`, checking each
 * sha256, then writes the ONNX models that are missing or differ from the manifest, generated
 * from those weights, and checks theirs too. Run at build time; the engine itself never fetches,
 * copies or generates model files.
 */
export async function installModels(
  modelsDir: string,
): Promise<{ copied: string[]; kept: string[]; generated: string[] }> {
  const manifest = await readManifest(modelsDir);
  const require = createRequire(import.meta.url);
  const pkgJson = require.resolve(`${manifest.source.package}/package.json`);
  const pkg = JSON.parse(await readFile(pkgJson, 'utf8')) as { version: string };
  if (pkg.version !== manifest.source.version) {
    throw new ModelError(
      `${manifest.source.package} ${pkg.version} is installed but the model manifest pins ${manifest.source.version}; run "npm ci".`,
    );
  }

  await mkdir(modelsDir, { recursive: true });
  const from = join(dirname(pkgJson), manifest.source.path);
  const copied: string[] = [];
  const kept: string[] = [];
  for (const entry of manifest.files) {
    const target = join(modelsDir, entry.file);
    if ((await sha256Of(target)) === entry.sha256) {
      kept.push(entry.file);
      continue;
    }
    await copyFile(join(from, entry.file), target);
    const digest = await sha256Of(target);
    if (digest !== entry.sha256) {
      throw new ModelError(
        `${relative(process.cwd(), join(from, entry.file))} does not match its sha256 in the manifest (${digest}).`,
      );
    }
    copied.push(entry.file);
  }

  const generated: string[] = [];
  for (const entry of manifest.onnx) {
    const target = join(modelsDir, entry.file);
    if ((await sha256Of(target)) === entry.sha256) {
      kept.push(entry.file);
      continue;
    }
    // Imported here rather than at the top: the exporter itself reads weights through this module.
    const { exportOnnx } = await import('./onnx/export.js');
    const bytes = await exportOnnx(modelsDir, entry.network);
    const digest = createHash('sha256').update(bytes).digest('hex');
    if (digest !== entry.sha256) {
      throw new ModelError(
        `The ONNX export of ${entry.network} has sha256 ${digest}, but the model manifest expects ${entry.sha256} for ${entry.file}: the exporter and models/manifest.json disagree.`,
      );
    }
    await writeFile(`${target}.tmp`, bytes);
    await rename(`${target}.tmp`, target);
    generated.push(entry.file);
  }
  return { copied, kept, generated };
}

async function sha256Of(path: string): Promise<string | undefined> {
  const bytes = await readFile(path).catch(() => undefined);
  return bytes && createHash('sha256').update(bytes).digest('hex');
}

/** Checks every generated ONNX model against its sha256 in the manifest; returns their names. */
export async function verifyOnnxFiles(modelsDir: string): Promise<string[]> {
  const manifest = await readManifest(modelsDir);
  for (const entry of manifest.onnx) {
    const path = join(modelsDir, entry.file);
    const digest = await sha256Of(path);
    if (digest === undefined)
      throw new ModelError(`ONNX model ${path} is missing. ${fixHint(manifest)}`);
    if (digest !== entry.sha256)
      throw new ModelError(
        `ONNX model ${path} is corrupt or out of date (sha256 ${digest}, expected ${entry.sha256}). ${fixHint(manifest)}`,
      );
  }
  return manifest.onnx.map((e) => e.file);
}
