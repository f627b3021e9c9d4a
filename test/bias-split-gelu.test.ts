/**
 * src/graph/bias-split-gelu.ts: a GEGLU (bias Add, halves, GELU of the second, Mul) as one BiasSplitGelu node. ONNX
 * Runtime has a kernel for it on WebGPU only, so the graphs before and after are run on WebGPU (lavapipe here): on
 * hand-built GEGLUs in the forms exporters write, the cases the rewrite must leave alone, and whole UNets; and the
 * pipeline fuses it only where every device is a WebGPU one.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import ort from 'onnxruntime-node';
import { fuseBiasSplitGelu } from '../src/graph/bias-split-gelu.ts';
import { fromFloat16Bits, toFloat16Bits } from '../src/core/float16.ts';
import { isFusedAttentionFile, prepareFusedAttention } from '../src/node/fused-attention.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { writeTinySdModel } from './fixtures/index.ts';
import { gelu, layerNorm, linear } from './fixtures/layers.ts';
import { GraphBuilder, MS_DOMAIN } from './fixtures/onnx-graph.ts';
import { assertLeftAlone, cloneModel as clone, countOps as count, maxAbsDiff, randoms, runGraph as run, unetFeeds } from './fixtures/graph-run.ts';

const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');
const C = 8;
const FF = 12;

let root: string;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-geglu-'));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

/** How the halves are cut and how GELU is written. */
interface Geglu {
  /** 'chunk': Slices whose bounds are computed from Shape(A) (torch's TorchScript export of `chunk`, opset 17);
   * 'slices': Slices with constant bounds, the second ending at INT64_MAX; 'split': a Split in two. */
  halves: 'chunk' | 'slices' | 'split';
  /** 'erf': the Erf form of opset 17 exports; 'erf-reordered': the same written 0.5 * x first; 'ms': com.microsoft
   * Gelu; 'tanh': the tanh approximation (not what BiasSplitGelu computes). */
  gelu?: 'erf' | 'erf-reordered' | 'ms' | 'tanh';
  /** Which half is gated: the second (GEGLU) unless 'swapped' (second * gelu(first)). */
  swapped?: boolean;
  /** The first Slice ends one past the half. */
  offByOne?: boolean;
  /** The bias is broadcast (length 1) instead of 2F. */
  scalarBias?: boolean;
  /** F (12 unless set): 2F must be a multiple of 8 for ONNX Runtime 1.30's WebGPU kernel. */
  width?: number;
}

function geluOf(g: GraphBuilder, x: string, form: NonNullable<Geglu['gelu']>): string {
  const c = (v: number) => g.constFloat([v], []);
  if (form === 'erf') return gelu(g, x);
  if (form === 'ms') return g.op('Gelu', [x], {}, { domain: MS_DOMAIN });
  if (form === 'erf-reordered') {
    const erf = g.op('Erf', [g.op('Mul', [x, c(Math.SQRT1_2)])]);
    return g.op('Mul', [g.op('Mul', [c(0.5), x]), g.op('Add', [c(1), erf])]);
  }
  const inner = g.op('Mul', [c(Math.sqrt(2 / Math.PI)), g.op('Add', [x, g.op('Mul', [c(0.044715), g.op('Mul', [x, g.op('Mul', [x, x])])])])]);
  return g.op('Mul', [g.op('Mul', [c(0.5), x]), g.op('Add', [c(1), g.op('Tanh', [inner])])]);
}

/** h -> norm -> GEGLU -> linear -> y: the feed-forward of a transformer block. */
function feedForward(v: Geglu): ModelProto {
  const F = v.width ?? FF;
  const g = new GraphBuilder({ name: 'ff', modelKey: 'geglu', seed: 9, floatType: 'float32' });
  const h = g.floatInput('h', ['batch', 'seq', C]);
  const n = layerNorm(g, 'norm3', h, C);
  const a = g.scope('proj', () => {
    const w = g.param('weight', [C, 2 * F], { std: 0.5 });
    const bias = g.param('bias', [v.scalarBias ? 1 : 2 * F], { std: 0.5 });
    return g.op('Add', [g.op('MatMul', [n, w]), bias]);
  });
  const axes = g.constInt64([-1]);
  let halves: string[];
  if (v.halves === 'split') halves = g.ops('Split', [a, g.constInt64([F, F])], { axis: -1 }, { outputs: 2 });
  else if (v.halves === 'slices') {
    halves = [g.op('Slice', [a, g.constInt64([0]), g.constInt64([F + (v.offByOne ? 1 : 0)]), axes]), g.op('Slice', [a, g.constInt64([F]), g.constInt64([2 ** 62]), axes])];
  } else {
    const last = g.op('Gather', [g.op('Shape', [a]), g.constInt64([-1])], { axis: 0 });
    const half = g.op('Div', [g.op('Add', [last, g.constInt64([1])]), g.constInt64([2])]);
    const end = v.offByOne ? g.op('Add', [half, g.constInt64([1])]) : g.op('Mul', [half, g.constInt64([1])]);
    halves = [g.op('Slice', [a, g.constInt64([0]), end, axes]), g.op('Slice', [a, g.op('Mul', [half, g.constInt64([1])]), g.op('Mul', [half, g.constInt64([2])]), axes])];
  }
  const [value, gate] = v.swapped ? [halves[1]!, halves[0]!] : [halves[0]!, halves[1]!];
  const y = linear(g, 'net.2', g.op('Mul', [value, geluOf(g, gate, v.gelu ?? 'erf')]), v.offByOne ? F + 1 : F, C);
  g.floatOutput(g.op('Add', [y, h]), 'y', ['batch', 'seq', C]);
  return g.build();
}

const feeds = () => ({ h: new ort.Tensor('float32', randoms(2 * 5 * C, 7), [2, 5, C]) });

/** The same graph computing in float16 throughout (initializers, input and output), as a float16 export does. */
function inFloat16(m: ModelProto): ModelProto {
  const out = clone(m);
  for (const t of out.graph!.initializer) {
    if (t.dataType !== 1) continue;
    const f = new Float32Array(t.rawData.slice().buffer);
    t.rawData = new Uint8Array(Uint16Array.from(f, toFloat16Bits).buffer);
    t.dataType = 10;
  }
  for (const v of [...out.graph!.input, ...out.graph!.output]) {
    if (v.type?.value.case === 'tensorType' && v.type.value.value.elemType === 1) v.type.value.value.elemType = 10;
  }
  return out;
}

describe('one GEGLU', () => {
  for (const v of [
    { halves: 'chunk' }, { halves: 'slices' }, { halves: 'split' }, { halves: 'chunk', gelu: 'erf-reordered' }, { halves: 'split', gelu: 'ms' },
  ] as Geglu[]) {
    test(`${v.halves} halves, ${v.gelu ?? 'erf'} GELU: one BiasSplitGelu on the MatMul's output and the bias; y within 1e-5 on WebGPU`, async (t) => {
      const plain = feedForward(v);
      const fused = clone(plain);
      assert.equal(fuseBiasSplitGelu(fused), 1);
      const node = fused.graph!.node.find((n) => n.opType === 'BiasSplitGelu')!;
      assert.equal(node.domain, 'com.microsoft');
      assert.deepEqual(node.input, [plain.graph!.node.find((n) => n.opType === 'MatMul')!.output[0], 'proj.bias']);
      for (const op of ['Slice', 'Split', 'Erf', 'Gelu', 'Shape', 'Gather']) assert.equal(count(fused, op), 0, `no ${op} left`);
      assert.deepEqual(fused.graph!.node.map((n) => n.opType), ['LayerNormalization', 'MatMul', 'BiasSplitGelu', 'MatMul', 'Add', 'Add']);
      assert.ok(fused.opsetImport.some((o) => o.domain === 'com.microsoft'));
      const diff = maxAbsDiff((await run(plain, feeds(), 'webgpu'))['y']!, (await run(fused, feeds(), 'webgpu'))['y']!);
      t.diagnostic(`webgpu: max abs diff ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-5, String(diff));
    });
  }

  test('float16: Cast to float32, BiasSplitGelu, Cast back (1.30\'s float16 kernel fails); y within float16 rounding of float32 on WebGPU', async (t) => {
    const plain32 = feedForward({ halves: 'chunk' });
    const plain = inFloat16(plain32);
    const fused = clone(plain);
    assert.equal(fuseBiasSplitGelu(fused), 1);
    assert.deepEqual(fused.graph!.node.map((n) => n.opType), ['LayerNormalization', 'MatMul', 'Cast', 'Cast', 'BiasSplitGelu', 'Cast', 'MatMul', 'Add', 'Add']);
    const casts = fused.graph!.node.filter((n) => n.opType === 'Cast').map((n) => Number(n.attribute[0]!.i));
    assert.deepEqual(casts, [1, 1, 10], 'input and bias to float32, the result back to float16');
    const h = randoms(2 * 5 * C, 7);
    const half = { h: new ort.Tensor('float16', Uint16Array.from(h, toFloat16Bits), [2, 5, C]) };
    const asFloat = (x: ArrayLike<number>) => Float32Array.from(x as Uint16Array, fromFloat16Bits);
    const reference = (await run(plain32, { h: new ort.Tensor('float32', Float32Array.from(half.h.data as Uint16Array, fromFloat16Bits), [2, 5, C]) }))['y']!;
    const [plainY, fusedY] = [asFloat((await run(plain, half, 'webgpu'))['y']!), asFloat((await run(fused, half, 'webgpu'))['y']!)];
    const [plainErr, fusedErr] = [maxAbsDiff(plainY, reference), maxAbsDiff(fusedY, reference)];
    t.diagnostic(`float16 on webgpu against float32 on the cpu: written out ${plainErr.toExponential(2)}, fused ${fusedErr.toExponential(2)} (|y| up to ${Math.max(...reference.map(Math.abs)).toFixed(2)})`);
    // float16 keeps 11 bits: a few roundings of |y| (measured: 1.1e-2 either way, |y| up to 4.4); a wrong half or GELU
    // is off by the size of y.
    const tolerance = 4e-3 * Math.max(...reference.map(Math.abs));
    assert.ok(fusedErr < tolerance && plainErr < tolerance, `fused ${fusedErr}, written out ${plainErr}, tolerance ${tolerance}`);
  });

  test('ONNX Runtime\'s CPU provider has no kernel for it (why only graphs for WebGPU devices get it)', async () => {
    const fused = feedForward({ halves: 'split' });
    assert.equal(fuseBiasSplitGelu(fused), 1);
    await assert.rejects(run(fused, feeds(), 'cpu'), /BiasSplitGelu/);
  });

  test('left alone: the tanh approximation, the halves swapped, a cut one past the half, a broadcast bias, 2F not a multiple of 8', () => {
    for (const v of [
      { halves: 'chunk', gelu: 'tanh' }, { halves: 'split', swapped: true }, { halves: 'chunk', swapped: true },
      { halves: 'slices', offByOne: true }, { halves: 'chunk', offByOne: true }, { halves: 'split', scalarBias: true },
      { halves: 'split', width: 6 },
    ] as Geglu[]) {
      assertLeftAlone(feedForward(v), fuseBiasSplitGelu, JSON.stringify(v));
    }
  });
});

describe('whole UNets', () => {
  test('the fixture UNet (Split) and the shipped one (torch\'s chunk): every GEGLU fused; out_sample within 1e-4 on WebGPU', async (t) => {
    const dir = path.join(root, 'tiny');
    await writeTinySdModel(dir);
    for (const [label, file, lat, blocks] of [['fixture', path.join(dir, 'unet', 'model.onnx'), 8, 4], ['shipped', path.join(SHIPPED, 'unet', 'model.onnx'), 16, 7]] as const) {
      const plain = fromBinary(ModelProtoSchema, fs.readFileSync(file));
      assert.equal(count(plain, 'Erf'), blocks, `${label}: one GELU per transformer block`);
      const fused = clone(plain);
      assert.equal(fuseBiasSplitGelu(fused), blocks, label);
      assert.equal(count(fused, 'BiasSplitGelu'), blocks);
      assert.equal(count(fused, 'Erf'), 0);
      t.diagnostic(`${label}: ${plain.graph!.node.length} nodes, ${fused.graph!.node.length} with the GEGLUs fused`);
      const inputs = () => unetFeeds(plain, lat);
      const diff = maxAbsDiff((await run(plain, inputs(), 'webgpu'))['out_sample']!, (await run(fused, inputs(), 'webgpu'))['out_sample']!);
      t.diagnostic(`${label}: out_sample max abs diff ${diff.toExponential(2)} on WebGPU`);
      assert.ok(diff < 1e-4, `${label}: ${diff}`);
    }
  });

  test('the pipeline: the stored WebGPU-only graph has them, in a file of its own; a device list with a CPU worker does not get it', async () => {
    const dir = path.join(root, 'shipped-copy');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(SHIPPED, 'unet', 'model.onnx'), path.join(dir, 'model.onnx'));
    const plainFused = await prepareFusedAttention(path.join(dir, 'model.onnx'), { flashForm: true });
    const gpuOnly = await prepareFusedAttention(path.join(dir, 'model.onnx'), { flashForm: true, biasSplitGelu: true });
    assert.ok('file' in plainFused && 'file' in gpuOnly);
    assert.equal(plainFused.biasSplitGelus, 0);
    assert.equal(gpuOnly.biasSplitGelus, 7);
    assert.ok(gpuOnly.file.endsWith('model.asgd-fused-flash-webgpu.onnx'), gpuOnly.file);
    assert.ok(isFusedAttentionFile(gpuOnly.file));
    assert.equal(count(fromBinary(ModelProtoSchema, fs.readFileSync(gpuOnly.file)), 'BiasSplitGelu'), 7);
    assert.equal(count(fromBinary(ModelProtoSchema, fs.readFileSync(plainFused.file)), 'BiasSplitGelu'), 0);
    const again = await prepareFusedAttention(path.join(dir, 'model.onnx'), { flashForm: true, biasSplitGelu: true });
    assert.ok('file' in again && again.biasSplitGelus === 7, 'read back from its sidecar');
    // cpu with webgpu: the CPU worker could not open it, so the pipeline keeps the GEGLUs written out (and generates).
    const p = await loadPipeline(SHIPPED, { devices: 'cpu,webgpu:0', threads: 1, fuseAttention: true });
    try {
      assert.equal(p.info.attentionFusion.applied, true);
      assert.equal(p.info.attentionFusion.biasSplitGelus, undefined);
      assert.equal(p.info.attentionFusion.groupNorms, undefined);
      const r = await p.generate({ prompt: 'a red circle', steps: 2, seed: 3, method: 'direct', width: 128, height: 128 });
      assert.ok(r.latent.every(Number.isFinite));
    } finally {
      await p.close();
    }
  });
});
