/**
 * The check of ONNX Runtime's WebGPU flash-attention kernel (src/node/runner/flash-check.ts) and what follows from
 * it: the fused attention's form (attention-files.ts attentionForm, fused-attention.ts flashForm).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { float32Tensor, makeTensor, openSession, readFloat, releaseSession } from '../src/onnx/session.ts';
import { fusedLoadOptions, isFusedAttentionFile, prepareFusedAttention } from '../src/node/fused-attention.ts';
import { attentionForm } from '../src/node/attention-files.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { checkFlashAttention, parseDevices } from '../src/node/runner/devices.ts';
import { FLASH_CASES, FLASH_TOLERANCE, attentionFormFor, referenceAttention, runFlashCheck, type FlashCheck } from '../src/graph/attention-check.ts';
import { checkMultiHeadAttention } from '../src/node/runner/flash-check.ts';

const SHIPPED = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');
const UNET = path.join(SHIPPED, 'unet', 'model.onnx');

test('the float64 reference attention: a hand-computed case', () => {
  // One head of size 1, two keys: scores q·k / 1 = [0, ln 3], softmax [1/4, 3/4], o = 1/4 · 2 + 3/4 · 6 = 5.
  const o = referenceAttention(new Float32Array([1]), new Float32Array([0, Math.log(3)]), new Float32Array([2, 6]), { type: 'float32', queries: 1, keys: 2, heads: 1, headSize: 1 });
  assert.ok(Math.abs(o[0]! - 5) < 1e-6, String(o[0]));
});

test("the check's MultiHeadAttention node on the CPU provider matches the reference in every case", async () => {
  const r = await checkMultiHeadAttention('cpu');
  assert.equal(r.length, FLASH_CASES.length);
  for (const c of r) {
    assert.ok(c.ok, JSON.stringify(c));
    // Far inside the tolerance: the CPU computes in float32 (float16 inputs and output rounded).
    assert.ok(c.maxError < (c.type === 'float32' ? 1e-5 : 2e-3), JSON.stringify(c));
  }
  // Keys beyond any adapter's subgroup size, and SD's head sizes.
  assert.ok(r.some((c) => c.keys > 128) && r.some((c) => c.keys === 77));
  assert.deepEqual([...new Set(r.map((c) => c.headSize))].sort(), [40, 64]);
});

test("the check on this machine's WebGPU adapter, run in a process of its own, agrees with the same check run here", async () => {
  const child = await checkFlashAttention();
  assert.ok(!('reason' in child), JSON.stringify(child));
  const here = await checkMultiHeadAttention('webgpu');
  assert.deepEqual(child.cases.map((c) => c.ok), here.map((c) => c.ok));
  for (const [i, c] of child.cases.entries()) {
    assert.equal(c.ok, c.maxError <= FLASH_TOLERANCE[c.type], JSON.stringify(c));
    assert.ok(Math.abs(c.maxError - here[i]!.maxError) <= 1e-3 * Math.max(1, here[i]!.maxError), `${c.maxError} vs ${here[i]!.maxError}`);
  }
  assert.equal(child.ok, child.cases.every((c) => c.ok));
  assert.equal(await checkFlashAttention(), child, 'once per process');
});

test('the fused attention takes the flash form only where a WebGPU device is present and the check passes', async () => {
  const cases = (ok: boolean) => FLASH_CASES.map((c) => ({ ...c, ok, maxError: ok ? 1e-4 : 0.08 }));
  let asked = 0;
  const check = (r: FlashCheck) => async () => {
    asked++;
    return r;
  };
  assert.deepEqual(await attentionForm(parseDevices('cpu,cpu'), check({ ok: true, cases: cases(true), ms: 1 })), {
    form: 'padded', formReason: 'no WebGPU device (the form of every other provider)',
  });
  assert.equal(asked, 0, 'no check without a WebGPU device');
  const right = await attentionForm(parseDevices('cpu,webgpu:0'), check({ ok: true, cases: cases(true), ms: 1 }));
  assert.deepEqual(right, { form: 'flash', formReason: "ONNX Runtime's WebGPU flash-attention kernel checked right on this adapter (largest error 1.0e-4 in float32, 1.0e-4 in float16)" });
  const wrong = await attentionForm(parseDevices('webgpu:0'), check({ ok: false, cases: cases(false), ms: 1 }));
  assert.deepEqual(wrong, { form: 'padded', formReason: "ONNX Runtime's WebGPU flash-attention kernel is wrong on this adapter (largest error 8.0e-2 in float32, 8.0e-2 in float16)" });
  const failed = await attentionForm(parseDevices('webgpu:0'), check({ ok: false, reason: 'no adapter' }));
  assert.deepEqual(failed, { form: 'padded', formReason: "the check of ONNX Runtime's WebGPU flash-attention kernel did not run (no adapter)" });
});

test('an adapter without float16 shaders: its float16 cases are left out, any other failure is the check failing', async () => {
  const exact = async (c: (typeof FLASH_CASES)[number], x: { q: Float32Array; k: Float32Array; v: Float32Array }) => Float32Array.from(referenceAttention(x.q, x.k, x.v, c));
  const noF16 = await runFlashCheck(async (c, x) => {
    if (c.type === 'float16') throw new Error("Non-zero status code returned while running MultiHeadAttention node. Status Message: shader_helper.cc:416 GenerateSourceCode Program CopyKVCache requires f16 but the device does not support it.");
    return exact(c, x);
  }, () => 0);
  assert.ok('cases' in noF16 && noF16.ok, JSON.stringify(noF16));
  assert.deepEqual(noF16.cases.map((c) => [c.type, c.ok, c.unsupported ?? '']), [
    ['float32', true, ''], ['float32', true, ''],
    ['float16', true, 'Program CopyKVCache requires f16 but the device does not support it.'], ['float16', true, 'Program CopyKVCache requires f16 but the device does not support it.'],
  ]);
  assert.match(attentionFormFor(noF16).formReason, /checked right on this adapter \(largest error [0-9.]+e-\d+ in float32, float16 not supported by the adapter\)$/);
  const broken = await runFlashCheck(async (c, x) => {
    if (c.type === 'float16') throw new Error('device lost');
    return exact(c, x);
  }, () => 0);
  assert.deepEqual(broken, { ok: false, reason: 'device lost' });
  assert.equal(attentionFormFor(broken).form, 'padded');
});

test('the flash form is stored apart from the padded one, leaves q and k unpadded, and computes the same on the CPU', async () => {
  const padded = await prepareFusedAttention(UNET);
  const flash = await prepareFusedAttention(UNET, { flashForm: true });
  assert.ok('file' in padded && 'file' in flash);
  assert.ok(padded.file.endsWith('model.asgd-fused.onnx') && flash.file.endsWith('model.asgd-fused-flash.onnx'), `${padded.file} ${flash.file}`);
  assert.ok(isFusedAttentionFile(padded.file) && isFusedAttentionFile(flash.file) && !isFusedAttentionFile(UNET));
  assert.equal(flash.fused, padded.fused);
  const pads = (file: string) => fromBinary(ModelProtoSchema, fs.readFileSync(file)).graph!.node.filter((n) => n.opType === 'Pad').length;
  // The padding reshapes q and k into heads and pads each with zero channels (a Pad each); the flash form has none.
  assert.equal(pads(padded.file) - pads(UNET), 2 * padded.fused);
  assert.equal(pads(flash.file), pads(UNET));
  const outputs: Float32Array[] = [];
  for (const file of [UNET, padded.file, flash.file]) {
    const s = await openSession(file, 'unet', { provider: 'cpu', threads: 1 }, fusedLoadOptions(file));
    const r = await s.session.run({
      sample: float32Tensor(Float32Array.from({ length: 2 * 4 * 64 }, (_, i) => Math.sin(i)), [2, 4, 8, 8]),
      timestep: makeTensor('int64', new BigInt64Array([500n, 500n]), [2]),
      encoder_hidden_states: float32Tensor(Float32Array.from({ length: 2 * 77 * 64 }, (_, i) => Math.cos(i)), [2, 77, 64]),
    });
    outputs.push(readFloat(r['out_sample']!, 'out_sample'));
    await releaseSession(s);
  }
  for (const o of outputs.slice(1)) {
    let d = 0;
    for (let i = 0; i < o.length; i++) d = Math.max(d, Math.abs(o[i]! - outputs[0]![i]!));
    assert.ok(d < 1e-4, String(d));
  }
});

test('a pipeline on WebGPU with fuseAttention reports the form the check chose and generates with it', async () => {
  const expected = (await checkFlashAttention()).ok ? 'flash' : 'padded';
  const p = await loadPipeline(SHIPPED, { devices: 'webgpu:0', fuseAttention: true });
  try {
    const f = p.info.attentionFusion;
    assert.equal(f.applied, true);
    assert.equal(f.form, expected);
    assert.match(f.formReason ?? '', expected === 'flash' ? /checked right on this adapter/ : /is wrong on this adapter/);
    const r = await p.generate({ prompt: 'a red circle', steps: 2, seed: 3, method: 'direct', width: 128, height: 128 });
    assert.ok(r.latent.every(Number.isFinite));
  } finally {
    await p.close();
  }
  // On the CPU, padded as before, and no check is asked for.
  const c = await loadPipeline(SHIPPED, { devices: 'cpu', fuseAttention: true, threads: 1 });
  try {
    assert.equal(c.info.attentionFusion.applied, true);
    assert.deepEqual([c.info.attentionFusion.form, c.info.attentionFusion.formReason], ['padded', 'no WebGPU device (the form of every other provider)']);
  } finally {
    await c.close();
  }
});
