/**
 * The UNet and probe files a pipeline loads when the attention is fused (PipelineOptions.fuseAttention), and what
 * the devices' attention costs them; shared by the pipeline and `asgd tune`.
 */
import { attentionFormFor, NO_WEBGPU_FORM, type AttentionForm, type FlashCheck } from '../graph/attention-check.ts';
import { webgpuAttentionNote } from '../core/webgpu-attention-note.ts';
import type { ModelInfo } from './model/describe.ts';
import type { DeviceSpec } from './runner/devices.ts';

/**
 * How the fused attention is written for these devices: the flash form where a WebGPU device is present and the
 * check of ONNX Runtime's flash-attention kernel on its adapter passes (`check`: runner/devices.ts, a process of its
 * own, once per process); else padded, as on every other provider (the CPU provider computes either form right).
 */
export async function attentionForm(devices: readonly DeviceSpec[], check: () => Promise<FlashCheck>): Promise<AttentionForm> {
  return devices.some((d) => d.provider === 'webgpu') ? attentionFormFor(await check()) : NO_WEBGPU_FORM;
}

/**
 * The fused-attention UNet and probe (fused-attention.ts) in `form` when asked for (a form given); the plain files
 * otherwise, or when the model has no attention the fusion recognises (the reason is reported in ModelInfo).
 * `webgpuOnly`: every device is a WebGPU one, so the GEGLUs and group norms are fused too (BiasSplitGelu and GroupNorm
 * have no CPU kernel).
 */
export async function fuseAttentionFiles(
  unet: string, probe: { file: string } | { reason: string }, form: (AttentionForm & { webgpuOnly: boolean }) | undefined,
): Promise<{ unet?: string; probe?: string; probeServesUnet?: boolean; info: ModelInfo['attentionFusion'] }> {
  if (!form) return { info: { applied: false, layers: 0, reason: 'fuseAttention is off; --fuse-attention turns it on' } };
  const { prepareFusedAttention } = await import('./fused-attention.ts');
  const { probeLoadOptions } = await import('./probe.ts');
  const { webgpuOnly, ...shape } = form;
  const how = { flashForm: form.form === 'flash', biasSplitGelu: webgpuOnly };
  const main = await prepareFusedAttention(unet, how);
  if ('reason' in main) return { info: { applied: false, layers: 0, reason: main.reason } };
  const fusedProbe = 'file' in probe ? await prepareFusedAttention(probe.file, { weightsFolder: probeLoadOptions(probe.file).externalDataFolder, ...how }) : undefined;
  const info = {
    applied: true, layers: main.fused, ...shape,
    ...(main.biasSplitGelus ? { biasSplitGelus: main.biasSplitGelus } : {}), ...(main.groupNorms ? { groupNorms: main.groupNorms } : {}),
  };
  if (!fusedProbe || !('file' in fusedProbe)) return { unet: main.file, info };
  // Every attention fused in both, the probed layers' too (attention-fusion.ts): the probe's noise prediction is then
  // the fused UNet's. An ONNX Attention node whose probabilities the probe reads stays unfused: two graphs then.
  const same = fusedProbe.fused === main.fused && fusedProbe.groupNorms === main.groupNorms && fusedProbe.biasSplitGelus === main.biasSplitGelus && fusedProbe.skipLayerNorms === main.skipLayerNorms;
  return { unet: main.file, probe: fusedProbe.file, probeServesUnet: same, info };
}

/**
 * On WebGPU devices: a warning when the UNet as loaded has ONNX Attention nodes, which ONNX Runtime runs on the CPU
 * there (fused-attention.ts counts them, once per file).
 */
export async function attentionOnCpuWarnings(unetFile: string, devices: DeviceSpec[]): Promise<string[]> {
  if (!devices.some((d) => d.provider === 'webgpu')) return [];
  const { countOnnxAttentionIn } = await import('./fused-attention.ts');
  const n = await countOnnxAttentionIn(unetFile);
  return typeof n === 'number' && n > 0 ? [webgpuAttentionNote(n)] : [];
}
