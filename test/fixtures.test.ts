import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { Tokenizer } from '@huggingface/tokenizers';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { AsgdError } from '../src/core/errors.ts';
import { fromFloat16Bits, toFloat16Bits } from './fixtures/float16.ts';
import { valueInfo } from './fixtures/onnx-graph.ts';
import { normals } from './fixtures/prng.ts';
import { CAPTION_WORDS, bytesToUnicode } from './fixtures/tiny-tokenizer.ts';
import { TINY_VAE } from './fixtures/tiny-vae.ts';
import { VARIANTS, writeTinySdModel, type VariantName } from './fixtures/tiny-sd.ts';

const root = mkdtempSync(join(tmpdir(), 'asgd-fixtures-'));
const dirs = new Map<VariantName, string>();
after(() => rmSync(root, { recursive: true, force: true }));
before(async () => {
  for (const variant of VARIANTS) {
    const dir = join(root, variant);
    await writeTinySdModel(dir, { variant });
    dirs.set(variant, dir);
  }
});

const dirOf = (variant: VariantName) => dirs.get(variant)!;

function modelFile(variant: VariantName, component: string): string {
  return variant === 'flat' ? join(dirOf(variant), `${component}.onnx`) : join(dirOf(variant), component, 'model.onnx');
}

async function open(variant: VariantName, component: string): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(modelFile(variant, component), { intraOpNumThreads: 1, interOpNumThreads: 1 });
}

function readModel(variant: VariantName, component: string): ModelProto {
  return fromBinary(ModelProtoSchema, readFileSync(modelFile(variant, component)));
}

type Meta = [name: string, type: string, shape: (number | string)[]];

function metadataOf(list: readonly ort.InferenceSession.ValueMetadata[]): Meta[] {
  return list.map((m) => {
    assert.ok(m.isTensor, `${m.name} is a tensor`);
    return [m.name, m.type, [...m.shape]];
  });
}

/** Token ids of "<bos> a photo of a red cat <eos> <eos>..." and "<bos> a red dog <eos>..." from vocab.json. */
function promptIds(variant: VariantName = 'standard'): number[] {
  const vocab = JSON.parse(readFileSync(join(dirOf(variant), 'tokenizer', 'vocab.json'), 'utf8')) as Record<string, number>;
  const eos = vocab['<|endoftext|>']!;
  const bos = vocab['<|startoftext|>']!;
  const ids: number[] = [];
  for (const words of [['a', 'photo', 'of', 'a', 'red', 'cat'], ['a', 'red', 'dog']]) {
    const row = [bos, ...words.map((w) => vocab[`${w}</w>`]!)];
    while (row.length < 77) row.push(eos);
    ids.push(...row);
  }
  return ids;
}

function floatTensor(type: string, data: Float32Array, dims: number[]): ort.Tensor {
  if (type === 'float16') return new ort.Tensor('float16', Uint16Array.from(data, toFloat16Bits), dims);
  return new ort.Tensor('float32', data, dims);
}

function toFloat32(t: ort.Tensor): Float32Array {
  if (t.type === 'float16') return Float32Array.from(t.data as Uint16Array, fromFloat16Bits);
  assert.equal(t.type, 'float32');
  return t.data as Float32Array;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function assertFinite(a: Float32Array, what: string): void {
  for (let i = 0; i < a.length; i++) assert.ok(Number.isFinite(a[i]), `${what}[${i}] = ${a[i]} is finite`);
}

function std(a: Float32Array): number {
  let mean = 0;
  for (const x of a) mean += x;
  mean /= a.length;
  let v = 0;
  for (const x of a) v += (x - mean) ** 2;
  return Math.sqrt(v / a.length);
}

interface Outputs {
  last: Float32Array;
  pooled?: Float32Array;
  eps: Float32Array;
  image: Float32Array;
  latent: Float32Array;
}

const SAMPLE = normals(2 * 4 * 16 * 16, 11);
const LATENT = normals(1 * 4 * 8 * 8, 12);
const IMAGE = Float32Array.from(normals(1 * 3 * 64 * 64, 13), (x) => Math.tanh(x));

async function runText(variant: VariantName, ids = promptIds()): Promise<Record<string, ort.Tensor>> {
  const session = await open(variant, 'text_encoder');
  const type = (session.inputMetadata[0] as ort.InferenceSession.TensorValueMetadata).type;
  const input =
    type === 'int64' ? new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [ids.length / 77, 77]) : new ort.Tensor('int32', Int32Array.from(ids), [ids.length / 77, 77]);
  const out = await session.run({ input_ids: input });
  await session.release();
  return out;
}

async function runUnet(
  variant: VariantName,
  sample: Float32Array,
  dims: number[],
  text: Float32Array,
  options: { timestep?: number; textDim?: number; extra?: Record<string, ort.Tensor> } = {},
): Promise<Float32Array> {
  const session = await open(variant, 'unet');
  const meta = Object.fromEntries(session.inputMetadata.map((m) => [m.name, m as ort.InferenceSession.TensorValueMetadata]));
  const t = options.timestep ?? 901;
  const timestep =
    meta.timestep!.type === 'int64'
      ? new ort.Tensor('int64', BigInt64Array.from({ length: dims[0]! }, () => BigInt(t)), [dims[0]!])
      : new ort.Tensor('float32', Float32Array.from([t]), []);
  const out = await session.run({
    sample: floatTensor(meta.sample!.type, sample, dims),
    timestep,
    encoder_hidden_states: floatTensor(meta.encoder_hidden_states!.type, text, [dims[0]!, 77, options.textDim ?? 32]),
    ...(options.extra ?? {}),
  });
  await session.release();
  return toFloat32(out.out_sample!);
}

async function runAll(variant: VariantName): Promise<Outputs> {
  const text = await runText(variant);
  const last = toFloat32(text.last_hidden_state!);
  const eps = await runUnet(variant, SAMPLE, [2, 4, 16, 16], last);
  const decoder = await open(variant, 'vae_decoder');
  const decType = (decoder.inputMetadata[0] as ort.InferenceSession.TensorValueMetadata).type;
  const image = toFloat32((await decoder.run({ latent_sample: floatTensor(decType, LATENT, [1, 4, 8, 8]) })).sample!);
  await decoder.release();
  const encoder = await open(variant, 'vae_encoder');
  const encType = (encoder.inputMetadata[0] as ort.InferenceSession.TensorValueMetadata).type;
  const encoded = await encoder.run({ sample: floatTensor(encType, IMAGE, [1, 3, 64, 64]) });
  await encoder.release();
  const latent = toFloat32(Object.values(encoded)[0]!);
  return { last, pooled: text.pooler_output ? toFloat32(text.pooler_output) : undefined, eps, image, latent };
}

const SD_METADATA = {
  text_encoder: {
    inputs: [['input_ids', 'int32', ['batch_size', 77]]],
    outputs: [
      ['last_hidden_state', 'float32', ['batch_size', 77, 32]],
      ['pooler_output', 'float32', ['batch_size', 32]],
    ],
  },
  unet: {
    inputs: [
      ['sample', 'float32', ['batch_size', 4, 'height', 'width']],
      ['timestep', 'int64', ['steps']],
      ['encoder_hidden_states', 'float32', ['batch_size', 77, 32]],
    ],
    outputs: [['out_sample', 'float32', ['batch_size', 4, 'height', 'width']]],
  },
  vae_decoder: {
    inputs: [['latent_sample', 'float32', ['batch_size', 4, 'latent_height', 'latent_width']]],
    outputs: [['sample', 'float32', ['batch_size', 3, 'height', 'width']]],
  },
  vae_encoder: {
    inputs: [['sample', 'float32', ['batch_size', 3, 'height', 'width']]],
    outputs: [['latent_parameters', 'float32', ['batch_size', 8, 'latent_height', 'latent_width']]],
  },
} satisfies Record<string, { inputs: Meta[]; outputs: Meta[] }>;

type Component = keyof typeof SD_METADATA;

/** The metadata each SD 1.x variant must show: the standard table with the variant's one difference. */
function expectedMetadata(variant: VariantName, component: Component): { inputs: Meta[]; outputs: Meta[] } {
  const copy = structuredClone(SD_METADATA[component]) as { inputs: Meta[]; outputs: Meta[] };
  if (variant === 'fp16') {
    for (const list of [copy.inputs, copy.outputs]) for (const m of list) if (m[1] === 'float32') m[1] = 'float16';
  }
  if (variant === 'float-timestep' && component === 'unet') copy.inputs[1] = ['timestep', 'float32', []];
  if (variant === 'input-ids-int64' && component === 'text_encoder') copy.inputs[0]![1] = 'int64';
  if (variant === 'static-shape' && component === 'unet') {
    copy.inputs = [
      ['sample', 'float32', [2, 4, 64, 64]],
      ['timestep', 'int64', [2]],
      ['encoder_hidden_states', 'float32', [2, 77, 32]],
    ];
    copy.outputs = [['out_sample', 'float32', [2, 4, 64, 64]]];
  }
  if (variant === 'vae-latent-sample' && component === 'vae_encoder') {
    copy.outputs = [['latent_sample', 'float32', ['batch_size', 4, 'latent_height', 'latent_width']]];
  }
  return copy;
}

const SD_VARIANTS = VARIANTS.filter((v) => v !== 'sdxl');
let reference: Outputs;

describe('tiny SD 1.x variants', () => {
  before(async () => {
    reference = await runAll('standard');
  });

  it('writes the optimum folder layout (or the flat one)', () => {
    const list = (variant: VariantName) => {
      const out: string[] = [];
      const walk = (dir: string, prefix: string) => {
        for (const name of readdirSync(dir).sort()) {
          const path = join(dir, name);
          if (statSync(path).isDirectory()) walk(path, `${prefix}${name}/`);
          else out.push(`${prefix}${name}`);
        }
      };
      walk(dirOf(variant), '');
      return out;
    };
    const tokenizer = ['tokenizer/merges.txt', 'tokenizer/special_tokens_map.json', 'tokenizer/tokenizer_config.json', 'tokenizer/vocab.json'];
    const standard = [
      'model_index.json',
      'scheduler/scheduler_config.json',
      'text_encoder/model.onnx',
      ...tokenizer,
      'unet/config.json',
      'unet/model.onnx',
      'vae_decoder/config.json',
      'vae_decoder/model.onnx',
      'vae_encoder/config.json',
      'vae_encoder/model.onnx',
    ];
    assert.deepEqual(list('standard'), standard);
    assert.deepEqual(list('external-data'), [...standard.slice(0, 7), 'unet/model.onnx_data', ...standard.slice(7)].sort());
    assert.deepEqual(list('weights-pb'), [...standard, 'unet/weights.pb'].sort());
    assert.deepEqual(
      list('tokenizer-json'),
      standard.filter((f) => !f.startsWith('tokenizer/')).concat('tokenizer/tokenizer.json').sort(),
    );
    assert.deepEqual(list('flat'), [
      'model_index.json',
      'scheduler/scheduler_config.json',
      'text_encoder.onnx',
      ...tokenizer,
      'unet.onnx',
      'vae_decoder.onnx',
      'vae_encoder.onnx',
    ]);
  });

  it('writes the SD 1.5 configs', () => {
    const index = JSON.parse(readFileSync(join(dirOf('standard'), 'model_index.json'), 'utf8'));
    assert.equal(index._class_name, 'ORTStableDiffusionPipeline');
    assert.equal(index._diffusers_version, '0.30.0');
    assert.deepEqual(index.scheduler, ['diffusers', 'PNDMScheduler']);
    const scheduler = JSON.parse(readFileSync(join(dirOf('standard'), 'scheduler', 'scheduler_config.json'), 'utf8'));
    assert.deepEqual(
      {
        beta_start: scheduler.beta_start,
        beta_end: scheduler.beta_end,
        beta_schedule: scheduler.beta_schedule,
        num_train_timesteps: scheduler.num_train_timesteps,
        set_alpha_to_one: scheduler.set_alpha_to_one,
        skip_prk_steps: scheduler.skip_prk_steps,
        steps_offset: scheduler.steps_offset,
        prediction_type: scheduler.prediction_type,
        timestep_spacing: scheduler.timestep_spacing,
        clip_sample: scheduler.clip_sample,
      },
      {
        beta_start: 0.00085,
        beta_end: 0.012,
        beta_schedule: 'scaled_linear',
        num_train_timesteps: 1000,
        set_alpha_to_one: false,
        skip_prk_steps: true,
        steps_offset: 1,
        prediction_type: 'epsilon',
        timestep_spacing: 'leading',
        clip_sample: false,
      },
    );
    const unet = JSON.parse(readFileSync(join(dirOf('standard'), 'unet', 'config.json'), 'utf8'));
    assert.deepEqual([unet.sample_size, unet.in_channels, unet.out_channels, unet.cross_attention_dim], [64, 4, 4, 32]);
    for (const part of ['vae_decoder', 'vae_encoder']) {
      const vae = JSON.parse(readFileSync(join(dirOf('standard'), part, 'config.json'), 'utf8'));
      assert.deepEqual([vae.scaling_factor, vae.latent_channels, vae.sample_size, vae.force_upcast], [0.18215, 4, 512, true]);
    }
  });

  it('every model of every variant loads with the expected input/output metadata', async () => {
    for (const variant of SD_VARIANTS) {
      for (const component of Object.keys(SD_METADATA) as Component[]) {
        const session = await open(variant, component);
        const expected = expectedMetadata(variant, component);
        assert.deepEqual(metadataOf(session.inputMetadata), expected.inputs, `${variant} ${component} inputs`);
        assert.deepEqual(metadataOf(session.outputMetadata), expected.outputs, `${variant} ${component} outputs`);
        await session.release();
      }
    }
  });

  it('standard outputs have the right shapes, are finite and O(1)', () => {
    assert.equal(reference.last.length, 2 * 77 * 32);
    assert.equal(reference.pooled!.length, 2 * 32);
    assert.equal(reference.eps.length, 2 * 4 * 16 * 16);
    assert.equal(reference.image.length, 1 * 3 * 64 * 64);
    assert.equal(reference.latent.length, 1 * 8 * 8 * 8);
    for (const [name, values] of Object.entries(reference)) {
      assertFinite(values as Float32Array, name);
      const s = std(values as Float32Array);
      assert.ok(s > 0.05 && s < 3, `${name} std ${s} is O(1)`);
    }
    for (const v of reference.image) assert.ok(v >= -1 && v <= 1, `decoded pixel ${v} in [-1, 1]`);
  });

  it('variants that differ only in their interface compute exactly the same outputs', async () => {
    for (const variant of ['float-timestep', 'input-ids-int64', 'external-data', 'weights-pb', 'flat', 'tokenizer-json'] as const) {
      const out = await runAll(variant);
      assert.deepEqual(out, reference, variant);
    }
  });

  it('vae-latent-sample returns the mean channels of latent_parameters', async () => {
    const out = await runAll('vae-latent-sample');
    assert.deepEqual(out.latent, reference.latent.subarray(0, 4 * 8 * 8));
    assert.deepEqual(out.eps, reference.eps);
  });

  it('fused-attention matches the separable attention, without any attn2 Softmax', async () => {
    const out = await runAll('fused-attention');
    assert.ok(maxAbsDiff(out.eps, reference.eps) < 1e-4, `eps diff ${maxAbsDiff(out.eps, reference.eps)}`);
    const nodes = readModel('fused-attention', 'unet').graph!.node;
    assert.equal(nodes.filter((n) => n.opType === 'Softmax').length, 0);
    assert.equal(nodes.filter((n) => n.opType === 'MultiHeadAttention' && n.name.includes('/attn2/')).length, 4);
    assert.ok(nodes.some((n) => n.name === '/up_blocks.1/attentions.0/transformer_blocks.0/attn2/MultiHeadAttention'));
  });

  it('onnx-attention (opset 23) matches the separable attention, with one Attention node per attention and no Softmax', async () => {
    const out = await runAll('onnx-attention');
    assert.ok(maxAbsDiff(out.eps, reference.eps) < 1e-4, `eps diff ${maxAbsDiff(out.eps, reference.eps)}`);
    const model = readModel('onnx-attention', 'unet');
    assert.equal(model.opsetImport[0]!.version, 23n);
    const nodes = model.graph!.node;
    assert.equal(nodes.filter((n) => n.opType === 'Softmax').length, 0);
    assert.equal(nodes.filter((n) => n.opType === 'Attention').length, 8);
    assert.ok(nodes.some((n) => n.name === '/up_blocks.1/attentions.0/transformer_blocks.0/attn2/Attention'));
  });

  it('fp16 stores every float weight and interface tensor as float16 and stays close to float32', async () => {
    for (const component of ['text_encoder', 'unet', 'vae_decoder', 'vae_encoder']) {
      const types = new Set(readModel('fp16', component).graph!.initializer.map((t) => t.dataType));
      assert.ok(!types.has(1), `${component} has no float32 initializer`);
      assert.ok(types.has(10), `${component} has float16 initializers`);
    }
    const out = await runAll('fp16');
    for (const key of ['last', 'eps', 'image', 'latent'] as const) {
      const diff = maxAbsDiff(out[key], reference[key]);
      assert.ok(diff < 0.05, `fp16 ${key} max diff ${diff}`);
      assert.ok(diff > 0, `fp16 ${key} really used float16 weights`);
    }
  });

  it('static-shape UNet takes exactly 2 x 4 x 64 x 64 and matches the dynamic one', async () => {
    const sample = normals(2 * 4 * 64 * 64, 21);
    const fixed = await runUnet('static-shape', sample, [2, 4, 64, 64], reference.last);
    const dynamic = await runUnet('standard', sample, [2, 4, 64, 64], reference.last);
    assert.ok(maxAbsDiff(fixed, dynamic) < 1e-5);
    await assert.rejects(runUnet('static-shape', SAMPLE, [2, 4, 16, 16], reference.last));
    const model = readModel('static-shape', 'unet');
    for (const input of model.graph!.input) {
      const dims = input.type!.value.case === 'tensorType' ? input.type!.value.value.shape!.dim : [];
      for (const d of dims) assert.equal(d.value.case, 'dimValue', `${input.name} has only fixed dims`);
    }
  });

  it('external data: the UNet weights live in the named file, model.onnx stays small', () => {
    for (const [variant, location] of [['external-data', 'model.onnx_data'], ['weights-pb', 'weights.pb']] as const) {
      const model = readModel(variant, 'unet');
      const external = model.graph!.initializer.filter((t) => t.dataLocation === 1);
      assert.ok(external.length > 50, `${variant}: ${external.length} external initializers`);
      let end = 0;
      for (const t of external) {
        const entries = Object.fromEntries(t.externalData.map((e) => [e.key, e.value]));
        assert.equal(entries.location, location);
        assert.equal(t.rawData.length, 0);
        end = Math.max(end, Number(entries.offset) + Number(entries.length));
      }
      const dataSize = statSync(join(dirOf(variant), 'unet', location)).size;
      assert.equal(dataSize, end);
      // The graph itself (520 nodes with torch-style names) is ~120 KB; the weights moved out of it.
      const modelSize = statSync(modelFile(variant, 'unet')).size;
      const inlineSize = statSync(modelFile('standard', 'unet')).size;
      assert.ok(modelSize < inlineSize - 0.9 * dataSize, `model.onnx ${modelSize} B, data ${dataSize} B, inline model ${inlineSize} B`);
    }
  });
});

describe('tiny text encoder', () => {
  it('pools the hidden state at the first maximum id (EOS) of each row', () => {
    const ids = promptIds();
    for (let row = 0; row < 2; row++) {
      const rowIds = ids.slice(row * 77, row * 77 + 77);
      const eosPos = rowIds.indexOf(Math.max(...rowIds));
      assert.deepEqual(reference.pooled!.subarray(row * 32, row * 32 + 32), reference.last.subarray((row * 77 + eosPos) * 32, (row * 77 + eosPos + 1) * 32));
    }
    assert.equal(promptIds().slice(0, 8).indexOf(Math.max(...promptIds().slice(0, 77))), 7);
  });

  it('is causal: changing token 3 leaves positions 0..2 unchanged and changes position 3', async () => {
    const ids = promptIds();
    ids[3] = ids[5]!;
    const last = toFloat32((await runText('standard', ids)).last_hidden_state!);
    assert.deepEqual(last.subarray(0, 3 * 32), reference.last.subarray(0, 3 * 32));
    assert.ok(maxAbsDiff(last.subarray(3 * 32, 4 * 32), reference.last.subarray(3 * 32, 4 * 32)) > 1e-3);
    assert.deepEqual(last.subarray(77 * 32), reference.last.subarray(77 * 32), 'row 2 unchanged');
  });
});

describe('tiny UNet', () => {
  it('output varies with the sample, the timestep and the text', async () => {
    const sample = Float32Array.from(SAMPLE);
    sample[0]! += 1;
    const bySample = await runUnet('standard', sample, [2, 4, 16, 16], reference.last);
    const byStep = await runUnet('standard', SAMPLE, [2, 4, 16, 16], reference.last, { timestep: 500 });
    const text = Float32Array.from(reference.last, (v, i) => (i < 77 * 32 ? v : reference.last[i - 77 * 32]!));
    const byText = await runUnet('standard', SAMPLE, [2, 4, 16, 16], text);
    const half = 4 * 16 * 16;
    assert.ok(maxAbsDiff(bySample.subarray(0, half), reference.eps.subarray(0, half)) > 1e-3, 'sample');
    assert.deepEqual(bySample.subarray(half), reference.eps.subarray(half), 'batch rows are independent');
    assert.ok(maxAbsDiff(byStep, reference.eps) > 1e-3, 'timestep');
    assert.deepEqual(byText.subarray(0, half), reference.eps.subarray(0, half), 'row 0 text unchanged');
    assert.ok(maxAbsDiff(byText.subarray(half), reference.eps.subarray(half)) > 1e-3, 'text');
  });

  it('broadcasts a one-element timestep to the batch', async () => {
    const session = await open('standard', 'unet');
    const out = await session.run({
      sample: new ort.Tensor('float32', SAMPLE, [2, 4, 16, 16]),
      timestep: new ort.Tensor('int64', BigInt64Array.from([901n]), [1]),
      encoder_hidden_states: new ort.Tensor('float32', reference.last, [2, 77, 32]),
    });
    await session.release();
    assert.deepEqual(out.out_sample!.data, reference.eps);
  });

  it('runs any batch and odd latent sizes', async () => {
    const sample = normals(3 * 4 * 10 * 14, 5);
    const text = new Float32Array(3 * 77 * 32).map((_, i) => reference.last[i % reference.last.length]!);
    const out = await runUnet('standard', sample, [3, 4, 10, 14], text);
    assert.equal(out.length, 3 * 4 * 10 * 14);
    assertFinite(out, 'eps');
    const odd = await runUnet('standard', normals(1 * 4 * 9 * 7, 6), [1, 4, 9, 7], reference.last.subarray(0, 77 * 32));
    assert.equal(odd.length, 4 * 9 * 7);
  });

  it('has the torch-export node names and structure the mask surgery relies on', () => {
    const model = readModel('standard', 'unet');
    assert.deepEqual(
      model.opsetImport.map((o) => [o.domain, Number(o.version)]),
      [['', 17]],
    );
    const nodes = model.graph!.node;
    const names = new Set(nodes.map((n) => n.name));
    const ops = new Set(nodes.map((n) => n.opType));
    assert.ok(!ops.has('GroupNormalization'));
    assert.ok(ops.has('InstanceNormalization'));
    const block = '/up_blocks.1/attentions.0/transformer_blocks.0/attn2';
    for (const name of ['Softmax', 'to_q/MatMul', 'to_k/MatMul', 'to_v/MatMul', 'MatMul', 'Mul', 'MatMul_1', 'to_out.0/MatMul']) {
      assert.ok(names.has(`${block}/${name}`), `${block}/${name}`);
    }
    const byName = new Map(nodes.map((n) => [n.name, n]));
    const softmax = byName.get(`${block}/Softmax`)!;
    const mul = byName.get(`${block}/Mul`)!;
    assert.equal(softmax.input[0], mul.output[0], 'Softmax reads the scaled scores');
    assert.equal(mul.input[0], byName.get(`${block}/MatMul`)!.output[0], 'scaled scores are q·kᵀ');
    assert.equal(byName.get(`${block}/MatMul_1`)!.input[0], softmax.output[0], 'probabilities multiply v');
    const attn2Softmax = nodes.filter((n) => n.opType === 'Softmax' && n.name.includes('/attn2/')).map((n) => n.name);
    assert.deepEqual(attn2Softmax, [
      '/down_blocks.0/attentions.0/transformer_blocks.0/attn2/Softmax',
      '/mid_block/attentions.0/transformer_blocks.0/attn2/Softmax',
      '/up_blocks.1/attentions.0/transformer_blocks.0/attn2/Softmax',
      '/up_blocks.1/attentions.1/transformer_blocks.0/attn2/Softmax',
    ]);
  });

  it('exposes up-block attn2 probabilities of shape [B, heads, H*W, 77] when added as outputs', async () => {
    const model = readModel('standard', 'unet');
    const up = model.graph!.node.filter((n) => n.opType === 'Softmax' && n.name.startsWith('/up_blocks.') && n.name.includes('/attn2/'));
    for (const node of up) model.graph!.output.push(valueInfo(node.output[0]!, 'float32', ['batch_size', 2, 'hw', 77]));
    const session = await ort.InferenceSession.create(toBinary(ModelProtoSchema, model), { intraOpNumThreads: 1 });
    const out = await session.run({
      sample: new ort.Tensor('float32', SAMPLE, [2, 4, 16, 16]),
      timestep: new ort.Tensor('int64', BigInt64Array.from([901n, 901n]), [2]),
      encoder_hidden_states: new ort.Tensor('float32', reference.last, [2, 77, 32]),
    });
    await session.release();
    assert.deepEqual(out.out_sample!.data, reference.eps, 'extra outputs do not change out_sample');
    for (const node of up) {
      const probs = out[node.output[0]!]!;
      assert.deepEqual(probs.dims, [2, 2, 256, 77]);
      const data = probs.data as Float32Array;
      for (let row = 0; row < 2 * 2 * 256; row += 97) {
        let sum = 0;
        for (let k = 0; k < 77; k++) sum += data[row * 77 + k]!;
        assert.ok(Math.abs(sum - 1) < 1e-5, `row ${row} sums to ${sum}`);
      }
    }
  });
});

describe('tiny VAE', () => {
  it('decoder is local: a latent change moves only pixels within TINY_VAE.LOCAL_RADIUS (2) latent pixels', async () => {
    const session = await open('standard', 'vae_decoder');
    const size = 12;
    const latent = normals(4 * size * size, 31);
    const base = (await session.run({ latent_sample: new ort.Tensor('float32', latent, [1, 4, size, size]) })).sample!.data as Float32Array;
    latent[2 * size * size + 6 * size + 5]! += 2; // channel 2, y 6, x 5
    const moved = (await session.run({ latent_sample: new ort.Tensor('float32', latent, [1, 4, size, size]) })).sample!.data as Float32Array;
    await session.release();
    const px = size * 8;
    let changed = 0;
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < px; y++)
        for (let x = 0; x < px; x++) {
          const i = (c * px + y) * px + x;
          if (base[i] === moved[i]) continue;
          changed++;
          const ly = Math.floor(y / 8);
          const lx = Math.floor(x / 8);
          assert.ok(Math.abs(ly - 6) <= TINY_VAE.LOCAL_RADIUS && Math.abs(lx - 5) <= TINY_VAE.LOCAL_RADIUS, `pixel (${y}, ${x}) changed`);
        }
    assert.ok(changed > 64 * 3, `${changed} pixels changed`);
  });

  it('a tile decoded with a LOCAL_RADIUS margin reproduces the untiled decode bit for bit', async () => {
    const session = await open('standard', 'vae_decoder');
    const n = 16;
    const tileSize = 10;
    const origin = 4;
    const latent = normals(4 * n * n, 32);
    const tile = new Float32Array(4 * tileSize * tileSize);
    for (let c = 0; c < 4; c++)
      for (let y = 0; y < tileSize; y++)
        for (let x = 0; x < tileSize; x++) tile[(c * tileSize + y) * tileSize + x] = latent[(c * n + y + origin) * n + x + origin]!;
    const full = (await session.run({ latent_sample: new ort.Tensor('float32', latent, [1, 4, n, n]) })).sample!.data as Float32Array;
    const part = (await session.run({ latent_sample: new ort.Tensor('float32', tile, [1, 4, tileSize, tileSize]) })).sample!.data as Float32Array;
    await session.release();
    const margin = TINY_VAE.LOCAL_RADIUS * 8;
    let compared = 0;
    for (let c = 0; c < 3; c++)
      for (let y = margin; y < tileSize * 8 - margin; y++)
        for (let x = margin; x < tileSize * 8 - margin; x++) {
          const inTile = part[(c * tileSize * 8 + y) * tileSize * 8 + x]!;
          const inFull = full[(c * n * 8 + y + origin * 8) * n * 8 + x + origin * 8]!;
          assert.equal(inTile, inFull, `pixel (${c}, ${y}, ${x})`);
          compared++;
        }
    assert.equal(compared, 3 * 48 * 48);
  });

  it('encoder halves the size three times into 4 mean + 4 logvar channels', async () => {
    const session = await open('standard', 'vae_encoder');
    const out = await session.run({ sample: new ort.Tensor('float32', normals(2 * 3 * 40 * 24, 3), [2, 3, 40, 24]) });
    await session.release();
    assert.deepEqual(out.latent_parameters!.dims, [2, 8, 5, 3]);
  });
});

describe('tiny tokenizer', () => {
  it('lays out CLIP ids: bytes, bytes + </w>, merges, then <|startoftext|> and <|endoftext|>', () => {
    const dir = join(dirOf('standard'), 'tokenizer');
    const vocab = JSON.parse(readFileSync(join(dir, 'vocab.json'), 'utf8')) as Record<string, number>;
    const byId = Object.entries(vocab).sort((a, b) => a[1] - b[1]).map(([token]) => token);
    assert.deepEqual(byId.map((_, i) => i), Object.values(vocab).sort((a, b) => a - b), 'ids are 0..n-1');
    assert.equal(vocab['!'], 0);
    assert.equal(vocab['~'], 93);
    assert.equal(vocab['\u0100'], 188); // byte 0 is the first unprintable byte, after the 188 printable ones
    assert.equal(vocab['!</w>'], 256);
    assert.equal(vocab['\u0100</w>'], 256 + 188);
    const bytes = [...bytesToUnicode().values()];
    assert.deepEqual(byId.slice(0, 256), bytes);
    assert.deepEqual(byId.slice(256, 512), bytes.map((c) => `${c}</w>`));
    const size = byId.length;
    assert.ok(size < 2000, `vocab size ${size}`);
    assert.equal(vocab['<|startoftext|>'], size - 2);
    assert.equal(vocab['<|endoftext|>'], size - 1);
    const merges = readFileSync(join(dir, 'merges.txt'), 'utf8').trimEnd().split('\n');
    assert.equal(merges[0], '#version: 0.2');
    for (const merge of merges.slice(1)) {
      const [left, right, ...rest] = merge.split(' ');
      assert.equal(rest.length, 0, merge);
      assert.ok(vocab[left!]! < vocab[`${left}${right}`]! && vocab[right!]! < vocab[`${left}${right}`]!, `${merge} merges earlier tokens`);
      assert.ok(vocab[`${left}${right}`]! >= 512, `${merge} result is a merged token`);
    }
    const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'));
    assert.deepEqual([config.model_max_length, config.do_lower_case, config.pad_token, config.bos_token.content], [77, true, '<|endoftext|>', '<|startoftext|>']);
    const special = JSON.parse(readFileSync(join(dir, 'special_tokens_map.json'), 'utf8'));
    assert.deepEqual([special.eos_token.content, special.unk_token.content, special.pad_token], ['<|endoftext|>', '<|endoftext|>', '<|endoftext|>']);
  });

  it('tokenizer.json encodes every caption word as one token, as vocab.json/merges.txt define', () => {
    const json = JSON.parse(readFileSync(join(dirOf('tokenizer-json'), 'tokenizer', 'tokenizer.json'), 'utf8'));
    const dir = join(dirOf('standard'), 'tokenizer');
    assert.deepEqual(json.model.vocab, JSON.parse(readFileSync(join(dir, 'vocab.json'), 'utf8')));
    assert.deepEqual(json.model.merges, readFileSync(join(dir, 'merges.txt'), 'utf8').trimEnd().split('\n').slice(1));
    const tokenizer = new Tokenizer(json, JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')));
    for (const word of CAPTION_WORDS) {
      const { tokens } = tokenizer.encode(word, { add_special_tokens: false });
      assert.deepEqual(tokens, [`${word}</w>`]);
    }
    const encoded = tokenizer.encode('A  Photo of a RED cat, zebra');
    assert.deepEqual(encoded.tokens, ['<|startoftext|>', 'a</w>', 'photo</w>', 'of</w>', 'a</w>', 'red</w>', 'cat</w>', ',</w>', 'z', 'e', 'b', 'r', 'a</w>', '<|endoftext|>']);
    assert.deepEqual(encoded.ids.slice(1, 7), promptIds().slice(1, 7));
  });
});

describe('tiny SDXL', () => {
  it('writes the SDXL layout and configs', () => {
    const dir = dirOf('sdxl');
    const index = JSON.parse(readFileSync(join(dir, 'model_index.json'), 'utf8'));
    assert.equal(index._class_name, 'ORTStableDiffusionXLPipeline');
    const scheduler = JSON.parse(readFileSync(join(dir, 'scheduler', 'scheduler_config.json'), 'utf8'));
    assert.equal(scheduler._class_name, 'EulerDiscreteScheduler');
    const unet = JSON.parse(readFileSync(join(dir, 'unet', 'config.json'), 'utf8'));
    assert.deepEqual([unet.sample_size, unet.cross_attention_dim, unet.addition_embed_type], [128, 80, 'text_time']);
    const vae = JSON.parse(readFileSync(join(dir, 'vae_decoder', 'config.json'), 'utf8'));
    assert.equal(vae.scaling_factor, 0.13025);
    const tok2 = JSON.parse(readFileSync(join(dir, 'tokenizer_2', 'tokenizer_config.json'), 'utf8'));
    const vocab2 = JSON.parse(readFileSync(join(dir, 'tokenizer_2', 'vocab.json'), 'utf8'));
    assert.equal(tok2.pad_token, '!');
    assert.equal(vocab2['!'], 0);
    const special2 = JSON.parse(readFileSync(join(dir, 'tokenizer_2', 'special_tokens_map.json'), 'utf8'));
    assert.equal(special2.pad_token, '!');
  });

  it('text encoders output pooled/projected embeddings and every hidden state', async () => {
    const hidden = (d: number) => [0, 1, 2].map((i): Meta => [`hidden_states.${i}`, 'float32', ['batch_size', 77, d]]);
    const te1 = await open('sdxl', 'text_encoder');
    assert.deepEqual(metadataOf(te1.outputMetadata), [
      ['last_hidden_state', 'float32', ['batch_size', 77, 32]],
      ['pooler_output', 'float32', ['batch_size', 32]],
      ...hidden(32),
    ]);
    await te1.release();
    const te2 = await open('sdxl', 'text_encoder_2');
    assert.deepEqual(metadataOf(te2.outputMetadata), [
      ['text_embeds', 'float32', ['batch_size', 48]],
      ['last_hidden_state', 'float32', ['batch_size', 77, 48]],
      ...hidden(48),
    ]);
    const out = await te2.run({ input_ids: new ort.Tensor('int32', Int32Array.from(promptIds('sdxl')), [2, 77]) });
    await te2.release();
    assert.ok(maxAbsDiff(toFloat32(out['hidden_states.1']!), toFloat32(out['hidden_states.2']!)) > 1e-3);
    assertFinite(toFloat32(out.text_embeds!), 'text_embeds');
  });

  it('UNet takes text_embeds and time_ids, and its output depends on both', async () => {
    const session = await open('sdxl', 'unet');
    assert.deepEqual(metadataOf(session.inputMetadata), [
      ['sample', 'float32', ['batch_size', 4, 'height', 'width']],
      ['timestep', 'int64', ['steps']],
      ['encoder_hidden_states', 'float32', ['batch_size', 77, 80]],
      ['text_embeds', 'float32', ['batch_size', 48]],
      ['time_ids', 'float32', ['batch_size', 6]],
    ]);
    await session.release();
    const text = normals(2 * 77 * 80, 41);
    const embeds = normals(2 * 48, 42);
    const ids = Float32Array.from([1024, 1024, 0, 0, 1024, 1024, 1024, 1024, 0, 0, 1024, 1024]);
    const run = (timeIds: Float32Array, textEmbeds: Float32Array) =>
      runUnet('sdxl', SAMPLE, [2, 4, 16, 16], text, {
        textDim: 80,
        extra: { text_embeds: new ort.Tensor('float32', textEmbeds, [2, 48]), time_ids: new ort.Tensor('float32', timeIds, [2, 6]) },
      });
    const base = await run(ids, embeds);
    assertFinite(base, 'sdxl eps');
    const cropped = Float32Array.from(ids);
    cropped[2] = 64;
    assert.ok(maxAbsDiff(await run(cropped, embeds), base) > 1e-4, 'time_ids');
    assert.ok(maxAbsDiff(await run(ids, Float32Array.from(embeds, (v) => -v)), base) > 1e-4, 'text_embeds');
  });
});

describe('fixture builder', () => {
  it('is deterministic: same seed gives byte-identical files, another seed other weights', async () => {
    const again = join(root, 'again');
    const other = join(root, 'other');
    await writeTinySdModel(again, { variant: 'external-data' });
    await writeTinySdModel(other, { variant: 'external-data', seed: 1 });
    for (const file of ['model_index.json', 'tokenizer/vocab.json', 'text_encoder/model.onnx', 'unet/model.onnx', 'unet/model.onnx_data', 'vae_decoder/model.onnx']) {
      assert.ok(readFileSync(join(again, file)).equals(readFileSync(join(dirOf('external-data'), file))), file);
    }
    for (const file of ['text_encoder/model.onnx', 'unet/model.onnx_data', 'vae_decoder/model.onnx']) {
      assert.ok(!readFileSync(join(other, file)).equals(readFileSync(join(again, file))), `${file} changes with the seed`);
    }
    assert.ok(readFileSync(join(other, 'tokenizer/vocab.json')).equals(readFileSync(join(again, 'tokenizer/vocab.json'))));
  });

  it('rejects an unknown variant and a bad seed with an AsgdError naming the parameter', async () => {
    await assert.rejects(writeTinySdModel(join(root, 'bad'), { variant: 'sd3' as VariantName }), (error: unknown) => {
      assert.ok(error instanceof AsgdError);
      assert.equal(error.kind, 'invalid-argument');
      assert.equal(error.parameter, 'variant');
      assert.match(error.message, /expected one of standard, float-timestep/);
      assert.match(error.message, /received "sd3"/);
      return true;
    });
    await assert.rejects(writeTinySdModel(join(root, 'bad'), { seed: -1 }), /Invalid seed; expected an integer from 0 to 4294967295; received -1/);
  });

  it('float16 conversion rounds to nearest even', () => {
    assert.equal(toFloat16Bits(1), 0x3c00);
    assert.equal(toFloat16Bits(-2), 0xc000);
    assert.equal(toFloat16Bits(65504), 0x7bff);
    assert.equal(toFloat16Bits(70000), 0x7c00);
    assert.equal(toFloat16Bits(0.1), 0x2e66);
    assert.equal(toFloat16Bits(2 ** -24), 0x0001);
    assert.equal(toFloat16Bits(2 ** -26), 0x0000);
    assert.equal(toFloat16Bits(1 + 2 ** -11), 0x3c00, 'tie rounds to even');
    assert.equal(toFloat16Bits(1 + 3 * 2 ** -11), 0x3c02, 'tie rounds to even (up)');
    assert.equal(fromFloat16Bits(0x2e66), 0.0999755859375);
    assert.equal(fromFloat16Bits(0x0001), 2 ** -24);
  });
});
