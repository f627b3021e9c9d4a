/**
 * Tensor helpers shared by the component adapters (text encoder, UNet, VAE), free of any particular ONNX Runtime
 * package: onnxruntime-node (src/onnx/session.ts) and onnxruntime-web (src/web/device/) both bind their runtime
 * here before creating an adapter, so the same adapters run in Node worker threads and in browser Web Workers.
 * No Node API is used in this module.
 */
import type ortTypes from 'onnxruntime-node';
import { AsgdError } from '../core/errors.ts';
import { float16ToFloat32, float32ToFloat16 } from '../core/float16.ts';
import type { IoInfo } from './io.ts';

/** The part of an ONNX Runtime package the adapters use (onnxruntime-node and onnxruntime-web both have it). */
export interface OrtBinding {
  Tensor: typeof ortTypes.Tensor;
}

let bound: OrtBinding | undefined;

/** Makes `ort` the runtime the helpers below create tensors with (once per thread or worker). */
export function bindOrt(ort: OrtBinding): void {
  bound = ort;
}

function runtime(): OrtBinding {
  if (!bound) throw new Error('onnx/tensors: no ONNX Runtime bound (open a session first)');
  return bound;
}

/** A tensor handed to or returned by ONNX Runtime. */
export type OrtTensor = ortTypes.Tensor;
/** What a session run returns: output name to tensor. */
export type RunOutputs = ortTypes.InferenceSession.ReturnType;
/** An ONNX Runtime session, from either package. */
export type OrtSession = ortTypes.InferenceSession;

/** A session with the IO metadata the adapters read instead of assuming names, dtypes or ranks. */
export interface OpenSession {
  session: OrtSession;
  file: string;
  /** The execution provider the session runs on (set by the Node loader; undefined in the browser). */
  provider?: string;
  inputs: IoInfo[];
  outputs: IoInfo[];
}

/** The IO list of a session's input or output metadata. */
export function ioList(meta: readonly ortTypes.InferenceSession.ValueMetadata[]): IoInfo[] {
  return meta.map((m) => (m.isTensor ? { name: m.name, type: m.type, shape: m.shape } : { name: m.name, type: 'non-tensor', shape: [] }));
}

/** A float tensor in the dtype the session input wants (float32 or float16). */
export function floatTensor(type: string, data: Float32Array, dims: readonly number[], label: string): OrtTensor {
  if (type === 'float32') return new (runtime().Tensor)('float32', data, dims);
  if (type === 'float16') return new (runtime().Tensor)('float16', float32ToFloat16(data), dims);
  throw new AsgdError(`${label} has element type ${type}`, { kind: 'model', parameter: label, expected: 'float32 or float16', received: type, hint: 'The model does not match the Stable Diffusion ONNX contract' });
}

/** An int64 tensor (shapes, regions). */
export function int64Tensor(values: readonly number[], dims: readonly number[] = [values.length]): OrtTensor {
  return new (runtime().Tensor)('int64', BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

/** A float32 tensor, whatever the model's float type (inputs the project's own graph surgery adds). */
export function float32Tensor(data: Float32Array, dims: readonly number[]): OrtTensor {
  return new (runtime().Tensor)('float32', data, dims);
}

/** Output tensor data as float32 (converting float16). */
export function readFloat(t: OrtTensor, label: string): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') {
    const d = t.data as unknown;
    if (d instanceof Uint16Array) return float16ToFloat32(d);
    // Newer ORT builds may hand back a Float16Array; read element-wise.
    return Float32Array.from(d as ArrayLike<number>);
  }
  throw new AsgdError(`${label} has element type ${t.type}`, { kind: 'model', parameter: label, expected: 'float32 or float16', received: t.type, hint: 'The model does not match the Stable Diffusion ONNX contract' });
}

export function findIo(list: IoInfo[], names: string[], label: string, component: string, fallbackIndex?: number): IoInfo {
  for (const n of names) {
    const hit = list.find((io) => io.name === n);
    if (hit) return hit;
  }
  if (fallbackIndex !== undefined && list[fallbackIndex]) return list[fallbackIndex]!;
  throw new AsgdError(`${component} has no ${label}`, {
    kind: 'model',
    parameter: component,
    expected: `one of ${names.join(', ')}`,
    received: list.map((io) => io.name).join(', ') || 'none',
    hint: 'The model does not match the Stable Diffusion ONNX contract; re-export it with optimum-cli',
  });
}

type TensorData = { float32: Float32Array; float16: Uint16Array; int64: BigInt64Array; int32: Int32Array };

/** A tensor of exactly this element type and data (no conversion). */
export function makeTensor<K extends keyof TensorData>(type: K, data: TensorData[K], dims: readonly number[]): OrtTensor {
  return new (runtime().Tensor)(type, data as Float32Array, dims);
}
