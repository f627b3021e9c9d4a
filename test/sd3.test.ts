/**
 * Stable Diffusion 3 on the tiny SD3 fixture (test/fixtures/tiny-sd3*.ts, optimum's layout and tensor names):
 * folder reading and contract errors, text conditioning against direct ONNX runs of the fixture's encoders, the
 * joint-attention probe against probabilities recomputed from q and k, every method end to end, native-size
 * equality with direct, odd sizes.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import ort from 'onnxruntime-node';
import type { TextConditioning } from '../src/core/conditioning.ts';
import { AsgdError } from '../src/core/errors.ts';
import { checkGeneration } from '../src/core/generation/check.ts';
import { ClipTokenizer } from '../src/core/text/clip-tokenizer.ts';
import { T5Tokenizer, T5_MAX_LENGTH } from '../src/core/text/t5-tokenizer.ts';
import { addJointAttentionProbe, scanJointAttention } from '../src/graph/joint-attention-probe.ts';
import { MASK_WEIGHTS_INPUT } from '../src/graph/attention-probe.ts';
import { dynamoNamed } from './fixtures/dynamo-naming.ts';
import { readModelFolder } from '../src/node/model/folder.ts';
import { loadPipeline, type Pipeline } from '../src/node/pipeline.ts';
import { valueInfo } from './fixtures/onnx-graph.ts';
import { SD3_MEDIUM_SIZE, TINY_SD3, TINY_SD3_TEXT, sd3TransformerParameters, writeTinySd3Model, type Sd3VariantName } from './fixtures/tiny-sd3.ts';
import { tempDir } from './helpers/models.ts';

const built = new Map<string, Promise<string>>();
function sd3Model(variant: Sd3VariantName = 'sd3'): Promise<string> {
  let p = built.get(variant);
  if (!p) {
    const dir = path.join(tempDir('sd3'), variant);
    p = writeTinySd3Model(dir, { variant }).then(() => dir);
    built.set(variant, p);
  }
  return p;
}
async function brokenCopy(variant: Sd3VariantName, edit: (dir: string) => void): Promise<string> {
  const dst = tempDir('sd3-broken');
  fs.cpSync(await sd3Model(variant), dst, { recursive: true });
  edit(dst);
  return dst;
}

let pipe: Pipeline;
before(async () => {
  pipe = await loadPipeline(await sd3Model('sd3'), { threads: 1 });
});
after(async () => pipe?.close());

const NATIVE = TINY_SD3.sampleSize * 8;
const D = TINY_SD3_TEXT.t5;

async function run(file: string, feeds: Record<string, ort.Tensor>): Promise<ort.InferenceSession.ReturnType> {
  const s = await ort.InferenceSession.create(file);
  const out = await s.run(feeds);
  await s.release();
  return out;
}
const ids64 = (rows: Int32Array[]) => new ort.Tensor('int64', BigInt64Array.from(rows.flatMap((r) => [...r]), BigInt), [rows.length, rows[0]!.length]);

test('an SD3 folder is read as family sd3 with its three encoders, flow scheduler and 16-channel VAE', async () => {
  const spec = readModelFolder(await sd3Model());
  assert.equal(spec.family, 'sd3');
  assert.match(spec.paths.unet, /transformer[\\/]model\.onnx$/);
  assert.ok(spec.paths.textEncoder3 && spec.tokenizer3);
  assert.equal(spec.patchSize, 2);
  assert.deepEqual(spec.vae, { scalingFactor: 1.5305, forceUpcast: false, shiftFactor: 0.0609 });
  assert.equal(pipe.info.family, 'sd3');
  assert.equal(pipe.info.nativeWidth, NATIVE);
  assert.equal(pipe.info.latentChannels, 16);
  assert.equal(pipe.info.textWidth, D);
  assert.deepEqual(pipe.info.attentionProbe.layers, ['/transformer_blocks.0/attn', '/transformer_blocks.1/attn']);
  const tr = pipe.info.components.unet!;
  assert.deepEqual(tr.inputs.map((i) => i.name), ['hidden_states', 'timestep', 'encoder_hidden_states', 'pooled_projections']);
  assert.deepEqual(tr.outputs.map((o) => o.name), ['out_hidden_states']);
});

test('text conditioning: CLIP-L + CLIP-G penultimate states padded to the T5 width, then T5 along the sequence; pooled = both text_embeds', async () => {
  const spec = readModelFolder(await sd3Model());
  const prompt = 'a photo of a red cat on a beach';
  const negative = 'blurry';
  let cond: TextConditioning | undefined;
  await pipe.generate({ prompt, negativePrompt: negative, steps: 1, seed: 3 }, { onConditioning: (c) => (cond = c) });
  assert.ok(cond);
  const t1 = new ClipTokenizer(spec.tokenizer, 'tokenizer');
  const t2 = new ClipTokenizer(spec.tokenizer2!, 'tokenizer_2');
  const t3 = new T5Tokenizer(spec.tokenizer3!, 'tokenizer_3');
  const e1 = await run(spec.paths.textEncoder, { input_ids: ids64([t1.encode(negative).ids, t1.encode(prompt).ids]) });
  const e2 = await run(spec.paths.textEncoder2!, { input_ids: ids64([t2.encode(negative).ids, t2.encode(prompt).ids]) });
  const e3 = await run(spec.paths.textEncoder3!, { input_ids: ids64([t3.encode(negative).ids, t3.encode(prompt).ids]) });
  const l = e1['hidden_states.1']!.data as Float32Array; // penultimate of hidden_states.0..2
  const g = e2['hidden_states.1']!.data as Float32Array;
  const t5 = e3['last_hidden_state']!.data as Float32Array;
  const L = TINY_SD3_TEXT.clipL;
  const G = TINY_SD3_TEXT.clipG;
  const T = 77 + T5_MAX_LENGTH;
  assert.equal(cond.tokens, T);
  assert.equal(cond.dim, D);
  for (let r = 0; r < 2; r++) {
    for (let i = 0; i < T; i++) {
      for (let c = 0; c < D; c++) {
        let want: number;
        if (i < 77) want = c < L ? l[(r * 77 + i) * L + c]! : c < L + G ? g[(r * 77 + i) * G + c - L]! : 0;
        else want = t5[(r * T5_MAX_LENGTH + i - 77) * D + c]!;
        const got: number = cond.hidden[(r * T + i) * D + c]!;
        if (got !== want) assert.fail(`hidden[${r}, ${i}, ${c}] = ${got}, expected ${want}`);
      }
    }
  }
  const p1 = e1['text_embeds']!.data as Float32Array;
  const p2 = e2['text_embeds']!.data as Float32Array;
  assert.equal(cond.pooledDim, L + G);
  assert.deepEqual([...cond.textEmbeds!], [...p1.slice(0, L), ...p2.slice(0, G), ...p1.slice(L), ...p2.slice(G)]);
});

test('without text_encoder_3 the T5 part is 77 zero tokens, with a note; a long prompt warns about T5 truncation', async () => {
  const dir = await sd3Model('sd3-no-t5');
  const spec = readModelFolder(dir);
  assert.equal(spec.paths.textEncoder3, undefined);
  assert.ok(spec.notes.some((n) => /text_encoder_3.*zeros/.test(n)));
  const p = await loadPipeline(dir, { threads: 1, attentionProbe: false });
  try {
    let cond: TextConditioning | undefined;
    await p.generate({ prompt: 'a cat', steps: 1 }, { onConditioning: (c) => (cond = c) });
    assert.equal(cond!.tokens, 154);
    for (let r = 0; r < 2; r++) {
      const t5 = cond!.hidden.subarray((r * 154 + 77) * D, (r + 1) * 154 * D);
      assert.ok(t5.every((v) => v === 0), 'T5 part is zeros');
    }
  } finally {
    await p.close();
  }
  const long = Array.from({ length: 300 }, () => 'cat').join(' ');
  const r = await pipe.generate({ prompt: long, steps: 1 });
  assert.ok(r.warnings.some((w) => /too long for T5: 45 piece/.test(w)), r.warnings.join('\n'));
});

test('joint-attention probe: the conditional row of image-query x text-key probabilities, over the weighted text keys, equals softmax(q kᵀ) recomputed from q and k', async () => {
  const spec = readModelFolder(await sd3Model());
  const model = fromBinary(ModelProtoSchema, fs.readFileSync(spec.paths.unet));
  const sites = scanJointAttention(model).sites;
  assert.equal(sites.length, TINY_SD3.layers);
  // Named as the dynamo exporter names things (the module scope in node metadata): the same layers.
  const dynamo = dynamoNamed(fs.readFileSync(spec.paths.unet));
  assert.deepEqual(scanJointAttention(dynamo).sites.map((x) => x.layer), sites.map((x) => x.layer));
  assert.deepEqual(scanJointAttention(dynamoNamed(fs.readFileSync(spec.paths.unet), false)).sites, [], 'and not without the metadata');
  const surgery = addJointAttentionProbe(model);
  assert.ok('layers' in surgery);
  // Test-only outputs: the q and kᵀ operands of the first block's score MatMul.
  model.graph!.output.push(valueInfo(sites[0]!.query, 'float32', ['b', 'h', 's', 'd']), valueInfo(sites[0]!.key, 'float32', ['b', 'h', 'd', 's']));
  const s = await ort.InferenceSession.create(toBinary(ModelProtoSchema, model));
  const H = 12, W = 10, L = 9, B = 2;
  const fill = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + k));
  // Weights over the text keys as the UNet adapter writes them for mask tokens [2, 5, 5].
  const weights = new Float32Array(L);
  weights[2] = 1 / 3;
  weights[5] = 2 / 3;
  const out = await s.run({
    hidden_states: new ort.Tensor('float32', fill(B * 16 * H * W, 1), [B, 16, H, W]),
    timestep: new ort.Tensor('float32', new Float32Array([700, 700]), [B]),
    encoder_hidden_states: new ort.Tensor('float32', fill(B * L * D, 2), [B, L, D]),
    pooled_projections: new ort.Tensor('float32', fill(B * 80, 3), [B, 80]),
    [MASK_WEIGHTS_INPUT]: new ort.Tensor('float32', weights, [L, 1]),
  });
  await s.release();
  const q = out[sites[0]!.query]!;
  const kt = out[sites[0]!.key]!;
  const [, heads, T, d] = q.dims.map(Number) as [number, number, number, number];
  const S = (H / 2) * (W / 2);
  assert.equal(T, S + L);
  const probe = out[`attn2_probs:${sites[0]!.layer}`]!;
  assert.deepEqual(probe.dims.map(Number), [1, S]);
  const qd = q.data as Float32Array;
  const kd = kt.data as Float32Array;
  const got = probe.data as Float32Array;
  let maxErr = 0;
  // The conditional (last) batch row only.
  for (let b = B - 1; b < B; b++) {
    for (let i = 0; i < S; i++) {
      const mean = new Float64Array(L);
      for (let h = 0; h < heads; h++) {
        const logits = new Float64Array(T);
        for (let j = 0; j < T; j++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += qd[((b * heads + h) * T + i) * d + c]! * kd[((b * heads + h) * d + c) * T + j]!;
          logits[j] = dot;
        }
        const max = Math.max(...logits);
        let sum = 0;
        for (let j = 0; j < T; j++) sum += Math.exp(logits[j]! - max);
        for (let j = 0; j < L; j++) mean[j]! += Math.exp(logits[S + j]! - max) / sum / heads;
      }
      const expected = mean.reduce((acc, m, j) => acc + m * weights[j]!, 0);
      maxErr = Math.max(maxErr, Math.abs(expected - got[i]!));
    }
  }
  assert.ok(maxErr < 1e-6, `max difference ${maxErr}`);
});

test('every method runs end to end above the native size; asg gets a mask from the joint attention', async () => {
  const units: Record<string, number> = {};
  for (const method of ['direct', 'multidiffusion', 'cutdiffusion', 'asg'] as const) {
    const r = await pipe.generate({ prompt: 'a photo of a cat', steps: 4, width: 2 * NATIVE, height: 2 * NATIVE, seed: 5, method, methodOptions: method === 'asg' || method === 'cutdiffusion' ? { stageSplit: 0.5 } : {} });
    assert.equal(r.image.width, 2 * NATIVE);
    assert.equal(r.image.height, 2 * NATIVE);
    assert.ok(r.latent.every(Number.isFinite));
    assert.ok(!r.warnings.some((w) => /mask disabled/.test(w)), r.warnings.join('\n'));
    assert.equal(r.metadata.scheduler, 'flow-euler');
    units[method] = r.unetEvaluations;
  }
  // 2x2 patches for 2 steps, 3x3 windows (stride P/2) for 2; multidiffusion 9 windows for 4 steps.
  assert.deepEqual(units, { direct: 4, multidiffusion: 36, cutdiffusion: 26, asg: 26 });
});

test('at the native size every method equals direct bit for bit', async () => {
  const latents = [];
  for (const method of ['direct', 'multidiffusion', 'cutdiffusion', 'asg'] as const) {
    latents.push((await pipe.generate({ prompt: 'a dog', steps: 3, seed: 9, method })).latent);
  }
  for (let m = 1; m < latents.length; m++) assert.deepEqual(latents[m], latents[0]);
});

test('odd sizes: latents that are not multiples of the patch size are padded and cropped back', async () => {
  for (const method of ['direct', 'asg'] as const) {
    const r = await pipe.generate({ prompt: 'a tree', steps: 2, width: 200, height: 136, seed: 1, method });
    assert.equal(r.image.width, 200);
    assert.equal(r.image.height, 136);
    assert.equal(r.latent.length, 16 * 25 * 17);
    assert.ok(r.latent.every(Number.isFinite));
  }
});

test('SD3.5 (QK-norm), SD3.5 medium (dual attention), the dynamic shift, float16 and fused attention load; fused attention gets the uniform mask with a note', async () => {
  for (const variant of ['sd3.5', 'sd3.5-medium', 'sd3-dynamic-shift', 'sd3-fused-attention', 'sd3-fp16'] as const) {
    const p = await loadPipeline(await sd3Model(variant), { threads: 1 });
    try {
      const fused = variant === 'sd3-fused-attention';
      assert.equal(p.info.attentionProbe.available, !fused);
      // Only the joint attentions: SD3.5 medium's image-only attn2 is not among the probe's layers.
      if (!fused) assert.deepEqual(p.info.attentionProbe.layers, ['/transformer_blocks.0/attn', '/transformer_blocks.1/attn']);
      if (fused) assert.match(p.info.attentionProbe.reason!, /fused operators \(2 MultiHeadAttention\).*uniform \(M = 1\)/);
      const r = await p.generate({ prompt: 'a cat', steps: 2, width: 2 * NATIVE, height: NATIVE, seed: 2, method: 'asg' });
      assert.ok(r.latent.every(Number.isFinite));
      assert.equal(r.warnings.some((w) => /mask disabled/.test(w)), fused);
    } finally {
      await p.close();
    }
  }
});

test('the flow scheduler is tied to SD3: other schedulers are refused for it, and it for other families', () => {
  const tokenizer = pipe['tokenizer'] as ClipTokenizer;
  const facts = { family: 'sd3' as const, latentMultiple: 2, nativeWidth: 128, nativeHeight: 128, latentChannels: 16, schedulerClassName: 'FlowMatchEulerDiscreteScheduler', vaeForceUpcast: false, vaeIsFloat16: false };
  assert.throws(() => checkGeneration({ prompt: 'a', scheduler: 'euler' }, facts, tokenizer), (e: unknown) => e instanceof AsgdError && e.parameter === 'scheduler' && /flow-euler/.test(e.expected ?? ''));
  assert.throws(() => checkGeneration({ prompt: 'a' }, { ...facts, schedulerClassName: 'EulerDiscreteScheduler' }, tokenizer), /not a flow-matching scheduler/);
  assert.throws(() => checkGeneration({ prompt: 'a', scheduler: 'flow-euler' }, { ...facts, family: 'sd', latentMultiple: 8, schedulerClassName: 'PNDMScheduler' }, tokenizer), /for SD3 models only/);
  const plan = checkGeneration({ prompt: 'a', width: 256, height: 192 }, facts, tokenizer);
  assert.equal(plan.imageSeqLen, 16 * 12);
});

test('bad folders: missing encoders, a FLUX export, a 4-channel VAE, mismatched text widths', async () => {
  const expectModelError = async (dir: string, pattern: RegExp, parameter: string) => {
    await assert.rejects(
      async () => {
        const p = await loadPipeline(dir, { threads: 1, attentionProbe: false });
        await p.close();
      },
      (e: unknown) => {
        assert.ok(e instanceof AsgdError, String(e));
        assert.match(e.message, pattern);
        assert.equal(e.parameter, parameter);
        assert.ok(e.message.includes(dir) || (e.hint ?? '').length > 0);
        return true;
      },
    );
  };
  await expectModelError(await brokenCopy('sd3', (d) => fs.rmSync(path.join(d, 'text_encoder_2'), { recursive: true })), /no text_encoder_2/, 'text_encoder_2');
  await expectModelError(
    await brokenCopy('sd3', (d) => {
      const f = path.join(d, 'model_index.json');
      fs.writeFileSync(f, JSON.stringify({ ...JSON.parse(fs.readFileSync(f, 'utf8')), _class_name: 'FluxPipeline' }));
    }),
    /FLUX exports are not supported/,
    'model',
  );
  // A 4-channel VAE (from the SD fixture) next to the 16-channel transformer.
  const { buildTinySdFiles } = await import('./fixtures/tiny-sd-files.ts');
  const sd = buildTinySdFiles();
  await expectModelError(
    await brokenCopy('sd3', (d) => fs.writeFileSync(path.join(d, 'vae_decoder', 'model.onnx'), sd.get('vae_decoder/model.onnx')!)),
    /latent channels differ/,
    'vae_decoder',
  );
  // CLIP-G swapped for a wider encoder: the pooled width no longer adds up.
  const { buildTinyTextEncoder } = await import('./fixtures/tiny-text-encoder.ts');
  const { buildTinyVocab } = await import('./fixtures/tiny-tokenizer.ts');
  const wide = buildTinyTextEncoder({ seed: 0, modelKey: 'x', vocabSize: buildTinyVocab().tokens.length, hidden: 40, layers: 1, heads: 2, inputIds: 'int64', floatType: 'float32', hiddenStates: true, projectionDim: 40 });
  await expectModelError(
    await brokenCopy('sd3', (d) => fs.writeFileSync(path.join(d, 'text_encoder_2', 'model.onnx'), toBinary(ModelProtoSchema, wide))),
    /pooled width/,
    'transformer',
  );
});

test('upscaling an image on SD3: encode with the shift factor, noise with the flow schedule, asg to twice the size', async () => {
  const g = await pipe.generate({ prompt: 'a red house', steps: 2, seed: 4 });
  const r = await pipe.upscale({ image: g.image, prompt: 'a red house', scale: 2, strength: 0.6, steps: 4, seed: 4, method: 'asg' });
  assert.equal(r.image.width, 2 * NATIVE);
  assert.equal(r.image.height, 2 * NATIVE);
  assert.ok(r.latent.every(Number.isFinite));
  assert.equal(r.metadata.scheduler, 'flow-euler');
});

test('the SD3 builder generalises to other sizes; at SD3 medium size it has SD3 medium\'s 2,028,328,000 weights plus the position table', async () => {
  const { buildTinySd3Transformer } = await import('./fixtures/tiny-sd3-transformer.ts');
  const size = { ...TINY_SD3, heads: 3, headDim: 8, layers: 3 };
  for (const qkNorm of [false, true]) {
    const m = buildTinySd3Transformer({ seed: 0, floatType: 'float32', jointAttentionDim: 40, pooledProjectionDim: 24, qkNorm, size });
    let weights = 0;
    for (const t of m.graph!.initializer) if (!t.name.includes('Constant')) weights += t.dims.reduce((a, b) => a * Number(b), 1);
    assert.equal(weights, sd3TransformerParameters(size, 40, 24, qkNorm));
    const s = await ort.InferenceSession.create(toBinary(ModelProtoSchema, m));
    const out = await s.run({
      hidden_states: new ort.Tensor('float32', new Float32Array(16 * 8 * 6).fill(0.5), [1, 16, 8, 6]),
      timestep: new ort.Tensor('float32', new Float32Array([10]), [1]),
      encoder_hidden_states: new ort.Tensor('float32', new Float32Array(5 * 40).fill(0.1), [1, 5, 40]),
      pooled_projections: new ort.Tensor('float32', new Float32Array(24).fill(0.2), [1, 24]),
    });
    await s.release();
    assert.deepEqual(out['out_hidden_states']!.dims.map(Number), [1, 16, 8, 6]);
  }
  const table = SD3_MEDIUM_SIZE.posEmbedMaxSize ** 2 * SD3_MEDIUM_SIZE.heads * SD3_MEDIUM_SIZE.headDim;
  assert.equal(sd3TransformerParameters(SD3_MEDIUM_SIZE, 4096, 2048) - table, 2_028_328_000);
});

test('two CPU devices give the same SD3 image as one (units and CFG halves spread over workers)', async () => {
  const params = { prompt: 'a cat in a garden', steps: 3, width: 2 * NATIVE, height: NATIVE, seed: 8, method: 'asg' as const };
  const one = await pipe.generate(params);
  const p2 = await loadPipeline(await sd3Model('sd3'), { threads: 1, devices: 'cpu,cpu' });
  try {
    const two = await p2.generate(params);
    assert.deepEqual(two.latent, one.latent);
  } finally {
    await p2.close();
  }
});

test('the first transformer input is torch-compatible randn([1, 16, h, w], seed), unscaled (flow matching starts at sigma 1)', async () => {
  const { createRandom } = await import('../src/core/random/index.ts');
  let first: Float32Array | undefined;
  await pipe.generate({ prompt: 'a cat', steps: 1, seed: 1234, method: 'direct' }, { onUnits: (u) => (first ??= Float32Array.from(u[0]!.sample)) });
  const h = TINY_SD3.sampleSize;
  assert.deepEqual(first, createRandom(1234n, 'noise').randn([1, 16, h, h]));
});

test('asgd info describes an SD3 export: family, native size, encoders present, mask availability; a bad folder fails with the folder named', async () => {
  const { spawnSync } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const bin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'asgd.js');
  const dir = await sd3Model('sd3-no-t5');
  const r = spawnSync(process.execPath, [bin, 'info', dir], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /Family: +Stable Diffusion 3 \(ORTStableDiffusion3Pipeline, optimum layout\)/);
  assert.match(r.stdout, new RegExp(`Native size: +${NATIVE}x${NATIVE} px \\(latent ${NATIVE / 8}x${NATIVE / 8}, 16 channels\\)`));
  assert.match(r.stdout, /Encoders: +text_encoder \(CLIP-L\), text_encoder_2 \(CLIP-G\)\n/);
  assert.match(r.stdout, /Mask probe: +2 joint-attention blocks/);
  assert.match(r.stdout, /note: no text_encoder_3 \(T5\)/);
  assert.match(r.stdout, /^transformer \(transformer\/model\.onnx\):/m);
  const broken = await brokenCopy('sd3', (d) => fs.rmSync(path.join(d, 'text_encoder'), { recursive: true }));
  const bad = spawnSync(process.execPath, [bin, 'info', broken], { encoding: 'utf8', timeout: 120_000 });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /no text_encoder/);
  assert.ok(bad.stderr.includes(broken), bad.stderr);
});

test('mask columns: the CLIP content tokens plus the T5 prompt pieces (not </s> or padding); mask words select CLIP columns only', async () => {
  const { sd3MaskTokens } = await import('../src/core/generation/sd3-prompt.ts');
  const spec = readModelFolder(await sd3Model());
  const t5 = new T5Tokenizer(spec.tokenizer3!, 'tokenizer_3').encode('a photo of a cat');
  assert.equal(t5.eosIndex, 5);
  assert.deepEqual(sd3MaskTokens([1, 2, 3, 4, 5], 77, t5.eosIndex, false), [1, 2, 3, 4, 5, 77, 78, 79, 80, 81]);
  assert.deepEqual(sd3MaskTokens([5], 77, t5.eosIndex, true), [5]);
  assert.deepEqual(sd3MaskTokens([1, 2], 77, undefined, false), [1, 2]);
});

test('--vae of another family, or a folder that is not a VAE, is refused at load naming --vae (it failed after the whole denoise as a device error)', async () => {
  const { tinyModel } = await import('./helpers/models.ts');
  const sd = await tinyModel('standard');
  const sd3 = await sd3Model('sd3');
  const cases: [string, string, RegExp][] = [
    [sd, sd3, /^The VAE decoder's latent channels differ from the UNet's \(.*vae_decoder[/\\]model\.onnx\); expected a latent of 4 channels; received 16 channels\. Give --vae a VAE of this model's family/],
    [sd3, sd, /^The VAE decoder's latent channels differ from the transformer's \(.*\); expected a latent of 16 channels; received 4 channels\. Give --vae a VAE of this model's family \(SD3 needs its own 16-channel VAE\)/],
    [sd, path.join(sd, 'unet'), /^The VAE decoder takes other inputs than a latent \(.*unet[/\\]model\.onnx\); expected one input, the latent .*; received sample, timestep, encoder_hidden_states\. Give --vae a VAE export folder/],
  ];
  for (const [model, vae, pattern] of cases) {
    await assert.rejects(
      async () => {
        const p = await loadPipeline(model, { threads: 1, attentionProbe: false, vae });
        await p.close();
      },
      (e: unknown) => e instanceof AsgdError && e.kind === 'model' && e.parameter === '--vae' && pattern.test(e.message),
      `${model} with --vae ${vae}`,
    );
  }
});
