/**
 * Attention fusion (src/graph/attention-fusion.ts, src/node/fused-attention.ts): written-out attention in the two
 * layouts exporters write becomes MultiHeadAttention with the graph's own scale, the outputs stay within float
 * rounding of the plain graph (ONNX Runtime's CPU kernels), what the patterns do not match is left alone, the probed
 * layers of the attention-probe graph stay written out, the fused files are stored like the other derived graphs, and
 * the pipeline uses them when asked.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { AttributeProtoSchema, AttributeProto_AttributeType, ModelProtoSchema, TensorProtoSchema, ValueInfoProtoSchema, type ModelProto } from 'onnx-buf';
import ort from 'onnxruntime-node';
import { countOnnxAttention, fuseAttention, MS_DOMAIN, PAD_CHANNELS } from '../src/graph/attention-fusion.ts';
import { derivedUnetBytes } from '../src/browser/device/probe-graph.ts';
import { webgpuAttentionNote } from '../src/core/webgpu-attention-note.ts';
import { MASK_WEIGHTS_INPUT, scanCrossAttention } from '../src/graph/attention-probe.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { prepareAttentionProbe, probeLoadOptions } from '../src/node/probe.ts';
import { countOnnxAttentionIn, fusedLoadOptions, prepareFusedAttention } from '../src/node/fused-attention.ts';
import { openSession, releaseSession } from '../src/onnx/session.ts';
import { writeTinySdModel } from './fixtures/index.ts';
import { TINY_SD3_TEXT, buildTinySd3Files, writeTinySd3Model, type Sd3VariantName } from './fixtures/tiny-sd3.ts';
import { tinyModel } from './helpers/models.ts';
import { linear } from './fixtures/layers.ts';
import { GraphBuilder } from './fixtures/onnx-graph.ts';
import { cloneModel as clone, countOps as count, maxAbsDiff, randoms, runGraph as run, unetFeeds } from './fixtures/graph-run.ts';
import { NO_TORCH_PYTHON, torchPython } from './helpers/torch-python.ts';

const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');
const CPU = { provider: 'cpu' as const, threads: 1 };
let root: string;

before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-fusion-'));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** The nodes that pad q and k per head before each MultiHeadAttention (Reshape, Pad, Reshape for each). */
const PADDING = ['Reshape', 'Pad', 'Reshape', 'Reshape', 'Pad', 'Reshape'];

interface Variant {
  /** Heads folded into the batch with shapes computed at run time (TorchScript's export of diffusers' classic processor). */
  layout: 'folded' | 'heads-axis' | 'sdpa-export' | 'dynamo';
  /**
   * dynamo: how torch's dynamo exporter writes diffusers' torch-2 processor. 'runtime' (as exported, dynamic axes):
   * sizes read from shapes (Shape with start / end, Reshape of a scalar to one entry), the default scale computed with
   * CastLike, kᵀ as Reshape [-1, S, d] → Transpose (0 2 1) → Reshape [B, H, d, S], a Dropout after the Softmax;
   * 'constant' (what its optimizer leaves of a static export): every target a constant, the scale folded, no Dropout.
   */
  sizes?: 'runtime' | 'constant';
  /** dynamo: the Dropout is in training mode. */
  trainingDropout?: boolean;
  /** dynamo constant: kᵀ's first Reshape takes [-1, d, S] (the graph runs, but that is not kᵀ). */
  scrambledKeys?: boolean;
  /** sdpa-export: the scale computed from the shape of this tensor (the query's heads by default). */
  scaleFromShapeOf?: 'x';
  /** Also a graph output: the probabilities are read elsewhere. */
  probsOut?: boolean;
  /** An additive mask on the scores. */
  mask?: boolean;
  /** kᵀ built with the wrong permutation (q·k, not q·kᵀ, when the sides differ). */
  wrongKeyPerm?: boolean;
  /** Softmax over the queries (the axis before the last) instead of the keys. */
  wrongSoftmaxAxis?: boolean;
  /**
   * folded: a ConstantOfShape times a scalar added to the scores, as torch exports baddbmm(empty, q, kᵀ, beta, alpha):
   * 'zeros' (beta 0, the shape read from q's and k's as the exporter reads it), 'extra-axis' (zeros of one more axis,
   * which broadcast the scores to rank 4), 'beta-1' (a tensor of ones times 1).
   */
  added?: 'zeros' | 'extra-axis' | 'beta-1';
  /** folded: q and k cast before q·kᵀ and the probabilities cast after the Softmax (upcast attention's Casts). */
  upcast?: boolean;
}

const HEADS = 2;
const D = 4;
const WIDTH = HEADS * D;
const CONTEXT = 6;

/** One attention between two linear layers, in the variant's layout, with a scale that is not 1/sqrt(d). */
/** The graph's inputs x and context and their q, k, v projections (flat [B, S, H·d]). */
function projections(name: string): { g: GraphBuilder; x: string; q: string; k: string; val: string } {
  const g = new GraphBuilder({ name, modelKey: 'attn', seed: 11, floatType: 'float32' });
  const x = g.floatInput('x', ['batch', 'seq', WIDTH]);
  const c = g.floatInput('context', ['batch', 'keys', CONTEXT]);
  const q = linear(g, 'to_q', x, WIDTH, WIDTH, { bias: false, gain: 3 });
  const k = linear(g, 'to_k', c, CONTEXT, WIDTH, { bias: false, gain: 3 });
  const val = linear(g, 'to_v', c, CONTEXT, WIDTH, { bias: false });
  return { g, x, q, k, val };
}

/** The attention-probe scan on a one-attention export, its keys' input named as a UNet's text input. */
function probeLayersAsUnet(plain: ModelProto): string[] {
  const asUnet = clone(plain);
  for (const i of asUnet.graph!.input) if (i.name === 'context') i.name = 'encoder_hidden_states';
  for (const n of asUnet.graph!.node) n.input = n.input.map((x) => (x === 'context' ? 'encoder_hidden_states' : x));
  return scanCrossAttention(asUnet).sites.map((x) => x.layer);
}

/** An attention export with dynamic sizes, fused, at sizes other than the traced ones: batch 3, 5 queries, 9 keys. */
async function fusedMatchesPlainAtOtherSizes(t: TestContext, plain: ModelProto, fused: ModelProto, meta: { x: number[]; context: number[] }): Promise<void> {
  const other = () => ({
    x: new ort.Tensor('float32', randoms(3 * 5 * meta.x[2]!, 4), [3, 5, meta.x[2]!]),
    context: new ort.Tensor('float32', randoms(3 * 9 * meta.context[2]!, 5), [3, 9, meta.context[2]!]),
  });
  const d = maxAbsDiff((await run(plain, other()))['y']!, (await run(fused, other()))['y']!);
  t.diagnostic(`batch 3, 5 queries, 9 keys: fused vs plain ${d.toExponential(2)}`);
  assert.ok(d < 1e-6, `fused vs plain ${d}`);
}

function attentionModel(v: Variant): ModelProto {
  const { g, x, q, k, val } = projections('attn');
  const batch = g.op('Gather', [g.op('Shape', [x]), g.constInt64([0], [])], { axis: 0 });
  const unsq = (s: string) => g.op('Unsqueeze', [s, g.constInt64([0])]);
  const split = (t: string) => g.op('Reshape', [t, g.op('Concat', [unsq(batch), g.constInt64([-1]), g.constInt64([HEADS]), g.constInt64([D])], { axis: 0 })]);
  const headsAxis = (t: string) => g.op('Transpose', [split(t)], { perm: [0, 2, 1, 3] });
  let scores: string;
  let out: string;
  if (v.layout === 'folded') {
    const folded = unsq(g.op('Mul', [batch, g.constInt64([HEADS], [])]));
    const fold = (t: string) => g.op('Reshape', [headsAxis(t), g.op('Concat', [folded, g.constInt64([-1]), g.constInt64([D])], { axis: 0 })]);
    const up = (t: string) => (v.upcast ? g.op('Cast', [t], { to: 1 }) : t);
    const [qf, kf] = [up(fold(q)), up(fold(k))];
    scores = g.op('MatMul', [qf, g.op('Transpose', [kf], { perm: v.wrongKeyPerm ? [0, 1, 2] : [0, 2, 1] })]);
    scores = g.op('Mul', [scores, g.constFloat([0.3], [])]);
    if (v.added) {
      const dim = (t: string, i: number) => unsq(g.op('Gather', [g.op('Shape', [t]), g.constInt64([i], [])], { axis: 0 }));
      const shape = [dim(qf, 0), dim(qf, 1), dim(kf, 1)];
      if (v.added === 'extra-axis') shape.unshift(g.constInt64([1]));
      const filled = g.op('ConstantOfShape', [g.op('Concat', shape, { axis: 0 })]);
      scores = g.op('Add', [scores, g.op('Mul', [filled, g.constFloat([v.added === 'beta-1' ? 1 : 0], [])])]);
    }
    if (v.mask) scores = g.op('Add', [scores, g.constFloat(randoms(3, 9), [3])]);
    const probs = g.op('Softmax', [scores], { axis: v.wrongSoftmaxAxis ? 1 : -1 });
    if (v.probsOut) g.floatOutput(probs, 'probs', ['bh', 'seq', 'keys']);
    const o = g.op('MatMul', [up(probs), fold(val)]);
    const unfold = g.op('Reshape', [o, g.op('Concat', [unsq(batch), g.constInt64([HEADS]), g.constInt64([-1]), g.constInt64([D])], { axis: 0 })]);
    out = g.op('Transpose', [unfold], { perm: [0, 2, 1, 3] });
  } else if (v.layout === 'sdpa-export') {
    // As torch's export of F.scaled_dot_product_attention writes it (default scale): 1 / sqrt of the query's last
    // dimension, read from its shape at run time; its square root on q and on kᵀ (Transpose 0 1 3 2 of k's heads).
    const qh = headsAxis(q);
    const last = g.op('Slice', [g.op('Shape', [v.scaleFromShapeOf === 'x' ? x : qh]), g.constInt64([-1]), g.constInt64([Number.MAX_SAFE_INTEGER])]);
    const scale = g.op('Div', [g.constFloat([1], [1]), g.op('Sqrt', [g.op('Cast', [last], { to: 1 })])]);
    const root = g.op('Sqrt', [scale]);
    const kt = g.op('Transpose', [headsAxis(k)], { perm: [0, 1, 3, 2] });
    scores = g.op('MatMul', [g.op('Mul', [qh, root]), g.op('Mul', [kt, root])]);
    const probs = g.op('Softmax', [scores], { axis: -1 });
    out = g.op('Transpose', [g.op('MatMul', [probs, headsAxis(val)])], { perm: [0, 2, 1, 3] });
  } else if (v.layout === 'dynamo') {
    return dynamoAttention(g, x, q, k, val, v);
  } else {
    // Scaled dot-product attention written out: sqrt(scale) on q and on kᵀ, kᵀ straight from the split.
    const root2 = g.constFloat([Math.sqrt(0.3)], []);
    const kt = g.op('Transpose', [split(k)], { perm: v.wrongKeyPerm ? [0, 2, 1, 3] : [0, 2, 3, 1] });
    scores = g.op('MatMul', [g.op('Mul', [headsAxis(q), root2]), g.op('Mul', [kt, root2])]);
    if (v.mask) scores = g.op('Add', [scores, g.constFloat(randoms(3, 9), [3])]);
    const probs = g.op('Softmax', [scores], { axis: v.wrongSoftmaxAxis ? 2 : -1 });
    if (v.probsOut) g.floatOutput(probs, 'probs', ['b', 'h', 'seq', 'keys']);
    out = g.op('Transpose', [g.op('MatMul', [probs, headsAxis(val)])], { perm: [0, 2, 1, 3] });
  }
  const merged = g.op('Reshape', [out, g.op('Concat', [unsq(batch), g.constInt64([-1]), g.constInt64([WIDTH])], { axis: 0 })]);
  g.floatOutput(linear(g, 'to_out', merged, WIDTH, WIDTH), 'y', ['batch', 'seq', WIDTH]);
  const model = g.build();
  if (v.added === 'beta-1') {
    const fill = model.graph!.node.find((n) => n.opType === 'ConstantOfShape')!;
    fill.attribute.push(create(AttributeProtoSchema, {
      name: 'value', type: AttributeProto_AttributeType.TENSOR, t: create(TensorProtoSchema, { dataType: 1, dims: [1n], floatData: [1] }),
    }));
  }
  return model;
}

/** The dynamo variants, for FEEDS' sizes (batch 2, 5 queries, 3 keys) where the sizes are constants. */
function dynamoAttention(g: GraphBuilder, x: string, q: string, k: string, val: string, v: Variant): ModelProto {
  const runtime = v.sizes !== 'constant';
  const ints = (values: number[]) => g.op('Constant', [], { value_ints: values });
  // The batch as torch.export's symbolic size: a scalar read from x's shape, reshaped to one entry.
  const batch = runtime ? g.op('Reshape', [g.op('Gather', [g.op('Shape', [x]), g.constInt64([0], [])], { axis: 0 }), ints([-1])]) : ints([2]);
  const heads = (t: string, seq: number) =>
    g.op('Transpose', [g.op('Reshape', [t, g.op('Concat', [batch, ints([runtime ? -1 : seq, HEADS, D])], { axis: 0 })])], { perm: [0, 2, 1, 3] });
  const [qh, kh, vh] = [heads(q, 5), heads(k, 3), heads(val, 3)];
  let qs: string;
  let ks: string;
  let kt: string;
  if (runtime) {
    const last = g.op('Gather', [g.op('Shape', [qh]), ints([-1])], { axis: 0 });
    const scale = g.op('CastLike', [g.op('Div', [g.op('CastLike', [g.op('Constant', [], { value_float: { f: 1 } }), qh]), g.op('Sqrt', [g.op('CastLike', [last, qh])])]), qh]);
    const [kLast, kSecondLast, kFirst] = [g.op('Shape', [kh], { start: -1 }), g.op('Shape', [kh], { start: -2, end: -1 }), g.op('Shape', [kh], { end: -2 })];
    const squeezed = g.op('Reshape', [kh, g.op('Concat', [ints([-1]), kSecondLast, kLast], { axis: 0 })]);
    kt = g.op('Reshape', [g.op('Transpose', [squeezed], { perm: [0, 2, 1] }), g.op('Concat', [kFirst, kLast, kSecondLast], { axis: 0 })]);
    qs = g.op('Mul', [qh, g.op('Sqrt', [scale])]);
    ks = g.op('Mul', [kt, g.op('CastLike', [g.op('Sqrt', [scale]), kt])]);
  } else {
    const squeezed = g.op('Reshape', [kh, ints(v.scrambledKeys ? [-1, D, 3] : [-1, 3, D])]);
    kt = g.op('Reshape', [g.op('Transpose', [squeezed], { perm: [0, 2, 1] }), ints([2, HEADS, D, 3])]);
    const root = g.constFloat([Math.sqrt(0.3)], [1]);
    [qs, ks] = [g.op('Mul', [qh, root]), g.op('Mul', [kt, root])];
  }
  let probs = g.op('Softmax', [g.op('MatMul', [qs, ks])], { axis: -1 });
  if (runtime) probs = g.op('Dropout', [probs, g.constFloat([0], []), ...(v.trainingDropout ? ['training_mode'] : [])]);
  const out = g.op('Transpose', [g.op('MatMul', [probs, vh])], { perm: [0, 2, 1, 3] });
  const merged = g.op('Reshape', [out, g.op('Concat', [batch, ints([runtime ? -1 : 5, WIDTH])], { axis: 0 })]);
  g.floatOutput(linear(g, 'to_out', merged, WIDTH, WIDTH), 'y', ['batch', 'seq', WIDTH]);
  const model = g.build();
  if (v.trainingDropout) model.graph!.initializer.push(create(TensorProtoSchema, { name: 'training_mode', dataType: 9, dims: [], rawData: new Uint8Array([1]) }));
  return model;
}

// keys = 3 so that a mask of 3 values broadcasts and a q·k of wrong shape fails to match rather than to run.
const FEEDS = () => ({
  x: new ort.Tensor('float32', randoms(2 * 5 * WIDTH, 1), [2, 5, WIDTH]),
  context: new ort.Tensor('float32', randoms(2 * 3 * CONTEXT, 2), [2, 3, CONTEXT]),
});

describe('the fusion on one attention', () => {
  for (const layout of ['folded', 'heads-axis'] as const) {
    test(`${layout}: one MultiHeadAttention with the graph's scale; y within 1e-6 of the plain graph`, async (t) => {
      const plain = attentionModel({ layout });
      const fused = clone(plain);
      assert.deepEqual(fuseAttention(fused), { fused: 1, left: 0 });
      assert.equal(count(fused, 'Softmax'), 0);
      assert.equal(count(fused, 'Transpose'), 0, 'the head split and merge are pruned');
      const mha = fused.graph!.node.find((n) => n.opType === 'MultiHeadAttention')!;
      assert.equal(mha.domain, MS_DOMAIN);
      assert.equal(Number(mha.attribute.find((a) => a.name === 'num_heads')!.i), HEADS);
      const scale = mha.attribute.find((a) => a.name === 'scale')!.f;
      assert.ok(Math.abs(scale - 0.3) < 1e-6, `scale ${scale}`);
      assert.ok(fused.opsetImport.some((o) => o.domain === MS_DOMAIN), fused.opsetImport.map((o) => `${o.domain}:${o.version}`).join(' '));
      const a = await run(plain, FEEDS());
      const b = await run(fused, FEEDS());
      const diff = maxAbsDiff(a['y']!, b['y']!);
      t.diagnostic(`max abs diff ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-6, `max abs diff ${diff}`);
    });
    for (const v of [{ probsOut: true }, { mask: true }, { wrongKeyPerm: true }, { wrongSoftmaxAxis: true }]) {
      test(`${layout}: left written out when ${Object.keys(v)[0]}`, () => {
        const m = attentionModel({ layout, ...v });
        const before = toBinary(ModelProtoSchema, m);
        assert.deepEqual(fuseAttention(m), { fused: 0, left: 1 });
        assert.deepEqual(toBinary(ModelProtoSchema, m), before, 'the model is unchanged');
      });
    }
  }
  test('folded with zeros added as torch exports baddbmm (beta 0): the zeros and their shape are pruned; y within 1e-6', async (t) => {
    const plain = attentionModel({ layout: 'folded', added: 'zeros' });
    const fused = clone(plain);
    assert.deepEqual(fuseAttention(fused), { fused: 1, left: 0 });
    for (const op of ['ConstantOfShape', 'Shape']) assert.equal(count(fused, op), 0, op);
    assert.equal(count(fused, 'Add'), count(plain, 'Add') - 1, 'the Add of the zeros is gone (to_out\'s bias Add stays)');
    const mha = fused.graph!.node.find((n) => n.opType === 'MultiHeadAttention')!;
    assert.ok(Math.abs(mha.attribute.find((a) => a.name === 'scale')!.f - 0.3) < 1e-6);
    const diff = maxAbsDiff((await run(plain, FEEDS()))['y']!, (await run(fused, FEEDS()))['y']!);
    t.diagnostic(`max abs diff ${diff.toExponential(2)}`);
    assert.ok(diff < 1e-6, `max abs diff ${diff}`);
  });
  for (const v of [{ added: 'extra-axis' }, { added: 'beta-1' }, { upcast: true }] as const) {
    const what = 'upcast' in v ? 'q, k and the probabilities are cast (upcast attention)'
      : `the added term is ${v.added === 'beta-1' ? 'not zero (beta 1)' : 'zeros of another shape (one more axis)'}`;
    test(`folded: left written out when ${what}`, async () => {
      const m = attentionModel({ layout: 'folded', ...v });
      await run(m, FEEDS()); // the plain graph runs
      const before = toBinary(ModelProtoSchema, m);
      assert.deepEqual(fuseAttention(m), { fused: 0, left: 1 });
      assert.deepEqual(toBinary(ModelProtoSchema, m), before, 'the model is unchanged');
    });
  }
  test("sdpa-export: the scale read from the query's shape becomes the node's scale (1 / sqrt of the head size, written out for the padded q and k); y within 1e-6", async (t) => {
    const plain = attentionModel({ layout: 'sdpa-export' });
    const fused = clone(plain);
    assert.deepEqual(fuseAttention(fused), { fused: 1, left: 0 });
    const mha = fused.graph!.node.find((n) => n.opType === 'MultiHeadAttention')!;
    assert.equal(mha.attribute.find((a) => a.name === 'scale')!.f, 1 / Math.sqrt(D), 'the default scale of the unpadded head size');
    assert.equal(count(fused, 'Shape'), 0, 'the scale computation and the reshapes\' shapes are pruned');
    const a = await run(plain, FEEDS());
    const b = await run(fused, FEEDS());
    const diff = maxAbsDiff(a['y']!, b['y']!);
    t.diagnostic(`max abs diff ${diff.toExponential(2)}`);
    assert.ok(diff < 1e-6, `max abs diff ${diff}`);
    // The same computation from a tensor whose last dimension is not the head size: left written out.
    assert.deepEqual(fuseAttention(attentionModel({ layout: 'sdpa-export', scaleFromShapeOf: 'x' })), { fused: 0, left: 1 });
  });
});

describe("the fused form: q and k padded per head, so ONNX Runtime's WebGPU provider leaves out its flash-attention kernel", () => {
  // ONNX Runtime 1.30's WebGPU MultiHeadAttention takes its flash-attention kernel where q's head size equals v's and is
  // a multiple of 4; measured on lavapipe, that kernel is wrong wherever the keys outnumber the subgroup size (8 on
  // lavapipe by default) and there are 32 queries or more (docs/benchmarks.md, "Fused attention"). Here the head size
  // is 4, with 64 queries and 77 keys: the flash form is off by about 0.1 there.
  const feeds = () => ({
    x: new ort.Tensor('float32', randoms(2 * 64 * WIDTH, 5), [2, 64, WIDTH]),
    context: new ort.Tensor('float32', randoms(2 * 77 * CONTEXT, 6), [2, 77, CONTEXT]),
  });

  test('each head of q and k gets PAD_CHANNELS zero channels, the scale written out; flashForm writes q and k as they are', async (t) => {
    const plain = attentionModel({ layout: 'sdpa-export' }); // the default scale: 1 / sqrt(d), d = 4
    const fused = clone(plain);
    assert.deepEqual(fuseAttention(fused), { fused: 1, left: 0 });
    assert.equal(count(fused, 'Pad'), 2);
    const mha = fused.graph!.node.find((n) => n.opType === 'MultiHeadAttention')!;
    assert.equal(mha.attribute.find((a) => a.name === 'scale')!.f, 1 / Math.sqrt(D));
    const flash = clone(plain);
    assert.deepEqual(fuseAttention(flash, { flashForm: true }), { fused: 1, left: 0 });
    assert.equal(count(flash, 'Pad'), 0);
    assert.equal(flash.graph!.node.find((n) => n.opType === 'MultiHeadAttention')!.attribute.some((a) => a.name === 'scale'), false);
    // The padded q as MultiHeadAttention reads it: [B, S, H·(d + PAD_CHANNELS)], zeros after each head's d values.
    const probe = clone(fused);
    probe.graph!.output.push(create(ValueInfoProtoSchema, { name: mha.input[0]! }));
    const [a, b] = [await run(plain, feeds()), await run(probe, feeds())];
    const q = b[mha.input[0]!]!;
    assert.equal(q.length, 2 * 64 * HEADS * (D + PAD_CHANNELS));
    for (let i = 0; i < q.length; i++) if (i % (D + PAD_CHANNELS) >= D) assert.equal(q[i], 0, `q[${i}]`);
    const diff = maxAbsDiff(a['y']!, b['y']!);
    t.diagnostic(`cpu: fused (padded) vs plain ${diff.toExponential(2)}`);
    assert.ok(diff < 1e-6, `max abs diff ${diff}`);
  });

  for (const layout of ['folded', 'heads-axis', 'sdpa-export'] as const) {
    test(`${layout}: the fused graph on webgpu (lavapipe in the test setup) within 1e-5 of the plain graph on the cpu`, async (t) => {
      const plain = attentionModel({ layout });
      const fused = clone(plain);
      assert.deepEqual(fuseAttention(fused), { fused: 1, left: 0 });
      const cpu = await run(plain, feeds());
      const s = await ort.InferenceSession.create(toBinary(ModelProtoSchema, fused), { executionProviders: ['webgpu'], logSeverityLevel: 3 });
      try {
        const gpu = (await s.run(feeds()))['y']!.data as Float32Array;
        const diff = maxAbsDiff(cpu['y']!, gpu);
        t.diagnostic(`webgpu fused vs cpu plain: ${diff.toExponential(2)}`);
        assert.ok(diff < 1e-5, `max abs diff ${diff}`);
      } finally {
        await s.release();
      }
    });
  }
});

describe("torch's dynamo exporter's scaled-dot-product attention (written as its source writes it)", () => {
  for (const sizes of ['runtime', 'constant'] as const) {
    test(`${sizes} sizes: one MultiHeadAttention, ${sizes === 'runtime' ? 'the default scale, the Dropout and the shape arithmetic pruned' : 'the folded scale'}; y within 1e-6`, async (t) => {
      const plain = attentionModel({ layout: 'dynamo', sizes });
      const fused = clone(plain);
      assert.deepEqual(fuseAttention(fused), { fused: 1, left: 0 });
      assert.deepEqual(fused.graph!.node.map((n) => n.opType).filter((op) => op !== 'Constant'), ['MatMul', 'MatMul', 'MatMul', ...PADDING, 'MultiHeadAttention', 'MatMul', 'Add'],
        'only the projections and the attention are left');
      const mha = fused.graph!.node.find((n) => n.opType === 'MultiHeadAttention')!;
      assert.equal(Number(mha.attribute.find((a) => a.name === 'num_heads')!.i), HEADS);
      const scale = mha.attribute.find((a) => a.name === 'scale');
      if (sizes === 'runtime') assert.equal(scale!.f, 1 / Math.sqrt(D), 'the default 1 / sqrt(d), written out for the padded q and k');
      else assert.ok(Math.abs(scale!.f - 0.3) < 1e-6, `scale ${scale!.f}`);
      const diff = maxAbsDiff((await run(plain, FEEDS()))['y']!, (await run(fused, FEEDS()))['y']!);
      t.diagnostic(`max abs diff ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-6, `max abs diff ${diff}`);
      if (sizes === 'runtime') {
        const other = () => ({
          x: new ort.Tensor('float32', randoms(3 * 7 * WIDTH, 4), [3, 7, WIDTH]),
          context: new ort.Tensor('float32', randoms(3 * 4 * CONTEXT, 5), [3, 4, CONTEXT]),
        });
        const d = maxAbsDiff((await run(plain, other()))['y']!, (await run(fused, other()))['y']!);
        t.diagnostic(`batch 3, 7 queries, 4 keys: ${d.toExponential(2)}`);
        assert.ok(d < 1e-6, `batch 3, 7 queries, 4 keys: max abs diff ${d}`);
      }
    });
  }
  for (const v of [{ trainingDropout: true }, { sizes: 'constant', scrambledKeys: true }] as const) {
    test(`left written out when ${'trainingDropout' in v ? 'the Dropout is in training mode' : "kᵀ's first Reshape takes [-1, d, S] (not kᵀ, though it runs)"}`, async () => {
      const m = attentionModel({ layout: 'dynamo', ...v });
      await run(m, FEEDS()); // the plain graph runs
      const before = toBinary(ModelProtoSchema, m);
      assert.deepEqual(fuseAttention(m), { fused: 0, left: 1 });
      assert.deepEqual(toBinary(ModelProtoSchema, m), before, 'the model is unchanged');
    });
  }
});

/**
 * One ONNX Attention node (opset 23) between the projections, on heads as their own axis, as torch's dynamo exporter
 * writes scaled-dot-product attention at that opset. 'mask': an additive mask as its fourth input (FEEDS' 5 x 3); 'scores-read': its
 * fourth output (the scores) also a graph output; 'scale': a scale attribute of 0.3.
 */
function onnxAttentionModel(extra?: 'mask' | 'scores-read' | 'scale'): ModelProto {
  const { g, q, k, val } = projections('attn23');
  const heads = (t: string) => g.op('Transpose', [g.op('Reshape', [t, g.constInt64([0, -1, HEADS, D])])], { perm: [0, 2, 1, 3] });
  const inputs = [heads(q), heads(k), heads(val), ...(extra === 'mask' ? [g.constFloat(randoms(15, 9), [5, 3])] : [])];
  const [y, , , scores] = g.ops('Attention', inputs, extra === 'scale' ? { scale: { f: 0.3 } } : {}, { outputs: 4 });
  const merged = g.op('Reshape', [g.op('Transpose', [y!], { perm: [0, 2, 1, 3] }), g.constInt64([0, -1, WIDTH])]);
  g.floatOutput(linear(g, 'to_out', merged, WIDTH, WIDTH), 'y', ['batch', 'seq', WIDTH]);
  if (extra === 'scores-read') g.floatOutput(scores!, 'scores', ['b', 'h', 'seq', 'keys']);
  const model = g.build();
  model.opsetImport[0]!.version = 23n;
  model.irVersion = 10n;
  const node = model.graph!.node.find((n) => n.opType === 'Attention')!;
  if (extra !== 'scores-read') node.output = [node.output[0]!];
  return model;
}

describe('an ONNX Attention node (opset 23), which the WebGPU provider has no kernel for', () => {
  for (const extra of [undefined, 'scale'] as const) {
    test(`${extra ? 'with a scale attribute' : 'at its default scale'}: one MultiHeadAttention; y within 1e-6`, async (t) => {
      const plain = onnxAttentionModel(extra);
      const fused = clone(plain);
      assert.deepEqual(fuseAttention(fused), { fused: 1, left: 0 });
      assert.deepEqual(fused.graph!.node.map((n) => n.opType), ['MatMul', 'MatMul', 'MatMul', ...PADDING, 'MultiHeadAttention', 'MatMul', 'Add']);
      const mha = fused.graph!.node.find((n) => n.opType === 'MultiHeadAttention')!;
      assert.equal(Number(mha.attribute.find((a) => a.name === 'num_heads')!.i), HEADS);
      const scale = mha.attribute.find((a) => a.name === 'scale');
      if (extra === 'scale') assert.ok(Math.abs(scale!.f - 0.3) < 1e-7);
      else assert.equal(scale!.f, 1 / Math.sqrt(D), 'the default 1 / sqrt(d), written out for the padded q and k');
      const diff = maxAbsDiff((await run(plain, FEEDS()))['y']!, (await run(fused, FEEDS()))['y']!);
      t.diagnostic(`max abs diff ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-6, `max abs diff ${diff}`);
    });
  }
  for (const extra of ['mask', 'scores-read'] as const) {
    test(`left as it is with ${extra === 'mask' ? 'a mask input' : 'its scores output read'}`, async () => {
      const m = onnxAttentionModel(extra);
      await run(m, FEEDS()); // the plain graph runs
      const before = toBinary(ModelProtoSchema, m);
      assert.deepEqual(fuseAttention(m), { fused: 0, left: 1 });
      assert.deepEqual(toBinary(ModelProtoSchema, m), before, 'the model is unchanged');
    });
  }
});

describe('ONNX Attention nodes counted for the WebGPU warning (they run on the CPU there)', () => {
  test('the opset-23 fixture UNet has 8, the written-out one none; fused, none are left; the count is kept in a sidecar next to the UNet', async () => {
    const onnxDir = await tinyModel('onnx-attention');
    const unet = path.join(onnxDir, 'unet', 'model.onnx');
    const model = fromBinary(ModelProtoSchema, fs.readFileSync(unet));
    assert.equal(countOnnxAttention(model), 8);
    assert.equal(countOnnxAttention(fromBinary(ModelProtoSchema, fs.readFileSync(path.join(await tinyModel('standard'), 'unet', 'model.onnx')))), 0);
    const fused = clone(model);
    assert.deepEqual(fuseAttention(fused), { fused: 8, left: 0 });
    assert.equal(countOnnxAttention(fused), 0);
    assert.equal(await countOnnxAttentionIn(unet), 8);
    const side = JSON.parse(fs.readFileSync(path.join(onnxDir, 'unet', 'model.asgd-ops.json'), 'utf8'));
    assert.equal(side.result.onnxAttention, 8);
    assert.equal(await countOnnxAttentionIn(unet), 8, 'read back from the sidecar');
    assert.match(String((await countOnnxAttentionIn(path.join(onnxDir, 'nothing.onnx')) as { reason: string }).reason), /cannot be read/);
  });

  test("the browser's derived UNet graphs report what is left: the probe keeps all 8, the fusion leaves the probed layers' (the probe graph) or none", async () => {
    const bytes = fs.readFileSync(path.join(await tinyModel('onnx-attention'), 'unet', 'model.onnx'));
    const probe = derivedUnetBytes(bytes, { probe: true, fuse: false });
    assert.ok(!('reason' in probe), JSON.stringify(probe));
    assert.equal(probe.layers!.length, 2);
    assert.equal(probe.onnxAttention, 8);
    const fusedUnet = derivedUnetBytes(bytes, { probe: false, fuse: true });
    assert.ok(!('reason' in fusedUnet));
    assert.deepEqual([fusedUnet.fused, fusedUnet.onnxAttention], [8, 0]);
    const fusedProbe = derivedUnetBytes(bytes, { probe: true, fuse: true });
    assert.ok(!('reason' in fusedProbe));
    assert.deepEqual([fusedProbe.fused, fusedProbe.onnxAttention], [6, 2]);
  });

  test('the warning names the count and the fix', () => {
    assert.match(webgpuAttentionNote(1), /^The UNet has 1 ONNX Attention node \(opset 23.*run on the CPU.*--fuse-attention \(fuseAttention: true\) runs them as MultiHeadAttention on the GPU/);
    assert.match(webgpuAttentionNote(140), /^The UNet has 140 ONNX Attention nodes /);
  });
});

describe("a real export of diffusers' classic attention processor (torch's TorchScript exporter)", () => {
  // scripts/reference/attention_export.py: head_to_batch_dim, baddbmm(empty, q, kᵀ, beta=0, alpha=scale), softmax,
  // bmm, batch_to_head_dim with sizes read from the tensors, as SD exports made with torch 1.x hold them.
  let dir = '';
  before(() => {
    const py = torchPython();
    assert.ok(py, NO_TORCH_PYTHON);
    dir = fs.mkdtempSync(path.join(root, 'classic-'));
    const r = spawnSync(py, ['scripts/reference/attention_export.py', dir], { cwd: path.join(SHIPPED, '..', '..'), encoding: 'utf8' });
    assert.equal(r.status, 0, `attention_export.py failed:\n${r.stderr.slice(-3000)}`);
  });
  const raw = (name: string) => {
    const b = fs.readFileSync(path.join(dir, `${name}.f32`));
    return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  };

  test("fused into one MultiHeadAttention with the processor's heads and scale; y within 1e-5 of torch's own output, at other sizes within 1e-6 of the plain graph", async (t) => {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
    const plain = fromBinary(ModelProtoSchema, fs.readFileSync(path.join(dir, 'attention.onnx')));
    assert.equal(count(plain, 'ConstantOfShape'), 1, 'the export holds baddbmm\'s empty input');
    // At an up-block attn2's module path, its keys' input named as a UNet's: the attention-probe scan finds the layer.
    assert.deepEqual(probeLayersAsUnet(plain), ['/up_blocks.0/attentions.0/transformer_blocks.0/attn2']);
    const fused = clone(plain);
    assert.deepEqual(fuseAttention(fused), { fused: 1, left: 0 });
    assert.deepEqual(fused.graph!.node.map((n) => n.opType), ['MatMul', 'MatMul', 'MatMul', ...PADDING, 'MultiHeadAttention', 'MatMul', 'Add'],
      'only the projections and the attention are left');
    const mha = fused.graph!.node.find((n) => n.opType === 'MultiHeadAttention')!;
    assert.equal(Number(mha.attribute.find((a) => a.name === 'num_heads')!.i), meta.heads);
    assert.ok(Math.abs(mha.attribute.find((a) => a.name === 'scale')!.f - meta.scale) < 1e-7);
    const feeds = () => ({ x: new ort.Tensor('float32', raw('x'), meta.x), context: new ort.Tensor('float32', raw('context'), meta.context) });
    const torchY = raw('y');
    const dPlain = maxAbsDiff((await run(plain, feeds()))['y']!, torchY);
    const dFused = maxAbsDiff((await run(fused, feeds()))['y']!, torchY);
    t.diagnostic(`torch ${meta.torch}: plain graph vs torch ${dPlain.toExponential(2)}, fused vs torch ${dFused.toExponential(2)}`);
    assert.ok(dFused < 1e-5, `fused vs torch ${dFused}`);
    await fusedMatchesPlainAtOtherSizes(t, plain, fused, meta);
  });
});

const DYNAMO_EXPORTS = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'dynamo-attention');

/** The real exports in test/fixtures/dynamo-attention: each processor with dynamic sizes, and static (the traced sizes). */
type DynamoExport = 'classic' | 'sdpa' | 'classic-static' | 'sdpa-static';

/** One real export of test/fixtures/dynamo-attention: the model, its meta, and torch's inputs and output. */
function dynamoExport(processor: DynamoExport) {
  const dir = path.join(DYNAMO_EXPORTS, processor);
  const raw = (name: string) => {
    const b = fs.readFileSync(path.join(dir, `${name}.f32`));
    return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  };
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8'));
  const model = fromBinary(ModelProtoSchema, fs.readFileSync(path.join(dir, 'attention.onnx')));
  const feeds = () => ({ x: new ort.Tensor('float32', raw('x'), meta.x), context: new ort.Tensor('float32', raw('context'), meta.context) });
  return { meta, model, feeds, y: raw('y') };
}

/** The node of `m` producing `tensor`. */
const producerOf = (m: ModelProto, tensor: string) => m.graph!.node.find((n) => n.output.includes(tensor))!;

describe("real exports of one attention by torch's dynamo exporter (test/fixtures/dynamo-attention, torch 2.13)", () => {
  for (const processor of ['classic', 'sdpa', 'classic-static', 'sdpa-static'] as const) {
    const dynamic = !processor.endsWith('-static');
    test(`${processor}: fused into one MultiHeadAttention with torch's heads and scale; y within 1e-5 of torch's and of the plain graph's${dynamic ? ', at other sizes within 1e-6 of the plain graph' : ''}`, async (t) => {
      const { meta, model: plain, feeds, y: torchY } = dynamoExport(processor);
      assert.equal(meta.exporter, 'dynamo');
      assert.equal(meta.processor, processor.replace('-static', ''));
      assert.equal(meta.dynamic, dynamic, dynamic ? 'exported with dynamic batch and lengths' : 'exported at the traced sizes');
      assert.equal(count(plain, 'Softmax'), 1);
      if (processor === 'classic') assert.equal(count(plain, 'Expand'), 1, "the export holds baddbmm's empty input as an Expand");
      if (processor === 'classic-static') assert.equal(count(plain, 'Expand') + count(plain, 'Shape'), 0, "baddbmm's zeros are a constant");
      // The probe scan finds the layer from the exporter's node metadata (the keys' input named as a UNet's).
      assert.deepEqual(probeLayersAsUnet(plain), ['/up_blocks.0/attentions.0/transformer_blocks.0/attn2']);
      const fused = clone(plain);
      assert.deepEqual(fuseAttention(fused), { fused: 1, left: 0 });
      assert.deepEqual(fused.graph!.node.map((n) => n.opType), ['MatMul', 'MatMul', 'MatMul', ...PADDING, 'MultiHeadAttention', 'MatMul', 'Add'],
        'only the projections, the padding of q and k and the attention are left');
      const mha = fused.graph!.node.find((n) => n.opType === 'MultiHeadAttention')!;
      assert.equal(mha.domain, MS_DOMAIN);
      assert.equal(Number(mha.attribute.find((a) => a.name === 'num_heads')!.i), meta.heads);
      const scale = mha.attribute.find((a) => a.name === 'scale')!.f;
      assert.ok(Math.abs(scale - meta.scale) < 1e-7, `scale ${scale}, torch's ${meta.scale}`);
      const [yPlain, yFused] = [(await run(plain, feeds()))['y']!, (await run(fused, feeds()))['y']!];
      const [dPlain, dFused, dBoth] = [maxAbsDiff(yPlain, torchY), maxAbsDiff(yFused, torchY), maxAbsDiff(yFused, yPlain)];
      t.diagnostic(`torch ${meta.torch}: plain vs torch ${dPlain.toExponential(2)}, fused vs torch ${dFused.toExponential(2)}, fused vs plain ${dBoth.toExponential(2)}`);
      assert.ok(dFused < 1e-5, `fused vs torch ${dFused}`);
      assert.ok(dBoth < 1e-5, `fused vs plain ${dBoth}`);
      if (dynamic) await fusedMatchesPlainAtOtherSizes(t, plain, fused, meta);
    });
  }

  /** The initializer `name` of `m`, its int64 values replaced by `values`. */
  const setInts = (m: ModelProto, name: string, values: number[]) => {
    const init = m.graph!.initializer.find((i) => i.name === name)!;
    assert.equal(init.dataType, 7);
    init.rawData = new Uint8Array(new BigInt64Array(values.map(BigInt)).buffer);
    init.int64Data = [];
  };
  /** The Reshape making kᵀ's [-1, S, d] (the one under the Transpose 0 2 1). */
  const keysSqueeze = (m: ModelProto) => m.graph!.node.find((n) => n.opType === 'Reshape' &&
    m.graph!.node.some((t) => t.opType === 'Transpose' && t.input[0] === n.output[0] && t.attribute.find((a) => a.name === 'perm')!.ints.join() === '0,2,1'))!;

  // Each edit leaves a graph that is not that attention (or whose added term is not zeros), or one the checks cannot
  // prove to be it: left as it is.
  const edits: [string, DynamoExport, (m: ModelProto) => void][] = [
    ["baddbmm's empty filled with ones (beta 1: the added term is not zeros)", 'classic', (m) => {
      const add = m.graph!.node.find((n) => n.opType === 'Add' && n.output[0] === 'baddbmm')!;
      const fill = producerOf(m, producerOf(m, add.input[1]!).input[0]!).input[0]!; // Add ← Mul(Expand(c, shape), c)
      const one = m.graph!.initializer.find((i) => i.name === fill)!;
      one.rawData = new Uint8Array(new Float32Array([1]).buffer);
      one.floatData = [];
    }],
    ["the zeros' shape with the queries' length for the keys'", 'classic', (m) => {
      const expand = m.graph!.node.find((n) => n.opType === 'Expand')!;
      const shape = producerOf(m, expand.input[1]!);
      shape.input[2] = shape.input[1]!;
    }],
    ['the Softmax over the queries', 'sdpa', (m) => {
      const softmax = m.graph!.node.find((n) => n.opType === 'Softmax')!;
      softmax.attribute.find((a) => a.name === 'axis')!.i = 2n;
    }],
    ["kᵀ's sizes sliced from Shape(k, start=1), not k's whole shape", 'sdpa', (m) => {
      const shape = m.graph!.node.find((n) => n.opType === 'Shape' && n.attribute.some((a) => a.name === 'start') && !n.attribute.some((a) => a.name === 'end'))!;
      shape.attribute.find((a) => a.name === 'start')!.i = 1n;
    }],
    ["kᵀ's second Reshape back to [B, H, S, d] (k, not kᵀ)", 'sdpa', (m) => {
      const outer = m.graph!.node.filter((n) => n.opType === 'Reshape' && producerOf(m, n.input[0]!)?.opType === 'Transpose' &&
        producerOf(m, n.input[0]!).attribute.find((a) => a.name === 'perm')!.ints.join() === '0,2,1')[0]!;
      const target = producerOf(m, outer.input[1]!);
      target.input = [target.input[0]!, target.input[2]!, target.input[1]!];
    }],
    ["baddbmm's folded zeros with one element 1e-3 (the added term is not zeros)", 'classic-static', (m) => {
      const add = m.graph!.node.find((n) => n.opType === 'Add' && n.output[0] === 'baddbmm')!;
      const zeros = m.graph!.initializer.find((i) => i.name === add.input[1])!;
      assert.equal(zeros.dims.length, 3);
      const values = new Float32Array(zeros.dims.reduce((n, d) => n * Number(d), 1));
      values[5] = 1e-3;
      zeros.rawData = new Uint8Array(values.buffer);
      zeros.floatData = [];
    }],
    ["kᵀ's first Reshape takes [-1, d, S] (not kᵀ, though it runs)", 'sdpa-static', (m) => {
      const target = keysSqueeze(m).input[1]!;
      assert.equal(m.graph!.initializer.find((i) => i.name === target)!.dims.length, 1);
      setInts(m, target, [-1, 8, 7]);
    }],
    ["kᵀ's outer Reshape infers the batch (-1): the keys' length is not pinned", 'sdpa-static', (m) => {
      const outer = m.graph!.node.find((n) => n.opType === 'Reshape' && n.input[0] === m.graph!.node.find((t) => t.opType === 'Transpose' && t.input[0] === keysSqueeze(m).output[0])!.output[0])!;
      setInts(m, outer.input[1]!, [-1, 5, 8, 7]);
    }],
  ];
  for (const [what, processor, edit] of edits) {
    test(`${processor}: left written out when ${what}`, () => {
      const m = dynamoExport(processor).model;
      const before = toBinary(ModelProtoSchema, m);
      edit(m);
      assert.notDeepEqual(toBinary(ModelProtoSchema, m), before, 'the edit changed the graph');
      const edited = toBinary(ModelProtoSchema, m);
      assert.deepEqual(fuseAttention(m), { fused: 0, left: 1 });
      assert.deepEqual(toBinary(ModelProtoSchema, m), edited, 'the model is unchanged');
    });
  }
});

describe('the fusion on whole UNets', () => {
  test('the fixture UNet (heads axis) and the shipped UNet (folded): every attention fused, out_sample within 1e-5', async (t) => {
    const dir = path.join(root, 'tiny');
    await writeTinySdModel(dir);
    for (const [label, file, lat, textDim] of [['fixture', path.join(dir, 'unet', 'model.onnx'), 8, 0], ['shipped', path.join(SHIPPED, 'unet', 'model.onnx'), 16, 64]] as const) {
      const plain = fromBinary(ModelProtoSchema, fs.readFileSync(file));
      const softmaxes = count(plain, 'Softmax');
      const fused = clone(plain);
      assert.deepEqual(fuseAttention(fused), { fused: softmaxes, left: 0 }, label);
      assert.ok(softmaxes >= 2, `${label}: ${softmaxes} attention layers`);
      const feeds = () => unetFeeds(plain, lat, textDim || undefined);
      const [a, b] = [await run(plain, feeds()), await run(fused, feeds())];
      const diff = maxAbsDiff(a['out_sample']!, b['out_sample']!);
      t.diagnostic(`${label}: ${softmaxes} layers fused, out_sample max abs diff ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-5, `${label}: max abs diff ${diff}`);
    }
  });

  test("the attention-probe graph: every attention fused, the probed layers' scores kept for the maps; outputs within 1e-5 of the unfused probe, out_sample the fused UNet's bit for bit", async (t) => {
    const dir = path.join(root, 'shipped-copy');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(SHIPPED, 'unet', 'model.onnx'), path.join(dir, 'model.onnx'));
    const probe = await prepareAttentionProbe(path.join(dir, 'model.onnx'));
    assert.ok('file' in probe);
    const fused = await prepareFusedAttention(probe.file, { weightsFolder: probeLoadOptions(probe.file).externalDataFolder });
    assert.ok('file' in fused, JSON.stringify(fused));
    const total = count(fromBinary(ModelProtoSchema, fs.readFileSync(path.join(dir, 'model.onnx'))), 'Softmax');
    assert.equal(fused.fused, total);
    const m = fromBinary(ModelProtoSchema, fs.readFileSync(fused.file));
    assert.equal(count(m, 'Softmax'), probe.layers.length, 'the probed layers keep their Softmax for the maps');
    assert.equal(count(m, 'MultiHeadAttention'), total);
    const outputs = async (file: string, load: { externalDataFolder?: string }) => {
      const s = await openSession(file, 'probe', CPU, load);
      try {
        const r = await s.session.run({
          sample: new ort.Tensor('float32', randoms(2 * 4 * 16 * 16, 5), [2, 4, 16, 16]),
          timestep: new ort.Tensor('int64', new BigInt64Array([301n, 301n]), [2]),
          encoder_hidden_states: new ort.Tensor('float32', randoms(2 * 77 * 64, 6), [2, 77, 64]),
          [MASK_WEIGHTS_INPUT]: new ort.Tensor('float32', randoms(77, 9), [77, 1]),
        });
        return Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.data as Float32Array]));
      } finally {
        await releaseSession(s);
      }
    };
    const [a, b] = [await outputs(probe.file, probeLoadOptions(probe.file)), await outputs(fused.file, fusedLoadOptions(fused.file))];
    assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort());
    for (const k of Object.keys(a)) {
      const diff = maxAbsDiff(a[k]!, b[k]!);
      t.diagnostic(`${k}: ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-5, `${k}: max abs diff ${diff}`);
    }
    // The fused UNet's own noise prediction on the same feeds (the mask weights are the probe's input alone): the
    // same bits, so one session serves both (pipeline.ts, probeServesUnet).
    const unet = await prepareFusedAttention(path.join(dir, 'model.onnx'));
    assert.ok('file' in unet);
    const s = await openSession(unet.file, 'unet', CPU, fusedLoadOptions(unet.file));
    try {
      const r = await s.session.run({
        sample: new ort.Tensor('float32', randoms(2 * 4 * 16 * 16, 5), [2, 4, 16, 16]),
        timestep: new ort.Tensor('int64', new BigInt64Array([301n, 301n]), [2]),
        encoder_hidden_states: new ort.Tensor('float32', randoms(2 * 77 * 64, 6), [2, 77, 64]),
      });
      const plain = r['out_sample']!.data as Float32Array;
      assert.ok(plain.every((v, i) => Object.is(v, b['out_sample']![i])), 'out_sample: the fused UNet\'s bits');
    } finally {
      await releaseSession(s);
    }
  });
});

describe("SD3's joint attention (diffusers' JointAttnProcessor2_0: the image's heads and the text's concatenated on the sequence axis)", () => {
  /** The transformer's inputs at a 16 x 12 latent, 77 + 20 text tokens, batch 2. */
  const feeds = () => ({
    hidden_states: new ort.Tensor('float32', randoms(2 * 16 * 16 * 12, 21), [2, 16, 16, 12]),
    timestep: new ort.Tensor('float32', new Float32Array([700, 300]), [2]),
    encoder_hidden_states: new ort.Tensor('float32', randoms(2 * 97 * TINY_SD3_TEXT.t5, 22), [2, 97, TINY_SD3_TEXT.t5]),
    pooled_projections: new ort.Tensor('float32', randoms(2 * (TINY_SD3_TEXT.clipL + TINY_SD3_TEXT.clipG), 23), [2, TINY_SD3_TEXT.clipL + TINY_SD3_TEXT.clipG]),
  });
  const transformer = (variant: Sd3VariantName) => fromBinary(ModelProtoSchema, buildTinySd3Files({ variant }).get('transformer/model.onnx') as Uint8Array);

  for (const [variant, what] of [['sd3', 'SD3'], ['sd3.5', "SD3.5 (q and k RMS-normalised per head after the split)"], ['sd3.5-medium', "SD3.5 medium (and its image-only second attention)"]] as const) {
    test(`${what}: every attention one MultiHeadAttention on the flattened joined heads; out_hidden_states within 1e-5, in both forms`, async (t) => {
      const plain = transformer(variant);
      const softmaxes = count(plain, 'Softmax');
      for (const flashForm of [false, true]) {
        const fused = clone(plain);
        assert.deepEqual(fuseAttention(fused, { flashForm }), { fused: softmaxes, left: 0 });
        assert.equal(count(fused, 'MultiHeadAttention'), softmaxes);
        const diff = maxAbsDiff((await run(plain, feeds()))['out_hidden_states']!, (await run(fused, feeds()))['out_hidden_states']!);
        t.diagnostic(`${variant}${flashForm ? ' (flash form)' : ''}: ${softmaxes} attentions fused, out_hidden_states max abs diff ${diff.toExponential(2)}`);
        assert.ok(diff < 1e-5, `${variant}: max abs diff ${diff}`);
      }
    });
  }

  test('left written out where a joined part is not heads of the same count, or a norm reads across the heads', () => {
    // The text's q split into 1 head of 2·d instead of 2 of d: the parts disagree, nothing is fused.
    const wrongHeads = transformer('sd3');
    const splits = wrongHeads.graph!.node.filter((n) => n.opType === 'Reshape' && /add_q_proj/.test(n.input[0] ?? '') );
    assert.ok(splits.length > 0, 'the fixture splits the text q from add_q_proj');
    for (const r of splits) {
      const target = wrongHeads.graph!.initializer.find((i) => i.name === r.input[1]) ?? wrongHeads.graph!.node.find((n) => n.output[0] === r.input[1])?.attribute[0]?.t;
      assert.ok(target, 'a constant target');
      const dims = new BigInt64Array(new Uint8Array(target.rawData).slice().buffer);
      assert.equal(dims.length, 4);
      dims[2] = 1n;
      dims[3] = -1n;
      target.rawData = new Uint8Array(dims.buffer);
    }
    const r1 = fuseAttention(wrongHeads);
    assert.ok('fused' in r1 && r1.fused === 0, JSON.stringify(r1));
    // SD3.5's q norm reducing over the heads' axis (axis 1) instead of each head's channels: not a per-head norm.
    const acrossHeads = transformer('sd3.5');
    let changed = 0;
    for (const n of acrossHeads.graph!.node) {
      if (n.opType !== 'ReduceMean' || !/norm_q/.test(n.name)) continue;
      const axes = n.attribute.find((a) => a.name === 'axes')!;
      axes.ints = [1n];
      changed++;
    }
    assert.ok(changed > 0, 'the fixture writes its q norms with ReduceMean');
    const r2 = fuseAttention(acrossHeads);
    assert.ok('fused' in r2 && r2.fused < count(acrossHeads, 'Softmax'), `the attentions with the changed norm stay written out: ${JSON.stringify(r2)}`);
  });

  test('the pipeline with fuseAttention on the SD3 fixture: the transformer and its joint-attention probe fused; the asg image within 1 level of the unfused one, the mask from the fused probe', async (t) => {
    const dir = path.join(root, 'tiny-sd3-fuse');
    await writeTinySd3Model(dir, { variant: 'sd3' });
    const params = { prompt: 'a red circle on a blue background', width: 256, height: 256, steps: 3, seed: 4, method: 'asg' as const };
    const images = [];
    for (const fuse of [false, true]) {
      const p = await loadPipeline(dir, { devices: 'cpu', threads: 1, fuseAttention: fuse });
      try {
        if (fuse) assert.deepEqual([p.info.attentionFusion.applied, p.info.attentionFusion.layers], [true, 2], JSON.stringify(p.info.attentionFusion));
        const r = await p.generate(params);
        assert.deepEqual(r.warnings, [], 'no mask fallback, nothing unfused');
        images.push(r.image);
      } finally {
        await p.close();
      }
    }
    const diff = maxAbsDiff(images[0]!.data, images[1]!.data);
    t.diagnostic(`SD3 asg 256 px, fused vs written out: max ${diff} levels`);
    assert.ok(diff <= 1, `max ${diff} levels`);
  });
});

describe('fused files and the pipeline', () => {
  test('stored next to the UNet and reused; in the cache they refer to the weights in the UNet folder, same outputs', async () => {
    const dir = path.join(root, 'store');
    fs.mkdirSync(dir);
    const unet = path.join(dir, 'model.onnx');
    fs.copyFileSync(path.join(SHIPPED, 'unet', 'model.onnx'), unet);
    const first = await prepareFusedAttention(unet);
    assert.ok('file' in first);
    assert.equal(first.file, path.join(dir, 'model.asgd-fused.onnx'));
    assert.equal(first.externalDataFolder, undefined);
    assert.ok(fs.statSync(first.file).size < fs.statSync(unet).size / 10, 'the weights are referenced, not copied');
    const mtime = fs.statSync(first.file).mtimeMs;
    assert.deepEqual(await prepareFusedAttention(unet), first);
    assert.equal(fs.statSync(first.file).mtimeMs, mtime, 'reused, not written again');
    const cached = await prepareFusedAttention(unet, { placement: 'cache', cacheDir: path.join(root, 'cache') });
    assert.ok('file' in cached);
    assert.ok(cached.file.startsWith(path.join(root, 'cache', 'fused-attention')));
    assert.equal(cached.externalDataFolder, dir);
    assert.deepEqual(fusedLoadOptions(cached.file), { externalDataFolder: dir });
    const outOf = async (file: string) => {
      const s = await openSession(file, 'unet', CPU, fusedLoadOptions(file));
      try {
        const r = await s.session.run({
          sample: new ort.Tensor('float32', randoms(4 * 16 * 16, 7), [1, 4, 16, 16]),
          timestep: new ort.Tensor('int64', new BigInt64Array([11n]), [1]),
          encoder_hidden_states: new ort.Tensor('float32', randoms(77 * 64, 8), [1, 77, 64]),
        });
        return r['out_sample']!.data as Float32Array;
      } finally {
        await releaseSession(s);
      }
    };
    assert.deepEqual(await outOf(cached.file), await outOf(first.file));
  });

  test('a UNet with fused attention already gets a reason, and the pipeline runs it as it is', async () => {
    const dir = path.join(root, 'mha');
    await writeTinySdModel(dir, { variant: 'fused-attention' });
    const r = await prepareFusedAttention(path.join(dir, 'unet', 'model.onnx'));
    // Not "no attention written out": the export's own MultiHeadAttention nodes are named.
    assert.ok('reason' in r && /^the export runs its attention fused already \(\d+ MultiHeadAttention nodes?\)$/.test(r.reason), JSON.stringify(r));
    const p = await loadPipeline(dir, { fuseAttention: true, threads: 1 });
    try {
      assert.deepEqual(p.info.attentionFusion, { applied: false, layers: 0, reason: r.reason });
      const g = await p.generate({ prompt: 'a red circle', steps: 1, seed: 1, width: 64, height: 64 });
      assert.ok(g.warnings.includes(`fuseAttention (--fuse-attention) changes nothing for this model: ${r.reason}`), g.warnings.join('; '));
    } finally {
      await p.close();
    }
  });

  test('pipeline: off by default; fuseAttention true fuses the UNet and the probe and generates within 1 level of it', async (t) => {
    const params = { prompt: 'a red circle on a blue background', seed: 2, steps: 3, width: 256, height: 256, method: 'asg' as const };
    const images: Uint8Array[] = [];
    for (const fuseAttention of [undefined, true]) {
      const p = await loadPipeline(SHIPPED, { ...(fuseAttention ? { fuseAttention } : {}), threads: 1 });
      try {
        if (!fuseAttention) assert.deepEqual(p.info.attentionFusion, { applied: false, layers: 0, reason: 'fuseAttention is off; --fuse-attention turns it on' });
        else assert.deepEqual(p.info.attentionFusion, { applied: true, layers: 14, form: 'padded', formReason: 'no WebGPU device (the form of every other provider)' });
        const r = await p.generate(params);
        assert.deepEqual(r.warnings.filter((w) => !/Using the euler scheduler/.test(w)), [], 'the mask came from the (fused) probe');
        images.push(r.image.data);
      } finally {
        await p.close();
      }
    }
    const diff = maxAbsDiff(images[0]!, images[1]!);
    t.diagnostic(`asg 256 px, plain vs fused attention on cpu: ${diff} levels`);
    assert.ok(diff <= 1, `image max diff ${diff} levels`);
  });

  test('asgd info says the attention runs as exported, and why', () => {
    const bin = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'asgd.js');
    const r = spawnSync(process.execPath, [bin, 'info', SHIPPED, '--no-probe'], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /Attention: +as exported \(fuseAttention is off; --fuse-attention turns it on\)\n/);
  });
});
