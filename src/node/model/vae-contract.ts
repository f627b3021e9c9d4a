/**
 * Checks the VAE decoder's session against the denoiser once both are open: a decoder takes one input, the latent,
 * with the denoiser's channels. A VAE of another family (`--vae` with SD3's 16-channel VAE on an SD model) or a
 * folder that is not a VAE's would otherwise fail only at the first decode, after the whole denoise, as a device
 * error. The error names `--vae` when the decoder came from there.
 */
import { AsgdError } from '../../core/errors.ts';
import type { IoInfo } from '../../onnx/io.ts';
import type { ModelSpec } from './folder.ts';

export function checkVaeDecoder(spec: ModelSpec, decoder: { inputs: IoInfo[] } | undefined, channels: number, denoiser: string): void {
  if (!decoder) return;
  const file = spec.paths.vaeDecoder;
  const given = spec.vaeDir !== undefined;
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
