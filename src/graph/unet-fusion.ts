/**
 * The fused UNet graph, as Node (src/node/fused-attention.ts) and the browser (src/browser/device/probe-graph.ts)
 * both derive it: the attention as MultiHeadAttention nodes (attention-fusion.ts), then each transformer block's
 * bias + residual + LayerNormalization as SkipLayerNormalization (skip-layer-norm.ts), and, for graphs only WebGPU
 * devices run, each GEGLU as BiasSplitGelu (bias-split-gelu.ts) and each group norm (with a following SiLU) as
 * GroupNorm (group-norm.ts). Portable.
 */
import type { ModelProto } from 'onnx-buf';
import { fuseAttention, unfusedReason, type FuseAttentionOptions } from './attention-fusion.ts';
import { fuseBiasSplitGelu } from './bias-split-gelu.ts';
import { fuseGroupNorm } from './group-norm.ts';
import { fuseSkipLayerNorm } from './skip-layer-norm.ts';

export type UnetFusion = { fused: number; skipLayerNorms: number; biasSplitGelus: number; groupNorms: number } | { reason: string };

export interface FuseUnetOptions extends FuseAttentionOptions {
  /** Fuse the residual norms too (default true; false only to measure what they change: the card's variants). */
  skipLayerNorm?: boolean;
  /**
   * Fuse each GEGLU into BiasSplitGelu (default false): ONNX Runtime's WebGPU providers run it, its CPU provider has
   * no kernel for it, so only for graphs that run on WebGPU devices alone.
   */
  biasSplitGelu?: boolean;
  /**
   * Fuse each group norm into GroupNorm (default false): ONNX Runtime's WebGPU provider runs it from 1.31, its CPU
   * provider has no kernel for it, so only for graphs that run on WebGPU devices alone.
   */
  groupNorm?: boolean;
}

/** Fuses `model` in place; { reason } where no attention was fused (then nothing else is either). */
export function fuseUnet(model: ModelProto, options: FuseUnetOptions = {}): UnetFusion {
  const fusion = fuseAttention(model, options);
  if ('reason' in fusion) return fusion;
  if (fusion.fused === 0) return { reason: unfusedReason(model) };
  return {
    fused: fusion.fused,
    skipLayerNorms: options.skipLayerNorm === false ? 0 : fuseSkipLayerNorm(model),
    biasSplitGelus: options.biasSplitGelu === true ? fuseBiasSplitGelu(model) : 0,
    groupNorms: options.groupNorm === true ? fuseGroupNorm(model) : 0,
  };
}
