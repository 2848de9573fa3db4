import { readNetworks } from '../models.js';
import { buildFaceLandmark68, buildFaceRecognition, buildSsdMobilenetv1 } from './nets.js';
import { decodeWeightMap, type Weight } from './weights.js';

type Builder = (weights: ReadonlyMap<string, Weight>) => Uint8Array;

/** The ONNX graph facefleet builds for each face-api network, by the network's manifest name. */
export const ONNX_BUILDERS: Readonly<Record<string, Builder>> = {
  ssdMobilenetv1: buildSsdMobilenetv1,
  faceLandmark68Net: buildFaceLandmark68,
  faceRecognitionNet: buildFaceRecognition,
};

/**
 * Builds the ONNX model of one network from its weights in `modelsDir` (checked against the
 * manifest's sha256 on the way in). Pure in its input: the same weights give the same bytes.
 */
export async function exportOnnx(modelsDir: string, network: string): Promise<Uint8Array> {
  const build = ONNX_BUILDERS[network];
  if (!build) throw new Error(`no ONNX export is defined for network ${network}`);
  const files = (await readNetworks(modelsDir, [network])).get(network);
  if (!files) throw new Error(`network ${network} was not read`);
  return build(decodeWeightMap(files));
}
