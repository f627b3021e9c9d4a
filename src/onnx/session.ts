/**
 * ONNX Runtime sessions, created by path (so external data and files over 2 GiB load), with the IO metadata the
 * component adapters read instead of assuming names, dtypes or ranks.
 */
import type ortTypes from 'onnxruntime-node';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import { AsgdError } from '../core/errors.ts';
import { float16ToFloat32, float32ToFloat16 } from '../core/float16.ts';
import { ortSeverity, runtimeLogLevel, withDriverNotesFiltered } from './runtime-log.ts';

export type { IoInfo, ProviderName, SessionOptions } from './io.ts';
import type { IoInfo, SessionOptions } from './io.ts';

type Ort = typeof ortTypes;
let loaded: Ort | undefined;
/** ONNX Runtime's native binding, loaded on first use (importing the package does not load it). */
function runtime(): Ort {
  if (!loaded) {
    loaded = createRequire(import.meta.url)('onnxruntime-node') as Ort;
    // The default logger (messages outside a session) takes the level before the first session is created.
    loaded.env.logLevel = runtimeLogLevel();
  }
  return loaded;
}
// Type names only; every value goes through runtime().
declare namespace ort {
  type Tensor = ortTypes.Tensor;
  namespace InferenceSession {
    type ValueMetadata = ortTypes.InferenceSession.ValueMetadata;
    type ExecutionProviderConfig = ortTypes.InferenceSession.ExecutionProviderConfig;
    type SessionOptions = ortTypes.InferenceSession.SessionOptions;
    type ReturnType = ortTypes.InferenceSession.ReturnType;
  }
  type InferenceSession = ortTypes.InferenceSession;
}

export interface OpenSession {
  session: ort.InferenceSession;
  file: string;
  inputs: IoInfo[];
  outputs: IoInfo[];
}

function ioList(meta: readonly ort.InferenceSession.ValueMetadata[]): IoInfo[] {
  return meta.map((m) => (m.isTensor ? { name: m.name, type: m.type, shape: m.shape } : { name: m.name, type: 'non-tensor', shape: [] }));
}

export function executionProviders(opts: SessionOptions): ort.InferenceSession.ExecutionProviderConfig[] {
  switch (opts.provider) {
    case 'cpu':
      return ['cpu'];
    case 'webgpu':
      // The Node binding's WebGPU provider takes no adapter index (it rejects `deviceId`): the default adapter runs.
      return [{ name: 'webgpu' }];
    case 'cuda':
      return [{ name: 'cuda', deviceId: opts.deviceId ?? 0 } as ort.InferenceSession.ExecutionProviderConfig];
  }
}

/** How to load a model file whose external data does not sit next to it. */
export interface ModelLoad {
  /**
   * Folder the model's relative external-data locations refer to. The model is then read into memory (it must be
   * small: its weights are external) and created from bytes with this folder, because onnxruntime-node refuses
   * external data outside the model file's own folder (absolute, `..` or symlinked locations).
   */
  externalDataFolder?: string;
}

export async function openSession(file: string | Uint8Array, label: string, opts: SessionOptions, load: ModelLoad = {}): Promise<OpenSession> {
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: executionProviders(opts),
    graphOptimizationLevel: 'all',
    logSeverityLevel: ortSeverity(runtimeLogLevel()),
  };
  if (load.externalDataFolder) {
    options.extra = { session: { model_external_initializers_file_folder_path: load.externalDataFolder } };
  }
  if (opts.provider === 'cpu' && opts.threads && opts.threads > 0) {
    options.intraOpNumThreads = opts.threads;
    options.interOpNumThreads = 1;
  }
  if (typeof file === 'string') {
    try {
      fs.accessSync(file, fs.constants.R_OK);
    } catch (err) {
      throw new AsgdError(`Cannot read ${label} (${file})`, { kind: 'model', parameter: label, hint: 'Check that the file exists and is readable', cause: err });
    }
  }
  let session: ort.InferenceSession;
  const create = async () => {
    if (typeof file === 'string' && load.externalDataFolder) return runtime().InferenceSession.create(fs.readFileSync(file), options);
    return typeof file === 'string' ? runtime().InferenceSession.create(file, options) : runtime().InferenceSession.create(file, options);
  };
  try {
    // The WebGPU provider's driver stack writes notes to stderr natively (see runtime-log.ts).
    session = opts.provider === 'webgpu' ? await withDriverNotesFiltered(create) : await create();
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    if (opts.provider !== 'cpu' && /provider|backend|cuda|webgpu|adapter/i.test(msg)) {
      throw new AsgdError(`The ${opts.provider} execution provider could not load ${label}: ${msg}`, {
        kind: 'device',
        parameter: 'devices',
        hint:
          opts.provider === 'cuda'
            ? 'Install the CUDA provider with `ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node` (needs CUDA 12 and cuDNN 9), or use --devices cpu'
            : 'Check the GPU driver (WebGPU runs through Vulkan on Linux), or use --devices cpu',
        cause: err,
      });
    }
    throw new AsgdError(`ONNX Runtime cannot load ${label}: ${msg}`, {
      kind: 'model',
      parameter: label,
      hint: 'The file is damaged or not an ONNX model; re-export the model',
      cause: err,
    });
  }
  return { session, file: typeof file === 'string' ? file : '<memory>', inputs: ioList(session.inputMetadata), outputs: ioList(session.outputMetadata) };
}

/** A float tensor in the dtype the session input wants (float32 or float16). */
export function floatTensor(type: string, data: Float32Array, dims: readonly number[], label: string): ort.Tensor {
  if (type === 'float32') return new (runtime().Tensor)('float32', data, dims);
  if (type === 'float16') return new (runtime().Tensor)('float16', float32ToFloat16(data), dims);
  throw new AsgdError(`${label} has element type ${type}`, { kind: 'model', parameter: label, expected: 'float32 or float16', received: type, hint: 'The model does not match the Stable Diffusion ONNX contract' });
}

/** An int64 tensor (shapes, regions). */
export function int64Tensor(values: readonly number[], dims: readonly number[] = [values.length]): ort.Tensor {
  return new (runtime().Tensor)('int64', BigInt64Array.from(values, (v) => BigInt(v)), dims);
}

/** A float32 tensor, whatever the model's float type (inputs the project's own graph surgery adds). */
export function float32Tensor(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new (runtime().Tensor)('float32', data, dims);
}

/** Output tensor data as float32 (converting float16). */
export function readFloat(t: ort.Tensor, label: string): Float32Array {
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

/** A tensor handed to or returned by ONNX Runtime. */
export type OrtTensor = ort.Tensor;
/** What a session run returns: output name to tensor. */
export type RunOutputs = ort.InferenceSession.ReturnType;

type TensorData = { float32: Float32Array; float16: Uint16Array; int64: BigInt64Array; int32: Int32Array };

/** A tensor of exactly this element type and data (no conversion). */
export function makeTensor<K extends keyof TensorData>(type: K, data: TensorData[K], dims: readonly number[]): OrtTensor {
  return new (runtime().Tensor)(type, data as Float32Array, dims);
}

/** The execution providers this onnxruntime-node build offers, and whether each is bundled with it. */
export function supportedBackends(): { name: string; bundled: boolean }[] {
  return runtime().listSupportedBackends().map((b) => ({ name: b.name, bundled: b.bundled }));
}

export async function releaseSession(s: OpenSession | undefined): Promise<void> {
  if (s) await s.session.release();
}
