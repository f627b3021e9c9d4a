/**
 * Models of a few ONNX nodes, built in memory: the WebGPU availability check (y = x + x), the device uploads
 * (Identity, whose output the session keeps on the GPU) and the CFG combination on the device (measured by
 * bench/unet-io.ts). Dimensions are fixed sizes or symbolic names. Portable: no Node APIs, no ONNX Runtime.
 */
import { create, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType,
  GraphProtoSchema,
  ModelProtoSchema,
  NodeProtoSchema,
  OperatorSetIdProtoSchema,
  TensorProtoSchema,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  type TensorProto,
} from 'onnx-buf';

export type SmallElemType = 'float32' | 'float16' | 'int64';
const ELEM_TYPE: Record<SmallElemType, number> = { float32: 1, float16: 10, int64: 7 };

export interface SmallValue {
  name: string;
  type: SmallElemType;
  dims: ReadonlyArray<number | string>;
}

/** A graph input / output declaration: element type and fixed or symbolic dimensions. */
export function smallValueInfo(v: SmallValue) {
  const dim = v.dims.map((d) =>
    create(TensorShapeProto_DimensionSchema, { value: typeof d === 'number' ? { case: 'dimValue', value: BigInt(d) } : { case: 'dimParam', value: d } }),
  );
  const tensorType = create(TypeProto_TensorSchema, { elemType: ELEM_TYPE[v.type], shape: create(TensorShapeProtoSchema, { dim }) });
  return create(ValueInfoProtoSchema, { name: v.name, type: create(TypeProtoSchema, { value: { case: 'tensorType', value: tensorType } }) });
}

/** A one-dimensional int64 tensor (shapes, pads, axes) stored as raw little-endian data: graph surgery's constants. */
export function int64Tensor(name: string, values: readonly number[]): TensorProto {
  const raw = new Uint8Array(values.length * 8);
  const view = new DataView(raw.buffer);
  values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
  return create(TensorProtoSchema, { name, dataType: ELEM_TYPE.int64, dims: [BigInt(values.length)], rawData: raw });
}

export interface SmallNode {
  opType: string;
  input: string[];
  output: string[];
  /** 'com.microsoft' for ONNX Runtime's contrib ops (opset 1 of that domain is then imported); default ONNX. */
  domain?: string;
  /** Integer attributes. */
  ints?: Record<string, number>;
}

/** The serialized model (opset 17) of `nodes` from the graph `inputs` to the graph `outputs`. */
export function smallModelBytes(name: string, nodes: SmallNode[], inputs: SmallValue[], outputs: SmallValue[]): Uint8Array {
  const graph = create(GraphProtoSchema, {
    name,
    node: nodes.map((n, i) => create(NodeProtoSchema, {
      opType: n.opType, input: n.input, output: n.output, domain: n.domain ?? '', name: `${n.opType.toLowerCase()}_${i}`,
      attribute: Object.entries(n.ints ?? {}).map(([a, v]) => create(AttributeProtoSchema, { name: a, type: AttributeProto_AttributeType.INT, i: BigInt(v) })),
    })),
    input: inputs.map(smallValueInfo),
    output: outputs.map(smallValueInfo),
  });
  const domains = [...new Set(nodes.map((n) => n.domain ?? '').filter((d) => d !== ''))];
  const model = create(ModelProtoSchema, {
    irVersion: 8n,
    opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 17n }), ...domains.map((domain) => create(OperatorSetIdProtoSchema, { domain, version: 1n }))],
    graph,
  });
  return toBinary(ModelProtoSchema, model);
}

/**
 * One com.microsoft MultiHeadAttention node with q [b, s, heads·d] and k, v [b, l, heads·d] of one head size, the
 * form in which ONNX Runtime's WebGPU provider may take its flash-attention kernel; the default scale 1/sqrt(d).
 */
export function multiHeadAttentionModelBytes(type: 'float32' | 'float16', b: number, s: number, l: number, heads: number, d: number): Uint8Array {
  const kv = (name: string): SmallValue => ({ name, type, dims: [b, l, heads * d] });
  return smallModelBytes(
    'asgd_mha',
    [{ opType: 'MultiHeadAttention', domain: 'com.microsoft', input: ['q', 'k', 'v'], output: ['o'], ints: { num_heads: heads } }],
    [{ name: 'q', type, dims: [b, s, heads * d] }, kv('k'), kv('v')],
    [{ name: 'o', type, dims: [b, s, heads * d] }],
  );
}

/** y = x for a tensor of any shape of the element type (rank given): the device upload graph. */
export function identityModelBytes(type: SmallElemType, rank: number): Uint8Array {
  const dims = Array.from({ length: rank }, (_, i) => `d${i}`);
  return smallModelBytes('asgd_upload', [{ opType: 'Identity', input: ['x'], output: ['y'] }], [{ name: 'x', type, dims }], [{ name: 'y', type, dims }]);
}

/**
 * Classifier-free guidance of a CFG batch: out = u + scale * (c - u) for raw = [u; c] ([2, C, h, w], the UNet's
 * output type) and scale [1] of the same type; out is [1, C, h, w].
 */
export function cfgCombineModelBytes(type: 'float32' | 'float16'): Uint8Array {
  const nodes: SmallNode[] = [
    { opType: 'Split', input: ['raw'], output: ['u', 'c'] },
    { opType: 'Sub', input: ['c', 'u'], output: ['d'] },
    { opType: 'Mul', input: ['d', 'scale'], output: ['sd'] },
    { opType: 'Add', input: ['u', 'sd'], output: ['out'] },
  ];
  return smallModelBytes(
    'asgd_cfg_combine',
    nodes,
    [{ name: 'raw', type, dims: [2, 'c', 'h', 'w'] }, { name: 'scale', type, dims: [1] }],
    [{ name: 'out', type, dims: [1, 'c', 'h', 'w'] }],
  );
}
