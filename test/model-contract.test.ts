/**
 * The checks both pipelines run on a loaded model's components (src/core/model-contract.ts), on the inputs and
 * outputs ONNX Runtime reports: what they accept, and the errors naming the component, what was expected and found.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AsgdError } from '../src/core/errors.ts';
import { checkComponents, textFacts, type IoShape } from '../src/core/model-contract.ts';

const io = (name: string, ...shape: (number | string)[]): IoShape => ({ name, shape });
const source = { where: '/models/x', vaeDecoder: '/models/x/vae_decoder/model.onnx' };

function unetModel(opts: { textWidth?: number; te1?: number; te2?: number; timeIds?: number; vaeChannels?: number } = {}) {
  const inputs = [io('sample', 'B', 4, 'h', 'w'), io('timestep', 'B'), io('encoder_hidden_states', 'B', 77, opts.textWidth ?? 64)];
  if (opts.timeIds !== undefined) inputs.push(io('text_embeds', 'B', 32), io('time_ids', 'B', opts.timeIds));
  return {
    unet: { inputs, outputs: [io('out_sample', 'B', 4, 'h', 'w')] },
    textEncoder: { inputs: [io('input_ids', 'B', 77)], outputs: [io('last_hidden_state', 'B', 77, opts.te1 ?? 64)] },
    ...(opts.te2 !== undefined ? { textEncoder2: { inputs: [io('input_ids', 'B', 77)], outputs: [io('last_hidden_state', 'B', 77, opts.te2)] } } : {}),
    vaeDecoder: { inputs: [io('latent_sample', 'B', opts.vaeChannels ?? 4, 'h', 'w')], outputs: [io('sample', 'B', 3, 'H', 'W')] },
  };
}

function refused(fn: () => unknown): AsgdError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof AsgdError, String(err));
    return err;
  }
  assert.fail('not refused');
}

test('an SD UNet whose text width is its text encoder\'s passes; the facts are its latent input, channels and text width', () => {
  assert.deepEqual(checkComponents(source, 'sd', unetModel()), { sample: io('sample', 'B', 4, 'h', 'w'), channels: 4, unetTextWidth: 64 });
  assert.deepEqual(textFacts(undefined, 64, undefined, false), { textWidth: 64 });
});

test('a text width that is not the text encoder\'s (SDXL: the two added) is refused, naming both', () => {
  const e = refused(() => checkComponents(source, 'sd', unetModel({ textWidth: 64, te1: 48 })));
  assert.equal(e.summary, 'The text encoder and the UNet disagree on the text embedding width');
  assert.deepEqual([e.parameter, e.expected, e.received], ['unet', "encoder_hidden_states width 48 (the text encoder's)", '64']);
  assert.deepEqual(checkComponents(source, 'sdxl', unetModel({ textWidth: 80, te1: 32, te2: 48, timeIds: 6 })), { sample: io('sample', 'B', 4, 'h', 'w'), channels: 4, unetTextWidth: 80 });
  const x = refused(() => checkComponents(source, 'sdxl', unetModel({ textWidth: 80, te1: 32, te2: 32, timeIds: 6 })));
  assert.equal(x.expected, "encoder_hidden_states width 64 (the two text encoders' widths added)");
});

test('an SDXL refiner (time_ids of 5 values) is refused by name', () => {
  const e = refused(() => checkComponents(source, 'sdxl', unetModel({ textWidth: 80, te1: 32, te2: 48, timeIds: 5 })));
  assert.equal(e.summary, 'SDXL refiner exports are not supported');
  assert.equal(e.received, '5 values (refiner: aesthetic score)');
});

test("a VAE of another family is refused naming the decoder file, and --vae where the VAE came from that option", () => {
  const e = refused(() => checkComponents(source, 'sd', unetModel({ vaeChannels: 16 })));
  assert.equal(e.summary, "The VAE decoder's latent channels differ from the UNet's (/models/x/vae_decoder/model.onnx)");
  assert.deepEqual([e.parameter, e.expected, e.received], ['vae_decoder', 'a latent of 4 channels', '16 channels']);
  const given = refused(() => checkComponents({ ...source, vaeGiven: true }, 'sd', unetModel({ vaeChannels: 16 })));
  assert.equal(given.parameter, '--vae');
  assert.match(given.hint ?? '', /SD 1\.x\/2\.x and SDXL VAEs take 4 channels/);
});

test("SD3's text facts: the transformer's width and patch size, and which encoders the folder has", () => {
  assert.deepEqual(textFacts({ channels: 16, textWidth: 96, pooledWidth: 80 }, undefined, undefined, true), {
    textWidth: 96, patchSize: 2, textEncoders: ['text_encoder (CLIP-L)', 'text_encoder_2 (CLIP-G)', 'text_encoder_3 (T5)'],
  });
  assert.deepEqual(textFacts({ channels: 16, textWidth: 96, pooledWidth: 80 }, undefined, 4, false).textEncoders, ['text_encoder (CLIP-L)', 'text_encoder_2 (CLIP-G)']);
});
