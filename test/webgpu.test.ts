/**
 * The webgpu device against the cpu device, on the Vulkan driver the test setup provides (scripts/setup-system.mjs:
 * Mesa's lavapipe runs WebGPU on the CPU, so this is correctness, not speed).
 *
 * Measured on lavapipe (max |webgpu - cpu|): direct 128 px latent 2.3e-4, image 1 level; asg 256 px with the probe
 * mask 1.3e-3 and 1 level (4.0e-4 on cpu,webgpu:0); the float16 fixture latent 5.7e-3, image 1 level (GPU kernels
 * sum in another order, float16 rounds); asg 256 px on the SDXL fixture 1.1e-4 and 1 level, on the SD3 fixture 1.7e-5
 * and 1 level. Tolerances: latents 3e-3 (float32), images 2 levels (3 for float16).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AsgdError } from '../src/core/errors.ts';
import type { GenerateParams } from '../src/core/params.ts';
import { loadPipeline, openPipeline, type GenerateResult, type Pipeline, type PipelineOptions } from '../src/node/pipeline.ts';
import { liveDeviceWorkers, liveWebgpuThreads } from '../src/node/runner/device-worker.ts';
import { checkAvailableDevices, checkFlashAttention } from '../src/node/runner/devices.ts';
import * as ort from 'onnxruntime-node';
import { MASK_WEIGHTS_INPUT } from '../src/graph/attention-probe.ts';
import { fusedLoadOptions, prepareFusedAttention } from '../src/node/fused-attention.ts';
import { prepareAttentionProbe, probeLoadOptions } from '../src/node/probe.ts';
import { openSession, releaseSession } from '../src/onnx/session.ts';
import { tempDir, tinyModel } from './helpers/models.ts';
import { writeTinySd3Model } from './fixtures/tiny-sd3.ts';
import { recommendSettings } from '../src/core/tune-advice.ts';
import { tuneDevice } from '../src/node/tune.ts';

const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');
const LEVELS = 2;
const LATENT = 3e-3;

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function meanDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += Math.abs(a[i]! - b[i]!);
  return s / a.length;
}

async function run(devices: string, params: GenerateParams, model = SHIPPED, options: PipelineOptions = {}): Promise<GenerateResult> {
  const p = await loadPipeline(model, { devices, threads: 1, ...options });
  try {
    return await p.generate(params);
  } finally {
    await p.close();
  }
}

const direct: GenerateParams = { prompt: 'a red circle on a blue background', seed: 3, steps: 3, method: 'direct' };
// 256 px: four 128 px patches, the attention-probe graph gives the mask, stage-2 windows follow.
const asg: GenerateParams = { prompt: 'a red circle on a blue background', seed: 5, steps: 3, width: 256, height: 256, method: 'asg' };
let cpuAsg: GenerateResult;

before(async () => {
  cpuAsg = await run('cpu', asg);
});
after(async () => {
  for (let i = 0; i < 50 && liveDeviceWorkers().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(liveDeviceWorkers(), [], 'no device worker is left running');
});

test('webgpu generates the shipped model within the stated tolerance of cpu', async (t) => {
  const [cpu, gpu] = [await run('cpu', direct), await run('webgpu:0', direct)];
  t.diagnostic(`direct 128 px: latent ${maxDiff(gpu.latent, cpu.latent)}, image ${maxDiff(gpu.image.data, cpu.image.data)} levels`);
  assert.equal(gpu.image.width, 128);
  assert.ok(maxDiff(gpu.latent, cpu.latent) <= LATENT, `latent max diff ${maxDiff(gpu.latent, cpu.latent)}`);
  assert.ok(maxDiff(gpu.image.data, cpu.image.data) <= LEVELS, `image max diff ${maxDiff(gpu.image.data, cpu.image.data)} levels`);
});

test('fuseAttention: the fused UNet and probe graph run on webgpu (MultiHeadAttention) within the written-out graph\'s tolerance of cpu', async (t) => {
  // Measured on lavapipe against cpu: asg 256 px fused max 1 level, mean 0.001 (written out: 1 level). With q and k as
  // they are (fuseAttention's flashForm), ONNX Runtime's WebGPU flash-attention kernel ran: max 62 levels, mean 1.45
  // (docs/benchmarks.md, "Fused attention"). A fused graph that got the scale or the heads wrong is tens of levels off.
  const p = await loadPipeline(SHIPPED, { devices: 'webgpu:0', threads: 1, fuseAttention: true });
  try {
    const { form, ...fusion } = p.info.attentionFusion;
    // Every device is a WebGPU one: the 7 GEGLUs run as BiasSplitGelu too (test/bias-split-gelu.test.ts), and the 24
    // group norms as GroupNorm (test/group-norm.test.ts).
    assert.deepEqual(fusion, { applied: true, layers: 14, formReason: fusion.formReason, biasSplitGelus: 7, groupNorms: 24 });
    // The form the check chose on this adapter (padded on lavapipe, whose flash kernel is wrong: test/flash-check.test.ts).
    assert.equal(form, (await checkFlashAttention()).ok ? 'flash' : 'padded', fusion.formReason);
    const r = await p.generate(asg);
    assert.deepEqual(r.warnings.filter((w) => !/Using the euler scheduler/.test(w)), [], 'the mask came from the fused probe graph');
    let sum = 0;
    for (let i = 0; i < r.image.data.length; i++) sum += Math.abs(r.image.data[i]! - cpuAsg.image.data[i]!);
    const mean = sum / r.image.data.length;
    t.diagnostic(`asg 256 px, fused attention on webgpu: image max ${maxDiff(r.image.data, cpuAsg.image.data)} levels, mean ${mean.toFixed(3)}`);
    assert.ok(r.latent.every(Number.isFinite));
    assert.ok(maxDiff(r.image.data, cpuAsg.image.data) <= LEVELS, `image max diff ${maxDiff(r.image.data, cpuAsg.image.data)} levels`);
    assert.ok(mean < 0.1, `mean image difference ${mean} levels`);
  } finally {
    await p.close();
  }
});

test("one session serves the UNet and the probe on webgpu: the probe graph's noise prediction is the UNet's bit for bit, written out and fused (both forms)", async () => {
  const unet = path.join(SHIPPED, 'unet', 'model.onnx');
  const probe = await prepareAttentionProbe(unet);
  assert.ok('file' in probe, JSON.stringify(probe));
  const rnd = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + k * 78.233) * 1.3);
  const noise = async (file: string, load: { externalDataFolder?: string }) => {
    const s = await openSession(file, 'unet', { provider: 'webgpu' }, load);
    try {
      const feeds: Record<string, ort.Tensor> = {
        sample: new ort.Tensor('float32', rnd(2 * 4 * 16 * 16, 5), [2, 4, 16, 16]),
        timestep: new ort.Tensor('int64', new BigInt64Array([301n, 301n]), [2]),
        encoder_hidden_states: new ort.Tensor('float32', rnd(2 * 77 * 64, 6), [2, 77, 64]),
      };
      if (s.inputs.some((i) => i.name === MASK_WEIGHTS_INPUT)) feeds[MASK_WEIGHTS_INPUT] = new ort.Tensor('float32', rnd(77, 9), [77, 1]);
      // Fetched alone, as a unit that is not probed fetches it (UnetCall.maps).
      return (await s.session.run(feeds, ['out_sample']))['out_sample']!.data as Float32Array;
    } finally {
      await releaseSession(s);
    }
  };
  const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
  assert.ok(same(await noise(probe.file, probeLoadOptions(probe.file)), await noise(unet, {})), 'written out');
  for (const flashForm of [false, true]) {
    const how = { flashForm, biasSplitGelu: true };
    const fu = await prepareFusedAttention(unet, how);
    const fp = await prepareFusedAttention(probe.file, { weightsFolder: probeLoadOptions(probe.file).externalDataFolder, ...how });
    assert.ok('file' in fu && 'file' in fp);
    assert.deepEqual([fp.fused, fp.groupNorms, fp.biasSplitGelus], [fu.fused, fu.groupNorms, fu.biasSplitGelus]);
    assert.ok(same(await noise(fp.file, fusedLoadOptions(fp.file)), await noise(fu.file, fusedLoadOptions(fu.file))), `fused, flashForm ${flashForm}`);
  }
  // The pipeline then opens one UNet session on the worker that holds the probe: text encoder, VAE decoder, UNet;
  // with probeSession 'separate', the UNet and the probe graph apart.
  for (const [fuseAttention, probeSession, sessions] of [[false, 'shared', 3], [true, 'shared', 3], [true, 'separate', 4]] as const) {
    let ask!: () => Promise<{ sessions: number }[]>;
    const pipe = await openPipeline(SHIPPED, { devices: 'webgpu:0', threads: 1, fuseAttention, probeSession }, { inspectWorkers: (f) => (ask = f) });
    try {
      assert.equal((await ask())[0]!.sessions, sessions, `fuseAttention ${fuseAttention}, probeSession ${probeSession}`);
    } finally {
      await pipe.close();
    }
  }
});

test('asgd tune on webgpu:0: the padded form (the flash check fails on lavapipe), both graphs, the probe and the float16 conversion timed, advice from its own figures', async () => {
  const r = await tuneDevice(SHIPPED, { devices: 'webgpu:0', iters: 1, warmup: 1 });
  assert.equal(r.device, 'webgpu:0');
  assert.equal(r.provider, 'webgpu');
  assert.ok('layers' in r.fusion && r.fusion.layers === 14 && r.fusion.form === 'padded', JSON.stringify(r.fusion));
  for (const t of [r.plain, r.fused!]) assert.ok(t.wholeMs > 0 && t.halfMs! > 0, JSON.stringify(t));
  assert.ok(r.probe && r.probe.graphMs > 0 && r.probe.probeMs > 0);
  // The float32 export converted to float16, against the graph advised so far.
  assert.equal(r.float16Against, r.advice.fuseAttention ? 'fused' : 'plain');
  assert.ok(r.float16 && r.float16.graphMs > 0 && r.float16.float16Ms > 0, JSON.stringify(r.float16));
  assert.ok(r.advice.unetPrecision === 'native' || r.advice.unetPrecision === 'float16');
  assert.deepEqual(r.advice, recommendSettings(r));
});

test('asgd tune on webgpu:0 with worker counts given: one and two workers on the adapter, the same image, advice from its own figures', async () => {
  const lines: string[] = [];
  const r = await tuneDevice(SHIPPED, { devices: 'webgpu:0', iters: 1, warmup: 0, workers: [1, 2], onProgress: (l) => lines.push(l) });
  assert.deepEqual(r.layouts!.map((l) => [l.workers, l.devices, l.threads]), [[1, 'webgpu:0', undefined], [2, 'webgpu:0,webgpu:0', undefined]]);
  for (const l of r.layouts!) assert.ok(l.denoiseMs! > 0, JSON.stringify(l));
  assert.equal(r.layouts![1]!.sameImage, true, 'two workers on one adapter give the image of one');
  assert.match(lines.join('\n'), /\n2 workers on webgpu:0: denoising \d+ ms \(4-step asg at 256x256\)/);
  assert.deepEqual(r.advice, recommendSettings(r));
  assert.equal(typeof r.advice.workers, 'number');
});

test('asg with the attention-probe mask on webgpu, and on cpu,webgpu:0 together, matches cpu', async (t) => {
  for (const devices of ['webgpu:0', 'cpu,webgpu:0']) {
    const r = await run(devices, asg);
    t.diagnostic(`asg 256 px on ${devices}: latent ${maxDiff(r.latent, cpuAsg.latent)}, image ${maxDiff(r.image.data, cpuAsg.image.data)} levels`);
    assert.deepEqual(r.warnings.filter((w) => !/Using the euler scheduler/.test(w)), [], `${devices}: the mask came from the probe`);
    assert.equal(r.unetEvaluations, cpuAsg.unetEvaluations);
    assert.ok(maxDiff(r.latent, cpuAsg.latent) <= LATENT, `${devices}: latent max diff ${maxDiff(r.latent, cpuAsg.latent)}`);
    assert.ok(maxDiff(r.image.data, cpuAsg.image.data) <= LEVELS, `${devices}: image max diff ${maxDiff(r.image.data, cpuAsg.image.data)}`);
  }
});

test('SDXL (time ids, two text encoders) and SD3 (the transformer, T5, the 16-channel VAE; its joint attention also fused) run asg on webgpu within the tolerance of cpu, the mask from the probe', async (t) => {
  const sd3 = path.join(tempDir('webgpu-sd3'), 'tiny-sd3');
  await writeTinySd3Model(sd3, { variant: 'sd3' });
  // The SDXL fixture's config says 1024 px; 128 px native here, so that 256 px is twice it with patches and the mask.
  const sdxl = tempDir('webgpu-sdxl');
  fs.cpSync(await tinyModel('sdxl'), sdxl, { recursive: true });
  const unetConfig = path.join(sdxl, 'unet', 'config.json');
  fs.writeFileSync(unetConfig, JSON.stringify({ ...JSON.parse(fs.readFileSync(unetConfig, 'utf8')), sample_size: 16 }));
  for (const [name, model] of [['sdxl', sdxl], ['sd3', sd3]] as const) {
    const cpu = await run('cpu', asg, model);
    const gpu = await run('webgpu:0', asg, model);
    t.diagnostic(`${name} asg 256 px: latent ${maxDiff(gpu.latent, cpu.latent)}, image ${maxDiff(gpu.image.data, cpu.image.data)} levels`);
    assert.equal(gpu.metadata.model.family, name);
    assert.equal(gpu.unetEvaluations, cpu.unetEvaluations);
    assert.deepEqual(gpu.warnings, cpu.warnings, `${name}: the same warnings (no mask fallback on webgpu)`);
    assert.equal(cpu.warnings.some((w) => /mask/i.test(w)), false, `${name}: the mask came from the probe`);
    assert.ok(maxDiff(gpu.latent, cpu.latent) <= LATENT, `${name}: latent max diff ${maxDiff(gpu.latent, cpu.latent)}`);
    assert.ok(maxDiff(gpu.image.data, cpu.image.data) <= LEVELS, `${name}: image max diff ${maxDiff(gpu.image.data, cpu.image.data)}`);
    if (name !== 'sd3') continue;
    // SD3's joint attention fused (MultiHeadAttention on the flattened joined heads, the padded form on lavapipe).
    const fused = await run('webgpu:0', asg, model, { fuseAttention: true });
    t.diagnostic(`sd3 asg 256 px fused on webgpu: latent ${maxDiff(fused.latent, cpu.latent)}, image ${maxDiff(fused.image.data, cpu.image.data)} levels`);
    assert.deepEqual(fused.warnings, cpu.warnings, 'fused: nothing left unfused, the mask from the fused probe');
    assert.ok(maxDiff(fused.latent, cpu.latent) <= LATENT, `fused: latent max diff ${maxDiff(fused.latent, cpu.latent)}`);
    assert.ok(maxDiff(fused.image.data, cpu.image.data) <= LEVELS, `fused: image max diff ${maxDiff(fused.image.data, cpu.image.data)}`);
  }
});

test('two webgpu workers on the one adapter (webgpu:0,webgpu:0) run as two processes and give the bits of one', async (t) => {
  // As two threads of one process, onnxruntime-node 1.30 ended the process (segmentation fault) as soon as both ran a
  // UNet call (docs/benchmarks.md); 1.31.1 runs them, sharing one WebGPU device, slower than two processes on lavapipe.
  // workerIsolation 'auto' puts them in processes of their own.
  const p = await loadPipeline(SHIPPED, { devices: 'webgpu:0,webgpu:0', threads: 1 });
  let during: string[] = [];
  let two: GenerateResult;
  try {
    two = await p.generate(asg, { onUnits: () => void (during.length === 0 && (during = liveDeviceWorkers())) });
  } finally {
    await p.close();
  }
  assert.equal(during.length, 2);
  assert.ok(during.every((id) => id.startsWith('process ')), during.join(', '));
  const one = await run('webgpu:0', asg);
  t.diagnostic(`asg 256 px on webgpu:0,webgpu:0 vs webgpu:0: latent ${maxDiff(two.latent, one.latent)}; vs cpu ${maxDiff(two.latent, cpuAsg.latent)}`);
  assert.equal(two.unetEvaluations, one.unetEvaluations);
  assert.ok(two.latent.every((v, i) => Object.is(v, one.latent[i])), 'the latent of one webgpu worker, bit for bit');
  assert.ok(maxDiff(two.image.data, cpuAsg.image.data) <= LEVELS);
});

test("the device check while a webgpu worker thread generates (the server's device list): the process survives, the check finds the adapter, the image is the one without checks", async (t) => {
  // A WebGPU session in this process at the same time as the worker thread's ended the process (segmentation fault,
  // 3 of 3 runs here) before the check ran in a process of its own.
  const p = await loadPipeline(SHIPPED, { devices: 'webgpu:0', threads: 1 });
  try {
    let checks = 0;
    let during = 0;
    let running = true;
    const generation = p.generate(asg, { onProgress: () => void (during = checks) }).finally(() => (running = false));
    const found: boolean[] = [];
    while (running) {
      const list = await checkAvailableDevices({ refresh: true });
      found.push(list.find((d) => d.name === 'webgpu')!.available);
      checks++;
    }
    const r = await generation;
    t.diagnostic(`${checks} checks, the last progress report after ${during}`);
    assert.ok(during >= 1, 'a check ran while the generation did');
    assert.ok(found.every((x) => x), `every check found the adapter: ${found}`);
    const alone = await run('webgpu:0', asg);
    assert.ok(Buffer.from(r.image.data).equals(Buffer.from(alone.image.data)), 'the image is the one without checks');
  } finally {
    await p.close();
  }
});

test("devices 'auto' on lavapipe: the adapter loses the dense test to the CPU, so the pipeline runs on the CPU and says why", async () => {
  const p = await loadPipeline(SHIPPED, { devices: 'auto', threads: 1 });
  try {
    assert.deepEqual(p.devices.map((d) => d.label), ['cpu#0']);
    assert.match(p.info.notes.join('\n'), /^devices auto picked cpu: the WebGPU adapter ran a dense test \(8 products of 512x512 matrices\) in [0-9.]+ ms, [0-9.]+x slower than the CPU/m);
    const r = await p.generate(direct);
    const cpu = await run('cpu', direct);
    assert.ok(Buffer.from(r.image.data).equals(Buffer.from(cpu.image.data)), 'the image of --devices cpu');
  } finally {
    await p.close();
  }
});

test('two webgpu pipelines loaded and generating at the same time in one process: the second one\'s worker is a process (auto), both give the image of one run', async () => {
  // Both worker threads ended the process (segmentation fault, 2 runs of 2 here) before auto counted the WebGPU worker
  // threads already running.
  const [a, b] = await Promise.all([loadPipeline(SHIPPED, { devices: 'webgpu:0', threads: 1 }), loadPipeline(SHIPPED, { devices: 'webgpu:0', threads: 1 })]);
  try {
    assert.equal(liveWebgpuThreads(), 1, 'one WebGPU worker thread');
    assert.deepEqual(liveDeviceWorkers().map((w) => w.split(' ')[0]).sort(), ['process', 'thread']);
    const [ra, rb] = await Promise.all([a.generate(asg), b.generate(asg)]);
    const alone = await run('webgpu:0', asg);
    for (const r of [ra, rb]) assert.ok(Buffer.from(r.image.data).equals(Buffer.from(alone.image.data)), 'the image of one run');
  } finally {
    await Promise.all([a.close(), b.close()]);
  }
  assert.equal(liveWebgpuThreads(), 0);
});

test('a float16 model runs on webgpu within float16 rounding of cpu', async (t) => {
  const model = await tinyModel('fp16');
  const params: GenerateParams = { prompt: 'a red circle', seed: 2, steps: 2, width: 64, height: 64, method: 'direct' };
  const [cpu, gpu] = [await run('cpu', params, model), await run('webgpu:0', params, model)];
  t.diagnostic(`fp16 fixture: latent ${maxDiff(gpu.latent, cpu.latent)}, image ${maxDiff(gpu.image.data, cpu.image.data)} levels`);
  assert.ok(maxDiff(gpu.image.data, cpu.image.data) <= 3, `image max diff ${maxDiff(gpu.image.data, cpu.image.data)}`);
});

test('the shipped float32 UNet converted to float16 (unetPrecision) runs on webgpu within float16 rounding of its cpu run', async (t) => {
  // WebGPU computes in float16 where the CPU provider computes much of a float16 graph in float32: one UNet call is
  // about 0.02 from the float32 graph on lavapipe against 0.002 on the CPU, and a 3-step generation amplifies that
  // (measured: image mean 2.3 levels, edges moved by up to 51; the float32 graph on webgpu: mean 0.001, max 1).
  const model = tempDir('webgpu-float16');
  fs.cpSync(SHIPPED, model, { recursive: true });
  const params: GenerateParams = { ...direct, width: 128, height: 128 };
  const [cpu, gpu] = [await run('cpu', params, model, { unetPrecision: 'float16' }), await run('webgpu:0', params, model, { unetPrecision: 'float16' })];
  const mean = meanDiff(gpu.image.data, cpu.image.data);
  t.diagnostic(`converted UNet: latent ${maxDiff(gpu.latent, cpu.latent)}, image max ${maxDiff(gpu.image.data, cpu.image.data)} levels, mean ${mean}`);
  assert.equal(gpu.metadata.unetPrecision, 'float16');
  assert.ok(mean <= 4, `image mean diff ${mean}`);
});

test('a UNet with ONNX Attention nodes (opset 23): on webgpu every run warns that they run on the CPU and names --fuse-attention; fused, the warning goes; on cpu there is none', async (t) => {
  const model = await tinyModel('onnx-attention');
  const params: GenerateParams = { prompt: 'a red circle', seed: 2, steps: 2, width: 256, height: 256, method: 'asg' };
  const note = /^The UNet has 8 ONNX Attention nodes \(opset 23.*WebGPU provider has no kernel for them, so they run on the CPU.*--fuse-attention \(fuseAttention: true\)/;
  const runOn = async (devices: string, fuseAttention = false) => {
    const p = await loadPipeline(model, { devices, threads: 1, fuseAttention });
    try {
      const seen: string[] = [];
      const r = await p.generate(params, { onWarning: (m) => seen.push(m) });
      assert.deepEqual(seen, r.warnings);
      // Generate, then upscale, in one run: the device warning once, not once per stage.
      const both = await p.generateUpscaled({ ...params, width: 64, height: 64, steps: 2 }, { scale: 2, strength: 0.5 });
      return { info: p.info, r, both };
    } finally {
      await p.close();
    }
  };
  const cpu = await runOn('cpu');
  assert.ok(!cpu.info.notes.some((n) => note.test(n)), cpu.info.notes.join('\n'));
  assert.deepEqual(cpu.r.warnings, [], 'no warning on cpu, and the mask came from the Attention nodes');
  const gpu = await runOn('webgpu:0');
  assert.equal(gpu.info.notes.filter((n) => note.test(n)).length, 1, gpu.info.notes.join('\n'));
  assert.equal(gpu.r.warnings.filter((w) => note.test(w)).length, 1, gpu.r.warnings.join('\n'));
  assert.deepEqual(gpu.r.warnings.filter((w) => !note.test(w)), []);
  assert.equal(gpu.both.warnings.filter((w) => note.test(w)).length, 1, gpu.both.warnings.join('\n'));
  const ops = JSON.parse(fs.readFileSync(path.join(model, 'unet', 'model.asgd-ops.json'), 'utf8'));
  assert.equal(ops.result.onnxAttention, 8, 'counted once and kept next to the UNet');
  t.diagnostic(`onnx-attention fixture, Attention on the CPU under webgpu: image ${maxDiff(gpu.r.image.data, cpu.r.image.data)} levels from cpu`);
  assert.ok(maxDiff(gpu.r.image.data, cpu.r.image.data) <= LEVELS);
  const fused = await runOn('webgpu:0', true);
  const { form, formReason, ...fusion } = fused.info.attentionFusion;
  assert.deepEqual(fusion, { applied: true, layers: 8, biasSplitGelus: 4, groupNorms: 21 });
  // The form follows the flash-attention check on this adapter (test/flash-check.test.ts; padded on lavapipe).
  assert.equal(form, (await checkFlashAttention()).ok ? 'flash' : 'padded', formReason);
  assert.ok(!fused.info.notes.some((n) => note.test(n)), fused.info.notes.join('\n'));
  assert.deepEqual(fused.r.warnings, []);
  assert.ok(fused.r.latent.every(Number.isFinite));
  // asgd info says the same for the devices it is given.
  const { spawnSync } = await import('node:child_process');
  const bin = path.join(path.dirname(SHIPPED), '..', 'bin', 'asgd.js');
  const info = (...extra: string[]) => spawnSync(process.execPath, [bin, 'info', model, '--no-probe', ...extra], { encoding: 'utf8', timeout: 120_000 });
  const [onCpu, onGpu, onGpuFused] = [info(), info('--devices', 'webgpu:0'), info('--devices', 'webgpu:0', '--fuse-attention')];
  for (const r of [onCpu, onGpu, onGpuFused]) assert.equal(r.status, 0, r.stderr);
  const noteLine = /^note: The UNet has 8 ONNX Attention nodes \(opset 23/m;
  assert.doesNotMatch(onCpu.stdout, noteLine);
  assert.match(onGpu.stdout, noteLine);
  assert.doesNotMatch(onGpuFused.stdout, noteLine);
  // The form follows the flash-attention check on this adapter (on lavapipe its kernel is wrong: padded).
  const formLine = (await checkFlashAttention()).ok ? 'flash form: ONNX Runtime\'s WebGPU flash-attention kernel checked right' : 'q and k padded: ONNX Runtime\'s WebGPU flash-attention kernel is wrong';
  assert.match(onGpuFused.stdout, new RegExp(`^Attention: +fused \\(8 layers as MultiHeadAttention, ${formLine} on this adapter \\(largest error [0-9.e+-]+ in float32, [0-9.e+-]+ in float16\\); 4 GEGLUs as BiasSplitGelu; 21 group norms as GroupNorm\\)$`, 'm'));
  assert.match(onCpu.stdout, /^Attention: +as exported/m);
});

test('a webgpu device that fails mid-run, or whose worker process is killed (as a driver crash ends it), is dropped with --retry and the result still matches', async () => {
  for (const mode of ['throw', 'kill'] as const) {
    // 'kill' ends the worker's process: only with the worker in a process of its own ('thread' would end this one).
    const workerIsolation = mode === 'kill' ? 'process' : 'auto';
    const p: Pipeline = await openPipeline(SHIPPED, { devices: 'cpu,webgpu:0', threads: 1, retryOnOtherDevice: true, workerIsolation }, { injectFailure: { device: 1, after: 0, mode } });
    try {
      const r = await p.generate(asg);
      assert.equal((p as unknown as { pool: { dispatcher: { retried: unknown[] } } }).pool.dispatcher.retried.length, 1, `${mode}: one unit re-run`);
      assert.ok(maxDiff(r.latent, cpuAsg.latent) <= LATENT, `${mode}: latent max diff ${maxDiff(r.latent, cpuAsg.latent)}`);
    } finally {
      await p.close();
    }
  }
  // Without --retry the kill is a device error naming the device and how its process ended; this process goes on.
  const p = await openPipeline(SHIPPED, { devices: 'cpu,webgpu:0', threads: 1, workerIsolation: 'process' }, { injectFailure: { device: 1, after: 0, mode: 'kill' } });
  try {
    await assert.rejects(p.generate(asg), (e: unknown) =>
      e instanceof AsgdError && e.kind === 'device' && /Device webgpu:0 stopped during unit .*worker process exited by signal SIGKILL/.test(e.message));
  } finally {
    await p.close();
  }
});

test('cancelling a webgpu generation stops it and reports cancelled', async () => {
  const p = await loadPipeline(SHIPPED, { devices: 'webgpu:0' });
  const controller = new AbortController();
  let events = 0;
  await assert.rejects(
    p.generate({ ...asg, steps: 20 }, { signal: controller.signal, onProgress: () => void (++events === 2 && controller.abort()) }),
    (e: unknown) => e instanceof AsgdError && e.kind === 'cancelled',
  );
  assert.ok(events >= 2 && events < 20 * 4, `stopped after ${events} progress events`);
  await p.close();
});

test('two webgpu pipelines one after the other in one process, stderr a file: both run, stderr stays the file', async () => {
  // Device workers used to close descriptor 2 when they ended (Node closes the descriptors a worker opened, and the
  // stderr filter reopens stderr there); the process then aborted in the second pipeline (a libuv assertion).
  const { spawnSync } = await import('node:child_process');
  const fs = await import('node:fs');
  const os = await import('node:os');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-twice-'));
  const errFile = path.join(dir, 'stderr.txt');
  const fd = fs.openSync(errFile, 'w');
  const env = { ...process.env };
  delete env['ASGD_RUNTIME_LOG'];
  const script = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'webgpu-pipelines-twice.ts');
  const r = spawnSync(process.execPath, ['--import', 'tsx', script], { stdio: ['ignore', 'pipe', fd], env, encoding: 'utf8', timeout: 300_000 });
  fs.closeSync(fd);
  const stderr = fs.readFileSync(errFile, 'utf8');
  fs.rmSync(dir, { recursive: true, force: true });
  assert.equal(r.status, 0, `exit ${r.status} (signal ${r.signal}); stderr: ${stderr}`);
  assert.equal(r.stdout, 'thread pipeline 0: 128x128\nthread pipeline 1: 128x128\nprocess pipeline 0: 128x128\nprocess pipeline 1: 128x128\n');
  assert.equal(stderr, 'stderr still reaches the file\n', 'the driver notes filtered, stderr itself kept');
});

test('asgd -q on webgpu writes nothing to stderr; --verbose shows the runtime warnings', async () => {
  const { spawnSync } = await import('node:child_process');
  const fs = await import('node:fs');
  const os = await import('node:os');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-quiet-'));
  const bin = path.join(path.dirname(SHIPPED), '..', 'bin', 'asgd.js');
  const run = (extra: string[]) => {
    // stderr to a file, as from a terminal or a shell redirection (see test/runtime-log.test.ts).
    const errFile = path.join(dir, `stderr-${extra.length}.txt`);
    const fd = fs.openSync(errFile, 'w');
    const env = { ...process.env };
    delete env['ASGD_RUNTIME_LOG'];
    const r = spawnSync(process.execPath, [bin, 'generate', '-q', '--devices', 'webgpu:0', '-p', 'a red circle', '--method', 'direct', '--steps', '1', '-o', path.join(dir, `out-${extra.length}.png`), ...extra], { stdio: ['ignore', 'pipe', fd], env, encoding: 'utf8' });
    fs.closeSync(fd);
    return { status: r.status, stderr: fs.readFileSync(errFile, 'utf8') };
  };
  const quiet = run([]);
  assert.equal(quiet.status, 0, quiet.stderr);
  assert.equal(quiet.stderr, '');
  const verbose = run(['--verbose']);
  assert.equal(verbose.status, 0, verbose.stderr);
  assert.match(verbose.stderr, /\[W:onnxruntime:/);
  fs.rmSync(dir, { recursive: true, force: true });
});
