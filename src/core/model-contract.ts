/**
 * Checks a model's sessions against each other once they are open, in Node and in the browser: the VAE decoder takes
 * the denoiser's latent channels (a VAE of another family, `--vae` with SD3's 16-channel VAE on an SD model, or a
 * folder that is not a VAE's would otherwise fail only at the first decode, after the whole denoise, as a device
 * error), and an SD3 folder's transformer inputs and text widths (docs/sd3.md: CLIP-L + CLIP-G <= joint_attention_dim
 * = T5 width; pooled = both text_embeds). Every failure names the folder, the component, what was expected and what
 * was found. Portable.
 */
import { AsgdError } from './errors.ts';
import type { ModelFamily } from './model-family.ts';

/** One input or output of a session, as ONNX Runtime describes it (src/onnx/io.ts's IoInfo). */
export interface IoShape {
  name: string;
  shape: ReadonlyArray<number | string>;
}

/** Where the model came from, for the messages: its folder (a path or a URL) and its VAE decoder's file. */
export interface ContractSource {
  where: string;
  vaeDecoder: string;
  /** The VAE came from a folder of its own (Node's `--vae`): the messages name that option. */
  vaeGiven?: boolean;
}

export function checkVaeDecoder(source: ContractSource, decoder: { inputs: readonly IoShape[] } | undefined, channels: number, denoiser: string): void {
  if (!decoder) return;
  const file = source.vaeDecoder;
  const given = source.vaeGiven === true;
  const fail = (message: string, expected: string, received: string, hint: string) =>
    new AsgdError(`${message} (${file})`, { kind: 'model', parameter: given ? '--vae' : 'vae_decoder', expected, received, hint });
  if (decoder.inputs.length !== 1) {
    throw fail('The VAE decoder takes other inputs than a latent', 'one input, the latent [batch, channels, height, width]', decoder.inputs.map((i) => i.name).join(', '),
      given ? 'Give --vae a VAE export folder (vae_decoder/model.onnx), not another component\'s' : 'Re-export the model with optimum-cli');
  }
  const c = decoder.inputs[0]!.shape[1];
  if (typeof c === 'number' && c !== channels) {
    throw fail(`The VAE decoder's latent channels differ from the ${denoiser}'s`, `a latent of ${channels} channels`, `${c} channels`,
      given
        ? `Give --vae a VAE of this model's family (${channels === 16 ? 'SD3 needs its own 16-channel VAE' : 'SD 1.x/2.x and SDXL VAEs take 4 channels'})`
        : 'The components come from different models; re-export the model with optimum-cli');
  }
}

type Components = Partial<Record<string, { inputs: readonly IoShape[]; outputs: readonly IoShape[] }>>;

export interface Sd3Facts {
  channels: number;
  textWidth: number;
  pooledWidth: number;
}

function fail(source: ContractSource, component: string, message: string, expected: string, received: string, hint?: string): AsgdError {
  return new AsgdError(`${message} (${source.where})`, {
    kind: 'model', parameter: component, expected, received,
    hint: hint ?? 'The components come from different models or the export is not SD3\'s; re-export the model with optimum-cli',
  });
}

const dimOf = (io: IoShape | undefined, axis: number): number | undefined => {
  const d = io?.shape[axis];
  return typeof d === 'number' && d > 0 ? d : undefined;
};

export function checkSd3Components(source: ContractSource, components: Components): Sd3Facts {
  const tr = components['unet'];
  if (!tr) throw fail(source, 'transformer', 'The transformer was not loaded', 'transformer/model.onnx', 'none');
  const input = (name: string) => tr.inputs.find((i) => i.name === name);
  if (input('img_ids') || input('txt_ids') || input('guidance')) {
    throw fail(source, 'transformer', 'This transformer takes img_ids / txt_ids (a FLUX export)', 'SD3 inputs hidden_states, timestep, encoder_hidden_states, pooled_projections', tr.inputs.map((i) => i.name).join(', '),
      'FLUX has a different contract and is not supported; use an SD3 / SD3.5 export');
  }
  for (const name of ['hidden_states', 'timestep', 'encoder_hidden_states', 'pooled_projections']) {
    if (!input(name)) throw fail(source, 'transformer', `The transformer has no ${name} input`, 'inputs hidden_states, timestep, encoder_hidden_states, pooled_projections', tr.inputs.map((i) => i.name).join(', '));
  }
  if (!tr.outputs.some((o) => o.name === 'out_hidden_states')) {
    throw fail(source, 'transformer', 'The transformer has no out_hidden_states output', 'out_hidden_states', tr.outputs.map((o) => o.name).join(', '));
  }
  const channels = dimOf(input('hidden_states'), 1) ?? 16;
  const textWidth = dimOf(input('encoder_hidden_states'), 2);
  const pooledWidth = dimOf(input('pooled_projections'), 1);
  if (textWidth === undefined || pooledWidth === undefined) {
    throw fail(source, 'transformer', 'The transformer does not declare its text widths', 'fixed encoder_hidden_states [B, L, D] and pooled_projections [B, P] widths', 'symbolic widths');
  }
  const width = (name: string, out: string, axis: number) => dimOf(components[name]?.outputs.find((o) => o.name === out), axis);
  const penultimate = (name: string) => {
    const hs = components[name]?.outputs.filter((o) => /^hidden_states\.\d+$/.test(o.name)) ?? [];
    if (hs.length < 2) throw fail(source, name === 'textEncoder' ? 'text_encoder' : 'text_encoder_2', 'The CLIP encoder exports no hidden_states.N outputs', 'hidden_states.0..N (optimum exports them for SD3)', 'none');
    return dimOf(hs[0], 2);
  };
  const l = penultimate('textEncoder');
  const g = penultimate('textEncoder2');
  const pl = width('textEncoder', 'text_embeds', 1);
  const pg = width('textEncoder2', 'text_embeds', 1);
  if (pl === undefined || pg === undefined) {
    throw fail(source, pl === undefined ? 'text_encoder' : 'text_encoder_2', 'An SD3 CLIP encoder has no text_embeds output', 'CLIPTextModelWithProjection exports (text_embeds)', 'no text_embeds');
  }
  if (l !== undefined && g !== undefined && l + g > textWidth) {
    throw fail(source, 'transformer', 'The CLIP widths do not fit the transformer\'s text width', `encoder_hidden_states width >= ${l} + ${g}`, String(textWidth));
  }
  if (pl + pg !== pooledWidth) {
    throw fail(source, 'transformer', 'The CLIP projections do not add up to the transformer\'s pooled width', `pooled_projections width ${pl} + ${pg} = ${pl + pg}`, String(pooledWidth));
  }
  const t5 = width('textEncoder3', 'last_hidden_state', 2);
  if (components['textEncoder3'] && t5 !== undefined && t5 !== textWidth) {
    throw fail(source, 'text_encoder_3', 'The T5 encoder\'s width differs from the transformer\'s text width', `last_hidden_state width ${textWidth}`, String(t5));
  }
  checkVaeDecoder(source, components['vaeDecoder'], channels, 'transformer');
  return { channels, textWidth, pooledWidth };
}

/**
 * What a model's description says of its text conditioning: the denoiser's text width (SD3: joint_attention_dim, from
 * the checked components; else the UNet's encoder_hidden_states width where the export fixes it), and for SD3 the
 * transformer's patch size and which text encoders the folder has.
 */
export function textFacts(sd3: Sd3Facts | undefined, unetTextWidth: unknown, patchSize: number | undefined, hasT5: boolean): { textWidth?: number; patchSize?: number; textEncoders?: string[] } {
  if (!sd3) return typeof unetTextWidth === 'number' ? { textWidth: unetTextWidth } : {};
  return {
    textWidth: sd3.textWidth,
    patchSize: patchSize ?? 2,
    textEncoders: ['text_encoder (CLIP-L)', 'text_encoder_2 (CLIP-G)', ...(hasT5 ? ['text_encoder_3 (T5)'] : [])],
  };
}

/** What checkComponents found: the denoiser's latent channels, SD3's widths, the UNet's text width where fixed. */
export interface ComponentFacts {
  /** The denoiser's latent input (sample, or SD3's hidden_states): its shape gives a static export's size. */
  sample: IoShape;
  channels: number;
  sd3?: Sd3Facts;
  unetTextWidth?: number;
}

/**
 * A loaded model's components checked against each other, in Node and in the browser: SD3's (checkSd3Components), or
 * a UNet's: its VAE decoder's channels, its text width against the text encoders' (SDXL: both added), and an SDXL
 * refiner (time_ids of 5 values) refused.
 */
export function checkComponents(source: ContractSource, family: ModelFamily, components: Components): ComponentFacts {
  const unet = components['unet'];
  if (!unet) throw new Error('checkComponents: no denoiser');
  const sd3 = family === 'sd3' ? checkSd3Components(source, components) : undefined;
  const sample = unet.inputs.find((i) => i.name === 'sample' || i.name === 'hidden_states') ?? unet.inputs[0]!;
  const channels = typeof sample.shape[1] === 'number' ? sample.shape[1] : 4;
  if (sd3) return { sample, channels, sd3 };
  checkVaeDecoder(source, components['vaeDecoder'], channels, 'UNet');
  const unetDim = unet.inputs.find((i) => i.name === 'encoder_hidden_states')?.shape[2];
  const width = (c: { outputs: readonly IoShape[] } | undefined) => (c?.outputs.find((o) => o.name === 'last_hidden_state') ?? c?.outputs[0])?.shape[2];
  // SDXL concatenates both encoders' hidden states on the feature axis.
  const w1 = width(components['textEncoder']);
  const w2 = family === 'sdxl' ? width(components['textEncoder2']) : 0;
  const teDim = typeof w1 === 'number' && typeof w2 === 'number' ? w1 + w2 : undefined;
  const contractHint = 'The model does not match the Stable Diffusion ONNX contract; re-export it with optimum-cli';
  if (typeof unetDim === 'number' && teDim !== undefined && unetDim !== teDim) {
    const what = family === 'sdxl' ? 'the two text encoders\' widths added' : 'the text encoder\'s';
    throw new AsgdError('The text encoder and the UNet disagree on the text embedding width', {
      kind: 'model', parameter: 'unet', expected: `encoder_hidden_states width ${teDim} (${what})`, received: String(unetDim), hint: contractHint,
    });
  }
  const timeIds = unet.inputs.find((i) => i.name === 'time_ids');
  if (timeIds && timeIds.shape[1] === 5) {
    throw new AsgdError('SDXL refiner exports are not supported', { kind: 'model', parameter: 'unet', expected: 'time_ids with 6 values (SDXL base)', received: '5 values (refiner: aesthetic score)', hint: 'Use an SDXL base export' });
  }
  return { sample, channels, ...(typeof unetDim === 'number' ? { unetTextWidth: unetDim } : {}) };
}
