/** Messages between the coordinator and a device worker. Tensors travel as transferred typed arrays, never JSON. */
import type { AttentionMap } from '../../core/methods/types.ts';
import type { SessionOptions } from '../../onnx/session.ts';
import type { TextConditioning } from '../../onnx/unet.ts';
import type { IoInfo } from '../../onnx/session.ts';

export type ComponentName = 'textEncoder' | 'textEncoder2' | 'unet' | 'unetProbe' | 'vaeDecoder' | 'vaeEncoder';

export interface InitRequest {
  type: 'init';
  paths: Partial<Record<ComponentName, string>>;
  session: SessionOptions;
  /** Test hook: fail every UNet call after this many (to exercise fault handling). */
  failAfterUnetCalls?: number;
}

export interface UnetRequest {
  type: 'unet';
  sample: Float32Array;
  channels: number;
  height: number;
  width: number;
  timestep: number;
  guidanceScale: number;
  wantAttention: boolean;
  timeIds?: number[];
}

export type WorkerRequest =
  | InitRequest
  | { type: 'describe' }
  | { type: 'encodeText'; which: 'textEncoder' | 'textEncoder2'; rows: Int32Array[]; layer: 'last' | 'penultimate' }
  | { type: 'setConditioning'; cond: TextConditioning }
  | UnetRequest
  | { type: 'vaeDecode'; latent: Float32Array; channels: number; height: number; width: number }
  | { type: 'vaeEncode'; image: Float32Array; height: number; width: number }
  | { type: 'close' };

export type WorkerResult =
  | { type: 'ok' }
  | { type: 'describe'; components: Partial<Record<ComponentName, { inputs: IoInfo[]; outputs: IoInfo[] }>> }
  | { type: 'encodeText'; hidden: Float32Array; tokens: number; dim: number; pooled?: Float32Array; pooledDim?: number }
  | { type: 'unet'; output: Float32Array; attention?: AttentionMap[]; attentionUnsupported?: boolean }
  | { type: 'vaeDecode'; data: Float32Array; height: number; width: number }
  | { type: 'vaeEncode'; data: Float32Array; channels: number; height: number; width: number };

export interface SerializedError {
  message: string;
  name: string;
  kind?: string;
  parameter?: string;
  expected?: string;
  received?: string;
  hint?: string;
  stack?: string;
}

export type WorkerReply = { id: number; ok: true; result: WorkerResult } | { id: number; ok: false; error: SerializedError };
