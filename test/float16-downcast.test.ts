/**
 * A float32 UNet export run as a float16 graph (src/graph/float16-downcast.ts, src/node/float16-unet.ts,
 * PipelineOptions.unetPrecision 'float16'). What must stay float32 stays so (the timestep's sinusoidal embedding,
 * Resize's scales, the attention scores where asked), weights are rounded to float16 with saturation, large weights go
 * to the converted model's own external-data file (written whole or not at all), and a generation with the converted
 * UNet is within float16 rounding of the float32 one.
 * Measured when written: the shipped UNet converted, on the CPU provider, 0.0018 / 0.0016 / 0.0027 from the float32
 * graph at t = 999 / 500 / 1 (outputs up to 1.5-3.3); on WebGPU (lavapipe) 0.014; a 256 px asg generation on the
 * shipped model 5 levels at most from the float32 one (mean 0.05); the tiny SD3 model's 128 px asg latent 0.0089 from
 * the float32 one (values up to 8), its image 2 levels.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, TensorProtoSchema, type ModelProto, type NodeProto } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { float32ToFloat16, fromFloat16Bits } from '../src/core/float16.ts';
import { ALREADY_FLOAT16, float16Plan, float16WeightBytes } from '../src/graph/float16-downcast.ts';
import { Float16FileWriter, Float16WeightStream, streamedWeights } from '../src/graph/float16-stream.ts';
import { modelBytes } from '../src/graph/model-bytes.ts';
import { prepareFloat16Unet } from '../src/node/float16-unet.ts';
import { loadPipeline, type GenerateResult, type PipelineOptions } from '../src/node/pipeline.ts';
import type { GenerateParams } from '../src/core/params.ts';
import { GraphBuilder, moveToExternalData } from './fixtures/onnx-graph.ts';
import { copyModel, tempDir, tinyModel } from './helpers/models.ts';
import { writeTinySd3Model } from './fixtures/tiny-sd3.ts';

const run = promisify(execFile);
const ROOT = path.resolve(import.meta.dirname, '..');
const SHIPPED = path.join(ROOT, 'models', 'shapes-128');
const SHIPPED_UNET = path.join(SHIPPED, 'unet', 'model.onnx');
const FLOAT = 1;
const FLOAT16 = 10;

/** Writes a float16 plan as the Node adapter does: the model and its external-data file in `dir`. */
function writePlan(bytes: Uint8Array, dir: string, opts: { attentionScoresFloat32?: boolean } = {}): { file: string; model: ModelProto } {
  const plan = float16Plan(bytes, { dataLocation: 'model.onnx.data', ...opts });
  if ('reason' in plan) throw new Error(plan.reason);
  const data = new Uint8Array(plan.dataBytes);
  for (const w of plan.weights) data.set(float16WeightBytes(w), w.offset);
  fs.writeFileSync(path.join(dir, 'model.onnx.data'), data);
  const file = path.join(dir, 'model.onnx');
  fs.writeFileSync(file, modelBytes(plan.model));
  return { file, model: plan.model };
}

const toFloat32 = (t: ort.Tensor): Float32Array => (t.type === 'float16' ? Float32Array.from(t.data as Uint16Array, fromFloat16Bits) : (t.data as Float32Array));

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** A small graph: a timestep's sinusoid (float32 input) and a matrix product of the sample (float16 after). */
function sinusoidGraph(weights: number[]): ModelProto {
  const g = new GraphBuilder({ name: 'sinusoid', modelKey: 'sinusoid', seed: 1, floatType: 'float32' });
  const t = g.input('timestep', 'float32', [1]);
  const args = g.op('Mul', [t, g.constFloat([0.77], [1])]);
  g.output(g.op('Concat', [g.op('Sin', [args]), g.op('Cos', [args])], { axis: 0 }), 'emb', 'float32', [2]);
  const x = g.floatInput('sample', [1, weights.length]);
  g.output(g.op('Mul', [x, g.constFloat(weights, [1, weights.length])]), 'y', 'float32', [1, weights.length]);
  return g.build();
}

test('the timestep sinusoid stays float32 (in float16 its sine would be 0.19 off at t = 999); the rest becomes float16, finite weights rounded and saturated, infinities kept', async () => {
  const weights = [1, 65504, 1e6, -1e6, 0.1, 3.5, -2, 1e-8, -Infinity];
  const dir = tempDir('f16-sinusoid');
  const { file, model } = writePlan(toBinary(ModelProtoSchema, sinusoidGraph(weights)), dir);
  const g = model.graph!;
  const declared = (name: string) => [...g.input, ...g.output].find((v) => v.name === name)!.type!.value.value as { elemType: number };
  assert.equal(declared('timestep').elemType, FLOAT);
  assert.equal(declared('emb').elemType, FLOAT);
  assert.equal(declared('sample').elemType, FLOAT16);
  assert.equal(declared('y').elemType, FLOAT16);
  const s = await ort.InferenceSession.create(file, { executionProviders: ['cpu'], logSeverityLevel: 3 });
  try {
    const x = Float32Array.from(weights, () => 1);
    const r = await s.run({ timestep: new ort.Tensor('float32', Float32Array.from([999]), [1]), sample: new ort.Tensor('float16', float32ToFloat16(x), [1, weights.length]) });
    const arg = Math.fround(Math.fround(999) * Math.fround(0.77));
    const emb = r['emb']!.data as Float32Array;
    assert.equal(r['emb']!.type, 'float32');
    assert.ok(Math.abs(emb[0]! - Math.sin(arg)) < 1e-4 && Math.abs(emb[1]! - Math.cos(arg)) < 1e-4, `sin/cos ${emb[0]}, ${emb[1]} against ${Math.sin(arg)}, ${Math.cos(arg)}`);
    // The argument in float16 (spacing 0.5 at 769) would move the sine by 0.19.
    const rounded = fromFloat16Bits(float32ToFloat16([arg])[0]!);
    assert.ok(Math.abs(Math.sin(rounded) - Math.sin(arg)) > 0.1);
    // The weights as stored: float16 bit patterns known by hand; beyond float16's range they saturate to 65504.
    assert.equal(r['y']!.type, 'float16');
    assert.deepEqual([...(r['y']!.data as Uint16Array)], [0x3c00, 0x7bff, 0x7bff, 0xfbff, 0x2e66, 0x4300, 0xc000, 0x0000, 0xfc00]);
  } finally {
    await s.release();
  }
});

/** The producer of each value. */
function producers(model: ModelProto): Map<string, NodeProto> {
  const m = new Map<string, NodeProto>();
  for (const n of model.graph!.node) for (const o of n.output) m.set(o, n);
  return m;
}

/** For each Softmax: whether both inputs of the MatMul its scores come from are Casts to float32. */
function scoresInFloat32(model: ModelProto): boolean[] {
  const by = producers(model);
  const castTo32 = (v: string) => { const p = by.get(v); return p?.opType === 'Cast' && p.attribute.find((a) => a.name === 'to')?.i === BigInt(FLOAT); };
  return model.graph!.node.filter((n) => n.opType === 'Softmax').map((n) => {
    let cur = by.get(n.input[0]!);
    while (cur && cur.opType !== 'MatMul') cur = by.get(cur.input.find((x) => by.has(x) && by.get(x)!.opType !== 'Constant') ?? '');
    return cur !== undefined && cur.input.every(castTo32);
  });
}

test('the shipped UNet in float16: within 0.01 of the float32 graph on the CPU at t = 999, 500 and 1; with upcast attention every Softmax reads float32 scores', async () => {
  const bytes = fs.readFileSync(SHIPPED_UNET);
  const plain = writePlan(bytes, tempDir('f16-shipped'));
  const upcast = writePlan(bytes, tempDir('f16-shipped-upcast'), { attentionScoresFloat32: true });
  assert.deepEqual(scoresInFloat32(plain.model), new Array(14).fill(false));
  assert.deepEqual(scoresInFloat32(upcast.model), new Array(14).fill(true));
  const opts = { executionProviders: ['cpu'], logSeverityLevel: 3 as const };
  const [ref, a, b] = await Promise.all([SHIPPED_UNET, plain.file, upcast.file].map((f) => ort.InferenceSession.create(f, opts)));
  try {
    const n = 2 * 4 * 16 * 16;
    const sample = Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) * 1.2);
    const text = Float32Array.from({ length: 2 * 77 * 64 }, (_, i) => Math.cos(i * 0.11));
    for (const t of [999n, 500n, 1n]) {
      const timestep = new ort.Tensor('int64', BigInt64Array.from([t]), [1]);
      const want = toFloat32((await ref!.run({ sample: new ort.Tensor('float32', sample, [2, 4, 16, 16]), timestep, encoder_hidden_states: new ort.Tensor('float32', text, [2, 77, 64]) }))[ref!.outputNames[0]!]!);
      const half = { sample: new ort.Tensor('float16', float32ToFloat16(sample), [2, 4, 16, 16]), timestep, encoder_hidden_states: new ort.Tensor('float16', float32ToFloat16(text), [2, 77, 64]) };
      for (const s of [a!, b!]) {
        const out = (await s.run(half))[s.outputNames[0]!]!;
        assert.equal(out.type, 'float16');
        const d = maxDiff(toFloat32(out), want);
        assert.ok(d < 0.01, `t = ${t}: ${d}`);
      }
    }
  } finally {
    await Promise.all([ref, a, b].map((s) => s!.release()));
  }
});

test('a float timestep stays float32 through the Cast the export puts before its embedding (Euler timesteps such as 978.6 are not float16 values)', async () => {
  const bytes = fs.readFileSync(path.join(await tinyModel('float-timestep'), 'unet', 'model.onnx'));
  const plan = float16Plan(bytes, { dataLocation: 'x.data' });
  assert.ok(!('reason' in plan));
  const types = Object.fromEntries(plan.model.graph!.input.map((v) => [v.name, (v.type!.value.value as { elemType: number }).elemType]));
  assert.deepEqual(types, { sample: FLOAT16, timestep: FLOAT, encoder_hidden_states: FLOAT16 });
});

test('what is not converted, and why: an export in float16 already, an operator of another domain', async () => {
  const fp16 = fs.readFileSync(path.join(await tinyModel('fp16'), 'unet', 'model.onnx'));
  assert.deepEqual(float16Plan(fp16, { dataLocation: 'x.data' }), { reason: ALREADY_FLOAT16 });
  const g = new GraphBuilder({ name: 'ms', modelKey: 'ms', seed: 1, floatType: 'float32' });
  const x = g.floatInput('x', [2, 8]);
  g.output(g.op('BiasAdd', [x, g.constFloat(new Array(8).fill(1), [8]), x], {}, { domain: 'com.microsoft' }), 'y', 'float32', [2, 8]);
  const r = float16Plan(toBinary(ModelProtoSchema, g.build()), { dataLocation: 'x.data' });
  assert.ok('reason' in r);
  assert.match(r.reason, /com\.microsoft\.BiasAdd: the conversion knows ONNX's own operators only/);
  assert.match((float16Plan(new Uint8Array([1, 2, 3]), { dataLocation: 'x.data' }) as { reason: string }).reason, /cannot be parsed/);
});

test('prepareFloat16Unet on an export with external data: its own weights file, stored once and reused; SDXL time_ids kept float32', async () => {
  const dir = await copyModel('sdxl');
  const unet = path.join(dir, 'unet', 'model.onnx');
  // The export's weights moved out of the model, as large exports are.
  const model = fromBinary(ModelProtoSchema, fs.readFileSync(unet));
  fs.writeFileSync(path.join(dir, 'unet', 'model.onnx_data'), moveToExternalData(model, 'model.onnx_data'));
  fs.writeFileSync(unet, toBinary(ModelProtoSchema, model));
  const r = await prepareFloat16Unet(unet);
  assert.ok('file' in r, JSON.stringify(r));
  assert.equal(r.file, path.join(dir, 'unet', 'model.asgd-float16.onnx'));
  const converted = fromBinary(ModelProtoSchema, fs.readFileSync(r.file));
  const locations = new Set(converted.graph!.initializer.flatMap((t) => t.externalData.filter((e) => e.key === 'location').map((e) => e.value)));
  assert.deepEqual([...locations], ['model.asgd-float16.onnx.data']);
  const inputs = Object.fromEntries(converted.graph!.input.map((v) => [v.name, (v.type!.value.value as { elemType: number }).elemType]));
  assert.deepEqual(inputs, { sample: FLOAT16, timestep: 7, encoder_hidden_states: FLOAT16, text_embeds: FLOAT16, time_ids: FLOAT });
  const stamp = fs.statSync(`${r.file}.data`).mtimeMs;
  const again = await prepareFloat16Unet(unet);
  assert.deepEqual(again, r);
  assert.equal(fs.statSync(`${r.file}.data`).mtimeMs, stamp, 'reused, not written again');

  // The converted UNet against the export, one CFG call on the CPU.
  const opts = { executionProviders: ['cpu'], logSeverityLevel: 3 as const };
  const [ref, half] = await Promise.all([ort.InferenceSession.create(unet, opts), ort.InferenceSession.create(r.file, opts)]);
  try {
    const shape = (s: ort.InferenceSession, name: string) => (s.inputMetadata.find((m) => m.name === name) as unknown as { shape: readonly (number | string)[] }).shape.map((d) => (typeof d === 'number' ? d : 2));
    const feeds = (s: ort.InferenceSession, float16: boolean) => Object.fromEntries(s.inputNames.map((name, k) => {
      const dims = name === 'sample' ? [2, 4, 8, 8] : name === 'timestep' ? [1] : shape(s, name).map((d, i) => (i === 0 ? 2 : d));
      if (name === 'timestep') return [name, new ort.Tensor('int64', BigInt64Array.from([999n]), [1])];
      const n = dims.reduce((a, b) => a * b, 1);
      const values = Float32Array.from({ length: n }, (_, i) => (name === 'time_ids' ? [1024, 1024, 0, 0, 1024, 1024][i % 6]! : Math.sin(i * 0.3 + k)));
      return [name, name !== 'time_ids' && float16 ? new ort.Tensor('float16', float32ToFloat16(values), dims) : new ort.Tensor('float32', values, dims)];
    }));
    const want = toFloat32((await ref.run(feeds(ref, false)))[ref.outputNames[0]!]!);
    const got = toFloat32((await half.run(feeds(half, true)))[half.outputNames[0]!]!);
    const scale = Math.max(...want.map(Math.abs));
    assert.ok(maxDiff(got, want) < 0.01 * Math.max(1, scale), `max diff ${maxDiff(got, want)} (outputs up to ${scale})`);
  } finally {
    await Promise.all([ref.release(), half.release()]);
  }
});

test("external tensors that stay as they are (int64 indices, a float32 frequency table the sinusoid reads) are copied into the converted model's own weights file", async () => {
  const g = new GraphBuilder({ name: 'copies', modelKey: 'copies', seed: 2, floatType: 'float32' });
  const t = g.input('timestep', 'float32', [1]);
  g.output(g.op('Sin', [g.op('Mul', [t, g.constFloat(Array.from({ length: 300 }, (_, i) => Math.exp(-i / 50)), [300])])]), 'emb', 'float32', [300]);
  const x = g.floatInput('x', [1, 400]);
  const picked = g.op('Gather', [x, g.constInt64(Array.from({ length: 200 }, (_, i) => (i * 7) % 400))], { axis: 1 });
  g.output(g.op('Mul', [picked, g.constFloat(Array.from({ length: 200 }, (_, i) => Math.cos(i)), [1, 200])]), 'y', 'float32', [1, 200]);
  const model = g.build();
  const dir = tempDir('f16-copies');
  fs.writeFileSync(path.join(dir, 'w.bin'), moveToExternalData(model, 'w.bin', 1000));
  assert.equal(model.graph!.initializer.filter((i) => i.dataLocation === 1).length, 2, 'the frequencies and the indices are external; the weights (800 bytes) inline');
  const file = path.join(dir, 'model.onnx');
  fs.writeFileSync(file, toBinary(ModelProtoSchema, model));
  const r = await prepareFloat16Unet(file);
  assert.ok('file' in r, JSON.stringify(r));
  const converted = fromBinary(ModelProtoSchema, fs.readFileSync(r.file));
  const stored = converted.graph!.initializer.filter((i) => i.dataLocation === 1).map((i) => [i.dataType, i.externalData.find((e) => e.key === 'location')!.value]);
  assert.deepEqual(stored.sort(), [[FLOAT, 'model.asgd-float16.onnx.data'], [7, 'model.asgd-float16.onnx.data']]);
  const opts = { executionProviders: ['cpu'], logSeverityLevel: 3 as const };
  const [a, b] = await Promise.all([ort.InferenceSession.create(file, opts), ort.InferenceSession.create(r.file, opts)]);
  try {
    const xs = Float32Array.from({ length: 400 }, (_, i) => Math.sin(i * 0.3));
    const timestep = new ort.Tensor('float32', Float32Array.from([999]), [1]);
    const ra = await a.run({ timestep, x: new ort.Tensor('float32', xs, [1, 400]) });
    const rb = await b.run({ timestep, x: new ort.Tensor('float16', float32ToFloat16(xs), [1, 400]) });
    assert.deepEqual(rb['emb']!.data, ra['emb']!.data, 'the sinusoid in float32, bit for bit');
    assert.ok(maxDiff(toFloat32(rb['y']!), ra['y']!.data as Float32Array) < 2e-3);
  } finally {
    await Promise.all([a.release(), b.release()]);
  }
});

test('a cancelled load stops the conversion between tensors and leaves no file behind', async () => {
  const dir = await copyModel('external-data');
  const unetDir = path.join(dir, 'unet');
  const before = fs.readdirSync(unetDir).sort();
  const r = await prepareFloat16Unet(path.join(unetDir, 'model.onnx'), { cacheDir: tempDir('f16-cancel'), signal: AbortSignal.abort() });
  assert.ok('reason' in r);
  assert.match(r.reason, /could not be written .*cancelled/);
  assert.deepEqual(fs.readdirSync(unetDir).sort(), before);
});

test('a conversion that fails while writing leaves no file behind and says why', async () => {
  const dir = await copyModel('external-data');
  const unetDir = path.join(dir, 'unet');
  const data = fs.readdirSync(unetDir).find((f) => !f.endsWith('.onnx') && !f.endsWith('.json'))!;
  // The weights file cut short: the converter reads past its end on one of the later tensors.
  const full = fs.readFileSync(path.join(unetDir, data));
  fs.writeFileSync(path.join(unetDir, data), full.subarray(0, Math.floor(full.length / 2)));
  const before = fs.readdirSync(unetDir).sort();
  const r = await prepareFloat16Unet(path.join(unetDir, 'model.onnx'), { cacheDir: tempDir('f16-cache') });
  assert.ok('reason' in r);
  assert.match(r.reason, /could not be written .*ends before byte/);
  assert.deepEqual(fs.readdirSync(unetDir).sort(), before);
});

async function generate(model: string, params: GenerateParams, options: PipelineOptions = {}): Promise<GenerateResult & { info: Awaited<ReturnType<typeof loadPipeline>>['info'] }> {
  const p = await loadPipeline(model, { threads: 1, ...options });
  try {
    return { ...(await p.generate(params)), info: p.info };
  } finally {
    await p.close();
  }
}

test('unetPrecision float16 on the shipped model: asg at 256 px within a few levels of the float32 run, recorded in the metadata; a float16 export is left as it is', async () => {
  const dir = tempDir('f16-shipped-model');
  fs.cpSync(SHIPPED, dir, { recursive: true });
  const params: GenerateParams = { prompt: 'a red circle on a blue background', seed: 3, steps: 4, width: 256, height: 256, method: 'asg' };
  const native = await generate(dir, params);
  const half = await generate(dir, params, { unetPrecision: 'float16' });
  assert.equal(native.metadata.unetPrecision, undefined);
  assert.equal(half.metadata.unetPrecision, 'float16');
  assert.equal(half.info.unetFloat16?.applied, true);
  assert.equal(half.info.components.unet?.file, path.join('unet', 'model.asgd-float16.onnx'));
  assert.ok(half.info.notes.some((n) => /^UNet converted to float16 \(model\.asgd-float16\.onnx\): 370 tensors; 6 nodes kept in float32/.test(n)), half.info.notes.join('\n'));
  const d = maxDiff(half.image.data, native.image.data);
  let sum = 0;
  for (let i = 0; i < half.image.data.length; i++) sum += Math.abs(half.image.data[i]! - native.image.data[i]!);
  assert.ok(d > 0 && d <= 12 && sum / half.image.data.length < 0.5, `max ${d}, mean ${sum / half.image.data.length}`);

  const fp16 = await generate(await tinyModel('fp16'), { prompt: 'a circle', seed: 1, steps: 2, width: 64, height: 64, method: 'direct' }, { unetPrecision: 'float16' });
  assert.deepEqual(fp16.info.unetFloat16, { applied: false, reason: ALREADY_FLOAT16 });
  assert.equal(fp16.metadata.unetPrecision, undefined);
  assert.deepEqual(fp16.warnings, []);
  assert.ok(fp16.info.notes.some((n) => n.includes('the UNet export is float16 already')));
});

test("SD3's transformer converts too: its float timestep stays float32, and a generation is within float16 rounding of the float32 one", async () => {
  const dir = tempDir('f16-sd3');
  await writeTinySd3Model(dir);
  const params: GenerateParams = { prompt: 'a red circle', seed: 2, steps: 3, width: 128, height: 128, method: 'asg' };
  const native = await generate(dir, params);
  const half = await generate(dir, params, { unetPrecision: 'float16' });
  assert.equal(half.info.unetFloat16?.applied, true);
  assert.equal(half.info.components.unet?.file, path.join('transformer', 'model.asgd-float16.onnx'));
  const types = Object.fromEntries(half.info.components.unet!.inputs.map((io) => [io.name, io.type]));
  assert.equal(types['timestep'], 'float32');
  assert.equal(types['hidden_states'], 'float16');
  assert.ok(maxDiff(half.latent, native.latent) < 0.05, `latent ${maxDiff(half.latent, native.latent)}`);
});

test('a UNet whose activations pass float16 range (conv_in x 1e5): finite in float32; converted, its latent is NaN and the run says so and why, not blaming the VAE', async () => {
  const dir = await copyModel('standard');
  const file = path.join(dir, 'unet', 'model.onnx');
  const model = fromBinary(ModelProtoSchema, fs.readFileSync(file));
  const w = model.graph!.initializer.find((t) => t.name === 'conv_in.weight')!;
  const values = new Float32Array(new Uint8Array(w.rawData).buffer);
  for (let i = 0; i < values.length; i++) values[i]! *= 1e5;
  w.rawData = new Uint8Array(values.buffer);
  fs.writeFileSync(file, toBinary(ModelProtoSchema, model));
  const params: GenerateParams = { prompt: 'a circle', seed: 1, steps: 2, width: 64, height: 64, method: 'direct' };
  const native = await generate(dir, params);
  assert.ok(native.latent.every(Number.isFinite));
  assert.deepEqual(native.warnings, []);
  const half = await generate(dir, params, { unetPrecision: 'float16' });
  assert.ok(half.latent.every((v) => Number.isNaN(v)));
  assert.deepEqual(half.warnings, [
    `The denoised latent holds ${half.latent.length} of ${half.latent.length} values that are NaN or infinite, so the image is wrong: the UNet's activations overflowed (a float16 UNet: run a float32 export, or leave out --unet-precision float16), or the export is broken`,
  ]);
});

test('asgd: --unet-precision float16 is recorded, a re-run (--from) converts again and gives the same image; a wrong value is refused', async () => {
  const dir = await copyModel('standard');
  const out = tempDir('f16-cli');
  const bin = path.join(ROOT, 'bin', 'asgd.js');
  const a = path.join(out, 'a.png');
  const b = path.join(out, 'b.png');
  await run(process.execPath, [bin, 'generate', '-m', dir, '-p', 'a red circle', '--seed', '4', '--steps', '2', '-W', '128', '-H', '128', '--method', 'asg', '--unet-precision', 'float16', '-o', a, '-q']);
  await run(process.execPath, [bin, 'generate', '-m', dir, '--from', a, '-o', b, '-q']);
  const info = JSON.parse((await run(process.execPath, [bin, 'info', dir, '--unet-precision', 'float16', '--json'])).stdout);
  assert.equal(info.unetFloat16.applied, true);
  const [pa, pb] = await Promise.all([a, b].map((f) => import('sharp').then((s) => s.default(f).raw().toBuffer())));
  assert.ok(pa.equals(pb), 'the re-run gives the same pixels');
  const text = (await run(process.execPath, [bin, 'info', dir, '--unet-precision', 'float16'])).stdout;
  assert.match(text, /^Precision: +UNet converted to float16 \(\d+ tensors; \d+ nodes kept in float32; \d+ Casts\)$/m);
  const bad = await run(process.execPath, [bin, 'generate', '-m', dir, '-p', 'x', '--unet-precision', 'half', '-o', path.join(out, 'c.png')]).then(() => undefined, (e: { stderr: string; code: number }) => e);
  assert.ok(bad, 'refused');
  assert.match(bad.stderr, /--unet-precision.*'half' is invalid.*native, float16/s);
  assert.equal(fs.existsSync(path.join(out, 'c.png')), false);
});

test("the browser's streamed conversion (Float16WeightStream) writes Node's bytes whatever the chunk sizes, float32 values split between chunks included; a file cut short names its tensor", () => {
  const model = fromBinary(ModelProtoSchema, fs.readFileSync(SHIPPED_UNET));
  // An int64 tensor beside the float weights, as exports keep shape constants: copied as it is (301 values: its length
  // is no multiple of 4 bytes' worth of chunks).
  const int64 = new BigInt64Array(301).map((_, i) => BigInt(i * 7919 - 1000));
  model.graph!.initializer.push(create(TensorProtoSchema, { name: 'shape_constant', dims: [301n], dataType: 7, rawData: new Uint8Array(int64.buffer) }));
  const file = moveToExternalData(model, 'model.onnx_data');
  const plan = float16Plan(toBinary(ModelProtoSchema, model), { dataLocation: 'model.asgd-float16.onnx.data' });
  if ('reason' in plan) throw new Error(plan.reason);
  const read = (e: { offset: number; length?: number }) => file.subarray(e.offset, e.offset + e.length!);
  // Node's conversion: each weight whole (src/node/float16-unet.ts writes these bytes).
  const expected = new Uint8Array(plan.dataBytes);
  for (const w of plan.weights) expected.set(float16WeightBytes(w, read), w.offset);
  const byFile = streamedWeights('unet/model.onnx', plan.weights);
  assert.deepEqual([...byFile.keys()], ['model.onnx_data']);
  const streamed = byFile.get('model.onnx_data')!;
  // Both kinds are streamed: weights converted to float16 and weights kept float32 (copied as they are).
  assert.deepEqual([...new Set(streamed.map((s) => s.w.mode))].sort(), ['copy', 'float16']);
  let seed = 7;
  const random = (n: number) => 1 + ((seed = (seed * 1103515245 + 12345) % 2 ** 31) % n);
  const chunkings: [string, () => number][] = [['whole', () => file.length], ['1 MiB', () => 1 << 20], ['1-4099 bytes', () => random(4099)], ['1-7 bytes', () => random(7)]];
  for (const [name, size] of chunkings) {
    const data: Uint8Array = new Uint8Array(plan.dataBytes);
    for (const w of plan.weights) if (w.source.dataLocation !== 1) data.set(float16WeightBytes(w), w.offset);
    const stream: Float16WeightStream = new Float16WeightStream(streamed, data);
    for (let at = 0; at < file.length; ) {
      const end = Math.min(file.length, at + size());
      stream.push(file.subarray(at, end));
      at = end;
    }
    assert.equal(stream.incomplete(), undefined, name);
    assert.equal(stream.received, file.length);
    assert.ok(Buffer.from(data).equals(Buffer.from(expected)), `chunks of ${name}: the bytes Node writes`);
  }
  // Written front to back (Float16FileWriter: the browser streams the result into its storage, holding no buffer of
  // its size): the same bytes, and with the file's tensors in the plan's order, only the weights in progress held.
  for (const [name, size] of chunkings) {
    const parts: Uint8Array[] = [];
    let held = 0;
    let mostHeld = 0;
    const writer: Float16FileWriter = new Float16FileWriter(plan.weights, plan.dataBytes, (b) => void parts.push(b));
    const stream: Float16WeightStream = new Float16WeightStream(streamed, writer);
    for (const w of plan.weights) if (w.source.dataLocation !== 1) writer.done(w, float16WeightBytes(w));
    for (let at = 0; at < file.length; ) {
      const end = Math.min(file.length, at + size());
      stream.push(file.subarray(at, end));
      at = end;
      held = streamed.filter((s) => s.offset < at).reduce((n, s) => n + s.w.length, 0) - writer.emitted;
      mostHeld = Math.max(mostHeld, held);
    }
    assert.equal(writer.emitted, plan.dataBytes, name);
    assert.ok(Buffer.concat(parts).equals(Buffer.from(expected)), `front to back in chunks of ${name}: the bytes Node writes`);
    const largest = Math.max(...plan.weights.map((w) => w.length));
    assert.ok(mostHeld <= largest + 4096, `chunks of ${name}: at most ${mostHeld} bytes held, the largest weight ${largest}`);
  }
  // A file whose tensors lie in another order than the plan's: still the same bytes (held until their turn).
  const reversed = streamed.map((s) => ({ ...s, offset: file.length - s.offset - s.length }));
  const mirrored = file.slice();
  for (const s of streamed) mirrored.set(file.subarray(s.offset, s.offset + s.length), file.length - s.offset - s.length);
  const parts: Uint8Array[] = [];
  const writer: Float16FileWriter = new Float16FileWriter(plan.weights, plan.dataBytes, (b) => void parts.push(b));
  const stream = new Float16WeightStream(reversed, writer);
  for (const w of plan.weights) if (w.source.dataLocation !== 1) writer.done(w, float16WeightBytes(w));
  for (let at = 0; at < mirrored.length; at += 1 << 16) {
    stream.push(mirrored.subarray(at, at + (1 << 16)));
    if (at + (1 << 16) < mirrored.length) assert.ok(writer.emitted < plan.dataBytes);
  }
  assert.ok(Buffer.concat(parts).equals(Buffer.from(expected)), 'tensors in reverse order: the bytes Node writes');
  const short = new Float16WeightStream(streamed, new Uint8Array(plan.dataBytes));
  short.push(file.subarray(0, file.length >> 1));
  const cut = short.incomplete()!;
  assert.ok(cut.offset + cut.length > file.length >> 1 && cut.offset < file.length, `${cut.w.name} at ${cut.offset}`);
  assert.equal(short.received, file.length >> 1);
});
