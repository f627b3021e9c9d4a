/**
 * ONNX Runtime sessions, created by path (so external data and files over 2 GiB load), with the IO metadata the
 * component adapters read instead of assuming names, dtypes or ranks.
 */
import type ortTypes from 'onnxruntime-node';
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { AsgdError } from '../core/errors.ts';
import { ortSeverity, runtimeLogLevel, withDriverNotesFiltered } from './runtime-log.ts';
import { bindOrt, ioList, type OpenSession } from './tensors.ts';

export type { IoInfo, ProviderName, SessionMemory, SessionOptions } from './io.ts';
import type { SessionMemory, SessionOptions } from './io.ts';
export {
  findIo, float32Tensor, floatTensor, int64Tensor, makeTensor, readFloat, type OpenSession, type OrtTensor, type RunOutputs,
} from './tensors.ts';

type Ort = typeof ortTypes;
let loaded: Ort | undefined;
/** ONNX Runtime's native binding, loaded on first use (importing the package does not load it). */
function runtime(): Ort {
  if (!loaded) {
    loaded = createRequire(import.meta.url)('onnxruntime-node') as Ort;
    // The default logger (messages outside a session) takes the level before the first session is created.
    loaded.env.logLevel = runtimeLogLevel();
    bindOrt(loaded);
  }
  return loaded;
}
/** onnxruntime-node's version, as its binding reports it. */
export function runtimeVersion(): string {
  const v = runtime().env.versions as { node?: string; common?: string };
  return v.node ?? v.common ?? 'unknown';
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

export function executionProviders(opts: SessionOptions, webgpu: WebGpuTuning = {}): ort.InferenceSession.ExecutionProviderConfig[] {
  switch (opts.provider) {
    case 'cpu':
      return ['cpu'];
    case 'webgpu':
      // The Node binding's WebGPU provider takes no adapter index (it rejects `deviceId`): the default adapter runs.
      return [{ name: 'webgpu', ...webgpu }];
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
  /** ONNX Runtime's memory settings for this session (default: ORT's, with every graph optimisation). */
  memory?: SessionMemory;
  /**
   * 'gpu-buffer': the outputs stay on the device (WebGPU provider only); never read their data on the host. Per
   * output name: those named 'gpu-buffer' stay there, those named 'cpu' come back (a name for every output).
   */
  outputLocation?: 'gpu-buffer' | Readonly<Record<string, 'gpu-buffer' | 'cpu'>>;
  /**
   * ONNX Runtime's profiler: a Chrome-trace JSON file starting with this path is written when the session is released
   * (per node; on WebGPU also the GPU's own time per kernel where the adapter has timestamp queries). Benchmarks only.
   */
  profilePrefix?: string;
  /** WebGPU provider settings (webgpu only); ONNX Runtime's defaults where unset. Benchmarks only so far. */
  webgpu?: WebGpuTuning;
}

/** ONNX Runtime's WebGPU provider options that this project has measured (bench/card.ts variants). */
export interface WebGpuTuning {
  /**
   * The layout the provider runs layout-sensitive ops (Conv, pooling, Resize) in. ONNX Runtime's native default (1.30, 1.31.1)
   * is 'NHWC', with Transpose kernels inserted where an NCHW graph meets them; 'NCHW' runs them as written.
   */
  preferredLayout?: 'NCHW' | 'NHWC';
  /**
   * Validation of the WebGPU calls ('basic' by default). It belongs to the process's WebGPU context, which the
   * first WebGPU session of the process creates: later sessions' values have no effect.
   */
  validationMode?: 'disabled' | 'wgpuOnly' | 'basic' | 'full';
}

const WEBGPU_TUNING: { [K in keyof WebGpuTuning]-?: readonly NonNullable<WebGpuTuning[K]>[] } = {
  preferredLayout: ['NCHW', 'NHWC'],
  validationMode: ['disabled', 'wgpuOnly', 'basic', 'full'],
};

/** Checks `ModelLoad.webgpu` before ONNX Runtime sees it (its messages name no option). */
function checkTuning(label: string, opts: SessionOptions, load: ModelLoad): void {
  const bad = (parameter: string, expected: string, received: unknown, hint: string) =>
    new AsgdError(`${label}: ${parameter} must be ${expected}`, { kind: 'invalid-argument', parameter, expected, received: JSON.stringify(received), hint });
  if (load.webgpu) {
    if (opts.provider !== 'webgpu') throw bad('webgpu', 'unset on other providers than webgpu', opts.provider, 'Pass WebGPU settings only to WebGPU sessions');
    for (const [key, value] of Object.entries(load.webgpu)) {
      const allowed = (WEBGPU_TUNING as Record<string, readonly string[]>)[key];
      if (!allowed) {
        throw new AsgdError(`${label}: unknown WebGPU setting ${JSON.stringify(key)}`, {
          kind: 'invalid-argument', parameter: `webgpu.${key}`, expected: `one of the settings ${Object.keys(WEBGPU_TUNING).join(', ')}`, received: key, hint: 'Remove the unknown setting',
        });
      }
      if (value !== undefined && !allowed.includes(value as string)) throw bad(`webgpu.${key}`, `one of ${allowed.join(', ')}`, value, `Use one of ${allowed.join(', ')}`);
    }
  }
}

export async function openSession(file: string | Uint8Array, label: string, opts: SessionOptions, load: ModelLoad = {}): Promise<OpenSession> {
  checkTuning(label, opts, load);
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: executionProviders(opts, load.webgpu),
    graphOptimizationLevel: load.memory?.optimization ?? 'all',
    logSeverityLevel: ortSeverity(runtimeLogLevel()),
  };
  if (load.memory?.cpuArena === false) options.enableCpuMemArena = false;
  if (load.memory?.memPattern === false) options.enableMemPattern = false;
  if (load.outputLocation) {
    if (opts.provider !== 'webgpu') {
      throw new AsgdError(`${label}: outputs on the device need the webgpu provider`, {
        kind: 'invalid-argument', parameter: 'outputLocation', expected: "the webgpu provider with 'gpu-buffer'", received: opts.provider,
        hint: 'Leave outputLocation unset on other providers (outputs come back to the host)',
      });
    }
    options.preferredOutputLocation = typeof load.outputLocation === 'string' ? load.outputLocation : { ...load.outputLocation };
  }
  if (load.externalDataFolder) {
    options.extra = { session: { model_external_initializers_file_folder_path: load.externalDataFolder } };
  }
  if (load.profilePrefix) {
    options.enableProfiling = true;
    options.profileFilePrefix = load.profilePrefix;
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
    const msg = (err instanceof Error ? err.message : String(err)).trim();
    if (opts.provider !== 'cpu' && /provider|backend|cuda|webgpu|adapter/i.test(msg)) {
      // What the driver stack wrote while it failed (runtime-log.ts), said here rather than loose on stderr.
      const driver = (err as { driverOutput?: string[] }).driverOutput?.map((l) => l.trim()).filter(Boolean).slice(0, 6);
      throw new AsgdError(`The ${opts.provider} execution provider could not load ${label}: ${msg}${driver?.length ? ` (the driver said: ${driver.join(' | ')})` : ''}`, {
        kind: 'device',
        parameter: 'devices',
        hint:
          opts.provider === 'cuda'
            ? 'Install the CUDA provider with `ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node` (needs CUDA 12 and cuDNN 9), or use --devices cpu'
            : 'Check the GPU driver (WebGPU runs through Vulkan on Linux), or use --devices cpu',
        cause: err,
      });
    }
    // Weights kept in a separate file (model.onnx_data, weights.pb) cut short or missing: name that file.
    const external = /External (initializer|data)|GetExtDataFromTensorProto|onnx_data|weights\.pb/i.test(msg);
    // Its folder: a derived graph (probe, fused attention) refers to its source model's weights, in that folder.
    const weightsFolder = load.externalDataFolder ?? (typeof file === 'string' ? path.dirname(file) : undefined);
    throw new AsgdError(`ONNX Runtime cannot load ${label}: ${msg}`, {
      kind: 'model',
      parameter: label,
      hint: external
        ? `Its external weights file (${weightsFolder ? `in ${weightsFolder}` : 'model.onnx_data'}) is missing, incomplete or damaged; copy it again or re-export the model`
        : 'The file is damaged or not an ONNX model; re-export the model',
      cause: err,
    });
  }
  return { session, file: typeof file === 'string' ? file : '<memory>', provider: opts.provider, inputs: ioList(session.inputMetadata), outputs: ioList(session.outputMetadata) };
}

/** The execution providers this onnxruntime-node build offers, and whether each is bundled with it. */
export function supportedBackends(): { name: string; bundled: boolean }[] {
  return runtime().listSupportedBackends().map((b) => ({ name: b.name, bundled: b.bundled }));
}

export async function releaseSession(s: OpenSession | undefined): Promise<void> {
  if (s) await s.session.release();
}
