/**
 * bench/card-report.ts: the card script's JSON as markdown. Checked against the first card run's committed JSON,
 * whose figures docs/benchmarks.md "On the card" records (an independent transcription), and against a run of the
 * parts that run has not (flash check, references, variants, a generation cut short).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { cardReport } from '../bench/card-report.ts';

const CARD = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'bench', 'results', 'card', 'h200-2026-12-04.json');

test("the first card run's figures, as docs/benchmarks.md gives them", () => {
  const md = cardReport(JSON.parse(fs.readFileSync(CARD, 'utf8')), 0);
  assert.match(md, /^Machine: NVIDIA H200, 580\.159\.04, 143771 MiB.*onnxruntime-node 1\.30\.0; torch 2\.11\.0\+cu130/m);
  // docs: "SD 1.5, 64x64 latent, batch 2 | 21.3 | 330.2 | 15.5x | 114.9 | 5.4x" and "SDXL ... batch 2 | 50.4 | 1170.2 | 23.2x".
  assert.match(md, /^\| SD 1\.5, batch 2 \| 21\.3 \| 330\.2 \| 15\.5x \| 114\.9 \| 5\.4x \|$/m);
  assert.match(md, /^\| SDXL, batch 2 \| 50\.4 \| 1170\.2 \| 23\.2x \| n\/a \| n\/a \|$/m);
  assert.match(md, /^\| SDXL, batch 4 \| 76\.5 \| 2163\.6 \| 28\.3x \|/m);
  // "0.52 (SD 1.5) and 0.47 (SDXL) for session.run, 0.58 and 0.475 for the adapter's call".
  assert.match(md, /^SD 1\.5: CFG half \(batch 1 \/ 2\) 0\.52 \(adapter 0\.58\)/m);
  assert.match(md, /^SDXL: CFG half \(batch 1 \/ 2\) 0\.47 \(adapter 0\.48\)/m);
  assert.match(md, /^Probe \(SDXL\): probe \/ plain 1\.60 at batch 2, 1\.42 at batch 1\.$/m);
  assert.match(md, /^\| SDXL 3072x3072 \(9 patches, 25 windows\) \| 8 \| balance \| no \| 7\.15x \| 6\.5x \| yes \|  \|$/m);
  assert.match(md, /^gen-1: timeout after 240 s, no result written\.$/m);
  assert.match(md, /unet-sdxl ok 79\.9 s/);
  // The second run of the file: only what it ran.
  assert.match(cardReport(JSON.parse(fs.readFileSync(CARD, 'utf8'))), /^UNet call: parts `torch-\*` and `unet-\*` not run\.$/m);
});

test('the parts added since: flash check, accuracy against PyTorch, variants, a generation cut short', () => {
  const doc = {
    parts: {
      env: { status: 'ok', seconds: 9, result: { node: 'v20', onnxruntime_node: '1.30.0', python: {}, asgd_devices: {
        devices: [{ name: 'webgpu', available: true, note: 'adapter found' }],
        flashAttention: { ok: true, cases: [{ type: 'float32', keys: 160, headSize: 40, maxError: 2e-6, ok: true }], ms: 900 },
      } } },
      'unet-sd15': { status: 'ok', result: {
        run_batch2: { medianMs: 300 }, vsTorch: { ours: { float32: { maxAbs: 0.02, meanAbs: 0.003 } }, torchFloat16VsFloat32: { maxAbs: 0.01, meanAbs: 0.002 } },
        fused: { form: 'padded', run_batch2: { medianMs: 200, maxAbsDiffFromPlain: 0.03 }, vsTorch: { ours: { float32: { maxAbs: 0.025, meanAbs: 0.004 } } } },
      } },
      'variants-sd15': { status: 'ok', result: { validation: 'default (basic)', variants: [
        { variant: 'nhwc', medianMs: 300, overReference: 1, maxAbsDiffFromReference: 0, vsTorch: { float32: { maxAbs: 0.02 } } },
        { variant: 'flash', medianMs: 100, overReference: 0.3333, maxAbsDiffFromReference: 0.01, vsTorch: { float32: { maxAbs: 0.021 } } },
      ] } },
      'profile-sd15': { status: 'ok', result: {
        perRun: [{ wallMs: 120, gpuKernelMs: 90, hostNodeMs: 20, kernels: 1300 }], byOp: [{ op: 'Conv', share: 0.5 }, { op: 'MatMul', share: 0.3 }],
        subgroup: { programs: ['SubgroupMatrixMatMul'], kernels: 140, ms: 20, share: 0.222 },
      } },
      'profile-sdxl': { status: 'ok', result: {
        perRun: [{ wallMs: 400, gpuKernelMs: 380, hostNodeMs: 30, kernels: 4000 }], byOp: [{ op: 'Conv', share: 0.6 }],
        subgroup: { programs: [], kernels: 0, ms: 0, share: 0 },
      } },
      'dispatch-float32': { status: 'ok', result: {
        type: 'float32', usPerKernel: 25, msPerCall: 0.4, chains: [{ kernels: 1, medianMs: 0.42, maxError: 0 }, { kernels: 1024, medianMs: 26, maxError: 0 }],
      } },
      'probe-sdxl': { status: 'ok', result: {
        batch2: { probeOverPlain: 1.05, mapBytes: 221_184, probeOverPlainOnDevice: 1.03, probeOutputsDownloadMs: 12.5, probeNoiseOverPlain: 1.02, noiseVsPlain: { values: 131_072, differing: 0, maxAbsDiff: 0 } },
        batch1: { probeOverPlain: 1.04, mapBytes: 221_184, probeNoiseOverPlain: 1.01 },
      } },
      'vae-sd': { status: 'timeout', seconds: 120, result: { size: 2048, tile: 64, provider: 'webgpu', cases: [
        { case: 'off', ms: 10_000, tiles: 25, resumedFrom: null },
        { case: 'exact, 4096 MiB, states on the device', statsMemory: 4096, statesOnHost: false, ms: 18_000, resumedFrom: 26, maxDiffFromFirst: 0, overOff: 1.8 },
        { case: 'exact, 1024 MiB, states on the device', statsMemory: 1024, statesOnHost: false, partial: { done: 100, total: 700, ms: 30_000 } },
        { case: 'exact, 4096 MiB, states on the host', statsMemory: 4096, statesOnHost: true, ms: 24_000, resumedFrom: 26, maxDiffFromFirst: 0, overOff: 2.4 },
      ] } },
      tune: { status: 'ok', seconds: 70, result: {
        device: 'webgpu:0', latent: 128, provider: 'webgpu', devices: 1, plain: { wholeMs: 1165.8, halfMs: 553.8 }, fused: { wholeMs: 400, halfMs: 290 },
        probe: { graphMs: 400, probeMs: 420 }, probeAgainst: 'fused',
        advice: { flags: ['--fuse-attention', '--probe-session', 'separate'], reasons: ['--fuse-attention: on; the fused call takes 0.34 of the plain one (on at 0.95 or less).'] },
      } },
      'vae-dtype': { status: 'ok', seconds: 40, result: {
        size: 1024, provider: 'webgpu', float16Ms: 800, float32Ms: 1200, float32OverFloat16: 1.5, maxDiff: 0.0021,
        groupNorms: 30, groupNormMs: 1000, groupNormOverFloat32: 0.8333, groupNormMaxDiff: 3.1e-6,
      } },
      'gen-fused': { status: 'timeout', seconds: 330, result: {
        devices: 'webgpu:0', width: 2048, height: 2048, steps: 50, attentionFusion: { applied: true, layers: 32, form: 'flash' },
        partial: { step: 10, totalSteps: 50, stage: 1, unitsDone: 40, unitsTotal: 250, ms: 40_000, msPerUnit: 1000 },
        gpuMemoryMiB: { afterLoad: 9100, afterWarmup: 11800 },
      } },
    },
  };
  const md = cardReport(doc);
  assert.match(md, /^Flash-attention check: right \(float32 160 keys d 40: 2\.0e-6\)\.$/m);
  assert.match(md, /^\| SD 1\.5 plain \(unet-sd15\) \| 2\.0e-2 \| 3\.0e-3 \| 1\.0e-2 \| 2\.0e-3 \|$/m);
  assert.match(md, /^\| SD 1\.5 fused \(unet-sd15\) \| 2\.5e-2 \| 4\.0e-3 \| n\/a \| n\/a \|$/m);
  assert.match(md, /attention form: padded/);
  assert.match(md, /^\| flash \| 100\.0 \| 0\.333 \| 1\.0e-2 \| 2\.1e-2 \|$/m);
  assert.match(md, /^profile-sd15: call 120\.0 ms, GPU kernels 90\.0 ms in 1300 kernels, host nodes 20\.0 ms; Conv 50 %, MatMul 30 %; subgroup kernels 140 \(22 % of GPU time: SubgroupMatrixMatMul\)$/m);
  assert.match(md, /^profile-sdxl: .*Conv 60 %; no subgroup \(tensor-core\) kernels$/m);
  assert.match(md, /^dispatch-float32 \(float32\): 25\.0 µs a kernel, 0\.400 ms a call \(Adds per call: 1: 0\.4 ms, 1024: 26\.0 ms\)\.$/m);
  assert.match(md, /^vae-sd \(2048 px, tiles of 64, webgpu; timeout after 120 s\):$/m);
  assert.match(md, /^- off: 10\.0 s\.$/m);
  assert.match(md, /^- exact, 4096 MiB, states on the device: 18\.0 s \(1\.80x off\), states kept up to cut 26, max difference from the first exact image 0\.$/m);
  // 100 of 700 tile runs in 30 s: 210 s at that rate.
  assert.match(md, /^- exact, 1024 MiB, states on the device: cut after 100\/700 tile runs in 30\.0 s \(about 210\.0 s for all at that rate\)\.$/m);
  assert.match(md, /^States on the device against on the host at 4096 MiB: 18\.0 s against 24\.0 s \(0\.75\)\.$/m);
  assert.doesNotMatch(md, /at 1024 MiB: /, 'no comparison where a side was cut');
  assert.match(md, /^vae-dtype \(1024 px, one decode, webgpu\): float16 800\.0 ms, as float32 \(force_upcast\) 1200\.0 ms \(1\.50x\); images apart by up to 0\.0021\.$/m);
  assert.match(md, /^The float32 decoder with its 30 group norms as GroupNorm: 1000\.0 ms, 0\.83 of the written-out one; images apart by up to 3\.1e-6\.$/m);
  // 1300 kernels at 25 µs: 32.5 ms of the 120 ms call.
  assert.match(md, /^  profile-sd15: 1300 kernels x 25\.0 µs = 32\.5 ms of its 120\.0 ms call\.$/m);
  // 40 units in 40 s, 210 left at 1 s each: 250 s for the denoising.
  assert.match(md, /^gen-fused \(webgpu:0, 2048x2048, 50 steps; timeout after 330 s; attention fused, flash\): cut at step 10\/50 \(stage 1\), 40\/250 units in 40\.0 s, 1000\.0 ms a unit: about 250\.0 s for the whole denoising at that rate\.$/m);
  assert.match(md, /^gen-fused: GPU memory in use 9100 MiB after loading, 11800 after the warm-up, \? after the generation\.$/m);
  // SDXL's 55,296 query positions over its 36 probed layers, one float32 each: 216 KiB.
  assert.match(md, /^Probe \(SDXL\): probe \/ plain 1\.05 at batch 2, 1\.04 at batch 1; maps 216\.0 KiB a call\.$/m);
  assert.match(md, /^Probe at batch 2, outputs left on the device: probe \/ plain 1\.03; the outputs' download 12\.5 ms\.$/m);
  assert.match(md, /^A unit that is not probed, on the probe graph \(noise prediction fetched alone\): 1\.02 of the plain call at batch 2, 1\.01 at batch 1 \(`probeSession` 'shared', the default; 'separate' runs those units on the plain call/m);
  assert.match(md, /^Tune \(webgpu:0, latent 128\): plain 1165\.8 ms a unit, 553\.8 a half; fused 400\.0, 290\.0; a unit not probed 1\.05 of the fused call\. Flags: --fuse-attention --probe-session separate\.$/m);
  assert.match(md, /^- --fuse-attention: on; the fused call takes 0\.34 of the plain one/m);
  assert.doesNotMatch(md, /^Probe at batch 1/m);
  assert.match(md, /^The probe graph's noise prediction is the plain UNet's bit for bit here \(131072 values, batch 2\): one session may serve both\.$/m);
  const apart = structuredClone(doc);
  apart.parts['probe-sdxl'].result.batch2.noiseVsPlain = { values: 131_072, differing: 40, maxAbsDiff: 0.00049 };
  assert.match(cardReport(apart), /^The probe graph's noise prediction differs from the plain UNet's in 40 of 131072 values \(largest 0\.000490, batch 2\)/m);
  // A generation cut during the decode: 50 steps in 250 s, then 70 of 700 tile runs in 30 s (300 s at that rate).
  const cutInDecode = { parts: { 'gen-1': { status: 'timeout', seconds: 330, result: {
    devices: 'webgpu:0', width: 2048, height: 2048, steps: 50,
    partial: { step: 50, totalSteps: 50, stage: 2, unitsDone: 250, unitsTotal: 250, ms: 250_000, msPerUnit: 1000, decode: { tilesDone: 70, tilesTotal: 700, ms: 30_000 } },
  } } } };
  assert.match(cardReport(cutInDecode), /^gen-1 .*: cut at step 50\/50 \(stage 2\), 250\/250 units in 250\.0 s, 1000\.0 ms a unit: about 250\.0 s for the whole denoising at that rate\. Then the VAE: 70\/700 tile runs in 30\.0 s \(about 300\.0 s for all at that rate\)\.$/m);
  assert.throws(() => cardReport({ nothing: 1 }), /not a card\.json/);
  assert.throws(() => cardReport(doc, 1), /--run 1: the file holds one run/);
});
