/**
 * Messages between the page (the coordinator) and a device Web Worker. Tensors travel as typed arrays (structured
 * clone or transfer), never JSON. A worker owns the ONNX Runtime Web sessions of one device.
 */
import type { TextConditioning } from '../../core/conditioning.ts';
import type { WireError } from '../../core/errors.ts';
import type { CfgPart } from '../../core/dispatch/tasks.ts';
import type { AttentionMap } from '../../core/methods/types.ts';
import type { NormLayer } from '../../core/vae/norm-stats.ts';
import type { NormGraphInput, SegmentSpan } from '../../core/vae/pipeline-decode.ts';
import type { TileState } from '../../core/vae/tiled.ts';
import type { DeviceConditioningCounts, IoInfo, TileStateCounts } from '../../onnx/io.ts';
import type { ExternalFileBytes } from '../../graph/external-pieces.ts';
import type { VaeHalf } from '../../graph/vae-attention-split.ts';

export type { VaeHalf };

/** ONNX Runtime Web's execution providers this package drives. */
export type WebProvider = 'wasm' | 'webgpu';

/** The model parts a device worker may hold. */
export type WebComponent = 'textEncoder' | 'textEncoder2' | 'textEncoder3' | 'unet' | 'unetProbe' | 'vaeDecoder' | 'vaeEncoder';

export interface DeviceInit {
  provider: WebProvider;
  /** WebAssembly threads per worker (0: ONNX Runtime's default; threads need a cross-origin isolated page). */
  threads: number;
  /** Where ONNX Runtime finds its .wasm/.mjs files (a folder URL ending in "/"); default: next to the bundle. */
  wasmPaths?: string;
  /**
   * External-data files over this many bytes are handed to ONNX Runtime Web as pieces (src/graph/external-pieces.ts);
   * default EXTERNAL_PIECE_BYTES (1 GiB). Set smaller by tests only, to cut the shipped model's small files.
   */
  externalPieceBytes?: number;
}

/** One external-data file of a model: its location as the model names it, and its bytes. */
export type ExternalFile = ExternalFileBytes;

/**
 * An external-data file as the page holds it: its bytes, or its copy in the browser's storage as a Blob, which the
 * worker reads (Chromium read a stored 1.7 GB file on the page's main thread in tasks of up to 4 s; a Blob is posted
 * as a handle, and read in the worker it held the page not at all: bench/web-large-unet.ts).
 */
export interface PageExternalFile {
  path: string;
  data: Uint8Array | Blob;
}

/**
 * Bytes in a request: the bytes themselves (copied on posting), a stored file's Blob (read by the worker), or a buffer
 * the page sent before in 'stage' pieces (large files: posting one of gigabytes held the page's main thread for
 * seconds while it was copied).
 */
export type WireBytes = Uint8Array | Blob | { staged: number };

/** A load request's external file, its bytes possibly staged or a Blob. */
export interface WireExternalFile {
  path: string;
  data: WireBytes;
}

export type DeviceRequest =
  | { type: 'init'; init: DeviceInit }
  /**
   * Opens a session from the model file's bytes; 'unetProbe' derives the attention-probe graph from the UNet's bytes.
   * `fuse` (unet, unetProbe): the attention fused first (WebPipelineOptions.fuseAttention). `float32`: a float16
   * model is converted to float32 first (a VAE whose config sets force_upcast). `probe` (unet): open the
   * attention-probe graph as the UNet where it computes the UNet's bits (written out, or fused with every attention
   * fused), so one session serves both (`servesProbe` in the reply); else the UNet as asked, `probeReason` saying why
   * (`probeFailed`: no probe graph can be built at all). `external`: the model's external-data files (ONNX Runtime
   * Web reads them from memory); the graphs derived from it (the probe, the fused forms, the decoder's tiled graphs)
   * name the same files (a 'unetProbe' load is sent the UNet's).
   */
  | { type: 'load'; component: WebComponent; bytes: WireBytes; external?: WireExternalFile[]; fuse?: boolean; float32?: boolean; probe?: boolean }
  /** One piece of a staged buffer (WireBytes): `length` bytes in all, this piece at `offset`; the next load takes it. */
  | { type: 'stage'; key: number; length: number; offset: number; piece: Uint8Array }
  | { type: 'describe' }
  | { type: 'encodeText'; which: 'textEncoder' | 'textEncoder2' | 'textEncoder3'; rows: Int32Array[]; layer: 'last' | 'penultimate' }
  | { type: 'setConditioning'; cond: TextConditioning }
  | {
      type: 'unet'; sample: Float32Array; part: CfgPart; channels: number; height: number; width: number; timestep: number;
      guidanceScale: number; wantAttention: boolean; maskTokens?: number[]; timeIds?: number[];
    }
  | { type: 'vaeDecode'; latent: Float32Array; channels: number; height: number; width: number }
  /** Encodes an image [1, 3, H, W] in [-1, 1] to the latent mean (not yet multiplied by the scaling factor). */
  | { type: 'vaeEncode'; image: Float32Array; height: number; width: number }
  /** Runs a unit whole and as two CFG halves on a latent of this size and compares the bits (UnetAdapter.checkCfgSplit). */
  | { type: 'checkCfgSplit'; height: number; width: number }
  /** Derives (once per loaded half) the norm-statistics graphs of the VAE half or of its split's tiled part. */
  | { type: 'vaeNorms'; half: VaeHalf; of: VaeGraphSource }
  /** Derives (once per loaded half) the VAE half split after its attention. */
  | { type: 'vaeSplit'; half: VaeHalf }
  | VaeGraphRequest
  | { type: 'vaeHead'; half: VaeHalf; input: Float32Array; channels: number; height: number; width: number; chunkBytes: number }
  /** Frees tile states a WebGPU worker holds on its device (TileState.held handles) for a VAE half's graphs. */
  | { type: 'vaeReleaseStates'; half: VaeHalf; held: number[] }
  | { type: 'close' };

/**
 * A loaded VAE half whole, or the part of it run over tiles when its attention runs globally (the decoder's after its
 * attention, the encoder's before it); 'vaeHead' runs the other part, the one with the attention.
 */
export type VaeGraphSource = 'whole' | 'tail';

/** Runs a derived graph of a VAE half: a norm-statistics graph of `of`, or the tail as it is (graph 'plain'). */
export interface VaeGraphRequest extends NormGraphInput {
  type: 'vaeGraph';
  half: VaeHalf;
  of: VaeGraphSource;
  graph: 'stats' | 'tile' | 'plain' | { segment: SegmentSpan };
}

export type ComponentIo = { inputs: IoInfo[]; outputs: IoInfo[] };

export type DeviceResult =
  | { type: 'ok' }
  | { type: 'loaded'; io: ComponentIo; probeIo?: ComponentIo; servesProbe?: boolean; probeReason?: string; probeFailed?: boolean; layers?: string[]; reason?: string; fused?: number; biasSplitGelus?: number; groupNorms?: number; fuseReason?: string; onnxAttention?: number; form?: 'padded' | 'flash'; formReason?: string; float32Tensors?: number; float32Reason?: string; externalPieces?: { path: string; bytes: number; pieces: number }[]; inlineWeights?: { tensors: number; bytes: number } }
  /**
   * `sessions`: the sessions open (the UNet and the probe may be one); `tileStates`: those a WebGPU worker has held
   * (its decoder's and encoder's together).
   */
  | {
    type: 'describe'; components: Partial<Record<WebComponent, ComponentIo>>; sessions: number; tileStates?: TileStateCounts;
    /** On WebGPU: the text conditioning's device tensors (uploads, disposed, live) of the UNet and of a probe adapter of its own. */
    deviceConditioning?: { unet?: DeviceConditioningCounts; probe?: DeviceConditioningCounts };
  }
  | { type: 'encodeText'; hidden: Float32Array; tokens: number; dim: number; pooled?: Float32Array; pooledDim?: number }
  | { type: 'unet'; output: Float32Array; attention?: AttentionMap[]; attentionUnsupported?: boolean }
  | { type: 'vaeDecode'; data: Float32Array; height: number; width: number }
  | { type: 'vaeEncode'; data: Float32Array; channels: number; height: number; width: number }
  | { type: 'checkCfgSplit'; identical: boolean; maxAbs: number }
  | { type: 'vaeNorms'; layers?: NormLayer[]; reason?: string }
  | { type: 'vaeSplit'; chunked?: boolean; coreReason?: string; reason?: string }
  | { type: 'vaeGraph'; data: Float32Array; channels: number; height: number; width: number; stats: Float32Array; state?: TileState }
  | { type: 'vaeHead'; data: Float32Array; channels: number; height: number; width: number; chunks: number };

export type DeviceReply = { id: number; ok: true; result: DeviceResult } | { id: number; ok: false; error: WireError };
