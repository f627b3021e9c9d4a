/**
 * Messages between the coordinator and a device worker. Tensors travel as typed arrays, never JSON: to a worker
 * thread, UNet samples through a shared buffer per device (copied in once, nothing to allocate), results as
 * transferred buffers; to and from a worker process, large arrays through files in memory (array-stow.ts); the text
 * embeddings once per generation.
 */
import type { DeviceConditioningCounts, TileStateCounts } from '../../onnx/io.ts';
import type { StowCounts } from './array-stow.ts';
import type { AttentionMap } from '../../core/methods/types.ts';
import type { CfgPart } from '../../core/dispatch/tasks.ts';
import type { IoInfo, SessionOptions } from '../../onnx/io.ts';
import type { TextConditioning } from '../../core/conditioning.ts';
import type { WireError } from '../../core/errors.ts';
import type { NormGraphInput, SegmentSpan } from '../../core/vae/pipeline-decode.ts';
import type { TileState } from '../../core/vae/tiled.ts';

export type ComponentName = 'textEncoder' | 'textEncoder2' | 'textEncoder3' | 'unet' | 'unetProbe' | 'vaeDecoder' | 'vaeEncoder';

export interface InitRequest {
  type: 'init';
  paths: Partial<Record<ComponentName, string>>;
  session: SessionOptions;
  /** Test hook: fail every UNet call after this many (to exercise fault handling). */
  failAfterUnetCalls?: number;
  /** How the test hook fails: throw an error (default) or end the thread abruptly (process.exit in the worker). */
  failMode?: FailMode;
}

/** 'kill' ends the worker's process by SIGKILL: for workers in processes of their own only. */
export type FailMode = 'throw' | 'exit' | 'kill';

/**
 * The derived VAE graphs (statistics and tile graphs, src/graph/vae-norm-graph.ts; the tile graph's segments,
 * src/graph/vae-segments.ts, derived by the worker from the tile graph's file), opened on first use.
 */
export type VaeGraphName =
  | 'vaeDecoderStats' | 'vaeDecoderTile' | 'vaeDecoderSegment' | 'vaeDecoderTail' | 'vaeEncoderStats' | 'vaeEncoderTile' | 'vaeEncoderSegment' | 'vaeEncoderHead';

/**
 * Runs the part of a decoder or encoder split at its attention that holds the attention (src/onnx/vae-attention.ts)
 * on the whole latent grid.
 */
export interface VaeHeadRequest {
  type: 'vaeHead';
  half: 'vae_decoder' | 'vae_encoder';
  files: { global: string; chunked?: { pre: string; core: string; post: string } };
  externalDataFolder?: string;
  input: Float32Array;
  channels: number;
  height: number;
  width: number;
  /** Bound on one query chunk's attention scores, bytes. */
  chunkBytes: number;
}

/** Runs a derived VAE graph; the tile graphs take the norm layers' affine maps and the owned region. */
export interface VaeNormRequest extends NormGraphInput {
  type: 'vaeNorm';
  graph: VaeGraphName;
  /** The graph's file (a segment's: the tile graph it is cut from). */
  file: string;
  /** The segment to run (graph '...Segment'). */
  segment?: SegmentSpan;
  /** Folder of the weights when the graph does not sit next to its source model. */
  externalDataFolder?: string;
}

export interface UnetRequest {
  type: 'unet';
  /** A view of the device's shared staging buffer (valid until the reply). */
  sample: Float32Array;
  /** 'both' (CFG combined in the worker) or one CFG half (raw output). */
  part: CfgPart;
  channels: number;
  height: number;
  width: number;
  timestep: number;
  guidanceScale: number;
  wantAttention: boolean;
  /** With wantAttention: the token columns the probe averages (UnetUnit.maskTokens). */
  maskTokens?: number[];
  timeIds?: number[];
}

export type WorkerRequest =
  | InitRequest
  /** Opens more sessions with the init's options (e.g. the probe graph after its holder failed). */
  | { type: 'load'; paths: Partial<Record<ComponentName, string>> }
  | { type: 'describe' }
  /** Runs a unit whole and as two CFG halves and compares the bits (see UnetAdapter.checkCfgSplit). */
  | { type: 'checkCfgSplit'; height: number; width: number }
  | { type: 'encodeText'; which: 'textEncoder' | 'textEncoder2' | 'textEncoder3'; rows: Int32Array[]; layer: 'last' | 'penultimate' }
  | { type: 'setConditioning'; cond: TextConditioning }
  | UnetRequest
  | { type: 'vaeDecode'; latent: Float32Array; channels: number; height: number; width: number }
  | { type: 'vaeEncode'; image: Float32Array; height: number; width: number }
  | VaeNormRequest
  | VaeHeadRequest
  /** Frees tile states the worker holds on its device (TileState.held; src/onnx/tile-states.ts). */
  | { type: 'vaeReleaseStates'; held: number[] }
  | { type: 'close' };

export type WorkerResult =
  | { type: 'ok' }
  | {
      type: 'describe';
      components: Partial<Record<ComponentName, { inputs: IoInfo[]; outputs: IoInfo[] }>>;
      /** Model sessions open (components given the same file share one). */
      sessions: number;
      /** Text conditioning tensors held on the device (webgpu) by the UNet and probe adapters, counted since load. */
      deviceConditioning: { unet?: DeviceConditioningCounts; probe?: DeviceConditioningCounts };
      /** Tile states of 'exact' tiled VAE statistics held on the device (webgpu), counted since init; undefined where they come back to the host. */
      tileStates?: TileStateCounts;
      /** The process the worker runs in (the coordinator's own for a worker thread). */
      pid: number;
      /** A worker process: the arrays it got and sent through files, and the folder (undefined where none). */
      transport?: StowCounts & { folder: string | undefined };
    }
  | { type: 'encodeText'; hidden: Float32Array; tokens: number; dim: number; pooled?: Float32Array; pooledDim?: number }
  | { type: 'checkCfgSplit'; identical: boolean; maxAbs: number }
  | { type: 'unet'; output: Float32Array; attention?: AttentionMap[]; attentionUnsupported?: boolean }
  | { type: 'vaeDecode'; data: Float32Array; height: number; width: number }
  | { type: 'vaeEncode'; data: Float32Array; channels: number; height: number; width: number }
  | { type: 'vaeNorm'; data: Float32Array; channels: number; height: number; width: number; stats: Float32Array; state?: TileState }
  | { type: 'vaeHead'; data: Float32Array; channels: number; height: number; width: number; chunks: number };

export type WorkerReply = { id: number; ok: true; result: WorkerResult } | { id: number; ok: false; error: WireError };
