import type * as TfApi from '@tensorflow/tfjs';
import type { FaceApi } from './backend.js';
import { batchNormAffine, foldedBias, type Affine } from './fold.js';
import { ONNX_INPUT_SIZE } from './onnx/runtime.js';
import type { Networks } from './stages.js';

/*
 * face-api's SSD MobileNet v1 and recognition net rewritten for tfjs with fused operations: each
 * convolution takes its bias and activation inside one kernel (tf.fused.conv2d and
 * tf.fused.depthwiseConv2d, which XNNPACK runs in one pass on the wasm backend), and the
 * per-channel steps that face-api runs as separate operations over whole feature maps (the
 * depthwise batch norms of MobileNet, the scale layers of the ResNet) are folded into the
 * convolution's weights and bias once at start-up, in double precision and rounded once to
 * float32, as the ONNX export folds them. Measured on wasm, one thread, on a 512 x 512 input:
 * the detector from 271 to 220 ms alone, from 290 to 233 ms within `npm run bench`; a descriptor
 * from 25 to 20 ms. The landmark net is face-api's own (about 3 % of the time). Results equal
 * face-api's forward passes to float32 rounding (test/onnx-nets.test.ts holds both ports to it).
 */

/** face-api's `tf` is the whole tfjs module at run time; its type declares only a part. */
type Tf = typeof TfApi;
type Tensor = TfApi.Tensor;
type Tensor4D = TfApi.Tensor4D;
type Tensor1D = TfApi.Tensor1D;
/** A tensor of face-api's params: its values are read once, at start-up. */
type Param = { dataSync(): ArrayLike<number>; readonly shape: number[] };
type ParamTree = { readonly [key: string]: ParamTree } & Partial<Param>;

/** One convolution with its bias (and folded affine step) ready for a fused kernel. */
interface FusedConv {
  readonly filter: Tensor4D;
  readonly bias: Tensor1D;
}

function param(tree: ParamTree, path: string): Param {
  let node: ParamTree | undefined = tree;
  for (const key of path.split('/')) node = node?.[key];
  if (!node?.dataSync || !node.shape) throw new Error(`face-api params: ${path} is missing`);
  return node as Param;
}

/**
 * A conv filter [kh, kw, in, out] (or a depthwise one [kh, kw, c, 1]) and its bias, with the
 * affine step after it folded in (fold.ts).
 */
function fold(
  tf: Tf,
  filter: Param,
  bias: ArrayLike<number> | undefined,
  affine?: Affine,
  depthwise = false,
): FusedConv {
  // The channel an entry scales is the last axis of a conv filter, the third of a depthwise one
  // (whose last axis, the multiplier, is 1): either way the index modulo the channel count.
  const channels = depthwise ? filter.shape[2]! : filter.shape[3]!;
  const values = filter.dataSync();
  const folded = new Float32Array(values.length);
  for (let i = 0; i < values.length; i += 1) {
    folded[i] = affine ? values[i]! * affine.scale[i % channels]! : values[i]!;
  }
  return {
    filter: tf.tensor4d(folded, filter.shape as [number, number, number, number]),
    bias: tf.tensor1d(foldedBias(bias, channels, affine)),
  };
}

/** A tensor of its own with a param's values, so that face-api's network can be released. */
function copy(tf: Tf, p: Param): Tensor {
  return tf.tensor(Float32Array.from(p.dataSync()), p.shape);
}

/** A depthwise layer's batch norm in face-api's params, as scale and shift. */
function batchNormOf(tree: ParamTree, prefix: string): Affine {
  const values = (name: string) => param(tree, `${prefix}/batch_norm_${name}`).dataSync();
  return batchNormAffine(values('scale'), values('offset'), values('mean'), values('variance'));
}

/** The SSD MobileNet v1 forward pass before non-maximum suppression, fused. */
function ssdMobilenetv1(tf: Tf, params: ParamTree) {
  const mobilenet = params.mobilenetv1 as ParamTree;
  const prediction = params.prediction_layer as ParamTree;
  // face-api's pointwise layer: conv2d, + batch_norm_offset, clip to 0..6.
  const pointwise = (tree: ParamTree, name: string) =>
    fold(tf, param(tree, `${name}/filters`), param(tree, `${name}/batch_norm_offset`).dataSync());
  const backbone = Array.from({ length: 13 }, (_, k) => {
    const i = k + 1;
    const dw = `conv_${i}/depthwise_conv`;
    return {
      stride: [2, 4, 6, 12].includes(i) ? 2 : 1,
      depthwise: fold(
        tf,
        param(mobilenet, `${dw}/filters`),
        undefined,
        batchNormOf(mobilenet, dw),
        true,
      ),
      pointwise: pointwise(mobilenet, `conv_${i}/pointwise_conv`),
    };
  });
  const conv0 = pointwise(mobilenet, 'conv_0');
  const extra = Array.from({ length: 8 }, (_, i) => pointwise(prediction, `conv_${i}`));
  const predictor = (i: number, kind: 'box_encoding_predictor' | 'class_predictor') => {
    const name = `box_predictor_${i}/${kind}`;
    return fold(
      tf,
      param(prediction, `${name}/filters`),
      param(prediction, `${name}/bias`).dataSync(),
    );
  };
  const heads = Array.from({ length: 6 }, (_, i) => ({
    box: predictor(i, 'box_encoding_predictor'),
    cls: predictor(i, 'class_predictor'),
  }));
  const anchors = copy(tf, param(params, 'output_layer/extra_dim'));

  const conv = (x: Tensor4D, c: FusedConv, strides: number, relu6: boolean) =>
    tf.fused.conv2d({
      x,
      filter: c.filter,
      strides,
      pad: 'same',
      bias: c.bias,
      activation: relu6 ? 'relu6' : 'linear',
    });

  // Layer by layer, each map released as soon as the next is made: tf.tidy over the whole pass
  // would keep every intermediate map alive to its end, and the wasm heap keeps its high-water
  // mark for the life of the process (measured with the batches of stages.ts: 110 MiB resident).
  /** The six feature maps the heads read, from the backbone and the extra layers. */
  const features = (input: Tensor4D): Tensor4D[] => {
    const kept: Tensor4D[] = [];
    let x = tf.tidy(() => conv(tf.sub(tf.div(input, 127.5), 1), conv0, 2, true));
    let y = x;
    try {
      for (const [k, layer] of backbone.entries()) {
        const depthwise = tf.fused.depthwiseConv2d({
          x,
          filter: layer.depthwise.filter,
          strides: layer.stride,
          pad: 'same',
          bias: layer.depthwise.bias,
          activation: 'relu6',
        });
        if (!kept.includes(x)) x.dispose();
        x = conv(depthwise, layer.pointwise, 1, true);
        depthwise.dispose();
        if (k + 1 === 11) kept.push(x);
      }
      kept.push(x);
      y = x;
      for (const [i, layer] of extra.entries()) {
        const next = conv(y, layer, i % 2 === 1 ? 2 : 1, true);
        if (!kept.includes(y)) y.dispose();
        y = next;
        if (i % 2 === 1) kept.push(y);
      }
      return kept;
    } catch (error) {
      // Disposing twice is harmless: x and y may be among `kept`.
      tf.dispose([...kept, x, y]);
      throw error;
    }
  };

  const forward = (input: Tensor4D) => {
    const maps = features(input);
    try {
      return tf.tidy(() => decode(maps));
    } finally {
      tf.dispose(maps);
    }
  };

  /** The six prediction heads on the six feature maps, then face-api's output layer. */
  const decode = (sources: Tensor4D[]) => {
    const encodings = tf.concat(
      sources.map((s, i) => tf.reshape(conv(s, heads[i]!.box, 1, false), [1, -1, 4])),
      1,
    );
    const classes = tf.concat(
      sources.map((s, i) => tf.reshape(conv(s, heads[i]!.cls, 1, false), [1, -1, 3])),
      1,
    );

    // face-api's outputLayer: decode the encodings against the anchors, sigmoid of class 1.
    const [a0, a1, a2, a3] = tf.unstack(tf.transpose(tf.reshape(anchors, [-1, 4]), [1, 0]));
    const [e0, e1, e2, e3] = tf.unstack(tf.transpose(tf.reshape(encodings, [-1, 4]), [1, 0]));
    const s0 = tf.sub(a2!, a0!);
    const s1 = tf.sub(a3!, a1!);
    const c0 = tf.add(a0!, tf.div(s0, 2));
    const c1 = tf.add(a1!, tf.div(s1, 2));
    const half0 = tf.div(tf.mul(tf.exp(tf.div(e2!, 5)), s0), 2);
    const centre0 = tf.add(tf.mul(tf.div(e0!, 10), s0), c0);
    const half1 = tf.div(tf.mul(tf.exp(tf.div(e3!, 5)), s1), 2);
    const centre1 = tf.add(tf.mul(tf.div(e1!, 10), s1), c1);
    const boxes = tf.transpose(
      tf.stack([
        tf.sub(centre0, half0),
        tf.sub(centre1, half1),
        tf.add(centre0, half0),
        tf.add(centre1, half1),
      ]),
      [1, 0],
    );
    const scores = tf.reshape(tf.sigmoid(tf.slice(classes, [0, 0, 1], [-1, -1, 1])), [-1]);
    return { boxes, scores };
  };

  return {
    forward,
    tensors: [
      conv0,
      ...backbone.flatMap((l) => [l.depthwise, l.pointwise]),
      ...extra,
      ...heads.flatMap((h) => [h.box, h.cls]),
    ],
    owned: [anchors],
  };
}

/** face-api's FaceRecognitionNet (dlib's ResNet), each conv + scale layer folded into one. */
function faceRecognition(tf: Tf, params: ParamTree) {
  const layer = (name: string): FusedConv => {
    const scale = Float64Array.from(param(params, `${name}/scale/weights`).dataSync());
    const shift = Float64Array.from(param(params, `${name}/scale/biases`).dataSync());
    const bias = param(params, `${name}/conv/bias`).dataSync();
    return fold(tf, param(params, `${name}/conv/filters`), bias, { scale, shift });
  };
  const down = layer('conv32_down');
  const blocks = [
    '32_1',
    '32_2',
    '32_3',
    '64_down',
    '64_1',
    '64_2',
    '64_3',
    '128_down',
    '128_1',
    '128_2',
    '256_down',
    '256_1',
    '256_2',
    '256_down_out',
  ].map((name) => ({
    downsample: name.endsWith('down') || name.endsWith('down_out'),
    conv1: layer(`conv${name}/conv1`),
    conv2: layer(`conv${name}/conv2`),
  }));
  const fc = copy(tf, param(params, 'fc')) as TfApi.Tensor2D;
  const mean = tf.tensor1d([122.782, 117.001, 104.298]);

  const conv = (x: Tensor4D, c: FusedConv, strides: number, relu: boolean, pad: 'same' | 'valid') =>
    tf.fused.conv2d({
      x,
      filter: c.filter,
      strides,
      pad,
      bias: c.bias,
      activation: relu ? 'relu' : 'linear',
    });

  /** One residual block on x; face-api's residualDown pads where the shapes differ. */
  const residual = (x: Tensor4D, block: (typeof blocks)[number]): Tensor4D => {
    if (!block.downsample) {
      const out = conv(conv(x, block.conv1, 1, true, 'same'), block.conv2, 1, false, 'same');
      return tf.relu(tf.add<Tensor4D>(out, x));
    }
    // A zero row and column when the pooled map is larger, zero channels when the convolution
    // has more.
    let out = conv(conv(x, block.conv1, 2, true, 'valid'), block.conv2, 1, false, 'same');
    let pooled = tf.avgPool(x, 2, 2, 'valid');
    const [, ph, pw, pc] = pooled.shape;
    const [, oh, ow, oc] = out.shape;
    if (ph !== oh || pw !== ow)
      out = tf.pad(out, [
        [0, 0],
        [0, ph - oh],
        [0, pw - ow],
        [0, 0],
      ]);
    if (pc !== oc)
      pooled = tf.pad(pooled, [
        [0, 0],
        [0, 0],
        [0, 0],
        [0, oc - pc],
      ]);
    return tf.relu(tf.add<Tensor4D>(pooled, out));
  };

  // Block by block, each map released once the next is made (see the detector's forward).
  const forward = (input: Tensor4D) => {
    let x = tf.tidy(() =>
      tf.maxPool(
        conv(tf.div<Tensor4D>(tf.sub(input, mean), 255), down, 2, true, 'valid'),
        3,
        2,
        'valid',
      ),
    );
    try {
      for (const block of blocks) {
        const next = tf.tidy(() => residual(x, block));
        x.dispose();
        x = next;
      }
      return tf.tidy(() => tf.matMul(tf.mean<TfApi.Tensor2D>(x, [1, 2]), fc));
    } finally {
      x.dispose();
    }
  };

  return {
    forward,
    tensors: [down, ...blocks.flatMap((b) => [b.conv1, b.conv2])],
    owned: [mean, fc],
  };
}

/** face-api networks with their weights loaded; the fused ports copy what they need of them. */
export interface FaceApiNetworks {
  /** SSD MobileNet v1; absent when the Tiny Face Detector is used instead. */
  readonly ssdMobilenetv1?: { readonly params: unknown };
  readonly faceLandmark68Net: InstanceType<FaceApi['FaceLandmark68Net']>;
  readonly faceRecognitionNet: { readonly params: unknown };
}

/**
 * The three networks on the active tfjs backend, fed the prepared inputs (RGB float32 0..255,
 * NHWC): the detector and the recognition net fused as above, the landmark net face-api's own.
 * The fused nets hold copies of every weight they use, so the caller may release face-api's
 * detector and recognition net right after this returns; the landmark net is used as it is.
 */
export function fusedTfjsNets(
  faceapi: FaceApi,
  nets: FaceApiNetworks,
): Networks & { dispose(): void } {
  const tf = faceapi.tf as unknown as Tf;
  const ssd = nets.ssdMobilenetv1
    ? ssdMobilenetv1(tf, nets.ssdMobilenetv1.params as ParamTree)
    : undefined;
  const recognition = faceRecognition(tf, nets.faceRecognitionNet.params as ParamTree);

  const read = async (tensor: Tensor): Promise<Float32Array> => {
    try {
      return (await tensor.data()) as Float32Array;
    } finally {
      tensor.dispose();
    }
  };

  return {
    async detect(batch) {
      const size = ONNX_INPUT_SIZE.detector;
      if (!ssd) throw new Error('SSD MobileNet v1 is not loaded');
      const input = tf.tensor4d(batch, [1, size, size, 3]);
      try {
        const { boxes, scores } = ssd.forward(input);
        return { boxes: await read(boxes), scores: await read(scores) };
      } finally {
        input.dispose();
      }
    },
    async landmarks(batch, n) {
      if (n === 0) return new Float32Array(0);
      const size = ONNX_INPUT_SIZE.landmarks;
      const images = faceapi.tf.tidy(() =>
        faceapi.tf.unstack(faceapi.tf.tensor4d(batch, [n, size, size, 3])),
      );
      try {
        const out = nets.faceLandmark68Net.runNet(await faceapi.toNetInput(images));
        return await read(out as unknown as Tensor);
      } finally {
        images.forEach((t) => t.dispose());
      }
    },
    async describe(batch, n) {
      if (n === 0) return new Float32Array(0);
      const size = ONNX_INPUT_SIZE.recognition;
      const input = tf.tensor4d(batch, [n, size, size, 3]);
      try {
        return await read(recognition.forward(input));
      } finally {
        input.dispose();
      }
    },
    dispose() {
      for (const c of [...(ssd?.tensors ?? []), ...recognition.tensors])
        tf.dispose([c.filter, c.bias]);
      tf.dispose([...(ssd?.owned ?? []), ...recognition.owned]);
    },
  };
}
