/**
 * A float16 VAE whose config sets force_upcast runs as a float32 graph (src/graph/float32-upcast.ts,
 * src/node/float32-vae.ts), as diffusers runs it. The fixture decoder has SD's structure with its activations past
 * float16's range between the norms (conv_in's weights x 1e4, as SDXL's VAE overflows float16): as exported in
 * float16 it gives NaN everywhere, on the CPU provider and on WebGPU (lavapipe, from the test setup); its float32
 * graph gives what the same weights give in a float32 export, bit for bit (measured: max difference 0 on both).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema, AttributeProto_AttributeType, GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema,
  SparseTensorProtoSchema, StringStringEntryProtoSchema, TensorProtoSchema, type GraphProto, type ModelProto, type TensorProto,
} from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { float32ToFloat16, fromFloat16Bits, toFloat16Bits } from '../src/core/float16.ts';
import { ALREADY_FLOAT32, float32ModelBytes, upcastToFloat32 } from '../src/graph/float32-upcast.ts';
import { smallValueInfo } from '../src/graph/small-model.ts';
import { prepareFloat32Vae } from '../src/node/float32-vae.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { SMALL_VAE_DECODER, buildGroupNormVaeDecoder } from './fixtures/groupnorm-vae.ts';
import { copyModel, tempDir } from './helpers/models.ts';

const GAIN = 1e4;
const FLOAT16 = 10;

/** The overflowing decoder as a float16 export. */
function halfDecoder(): Uint8Array {
  return toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 3, floatType: 'float16', form: 'instance-norm', ...SMALL_VAE_DECODER, inputGain: GAIN }));
}

/** The same decoder exported in float32 with the float16 export's weights (each rounded to float16). */
function float32Twin(): Uint8Array {
  const m = buildGroupNormVaeDecoder({ seed: 3, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_DECODER, inputGain: GAIN });
  for (const t of m.graph!.initializer) {
    if (t.dataType !== 1 || t.rawData.length === 0) continue;
    const f = new Float32Array(t.rawData.slice().buffer);
    for (let i = 0; i < f.length; i++) f[i] = fromFloat16Bits(toFloat16Bits(f[i]!));
    t.rawData = new Uint8Array(f.buffer);
  }
  return toBinary(ModelProtoSchema, m);
}

const LATENT = Float32Array.from({ length: 4 * 8 * 8 }, (_, i) => Math.sin(i * 1.7) * 5);

async function decode(bytes: Uint8Array, provider: 'cpu' | 'webgpu'): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(bytes, { executionProviders: [provider], logSeverityLevel: 3 });
  try {
    const half = s.inputNames.length === 1 && (s.inputMetadata[0] as { type?: string }).type === 'float16';
    const feed = half ? new ort.Tensor('float16', float32ToFloat16(LATENT), [1, 4, 8, 8]) : new ort.Tensor('float32', LATENT, [1, 4, 8, 8]);
    const out = (await s.run({ latent_sample: feed }))['sample']!;
    return out.type === 'float16' ? Float32Array.from(out.data as Uint16Array, fromFloat16Bits) : (out.data as Float32Array);
  } finally {
    await s.release();
  }
}

const nonFinite = (x: Float32Array) => x.reduce((n, v) => n + (Number.isFinite(v) ? 0 : 1), 0);

/** Every element type and tensor in the model that is still float16 (none after the conversion). */
function float16Left(g: GraphProto): string[] {
  const left: string[] = [];
  const tensor = (t: TensorProto, where: string) => { if (t.dataType === FLOAT16) left.push(`${where} ${t.name}`); };
  g.initializer.forEach((t) => tensor(t, 'initializer'));
  for (const v of [...g.input, ...g.output, ...g.valueInfo]) if (v.type?.value.case === 'tensorType' && v.type.value.value.elemType === FLOAT16) left.push(`value ${v.name}`);
  for (const n of g.node) {
    for (const a of n.attribute) {
      if ((a.name === 'to' || a.name === 'dtype') && a.i === BigInt(FLOAT16)) left.push(`${n.opType} ${a.name}`);
      if (a.t) tensor(a.t, `${n.opType} attribute`);
      if (a.g) left.push(...float16Left(a.g));
    }
  }
  return left;
}

for (const provider of ['cpu', 'webgpu'] as const) {
  test(`${provider}: a float16 decoder that overflows gives NaN; its float32 graph gives the float32 export's output bit for bit`, async () => {
    const half = halfDecoder();
    const asExported = await decode(half, provider);
    assert.equal(nonFinite(asExported), asExported.length, 'the fixture overflows float16 everywhere');
    const r = float32ModelBytes(half);
    assert.ok('bytes' in r, 'reason' in r ? r.reason : '');
    const upcast = await decode(r.bytes, provider);
    const twin = await decode(float32Twin(), provider);
    assert.equal(nonFinite(twin), 0);
    assert.deepEqual(upcast, twin);
    assert.deepEqual(float16Left(fromBinary(ModelProtoSchema, r.bytes).graph!), []);
  });
}

/** raw little-endian float16 bytes of `values`. */
const halfBytes = (values: number[]) => new Uint8Array(float32ToFloat16(Float32Array.from(values)).buffer as ArrayBuffer);
const attr = (name: string, value: Partial<{ i: bigint; t: TensorProto; g: GraphProto }>) =>
  create(AttributeProtoSchema, { name, type: value.t ? AttributeProto_AttributeType.TENSOR : value.g ? AttributeProto_AttributeType.GRAPH : AttributeProto_AttributeType.INT, ...value });
const half16 = (name: string, dims: number[], values: number[]) => create(TensorProtoSchema, { name, dataType: FLOAT16, dims: dims.map(BigInt), rawData: halfBytes(values) });

/**
 * A float16 model with float16 in every place an export puts it: initializers as raw data, as int32_data and as
 * external data, a Constant, a ConstantOfShape's value, a Cast to float16, declared value types, and a branch of an
 * If. It computes y = ((x * 300) * 300 + 0.5) / 40000 + 0.25 + k (k from the branch taken; every constant exact in
 * float16), where x * 300 * 300 passes float16's range (65504) for |x| > 2.7.
 */
function storageForms(): { model: ModelProto; external: Uint8Array } {
  const branch = (value: number) => create(GraphProtoSchema, {
    name: `branch_${value}`,
    node: [create(NodeProtoSchema, { opType: 'Constant', output: [`k_${value}`], attribute: [attr('value', { t: half16('', [1], [value]) })] })],
    output: [smallValueInfo({ name: `k_${value}`, type: 'float16', dims: [1] })],
  });
  const external = halfBytes([300]);
  const graph = create(GraphProtoSchema, {
    name: 'forms',
    node: [
      create(NodeProtoSchema, { opType: 'Cast', input: ['x32'], output: ['x'], attribute: [attr('to', { i: BigInt(FLOAT16) })] }),
      create(NodeProtoSchema, { opType: 'Mul', input: ['x', 'a_raw'], output: ['m1'] }),
      create(NodeProtoSchema, { opType: 'Mul', input: ['m1', 'a_ext'], output: ['m2'] }),
      create(NodeProtoSchema, { opType: 'Constant', output: ['c'], attribute: [attr('value', { t: half16('', [1], [0.5]) })] }),
      create(NodeProtoSchema, { opType: 'Add', input: ['m2', 'c'], output: ['m3'] }),
      create(NodeProtoSchema, { opType: 'Div', input: ['m3', 'd_int32'], output: ['m4'] }),
      create(NodeProtoSchema, { opType: 'Shape', input: ['x'], output: ['shape'] }),
      create(NodeProtoSchema, { opType: 'ConstantOfShape', input: ['shape'], output: ['zeros'], attribute: [attr('value', { t: half16('', [1], [0.25]) })] }),
      create(NodeProtoSchema, { opType: 'Add', input: ['m4', 'zeros'], output: ['m5'] }),
      create(NodeProtoSchema, { opType: 'If', input: ['cond'], output: ['k'], attribute: [attr('then_branch', { g: branch(1) }), attr('else_branch', { g: branch(2) })] }),
      create(NodeProtoSchema, { opType: 'Add', input: ['m5', 'k'], output: ['y'] }),
    ],
    initializer: [
      half16('a_raw', [1], [300]),
      create(TensorProtoSchema, { name: 'd_int32', dataType: FLOAT16, dims: [1n], int32Data: [toFloat16Bits(40000)] }),
      create(TensorProtoSchema, {
        name: 'a_ext', dataType: FLOAT16, dims: [1n], dataLocation: 1,
        externalData: [['location', 'weights.bin'], ['offset', '0'], ['length', '2']].map(([key, value]) => create(StringStringEntryProtoSchema, { key, value })),
      }),
    ],
    input: [smallValueInfo({ name: 'x32', type: 'float32', dims: [5] }), { ...smallValueInfo({ name: 'cond', type: 'float32', dims: [] }), type: boolType() }],
    output: [smallValueInfo({ name: 'y', type: 'float16', dims: [5] })],
    valueInfo: [smallValueInfo({ name: 'm1', type: 'float16', dims: [5] })],
  });
  return { model: create(ModelProtoSchema, { irVersion: 8n, opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 17n })], graph }), external };
}

function boolType() {
  const t = smallValueInfo({ name: 'b', type: 'float32', dims: [] }).type!;
  if (t.value.case === 'tensorType') t.value.value.elemType = 9; // BOOL
  return t;
}

test('every place a float16 export keeps float16 is converted, and the graph computes in float32', async () => {
  const { model, external } = storageForms();
  const reads: string[] = [];
  const r = upcastToFloat32(model, (e) => { reads.push(`${e.location}@${e.offset}+${e.length}`); return external; });
  assert.ok(!('reason' in r), 'reason' in r ? r.reason : '');
  assert.deepEqual(reads, ['weights.bin@0+2']);
  // a_raw, d_int32, a_ext, the Constant, the ConstantOfShape value and the two branches' constants.
  assert.deepEqual(r, { tensors: 7, casts: 1, types: 4 });
  assert.deepEqual(float16Left(model.graph!), []);
  const s = await ort.InferenceSession.create(toBinary(ModelProtoSchema, model), { executionProviders: ['cpu'], logSeverityLevel: 3 });
  try {
    const x = [0.5, -1, 2, 3, -4];
    for (const [cond, k] of [[true, 1], [false, 2]] as const) {
      const out = await s.run({ x32: new ort.Tensor('float32', Float32Array.from(x), [5]), cond: new ort.Tensor('bool', [cond], []) });
      assert.equal(out['y']!.type, 'float32');
      // float32 arithmetic in the graph's order (x is float32 now: its Cast to float16 became one to float32).
      const f = Math.fround;
      const want = x.map((v) => f(f(f(f(f(v * 300) * 300) + 0.5) / 40000) + 0.25) + k);
      assert.deepEqual(Array.from(out['y']!.data as Float32Array), want.map(f));
    }
  } finally {
    await s.release();
  }
});

test('what the conversion refuses, and a float32 model left as it is', () => {
  const { model } = storageForms();
  assert.deepEqual(upcastToFloat32(model), { reason: 'tensor a_ext is stored in weights.bin, which cannot be read here' });
  const sparse = storageForms().model;
  sparse.graph!.sparseInitializer.push(create(SparseTensorProtoSchema, { values: half16('s', [1], [1]), dims: [5n] }));
  assert.match((upcastToFloat32(sparse, () => new Uint8Array(2)) as { reason: string }).reason, /sparse float16 initializer/);
  assert.deepEqual(float32ModelBytes(float32Twin()), { reason: ALREADY_FLOAT32 });
  assert.match((float32ModelBytes(new Uint8Array([0xff, 0xff, 0xff])) as { reason: string }).reason, /^the model cannot be parsed/);
  const short = storageForms().model;
  short.graph!.initializer[0]!.rawData = new Uint8Array(3);
  assert.deepEqual(upcastToFloat32(short, () => new Uint8Array(2)), { reason: 'tensor a_raw holds 3 bytes where its shape needs 2' });
});

/** A copy of the tiny model with `decoder` as its VAE decoder, its VAE config's force_upcast set to `forceUpcast`. */
async function folderWith(decoder: Uint8Array, forceUpcast: boolean): Promise<string> {
  const dir = await copyModel('standard');
  fs.writeFileSync(path.join(dir, 'vae_decoder', 'model.onnx'), decoder);
  const config = path.join(dir, 'vae_decoder', 'config.json');
  fs.writeFileSync(config, JSON.stringify({ ...JSON.parse(fs.readFileSync(config, 'utf8')), force_upcast: forceUpcast }));
  return dir;
}

const params = { prompt: 'a red circle on a blue background', steps: 1, seed: 1, width: 64, height: 64, method: 'direct' as const };

test('the pipeline runs a float16 decoder whose config sets force_upcast as its float32 export, on the CPU and on WebGPU', async () => {
  const upcast = await folderWith(halfDecoder(), true);
  const twin = await folderWith(float32Twin(), true);
  const asExported = await folderWith(halfDecoder(), false);
  const stored = path.join(upcast, 'vae_decoder', 'model.asgd-float32.onnx');
  let mtime = 0;
  for (const devices of ['cpu', 'webgpu:0']) {
    const generate = async (dir: string) => {
      const pipe = await loadPipeline(dir, { devices, attentionProbe: false });
      try {
        const r = await pipe.generate(params);
        // Tiled with the whole image's statistics: the derived graphs are made from the float32 graph too.
        const warnings: string[] = [];
        const big = devices === 'cpu' ? await pipe.generate({ ...params, width: 128, height: 128 }) : undefined;
        const tiled = big && await pipe.decodeLatent(big.latent, 16, 16, { tiling: 'on', tileSize: 8, overlap: 4, stats: 'exact' }, undefined, (w) => warnings.push(w));
        return { info: pipe.info, r, tiled, warnings };
      } finally {
        await pipe.close();
      }
    };
    const a = await generate(upcast);
    assert.ok(a.info.notes.includes('vae_decoder is a float16 export and the VAE config sets force_upcast: it runs in float32 (93 tensors converted, model.asgd-float32.onnx)'), a.info.notes.join(' | '));
    assert.equal(a.info.components.vaeDecoder?.file, path.join('vae_decoder', 'model.asgd-float32.onnx'));
    assert.equal(a.info.components.vaeDecoder?.inputs[0]?.type, 'float32');
    assert.deepEqual(a.r.warnings, []);
    // Stored once, then reused (the first load wrote it; the second found it).
    if (mtime === 0) mtime = fs.statSync(stored).mtimeMs;
    else assert.equal(fs.statSync(stored).mtimeMs, mtime);
    const b = await generate(twin);
    assert.ok(!b.info.notes.some((n) => /force_upcast/.test(n)), 'a float32 export is left as it is');
    assert.ok(!fs.existsSync(path.join(twin, 'vae_decoder', 'model.asgd-float32.onnx')));
    assert.deepEqual(a.r.image.data, b.r.image.data, `${devices}: the image of the float32 export`);
    if (devices === 'cpu') {
      assert.deepEqual(a.warnings, []);
      assert.equal((a.tiled as { tiled?: { tiles: number } }).tiled?.tiles, 9);
      assert.deepEqual(a.tiled!.data, b.tiled!.data, 'tiled, the float32 export\'s tiled image');
    }
    const c = await generate(asExported);
    assert.ok(c.r.warnings.some((w) => /^The VAE decoder gave 12288 of 12288 values that are not finite numbers \(NaN or infinity\), drawn as black.*"force_upcast": true/.test(w)), c.r.warnings.join(' | '));
    assert.ok(c.r.image.data.every((v) => v === 0), `${devices}: as exported, the overflow draws black`);
  }
});

test('external float16 weights are read from the model folder, never from outside it', async () => {
  const dir = tempDir('float32-external');
  const { model, external } = storageForms();
  fs.writeFileSync(path.join(dir, 'weights.bin'), external);
  fs.writeFileSync(path.join(dir, 'model.onnx'), toBinary(ModelProtoSchema, model));
  const r = await prepareFloat32Vae(path.join(dir, 'model.onnx'));
  assert.ok('file' in r, 'reason' in r ? r.reason : '');
  assert.equal(r.tensors, 7);
  const s = await ort.InferenceSession.create(r.file, { logSeverityLevel: 3 });
  const out = await s.run({ x32: new ort.Tensor('float32', Float32Array.from([3, 0, 0, 0, 0]), [5]), cond: new ort.Tensor('bool', [true], []) });
  await s.release();
  assert.equal((out['y']!.data as Float32Array)[0], Math.fround(Math.fround(270000.5 / 40000) + 0.25) + 1);
  const outside = tempDir('float32-outside');
  const escaping = storageForms().model;
  escaping.graph!.initializer[2]!.externalData[0]!.value = '../weights.bin';
  fs.writeFileSync(path.join(outside, 'model.onnx'), toBinary(ModelProtoSchema, escaping));
  const refused = await prepareFloat32Vae(path.join(outside, 'model.onnx'));
  assert.deepEqual(refused, { reason: "its weights cannot be read (external data ../weights.bin is outside the model's folder)" });
});
