/**
 * Checks an SD3 folder's sessions against each other once they are open (docs/sd3.md): the transformer's inputs,
 * the text widths (CLIP-L + CLIP-G <= joint_attention_dim = T5 width; pooled = both text_embeds), and the VAE's
 * latent channels (vae-contract.ts). Every failure names the folder, the component, what was expected and what was
 * found.
 */
import { AsgdError } from '../../core/errors.ts';
import type { IoInfo } from '../../onnx/io.ts';
import type { ModelSpec } from './folder.ts';
import { checkVaeDecoder } from './vae-contract.ts';

type Components = Partial<Record<string, { inputs: IoInfo[]; outputs: IoInfo[] }>>;

export interface Sd3Facts {
  channels: number;
  textWidth: number;
  pooledWidth: number;
}

function fail(spec: ModelSpec, component: string, message: string, expected: string, received: string, hint?: string): AsgdError {
  return new AsgdError(`${message} (${spec.dir})`, {
    kind: 'model', parameter: component, expected, received,
    hint: hint ?? 'The components come from different models or the export is not SD3\'s; re-export the model with optimum-cli',
  });
}

const dimOf = (io: IoInfo | undefined, axis: number): number | undefined => {
  const d = io?.shape[axis];
  return typeof d === 'number' && d > 0 ? d : undefined;
};

export function checkSd3Components(spec: ModelSpec, components: Components): Sd3Facts {
  const tr = components['unet'];
  if (!tr) throw fail(spec, 'transformer', 'The transformer was not loaded', 'transformer/model.onnx', 'none');
  const input = (name: string) => tr.inputs.find((i) => i.name === name);
  if (input('img_ids') || input('txt_ids') || input('guidance')) {
    throw fail(spec, 'transformer', 'This transformer takes img_ids / txt_ids (a FLUX export)', 'SD3 inputs hidden_states, timestep, encoder_hidden_states, pooled_projections', tr.inputs.map((i) => i.name).join(', '),
      'FLUX has a different contract and is not supported; use an SD3 / SD3.5 export');
  }
  for (const name of ['hidden_states', 'timestep', 'encoder_hidden_states', 'pooled_projections']) {
    if (!input(name)) throw fail(spec, 'transformer', `The transformer has no ${name} input`, 'inputs hidden_states, timestep, encoder_hidden_states, pooled_projections', tr.inputs.map((i) => i.name).join(', '));
  }
  if (!tr.outputs.some((o) => o.name === 'out_hidden_states')) {
    throw fail(spec, 'transformer', 'The transformer has no out_hidden_states output', 'out_hidden_states', tr.outputs.map((o) => o.name).join(', '));
  }
  const channels = dimOf(input('hidden_states'), 1) ?? 16;
  const textWidth = dimOf(input('encoder_hidden_states'), 2);
  const pooledWidth = dimOf(input('pooled_projections'), 1);
  if (textWidth === undefined || pooledWidth === undefined) {
    throw fail(spec, 'transformer', 'The transformer does not declare its text widths', 'fixed encoder_hidden_states [B, L, D] and pooled_projections [B, P] widths', 'symbolic widths');
  }
  const width = (name: string, out: string, axis: number) => dimOf(components[name]?.outputs.find((o) => o.name === out), axis);
  const penultimate = (name: string) => {
    const hs = components[name]?.outputs.filter((o) => /^hidden_states\.\d+$/.test(o.name)) ?? [];
    if (hs.length < 2) throw fail(spec, name === 'textEncoder' ? 'text_encoder' : 'text_encoder_2', 'The CLIP encoder exports no hidden_states.N outputs', 'hidden_states.0..N (optimum exports them for SD3)', 'none');
    return dimOf(hs[0], 2);
  };
  const l = penultimate('textEncoder');
  const g = penultimate('textEncoder2');
  const pl = width('textEncoder', 'text_embeds', 1);
  const pg = width('textEncoder2', 'text_embeds', 1);
  if (pl === undefined || pg === undefined) {
    throw fail(spec, pl === undefined ? 'text_encoder' : 'text_encoder_2', 'An SD3 CLIP encoder has no text_embeds output', 'CLIPTextModelWithProjection exports (text_embeds)', 'no text_embeds');
  }
  if (l !== undefined && g !== undefined && l + g > textWidth) {
    throw fail(spec, 'transformer', 'The CLIP widths do not fit the transformer\'s text width', `encoder_hidden_states width >= ${l} + ${g}`, String(textWidth));
  }
  if (pl + pg !== pooledWidth) {
    throw fail(spec, 'transformer', 'The CLIP projections do not add up to the transformer\'s pooled width', `pooled_projections width ${pl} + ${pg} = ${pl + pg}`, String(pooledWidth));
  }
  const t5 = width('textEncoder3', 'last_hidden_state', 2);
  if (components['textEncoder3'] && t5 !== undefined && t5 !== textWidth) {
    throw fail(spec, 'text_encoder_3', 'The T5 encoder\'s width differs from the transformer\'s text width', `last_hidden_state width ${textWidth}`, String(t5));
  }
  checkVaeDecoder(spec, components['vaeDecoder'], channels, 'transformer');
  return { channels, textWidth, pooledWidth };
}
