import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { AsgdError } from '../src/core/errors.ts';
import type { UnetUnit } from '../src/core/methods/types.ts';
import type { GenerateParams } from '../src/core/params.ts';
import { planBatch } from '../src/core/dispatch/balance.ts';
import { combineCfg } from '../src/core/dispatch/cfg.ts';
import { CostModel } from '../src/core/dispatch/cost.ts';
import { Dispatcher } from '../src/core/dispatch/dispatcher.ts';
import { resolveSplitMode, type ExecDevice, type SplitMode, type TaskOutput, type UnitTask } from '../src/core/dispatch/tasks.ts';
import { loadPipeline, openPipeline, type GenerateResult, type PipelineOptions, type PipelineTestHooks } from '../src/node/pipeline.ts';
import { liveDeviceWorkers } from '../src/node/runner/device-worker.ts';
import { chooseAutoDevices, cudaGpus, parseDevices, workerIsolations } from '../src/node/runner/devices.ts';
import { tinyModel } from './helpers/models.ts';

// ---------------------------------------------------------------------------------------------------------------
// The dispatcher against scripted devices (no model): order, CFG halves, balance, faults.

function unit(i: number, size = 8, wantAttention = false): UnetUnit {
  const sample = new Float32Array(4 * size * size);
  for (let k = 0; k < sample.length; k++) sample[k] = Math.sin(i * 31 + k * 0.7);
  return { id: `s2/k0/w${i}`, kind: 'window', step: 0, index: i, sample, height: size, width: size, timestep: 500, wantAttention };
}

/** Deterministic fake model: branch outputs depend on the sample and the branch only. */
function branch(task: UnitTask, part: 'uncond' | 'cond'): Float32Array {
  const s = task.unit.sample;
  return Float32Array.from(s, (v, k) => (part === 'cond' ? Math.fround(v * 0.75 + k * 1e-3) : Math.fround(v * 0.5 - 0.1)));
}

class ScriptedDevice implements ExecDevice {
  readonly ran: UnitTask[] = [];
  constructor(
    readonly label: string,
    readonly hasProbe: boolean,
    private readonly ms: (task: UnitTask) => number,
    private readonly failOn?: (task: UnitTask, n: number) => boolean,
  ) {}
  async run(task: UnitTask, scale: number): Promise<TaskOutput> {
    this.ran.push(task);
    await new Promise((r) => setTimeout(r, this.ms(task)));
    if (this.failOn?.(task, this.ran.length)) throw new Error('out of memory');
    const out: TaskOutput =
      task.part === 'both' ? { output: combineCfg(branch(task, 'uncond'), branch(task, 'cond'), scale) } : { output: branch(task, task.part) };
    if (task.probe) out.attention = [{ layer: this.label, height: 1, width: 1, tokens: 1, data: new Float32Array([1]) }];
    return out;
  }
}

const reference = (u: UnetUnit, scale: number) => {
  const t = { id: u.id, unit: u, part: 'both' as const, probe: false };
  return combineCfg(branch(t, 'uncond'), branch(t, 'cond'), scale);
};

test('results come back in unit order, CFG halves combined exactly, whatever the completion order', async () => {
  const units = Array.from({ length: 9 }, (_, i) => unit(i));
  for (const split of ['never', 'balance', 'always'] as SplitMode[]) {
    // Durations that scramble completion order.
    const devices = [0, 1, 2].map((d) => new ScriptedDevice(`dev${d}`, false, (t) => ((t.unit.index * 7 + d * 5) % 11) + 1));
    const dispatcher = new Dispatcher(devices, { now: () => performance.now(), split });
    const results = await dispatcher.evaluate(units, 7.5);
    results.forEach((r, i) => assert.deepEqual(r.output, reference(units[i]!, 7.5), `${split}: unit ${i}`));
    const halves = devices.reduce((n, d) => n + d.ran.filter((t) => t.part !== 'both').length, 0);
    if (split === 'never') assert.equal(halves, 0);
    if (split === 'always') assert.equal(halves, 18);
  }
});

test('onResult hands each unit over once as it is in, CFG halves combined, before the batch resolves; a throw fails the batch', async () => {
  const units = Array.from({ length: 7 }, (_, i) => unit(i));
  for (const split of ['never', 'always'] as SplitMode[]) {
    const devices = [0, 1, 2].map((d) => new ScriptedDevice(`dev${d}`, false, (t) => 12 - t.unit.index - d));
    const dispatcher = new Dispatcher(devices, { now: () => performance.now(), split });
    const seen: number[] = [];
    let resolved = false;
    const pending = dispatcher.evaluate(units, 7.5, {
      onResult: (i, r) => {
        assert.ok(!resolved, 'before the batch resolves');
        assert.deepEqual(r.output, reference(units[i]!, 7.5), `${split}: unit ${i} combined`);
        seen.push(i);
      },
    });
    const results = await pending;
    resolved = true;
    assert.deepEqual([...seen].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6], `${split}: every unit once`);
    if (split === 'never') assert.notDeepEqual(seen, [0, 1, 2, 3, 4, 5, 6], 'in the order they came in, not unit order');
    results.forEach((r, i) => assert.deepEqual(r.output, reference(units[i]!, 7.5)));
  }
  const dispatcher = new Dispatcher([new ScriptedDevice('dev0', false, () => 1)], { now: () => performance.now() });
  await assert.rejects(dispatcher.evaluate(units, 7.5, { onResult: (i) => { if (i === 3) throw new Error('bad unit 3'); } }), /bad unit 3/);
});

test("balance leaves a stream's units whole (the dataflow's next units fill the idle devices); 'always' still splits them", async () => {
  const lone = [unit(0)];
  const run = async (split: SplitMode, stream: boolean) => {
    const devices = [0, 1, 2, 3].map((d) => new ScriptedDevice(`dev${d}`, false, () => 2));
    const dispatcher = new Dispatcher(devices, { now: () => performance.now(), split });
    const [r] = await dispatcher.evaluate(lone, 7.5, { stream });
    assert.deepEqual(r!.output, reference(lone[0]!, 7.5));
    return devices.reduce((n, d) => n + d.ran.filter((t) => t.part !== 'both').length, 0);
  };
  // One unit, four idle devices and halves believed half as dear: alone, it is split across two devices.
  assert.equal(await run('balance', false), 2);
  assert.equal(await run('balance', true), 0);
  assert.equal(await run('always', true), 2);
});

test('many batches in flight on one signal share one abort listener: an abort cancels them all, and none is left after', async () => {
  const devices = [new ScriptedDevice('dev0', false, () => 5), new ScriptedDevice('dev1', false, () => 5)];
  const dispatcher = new Dispatcher(devices, { now: () => performance.now() });
  const controller = new AbortController();
  let listeners = 0;
  const signal = controller.signal;
  const add = signal.addEventListener.bind(signal);
  const remove = signal.removeEventListener.bind(signal);
  signal.addEventListener = ((type: string, l: () => void, o?: { once?: boolean }) => {
    listeners += 1;
    add(type, l, o);
  }) as typeof signal.addEventListener;
  signal.removeEventListener = ((type: string, l: () => void) => {
    listeners -= 1;
    remove(type, l);
  }) as typeof signal.removeEventListener;
  // 16 batches at once (more than the 10 listeners after which Node warns), then all of them settle.
  const done = await Promise.all(Array.from({ length: 16 }, (_, i) => dispatcher.evaluate([unit(i)], 7.5, { signal })));
  assert.equal(done.length, 16);
  assert.equal(listeners, 0, 'no listener left once the batches settled');
  const pending = Array.from({ length: 16 }, (_, i) => dispatcher.evaluate([unit(i)], 7.5, { signal }));
  assert.equal(listeners, 1, 'one listener for the signal, not one per batch');
  controller.abort();
  const settled = await Promise.allSettled(pending);
  assert.ok(settled.every((r) => r.status === 'rejected' && r.reason instanceof AsgdError && r.reason.kind === 'cancelled'), 'every batch cancelled');
  assert.equal(listeners, 0);
  // A batch after the abort is refused at once.
  await assert.rejects(dispatcher.evaluate([unit(0)], 7.5, { signal }), (e: unknown) => e instanceof AsgdError && e.kind === 'cancelled');
});

test('balance: 9 windows on 4 devices split one unit (2.5 unit-times instead of 3); the probe task goes first, to its holder', () => {
  const cost = new CostModel(4);
  const slots = [0, 1, 2, 3].map((device) => ({ device, freeAt: 0, probe: device === 0 }));
  const windows = Array.from({ length: 9 }, (_, i) => unit(i, 16));
  const plan = planBatch(windows, slots, cost, 'balance', true);
  assert.equal(plan.splitUnits, 1);
  assert.equal(plan.makespan, 2.5 * 256);
  assert.equal(planBatch(windows, slots, cost, 'never', true).makespan, 3 * 256);
  // One device: splitting gains nothing, so nothing is split.
  assert.equal(planBatch(windows, slots.slice(0, 1), cost, 'balance', true).splitUnits, 0);
  // Stage 1 on 4 devices: the key (probe) unit is split so that its conditional half runs first on the holder.
  const patches = [unit(0, 16, true), unit(1, 16), unit(2, 16), unit(3, 16)];
  const p1 = planBatch(patches, slots, cost, 'balance', true);
  assert.equal(p1.tasks[0]!.id, 's2/k0/w0/cond');
  assert.ok(p1.tasks[0]!.probe);
  assert.ok(p1.makespan < 1.15 * 256, `key split shortens the step: ${p1.makespan / 256}`);
});

test('a faster device gets more work once its speed is measured', async () => {
  const fast = new ScriptedDevice('fast', false, () => 2);
  // 20 times slower: timer lateness on a loaded machine (a few ms) cannot make the two look alike.
  const slow = new ScriptedDevice('slow', false, () => 40);
  const dispatcher = new Dispatcher([slow, fast], { now: () => performance.now(), split: 'never' });
  for (let k = 0; k < 4; k++) await dispatcher.evaluate(Array.from({ length: 6 }, (_, i) => unit(i)), 2);
  const [s, f] = dispatcher.stats;
  assert.ok(f!.tasks >= 2 * s!.tasks, `fast ${f!.tasks} tasks, slow ${s!.tasks}`);
});

test('a slow first call (warm-up) does not starve a device: its rate stays provisional until a warm call is measured', async () => {
  // The first call on `cold` takes 40 times a warm one (shader compiling, arena sizing, a busy host). Averaged in as
  // before, it made the device look 40 times slower than `warm`, which then took every unit of every batch.
  let coldCalls = 0;
  const cold = new ScriptedDevice('cold', false, () => (++coldCalls === 1 ? 80 : 2));
  const warm = new ScriptedDevice('warm', false, () => 2);
  const dispatcher = new Dispatcher([warm, cold], { now: () => performance.now(), split: 'never' });
  for (let k = 0; k < 4; k++) await dispatcher.evaluate(Array.from({ length: 6 }, (_, i) => unit(i)), 2);
  const [w, c] = dispatcher.stats;
  assert.ok(c!.tasks >= 6, `cold ${c!.tasks} tasks of 24, warm ${w!.tasks}`);

  const whole = { id: 'w', unit: unit(0, 16), part: 'both' as const, probe: false };
  const probe = { ...whole, probe: true };
  const cost = new CostModel(2);
  cost.observe(whole, 0, 256);
  cost.observe(whole, 0, 256);
  cost.observe(whole, 1, 256 * 40);
  assert.equal(cost.estimate(whole, 1), 256, 'a warm-up rate is capped by the warm rate of the others');
  cost.observe(whole, 1, 256 * 3);
  assert.equal(cost.estimate(whole, 1), 256 * 3, 'the first warm call replaces it');
  // The probe graph warms up apart: its first call leaves the measured rate as it is.
  cost.observe(probe, 1, 256 * 1.15 * 40);
  assert.equal(cost.estimate(whole, 1), 256 * 3);
  const fresh = new CostModel(1);
  fresh.observe(whole, 0, 512);
  assert.equal(fresh.estimate(whole, 0), 512, 'with no warm rate anywhere the warm-up call is the estimate');
  const counted = new CostModel(1, { warmup: 0 });
  counted.observe(whole, 0, 512 * 40);
  assert.equal(counted.estimate(whole, 0), 512 * 40, 'warmup 0: every call counts');
});

test("resolveSplitMode: 'auto' asks for the bits only with two or more CPU-kernel devices; a UNet's static batch over 1 (its sample input's) runs no halves", async () => {
  const inputs = (batch: number | string) => [{ name: 'timestep', shape: [1] }, { name: 'sample', shape: [batch, 4, 16, 16] }];
  let asked = 0;
  const exact = (answer: boolean) => async () => (asked++, answer);
  const cpu2 = { devices: 2, cpuKernels: true, unetInputs: inputs('batch') };
  assert.equal(await resolveSplitMode('auto', cpu2, exact(true)), 'balance');
  assert.equal(await resolveSplitMode('auto', cpu2, exact(false)), 'never');
  assert.equal(asked, 2);
  assert.equal(await resolveSplitMode('auto', { ...cpu2, devices: 1 }, exact(true)), 'never');
  assert.equal(await resolveSplitMode('auto', { ...cpu2, cpuKernels: false }, exact(true)), 'never');
  assert.equal(asked, 2, 'not asked where the answer cannot matter');
  assert.equal(await resolveSplitMode('always', { ...cpu2, devices: 1, cpuKernels: false }, exact(false)), 'always');
  // The batch of `sample`, not of the first input (timestep's 1): fixed at 2, no halves whatever was asked.
  for (const mode of ['auto', 'always', 'balance'] as const) assert.equal(await resolveSplitMode(mode, { ...cpu2, unetInputs: inputs(2) }, exact(true)), 'never', mode);
  assert.equal(await resolveSplitMode('always', { ...cpu2, unetInputs: inputs(1) }, exact(true)), 'always');
  assert.equal(await resolveSplitMode('balance', { ...cpu2, unetInputs: undefined }, exact(true)), 'balance');
});

test('balance learns what halves cost: no split once they are measured as dear as whole units', () => {
  const slots = [0, 1, 2, 3].map((device) => ({ device, freeAt: 0, probe: device === 0 }));
  const windows = Array.from({ length: 9 }, (_, i) => unit(i, 16));
  const whole = { id: 'w', unit: windows[0]!, part: 'both' as const, probe: false };
  const half = { ...whole, part: 'cond' as const };
  const cost = new CostModel(4);
  // Only halves timed so far (at the price of a whole): one unit must stay whole so the ratio gets measured.
  for (const d of [0, 1, 2, 3]) cost.observe(half, d, 256 * 1.04);
  const patches = [unit(0, 16, true), unit(1, 16), unit(2, 16), unit(3, 16)];
  assert.ok(planBatch(patches, slots, cost, 'balance', true).splitUnits < patches.length);
  // Whole units timed on one device: halves are now known to be dear, and nothing is split.
  cost.observe(whole, 1, 256);
  assert.equal(planBatch(windows, slots, cost, 'balance', true).splitUnits, 0);
  assert.equal(planBatch(patches, slots, cost, 'balance', true).splitUnits, 0);
  // Cheap halves measured instead: 9 windows on 4 devices split again.
  const cheap = new CostModel(4);
  for (const d of [0, 1, 2, 3]) cheap.observe(whole, d, 256), cheap.observe(half, d, 128);
  assert.equal(planBatch(windows, slots, cheap, 'balance', true).splitUnits, 1);
});

test('a failing device: named error without retry; with retry the units finish elsewhere, the probe moves too', async () => {
  const units = [unit(0, 8, true), ...Array.from({ length: 5 }, (_, i) => unit(i + 1))];
  const failing = () => new ScriptedDevice('gpu0', true, () => 2, (_, n) => n >= 2);
  const healthy = () => new ScriptedDevice('gpu1', false, () => 3);
  const d1 = new Dispatcher([failing(), healthy()], { now: () => performance.now(), split: 'never' });
  await assert.rejects(d1.evaluate(units, 5), (e: unknown) =>
    e instanceof AsgdError && e.kind === 'device' && /^Device gpu0 failed on unit s2\/k0\/w\d+: out of memory/.test(e.message));
  assert.deepEqual(d1.liveDevices.map((d) => d.label), ['gpu1']);

  const acquired: string[] = [];
  const lost: string[] = [];
  const d2 = new Dispatcher([failing(), healthy()], {
    now: () => performance.now(), split: 'never', retry: true,
    onDeviceLost: (d) => lost.push(d.label),
    acquireProbe: async (d) => void acquired.push(d.label),
  });
  for (let round = 0; round < 2; round++) {
    const r = await d2.evaluate(units, 5);
    r.forEach((x, i) => assert.deepEqual(x.output, reference(units[i]!, 5)));
    assert.equal(r[0]!.attention?.length, 1, 'the probe unit still gets its attention');
  }
  assert.deepEqual(lost, ['gpu0']);
  assert.deepEqual(acquired, ['gpu1'], 'the probe graph is loaded on the surviving device');
  assert.ok(d2.retried.length >= 1);

  // Every device failing ends in an error, not a hang.
  const d3 = new Dispatcher([failing(), new ScriptedDevice('gpu1', false, () => 1, () => true)], { now: () => performance.now(), retry: true });
  await assert.rejects(d3.evaluate(units, 5), (e: unknown) => e instanceof AsgdError && e.kind === 'device');
  await assert.rejects(d3.evaluate(units, 5), /No device left to run unit/, 'a later batch fails at once, without hanging');
});

test('device lists: thread division and adapter indexes', () => {
  assert.deepEqual(parseDevices('cpu,cpu', 0, 16).map((d) => d.threads), [8, 8]);
  assert.deepEqual(parseDevices('cpu,cpu,cpu', 0, 2).map((d) => d.threads), [1, 1, 1]);
  assert.deepEqual(parseDevices('cpu,cuda:1', 0, 16).map((d) => [d.label, d.threads]), [['cpu#0', 0], ['cuda:1', 0]]);
  assert.deepEqual(parseDevices('webgpu:0,cpu', 3, 16).map((d) => d.label), ['webgpu:0', 'cpu#0']);
  assert.throws(() => parseDevices('webgpu:1'), /Invalid devices; expected "webgpu" or "webgpu:0".*default GPU adapter/);
});

test("devices 'auto': every CUDA GPU where the provider is installed, else WebGPU where its adapter beats the CPU on the dense test, else the CPU; each with its reason", () => {
  const dense = (webgpuMs: number, cpuMs: number) => ({ ok: true as const, ms: 5, dense: { webgpuMs, cpuMs } });
  assert.deepEqual(chooseAutoDevices({ count: 1, from: '/proc/driver/nvidia/gpus' }, dense(1, 10)), {
    devices: 'cuda:0', reason: 'the CUDA execution provider is installed and can use 1 GPU (/proc/driver/nvidia/gpus): one worker',
  });
  assert.deepEqual(chooseAutoDevices({ count: 4, from: 'nvidia-smi -L' }, undefined), {
    devices: 'cuda:0,cuda:1,cuda:2,cuda:3', reason: 'the CUDA execution provider is installed and can use 4 GPUs (nvidia-smi -L): a worker on each',
  });
  assert.deepEqual(chooseAutoDevices({ count: undefined, from: 'unknown: no NVIDIA driver list could be read' }, undefined), {
    devices: 'cuda:0',
    reason: 'the CUDA execution provider is installed; how many GPUs it can use is unknown (unknown: no NVIDIA driver list could be read), so one worker on cuda:0 (name more with --devices cuda:0,cuda:1)',
  });
  // CUDA_VISIBLE_DEVICES hiding every GPU: as if CUDA were not there, and said.
  assert.deepEqual(chooseAutoDevices({ count: 0, from: 'CUDA_VISIBLE_DEVICES="-1"' }, { ok: false, reason: 'no Vulkan driver' }), {
    devices: 'cpu', reason: 'WebGPU found no usable adapter (no Vulkan driver) (the CUDA execution provider is installed but can use no GPU: CUDA_VISIBLE_DEVICES="-1")',
  });
  assert.deepEqual(chooseAutoDevices(undefined, dense(2.5, 20)), {
    devices: 'webgpu:0', reason: 'the WebGPU adapter ran a dense test (8 products of 512x512 matrices) in 2.5 ms, 8.0x faster than the CPU (20 ms)',
  });
  assert.deepEqual(chooseAutoDevices(undefined, dense(530, 17)), {
    devices: 'cpu',
    reason: 'the WebGPU adapter ran a dense test (8 products of 512x512 matrices) in 530 ms, 31.2x slower than the CPU (17 ms): a CPU emulation such as lavapipe or SwiftShader, or a slow GPU',
  });
  assert.deepEqual(chooseAutoDevices(undefined, { ok: false, reason: 'no Vulkan driver' }), { devices: 'cpu', reason: 'WebGPU found no usable adapter (no Vulkan driver)' });
  assert.deepEqual(chooseAutoDevices(undefined, { ok: true, ms: 5, denseError: 'out of memory' }), { devices: 'cpu', reason: 'the WebGPU adapter failed the dense test (out of memory)' });
  assert.deepEqual(chooseAutoDevices(undefined, undefined), { devices: 'cpu', reason: 'this onnxruntime-node build has no WebGPU provider' });
  // 'auto' is resolved before the list is parsed; in a list it is an error that says so.
  assert.throws(() => parseDevices('auto,cpu'), (e: unknown) =>
    e instanceof AsgdError && e.parameter === 'devices' && /expected "auto" alone \(it picks the devices itself\)/.test(e.message) && /"auto,cpu"/.test(e.message));
  assert.throws(() => parseDevices('auto'), (e: unknown) => e instanceof AsgdError && /resolve "auto" with autoDevices\(\) first/.test(e.message));
});

test('the CUDA GPUs auto can use: the driver\'s list, narrowed by CUDA_VISIBLE_DEVICES as CUDA reads it', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-gpus-'));
  try {
    for (const bus of ['0000:17:00.0', '0000:65:00.0', '0000:ca:00.0']) fs.mkdirSync(path.join(dir, bus));
    const never = () => assert.fail('nvidia-smi is asked only without the driver folder');
    assert.deepEqual(cudaGpus({}, dir, never), { count: 3, from: dir });
    const visible = (v: string) => cudaGpus({ CUDA_VISIBLE_DEVICES: v }, dir, never).count;
    assert.equal(visible('2,0'), 2);
    assert.equal(visible(' 1 '), 1);
    assert.equal(visible(''), 0, 'set but empty: no GPU');
    assert.equal(visible('-1'), 0);
    assert.equal(visible('0,-1,1'), 1, 'the list ends at the first entry that names no device');
    assert.equal(visible('0,5,1'), 1, 'an index beyond the GPUs ends it too');
    assert.equal(visible('1,1'), 1, 'as does a repeat');
    assert.equal(visible('GPU-8c6a2c1e-1f3b-4b1e-9d0e-2f1d4f6a7b8c,MIG-GPU-1/2/0'), 2);
    assert.equal(visible('0,1,2,3,4'), 3, 'never more than the driver lists');
    assert.equal(cudaGpus({ CUDA_VISIBLE_DEVICES: '0' }, dir, never).from, 'CUDA_VISIBLE_DEVICES="0"');
    // Without the folder (not Linux): nvidia-smi's list, else unknown.
    const missing = path.join(dir, 'none');
    assert.deepEqual(cudaGpus({}, missing, () => 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2)\n'), { count: 2, from: 'nvidia-smi -L' });
    assert.deepEqual(cudaGpus({}, missing, () => undefined), { count: undefined, from: 'unknown: no NVIDIA driver list could be read' });
    assert.deepEqual(cudaGpus({ CUDA_VISIBLE_DEVICES: '0,3' }, missing, () => undefined).count, 2, 'indices are not bounded when the GPUs are unknown');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('worker isolation: auto puts WebGPU workers in processes of their own when there are two or more, or one runs as a thread already', () => {
  const where = (list: string, mode: unknown = 'auto', live = 0) => workerIsolations(mode, parseDevices(list, 0, 4), live).join(',');
  assert.equal(where('webgpu:0', 'auto', 1), 'process', "another pipeline's WebGPU worker thread runs");
  assert.equal(where('cpu,webgpu:0', 'auto', 1), 'thread,process');
  assert.equal(where('cpu,cpu', 'auto', 1), 'thread,thread');
  assert.equal(where('webgpu:0', 'thread', 1), 'thread', 'as asked');
  assert.equal(where('cpu,cpu'), 'thread,thread');
  assert.equal(where('webgpu:0'), 'thread');
  assert.equal(where('cpu,webgpu:0'), 'thread,thread');
  assert.equal(where('webgpu:0,cpu,webgpu:0'), 'process,thread,process');
  assert.equal(where('webgpu:0,webgpu:0', 'thread'), 'thread,thread');
  assert.equal(where('cpu,cpu', 'process'), 'process,process');
  assert.throws(() => where('cpu', 'fork'), (e: unknown) =>
    e instanceof AsgdError && e.parameter === 'workerIsolation' && /expected one of auto, thread, process/.test(e.message) && /"fork"/.test(e.message));
});

// ---------------------------------------------------------------------------------------------------------------
// The pipeline on worker threads with the built-in tiny model: asg at 2x the native size (4 patches, 9 windows).

const params = { prompt: 'a red circle on a blue background', steps: 4, seed: 21, width: 1024, height: 1024, guidanceScale: 7.5 };
let model: string;
let reference1: GenerateResult;

interface PoolView {
  splitMode: string;
  dispatcher: { unitsSplit: number; retried: unknown[] };
}

async function generate(
  options: PipelineOptions & PipelineTestHooks, signal?: AbortSignal, over: Partial<GenerateParams> = {}, onUnits?: (units: readonly UnetUnit[]) => void,
): Promise<GenerateResult & { pool: PoolView }> {
  const { injectFailure, completionJitter, inspectWorkers, ...rest } = options;
  const p = await openPipeline(model, { threads: 1, ...rest }, { injectFailure, completionJitter, inspectWorkers });
  try {
    const r = await p.generate({ ...params, ...over }, { signal, onUnits });
    return { ...r, pool: (p as unknown as { pool: PoolView }).pool };
  } finally {
    await p.close();
  }
}

function sameBits(a: Float32Array, b: Float32Array): boolean {
  return a.length === b.length && a.every((v, i) => Object.is(v, b[i]));
}

async function assertNoWorkers(): Promise<void> {
  // Thread exits are reported asynchronously, and a thread ended during a native call (ONNX Runtime creating a
  // session, which cannot be interrupted) exits when that call returns: on a loaded machine that took over the 1 s
  // this waited before (one CI run of many). A worker left running for good still fails after 10 s.
  for (let i = 0; i < 500 && liveDeviceWorkers().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(liveDeviceWorkers(), [], 'no device worker is left running');
}

before(async () => {
  model = await tinyModel('standard');
  reference1 = await generate({ devices: 'cpu' });
});
after(assertNoWorkers);

test('loading stops when its signal aborts: a cancelled error, and every device worker it started ends', async () => {
  const cancelled = (e: unknown) => e instanceof AsgdError && e.kind === 'cancelled' && e.message === 'Loading cancelled';
  await assert.rejects(loadPipeline(model, { signal: AbortSignal.abort() }), cancelled);
  assert.deepEqual(liveDeviceWorkers(), [], 'an aborted signal starts no worker');
  for (const workerIsolation of ['process', 'thread'] as const) {
    const controller = new AbortController();
    let most = 0;
    // Aborted the moment the first of four workers exists (it is loading its sessions); the others start one by one.
    const watch = setInterval(() => {
      most = Math.max(most, liveDeviceWorkers().length);
      if (most > 0) controller.abort();
    }, 1);
    try {
      await assert.rejects(loadPipeline(model, { devices: 'cpu,cpu,cpu,cpu', threads: 1, workerIsolation, signal: controller.signal }), cancelled);
    } finally {
      clearInterval(watch);
    }
    assert.ok(controller.signal.aborted, `${workerIsolation}: aborted during the load`);
    assert.ok(most < 4, `${workerIsolation}: the load stopped before its last worker (${most} started)`);
    // A thread ends once the sessions it is creating exist (ONNX Runtime cannot be interrupted there).
    for (let i = 0; i < 600 && liveDeviceWorkers().length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(liveDeviceWorkers(), [], `${workerIsolation}: every worker the load started has ended`);
  }
});

test('CPU workers run every unit on the probe graph, fused or not: one UNet session where the probe is held, described as the UNet', async () => {
  type Described = Awaited<ReturnType<Parameters<NonNullable<PipelineTestHooks['inspectWorkers']>>[0]>>;
  for (const fuseAttention of [false, true]) {
    let ask!: () => Promise<Described>;
    const p = await openPipeline(model, { threads: 1, devices: 'cpu,cpu', fuseAttention }, { inspectWorkers: (f) => (ask = f) });
    try {
      const [first, second] = await ask();
      const names = (io: { name: string }[] | undefined) => (io ?? []).map((i) => i.name);
      // Worker 0: text encoder, VAE decoder, and the UNet with the probe in one session. Fused, the probed layers are
      // fused too, their scores kept for the maps (attention-fusion.ts), so the fused probe computes the fused UNet's
      // bits (test/attention-fusion.test.ts) and serves both.
      assert.equal(first!.sessions, 3, `fuseAttention ${fuseAttention}: worker 0's sessions`);
      assert.equal(second!.sessions, 1);
      assert.ok(!names(first!.components.unet?.inputs).includes('asgd_mask_weights'), 'the UNet is described without the probe input');
      assert.ok(!names(first!.components.unet?.outputs).some((n) => n.startsWith('attn2_probs:')), 'and without its maps');
      assert.ok(names(first!.components.unetProbe?.inputs).includes('asgd_mask_weights'));
      assert.deepEqual(names(second!.components.unet?.inputs), names(first!.components.unet?.inputs));
      const r = await p.generate(params);
      const one = fuseAttention ? await generate({ devices: 'cpu', fuseAttention }) : reference1;
      assert.ok(sameBits(r.latent, one.latent), `fuseAttention ${fuseAttention}: the same bits as one worker`);
    } finally {
      await p.close();
    }
  }
});

test("probeSession 'separate' keeps the UNet and the probe graph in two sessions, with the same bits; a wrong value is named", async () => {
  type Described = Awaited<ReturnType<Parameters<NonNullable<PipelineTestHooks['inspectWorkers']>>[0]>>;
  let ask!: () => Promise<Described>;
  const p = await openPipeline(model, { threads: 1, devices: 'cpu,cpu', probeSession: 'separate' }, { inspectWorkers: (f) => (ask = f) });
  try {
    const [first, second] = await ask();
    // Worker 0: text encoder, VAE decoder, the plain UNet and the probe graph; worker 1 the plain UNet alone.
    assert.equal(first!.sessions, 4);
    assert.equal(second!.sessions, 1);
    const names = (io: { name: string }[] | undefined) => (io ?? []).map((i) => i.name);
    assert.ok(!names(second!.components.unet?.inputs).includes('asgd_mask_weights'), 'worker 1 runs the plain UNet');
    assert.ok(names(first!.components.unetProbe?.inputs).includes('asgd_mask_weights'));
    const r = await p.generate(params);
    assert.ok(sameBits(r.latent, reference1.latent), 'the same bits as one worker running every unit on the probe graph');
  } finally {
    await p.close();
  }
  // The worker holding the probe dies: with retry the other one opens the probe graph beside its UNet and finishes.
  const moved = await generate({ devices: 'cpu,cpu', probeSession: 'separate', retryOnOtherDevice: true, injectFailure: { device: 0, after: 2, mode: 'exit' } });
  assert.ok(sameBits(moved.latent, reference1.latent), 'the same bits after the probe moved');
  assert.equal(moved.pool.dispatcher.retried.length, 1);
  await assert.rejects(loadPipeline(model, { probeSession: 'two' as 'shared' }), (err: unknown) =>
    err instanceof AsgdError && err.parameter === 'probeSession' && /shared/.test(err.message) && /"two"/.test(err.message));
  await assertNoWorkers();
});

test('1 and 2 CPU workers give bit-identical images, also with shuffled completion order and every unit split', async () => {
  for (const options of [
    { devices: 'cpu,cpu' },
    { devices: 'cpu,cpu', completionJitter: { seed: 5, maxMs: 15 } },
    { devices: 'cpu,cpu', splitCfg: 'always' as const, completionJitter: { seed: 6, maxMs: 10 } },
  ]) {
    const r = await generate(options);
    // 'auto' on CPU workers checked that a split unit gives the same bits, and then split units to balance.
    assert.equal(r.pool.splitMode, options.splitCfg ?? 'balance');
    assert.ok(r.pool.dispatcher.unitsSplit > 0, 'some units ran as CFG halves');
    assert.ok(sameBits(r.latent, reference1.latent), JSON.stringify(options));
    assert.ok(Buffer.from(r.image.data).equals(Buffer.from(reference1.image.data)), JSON.stringify(options));
  }
  await assertNoWorkers();
});

test('stage2Windows and interactionEvery set: 1 and 2 CPU workers give bit-identical latents, the patches running ahead on 2', async () => {
  const over = { steps: 6, methodOptions: { stage2Windows: 2, interactionEvery: 3 } };
  const calls: (readonly UnetUnit[])[] = [];
  const one = await generate({ devices: 'cpu' }, undefined, over);
  const two = await generate({ devices: 'cpu,cpu', completionJitter: { seed: 8, maxMs: 10 } }, undefined, over, (u) => calls.push(u));
  assert.ok(sameBits(two.latent, one.latent));
  assert.ok(!sameBits(one.latent, reference1.latent));
  // Lockstep stage-1 steps hand over all 4 patches at once; run-ahead steps one patch per call.
  assert.ok(calls.some((c) => c.length === 1 && c[0]!.kind === 'patch'), 'stage-1 patches were handed over one by one');
  // 6 windows per stage-2 step (2 x 3 and 3 x 2 on a 2 x 2 patch latent) instead of 9.
  assert.ok(calls.some((c) => c.length === 6 && c[0]!.kind === 'window'));
  await assertNoWorkers();
});

test("interactionGroups 'lines': 1 and 2 CPU workers give bit-identical latents, the lines of patches handed over group by group", async () => {
  const over = { steps: 6, methodOptions: { interactionGroups: 'lines' as const } };
  const calls: (readonly UnetUnit[])[] = [];
  const one = await generate({ devices: 'cpu' }, undefined, over);
  const two = await generate({ devices: 'cpu,cpu', completionJitter: { seed: 10, maxMs: 10 } }, undefined, over, (u) => calls.push(u));
  assert.ok(sameBits(two.latent, one.latent));
  assert.ok(!sameBits(one.latent, reference1.latent), 'lines shuffle otherwise than all');
  // 2 x 2 patches: a row or a column of 2 at a time, never all 4 of a step at once.
  const patchCalls = calls.filter((c) => c[0]!.kind === 'patch');
  assert.ok(patchCalls.length > 0 && patchCalls.every((c) => c.length === 2), `patch calls of ${[...new Set(patchCalls.map((c) => c.length))]}`);
  await assertNoWorkers();
});

test('stage 2 as a dataflow: 1 and 2 CPU workers give bit-identical latents, windows handed over one by one', async () => {
  // Steps 2 and 3 are stage 2: windows of step 3 start while step 2's are still running.
  const over = { steps: 4, methodOptions: { stageSplit: 0.5 } };
  const calls: (readonly UnetUnit[])[] = [];
  const one = await generate({ devices: 'cpu' }, undefined, over);
  const two = await generate({ devices: 'cpu,cpu', completionJitter: { seed: 9, maxMs: 10 } }, undefined, over, (u) => calls.push(u));
  assert.ok(sameBits(two.latent, one.latent), '2 workers: the same latent');
  const windows = calls.filter((c) => c[0]!.kind === 'window');
  assert.ok(windows.length === 18 && windows.every((c) => c.length === 1), 'the 9 windows of each stage-2 step one by one');
  await assertNoWorkers();
});

test('a multistep scheduler (dpmpp-2m: a history per position) and Euler ancestral (noise per position) run ahead and flow too: 1 and 2 CPU workers give bit-identical latents', async () => {
  const euler = await generate({ devices: 'cpu' }, undefined, { steps: 6, scheduler: 'euler', methodOptions: { stageSplit: 0.5, interactionEvery: 3 } });
  for (const scheduler of ['dpmpp-2m', 'euler-ancestral']) {
    const over = { steps: 6, scheduler, methodOptions: { stageSplit: 0.5, interactionEvery: 3 } };
    const calls: (readonly UnetUnit[])[] = [];
    const one = await generate({ devices: 'cpu' }, undefined, over);
    const two = await generate({ devices: 'cpu,cpu', completionJitter: { seed: 11, maxMs: 10 } }, undefined, over, (u) => calls.push(u));
    assert.ok(sameBits(two.latent, one.latent), `${scheduler}, 2 workers: the same latent`);
    assert.ok(!sameBits(one.latent, euler.latent), `${scheduler}, not the euler default above the native size`);
    assert.ok(calls.some((c) => c.length === 1 && c[0]!.kind === 'patch'), `${scheduler}: stage-1 patches were handed over one by one`);
    assert.ok(calls.filter((c) => c[0]!.kind === 'window').every((c) => c.length === 1), `${scheduler}: stage-2 windows one by one`);
  }
  await assertNoWorkers();
});

test('a device that throws fails the generation naming the device and the unit; no worker is left', async () => {
  await assert.rejects(generate({ devices: 'cpu,cpu', injectFailure: { device: 1, after: 1 } }), (e: unknown) =>
    e instanceof AsgdError && e.kind === 'device' && /Device cpu#1 failed on unit s[12]\/k\d+\/[pw]\d+(\/(un)?cond)?: injected failure after 1 UNet calls/.test(e.message));
  await assertNoWorkers();
});

test('a device whose thread dies abruptly fails the generation naming it and the unit; no worker is left', async () => {
  const t0 = performance.now();
  await assert.rejects(generate({ devices: 'cpu,cpu', injectFailure: { device: 1, after: 2, mode: 'exit' } }), (e: unknown) =>
    e instanceof AsgdError && e.kind === 'device' && /Device cpu#1 stopped during unit s[12]\/k\d+\/[pw]\d+(\/(un)?cond)?: worker exited with code 70/.test(e.message));
  assert.ok(performance.now() - t0 < 15_000, 'no hang');
  await assertNoWorkers();
});

test('after a device failure, and after a cancel during the restart, the next run starts the workers again and equals the fault-free one', async () => {
  const p = await openPipeline(model, { threads: 1, devices: 'cpu,cpu' }, { injectFailure: { device: 1, after: 1 } });
  try {
    await assert.rejects(p.generate(params), (e: unknown) => e instanceof AsgdError && e.kind === 'device');
    await assertNoWorkers();
    // The run after it starts the workers again; cancelled while they load, it ends them and is cancelled.
    const controller = new AbortController();
    const watch = setInterval(() => {
      if (liveDeviceWorkers().length > 0) controller.abort();
    }, 1);
    try {
      await assert.rejects(p.generate(params, { signal: controller.signal }), (e: unknown) => e instanceof AsgdError && e.kind === 'cancelled' && e.message === 'Generation cancelled');
    } finally {
      clearInterval(watch);
    }
    assert.ok(controller.signal.aborted, 'the cancel came while the workers started');
    await assertNoWorkers();
    // And the next one starts them once more (the injected failure was the first workers' only).
    const r = await p.generate(params);
    assert.ok(sameBits(r.latent, reference1.latent), 'the same final latent as the fault-free run');
  } finally {
    await p.close();
  }
  await assertNoWorkers();
});

test('with retry, a failing device is dropped and the generation equals the fault-free one', async () => {
  // Device 1 dies; then device 0 (which holds the probe graph, text encoder and VAE) dies and device 1 takes over.
  // Device 0 runs the fewer calls (11-13 of about 34 in four runs here; it also encodes and decodes), so it fails at
  // its third: set to fail at its sixth, it never got there in one CI run (no unit was re-run).
  for (const injectFailure of [{ device: 1, after: 2, mode: 'exit' as const }, { device: 0, after: 2, mode: 'exit' as const }, { device: 1, after: 3 }]) {
    const r = await generate({ devices: 'cpu,cpu', retryOnOtherDevice: true, injectFailure });
    assert.ok(sameBits(r.latent, reference1.latent), JSON.stringify(injectFailure));
    assert.equal(r.pool.dispatcher.retried.length, 1, 'one unit was re-run');
    // One warning naming the device given up and why (the scheduler notice of patch methods above the native size
    // is expected too): the image is the same, but a device failing run after run should not go unnoticed.
    const notes = r.warnings.filter((w) => !/Using the euler scheduler/.test(w));
    assert.equal(notes.length, 1, notes.join(' | '));
    assert.match(notes[0]!, new RegExp(`^Device cpu#${injectFailure.device} failed and was given up; the other devices ran its work \\(retry\\): Device cpu#${injectFailure.device} `));
  }
  await assertNoWorkers();
});

test("workers as processes: each in its own, the same bits as threads; one that dies or is killed fails only itself", async () => {
  let ask: (() => Promise<{ pid: number }[]>) | undefined;
  const asked: Promise<{ pid: number }[]>[] = [];
  const r = await generate({
    devices: 'cpu,cpu', workerIsolation: 'process', completionJitter: { seed: 7, maxMs: 10 }, inspectWorkers: (a) => (ask = a),
  }, undefined, {}, () => void (ask && asked.length === 0 && asked.push(ask())));
  const pids = (await asked[0]!).map((d) => d.pid);
  assert.equal(new Set(pids).size, 2, `two worker processes: ${pids}`);
  assert.ok(!pids.includes(process.pid), 'neither is this process');
  assert.equal(r.pool.splitMode, 'balance');
  assert.ok(sameBits(r.latent, reference1.latent), 'the latent of one worker thread');
  assert.ok(Buffer.from(r.image.data).equals(Buffer.from(reference1.image.data)));
  // A worker process that ends (exit code) or is killed (a signal, as a segfault in a provider would end it): the
  // error names the device and how it ended; with retry the other worker finishes the generation, bit for bit.
  for (const [mode, how] of [['exit', 'with code 70'], ['kill', 'by signal SIGKILL']] as const) {
    await assert.rejects(generate({ devices: 'cpu,cpu', workerIsolation: 'process', injectFailure: { device: 1, after: 2, mode } }), (e: unknown) =>
      e instanceof AsgdError && e.kind === 'device' && e.message.includes(`Device cpu#1 stopped during unit`) && e.message.includes(`worker process exited ${how}`));
    const again = await generate({ devices: 'cpu,cpu', workerIsolation: 'process', retryOnOtherDevice: true, injectFailure: { device: 1, after: 2, mode } });
    assert.ok(sameBits(again.latent, reference1.latent), mode);
    assert.equal(again.pool.dispatcher.retried.length, 1, 'one unit was re-run');
  }
  await assertNoWorkers();
});

test('cancelling mid-run stops every worker (threads or processes), between model calls or during one', async () => {
  for (const [workerIsolation, when] of [['thread', 'between calls'], ['thread', 'during a call'], ['process', 'between calls'], ['process', 'during a call']] as const) {
    const controller = new AbortController();
    const p = await loadPipeline(model, { devices: 'cpu,cpu', threads: 1, workerIsolation });
    let events = 0;
    let abortedAt = 0;
    const abort = () => {
      abortedAt = performance.now();
      controller.abort();
    };
    const run = p.generate({ ...params, steps: 30 }, {
      signal: controller.signal,
      onProgress: (e) => {
        if (e.phase !== 'denoise' || ++events !== 3) return;
        // Terminating a worker inside session.run would abort the process (see device-worker.ts): the pool waits.
        if (when === 'between calls') abort();
        else setTimeout(abort, 7);
      },
    });
    await assert.rejects(run, (e: unknown) => e instanceof AsgdError && e.kind === 'cancelled', `${workerIsolation}, ${when}`);
    assert.ok(performance.now() - abortedAt < 2000, `${workerIsolation}, ${when}: stopped promptly`);
    if (when === 'between calls') assert.equal(events, 3, 'no progress after the abort');
    await assertNoWorkers();
    await p.close();
  }
});
