import { batchNormAffine, foldedBias, type Affine } from '../fold.js';
import { GraphBuilder, type Dim } from './graph.js';
import type { Weight } from './weights.js';

/*
 * The three face-api networks written out as ONNX graphs, layer by layer as face-api 1.7.15 runs
 * them (src/ssdMobilenetv1, src/faceFeatureExtractor + src/faceLandmarkNet,
 * src/faceRecognitionNet). Graph inputs are NHWC like face-api's batch tensors; the graphs turn
 * them to NCHW once, because that is the layout ORT's Conv takes. Per-channel affine steps that
 * face-api applies right after a convolution (batch norm, dlib's scale layer) are folded into the
 * convolution's weights and bias, in double precision, rounded once to float32.
 */

/** A value flowing through the graph in NCHW layout, with its static channel and spatial sizes. */
interface Feature {
  readonly name: string;
  readonly c: number;
  readonly h: number;
  readonly w: number;
}

type Padding = 'same' | 'valid';

class WeightReader {
  constructor(
    private readonly map: ReadonlyMap<string, Weight>,
    private readonly net: string,
  ) {}

  get(name: string, rank?: number): Weight {
    const weight = this.map.get(name);
    if (!weight) throw new Error(`${this.net}: weight ${name} is missing`);
    if (rank !== undefined && weight.shape.length !== rank) {
      throw new Error(`${this.net}: weight ${name} has shape [${weight.shape.join(', ')}]`);
    }
    return weight;
  }
}

/** tfjs's padding for 'same' (TensorFlow's rule: the odd pixel goes after) and 'valid'. */
function padsFor(size: number, kernel: number, stride: number, padding: Padding) {
  if (padding === 'valid')
    return { out: Math.floor((size - kernel) / stride) + 1, before: 0, after: 0 };
  const out = Math.ceil(size / stride);
  const total = Math.max(0, (out - 1) * stride + kernel - size);
  const before = Math.floor(total / 2);
  return { out, before, after: total - before };
}

/** tfjs conv filter [kh, kw, in, out] → ONNX [out, in, kh, kw], each output channel scaled. */
function convFilter(filter: Weight, scale?: Float64Array): Float32Array {
  const [kh, kw, cin, cout] = filter.shape as [number, number, number, number];
  const out = new Float32Array(filter.values.length);
  for (let o = 0; o < cout; o += 1) {
    const s = scale?.[o] ?? 1;
    for (let i = 0; i < cin; i += 1) {
      for (let y = 0; y < kh; y += 1) {
        for (let x = 0; x < kw; x += 1) {
          const v = filter.values[((y * kw + x) * cin + i) * cout + o] ?? 0;
          out[((o * cin + i) * kh + y) * kw + x] = scale ? v * s : v;
        }
      }
    }
  }
  return out;
}

/** tfjs depthwise filter [kh, kw, c, 1] → ONNX grouped filter [c, 1, kh, kw]. */
function depthwiseFilter(filter: Weight, scale?: Float64Array): Float32Array {
  const [kh, kw, c, mult] = filter.shape as [number, number, number, number];
  if (mult !== 1) throw new Error(`depthwise multiplier ${mult} is not supported`);
  const out = new Float32Array(filter.values.length);
  for (let ch = 0; ch < c; ch += 1) {
    const s = scale?.[ch] ?? 1;
    for (let y = 0; y < kh; y += 1) {
      for (let x = 0; x < kw; x += 1) {
        const v = filter.values[(y * kw + x) * c + ch] ?? 0;
        out[(ch * kh + y) * kw + x] = scale ? v * s : v;
      }
    }
  }
  return out;
}

class NetBuilder {
  readonly g: GraphBuilder;
  readonly w: WeightReader;

  constructor(name: string, weights: ReadonlyMap<string, Weight>) {
    this.g = new GraphBuilder(name);
    this.w = new WeightReader(weights, name);
  }

  /** Graph input NHWC [batch, size, size, 3] → NCHW. */
  input(size: number): Feature {
    const name = this.g.op('Transpose', ['input'], { perm: { ints: [0, 3, 1, 2] } });
    return { name, c: 3, h: size, w: size };
  }

  /**
   * A convolution with tfjs's filter layout and padding rule; `groups` equal to the channel count
   * makes it depthwise. `bias` is added inside the Conv.
   */
  conv(
    x: Feature,
    weights: Float32Array,
    k: readonly [number, number],
    cout: number,
    stride: number,
    padding: Padding,
    bias?: Float32Array,
    depthwise = false,
  ): Feature {
    const [kh, kw] = k;
    const ph = padsFor(x.h, kh, stride, padding);
    const pw = padsFor(x.w, kw, stride, padding);
    const cin = depthwise ? 1 : x.c;
    const inputs = [x.name, this.g.constant('W', [cout, cin, kh, kw], weights)];
    if (bias) inputs.push(this.g.constant('B', [cout], bias));
    const name = this.g.op('Conv', inputs, {
      kernel_shape: { ints: [kh, kw] },
      strides: { ints: [stride, stride] },
      pads: { ints: [ph.before, pw.before, ph.after, pw.after] },
      group: { int: depthwise ? x.c : 1 },
      dilations: { ints: [1, 1] },
    });
    return { name, c: cout, h: ph.out, w: pw.out };
  }

  /** tf.conv2d + bias, optionally followed by a per-channel `* scale + shift` folded in. */
  convLayer(
    x: Feature,
    filter: Weight,
    bias: Weight | undefined,
    stride: number,
    padding: Padding,
    affine?: Affine,
  ): Feature {
    const [kh, kw, , cout] = filter.shape as [number, number, number, number];
    const b = foldedBias(bias?.values, cout, affine);
    const hasBias = bias !== undefined || affine !== undefined;
    return this.conv(
      x,
      convFilter(filter, affine?.scale),
      [kh, kw],
      cout,
      stride,
      padding,
      hasBias ? b : undefined,
    );
  }

  depthwise(x: Feature, filter: Weight, stride: number, affine?: Affine): Feature {
    const [kh, kw] = filter.shape as [number, number];
    const bias = affine ? Float32Array.from(affine.shift) : undefined;
    return this.conv(
      x,
      depthwiseFilter(filter, affine?.scale),
      [kh, kw],
      x.c,
      stride,
      'same',
      bias,
      true,
    );
  }

  unary(op: string, x: Feature): Feature {
    return { ...x, name: this.g.op(op, [x.name]) };
  }

  add(a: Feature, b: Feature): Feature {
    return { ...a, name: this.g.op('Add', [a.name, b.name]) };
  }

  clip(x: Feature, lo: number, hi: number): Feature {
    const name = this.g.op('Clip', [x.name, this.g.scalar('lo', lo), this.g.scalar('hi', hi)]);
    return { ...x, name };
  }

  /** face-api's `normalize(x, meanRgb).div(255)` on the NCHW input. */
  meanRgbDiv255(x: Feature): Feature {
    const mean = this.g.constant(
      'mean_rgb',
      [1, 3, 1, 1],
      Float32Array.of(122.782, 117.001, 104.298),
    );
    const centred = this.g.op('Sub', [x.name, mean]);
    return { ...x, name: this.g.op('Div', [centred, this.g.scalar('d255', 255)]) };
  }

  pool(op: 'MaxPool' | 'AveragePool', x: Feature, k: number, stride: number): Feature {
    const p = padsFor(x.h, k, stride, 'valid');
    const q = padsFor(x.w, k, stride, 'valid');
    const name = this.g.op(op, [x.name], {
      kernel_shape: { ints: [k, k] },
      strides: { ints: [stride, stride] },
      pads: { ints: [0, 0, 0, 0] },
    });
    return { ...x, name, h: p.out, w: q.out };
  }

  encode(inputs: Dim[], outputs: Array<{ name: string; dims: Dim[] }>, doc: string): Uint8Array {
    return this.g.encode({
      inputs: [{ name: 'input', dims: inputs }],
      outputs,
      doc,
      producerVersion: '1',
    });
  }
}

/* ------------------------------------------------------------------ SSD MobileNet v1 */

/** SSD MobileNet v1: `input` [1,512,512,3] 0..255 → `boxes` [1,5118,4], `scores` [1,5118]. */
export function buildSsdMobilenetv1(weights: ReadonlyMap<string, Weight>): Uint8Array {
  const n = new NetBuilder('ssd_mobilenetv1', weights);
  const { g, w } = n;
  const size = 512;

  let x = n.input(size);
  // face-api: tf.sub(tf.div(x, 127.5), 1)
  x = { ...x, name: g.op('Div', [x.name, g.scalar('d127_5', 127.5)]) };
  x = { ...x, name: g.op('Sub', [x.name, g.scalar('one', 1)]) };

  const pointwise = (input: Feature, prefix: string, stride: number): Feature => {
    const filters = w.get(`${prefix}/weights`, 4);
    const offset = w.get(`${prefix}/convolution_bn_offset`, 1);
    return n.clip(n.convLayer(input, filters, offset, stride, 'same'), 0, 6);
  };

  const depthwise = (input: Feature, prefix: string, stride: number): Feature => {
    const affine = batchNormAffine(
      w.get(`${prefix}/BatchNorm/gamma`, 1).values,
      w.get(`${prefix}/BatchNorm/beta`, 1).values,
      w.get(`${prefix}/BatchNorm/moving_mean`, 1).values,
      w.get(`${prefix}/BatchNorm/moving_variance`, 1).values,
    );
    const out = n.depthwise(input, w.get(`${prefix}/depthwise_weights`, 4), stride, affine);
    return n.clip(out, 0, 6);
  };

  // mobileNetV1(): conv_0, then 13 depthwise/pointwise pairs; strides 2 at pairs 2, 4, 6, 12.
  x = pointwise(x, 'MobilenetV1/Conv2d_0_pointwise', 2);
  let conv11: Feature | undefined;
  for (let i = 1; i <= 13; i += 1) {
    const stride = [2, 4, 6, 12].includes(i) ? 2 : 1;
    x = depthwise(x, `MobilenetV1/Conv2d_${i}_depthwise`, stride);
    x = pointwise(x, `MobilenetV1/Conv2d_${i}_pointwise`, 1);
    if (i === 11) conv11 = x;
  }
  if (!conv11) throw new Error('ssd: no conv11');

  // predictionLayer()
  const conv: Feature[] = [];
  let y = x;
  for (let i = 0; i < 8; i += 1) {
    y = pointwise(y, `Prediction/Conv2d_${i}_pointwise`, i % 2 === 1 ? 2 : 1);
    conv.push(y);
  }
  const sources = [conv11, x, conv[1], conv[3], conv[5], conv[7]];

  const boxParts: string[] = [];
  const classParts: string[] = [];
  sources.forEach((source, i) => {
    if (!source) throw new Error('ssd: missing feature map');
    const prefix = `Prediction/BoxPredictor_${i}`;
    for (const [kind, parts, depth] of [
      ['BoxEncodingPredictor', boxParts, 4],
      ['ClassPredictor', classParts, 3],
    ] as const) {
      const out = n.convLayer(
        source,
        w.get(`${prefix}/${kind}/weights`, 4),
        w.get(`${prefix}/${kind}/biases`, 1),
        1,
        'same',
      );
      // face-api reshapes the NHWC output to [batch, -1, depth]: anchors run over (y, x, k).
      const nhwc = g.op('Transpose', [out.name], { perm: { ints: [0, 2, 3, 1] } });
      parts.push(g.op('Reshape', [nhwc, g.int64s('shape', [1, -1, depth])]));
    }
  });
  const encodings = g.op('Concat', boxParts, { axis: { int: 1 } });
  const classes = g.op('Concat', classParts, { axis: { int: 1 } });

  // outputLayer(): decode the box encodings against the anchors in Output/extra_dim.
  const anchors = w.get('Output/extra_dim', 3);
  const count = anchors.shape[1] ?? 0;
  const column = (values: Float32Array, k: number) =>
    Float32Array.from({ length: count }, (_, i) => values[i * 4 + k] ?? 0);
  const [a0, a1, a2, a3] = [0, 1, 2, 3].map((k) => column(anchors.values, k)) as [
    Float32Array,
    Float32Array,
    Float32Array,
    Float32Array,
  ];
  // Sizes and centres of the anchors, in float32 steps as tfjs computes them.
  const f = Math.fround;
  const s0 = a2.map((v, i) => f(v - (a0[i] ?? 0)));
  const s1 = a3.map((v, i) => f(v - (a1[i] ?? 0)));
  const c0 = a0.map((v, i) => f(v + f((s0[i] ?? 0) / 2)));
  const c1 = a1.map((v, i) => f(v + f((s1[i] ?? 0) / 2)));
  const dims = [1, count, 1];
  const [S0, S1, C0, C1] = [s0, s1, c0, c1].map((v) => g.constant('anchor', dims, v)) as [
    string,
    string,
    string,
    string,
  ];

  const enc = (k: number) =>
    g.op('Slice', [
      encodings,
      g.int64s('start', [k]),
      g.int64s('end', [k + 1]),
      g.int64s('axis', [2]),
    ]);
  const [v0, v1, v2, v3] = [0, 1, 2, 3].map(enc) as [string, string, string, string];
  const five = g.scalar('five', 5);
  const ten = g.scalar('ten', 10);
  const two = g.scalar('two', 2);
  const half = (v: string, s: string) =>
    g.op('Div', [g.op('Mul', [g.op('Exp', [g.op('Div', [v, five])]), s]), two]);
  const centre = (v: string, s: string, c: string) =>
    g.op('Add', [g.op('Mul', [g.op('Div', [v, ten]), s]), c]);
  const div0 = half(v2, S0);
  const add0 = centre(v0, S0, C0);
  const div1 = half(v3, S1);
  const add1 = centre(v1, S1, C1);
  g.op(
    'Concat',
    [
      g.op('Sub', [add0, div0]),
      g.op('Sub', [add1, div1]),
      g.op('Add', [add0, div0]),
      g.op('Add', [add1, div1]),
    ],
    { axis: { int: 2 } },
    'boxes',
  );

  // scores: sigmoid of the second class column (the first is the background).
  const faceLogit = g.op('Slice', [
    classes,
    g.int64s('start', [1]),
    g.int64s('end', [2]),
    g.int64s('axis', [2]),
  ]);
  g.op('Reshape', [g.op('Sigmoid', [faceLogit]), g.int64s('shape', [1, count])], {}, 'scores');

  return n.encode(
    [1, size, size, 3],
    [
      { name: 'boxes', dims: [1, count, 4] },
      { name: 'scores', dims: [1, count] },
    ],
    'face-api SsdMobilenetv1.forwardInput before non-maximum suppression. input: RGB 0..255, ' +
      'padded to a square at the bottom/right and resized to 512x512 (NetInput.toBatchTensor(512, false)).',
  );
}

/* ------------------------------------------------------------------ 68-point landmarks */

/** FaceLandmark68Net: `input` [N,112,112,3] 0..255 → `landmarks` [N,136] (runNet output). */
export function buildFaceLandmark68(weights: ReadonlyMap<string, Weight>): Uint8Array {
  const n = new NetBuilder('face_landmark_68', weights);
  const { g, w } = n;

  // depthwiseSeparableConv: tf.separableConv2d (depthwise 'same', then 1x1) + bias.
  const separable = (x: Feature, prefix: string, stride: number): Feature => {
    const dw = n.depthwise(x, w.get(`${prefix}/depthwise_filter`, 4), stride);
    return n.convLayer(
      dw,
      w.get(`${prefix}/pointwise_filter`, 4),
      w.get(`${prefix}/bias`, 1),
      1,
      'valid',
    );
  };

  // denseBlock4 with the additions in face-api's order.
  const denseBlock4 = (x: Feature, prefix: string, first: boolean): Feature => {
    const out1 = n.unary(
      'Relu',
      first
        ? n.convLayer(
            x,
            w.get(`${prefix}/conv0/filters`, 4),
            w.get(`${prefix}/conv0/bias`, 1),
            2,
            'same',
          )
        : separable(x, `${prefix}/conv0`, 2),
    );
    const out2 = separable(out1, `${prefix}/conv1`, 1);
    const in3 = n.unary('Relu', n.add(out1, out2));
    const out3 = separable(in3, `${prefix}/conv2`, 1);
    const in4 = n.unary('Relu', n.add(out1, n.add(out2, out3)));
    const out4 = separable(in4, `${prefix}/conv3`, 1);
    return n.unary('Relu', n.add(out1, n.add(out2, n.add(out3, out4))));
  };

  let x = n.meanRgbDiv255(n.input(112));
  x = denseBlock4(x, 'dense0', true);
  x = denseBlock4(x, 'dense1', false);
  x = denseBlock4(x, 'dense2', false);
  x = denseBlock4(x, 'dense3', false);
  x = n.pool('AveragePool', x, 7, 2);
  if (x.h !== 1 || x.w !== 1) throw new Error('landmarks: features are not 1x1');

  const flat = g.op('Flatten', [x.name], { axis: { int: 1 } });
  const fcW = w.get('fc/weights', 2);
  const fcB = w.get('fc/bias', 1);
  const outDim = fcW.shape[1] ?? 0;
  const product = g.op('MatMul', [flat, g.constant('fc_w', [...fcW.shape], fcW.values)]);
  g.op('Add', [product, g.constant('fc_b', [outDim], fcB.values)], {}, 'landmarks');

  return n.encode(
    ['batch', 112, 112, 3],
    [{ name: 'landmarks', dims: ['batch', outDim] }],
    'face-api FaceLandmark68Net.runNet: 68 (x, y) pairs relative to the 112x112 input. input: RGB ' +
      '0..255 of the face, padded to a square around its centre and resized (toBatchTensor(112, true)).',
  );
}

/* ------------------------------------------------------------------ face descriptor (dlib ResNet) */

/** FaceRecognitionNet: `input` [N,150,150,3] 0..255 → `descriptor` [N,128]. */
export function buildFaceRecognition(weights: ReadonlyMap<string, Weight>): Uint8Array {
  const n = new NetBuilder('face_recognition', weights);
  const { g, w } = n;

  // convLayer: conv + bias, then the scale layer (* weights + biases), folded into one Conv.
  const convLayer = (
    x: Feature,
    prefix: string,
    stride: number,
    relu: boolean,
    padding: Padding,
  ) => {
    const scale = Float64Array.from(w.get(`${prefix}/scale/weights`, 1).values);
    const shift = Float64Array.from(w.get(`${prefix}/scale/biases`, 1).values);
    const out = n.convLayer(
      x,
      w.get(`${prefix}/conv/filters`, 4),
      w.get(`${prefix}/conv/bias`, 1),
      stride,
      padding,
      { scale, shift },
    );
    return relu ? n.unary('Relu', out) : out;
  };

  const residual = (x: Feature, prefix: string): Feature => {
    let out = convLayer(x, `${prefix}/conv1`, 1, true, 'same');
    out = convLayer(out, `${prefix}/conv2`, 1, false, 'same');
    return n.unary('Relu', n.add(out, x));
  };

  const residualDown = (x: Feature, prefix: string): Feature => {
    let out = convLayer(x, `${prefix}/conv1`, 2, true, 'valid');
    out = convLayer(out, `${prefix}/conv2`, 1, false, 'same');
    let pooled = n.pool('AveragePool', x, 2, 2);
    // face-api appends a zero row and column when the pooled map is larger than the conv output,
    // and zero channels when the conv output has more channels.
    const dh = pooled.h - out.h;
    const dw = pooled.w - out.w;
    if (dh < 0 || dw < 0 || dh > 1 || dw > 1) throw new Error(`${prefix}: unexpected shapes`);
    if (dh > 0 || dw > 0) {
      const name = g.op('Pad', [out.name, g.int64s('pads', [0, 0, 0, 0, 0, 0, dh, dw])]);
      out = { ...out, name, h: pooled.h, w: pooled.w };
    }
    if (out.c !== pooled.c) {
      const name = g.op('Pad', [
        pooled.name,
        g.int64s('pads', [0, 0, 0, 0, 0, out.c - pooled.c, 0, 0]),
      ]);
      pooled = { ...pooled, name, c: out.c };
    }
    return n.unary('Relu', n.add(pooled, out));
  };

  let x = n.meanRgbDiv255(n.input(150));
  x = convLayer(x, 'conv32_down', 2, true, 'valid');
  x = n.pool('MaxPool', x, 3, 2);
  x = residual(x, 'conv32_1');
  x = residual(x, 'conv32_2');
  x = residual(x, 'conv32_3');
  x = residualDown(x, 'conv64_down');
  x = residual(x, 'conv64_1');
  x = residual(x, 'conv64_2');
  x = residual(x, 'conv64_3');
  x = residualDown(x, 'conv128_down');
  x = residual(x, 'conv128_1');
  x = residual(x, 'conv128_2');
  x = residualDown(x, 'conv256_down');
  x = residual(x, 'conv256_1');
  x = residual(x, 'conv256_2');
  x = residualDown(x, 'conv256_down_out');

  const mean = g.op('ReduceMean', [x.name], { axes: { ints: [2, 3] }, keepdims: { int: 0 } });
  const fc = w.get('fc', 2);
  const outDim = fc.shape[1] ?? 0;
  g.op('MatMul', [mean, g.constant('fc', [...fc.shape], fc.values)], {}, 'descriptor');

  return n.encode(
    ['batch', 150, 150, 3],
    [{ name: 'descriptor', dims: ['batch', outDim] }],
    'face-api FaceRecognitionNet.forwardInput: the 128-d face descriptor (not L2-normalised). ' +
      'input: RGB 0..255 of the face, padded to a square around its centre and resized ' +
      '(toBatchTensor(150, true)).',
  );
}
