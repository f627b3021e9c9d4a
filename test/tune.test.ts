import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AsgdError } from '../src/core/errors.ts';
import { recommendSettings, type TuneMeasurement } from '../src/core/tune-advice.ts';
import { tuneDevice } from '../src/node/tune.ts';
import { layoutCandidates, timeLayouts, unetBytes } from '../src/node/tune-layouts.ts';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin', 'asgd.js');
const SHIPPED = path.join(ROOT, 'models', 'shapes-128');

const advise = (m: Partial<TuneMeasurement>) => recommendSettings({ provider: 'webgpu', devices: 1, plain: { wholeMs: 100, halfMs: 70 }, ...m });

test('advice: fusion on where the fused call takes at most 0.95 of the plain one; the split and probe judged on the graph that runs', () => {
  // The first card run's SD 1.5 figures (docs/benchmarks.md): plain 330.2 / 170.9 ms, fused 114.9 / 81.3 ms.
  const a = advise({ plain: { wholeMs: 330.2, halfMs: 170.9 }, fused: { wholeMs: 114.9, halfMs: 81.3 }, probe: { graphMs: 114.9, probeMs: 120 } });
  assert.deepEqual([a.fuseAttention, a.splitCfg, a.probeSession], [true, 'auto', 'separate']);
  assert.deepEqual(a.flags, ['--fuse-attention', '--probe-session', 'separate']);
  assert.match(a.reasons[0]!, /fused call takes 0\.35 of the plain one/);
  // The fused half (0.71), not the plain one (0.52), decides.
  assert.match(a.reasons[1]!, /a CFG half takes 0\.71 of a whole unit: two halves cost 1\.42 of a whole unit on one device/);
  assert.match(a.reasons[2]!, /takes 1\.04 of the UNet's call on the probe graph/);
  // 0.96: off; nothing fused: off, said so.
  assert.equal(advise({ fused: { wholeMs: 96, halfMs: 60 } }).fuseAttention, false);
  // Call by call: a median of 0.90 whose upper quartile is 0.97 is not a gain in three calls of four (CPU runs gave
  // 0.2-wide spreads); 0.93 at the upper quartile is.
  const noisyFuse = advise({ fused: { wholeMs: 90, halfMs: 60, ratio: 0.89, ratioLow: 0.8, ratioHigh: 0.97 } });
  assert.equal(noisyFuse.fuseAttention, false);
  assert.match(noisyFuse.reasons[0]!, /fused call takes 0\.89 \(call by call 0\.80-0\.97\) of the plain one \(on where three calls of four take 0\.95 or less\)/);
  assert.equal(advise({ fused: { wholeMs: 90, halfMs: 60, ratioLow: 0.85, ratioHigh: 0.93 } }).fuseAttention, true);
  const none = advise({});
  assert.equal(none.fuseAttention, false);
  assert.match(none.reasons[0]!, /nothing in this UNet fuses/);
  assert.match(none.reasons[2]!, /nothing to choose here \(no probe graph/);
  assert.deepEqual(none.flags, []);
  // Just under the probe's threshold: shared.
  assert.equal(advise({ probe: { graphMs: 100, probeMs: 102.9 } }).probeSession, 'shared');
  // Call by call: a median of 1.21 whose lower quartile is 1.02 is noise (lavapipe gave such runs), not a cost.
  const noisy = advise({ probe: { graphMs: 100, probeMs: 121, ratio: 1.19, ratioLow: 1.02, ratioHigh: 1.35 } });
  assert.equal(noisy.probeSession, 'shared');
  assert.match(noisy.reasons[2]!, /takes 1\.19 \(call by call 1\.02-1\.35\) of the UNet's call on the probe graph \(separate where three calls of four cost 1\.03 or more\)/);
  assert.equal(advise({ probe: { graphMs: 100, probeMs: 110, ratioLow: 1.06, ratioHigh: 1.12 } }).probeSession, 'separate');
});

test('advice: --unet-precision float16 where the converted call takes at most 0.95 of the float32 one in three calls of four; not said where not measured', () => {
  const fast = advise({ float16: { graphMs: 100, float16Ms: 60, ratio: 0.6, ratioLow: 0.55, ratioHigh: 0.66 } });
  assert.equal(fast.unetPrecision, 'float16');
  assert.deepEqual(fast.flags, ['--unet-precision', 'float16']);
  assert.match(fast.reasons.at(-1)!, /^--unet-precision: float16; the float32 export converted to float16 takes 0\.60 \(call by call 0\.55-0\.66\) of its call \(float16 where three calls of four take 0\.95 or less; images then differ by float16 rounding\)\.$/);
  // A median under the threshold whose upper quartile is over it (lavapipe: float16 took 1.33 of float32) is not a gain.
  const noisy = advise({ float16: { graphMs: 100, float16Ms: 92, ratio: 0.92, ratioLow: 0.85, ratioHigh: 0.98 } });
  assert.deepEqual([noisy.unetPrecision, noisy.flags], ['native', []]);
  assert.equal(advise({}).unetPrecision, undefined);
  assert.ok(!advise({}).reasons.some((r) => r.startsWith('--unet-precision')));
});

test('advice: --split-cfg always on GPUs where a half is cheap enough for the device count; CPU lists and fixed batches keep auto', () => {
  // SDXL on the card: a half 0.475 of a whole unit.
  const sdxl = { wholeMs: 1165.8, halfMs: 553.8 };
  for (const devices of [1, 4, 8]) {
    const a = advise({ devices, plain: sdxl });
    assert.equal(a.splitCfg, 'always', `${devices} devices`);
    assert.deepEqual(a.flags, ['--split-cfg', 'always']);
  }
  // 0.52: pays with several devices only.
  assert.equal(advise({ devices: 1, plain: { wholeMs: 100, halfMs: 52 } }).splitCfg, 'auto');
  const four = advise({ devices: 4, plain: { wholeMs: 100, halfMs: 52 } });
  assert.equal(four.splitCfg, 'always');
  assert.match(four.reasons[1]!, /two halves cost 1\.04 of a whole unit, and 4 devices share halves more evenly/);
  // 0.6 with 8 devices: above 0.55.
  assert.match(advise({ devices: 8, plain: { wholeMs: 100, halfMs: 60 } }).reasons[1]!, /above 0\.55 splitting loses more than it balances 8 devices/);
  // The CPU provider: auto already balances with bit-exact halves.
  assert.equal(advise({ provider: 'cpu', devices: 2, plain: { wholeMs: 100, halfMs: 30 } }).splitCfg, 'auto');
  // A static batch of 2: no half to time, no split.
  const fixed = advise({ devices: 8, plain: { wholeMs: 100 } });
  assert.equal(fixed.splitCfg, 'auto');
  assert.match(fixed.reasons[1]!, /batch is fixed at 2/);
});

test('advice: another CPU worker count where its short generation took at most 0.9 of the list\'s own; skipped counts and a different image are said', () => {
  const cpu = (layouts: TuneMeasurement['layouts'], devices = 1) => recommendSettings({ provider: 'cpu', devices, plain: { wholeMs: 100, halfMs: 60 }, layouts });
  const two = cpu([{ workers: 1, devices: 'cpu', threads: 0, denoiseMs: 1000 }, { workers: 2, devices: 'cpu,cpu', threads: 1, denoiseMs: 550, sameImage: true }, { workers: 4, devices: 'cpu,cpu,cpu,cpu', threads: 1, skipped: '4 UNet sessions need about 9.0 GiB, 6.0 GiB is free to use' }]);
  assert.equal(two.workers, 2);
  assert.deepEqual(two.flags, ['--devices', 'cpu,cpu']);
  assert.equal(two.reasons[3], "--devices: cpu,cpu; 2 workers of 1 thread took 0.55 of the denoising time of 1 worker of ONNX Runtime's default threads in the same short generation (each count's time over 1's: 2: 0.55; another count is advised at 0.9 or less); not run: 4 (4 UNet sessions need about 9.0 GiB, 6.0 GiB is free to use). They all gave the same image, byte for byte.");
  // 0.92: not enough; the list's own count stays, without a flag.
  const near = cpu([{ workers: 1, devices: 'cpu', threads: 0, denoiseMs: 1000 }, { workers: 2, devices: 'cpu,cpu', threads: 1, denoiseMs: 920, sameImage: true }]);
  assert.deepEqual([near.workers, near.flags], [1, []]);
  assert.match(near.reasons[3]!, /^--devices: cpu; unchanged; no other worker count took 0\.9 or less of the denoising time of 1 worker of ONNX Runtime's default threads in the same short generation \(each count's time over 1's: 2: 0\.92;/);
  // From a list of 2 workers, 1 can be the advice.
  assert.deepEqual(cpu([{ workers: 1, devices: 'cpu', threads: 0, denoiseMs: 500 }, { workers: 2, devices: 'cpu,cpu', threads: 1, denoiseMs: 1000, sameImage: true }], 2).flags, ['--devices', 'cpu']);
  // A count whose image differs is never advised, and said.
  const odd = cpu([{ workers: 1, devices: 'cpu', threads: 0, denoiseMs: 1000 }, { workers: 2, devices: 'cpu,cpu', threads: 1, denoiseMs: 400, sameImage: false }]);
  assert.deepEqual([odd.workers, odd.flags], [1, []]);
  assert.match(odd.reasons[3]!, /worker counts 2 gave another image, which they should not: left out/);
  // Nothing timed (memory): unchanged, said.
  assert.match(cpu([{ workers: 1, devices: 'cpu', threads: 0, skipped: 'no memory' }]).reasons[3]!, /^--devices: unchanged; the list's own worker count could not be timed/);
  // Two workers on one GPU (counts given for a GPU list).
  const gpu = recommendSettings({ provider: 'webgpu', devices: 1, plain: { wholeMs: 100, halfMs: 60 }, layouts: [
    { workers: 1, devices: 'webgpu:0', denoiseMs: 1000 }, { workers: 2, devices: 'webgpu:0,webgpu:0', denoiseMs: 800, sameImage: true },
  ] });
  assert.deepEqual([gpu.workers, gpu.flags], [2, ['--devices', 'webgpu:0,webgpu:0']]);
  assert.match(gpu.reasons[3]!, /^--devices: webgpu:0,webgpu:0; 2 workers on webgpu:0 took 0\.80 of the denoising time of 1 worker on webgpu:0 in the same short generation/);
  // Without layouts (GPU lists by default, --workers none) no --devices advice at all.
  assert.equal(advise({}).workers, undefined);
  assert.equal(advise({}).reasons.length, 3);
});

test('CPU layouts: the worker counts tried, the UNet weights a worker loads, and a count skipped for memory', async () => {
  assert.deepEqual(layoutCandidates(2, 1), [1, 2]);
  assert.deepEqual(layoutCandidates(16, 3), [1, 2, 3, 4, 8]);
  assert.deepEqual(layoutCandidates(1, 1), [1]);
  const unet = path.join(SHIPPED, 'unet', 'model.onnx');
  assert.equal(unetBytes(unet), fs.statSync(unet).size, 'the shipped UNet holds its weights in the graph (derived .asgd-* graphs not counted)');
  const lines: string[] = [];
  const r = await timeLayouts(SHIPPED, unet, { workers: [1, 3], device: 'cpu', threads: 1, fuseAttention: false, memoryBytes: 2.5 * 1.5 * fs.statSync(unet).size, log: (l) => lines.push(l) });
  assert.equal(r.length, 2);
  assert.ok(r[0]!.denoiseMs! > 0 && r[0]!.workers === 1 && r[0]!.threads === 1 && r[0]!.devices === 'cpu');
  assert.equal(r[1]!.devices, 'cpu,cpu,cpu');
  assert.match(r[1]!.skipped!, /^3 UNet sessions need about [\d.]+ GiB, [\d.]+ GiB is free to use$/);
  assert.match(lines.join('\n'), /1 worker of 1 thread: denoising \d+ ms \(4-step asg at 256x256\)\n3 workers of 1 thread: skipped/);
});

test('asgd tune on the shipped model (CPU): the times of each graph, and the advice those times give', () => {
  const r = spawnSync(process.execPath, [BIN, 'tune', SHIPPED, '--json', '--iters', '2', '--warmup', '0', '--threads', '1'], { encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.device, 'cpu');
  assert.equal(j.family, 'sd');
  assert.equal(j.latent, 16, 'the native latent (128 px)');
  assert.match(j.onnxruntime, /^\d+\.\d+\.\d+$/);
  assert.deepEqual(j.fusion, { layers: 14, form: 'padded', formReason: 'no WebGPU device (the form of every other provider)' });
  for (const t of [j.plain, j.fused]) assert.ok(t.wholeMs > 0 && t.halfMs > 0, JSON.stringify(t));
  for (const r of [j.fused, j.probe]) assert.ok(r.ratioLow > 0 && r.ratioLow <= r.ratio && r.ratio <= r.ratioHigh, JSON.stringify(r));
  assert.equal(j.probeAgainst, j.advice.fuseAttention ? 'fused' : 'plain');
  assert.match(j.float16Against.reason, /^not measured on CPU lists/);
  assert.equal(j.float16, undefined);
  assert.ok(j.probe.graphMs > 0 && j.probe.probeMs > 0);
  assert.deepEqual(j.advice, recommendSettings(j), 'the advice is the one its own figures give');
  // The worker counts (this machine's cores: 1, 2, ...), each a short generation, every image the first one's.
  assert.deepEqual(j.layouts.map((l: { workers: number }) => l.workers), layoutCandidates(os.availableParallelism(), 1));
  for (const l of j.layouts) assert.ok(l.denoiseMs > 0 && l.sameImage !== false, JSON.stringify(l));
  assert.equal(typeof j.advice.workers, 'number');
  const text = spawnSync(process.execPath, [BIN, 'tune', SHIPPED, '--iters', '1', '--warmup', '0', '--devices', 'cpu,cpu', '--threads', '1'], { encoding: 'utf8', timeout: 180_000 });
  assert.equal(text.status, 0, text.stderr);
  assert.match(text.stdout, /^Measured on cpu \(onnxruntime-node [\d.]+\), latent 16x16, medians of 1 calls after 0\nAdvice for --devices cpu,cpu:\n  --fuse-attention: /);
  assert.match(text.stdout, /\nFlags: /);
  assert.match(text.stderr, /^UNet as exported: a whole unit [\d.]+ ms, a CFG half [\d.]+ ms\n/);
});

test('asgd tune: bad input is named', async () => {
  const bad = spawnSync(process.execPath, [BIN, 'tune', SHIPPED, '--iters', '0'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /^asgd: Invalid --iters; expected an integer >= 1; received "0"\n$/);
  const workers = spawnSync(process.execPath, [BIN, 'tune', SHIPPED, '--workers', '1,0'], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(workers.status, 2);
  assert.match(workers.stderr, /^asgd: Invalid --workers; expected worker counts from 1 to 64, comma-separated \(e\.g\. 1,2,4\), or none; received "1,0"\n$/);
  await assert.rejects(tuneDevice(SHIPPED, { workers: [] }), (err: unknown) => err instanceof AsgdError && err.parameter === 'workers');
  await assert.rejects(tuneDevice(SHIPPED, { devices: 'cpu,webgpu:0' }), (err: unknown) =>
    err instanceof AsgdError && err.parameter === 'devices' && /one kind/.test(err.message) && /--devices webgpu:0 then --devices cpu/.test(err.message));
  await assert.rejects(tuneDevice(SHIPPED, { latent: 12.5 }), (err: unknown) => err instanceof AsgdError && err.parameter === 'latent');
  await assert.rejects(tuneDevice(path.join(ROOT, 'no-such-model')), (err: unknown) => err instanceof AsgdError && err.kind === 'model');
});
