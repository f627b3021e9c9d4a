/** Values of the tensors stored in an ONNX model: float32 and float16 constants read as numbers. */
import type { TensorProto } from 'onnx-buf';
import { fromFloat16Bits } from '../core/float16.ts';

/** TensorProto data types and data location (onnx.proto). */
export const FLOAT = 1;
export const FLOAT16 = 10;
export const EXTERNAL = 1;

/** Every value of a float32 or float16 tensor stored in the model, or undefined (external data, other types). */
export function floatValues(t: TensorProto): number[] | undefined {
  if (t.dataLocation === EXTERNAL) return undefined;
  const n = t.dims.reduce((s, d) => s * Number(d), 1);
  if (t.dataType === FLOAT) {
    if (t.floatData.length === n) return [...t.floatData];
    if (t.rawData.byteLength !== n * 4) return undefined;
    const v = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
    return Array.from({ length: n }, (_, i) => v.getFloat32(i * 4, true));
  }
  if (t.dataType === FLOAT16) {
    if (t.int32Data.length === n) return t.int32Data.map(fromFloat16Bits);
    if (t.rawData.byteLength !== n * 2) return undefined;
    const v = new DataView(t.rawData.buffer, t.rawData.byteOffset, t.rawData.byteLength);
    return Array.from({ length: n }, (_, i) => fromFloat16Bits(v.getUint16(i * 2, true)));
  }
  return undefined;
}

/** The one value of a float32 or float16 tensor of one element (any shape); undefined for anything else. */
export function tensorScalar(t: TensorProto): number | undefined {
  if (t.dims.reduce((s, d) => s * Number(d), 1) !== 1) return undefined;
  return floatValues(t)?.[0];
}

/** A float32 / float16 constant, stored in the model, of more than one element, every one +0. */
export function isZeroTensor(t: TensorProto): boolean {
  const count = t.dims.reduce((n, d) => n * Number(d), 1);
  if (t.dataLocation === EXTERNAL || count <= 1 || (t.dataType !== FLOAT && t.dataType !== FLOAT16)) return false;
  const bytes = t.dataType === FLOAT ? 4 : 2;
  if (t.rawData.byteLength > 0) return t.rawData.byteLength === count * bytes && t.rawData.every((b) => b === 0);
  const values = t.dataType === FLOAT ? t.floatData : t.int32Data;
  return values.length === count && values.every((v) => v === 0 && !Object.is(v, -0));
}
