/** The browser pipeline's load options, their checks, and what its events carry. */
import { invalidArgument } from '../core/errors.ts';
import { PIPELINE_OPTIONS, optionSpec } from '../core/options/registry.ts';
import { checkOption, refuseUnknownKeys } from '../core/options/spec.ts';
import type { FileProgress } from './model/file-source.ts';
import type { WebComponent, WebProvider } from './device/protocol.ts';
import type { SplitMode } from '../core/dispatch/tasks.ts';

export type { FileProgress, WebComponent, WebProvider };

export interface WebPipelineOptions {
  /**
   * 'auto' (default): WebGPU when the browser offers a hardware adapter, else WebAssembly (also where the only adapter
   * is a fallback one, a CPU emulation such as SwiftShader); 'webgpu' uses any adapter.
   */
  provider?: 'auto' | WebProvider;
  /** Device workers (default 1): several workers are several devices; the image does not depend on the count. */
  workers?: number;
  /** WebAssembly threads per worker (default 0: ONNX Runtime's choice; threads need a cross-origin isolated page). */
  threads?: number;
  /** Build the attention-probe UNet for the cross-attention mask (default true, as in Node). */
  attentionProbe?: boolean;
  /**
   * 'shared' (default): the UNet runs as the probe graph where that gives the UNet's bits, so the device holding the
   * probe keeps one copy of the UNet; 'separate': that device holds the UNet and the probe graph apart (twice the
   * UNet's memory; units that are not probed skip the maps' work). As in Node (PipelineOptions.probeSession).
   */
  probeSession?: 'shared' | 'separate';
  /**
   * Run the UNet's attention (and the probe graph's: its probed layers keep their scores for the maps) as fused MultiHeadAttention nodes,
   * derived in the device workers (src/graph/attention-fusion.ts). Off by default, as in Node (PipelineOptions).
   */
  fuseAttention?: boolean;
  /**
   * 'float16': run a float32 UNet export as a float16 graph, converted in the page as its weights download, by
   * Node's plan (PipelineOptions.unetPrecision), and kept in Cache Storage: half the weights' bytes, which brings
   * optimum's default float32 SD 1.x/2.x export (3.4 GB) within what a browser holds. 'native' (default): as exported.
   */
  unetPrecision?: 'native' | 'float16';
  /**
   * Units run as two CFG halves (batch-1 calls) to balance the workers, as Node's PipelineOptions.splitCfg: 'auto'
   * (default) is 'balance' where two or more workers run on WebAssembly and the UNet gives a split unit the same bits
   * as a whole one (checked on a small latent when the model loads), so the image does not depend on the worker
   * count; else 'never'. 'always' splits every unit; 'balance' where it shortens a step (on WebGPU the last bits may
   * then depend on the worker count). WebModelInfo.splitCfg says what was chosen.
   */
  splitCfg?: 'auto' | SplitMode;
  /** Keep the model files in the browser's Cache Storage so the next visit loads them from disk (default true). */
  store?: boolean;
  /**
   * Folder URL, ending in "/", of ONNX Runtime Web's runtime files: its .wasm files and the .mjs modules next to them
   * (default: where the bundler put them).
   */
  wasmPaths?: string;
  /** Makes the device worker `index` (default: the package's worker module, exported as `asgdiffusion/web/worker`). */
  createWorker?: (index: number) => Worker;
  onProgress?: (p: LoadProgress) => void;
  signal?: AbortSignal;
  /** The fetch used for model files (default: the global fetch). */
  fetch?: typeof fetch;
}

/** Loading: model files (downloaded or read from storage), then sessions opened on the devices. */
export type LoadProgress =
  | ({ phase: 'download' } & FileProgress)
  | { phase: 'session'; component: WebComponent; device: string };

/** loadWebPipeline's options, known by name. */
const LOAD_OPTIONS = ['provider', 'workers', 'threads', 'attentionProbe', 'probeSession', 'fuseAttention', 'unetPrecision', 'splitCfg', 'store', 'wasmPaths', 'createWorker', 'onProgress', 'signal', 'fetch'] as const;

/**
 * loadWebPipeline's options, checked before any request as Node's loadPipeline checks its own (JavaScript callers
 * pass anything): an unknown option is named, every value is checked against what it should be.
 */
export function checkLoadOptions(options: unknown): WebPipelineOptions {
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw invalidArgument('options', 'an object of WebPipelineOptions, or nothing', options);
  const o = options as Record<string, unknown>;
  refuseUnknownKeys(o, LOAD_OPTIONS, 'a loadWebPipeline option', 'Check the spelling; generation settings go to generate()');
  const provider = o['provider'];
  if (provider !== undefined && provider !== 'auto' && provider !== 'webgpu' && provider !== 'wasm') throw invalidArgument('provider', '"auto", "webgpu" or "wasm"', provider);
  const workers = o['workers'];
  if (workers !== undefined && !(typeof workers === 'number' && Number.isInteger(workers) && workers >= 1)) throw invalidArgument('workers', 'an integer >= 1', workers);
  if (o['threads'] !== undefined) checkOption(optionSpec(PIPELINE_OPTIONS, 'threads'), o['threads']);
  for (const key of ['fuseAttention', 'probeSession', 'unetPrecision', 'splitCfg'] as const) {
    if (o[key] !== undefined) checkOption(optionSpec(PIPELINE_OPTIONS, key), o[key]);
  }
  for (const key of ['attentionProbe', 'store']) {
    if (o[key] !== undefined && typeof o[key] !== 'boolean') throw invalidArgument(key, 'true or false', o[key]);
  }
  const wasmPaths = o['wasmPaths'];
  if (wasmPaths !== undefined && !(typeof wasmPaths === 'string' && wasmPaths.endsWith('/'))) {
    throw invalidArgument('wasmPaths', 'the URL of the folder with ONNX Runtime Web\'s .wasm and .mjs files, ending in "/"', wasmPaths);
  }
  for (const key of ['createWorker', 'onProgress', 'fetch']) {
    if (o[key] !== undefined && typeof o[key] !== 'function') throw invalidArgument(key, 'a function, or nothing', o[key]);
  }
  const signal = o['signal'];
  if (signal !== undefined && !(typeof AbortSignal !== 'undefined' && signal instanceof AbortSignal)) {
    throw invalidArgument('signal', 'an AbortSignal (e.g. new AbortController().signal), or nothing', signal);
  }
  return o as WebPipelineOptions;
}
