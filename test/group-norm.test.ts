/**
 * src/graph/group-norm.ts: torch's written-out GroupNorm (Reshape, InstanceNormalization, Reshape, Mul, Add) and a
 * following SiLU as one com.microsoft GroupNorm between two Transposes. ONNX Runtime (1.31) has a kernel for it on
 * WebGPU only, so fused graphs run on WebGPU (lavapipe here) against the written-out graph on the CPU; the cases the
 * rewrite must leave alone; and the pipeline fuses it only where every device is a WebGPU one.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import ort from 'onnxruntime-node';
import { toFloat16Bits } from '../src/core/float16.ts';
import { fuseGroupNorm } from '../src/graph/group-norm.ts';
import { isFusedAttentionFile, prepareFusedAttention } from '../src/node/fused-attention.ts';
import { assertLeftAlone, cloneModel as clone, countOps as count, maxAbsDiff, runGraph as run, unetFeeds } from './fixtures/graph-run.ts';
import { tinyModel } from './helpers/models.ts';

const SHIPPED_UNET = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128', 'unet', 'model.onnx');
const shipped = () => fromBinary(ModelProtoSchema, fs.readFileSync(SHIPPED_UNET));
const activations = (m: ModelProto) => m.graph!.node.filter((n) => n.opType === 'GroupNorm').map((n) => Number(n.attribute.find((a) => a.name === 'activation')!.i));

let root: string;
before(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-group-norm-'));
});
after(() => fs.rmSync(root, { recursive: true, force: true }));

test('the shipped UNet: all 24 group norms fused, 17 with their SiLU; on WebGPU within 1e-4 of the written-out graph on the CPU', async (t) => {
  const plain = shipped();
  assert.equal(count(plain, 'InstanceNormalization'), 24);
  assert.equal(count(plain, 'Sigmoid'), 19, '17 SiLUs after norms, 2 on the time embedding');
  const fused = clone(plain);
  assert.equal(fuseGroupNorm(fused), 24);
  assert.equal(count(fused, 'GroupNorm'), 24);
  assert.equal(count(fused, 'InstanceNormalization'), 0);
  assert.equal(activations(fused).filter((a) => a === 1).length, 17);
  assert.equal(count(fused, 'Sigmoid'), 2, 'the SiLUs that follow no norm stay');
  const gn = fused.graph!.node.find((n) => n.opType === 'GroupNorm')!;
  assert.equal(gn.domain, 'com.microsoft');
  const attr = Object.fromEntries(gn.attribute.map((a) => [a.name, a.name === 'epsilon' ? a.f : Number(a.i)]));
  assert.equal(attr['channels_last'], 1);
  assert.equal(attr['groups'], 32);
  assert.ok(Math.abs((attr['epsilon'] as number) - 1e-5) < 1e-12, `epsilon ${attr['epsilon']}`);
  const ref = (await run(plain, unetFeeds(plain, 16), 'cpu'))['out_sample']!;
  const gpu = (await run(fused, unetFeeds(plain, 16), 'webgpu'))['out_sample']!;
  const diff = maxAbsDiff(gpu, ref);
  t.diagnostic(`shipped UNet, group norms fused, on WebGPU vs written out on the CPU: max abs diff ${diff.toExponential(2)}`);
  assert.ok(diff < 1e-4, `${diff}`);
  // Why only WebGPU-only device lists get it: the CPU provider has no kernel (if one comes, this says so).
  await assert.rejects(run(fused, unetFeeds(plain, 16), 'cpu'), /GroupNorm/);
});

test('a float16 UNet whose norms compute in float32 (constants behind Casts): every norm fused, within float16 rounding of the output on WebGPU', async (t) => {
  const file = path.join(await tinyModel('fp16'), 'unet', 'model.onnx');
  const plain = fromBinary(ModelProtoSchema, fs.readFileSync(file));
  const fused = clone(plain);
  assert.equal(fuseGroupNorm(fused), count(plain, 'InstanceNormalization'));
  assert.ok(count(fused, 'GroupNorm') > 0);
  const feeds = () => {
    const f = unetFeeds(plain, 8);
    const type = plain.graph!.input.find((i) => i.name === 'sample')!.type!.value.value as { elemType: number };
    if (type.elemType !== 10) return f;
    const half = (x: ort.Tensor) => new ort.Tensor('float16', Uint16Array.from(x.data as Float32Array, (v) => toFloat16Bits(v)), x.dims);
    return { ...f, sample: half(f['sample']!), encoder_hidden_states: half(f['encoder_hidden_states']!) };
  };
  const plainGpu = (await run(plain, feeds(), 'webgpu'))['out_sample']!;
  const fusedGpu = (await run(fused, feeds(), 'webgpu'))['out_sample']!;
  // The fixture's random weights make outputs in the tens of thousands (float16's range): the difference is relative
  // to the largest output. Measured: 30 of 48648 (6e-4); the written-out graph on WebGPU against the CPU: 35.
  const scale = Math.max(...Array.from(plainGpu, Math.abs));
  const diff = maxAbsDiff(fusedGpu, plainGpu) / scale;
  t.diagnostic(`float16 fixture UNet: fused vs written out, both on WebGPU: max abs diff ${diff.toExponential(2)} of the largest output (${scale})`);
  assert.ok(Number.isFinite(diff) && diff < 2e-3, `${diff}`);
});

test('left alone: an InstanceNormalization whose scale is not all ones; a SiLU whose input is read elsewhere stays outside the GroupNorm', async () => {
  const m = shipped();
  // Every norm's scale constant set to 2: no norm is a plain GroupNorm any more.
  for (const n of m.graph!.node.filter((x) => x.opType === 'InstanceNormalization')) {
    const c = m.graph!.node.find((x) => x.output[0] === n.input[1])!;
    const t = c.attribute.find((a) => a.name === 'value')!.t!;
    const v = new Float32Array(new Uint8Array(t.rawData).buffer);
    v.fill(2);
    t.rawData = new Uint8Array(v.buffer);
  }
  assertLeftAlone(m, fuseGroupNorm, 'scales of 2');
  // The first norm's output (before its SiLU) made a graph output too: it is fused without the SiLU, and the output
  // still holds the norm's value.
  const plain = shipped();
  const add = plain.graph!.node.find((n) => n.opType === 'Add' && n.name.endsWith('norm1/Add'))!;
  plain.graph!.output.push({ ...plain.graph!.output[0]!, name: add.output[0]! });
  const fused = clone(plain);
  assert.equal(fuseGroupNorm(fused), 24);
  assert.equal(activations(fused).filter((a) => a === 1).length, 16);
  const ref = await run(plain, unetFeeds(plain, 16), 'cpu');
  const gpu = await run(fused, unetFeeds(plain, 16), 'webgpu');
  assert.ok(maxAbsDiff(gpu[add.output[0]!]!, ref[add.output[0]!]!) < 1e-4);
  assert.ok(maxAbsDiff(gpu['out_sample']!, ref['out_sample']!) < 1e-4);
});

test('the stored WebGPU-only graph has them; with groupNorm false it is stored apart and has none', async () => {
  const dir = path.join(root, 'shipped-copy');
  fs.mkdirSync(dir);
  fs.copyFileSync(SHIPPED_UNET, path.join(dir, 'model.onnx'));
  const source = path.join(dir, 'model.onnx');
  const [cpuToo, gpuOnly, noNorms] = [
    await prepareFusedAttention(source, { flashForm: true }),
    await prepareFusedAttention(source, { flashForm: true, biasSplitGelu: true }),
    await prepareFusedAttention(source, { flashForm: true, biasSplitGelu: true, groupNorm: false }),
  ];
  assert.ok('file' in cpuToo && 'file' in gpuOnly && 'file' in noNorms);
  assert.deepEqual([cpuToo.groupNorms, gpuOnly.groupNorms, noNorms.groupNorms], [0, 24, 0]);
  assert.ok(noNorms.file.endsWith('model.asgd-fused-flash-webgpu-no-group-norm.onnx'), noNorms.file);
  assert.ok(isFusedAttentionFile(noNorms.file));
  const read = (f: string) => fromBinary(ModelProtoSchema, fs.readFileSync(f));
  assert.deepEqual([count(read(cpuToo.file), 'GroupNorm'), count(read(gpuOnly.file), 'GroupNorm'), count(read(noNorms.file), 'GroupNorm')], [0, 24, 0]);
  assert.equal(count(read(noNorms.file), 'BiasSplitGelu'), 7, 'the GEGLUs still fused');
  const again = await prepareFusedAttention(source, { flashForm: true, biasSplitGelu: true });
  assert.ok('file' in again && again.groupNorms === 24, 'read back from its sidecar');
  assert.equal(toBinary(ModelProtoSchema, read(again.file)).length, fs.statSync(gpuOnly.file).size);
});
