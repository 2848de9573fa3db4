export { exportOnnx, ONNX_BUILDERS } from './export.js';
export {
  ONNX_INPUT_SIZE,
  ONNX_NETWORKS,
  OnnxNets,
  type Detections,
  type OnnxNetsOptions,
} from './runtime.js';
