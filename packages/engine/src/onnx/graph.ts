import {
  AttributeType,
  DataType,
  encodeModel,
  type AttributeMessage,
  type NodeMessage,
  type TensorMessage,
  type ValueInfoMessage,
} from './proto.js';

/** The ONNX operator set the graphs are written for (Clip, Pad and Slice take tensors as inputs). */
export const OPSET = 17;
const IR_VERSION = 8;

export type Attribute =
  | { readonly int: number }
  | { readonly ints: readonly number[] }
  | { readonly float: number }
  | { readonly string: string };

/** A dimension of a graph input or output: a fixed size or a named free one (the batch). */
export type Dim = number | string;

/** Little-endian bytes of a float32 array, as ONNX's raw_data wants them on any host. */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

function float32Bytes(values: Float32Array): Uint8Array {
  if (LITTLE_ENDIAN) return new Uint8Array(values.slice().buffer);
  const bytes = new Uint8Array(values.length * 4);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < values.length; i += 1) view.setFloat32(i * 4, values[i] ?? 0, true);
  return bytes;
}

function int64Bytes(values: readonly number[]): Uint8Array {
  const bytes = new Uint8Array(values.length * 8);
  const view = new DataView(bytes.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return bytes;
}

function valueInfo(name: string, dims: readonly Dim[]): ValueInfoMessage {
  return {
    name,
    type: {
      tensor_type: {
        elem_type: DataType.FLOAT,
        shape: {
          dim: dims.map((d) => (typeof d === 'number' ? { dim_value: d } : { dim_param: d })),
        },
      },
    },
  };
}

function attribute(name: string, value: Attribute): AttributeMessage {
  if ('int' in value) return { name, type: AttributeType.INT, i: value.int };
  if ('ints' in value) return { name, type: AttributeType.INTS, ints: [...value.ints] };
  if ('float' in value) return { name, type: AttributeType.FLOAT, f: value.float };
  return { name, type: AttributeType.STRING, s: new TextEncoder().encode(value.string) };
}

/**
 * Collects nodes and constant tensors of one graph in the order they are added, naming values
 * from a counter, so that the same calls always give the same model.
 */
export class GraphBuilder {
  private readonly nodes: NodeMessage[] = [];
  private readonly initializers: TensorMessage[] = [];
  private readonly names = new Set<string>();
  private counter = 0;

  constructor(private readonly graphName: string) {}

  private fresh(hint: string): string {
    this.counter += 1;
    const name = `${hint}_${this.counter}`;
    this.names.add(name);
    return name;
  }

  /** A float32 constant; `values.length` must equal the product of `dims`. */
  constant(hint: string, dims: readonly number[], values: Float32Array): string {
    const size = dims.reduce((a, b) => a * b, 1);
    if (size !== values.length) {
      throw new Error(`constant ${hint}: ${values.length} values for shape [${dims.join(', ')}]`);
    }
    const name = this.fresh(hint);
    this.initializers.push({
      name,
      dims: [...dims],
      data_type: DataType.FLOAT,
      raw_data: float32Bytes(values),
    });
    return name;
  }

  scalar(hint: string, value: number): string {
    return this.constant(hint, [], Float32Array.of(value));
  }

  /** A 1-d int64 constant (shapes, pads, slice bounds). */
  int64s(hint: string, values: readonly number[]): string {
    const name = this.fresh(hint);
    this.initializers.push({
      name,
      dims: [values.length],
      data_type: DataType.INT64,
      raw_data: int64Bytes(values),
    });
    return name;
  }

  /** Adds one node and returns the name of its (single) output, or `output` when given. */
  op(
    opType: string,
    inputs: readonly string[],
    attributes: Readonly<Record<string, Attribute>> = {},
    output?: string,
  ): string {
    const out = output ?? this.fresh(opType.toLowerCase());
    if (output !== undefined) {
      if (this.names.has(output)) throw new Error(`value ${output} is already defined`);
      this.names.add(output);
    }
    this.nodes.push({
      name: `${opType}_${this.nodes.length}`,
      op_type: opType,
      input: [...inputs],
      output: [out],
      attribute: Object.entries(attributes).map(([key, value]) => attribute(key, value)),
    });
    return out;
  }

  /** Serialises the graph as a model with the given float32 inputs and outputs. */
  encode(options: {
    inputs: ReadonlyArray<{ name: string; dims: readonly Dim[] }>;
    outputs: ReadonlyArray<{ name: string; dims: readonly Dim[] }>;
    doc: string;
    producerVersion: string;
  }): Uint8Array {
    return encodeModel({
      ir_version: IR_VERSION,
      producer_name: 'facefleet',
      producer_version: options.producerVersion,
      model_version: 1,
      graph: {
        name: this.graphName,
        doc_string: options.doc,
        node: this.nodes,
        initializer: this.initializers,
        input: options.inputs.map((v) => valueInfo(v.name, v.dims)),
        output: options.outputs.map((v) => valueInfo(v.name, v.dims)),
      },
      opset_import: [{ domain: '', version: OPSET }],
    });
  }
}
