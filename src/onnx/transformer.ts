/**
 * The SD3 transformer adapter: the UNet adapter's evaluation (CFG batch [uncond, cond] or one half, float16 at the
 * boundary, probe outputs) on optimum's SD3 tensor names: hidden_states [B, 16, h, w], timestep [B] (float, the
 * flow-matching timestep sigma * 1000), encoder_hidden_states [B, L, joint_attention_dim], pooled_projections
 * [B, pooled_projection_dim] -> out_hidden_states [B, 16, h, w].
 */
import type { DeviceConditioning } from './device-conditioning.ts';
import type { OpenSession } from './tensors.ts';
import { UNET_NAMES, UnetAdapter, type DenoiserNames } from './unet.ts';

export const TRANSFORMER_NAMES: DenoiserNames = {
  component: 'transformer',
  sample: ['hidden_states'],
  timestep: ['timestep'],
  hidden: ['encoder_hidden_states'],
  pooled: ['pooled_projections'],
  output: ['out_hidden_states'],
};

/** Whether a session is an SD3-style transformer (by its input names). */
export function isTransformerSession(s: OpenSession): boolean {
  const names = new Set(s.inputs.map((i) => i.name));
  return names.has('hidden_states') && names.has('pooled_projections');
}

/** The adapter for a denoiser session: the transformer's names when it is one, the UNet's otherwise. */
export function denoiserAdapter(s: OpenSession, options: { device?: DeviceConditioning } = {}): UnetAdapter {
  if (!isTransformerSession(s)) return new UnetAdapter(s, UNET_NAMES, options);
  const adapter = new UnetAdapter(s, TRANSFORMER_NAMES, options);
  if (!adapter.textEmbeds) throw new Error('transformer: no pooled_projections input');
  return adapter;
}
