/**
 * `card.js profile` (bench/card-profile.ts): ONNX Runtime's profiler over UNet calls on WebGPU (lavapipe here),
 * summarised into wall time against the GPU's kernel time, by op and by program.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { benchProfileCard } from '../bench/card.ts';
import { summariseProfile, type ProfileSummary } from '../bench/card-profile.ts';

const UNET = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128', 'unet', 'model.onnx');

test('the profile of the shipped UNet on webgpu: each call the same kernels, GPU time within the wall time, shares summing to 1', async () => {
  const r = (await benchProfileCard({ unet: UNET, provider: 'webgpu', latent: '16', warmup: '1', iters: '2' })) as unknown as ProfileSummary & { callMs: number[] };
  assert.equal(r.runs, 2, 'the warm-up call is left out');
  assert.equal(r.callMs.length, 2);
  const [a, b] = r.perRun;
  assert.ok(a!.kernels > 100, `kernels per call: ${a!.kernels}`);
  assert.equal(a!.kernels, b!.kernels, 'the same graph dispatches the same kernels each call');
  for (const run of r.perRun) {
    assert.ok(run.gpuKernelMs > 0 && run.gpuKernelMs <= run.wallMs, `GPU ${run.gpuKernelMs} ms within the call's ${run.wallMs} ms`);
    assert.ok(run.hostNodeMs > 0);
  }
  const share = r.byOp.reduce((s, o) => s + o.share, 0);
  assert.ok(Math.abs(share - 1) < 1e-9, `op shares sum to ${share}`);
  assert.ok(Math.abs(r.byProgram.reduce((s, o) => s + o.share, 0) - 1) < 1e-9);
  assert.equal(r.byOp.reduce((s, o) => s + o.kernels, 0), a!.kernels);
  for (let i = 1; i < r.top.length; i++) assert.ok(r.top[i - 1]!.ms >= r.top[i]!.ms, 'dearest first');
  assert.ok(r.byOp.some((o) => o.op === 'Softmax'), 'the written-out attention runs Softmax kernels');
  assert.ok(!r.byOp.some((o) => o.op === 'MultiHeadAttention'));
  // ONNX Runtime 1.30 gates its subgroup kernels to Intel and its subgroup-matrix ones to adapters with that feature:
  // lavapipe has neither, so every matrix product here runs on plain WGSL programs.
  assert.deepEqual(r.subgroup, { programs: [], kernels: 0, ms: 0, share: 0 });
  assert.ok(r.byProgram.some((p) => p.program === 'MatMul'), r.byProgram.map((p) => p.program).join(', '));
});

test('with the attention fused (either form) the profile shows MultiHeadAttention kernels and no Softmax', async () => {
  const flash = (await benchProfileCard({ unet: UNET, provider: 'webgpu', latent: '16', warmup: '1', iters: '1', fused: 'flash' })) as unknown as ProfileSummary & { fusedLayers: number; form: string };
  assert.equal(flash.form, 'flash');
  assert.ok(flash.byOp.some((o) => o.op === 'MultiHeadAttention') && !flash.byOp.some((o) => o.op === 'Softmax'));
  // The padded form pads q and k (Pad kernels); the flash form has none.
  assert.ok(!flash.byOp.some((o) => o.op === 'Pad'), flash.byOp.map((o) => o.op).join(', '));
  await assert.rejects(benchProfileCard({ unet: UNET, provider: 'webgpu', fused: 'yes' }), /--fused must be 0, 1 \(the padded form\) or flash \(got "yes"\)/);
  const r = (await benchProfileCard({ unet: UNET, provider: 'webgpu', latent: '16', warmup: '1', iters: '1', fused: '1' })) as unknown as ProfileSummary & { fusedLayers: number; form: string };
  assert.equal(r.form, 'padded');
  assert.ok(r.byOp.some((o) => o.op === 'Pad'), r.byOp.map((o) => o.op).join(', '));
  assert.ok(r.fusedLayers > 0);
  assert.ok(r.byOp.some((o) => o.op === 'MultiHeadAttention'), r.byOp.map((o) => o.op).join(', '));
  assert.ok(!r.byOp.some((o) => o.op === 'Softmax'));
});

test('events are assigned to the call whose model_run holds them; too few calls is an error', () => {
  const ev = [
    { cat: 'Session', name: 'model_run', ts: 0, dur: 100 },
    { cat: 'Session', name: 'model_run', ts: 200, dur: 50 },
    { cat: 'Api', name: 'n1&Conv&Conv2dMM', ts: 10, dur: 40_000 },
    { cat: 'Api', name: 'n1&Conv&Conv2dMM', ts: 210, dur: 30_000, args: { shapes: 'inputs[0] = {1} ' } },
    { cat: 'Api', name: 'n2&Add&Add', ts: 220, dur: 10_000 },
    { cat: 'Node', name: 'n1_kernel_time', ts: 205, dur: 2_000 },
    { cat: 'Api', name: 'outside&Add&Add', ts: 500, dur: 1 },
  ];
  const s = summariseProfile(ev, 1);
  assert.equal(s.runs, 1);
  assert.deepEqual(s.perRun, [{ wallMs: 0.05, gpuKernelMs: 40, hostNodeMs: 2, kernels: 2 }]);
  assert.deepEqual(s.byOp.map((o) => [o.op, o.ms, o.share]), [['Conv', 30, 0.75], ['Add', 10, 0.25]]);
  assert.deepEqual(s.top[0], { name: 'n1&Conv&Conv2dMM', ms: 30, shapes: 'inputs[0] = {1}' });
  assert.deepEqual(s.subgroup, { programs: [], kernels: 0, ms: 0, share: 0 });
  assert.throws(() => summariseProfile(ev, 2), /2 model_run events, expected more than the 2 skipped/);
});

test('subgroup and subgroup-matrix programs are counted apart: whether a call reached the tensor cores', () => {
  const ev = [
    { cat: 'Session', name: 'model_run', ts: 0, dur: 100 },
    { cat: 'Api', name: 'm1&MatMul&SubgroupMatrixMatMul', ts: 1, dur: 30_000 },
    { cat: 'Api', name: 'm2&MatMul&MatMulSubgroup', ts: 2, dur: 10_000 },
    { cat: 'Api', name: 'm3&MatMul&MatMul', ts: 3, dur: 20_000 },
    { cat: 'Api', name: 'c1&Conv&Conv2dMM', ts: 4, dur: 40_000 },
  ];
  const s = summariseProfile(ev, 0);
  assert.deepEqual(s.subgroup, { programs: ['SubgroupMatrixMatMul', 'MatMulSubgroup'], kernels: 2, ms: 40, share: 0.4 });
});
