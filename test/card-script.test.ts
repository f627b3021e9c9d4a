/**
 * The on-the-card scripts at small scale (scripts/device/sd_models.py, bench/card.ts): the torch-built SDXL-layout
 * UNet (widths / 10, depth 1) is timed and exported to ONNX float16 with external data, the export loads through
 * the project's loader with the contract's IO and gives finite outputs on the CPU, and the SDXL-layout folder
 * built around it generates. Needs a python3 with torch and onnx (Debian's python3-torch here); installed by the test setup.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { benchFusion, benchGenerate, benchProbe, benchUnet, benchUnetIoCard, writeFolder } from '../bench/card.ts';
import type { UnetIoCase } from '../bench/unet-io.ts';
import { benchVaeCard, benchVaeDtype, vaeCardOptions, vaeDtypeOptions } from '../bench/card-vae.ts';
import { openSession, releaseSession } from '../src/onnx/session.ts';
import { UnetAdapter } from '../src/onnx/unet.ts';
import { TINY_TEXT } from './fixtures/index.ts';
import { NO_TORCH_PYTHON, torchPython } from './helpers/torch-python.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// The test command's setup (scripts/setup-system.mjs) installs Debian's python3-torch and python3-onnx.
const PY = torchPython();
let dir = '';
let exported: Record<string, any> = {};

before(() => {
  assert.ok(PY, NO_TORCH_PYTHON);
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-card-'));
  const r = spawnSync(PY, ['scripts/device/sd_models.py', '--model', 'sdxl', '--small', '--device', 'cpu', '--latent', '16',
    '--iters', '1', '--warmup', '0', '--out-dir', dir, '--json', path.join(dir, 'torch-sdxl.json')], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, `sd_models.py failed:\n${r.stderr.slice(-3000)}`);
  exported = JSON.parse(fs.readFileSync(path.join(dir, 'torch-sdxl.json'), 'utf8'));
});

after(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('the small SDXL-layout UNet is timed in torch and exported as float16 with external data and the contract IO', () => {
  assert.equal(exported.model, 'sdxl');
  assert.deepEqual(exported.config.block_out_channels, [32, 64, 128]);
  assert.equal(exported.config.cross_attention_dim, TINY_TEXT.hidden + TINY_TEXT.hidden2);
  for (const b of ['batch2', 'batch1', 'batch4']) {
    assert.ok(exported.torch_eager[b].median_ms > 0, b);
    assert.equal(exported.torch_eager[b].finite, true, b);
  }
  const e = exported.export;
  assert.equal(e.dtype, 'float16');
  assert.deepEqual(e.inputs.map((i: { name: string }) => i.name), ['sample', 'timestep', 'encoder_hidden_states', 'text_embeds', 'time_ids']);
  assert.deepEqual(e.inputs.map((i: { type: string }) => i.type), ['float16', 'int64', 'float16', 'float16', 'float16']);
  assert.deepEqual(e.inputs[0].shape, ['batch', 4, 'height', 'width']);
  assert.deepEqual(e.outputs, [{ name: 'out_sample', type: 'float16', shape: ['batch', 4, 'height', 'width'] }]);
  assert.ok(e.up_block_attn2_softmax_nodes > 0, 'up-block attn2 Softmax nodes (the attention probe reads them)');
  const files = fs.readdirSync(path.join(dir, 'sdxl', 'unet')).sort();
  assert.deepEqual(files, ['config.json', 'model.onnx', 'model.onnx_data']);
  // The weights are in the external file, the graph alone in model.onnx.
  assert.ok(fs.statSync(path.join(dir, 'sdxl', 'unet', 'model.onnx_data')).size > 4 * fs.statSync(path.join(dir, 'sdxl', 'unet', 'model.onnx')).size);
});

test('the export loads through the project loader and gives finite outputs on the CPU', async () => {
  const file = path.join(dir, 'sdxl', 'unet', 'model.onnx');
  const s = await openSession(file, 'unet', { provider: 'cpu', threads: 1 });
  try {
    const unet = new UnetAdapter(s);
    assert.equal(unet.isSdxl, true);
    assert.equal(unet.staticBatch, undefined);
    assert.equal(unet.timestep.type, 'int64');
    const h = 16;
    const w = 24; // dynamic height and width: not the traced 16x16
    const dim = TINY_TEXT.hidden + TINY_TEXT.hidden2;
    const cond = { hidden: Float32Array.from({ length: 2 * 77 * dim }, (_, i) => Math.sin(i)), tokens: 77, dim, textEmbeds: new Float32Array(2 * 48).fill(0.25), pooledDim: 48 };
    const call = { sample: Float32Array.from({ length: 4 * h * w }, (_, i) => Math.cos(i * 0.3)), channels: 4, height: h, width: w, timestep: 981, guidanceScale: 7.5, timeIds: [128, 192, 0, 0, 128, 192] };
    const both = (await unet.run(call, cond)).output;
    const half = (await unet.run({ ...call, part: 'cond' }, cond)).output;
    assert.equal(both.length, 4 * h * w);
    assert.equal(half.length, 4 * h * w);
    assert.ok(both.every(Number.isFinite) && half.every(Number.isFinite));
    assert.ok(both.some((v) => v !== 0) && both.some((v, i) => v !== half[i]), 'CFG combination differs from the conditional half');
  } finally {
    await releaseSession(s);
  }
});

test('bench/card.ts times the export, builds the SDXL-layout folder around it, and generates with it', async () => {
  const unet = await benchUnet({ unet: path.join(dir, 'sdxl', 'unet', 'model.onnx'), provider: 'cpu', latent: '16', warmup: '0', iters: '1' });
  assert.deepEqual(unet['finite'], { batch2: true, batch1: true, batch4: true });
  assert.ok((unet['run_batch1_over_batch2'] as number) > 0);
  assert.ok((unet['run_batch4_over_batch2'] as number) > 0);
  const folder = path.join(dir, 'folder');
  const written = await writeFolder({ dir: folder, 'unet-dir': path.join(dir, 'sdxl', 'unet'), text: `${TINY_TEXT.hidden},${TINY_TEXT.hidden2},${TINY_TEXT.projection2}` });
  assert.deepEqual((written['unetFiles'] as string[]).sort(), ['config.json', 'model.onnx', 'model.onnx_data']);
  const gen = await benchGenerate({ model: folder, devices: 'cpu', width: '512', steps: '2', 'warmup-steps': '0' });
  const r = gen['result'] as { size: number[]; unetEvaluations: number; latentFinite: boolean; timings: Record<string, number> };
  assert.deepEqual(r.size, [512, 512]); // 2x the small UNet's native 256 px (sample_size 32)
  assert.ok(r.unetEvaluations > 2, 'asg evaluates several patches per step');
  assert.equal(r.latentFinite, true);
  for (const k of ['unetMs', 'hostMs', 'decodeMs', 'totalMs']) assert.ok(r.timings[k]! > 0, k);
  // The progress written as it went: the last step, then the VAE's tile runs (all of them, the run not cut).
  const partial = gen['partial'] as { step: number; totalSteps: number; decode?: { tilesDone: number; tilesTotal: number; ms: number } };
  assert.equal(partial.step, partial.totalSteps);
  assert.ok(partial.decode && partial.decode.tilesTotal > 0 && partial.decode.tilesDone === partial.decode.tilesTotal, JSON.stringify(partial));
});

test('bench/card.ts probe builds the attention-probe graph from the export and times it against the plain UNet', async () => {
  const r = await benchProbe({ unet: path.join(dir, 'sdxl', 'unet', 'model.onnx'), provider: 'cpu', latent: '16', warmup: '0', iters: '2' });
  assert.equal(r['reason'], undefined, String(r['reason']));
  assert.ok((r['layers'] as number) > 0, 'up-block cross-attention layers found');
  assert.equal(r['probeOutputs'], 1 + (r['layers'] as number), 'the UNet output and one map per layer');
  const bytes: number[] = [];
  for (const b of ['batch2', 'batch1']) {
    const t = r[b] as { plainMs: number; probeMs: number; probeOverPlain: number; finite: boolean; mapBytes: number };
    assert.equal(t.finite, true, b);
    assert.ok(t.plainMs > 0 && t.probeMs > 0, b);
    assert.equal(t.probeOverPlain, t.probeMs / t.plainMs, b);
    bytes.push(t.mapBytes);
  }
  // One float32 per query position and layer, the conditional row's alone: the same at either batch, at most the
  // 16x16 latent's 256 positions per layer (the 77 token columns are reduced in-graph).
  assert.equal(bytes[0], bytes[1]);
  assert.ok(bytes[0]! > 0 && bytes[0]! <= 4 * 256 * (r['layers'] as number), `${bytes[0]} bytes`);
});

test('bench/card.ts vae: an SD-width tiled decode, per-tile statistics then exact at two state budgets: the same image, fewer states kept at the smaller', async () => {
  const writes: Record<string, unknown>[] = [];
  const r = await benchVaeCard(vaeCardOptions({ provider: 'cpu', size: '128', tile: '8', overlap: '4', budgets: '1024,16' }), (x) => writes.push(structuredClone(x)));
  const cases = r['cases'] as { case: string; ms: number; tiles: number; resumedFrom: number | null; maxDiffFromFirst?: number; overOff?: number }[];
  assert.deepEqual(cases.map((c) => c.case), ['off', 'exact, 1024 MiB', 'exact, 16 MiB']);
  assert.ok(cases.every((c) => c.ms > 0 && c.tiles === 9), JSON.stringify(cases));
  // The tail after the attention has 27 norm layers (cuts 0-26): all kept at 1024 MiB, fewer at 16.
  assert.equal(cases[1]!.resumedFrom, 26);
  assert.ok(cases[2]!.resumedFrom! >= 0 && cases[2]!.resumedFrom! < 26, String(cases[2]!.resumedFrom));
  assert.equal(cases[1]!.maxDiffFromFirst, 0);
  assert.equal(cases[2]!.maxDiffFromFirst, 0);
  assert.equal(cases[2]!.overOff, cases[2]!.ms / cases[0]!.ms);
  assert.ok(writes.length >= 3, 'the JSON is written after each case');
  assert.ok(cases.slice(1).every((c) => (c as { statesOnHost?: boolean }).statesOnHost === true), 'on the CPU the states are on the host');
  assert.throws(() => vaeCardOptions({ budgets: '1024,x' }), /--budgets must list whole numbers of MiB/);
  // On webgpu the first budget runs again with the states on the host, unless told otherwise; elsewhere never.
  assert.deepEqual(vaeCardOptions({}).hostBudgets, [4096]);
  assert.deepEqual(vaeCardOptions({ 'host-budgets': '' }).hostBudgets, []);
  assert.deepEqual(vaeCardOptions({ provider: 'cpu' }).hostBudgets, []);
  assert.throws(() => vaeCardOptions({ provider: 'cpu', 'host-budgets': '1024' }), /--host-budgets needs --provider webgpu/);
  assert.throws(() => vaeCardOptions({ size: '100' }), /--size must be a multiple of 8/);
});

test('bench/card.ts vae-dtype: a float16 decoder as exported against the float32 graph force_upcast makes of it', async () => {
  const r = await benchVaeDtype(vaeDtypeOptions({ provider: 'cpu', size: '64', iters: '1' }));
  assert.equal(r['size'], 64);
  assert.ok((r['float16Ms'] as number) > 0 && (r['float32Ms'] as number) > 0);
  assert.deepEqual(r['nonFinite'], { float16: 0, float32: 0 });
  // The same weights: apart only by float16's rounding between the ops (measured 1.3e-3 at 128 px on the CPU).
  assert.ok((r['maxDiff'] as number) > 0 && (r['maxDiff'] as number) < 0.05, String(r['maxDiff']));
  assert.deepEqual(vaeDtypeOptions({}), { provider: 'webgpu', size: 1024, iters: 3 });
  assert.throws(() => vaeDtypeOptions({ size: '100' }), /--size must be a multiple of 8/);
  assert.throws(() => vaeDtypeOptions({ iters: '0' }), /--iters must be an integer of at least 1/);
});

test('bench/card.ts unet-io runs the float16 export on webgpu (lavapipe) with the conditioning on the device, equal to host-fed', async () => {
  const r = await benchUnetIoCard({ unets: path.join(dir, 'sdxl', 'unet', 'model.onnx'), cases: '', latent: '16', iters: '1', warmup: '0' });
  const cases = r['cases'] as UnetIoCase[];
  assert.equal(cases.length, 1);
  assert.equal(cases[0]!.deviceMaxDiff, 0, 'device-resident conditioning gives the host-fed output');
  assert.equal(cases[0]!.uploadsCounted, 2, 'encoder_hidden_states and text_embeds, once');
  assert.equal(cases[0]!.conditioningBytes, 2 * 2 * (77 * (TINY_TEXT.hidden + TINY_TEXT.hidden2) + 48), 'float16 bytes');
  assert.match(r['table'] as string, /device-resident/);
});

test("bench/card.ts fusion checks the attention fusion on this torch's exports of both diffusers processors", async () => {
  const classic = path.join(dir, 'fusion-classic');
  let r = spawnSync(PY!, ['scripts/reference/attention_export.py', classic], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr.slice(-2000));
  const c = await benchFusion({ dir: classic });
  assert.deepEqual(c['fusion'], { fused: 1, left: 0 });
  assert.equal(c['numHeads'], 5);
  assert.ok((c['fusedVsTorch'] as number) < 1e-5, String(c['fusedVsTorch']));
  assert.deepEqual((c['probe'] as { layers: string[] }).layers, ['/up_blocks.0/attentions.0/transformer_blocks.0/attn2'], 'the probe scan finds the layer');
  // torch 2 exports scaled_dot_product_attention; torch 1.x (Debian 12's) has none, and says so (exit 3).
  const sdpa = path.join(dir, 'fusion-sdpa');
  r = spawnSync(PY!, ['scripts/reference/attention_export.py', sdpa, '--processor', 'sdpa'], { cwd: ROOT, encoding: 'utf8' });
  const s = await benchFusion({ dir: sdpa });
  if (r.status === 3) assert.match(String((s['meta'] as { unsupported: string }).unsupported), /has no scaled_dot_product_attention/);
  else {
    assert.equal(r.status, 0, r.stderr.slice(-2000));
    assert.deepEqual(s['fusion'], { fused: 1, left: 0 });
    assert.equal(typeof s['scale'], 'number', 'the default 1 / sqrt of the head size, written out for the padded q and k');
    assert.deepEqual((s['probe'] as { layers: string[] }).layers, ['/up_blocks.0/attentions.0/transformer_blocks.0/attn2']);
    assert.ok((s['fusedVsTorch'] as number) < 1e-5, String(s['fusedVsTorch']));
  }
});

test('sd_models.py --exporter dynamo (the card part dynamo-unet): where this torch lacks it, exit 3 and the JSON says why; where it has it, every attention fused and the probe layers found', async () => {
  const out = path.join(dir, 'dynamo');
  const json = path.join(out, 'export.json');
  const r = spawnSync(PY!, ['scripts/device/sd_models.py', '--model', 'sd15', '--small', '--device', 'cpu', '--dtype', 'float32', '--no-time',
    '--exporter', 'dynamo', '--export-attention', 'sdpa', '--out-dir', out, '--json', json], { cwd: ROOT, encoding: 'utf8' });
  const result = JSON.parse(fs.readFileSync(json, 'utf8'));
  if (r.status === 3) {
    assert.match(result.unsupported, /has no dynamo exporter|needs onnxscript/);
    assert.equal(result.export, undefined);
    assert.equal(fs.existsSync(path.join(out, 'sd15', 'unet', 'model.onnx')), false);
  } else {
    assert.equal(r.status, 0, r.stderr.slice(-3000));
    assert.match(result.export.exporter, /^dynamo/);
    const unet = path.join(out, 'sd15', 'unet', 'model.onnx');
    const u = await benchUnet({ unet, provider: 'cpu', iters: '1', warmup: '0', batches: '2', adapter: '0' });
    const fused = u['fused'] as { layers: number; run_batch2: { maxAbsDiffFromPlain: number } };
    assert.equal(fused.layers, result.export.softmax_nodes, 'every attention fused');
    assert.ok(fused.run_batch2.maxAbsDiffFromPlain < 1e-4, String(fused.run_batch2.maxAbsDiffFromPlain));
    const p = await benchProbe({ unet, provider: 'cpu', iters: '1', warmup: '0' });
    assert.equal(p['layers'], result.export.up_block_attn2_softmax_nodes, 'the probe finds every up-block cross-attention');
  }
});

test("sd_models.py --reference-out: PyTorch's output on card.js's inputs, which the float32 export's output matches (unet and variants --reference)", async () => {
  const out = path.join(dir, 'reference');
  const prefix = path.join(out, 'ref', 'sd15');
  const r = spawnSync(PY!, ['scripts/device/sd_models.py', '--model', 'sd15', '--small', '--device', 'cpu', '--dtype', 'float32', '--latent', '16',
    '--iters', '1', '--warmup', '0', '--out-dir', out, '--json', path.join(out, 'torch.json'), '--reference-out', prefix], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  const meta = JSON.parse(fs.readFileSync(`${prefix}.json`, 'utf8'));
  // On the CPU, torch times float32: one reference, no float16 one.
  assert.deepEqual(Object.keys(meta.files), ['float32']);
  assert.deepEqual(meta.files.float32.shape, [2, 4, 16, 16]);
  assert.equal(fs.statSync(`${prefix}-float32.f32`).size, 4 * 2 * 4 * 16 * 16);
  const unet = path.join(out, 'sd15', 'unet', 'model.onnx');
  const u = await benchUnet({ unet, provider: 'cpu', latent: '16', iters: '1', warmup: '0', batches: '2', adapter: '0', reference: prefix });
  type Vs = { ours: Record<string, { maxAbs: number; meanAbs: number }> };
  // The same weights and inputs through ONNX Runtime: float32 rounding apart. Different inputs would be off by
  // the output's own size (up to about 1.8 here).
  const plain = (u['vsTorch'] as Vs).ours['float32']!;
  assert.ok(plain.maxAbs < 1e-4 && plain.meanAbs > 0, JSON.stringify(plain));
  const fused = ((u['fused'] as { vsTorch: Vs }).vsTorch).ours['float32']!;
  assert.ok(fused.maxAbs < 1e-4, JSON.stringify(fused));
  // A reference of another latent is refused, naming both.
  await assert.rejects(benchUnet({ unet, provider: 'cpu', latent: '8', iters: '1', warmup: '0', reference: prefix }), /holds a batch-2 call at latent 16; this call is batch 2 at latent 8 \(give --latent 16\)/);
  await assert.rejects(benchUnet({ unet, provider: 'cpu', latent: '16', iters: '1', warmup: '0', reference: path.join(out, 'none') }), /none\.json is missing/);
});
