/**
 * A float16 export rewritten to compute in float32: what diffusers does when a VAE's config sets `force_upcast`
 * (SDXL's VAE overflows float16 in its decoder's activations, and a float16 decode gives NaN or black). Every
 * float16 tensor becomes float32: initializers and constants (float16 values are exact in float32, so the weights
 * are unchanged), Casts and dtype attributes to float16, and the declared types of inputs, outputs and values.
 * The graph then computes what the float16 graph computes, without the float16 rounding and range between its
 * ops. Portable: no Node APIs; weights stored outside the model come from `external`.
 */
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type AttributeProto, type GraphProto, type ModelProto, type TensorProto, type TypeProto } from 'onnx-buf';
import { fromFloat16Bits } from '../core/float16.ts';
import { modelBytes } from './model-bytes.ts';

const FLOAT = 1;
const FLOAT16 = 10;
const EXTERNAL = 1; // TensorProto.DataLocation.EXTERNAL

/** A tensor's external_data entries: the file (relative to the model), the offset (default 0) and the length if given. */
export function externalDataEntry(t: TensorProto): { location: string | undefined; offset: number; length?: number } {
  const e = Object.fromEntries(t.externalData.map((x) => [x.key, x.value]));
  return { location: e['location'], offset: Number(e['offset'] ?? 0), ...(e['length'] !== undefined ? { length: Number(e['length']) } : {}) };
}

/** Reads an external tensor's bytes: the `location`, `offset` and `length` entries of its external_data. */
export type ExternalBytes = (entry: { location: string; offset: number; length?: number }) => Uint8Array;

export interface Float32Upcast {
  /** float16 initializers and constant tensors converted. */
  tensors: number;
  /** Casts and dtype attributes that produced float16, now float32. */
  casts: number;
  /** Declared types (inputs, outputs, value_info) changed. */
  types: number;
}

/**
 * Rewrites `model` in place so that it holds no float16 tensor; the counts of what changed (all 0: it had none),
 * or why it cannot (an external tensor with no reader, a sparse float16 initializer).
 */
export function upcastToFloat32(model: ModelProto, external?: ExternalBytes): Float32Upcast | { reason: string } {
  const count: Float32Upcast = { tensors: 0, casts: 0, types: 0 };
  if (!model.graph) return { reason: 'the model has no graph' };
  try {
    upcastGraph(model.graph, count, external);
  } catch (err) {
    if (err instanceof UpcastRefused) return { reason: err.message };
    throw err;
  }
  return count;
}

/** The reason given for a model with no float16 tensor: nothing to convert, the model runs as it is. */
export const ALREADY_FLOAT32 = 'it has no float16 tensor';

/** The float32 model of a serialized float16 one, and how many tensors were converted; or why there is none. */
export function float32Model(bytes: Uint8Array, external?: ExternalBytes): { model: ModelProto; tensors: number } | { reason: string } {
  let model: ModelProto;
  try {
    model = fromBinary(ModelProtoSchema, bytes);
  } catch (err) {
    return { reason: `the model cannot be parsed (${err instanceof Error ? err.message : String(err)})` };
  }
  let upcast: Float32Upcast | { reason: string };
  try {
    upcast = upcastToFloat32(model, external);
  } catch (err) {
    return { reason: `its weights cannot be read (${err instanceof Error ? err.message : String(err)})` };
  }
  if ('reason' in upcast) return upcast;
  if (upcast.tensors + upcast.casts + upcast.types === 0) return { reason: ALREADY_FLOAT32 };
  return { model, tensors: upcast.tensors };
}

/** float32Model serialized. */
export function float32ModelBytes(bytes: Uint8Array, external?: ExternalBytes): { bytes: Uint8Array; tensors: number } | { reason: string } {
  const r = float32Model(bytes, external);
  return 'reason' in r ? r : { bytes: modelBytes(r.model), tensors: r.tensors };
}

class UpcastRefused extends Error {}

function upcastGraph(g: GraphProto, count: Float32Upcast, external: ExternalBytes | undefined): void {
  if (g.sparseInitializer.some((s) => s.values?.dataType === FLOAT16)) throw new UpcastRefused(`graph ${g.name} has a sparse float16 initializer, which this conversion does not read`);
  for (const t of g.initializer) upcastTensor(t, count, external);
  for (const v of [...g.input, ...g.output, ...g.valueInfo]) if (v.type && upcastType(v.type)) count.types++;
  for (const node of g.node) {
    for (const a of node.attribute) upcastAttribute(a, count, external);
  }
}

function upcastAttribute(a: AttributeProto, count: Float32Upcast, external: ExternalBytes | undefined): void {
  // Cast's `to` and the dtype of generators (RandomNormal, EyeLike, ...): the element type they produce.
  if ((a.name === 'to' || a.name === 'dtype') && a.i === BigInt(FLOAT16)) {
    a.i = BigInt(FLOAT);
    count.casts++;
  }
  if (a.t) upcastTensor(a.t, count, external);
  for (const t of a.tensors) upcastTensor(t, count, external);
  if (a.g) upcastGraph(a.g, count, external);
  for (const g of a.graphs) upcastGraph(g, count, external);
  if (a.tp && upcastType(a.tp)) count.types++;
}

/** Changes a float16 element type anywhere in `t` to float32; whether anything changed. */
function upcastType(t: TypeProto): boolean {
  const v = t.value;
  switch (v.case) {
    case 'tensorType':
    case 'sparseTensorType':
      if (v.value.elemType !== FLOAT16) return false;
      v.value.elemType = FLOAT;
      return true;
    case 'sequenceType':
    case 'optionalType':
      return v.value.elemType ? upcastType(v.value.elemType) : false;
    case 'mapType':
      return v.value.valueType ? upcastType(v.value.valueType) : false;
    default:
      return false;
  }
}

function upcastTensor(t: TensorProto, count: Float32Upcast, external: ExternalBytes | undefined): void {
  if (t.dataType !== FLOAT16) return;
  const bits = float16Bits(t, external);
  const table = float16Table();
  const values = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) values[i] = table[bits[i]!]!;
  t.dataType = FLOAT;
  t.rawData = new Uint8Array(values.buffer);
  t.int32Data = [];
  t.externalData = [];
  t.dataLocation = 0;
  count.tensors++;
}

let table: Float32Array | undefined;

/** Every float16 bit pattern's value (a VAE holds tens of millions of weights: a lookup, not a decode each). */
function float16Table(): Float32Array {
  if (!table) {
    table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) table[h] = fromFloat16Bits(h);
  }
  return table;
}

/** The float16 bit patterns of a tensor, wherever the export put them. */
function float16Bits(t: TensorProto, external: ExternalBytes | undefined): Uint16Array {
  const n = t.dims.reduce((s, d) => s * Number(d), 1);
  let bytes: Uint8Array;
  if (t.dataLocation === EXTERNAL) {
    const { location, ...span } = externalDataEntry(t);
    if (!location) throw new UpcastRefused(`tensor ${t.name} is stored outside the model with no location`);
    if (!external) throw new UpcastRefused(`tensor ${t.name} is stored in ${location}, which cannot be read here`);
    bytes = external({ location, ...span });
  } else if (t.int32Data.length > 0) {
    // float16 values stored one per int32 (the bit pattern in its low 16 bits).
    if (t.int32Data.length !== n) throw new UpcastRefused(`tensor ${t.name} holds ${t.int32Data.length} values where its shape needs ${n}`);
    return Uint16Array.from(t.int32Data, (v) => v & 0xffff);
  } else {
    bytes = t.rawData;
  }
  if (bytes.length !== n * 2) throw new UpcastRefused(`tensor ${t.name} holds ${bytes.length} bytes where its shape needs ${n * 2}`);
  // Copied so the view is aligned whatever the bytes' offset in their buffer (little-endian, as ONNX stores them).
  const out = new Uint16Array(n);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}
