/**
 * A float32 UNet export rewritten to compute in float16, as diffusers runs an SD pipeline in `torch.float16`:
 * half the weights' bytes (optimum writes float32 unless exported on CUDA) and half the bytes every activation moves
 * on a GPU. Where float16 breaks a UNet, the graph keeps float32, as diffusers does:
 * - the timestep's sinusoidal embedding (and SDXL's size conditioning): every node that feeds a Sin or Cos, and the
 *   nodes after them up to the embedding's first matrix product. At t = 999 a float16 argument is off by up to 0.5
 *   radians; the embedding's values themselves lie in [-1, 1] and pass to the float16 layers unharmed;
 * - squares (Pow) and what is computed from them alone (a norm written out: mean of squares, epsilon, square root),
 *   which overflow float16 above 256;
 * - with `attentionScoresFloat32` (diffusers' `upcast_attention`, which SD 2.1's config sets), each Softmax and the
 *   attention scores it reads, back to their MatMul;
 * - what an operator requires in float32 (Resize's scales).
 * Everything else becomes float16: weights (finite values beyond float16's range saturate to +-65504), constants,
 * Casts to float, and the declared types of inputs, outputs and values. A Cast is inserted where a float32 value
 * meets a float16 node or the other way round (one per value and direction; on a constant ONNX Runtime folds it when
 * the session opens).
 *
 * Large weights go to an external-data file (`dataLocation`, next to the written model), written by the caller from
 * `Float16Plan.weights` one tensor at a time, so an SDXL UNet (10 GB in float32) is never held whole. Portable: no
 * Node APIs; the source's external weights come from `external`.
 */
import { create, fromBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema, AttributeProto_AttributeType, ModelProtoSchema, NodeProtoSchema, StringStringEntryProtoSchema, TensorProtoSchema,
  type GraphProto, type ModelProto, type NodeProto, type TensorProto, type TypeProto,
} from 'onnx-buf';
import { toFloat16Bits } from '../core/float16.ts';
import { elementTypes } from './element-types.ts';
import { externalDataEntry, type ExternalBytes } from './float32-upcast.ts';

const FLOAT = 1;
const FLOAT16 = 10;
const EXTERNAL = 1; // TensorProto.DataLocation.EXTERNAL
const FLOAT16_MAX = 65504;
/** Converted weights of at least this many bytes go to the external-data file; smaller ones stay inline. */
const EXTERNAL_BYTES = 1024;
/** Offsets in the external-data file are multiples of this (page-friendly for a runtime that maps the file). */
const ALIGN = 64;

export interface Float16DowncastOptions {
  /** The external-data file the converted weights go to, relative to the written model. */
  dataLocation: string;
  /** Softmax and the attention scores it reads stay float32 (diffusers' `upcast_attention`). Default false. */
  attentionScoresFloat32?: boolean;
}

export interface Float16Counts {
  /** Weights and constants converted to float16. */
  tensors: number;
  /** Nodes left computing in float32 (timestep embedding, squares, attention scores, Resize scales). */
  float32Nodes: number;
  /** Casts inserted where float32 and float16 meet. */
  casts: number;
}

/** One weight for the external-data file: its bytes at `offset`, read from the source and converted or copied. */
export interface Float16Weight {
  name: string;
  offset: number;
  length: number;
  /** The source tensor's float32 values, to be written as float16 ('float16') or as they are ('copy'). */
  source: TensorProto;
  mode: 'float16' | 'copy';
}

export interface Float16Plan {
  /** The rewritten model, its large weights pointing into `dataLocation`. */
  model: ModelProto;
  /** What the external-data file holds, in order of offset; its size is `dataBytes`. */
  weights: Float16Weight[];
  dataBytes: number;
  counts: Float16Counts;
}

/**
 * The converted graph's name beside its source, in Node's files and the browser's storage alike:
 * `<name>.asgd-float16.onnx`, its weights `<name>.asgd-float16.onnx.data`, its record `<name>.asgd-float16.json`.
 */
export function float16Names(source: string): { model: string; data: string; sidecar: string } {
  const base = source.replace(/\.onnx$/i, '');
  const model = `${base}.asgd-float16.onnx`;
  return { model, data: `${model}.data`, sidecar: `${base}.asgd-float16.json` };
}

/** The reason given for a model that already holds float16 tensors: converted (or mixed) by its exporter. */
export const ALREADY_FLOAT16 = 'it already holds float16 tensors';

class DowncastRefused extends Error {}

/** The float16 plan of a serialized float32 model, or why there is none. */
export function float16Plan(bytes: Uint8Array, opts: Float16DowncastOptions): Float16Plan | { reason: string } {
  let model: ModelProto;
  try {
    model = fromBinary(ModelProtoSchema, bytes);
  } catch (err) {
    return { reason: `the model cannot be parsed (${err instanceof Error ? err.message : String(err)})` };
  }
  try {
    return downcastModel(model, opts);
  } catch (err) {
    if (err instanceof DowncastRefused) return { reason: err.message };
    throw err;
  }
}

/** The bytes of one planned weight, as the external-data file holds them. */
export function float16WeightBytes(w: Float16Weight, external?: ExternalBytes): Uint8Array {
  if (w.mode === 'copy') {
    // Only external tensors are copied: their bytes as stored, whatever their type.
    const e = externalEntry(w.source);
    if (!external) throw new Error(`tensor ${w.name} is stored in ${e.location}, which cannot be read here`);
    return external(e);
  }
  return new Uint8Array(toFloat16Array(float32Values(w.source, external)).buffer);
}

function downcastModel(model: ModelProto, opts: Float16DowncastOptions): Float16Plan {
  const g = model.graph;
  if (!g) throw new DowncastRefused('the model has no graph');
  if (g.sparseInitializer.length > 0) throw new DowncastRefused('it has sparse initializers, which this conversion does not read');
  const types = elementTypes(g);
  if ([...types.values()].includes(FLOAT16)) throw new DowncastRefused(ALREADY_FLOAT16);
  const isFloat = (v: string) => v !== '' && types.get(v) === FLOAT;

  const producer = new Map<string, NodeProto>();
  for (const n of g.node) for (const o of n.output) if (o) producer.set(o, n);
  const keep = float32Nodes(g, producer, isFloat, opts.attentionScoresFloat32 === true);
  const half = (n: NodeProto) => !keep.has(n);

  // Values that are not node outputs (graph inputs, initializers) and Constant nodes take the precision of their
  // consumers: float32 when a float32 node reads them (the float16 readers then get a Cast), else float16.
  const sources = new Set<string>([...g.input.map((i) => i.name), ...g.initializer.map((t) => t.name)]);
  const constants = new Map<string, NodeProto>();
  for (const n of g.node) if (n.opType === 'Constant' && n.domain === '' && isFloat(n.output[0] ?? '')) constants.set(n.output[0]!, n);
  const readByFloat32 = new Set<string>();
  for (const n of g.node) {
    if (!keep.has(n)) continue;
    // Any float input, a Cast's too: a float timestep cast to float32 for the embedding stays float32 itself.
    for (const v of n.input) if (isFloat(v)) readByFloat32.add(v);
  }
  const precision = new Map<string, number>();
  for (const v of [...sources, ...constants.keys()]) if (isFloat(v)) precision.set(v, readByFloat32.has(v) ? FLOAT : FLOAT16);
  for (const n of g.node) {
    if (constants.has(n.output[0] ?? '')) continue;
    for (const [i, o] of n.output.entries()) if (isFloat(o)) precision.set(o, fixedFloat32Output(n, i) ? FLOAT : half(n) ? FLOAT16 : FLOAT);
  }

  const counts: Float16Counts = { tensors: 0, float32Nodes: 0, casts: 0 };
  for (const n of keep) if (n.opType !== 'Constant') counts.float32Nodes++;

  // Nodes: attributes that name float32 become float16 in float16 nodes; Casts where precisions meet.
  const casts = new Map<string, string>();
  const nodes: NodeProto[] = [];
  const castTo = (v: string, to: number): string => {
    const key = `${v}\u0000${to}`;
    let name = casts.get(key);
    if (!name) {
      name = `${v}/asgd_${to === FLOAT16 ? 'float16' : 'float32'}`;
      casts.set(key, name);
      nodes.push(create(NodeProtoSchema, {
        name: `${name}/Cast`, opType: 'Cast', input: [v], output: [name],
        attribute: [{ name: 'to', type: AttributeProto_AttributeType.INT, i: BigInt(to) }],
      }));
      counts.casts++;
    }
    return name;
  };
  for (const n of g.node) {
    if (n.domain !== '' && n.domain !== 'ai.onnx') throw new DowncastRefused(`node ${n.name || n.opType} is ${n.domain}.${n.opType}: the conversion knows ONNX's own operators only; convert the export that has no ${n.domain} operators`);
    if (n.attribute.some((a) => a.g || a.graphs.length > 0)) throw new DowncastRefused(`node ${n.name || n.opType} (${n.opType}) has a subgraph, which this conversion does not rewrite`);
    const constant = constants.has(n.output[0] ?? '');
    const own = constant ? precision.get(n.output[0]!)! : half(n) ? FLOAT16 : FLOAT;
    if (own === FLOAT16) {
      for (const a of n.attribute) {
        if ((a.name === 'to' || a.name === 'dtype') && a.i === BigInt(FLOAT)) a.i = BigInt(FLOAT16);
        if (a.t && a.t.dataType === FLOAT && (constant || n.opType === 'ConstantOfShape')) {
          toFloat16Inline(a.t);
          counts.tensors++;
        }
      }
      if (constant) {
        const a = n.attribute.find((x) => x.name === 'value_float' || x.name === 'value_floats');
        if (a) {
          const values = a.name === 'value_float' ? [a.f] : a.floats;
          const t = create(TensorProtoSchema, { dataType: FLOAT, dims: a.name === 'value_float' ? [] : [BigInt(values.length)], floatData: values });
          toFloat16Inline(t);
          n.attribute = [create(AttributeProtoSchema, { name: 'value', type: AttributeProto_AttributeType.TENSOR, t })];
          counts.tensors++;
        }
      }
    }
    if (!constant) {
      for (const [i, v] of n.input.entries()) {
        if (!isFloat(v) || !boundInput(n, i)) continue;
        const want = fixedFloat32Input(n, i) ? FLOAT : own;
        if ((precision.get(v) ?? FLOAT) !== want) n.input[i] = castTo(v, want);
      }
    }
    nodes.push(n);
  }
  g.node = nodes;

  // Initializers: float16 ones converted (large ones to the external-data file), float32 ones kept (external ones
  // copied there, so the written model needs nothing from the source's folder).
  const weights: Float16Weight[] = [];
  let dataBytes = 0;
  const place = (t: TensorProto, mode: Float16Weight['mode'], length: number) => {
    const offset = Math.ceil(dataBytes / ALIGN) * ALIGN;
    // A new message holding the source's data (create would return `t` itself, which is rewritten below).
    const source = create(TensorProtoSchema, { name: t.name, dims: t.dims, dataType: t.dataType, rawData: t.rawData, floatData: t.floatData, dataLocation: t.dataLocation, externalData: t.externalData });
    weights.push({ name: t.name, offset, length, source, mode });
    dataBytes = offset + length;
    t.rawData = new Uint8Array(0);
    t.floatData = [];
    t.dataLocation = EXTERNAL;
    t.externalData = [
      create(StringStringEntryProtoSchema, { key: 'location', value: opts.dataLocation }),
      create(StringStringEntryProtoSchema, { key: 'offset', value: String(offset) }),
      create(StringStringEntryProtoSchema, { key: 'length', value: String(length) }),
    ];
  };
  for (const t of g.initializer) {
    if (t.dataType !== FLOAT) {
      if (t.dataLocation === EXTERNAL) place(t, 'copy', externalLength(t));
      continue;
    }
    const n = elementCount(t);
    if (precision.get(t.name) === FLOAT) {
      if (t.dataLocation === EXTERNAL) place(t, 'copy', n * 4);
      continue;
    }
    counts.tensors++;
    if (n * 2 >= EXTERNAL_BYTES || t.dataLocation === EXTERNAL) {
      place(t, 'float16', n * 2);
      t.dataType = FLOAT16;
    } else {
      toFloat16Inline(t);
    }
  }

  // Declared types.
  const retype = (name: string, t: TypeProto | undefined) => {
    if (t?.value.case !== 'tensorType' || t.value.value.elemType !== FLOAT) return;
    t.value.value.elemType = precision.get(name) ?? FLOAT;
  };
  for (const v of [...g.input, ...g.output, ...g.valueInfo]) retype(v.name, v.type);
  return { model, weights, dataBytes, counts };
}

/** The nodes that stay float32 (see the file's comment). */
function float32Nodes(g: GraphProto, producer: Map<string, NodeProto>, isFloat: (v: string) => boolean, scores: boolean): Set<NodeProto> {
  const keep = new Set<NodeProto>();
  const backward = (v: string) => {
    const stack = [v];
    while (stack.length > 0) {
      const n = producer.get(stack.pop()!);
      if (!n || keep.has(n)) continue;
      keep.add(n);
      // A Cast's input too: the value it converts (a float timestep) keeps its precision.
      for (const [i, x] of n.input.entries()) if (isFloat(x) && (boundInput(n, i) || n.opType === 'Cast')) stack.push(x);
    }
  };
  for (const n of g.node) {
    if (n.opType === 'Sin' || n.opType === 'Cos') backward(n.output[0]!);
    else if (n.opType === 'Pow') keep.add(n);
    // ONNX Runtime's CPU provider has no float16 Range; an arange of frequencies wants float32 anyway.
    else if (n.opType === 'Range' && isFloat(n.output[0] ?? '')) backward(n.output[0]!);
    for (const [i, x] of n.input.entries()) if (isFloat(x) && fixedFloat32Input(n, i)) backward(x);
  }
  if (scores) {
    // Softmax, back through the elementwise scale and mask to the MatMul of q and k.
    for (const n of g.node) {
      if (n.opType !== 'Softmax') continue;
      keep.add(n);
      let cur = producer.get(n.input[0] ?? '');
      while (cur && !keep.has(cur)) {
        keep.add(cur);
        if (!SCORE_STEPS.has(cur.opType)) break;
        const next: string | undefined = cur.input.find((x) => isFloat(x) && producer.has(x) && !isConstantChain(producer.get(x)!, producer));
        cur = next === undefined ? undefined : producer.get(next);
      }
    }
  }
  // Forward: a node whose every float input is float32 (a kept node's output or a constant) stays float32, up to
  // the first matrix product or convolution.
  const constant = new Set<string>(g.initializer.map((t) => t.name));
  for (const n of g.node) {
    const bound = n.input.filter((x, i) => isFloat(x) && boundInput(n, i));
    if (n.opType === 'Constant' || (n.input.every((x) => x === '' || constant.has(x)) && n.input.length > 0)) {
      for (const o of n.output) constant.add(o);
      continue;
    }
    if (keep.has(n) || bound.length === 0 || MATRIX_OPS.has(n.opType) || !n.output.some(isFloat)) continue;
    const fromKept = (x: string) => { const p = producer.get(x); return p !== undefined && keep.has(p) && p.opType !== 'Constant'; };
    if (bound.some(fromKept) && bound.every((x) => fromKept(x) || constant.has(x))) keep.add(n);
  }
  return keep;
}

function isConstantChain(n: NodeProto, producer: Map<string, NodeProto>): boolean {
  return n.opType === 'Constant' || (n.input.length > 0 && n.input.every((x) => x === '' || (producer.has(x) && isConstantChain(producer.get(x)!, producer))));
}

const MATRIX_OPS = new Set(['MatMul', 'Gemm', 'Conv', 'ConvTranspose', 'Einsum']);
/** What lies between an attention's Softmax and its MatMul of q and k: the scale and the mask. */
const SCORE_STEPS = new Set(['Mul', 'Div', 'Add', 'Sub', 'Where']);

/** Whether input `i` of `n` must have the node's float type (false: any type, or a type of its own). */
function boundInput(n: NodeProto, i: number): boolean {
  switch (n.opType) {
    case 'Cast': case 'Shape': case 'Size': case 'EyeLike': case 'RandomNormalLike': case 'RandomUniformLike':
      return false;
    case 'CastLike':
      return i === 1;
    case 'Resize':
      return i === 0 || i === 2;
    case 'Upsample':
      return true;
    default:
      return true;
  }
}

/** Inputs ONNX types as float32 whatever the data's type: Resize's and Upsample's scales. */
function fixedFloat32Input(n: NodeProto, i: number): boolean {
  return (n.opType === 'Resize' && i === 2) || (n.opType === 'Upsample' && i === 1);
}

/** Outputs ONNX types as float32 whatever the data's type: LayerNormalization's mean and inverse deviation. */
function fixedFloat32Output(n: NodeProto, i: number): boolean {
  return n.opType === 'LayerNormalization' && i > 0;
}

function elementCount(t: TensorProto): number {
  return t.dims.reduce((s, d) => s * Number(d), 1);
}

function externalEntry(t: TensorProto): { location: string; offset: number; length?: number } {
  const e = externalDataEntry(t);
  if (!e.location) throw new DowncastRefused(`tensor ${t.name} is stored outside the model with no location`);
  return { ...e, location: e.location };
}

function externalLength(t: TensorProto): number {
  const e = externalEntry(t);
  if (e.length === undefined) throw new DowncastRefused(`tensor ${t.name} is stored outside the model with no length`);
  return e.length;
}

/** A float32 tensor's values, wherever the export put them. */
function float32Values(t: TensorProto, external: ExternalBytes | undefined): Float32Array {
  const n = elementCount(t);
  if (t.dataLocation === EXTERNAL) {
    const e = externalEntry(t);
    if (!external) throw new Error(`tensor ${t.name} is stored in ${e.location}, which cannot be read here`);
    const bytes = external(e);
    if (bytes.length !== n * 4) throw new Error(`tensor ${t.name} holds ${bytes.length} bytes in ${e.location} where its shape needs ${n * 4}`);
    return aligned(bytes, n);
  }
  if (t.floatData.length > 0) return Float32Array.from(t.floatData);
  if (t.rawData.length !== n * 4) throw new DowncastRefused(`tensor ${t.name} holds ${t.rawData.length} bytes where its shape needs ${n * 4}`);
  return aligned(t.rawData, n);
}

function aligned(bytes: Uint8Array, n: number): Float32Array {
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, n);
  const out = new Float32Array(n);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

function toFloat16Array(values: Float32Array): Uint16Array<ArrayBuffer> {
  const out = new Uint16Array(values.length);
  float16Into(values, out, 0);
  return out;
}

/**
 * Writes `values` as this conversion's float16 weights into `out` from element `at`: part of a weight at a time, for
 * a caller that converts a weight as its bytes arrive (the browser's conversion).
 */
export function float16Into(values: Float32Array, out: Uint16Array, at: number): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    // Finite values beyond float16's range saturate; infinities (a mask's -inf) stay what they are.
    out[at + i] = toFloat16Bits(Number.isFinite(v) ? Math.min(FLOAT16_MAX, Math.max(-FLOAT16_MAX, v)) : v);
  }
}

/** Converts a small inline float32 tensor to float16 in place. */
function toFloat16Inline(t: TensorProto): void {
  if (t.dataLocation === EXTERNAL) throw new DowncastRefused(`constant ${t.name} is stored outside the model`);
  const bits = toFloat16Array(float32Values(t, undefined));
  t.dataType = FLOAT16;
  t.rawData = new Uint8Array(bits.buffer);
  t.floatData = [];
}
