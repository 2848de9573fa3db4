import {
  DEFAULT_MODELS_DIR,
  installModels,
  readManifest,
  readNetworks,
  verifyOnnxFiles,
} from '@facefleet/engine';

/**
 * `facefleet models install`: copies the pinned weights into models/, generates the ONNX models
 * from them, and checks every file's sha256.
 */
export async function modelsInstall(dir: string = DEFAULT_MODELS_DIR): Promise<number> {
  const { copied, kept, generated } = await installModels(dir);
  process.stderr.write(
    `facefleet models: ${copied.length} copied, ${generated.length} ONNX generated, ${kept.length} already in place (${dir})\n`,
  );
  return 0;
}

/** `facefleet models verify`: reads every model file and checks it against the manifest. */
export async function modelsVerify(dir: string = DEFAULT_MODELS_DIR): Promise<number> {
  const manifest = await readManifest(dir);
  const networks = [...new Set(manifest.files.map((f) => f.network))];
  await readNetworks(dir, networks);
  const onnx = await verifyOnnxFiles(dir);
  process.stderr.write(
    `facefleet models: ${manifest.files.length + onnx.length} files verified in ${dir}\n`,
  );
  return 0;
}
