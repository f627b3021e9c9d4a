/**
 * src/graph/skip-layer-norm.ts: a transformer block's output-projection bias, residual Add and next LayerNormalization
 * as one SkipLayerNormalization node. Checked by running the graphs before and after through ONNX Runtime (CPU, and
 * WebGPU on lavapipe), on a hand-built block with the cases the rewrite must leave alone, and on whole UNets.
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
import { fuseSkipLayerNorm } from '../src/graph/skip-layer-norm.ts';
import { isFusedAttentionFile, prepareFusedAttention } from '../src/node/fused-attention.ts';
import { writeTinySdModel } from './fixtures/index.ts';
import { layerNorm, linear } from './fixtures/layers.ts';
import { GraphBuilder } from './fixtures/onnx-graph.ts';
import { assertLeftAlone, cloneModel as clone, countOps as count, maxAbsDiff, randoms, runGraph as run, unetFeeds } from './fixtures/graph-run.ts';

const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');
const D = 8;

let root: string;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-skipln-'));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

interface BlockVariant {
  /** The residual is also read by the block's first norm (as in diffusers' block); false: only by the residual Add. */
  normedResidual?: boolean;
  /** The projection's bias length (D unless set: a broadcast bias of 1 must not be fused). */
  biasLength?: number;
  /** The norm's axis (-1 unless set). */
  axis?: number;
  /** The biased projection is also a graph output (read twice). */
  projectionOut?: boolean;
  /** The sum is read by a second residual Add (as in the block), or only by the norm. */
  sumReadAgain?: boolean;
  /** The second norm's parameters and the projection's bias as Identity of initializers (torch's dedup of equal ones). */
  identities?: boolean;
}

/** h -> norm1 -> linear (bias) -> + h -> norm2 -> linear -> (+ sum) -> y: one attention's place in a block. */
function block(v: BlockVariant = {}): ModelProto {
  const g = new GraphBuilder({ name: 'block', modelKey: 'skipln', seed: 5, floatType: 'float32' });
  const h = g.floatInput('h', ['batch', 'seq', D]);
  const n1 = v.normedResidual === false ? h : layerNorm(g, 'norm1', h, D);
  const proj = g.scope('to_out', () => {
    const w = g.param('weight', [D, D], { std: 0.5 });
    const bias = g.param('bias', [v.biasLength ?? D], { std: 0.5 });
    return g.op('Add', [v.identities ? g.op('Identity', [bias]) : bias, g.op('MatMul', [n1, w])]);
  });
  const sum = g.op('Add', [proj, h]);
  const n2 = v.axis === undefined && !v.identities ? layerNorm(g, 'norm2', sum, D) : g.scope('norm2', () => {
    const [scale, beta] = [g.param('weight', [D], { std: 0.2, mean: 1 }), g.param('bias', [D], { std: 0.2 })];
    const id = (t: string) => (v.identities ? g.op('Identity', [g.op('Identity', [t])]) : t);
    return g.op('LayerNormalization', [sum, id(scale), id(beta)], { axis: v.axis ?? -1, epsilon: { f: 1e-5 } });
  });
  const ff = linear(g, 'ff', n2, D, D);
  g.floatOutput(v.sumReadAgain === false ? ff : g.op('Add', [ff, sum]), 'y', ['batch', 'seq', D]);
  if (v.projectionOut) g.floatOutput(proj, 'proj', ['batch', 'seq', D]);
  return g.build();
}

const feeds = () => ({ h: new ort.Tensor('float32', randoms(2 * 5 * D, 7), [2, 5, D]) });

describe('one block', () => {
  test('bias, residual and norm become one SkipLayerNormalization that also outputs the sum; y within 1e-6 on the CPU and on WebGPU', async (t) => {
    const plain = block();
    const fused = clone(plain);
    assert.equal(fuseSkipLayerNorm(fused), 1);
    assert.equal(count(fused, 'SkipLayerNormalization'), 1);
    assert.equal(count(fused, 'LayerNormalization'), 1, 'norm1 has no residual before it');
    const node = fused.graph!.node.find((n) => n.opType === 'SkipLayerNormalization')!;
    assert.equal(node.domain, 'com.microsoft');
    assert.equal(node.output.length, 4, 'the sum is read by the second residual');
    assert.equal(count(fused, 'Add'), count(plain, 'Add') - 2);
    assert.ok(fused.opsetImport.some((o) => o.domain === 'com.microsoft'));
    for (const provider of ['cpu', 'webgpu'] as const) {
      const diff = maxAbsDiff((await run(plain, feeds(), provider))['y']!, (await run(fused, feeds(), provider))['y']!);
      t.diagnostic(`${provider}: max abs diff ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-6, `${provider}: ${diff}`);
    }
  });

  test('parameters behind Identity nodes (as torch writes equal ones) are followed to their initializers', async () => {
    const plain = block({ identities: true });
    const fused = clone(plain);
    assert.equal(fuseSkipLayerNorm(fused), 1);
    assert.ok(maxAbsDiff((await run(plain, feeds()))['y']!, (await run(fused, feeds()))['y']!) < 1e-6);
  });

  test('a sum read by the norm only: the node has one output', async () => {
    const plain = block({ sumReadAgain: false });
    const fused = clone(plain);
    assert.equal(fuseSkipLayerNorm(fused), 1);
    assert.equal(fused.graph!.node.find((n) => n.opType === 'SkipLayerNormalization')!.output.length, 1);
    assert.ok(maxAbsDiff((await run(plain, feeds()))['y']!, (await run(fused, feeds()))['y']!) < 1e-6);
  });

  test('left alone: a residual no norm reads, a broadcast bias, a norm over another axis, a projection read twice', () => {
    for (const v of [{ normedResidual: false }, { biasLength: 1 }, { axis: 1 }, { projectionOut: true }] as BlockVariant[]) {
      assertLeftAlone(block(v), fuseSkipLayerNorm, JSON.stringify(v));
    }
  });
});

describe('whole UNets', () => {
  test('the fixture UNet and the shipped one: norm2 and norm3 of every transformer block fused; out_sample within 1e-5', async (t) => {
    const dir = path.join(root, 'tiny');
    await writeTinySdModel(dir);
    for (const [label, file, lat] of [['fixture', path.join(dir, 'unet', 'model.onnx'), 8], ['shipped', path.join(SHIPPED, 'unet', 'model.onnx'), 16]] as const) {
      const plain = fromBinary(ModelProtoSchema, fs.readFileSync(file));
      const norms = count(plain, 'LayerNormalization');
      const fused = clone(plain);
      const n = fuseSkipLayerNorm(fused);
      t.diagnostic(`${label}: ${n} of ${norms} LayerNormalization nodes fused`);
      assert.equal(n, (2 * norms) / 3, `${label}: two of each block's three norms`);
      assert.equal(count(fused, 'LayerNormalization'), norms / 3);
      const inputs = () => unetFeeds(plain, lat);
      const diff = maxAbsDiff((await run(plain, inputs()))['out_sample']!, (await run(fused, inputs()))['out_sample']!);
      t.diagnostic(`${label}: out_sample max abs diff ${diff.toExponential(2)}`);
      assert.ok(diff < 1e-5, `${label}: ${diff}`);
    }
  });

  test('the fused UNet graph the pipeline stores has them too, and says how many', async () => {
    const dir = path.join(root, 'shipped-copy');
    fs.mkdirSync(dir);
    fs.copyFileSync(path.join(SHIPPED, 'unet', 'model.onnx'), path.join(dir, 'model.onnx'));
    const fused = await prepareFusedAttention(path.join(dir, 'model.onnx'));
    assert.ok('file' in fused, JSON.stringify(fused));
    const m = fromBinary(ModelProtoSchema, fs.readFileSync(fused.file));
    assert.equal(fused.skipLayerNorms, count(m, 'SkipLayerNormalization'));
    assert.equal(fused.skipLayerNorms, 14, 'the shipped UNet: 7 transformer blocks');
    // Read back from its sidecar the second time.
    const again = await prepareFusedAttention(path.join(dir, 'model.onnx'));
    assert.ok('file' in again && again.skipLayerNorms === 14);
    // The attention alone (the card's A/B): a file of its own, opened as a fused graph.
    const only = await prepareFusedAttention(path.join(dir, 'model.onnx'), { skipLayerNorm: false });
    assert.ok('file' in only);
    assert.notEqual(only.file, fused.file);
    assert.equal(only.skipLayerNorms, 0);
    assert.equal(only.fused, fused.fused);
    assert.ok(isFusedAttentionFile(only.file), only.file);
    const o = fromBinary(ModelProtoSchema, fs.readFileSync(only.file));
    assert.equal(count(o, 'SkipLayerNormalization'), 0);
    assert.equal(count(o, 'LayerNormalization'), 21);
  });
});
