/**
 * The attention-probe graph: its outputs against the plain UNet and against probabilities recomputed here from the
 * layer's own q and k, both score layouts, float16, external data without copying weights, caching, and the reasons
 * given when a model has no separable attention probabilities.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import ort from 'onnxruntime-node';
import { AsgdError } from '../src/core/errors.ts';
import { float32ToFloat16 } from '../src/core/float16.ts';
import { TINY_TEXT, TINY_UNET, writeTinySdModel, type VariantName } from './fixtures/index.ts';
import { dynamoNamed } from './fixtures/dynamo-naming.ts';
import { linear } from './fixtures/layers.ts';
import { GraphBuilder, valueInfo } from './fixtures/onnx-graph.ts';
import { mulberry32 } from './fixtures/prng.ts';
import { MASK_WEIGHTS_INPUT, addAttentionProbe, probeOutputName, scanCrossAttention } from '../src/graph/attention-probe.ts';
import { openSession, readFloat } from '../src/onnx/session.ts';
import { initializerRawDataSpans, prepareAttentionProbe, probeLoadOptions } from '../src/node/probe.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { UnetAdapter } from '../src/onnx/unet.ts';

const LAYERS = ['/up_blocks.1/attentions.0/transformer_blocks.0/attn2', '/up_blocks.1/attentions.1/transformer_blocks.0/attn2'];
const TOKENS = 77;
const TEXT_DIM = TINY_TEXT.hidden; // the SD-1 fixtures' cross-attention width
const CPU = { provider: 'cpu' as const, threads: 1 };

const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');
let root: string;
const folders = new Map<VariantName, string>();

/** The variant's model folder, written once into the test's temp dir. */
async function model(variant: VariantName): Promise<string> {
  let dir = folders.get(variant);
  if (!dir) {
    dir = path.join(root, variant);
    await writeTinySdModel(dir, { variant });
    folders.set(variant, dir);
  }
  return dir;
}

function randoms(n: number, seed: number, scale = 1): Float32Array {
  const next = mulberry32(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (next() * 2 - 1) * scale;
  return out;
}

function floatFeed(type: string, data: Float32Array, dims: number[]): ort.Tensor {
  return type === 'float16' ? new ort.Tensor('float16', float32ToFloat16(data), dims) : new ort.Tensor('float32', data, dims);
}

/** The token columns the tests' probe maps average (a repeat counts twice, as in the mask's mean). */
const MASK_TOKENS = [1, 3, 3, 40];

/** The probe's weights input for MASK_TOKENS: 1/4 at 1 and 40, 2/4 at 3. */
function maskWeights(): Float32Array {
  const w = new Float32Array(TOKENS);
  for (const t of MASK_TOKENS) w[t]! += 1 / MASK_TOKENS.length;
  return w;
}

/**
 * Inputs for a batch-2 UNet call on an h x w latent, in the dtypes the session declares; a probe graph's token
 * weights are MASK_TOKENS' unless given (all ones make each map value a sum of probability rows: 1).
 */
function unetFeeds(session: ort.InferenceSession, h: number, w: number, weights = maskWeights()): Record<string, ort.Tensor> {
  const meta = new Map(session.inputMetadata.map((m) => [m.name, m.isTensor ? m.type : '']));
  const feeds: Record<string, ort.Tensor> = {
    sample: floatFeed(meta.get('sample')!, randoms(2 * 4 * h * w, 1), [2, 4, h, w]),
    encoder_hidden_states: floatFeed(meta.get('encoder_hidden_states')!, randoms(2 * TOKENS * TEXT_DIM, 2), [2, TOKENS, TEXT_DIM]),
  };
  feeds.timestep = meta.get('timestep') === 'int64' ? new ort.Tensor('int64', new BigInt64Array([701n, 701n]), [2]) : new ort.Tensor('float32', new Float32Array([701]), []);
  if (meta.has(MASK_WEIGHTS_INPUT)) feeds[MASK_WEIGHTS_INPUT] = new ort.Tensor('float32', weights, [TOKENS, 1]);
  return feeds;
}

const ONES = new Float32Array(TOKENS).fill(1);

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** A probe map run with all-ones weights: every value is the head mean of a probability row's sum, 1 within `tol`. */
function assertRowSums(data: Float32Array, tol: number): void {
  assert.ok(data.length > 0);
  let worst = 0;
  for (const v of data) worst = Math.max(worst, Math.abs(v - 1));
  assert.ok(worst <= tol, `a row sums to 1 +- ${worst}`);
}

/** The map the probe should give from reference probabilities [B, S, T]: the last row, averaged over MASK_TOKENS. */
function referenceMap(probs: Float32Array, batch: number, s: number, t: number): Float32Array {
  const out = new Float32Array(s);
  const base = (batch - 1) * s * t;
  for (let i = 0; i < s; i++) {
    let sum = 0;
    for (const k of MASK_TOKENS) sum += probs[base + i * t + k]!;
    out[i] = sum / MASK_TOKENS.length;
  }
  return out;
}

/**
 * Head-averaged softmax(q kᵀ / sqrt(d)) computed here in float64: q [B, S, heads*d], k [B, T, heads*d], heads split
 * on the feature axis as diffusers does. Returns [B, S, T].
 */
function referenceProbabilities(q: Float32Array, k: Float32Array, batch: number, s: number, t: number, heads: number, d: number): Float32Array {
  const width = heads * d;
  const out = new Float32Array(batch * s * t);
  const row = new Float64Array(t);
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < s; i++) {
        let max = -Infinity;
        for (let j = 0; j < t; j++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += q[(b * s + i) * width + h * d + c]! * k[(b * t + j) * width + h * d + c]!;
          row[j] = dot / Math.sqrt(d);
          max = Math.max(max, row[j]!);
        }
        let sum = 0;
        for (let j = 0; j < t; j++) sum += row[j] = Math.exp(row[j]! - max);
        for (let j = 0; j < t; j++) out[(b * s + i) * t + j]! += row[j]! / sum / heads;
      }
    }
  }
  return out;
}

/** Adds the named intermediate tensors as float32 graph outputs (rank 3). */
function exposeTensors(m: ModelProto, tensors: string[]): void {
  for (const t of tensors) m.graph!.output.push(valueInfo(t, 'float32', ['b', 's', 'c']));
}

/** The output tensor of the node with this exact name. */
function nodeOutput(m: ModelProto, nodeName: string): string {
  const node = m.graph!.node.find((n) => n.name === nodeName);
  assert.ok(node, `node ${nodeName} exists`);
  return node.output[0]!;
}

async function load(bytes: Uint8Array): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1 });
}

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-probe-test-'));
});
after(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

describe('attention probe on the standard fixture', () => {
  test('outputs one [1, HW] map per up-block attn2 layer, reading one [77, 1] weights input; out_sample is bit-identical', async () => {
    const dir = await model('standard');
    const unet = path.join(dir, 'unet', 'model.onnx');
    const probe = await prepareAttentionProbe(unet, { cacheDir: path.join(root, 'cache') });
    assert.ok('file' in probe, `probe built: ${JSON.stringify(probe)}`);
    assert.deepEqual(probe.layers, LAYERS);
    assert.equal(probe.file, path.join(dir, 'unet', 'model.asgd-probe.onnx'));
    // Inline weights (>= 1 KiB each) become references into model.onnx: the probe holds only the graph.
    const probeSize = fs.statSync(probe.file).size;
    const sourceSize = fs.statSync(unet).size;
    const source = fromBinary(ModelProtoSchema, fs.readFileSync(unet));
    const inlineWeights = source.graph!.initializer.reduce((n, t) => n + (t.rawData.length >= 1024 ? t.rawData.length : 0), 0);
    assert.ok(inlineWeights > 100_000, `${inlineWeights} B of weights`);
    assert.ok(probeSize < sourceSize - inlineWeights + 16_384, `probe ${probeSize} B, source ${sourceSize} B, of which weights ${inlineWeights} B`);

    const plain = await openSession(unet, 'unet', CPU);
    const probed = await openSession(probe.file, 'probe', CPU, probeLoadOptions(probe.file));
    assert.deepEqual(probed.outputs.map((o) => o.name), ['out_sample', ...LAYERS.map(probeOutputName)]);
    for (const o of probed.outputs.slice(1)) assert.equal(o.type, 'float32');
    assert.deepEqual(probed.inputs.map((i) => i.name), [...plain.inputs.map((i) => i.name), MASK_WEIGHTS_INPUT]);
    assert.deepEqual(probed.inputs.at(-1)!.shape, [TOKENS, 1]);
    const [h, w] = [16, 24]; // up_blocks.1 runs at the latent size
    const feeds = unetFeeds(plain.session, h, w);
    const a = await plain.session.run(feeds);
    const b = await probed.session.run({ ...feeds, [MASK_WEIGHTS_INPUT]: new ort.Tensor('float32', ONES, [TOKENS, 1]) });
    // Same graph, same kernels: the added outputs must not change the result at all.
    assert.deepEqual(readFloat(b.out_sample!, 'probe'), readFloat(a.out_sample!, 'plain'));
    for (const layer of LAYERS) {
      const t = b[probeOutputName(layer)]!;
      assert.deepEqual(t.dims, [1, h * w]);
      assert.equal(t.type, 'float32');
      assertRowSums(t.data as Float32Array, 1e-5);
    }
    await plain.session.release();
    await probed.session.release();
  });

  test('matches softmax(q kᵀ / sqrt(d)) recomputed from the layer’s to_q and to_k outputs, conditional row, mask tokens (max abs diff < 1e-6)', async (t) => {
    const dir = await model('standard');
    const m = fromBinary(ModelProtoSchema, fs.readFileSync(path.join(dir, 'unet', 'model.onnx')));
    const qk = LAYERS.map((l) => [nodeOutput(m, `${l}/to_q/MatMul`), nodeOutput(m, `${l}/to_k/MatMul`)] as const);
    exposeTensors(m, qk.flat());
    assert.deepEqual(addAttentionProbe(m), { layers: LAYERS });
    const session = await load(toBinary(ModelProtoSchema, m));
    const [h, w] = [8, 12];
    const r = await session.run(unetFeeds(session, h, w));
    const channels = TINY_UNET.blockOutChannels[0];
    const heads = TINY_UNET.heads;
    for (const [i, layer] of LAYERS.entries()) {
      const [qName, kName] = qk[i]!;
      assert.deepEqual(r[qName]!.dims, [2, h * w, channels]);
      assert.deepEqual(r[kName]!.dims, [2, TOKENS, channels]);
      const ref = referenceProbabilities(r[qName]!.data as Float32Array, r[kName]!.data as Float32Array, 2, h * w, TOKENS, heads, channels / heads);
      const got = r[probeOutputName(layer)]!.data as Float32Array;
      const diff = maxAbsDiff(got, referenceMap(ref, 2, h * w, TOKENS));
      assert.ok(diff < 1e-6, `${layer}: max abs diff ${diff}`);
      t.diagnostic(`${layer}: max abs diff ${diff.toExponential(2)}`);
      // Not trivially uniform: the maps carry information; and not the unconditional row's.
      const [lo, hi] = [Math.min(...got), Math.max(...got)];
      t.diagnostic(`${layer}: map from ${lo.toExponential(3)} to ${hi.toExponential(3)}`);
      assert.ok(hi > 1.5 * lo, `${layer}: map from ${lo} to ${hi}`);
      assert.ok(maxAbsDiff(got, referenceMap(ref.subarray(0, h * w * TOKENS), 1, h * w, TOKENS)) > 1e-3, `${layer}: the conditional row`);
    }
    await session.release();
  });

  test('restricting layers, rejecting unknown ones, and finding layers when node names were stripped', async () => {
    const bytes = fs.readFileSync(path.join(await model('standard'), 'unet', 'model.onnx'));
    const one = fromBinary(ModelProtoSchema, bytes);
    assert.deepEqual(addAttentionProbe(one, { layers: [LAYERS[1]!] }), { layers: [LAYERS[1]] });
    assert.deepEqual(one.graph!.output.map((o) => o.name), ['out_sample', probeOutputName(LAYERS[1]!)]);

    assert.throws(
      () => addAttentionProbe(fromBinary(ModelProtoSchema, bytes), { layers: ['/up_blocks.9/attn2'] }),
      (err: unknown) => err instanceof AsgdError && err.parameter === 'layers' && /up_blocks\.9/.test(err.message) && err.message.includes(LAYERS[0]!),
    );

    // An optimizer may drop node names; the output tensors keep the export scope.
    const unnamed = fromBinary(ModelProtoSchema, bytes);
    for (const n of unnamed.graph!.node) n.name = '';
    assert.deepEqual(scanCrossAttention(unnamed).sites.map((s) => s.layer), LAYERS);

    // A self-attention Softmax moved into an attn2 scope is refused: its keys are not the text.
    const fake = fromBinary(ModelProtoSchema, bytes);
    const attn1 = fake.graph!.node.find((n) => n.name === '/up_blocks.1/attentions.0/transformer_blocks.0/attn1/Softmax')!;
    attn1.name = '/up_blocks.0/attentions.5/transformer_blocks.0/attn2/Softmax';
    const scan = scanCrossAttention(fake);
    assert.deepEqual(scan.sites.map((s) => s.layer), LAYERS);
    assert.deepEqual(scan.rejected.map((r) => r.layer), ['/up_blocks.0/attentions.5/transformer_blocks.0/attn2']);
    assert.match(scan.rejected[0]!.why, /keys do not come from encoder_hidden_states/);

    // Applying the surgery twice is refused.
    const twice = fromBinary(ModelProtoSchema, bytes);
    addAttentionProbe(twice);
    assert.match((addAttentionProbe(twice) as { reason: string }).reason, /already is an attention-probe graph/);
  });
});

describe("attention probe on a dynamo export's naming", () => {
  test('the shipped model with its UNet named the dynamo way: asg gets its mask from the probe, the same image bit for bit', async () => {
    const dir = path.join(root, 'shipped-dynamo');
    fs.cpSync(SHIPPED, dir, { recursive: true });
    for (const f of fs.readdirSync(path.join(dir, 'unet'))) if (f.includes('.asgd-')) fs.rmSync(path.join(dir, 'unet', f));
    const unet = path.join(dir, 'unet', 'model.onnx');
    fs.writeFileSync(unet, toBinary(ModelProtoSchema, dynamoNamed(fs.readFileSync(unet))));
    const params = { prompt: 'a red circle on a blue background', seed: 4, steps: 3, width: 256, height: 256, method: 'asg' as const };
    const images: Uint8Array[] = [];
    for (const model of [SHIPPED, dir]) {
      const p = await loadPipeline(model, { threads: 1 });
      try {
        assert.ok(p.info.attentionProbe.available && p.info.attentionProbe.layers.length > 0, `${model}: the probe was built`);
        const r = await p.generate(params);
        assert.deepEqual(r.warnings.filter((w) => !/Using the euler scheduler/.test(w)), [], `${model}: the mask came from the probe`);
        images.push(r.image.data);
      } finally {
        await p.close();
      }
    }
    assert.ok(Buffer.from(images[1]!).equals(Buffer.from(images[0]!)), 'the same image');
  });

  test('the layers found from the node metadata under the names the TorchScript export gives; the same probabilities, bit for bit', async () => {
    const bytes = fs.readFileSync(path.join(await model('standard'), 'unet', 'model.onnx'));
    assert.deepEqual(scanCrossAttention(dynamoNamed(bytes, false)).sites, [], 'without the metadata nothing tells the layers');
    const dyn = dynamoNamed(bytes);
    assert.ok(dyn.graph!.node.every((n) => !n.name.includes('attn') && !n.output.some((o) => o.includes('attn'))));
    assert.deepEqual(scanCrossAttention(dyn).sites.map((s) => s.layer), LAYERS);
    const plain = fromBinary(ModelProtoSchema, bytes);
    assert.deepEqual(addAttentionProbe(plain), { layers: LAYERS });
    assert.deepEqual(addAttentionProbe(dyn), { layers: LAYERS });
    const [a, b] = [await load(toBinary(ModelProtoSchema, plain)), await load(toBinary(ModelProtoSchema, dyn))];
    const feeds = unetFeeds(a, 8, 12);
    const [ra, rb] = [await a.run(feeds), await b.run(feeds)];
    for (const layer of LAYERS) {
      const [x, y] = [ra[probeOutputName(layer)]!.data as Float32Array, rb[probeOutputName(layer)]!.data as Float32Array];
      assert.ok(x.length > 0 && Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength)), layer);
    }
    await a.release();
    await b.release();
  });
});

/**
 * A one-layer graph whose cross-attention is one ONNX Attention node (opset 23), as torch's dynamo exporter writes
 * scaled-dot-product attention at that opset: q, k, v as [B, heads, S, d]; out_sample is the attention output. The
 * to_q and to_k outputs are graph outputs too (for the reference).
 */
function onnxAttentionModel(): { model: ModelProto; heads: number; d: number; q: string; k: string } {
  const heads = 3;
  const d = 4;
  const width = heads * d;
  const g = new GraphBuilder({ name: 'mini', modelKey: 'mini', seed: 6, floatType: 'float32' });
  const sample = g.floatInput('sample', ['batch', 4, 'height', 'width']);
  const text = g.floatInput('encoder_hidden_states', ['batch', TOKENS, TEXT_DIM]);
  g.input('timestep', 'int64', ['batch']);
  const seq = g.op('Transpose', [g.op('Reshape', [sample, g.constInt64([0, 0, -1])])], { perm: [0, 2, 1] });
  let q = '';
  let k = '';
  const out = ['up_blocks.0', 'attentions.0', 'transformer_blocks.0', 'attn2'].reduceRight<() => string>(
    (inner, scope) => () => g.scope(scope, inner),
    () => {
      q = linear(g, 'to_q', seq, 4, width, { bias: false, gain: 3 });
      k = linear(g, 'to_k', text, TEXT_DIM, width, { bias: false, gain: 3 });
      const v = linear(g, 'to_v', text, TEXT_DIM, width, { bias: false });
      const split = (x: string) => g.op('Transpose', [g.op('Reshape', [x, g.constInt64([0, 0, heads, d])])], { perm: [0, 2, 1, 3] });
      const y = g.op('Attention', [split(q), split(k), split(v)]);
      return g.op('Reshape', [g.op('Transpose', [y], { perm: [0, 2, 1, 3] }), g.constInt64([0, 0, width])]);
    },
  )();
  g.output(out, 'out_sample', 'float32', ['b', 's', width]);
  const model = g.build();
  model.opsetImport[0]!.version = 23n;
  model.irVersion = 10n;
  exposeTensors(model, [q, k]);
  return { model, heads, d, q, k };
}

describe('attention probe on an ONNX Attention node (opset 23)', () => {
  test("its probabilities come from the node's qk_matmul_output after the softmax: equal to softmax(q kᵀ / sqrt(d)) recomputed, out_sample bit-identical", async (t) => {
    const { model, heads, d, q, k } = onnxAttentionModel();
    const plainBytes = toBinary(ModelProtoSchema, model);
    const scan = scanCrossAttention(model);
    assert.deepEqual(scan.sites.map((x) => x.layer), ['/up_blocks.0/attentions.0/transformer_blocks.0/attn2']);
    assert.deepEqual(addAttentionProbe(model), { layers: ['/up_blocks.0/attentions.0/transformer_blocks.0/attn2'] });
    const node = model.graph!.node.find((n) => n.opType === 'Attention')!;
    assert.equal(node.output.length, 4);
    const [plain, probed] = [await load(plainBytes), await load(toBinary(ModelProtoSchema, model))];
    const [h, w] = [4, 6];
    const feeds = unetFeeds(probed, h, w);
    const { [MASK_WEIGHTS_INPUT]: _, ...plainFeeds } = feeds;
    const [a, b] = [await plain.run(plainFeeds), await probed.run(feeds)];
    assert.deepEqual(readFloat(b['out_sample']!, 'probe'), readFloat(a['out_sample']!, 'plain'));
    const got = b[probeOutputName('/up_blocks.0/attentions.0/transformer_blocks.0/attn2')]!;
    assert.deepEqual(got.dims, [1, h * w]);
    const ref = referenceProbabilities(b[q]!.data as Float32Array, b[k]!.data as Float32Array, 2, h * w, TOKENS, heads, d);
    const diff = maxAbsDiff(got.data as Float32Array, referenceMap(ref, 2, h * w, TOKENS));
    t.diagnostic(`max abs diff ${diff.toExponential(2)}`);
    assert.ok(diff < 1e-6, `max abs diff ${diff}`);
    await plain.release();
    await probed.release();
    // The same node with its fourth output read by the graph in another mode: refused, with why.
    const other = onnxAttentionModel().model;
    const n2 = other.graph!.node.find((n) => n.opType === 'Attention')!;
    n2.output.push('', '', 'raw_scores');
    other.graph!.output.push(valueInfo('raw_scores', 'float32', ['b', 'h', 's', 't']));
    assert.deepEqual(scanCrossAttention(other).rejected.map((r) => r.why), ['its qk_matmul_output (mode 0) is read by the graph']);
  });
});

/**
 * A one-layer graph in the older diffusers export layout: scores [B*heads, HW, T] (head_to_batch_dim), optionally
 * computed in float16. out_sample is the attention output.
 */
function batchHeadsModel(float16: boolean): { model: ModelProto; heads: number; d: number } {
  const heads = 3;
  const d = 4;
  const width = heads * d;
  const g = new GraphBuilder({ name: 'mini', modelKey: 'mini', seed: 5, floatType: float16 ? 'float16' : 'float32' });
  const sample = g.floatInput('sample', ['batch', 4, 'height', 'width']);
  const text = g.floatInput('encoder_hidden_states', ['batch', TOKENS, TEXT_DIM]);
  g.input('timestep', 'int64', ['batch']);
  const seq = g.op('Transpose', [g.op('Reshape', [sample, g.constInt64([0, 0, -1])])], { perm: [0, 2, 1] });
  const out = ['up_blocks.0', 'attentions.0', 'transformer_blocks.0', 'attn2'].reduceRight<() => string>(
    (inner, scope) => () => g.scope(scope, inner),
    () => {
      const lower = (x: string) => (float16 ? g.castTo(x, 'float16') : x);
      const q = lower(linear(g, 'to_q', seq, 4, width, { bias: false, gain: 3 }));
      const k = lower(linear(g, 'to_k', text, TEXT_DIM, width, { bias: false, gain: 3 }));
      const v = lower(linear(g, 'to_v', text, TEXT_DIM, width, { bias: false }));
      // [B, S, heads*d] -> [B, heads, S, d] -> [B*heads, S, d]
      const toBatch = (x: string) => {
        const split = g.op('Transpose', [g.op('Reshape', [x, g.constInt64([0, 0, heads, d])])], { perm: [0, 2, 1, 3] });
        const shape = g.op('Concat', [g.constInt64([-1]), g.op('Shape', [split], { start: 2, end: 3 }), g.constInt64([d])], { axis: 0 });
        return g.op('Reshape', [split, shape]);
      };
      const scale = lower(g.constFloat([1 / Math.sqrt(d)], []));
      const scores = g.op('Mul', [g.op('MatMul', [toBatch(q), g.op('Transpose', [toBatch(k)], { perm: [0, 2, 1] })]), scale]);
      const probs = g.op('Softmax', [scores], { axis: -1 });
      return g.castTo(g.op('MatMul', [probs, toBatch(v)]), 'float32');
    },
  )();
  g.output(out, 'out_sample', 'float32', ['bh', 's', d]);
  return { model: g.build(), heads, d };
}

describe('attention probe on the [B*heads, HW, T] score layout', () => {
  for (const float16 of [false, true]) {
    const tol = float16 ? 2e-3 : 1e-6;
    test(`${float16 ? 'float16' : 'float32'} scores: float32 maps, the mask tokens' head-averaged probabilities (max abs diff < ${tol})`, async (t) => {
      const { model: m, heads, d } = batchHeadsModel(float16);
      const q = nodeOutput(m, '/up_blocks.0/attentions.0/transformer_blocks.0/attn2/to_q/MatMul');
      const k = nodeOutput(m, '/up_blocks.0/attentions.0/transformer_blocks.0/attn2/to_k/MatMul');
      exposeTensors(m, [q, k]);
      const layer = '/up_blocks.0/attentions.0/transformer_blocks.0/attn2';
      assert.deepEqual(addAttentionProbe(m), { layers: [layer] });
      const session = await load(toBinary(ModelProtoSchema, m));
      const [h, w] = [5, 7];
      const r = await session.run(unetFeeds(session, h, w));
      const probs = r[probeOutputName(layer)]!;
      assert.equal(probs.type, 'float32');
      assert.deepEqual(probs.dims, [1, h * w]);
      const ref = referenceProbabilities(r[q]!.data as Float32Array, r[k]!.data as Float32Array, 2, h * w, TOKENS, heads, d);
      const diff = maxAbsDiff(probs.data as Float32Array, referenceMap(ref, 2, h * w, TOKENS));
      assert.ok(diff < tol, `max abs diff ${diff}`);
      t.diagnostic(`max abs diff ${diff.toExponential(2)}`);
      assertRowSums((await session.run(unetFeeds(session, h, w, ONES)))[probeOutputName(layer)]!.data as Float32Array, float16 ? 2e-3 : 1e-5);
      await session.release();
    });
  }
});

describe('the UNet adapter on the probe graph', () => {
  test("feeds the call's mask tokens as the weights and returns the conditional row's maps, averaged over them", async () => {
    const dir = await model('standard');
    const probe = await prepareAttentionProbe(path.join(dir, 'unet', 'model.onnx'), { cacheDir: path.join(root, 'cache') });
    assert.ok('file' in probe);
    const s = await openSession(probe.file, 'probe', CPU, probeLoadOptions(probe.file));
    const adapter = new UnetAdapter(s);
    assert.equal(adapter.maskWeights?.name, MASK_WEIGHTS_INPUT);
    const [h, w] = [8, 12];
    const hidden = randoms(2 * TOKENS * TEXT_DIM, 2);
    const sample = randoms(4 * h * w, 1);
    const call = { sample, channels: 4, height: h, width: w, timestep: 701, guidanceScale: 7.5 };
    // Token 99 is past the text length: dropped, as the mask drops it (maskColumns).
    const cond = { hidden, tokens: TOKENS, dim: TEXT_DIM };
    const both = await adapter.run({ ...call, maskTokens: [...MASK_TOKENS, 99] }, cond);
    // The same call made here on the session with the weights written out independently (maskWeights()).
    const twice = new Float32Array(2 * sample.length);
    twice.set(sample);
    twice.set(sample, sample.length);
    const raw = await s.session.run({
      sample: new ort.Tensor('float32', twice, [2, 4, h, w]),
      timestep: new ort.Tensor('int64', new BigInt64Array([701n, 701n]), [2]),
      encoder_hidden_states: new ort.Tensor('float32', hidden, [2, TOKENS, TEXT_DIM]),
      [MASK_WEIGHTS_INPUT]: new ort.Tensor('float32', maskWeights(), [TOKENS, 1]),
    });
    assert.deepEqual(both.attention?.map((a) => a.layer), LAYERS);
    for (const [i, a] of both.attention!.entries()) {
      assert.deepEqual([a.height, a.width, a.tokens, a.meanOver], [h, w, TOKENS, MASK_TOKENS]);
      assert.deepEqual(a.data, raw[probeOutputName(LAYERS[i]!)]!.data);
    }
    // The conditional half alone (a unit split across devices) gives the same maps; the unconditional half none.
    const half = await adapter.run({ ...call, part: 'cond', maskTokens: MASK_TOKENS }, cond);
    for (const [i, a] of half.attention!.entries()) assert.ok(maxAbsDiff(a.data, both.attention![i]!.data) < 1e-6);
    assert.equal((await adapter.run({ ...call, part: 'uncond', maskTokens: MASK_TOKENS }, cond)).attention, undefined);
    // Without mask tokens the weights are zero: zero maps, averaged over no tokens (the mask then falls back to M = 1).
    const none = await adapter.run(call, cond);
    assert.deepEqual(none.attention![0]!.meanOver, []);
    assert.ok(none.attention!.every((a) => a.data.every((v) => v === 0)));
    // The noise prediction is the plain UNet's bit for bit, whole and as either CFG half: workers run every
    // unit on the probe graph (pipeline.ts, probeServesUnet).
    const plain = await openSession(path.join(dir, 'unet', 'model.onnx'), 'unet', CPU);
    const plainAdapter = new UnetAdapter(plain);
    for (const part of ['both', 'cond', 'uncond'] as const) {
      assert.deepEqual((await adapter.run({ ...call, part }, cond)).output, (await plainAdapter.run({ ...call, part }, cond)).output, part);
      // A unit that is not probed (maps false) fetches the noise prediction alone: the same bits, no maps.
      const unprobed = await adapter.run({ ...call, part, maskTokens: MASK_TOKENS, maps: false }, cond);
      assert.equal(unprobed.attention, undefined, part);
      assert.deepEqual(unprobed.output, (await plainAdapter.run({ ...call, part }, cond)).output, part);
    }
    await plain.session.release();
    await s.session.release();
  });
});

describe('attention probe files', () => {
  for (const variant of ['external-data', 'weights-pb'] as const) {
    test(`${variant}: the probe references the weights file (not copied) and runs, next to the model and from the cache`, async () => {
      const dir = await model(variant);
      const unetDir = path.join(dir, 'unet');
      const unet = path.join(unetDir, 'model.onnx');
      const weights = variant === 'external-data' ? 'model.onnx_data' : 'weights.pb';
      const weightsStat = fs.statSync(path.join(unetDir, weights));
      const plain = await openSession(unet, 'unet', CPU);
      const feeds = unetFeeds(plain.session, 8, 8);
      const expected = readFloat((await plain.session.run(feeds)).out_sample!, 'plain');

      const cacheDir = path.join(root, `cache-${variant}`);
      const sibling = await prepareAttentionProbe(unet, { cacheDir });
      const cached = await prepareAttentionProbe(unet, { cacheDir, placement: 'cache' });
      assert.ok('file' in sibling && 'file' in cached);
      assert.equal(path.dirname(sibling.file), unetDir);
      assert.ok(cached.file.startsWith(cacheDir + path.sep));
      assert.deepEqual(fs.readdirSync(unetDir).sort(), ['config.json', 'model.asgd-probe.json', 'model.asgd-probe.onnx', 'model.onnx', weights].sort());
      assert.deepEqual(fs.readdirSync(path.dirname(cached.file)).sort(), ['model.asgd-probe.json', 'model.asgd-probe.onnx']);
      for (const probe of [sibling, cached]) {
        assert.deepEqual(probe.layers, LAYERS);
        const size = fs.statSync(probe.file).size;
        assert.ok(size < fs.statSync(unet).size + 8192, `probe is ${size} B`);
        const s = await openSession(probe.file, 'probe', CPU, probeLoadOptions(probe.file));
        const r = await s.session.run({ ...feeds, [MASK_WEIGHTS_INPUT]: new ort.Tensor('float32', ONES, [TOKENS, 1]) });
        assert.deepEqual(readFloat(r.out_sample!, 'probe'), expected);
        assertRowSums(r[probeOutputName(LAYERS[0]!)]!.data as Float32Array, 1e-5);
        await s.session.release();
      }
      // Why the cached probe is loaded from bytes: by path, onnxruntime-node refuses weights outside its folder.
      assert.deepEqual(probeLoadOptions(cached.file), { externalDataFolder: unetDir });
      await assert.rejects(ort.InferenceSession.create(cached.file), /escapes model directory|External data path/);
      assert.deepEqual(fs.statSync(path.join(unetDir, weights)).mtimeMs, weightsStat.mtimeMs);
      await plain.session.release();
    });
  }

  test('fp16: float16 model gives float32 probabilities', async () => {
    const unet = path.join(await model('fp16'), 'unet', 'model.onnx');
    const probe = await prepareAttentionProbe(unet, { cacheDir: path.join(root, 'cache') });
    assert.ok('file' in probe);
    const plain = await openSession(unet, 'unet', CPU);
    const s = await openSession(probe.file, 'probe', CPU, probeLoadOptions(probe.file));
    assert.equal(s.inputs.find((i) => i.name === 'sample')!.type, 'float16');
    const feeds = unetFeeds(s.session, 8, 8, ONES);
    const r = await s.session.run(feeds);
    const out = r[probeOutputName(LAYERS[1]!)]!;
    assert.equal(out.type, 'float32');
    assert.deepEqual(out.dims, [1, 64]);
    assertRowSums(out.data as Float32Array, 1e-5);
    const { [MASK_WEIGHTS_INPUT]: _, ...plainFeeds } = feeds;
    assert.deepEqual(readFloat(r.out_sample!, 'probe'), readFloat((await plain.session.run(plainFeeds)).out_sample!, 'plain'));
    await s.session.release();
    await plain.session.release();
  });

  test('fused attention: a reason that says why and how to turn the mask off', async () => {
    const unet = path.join(await model('fused-attention'), 'unet', 'model.onnx');
    const probe = await prepareAttentionProbe(unet, { cacheDir: path.join(root, 'cache') });
    assert.ok('reason' in probe);
    assert.match(probe.reason, /no separable attention probabilities/);
    assert.match(probe.reason, /MultiHeadAttention/);
    assert.match(probe.reason, /--no-mask/);
    assert.equal(fs.existsSync(path.join(path.dirname(unet), 'model.asgd-probe.onnx')), false);
  });

  test('cache: reused while the UNet is unchanged (also when only touched), rebuilt when its content changes', async () => {
    const dir = path.join(root, 'cache-test');
    await writeTinySdModel(dir, { variant: 'standard', seed: 1 });
    const unet = path.join(dir, 'unet', 'model.onnx');
    const opts = { cacheDir: path.join(root, 'cache') };
    const first = await prepareAttentionProbe(unet, opts);
    assert.ok('file' in first);
    const sidecar = path.join(dir, 'unet', 'model.asgd-probe.json');
    const built = fs.statSync(first.file).mtimeMs;
    const sha = JSON.parse(fs.readFileSync(sidecar, 'utf8')).sha256 as string;
    // Make a rewrite visible through mtime even on coarse-grained file systems.
    fs.utimesSync(first.file, new Date(built - 10_000), new Date(built - 10_000));
    const old = fs.statSync(first.file).mtimeMs;

    assert.deepEqual(await prepareAttentionProbe(unet, opts), first);
    assert.equal(fs.statSync(first.file).mtimeMs, old);

    const later = new Date(Date.now() + 5_000);
    fs.utimesSync(unet, later, later);
    assert.deepEqual(await prepareAttentionProbe(unet, opts), first);
    assert.equal(fs.statSync(first.file).mtimeMs, old, 'touching the source does not rebuild');
    assert.equal(JSON.parse(fs.readFileSync(sidecar, 'utf8')).mtimeMs, fs.statSync(unet).mtimeMs);

    await writeTinySdModel(dir, { variant: 'standard', seed: 2 });
    const again = await prepareAttentionProbe(unet, opts);
    assert.deepEqual(again, first);
    assert.notEqual(fs.statSync(first.file).mtimeMs, old, 'new content rebuilds');
    assert.notEqual(JSON.parse(fs.readFileSync(sidecar, 'utf8')).sha256, sha);
    // The rebuilt probe references the new weights: same output as the new UNet.
    const plain = await openSession(unet, 'unet', CPU);
    const s = await openSession(again.file, 'probe', CPU);
    const feeds = unetFeeds(s.session, 8, 8);
    const { [MASK_WEIGHTS_INPUT]: _, ...plainFeeds } = feeds;
    assert.deepEqual(readFloat((await s.session.run(feeds)).out_sample!, 'probe'), readFloat((await plain.session.run(plainFeeds)).out_sample!, 'plain'));
    await s.session.release();
    await plain.session.release();
  });

  test('a single-file UNet over 2 GiB gets a reason suggesting external data', async () => {
    const big = path.join(root, 'big', 'model.onnx');
    fs.mkdirSync(path.dirname(big), { recursive: true });
    fs.closeSync(fs.openSync(big, 'w'));
    fs.truncateSync(big, 2 ** 31 + 1); // sparse: no disk space used
    const probe = await prepareAttentionProbe(big, { cacheDir: path.join(root, 'cache') });
    assert.ok('reason' in probe);
    assert.match(probe.reason, /2\.0 GiB/);
    assert.match(probe.reason, /external data/);
    assert.match(probe.reason, /--no-mask/);
    fs.rmSync(big);
  });

  test('raw_data spans point at each initializer’s bytes inside model.onnx', async () => {
    const bytes = fs.readFileSync(path.join(await model('standard'), 'unet', 'model.onnx'));
    const spans = initializerRawDataSpans(bytes);
    const m = fromBinary(ModelProtoSchema, bytes);
    assert.equal(spans.size, m.graph!.initializer.length);
    for (const t of m.graph!.initializer) {
      const span = spans.get(t.name)!;
      assert.deepEqual(bytes.subarray(span.offset, span.offset + span.length), Buffer.from(t.rawData), t.name);
    }
  });
});
