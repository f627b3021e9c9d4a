/**
 * The UNet graphs derived in the browser: the attention-probe UNet (the same graph surgery as in Node,
 * src/graph/attention-probe.ts) and the fused UNet (src/graph/unet-fusion.ts), on the UNet's
 * bytes, kept in memory (the weights stay inline). Loaded by the device worker on demand, so pages that use neither
 * never load the protobuf code.
 */
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import { modelBytes } from '../../graph/model-bytes.ts';
import { countOnnxAttention } from '../../graph/attention-fusion.ts';
import { fuseUnet } from '../../graph/unet-fusion.ts';
import { addAttentionProbe } from '../../graph/attention-probe.ts';
import { addJointAttentionProbe, isJointTransformer } from '../../graph/joint-attention-probe.ts';

export interface DerivedUnet {
  bytes: Uint8Array;
  /** The probed layers (probe graphs). */
  layers?: string[];
  /** Attentions fused (fuse asked and some recognised). */
  fused?: number;
  /** GEGLUs fused into BiasSplitGelu (fuse and biasSplitGelu asked: WebGPU devices only). */
  biasSplitGelus?: number;
  /** Group norms fused into GroupNorm (with biasSplitGelu: WebGPU devices only). */
  groupNorms?: number;
  /** Why nothing was fused (fuse asked): the graph is then as exported, or as the probe made it. */
  fuseReason?: string;
  /** ONNX Attention nodes (opset 23) left in the derived graph: on WebGPU they run on the CPU. */
  onnxAttention: number;
}

/**
 * The UNet's bytes with the probe added (`probe`) and/or the attention fused (`fuse`; q and k unpadded with
 * `flashForm`, where the device's flash-attention check passed; the GEGLUs and group norms too with `biasSplitGelu`,
 * on WebGPU devices, as ONNX Runtime Web's CPU provider has no kernel for them); { reason } when the probe cannot be built. A fusion
 * that recognises nothing is not an error: the graph stays written out, with the reason.
 */
export function derivedUnetBytes(unet: Uint8Array, opts: { probe: boolean; fuse: boolean; flashForm?: boolean; biasSplitGelu?: boolean }): DerivedUnet | { reason: string } {
  let model: ModelProto;
  try {
    model = fromBinary(ModelProtoSchema, unet);
  } catch (err) {
    return { reason: `the UNet could not be parsed (${err instanceof Error ? err.message : String(err)})` };
  }
  const out: Omit<DerivedUnet, 'bytes' | 'onnxAttention'> = {};
  if (opts.probe) {
    // An SD3 transformer's joint attention holds the text tokens' scores beside the image's (as Node's src/node/probe.ts).
    const surgery = isJointTransformer(model) ? addJointAttentionProbe(model) : addAttentionProbe(model);
    if ('reason' in surgery) return surgery;
    out.layers = surgery.layers;
  }
  if (opts.fuse) {
    const fusion = fuseUnet(model, { flashForm: opts.flashForm ?? false, biasSplitGelu: opts.biasSplitGelu ?? false, groupNorm: opts.biasSplitGelu ?? false });
    if ('reason' in fusion) out.fuseReason = fusion.reason;
    else {
      out.fused = fusion.fused;
      if (fusion.biasSplitGelus) out.biasSplitGelus = fusion.biasSplitGelus;
      if (fusion.groupNorms) out.groupNorms = fusion.groupNorms;
    }
  }
  return { bytes: modelBytes(model), ...out, onnxAttention: countOnnxAttention(model) };
}
