/**
 * What a WebGPU user is told about a UNet with ONNX `Attention` nodes (the standard operator of opset 23, which
 * torch's dynamo exporter writes there): ONNX Runtime's WebGPU provider (1.30, 1.31.1) has no kernel for it, so the runtime
 * places those nodes on the CPU, with copies to and from the GPU around each. The Node and the browser pipelines
 * warn with it. Portable.
 */
import { PIPELINE_OPTIONS, optionSpec } from './options/registry.ts';

export function webgpuAttentionNote(count: number): string {
  const flag = optionSpec(PIPELINE_OPTIONS, 'fuseAttention').cli?.flag ?? 'fuseAttention';
  return `The UNet has ${count} ONNX Attention node${count === 1 ? '' : 's'} (opset 23, as torch's dynamo exporter writes attention); ` +
    `ONNX Runtime's WebGPU provider has no kernel for them, so they run on the CPU, with copies between the CPU and the GPU around each. ` +
    `${flag} (fuseAttention: true) runs them as MultiHeadAttention on the GPU; an export at opset 22 or lower writes the attention out instead`;
}
