/**
 * What a loaded model is, as the pipeline reports it (ModelInfo): read from the model folder and from the sessions'
 * inputs and outputs, with the contract between the text encoders, the UNet and the VAE checked on the way.
 */
import path from 'node:path';
import type { UnetFloat16Info } from '../../core/unet-precision.ts';
import type { IoInfo } from '../../onnx/io.ts';
import type { ComponentName } from '../runner/protocol.ts';
import type { ModelFamily, ModelSpec } from './folder.ts';
import { nativeSize } from '../../core/model-family.ts';
import { checkComponents, textFacts, type ContractSource } from '../../core/model-contract.ts';

export interface ModelInfo {
  dir: string;
  name: string;
  family: ModelFamily;
  layout: string;
  className: string;
  nativeWidth: number;
  nativeHeight: number;
  latentChannels: number;
  scheduler: { className: string; config: Record<string, unknown> };
  vae: { scalingFactor: number; forceUpcast: boolean; shiftFactor?: number };
  /** The VAE encoder upscaling needs (opened when an upscale first runs), relative to `dir`; absent when there is none. */
  vaeEncoder?: string;
  /** Width of the denoiser's encoder_hidden_states (SD3: joint_attention_dim). */
  textWidth?: number;
  /** SD3: the transformer's patch size, and which text encoders the folder has. */
  patchSize?: number;
  textEncoders?: string[];
  components: Partial<Record<ComponentName, { file: string; inputs: IoInfo[]; outputs: IoInfo[] }>>;
  attentionProbe: { available: boolean; layers: string[]; reason?: string };
  /** Whether the UNet runs with its attention fused (PipelineOptions.fuseAttention), how many layers, or why not. */
  attentionFusion: {
    applied: boolean;
    layers: number;
    reason?: string;
    /**
     * How the fused attention is written, when applied: 'padded' (q and k padded per head, which keeps ONNX Runtime's
     * WebGPU provider off its flash-attention kernel) or 'flash' (as they are: that kernel, where a check on this
     * machine's WebGPU adapter found it right); `formReason` says why.
     */
    form?: 'padded' | 'flash';
    formReason?: string;
    /** GEGLUs run as one BiasSplitGelu node each: only where every device is a WebGPU one (no CPU kernel for it). */
    biasSplitGelus?: number;
    /** Group norms (with their SiLU) run as one GroupNorm node each: only where every device is a WebGPU one. */
    groupNorms?: number;
  };
  /**
   * Present when PipelineOptions.unetPrecision is 'float16': whether the UNet was converted (counts of what changed)
   * or why not (an export in float16 already needs nothing).
   */
  unetFloat16?: UnetFloat16Info;
  /** Set when the UNet export fixed its spatial input size (static-shape exports). */
  staticLatentSize?: { height: number; width: number };
  notes: string[];
}

/** ModelInfo from the folder's spec and the sessions' inputs and outputs (the first worker's description). */
export function describeModel(
  spec: ModelSpec,
  components: Partial<Record<ComponentName, { inputs: IoInfo[]; outputs: IoInfo[] }>>,
  probe: { file: string; layers: string[] } | { reason: string },
  attentionFusion: ModelInfo['attentionFusion'],
  deviceNotes: string[],
): ModelInfo {
  const unet = components.unet;
  const te = components.textEncoder;
  if (!unet || !te) throw new Error('describeModel: components missing');
  const source: ContractSource = { where: spec.dir, vaeDecoder: spec.paths.vaeDecoder, vaeGiven: spec.vaeDir !== undefined };
  const { sample, channels, sd3, unetTextWidth } = checkComponents(source, spec.family, components);
  const staticH = sample.shape[2];
  const native = nativeSize(spec.family, spec.unetSampleSize, staticH, spec.notes);
  const files: Record<string, string> = {
    textEncoder: spec.paths.textEncoder, unet: spec.paths.unet, vaeDecoder: spec.paths.vaeDecoder,
    ...(spec.paths.textEncoder2 ? { textEncoder2: spec.paths.textEncoder2 } : {}),
    ...(spec.paths.textEncoder3 ? { textEncoder3: spec.paths.textEncoder3 } : {}),
  };
  const out: ModelInfo['components'] = {};
  for (const [k, v] of Object.entries(components) as [ComponentName, { inputs: IoInfo[]; outputs: IoInfo[] }][]) {
    if (k === 'unetProbe') continue;
    out[k] = { file: path.relative(spec.dir, files[k] ?? ''), ...v };
  }
  const sc = spec.schedulerConfig as Record<string, unknown>;
  return {
    dir: spec.dir,
    name: path.basename(spec.dir),
    family: spec.family,
    layout: spec.layout,
    className: spec.className,
    nativeWidth: native,
    nativeHeight: native,
    latentChannels: channels,
    scheduler: { className: typeof sc['_class_name'] === 'string' ? (sc['_class_name'] as string) : 'EulerDiscreteScheduler', config: sc },
    vae: spec.vae,
    ...(spec.paths.vaeEncoder ? { vaeEncoder: path.relative(spec.dir, spec.paths.vaeEncoder) } : {}),
    ...textFacts(sd3, unetTextWidth, spec.patchSize, spec.paths.textEncoder3 !== undefined),
    components: out,
    staticLatentSize: typeof staticH === 'number' && typeof sample.shape[3] === 'number' ? { height: staticH, width: sample.shape[3] } : undefined,
    attentionProbe: 'file' in probe ? { available: true, layers: probe.layers } : { available: false, layers: [], reason: probe.reason },
    attentionFusion,
    notes: [...spec.notes, ...deviceNotes],
  };
}
