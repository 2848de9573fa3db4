import { DEFAULT_MODELS_DIR, installModels, readManifest, readNetworks } from '@facefleet/engine';

/** `facefleet models install`: copies the pinned weights into models/ and checks their sha256. */
export async function modelsInstall(dir: string = DEFAULT_MODELS_DIR): Promise<number> {
  const { copied, kept } = await installModels(dir);
  process.stderr.write(
    `facefleet models: ${copied.length} copied, ${kept.length} already in place (${dir})\n`,
  );
  return 0;
}

/** `facefleet models verify`: reads every model file and checks it against the manifest. */
export async function modelsVerify(dir: string = DEFAULT_MODELS_DIR): Promise<number> {
  const manifest = await readManifest(dir);
  const networks = [...new Set(manifest.files.map((f) => f.network))];
  await readNetworks(dir, networks);
  process.stderr.write(`facefleet models: ${manifest.files.length} files verified in ${dir}\n`);
  return 0;
}
