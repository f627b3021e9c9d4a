/**
 * The WebAssembly kernels (src/core/kernels): the committed module is the assembly of kernels.wat; the Euler kernel
 * gives the TypeScript loop's bits for every prediction type and step; whole generations give the same bits with
 * and without WebAssembly. (The unit-by-unit stage-1 kernel against the lockstep functions: test/scheduling.test.ts.)
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { decodeBase64, KernelMemory, scratchKernels } from '../src/core/kernels/memory.ts';
import { KERNEL_BYTES_BASE64 } from '../src/core/kernels/kernel-bytes.ts';
import { KernelHeap } from '../src/core/kernels/heap.ts';
import { createRandom } from '../src/core/random/index.ts';
import { createScheduler } from '../src/core/schedulers/index.ts';
import type { EulerScheduler } from '../src/core/schedulers/euler.ts';
import type { DdimScheduler } from '../src/core/schedulers/ddim.ts';
import type { FlowMatchEulerScheduler } from '../src/core/schedulers/flow-match.ts';
import { SD_SCHEDULER_CONFIG } from './helpers/fake-unet.ts';
import { BarrierStep } from '../src/core/methods/barrier-step.ts';
import { patchLayout } from '../src/core/methods/polyphase.ts';
import { drawPermutations } from '../src/core/methods/pixel-interaction.ts';
import { weightedMask } from '../src/core/methods/guidance.ts';
import { planMethod, resolveMethodOptions } from '../src/core/methods/index.ts';
import { WindowFlow } from '../src/core/methods/window-flow.ts';
import { extractWindow } from '../src/core/methods/windows.ts';
import type { UnetUnit } from '../src/core/methods/types.ts';

const sameBits = (a: Float32Array, b: Float32Array) =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/**
 * stepPositions on every position (the WebAssembly kernel) against stepPositions on every position listed (the
 * TypeScript loop), at every step: odd lengths (no multiple of anything), values over many magnitudes.
 */
function kernelMatchesLoop(
  sched: { numSteps: number; stepPositions(k: number, m: Float32Array, s: Float32Array, into: Float32Array, at: Int32Array | null): void },
  rng: ReturnType<typeof createRandom>,
  label: string,
  also?: (k: number, m: Float32Array, s: Float32Array, kernel: Float32Array) => void,
): void {
  for (const len of [1, 7, 4099, 70001]) {
    const m = Float32Array.from(rng.randn([len]), (v, i) => v * 10 ** ((i % 9) - 4));
    const s = Float32Array.from(rng.randn([len]), (v, i) => v * 10 ** ((i % 7) - 2));
    const every = Int32Array.from({ length: len }, (_, i) => i);
    for (let k = 0; k < sched.numSteps; k++) {
      const kernel = new Float32Array(len);
      const loop = new Float32Array(len);
      sched.stepPositions(k, m, s, kernel, null);
      sched.stepPositions(k, m, s, loop, every);
      assert.ok(sameBits(kernel, loop), `${label}, length ${len}, step ${k}`);
      also?.(k, m, s, kernel);
    }
  }
}

describe('the WebAssembly kernels', () => {
  it('kernel-bytes.ts is the assembly of kernels.wat (node scripts/build-kernels.mjs --check)', () => {
    execFileSync(process.execPath, ['scripts/build-kernels.mjs', '--check'], { stdio: 'pipe' });
    const bytes = decodeBase64(KERNEL_BYTES_BASE64);
    assert.deepEqual([...bytes.subarray(0, 4)], [0, 0x61, 0x73, 0x6d], 'a WebAssembly module');
  });

  it('decodeBase64 agrees with Node for every padding, and names a bad character', () => {
    const rng = createRandom(5, 'test');
    for (let len = 0; len < 40; len++) {
      const bytes = Uint8Array.from({ length: len }, () => rng.randint(256));
      const b64 = Buffer.from(bytes).toString('base64');
      assert.deepEqual(decodeBase64(b64), bytes, `length ${len}`);
      assert.deepEqual(decodeBase64(b64.replace(/=+$/, '')), bytes, `length ${len} without padding`);
    }
    assert.throws(() => decodeBase64('AB-D'), /'-' at 2 is not a base64 character/);
  });

  it('the Euler kernel steps every position as the TypeScript loop does, bit for bit (each prediction type, every step, Karras sigmas)', () => {
    assert.ok(scratchKernels() !== null && KernelMemory.create() !== null, 'WebAssembly is there');
    const rng = createRandom(9, 'test');
    for (const prediction of ['epsilon', 'v_prediction', 'sample']) {
      for (const karras of [false, true]) {
        const sched = createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler', prediction_type: prediction, use_karras_sigmas: karras }, 30) as EulerScheduler;
        for (let k = 0; k < sched.numSteps; k++) assert.ok(sched.eulerCoefficients(k) !== null, `${prediction} step ${k}: the kernel takes it`);
        kernelMatchesLoop(sched, rng, `${prediction}, karras ${karras}`);
      }
    }
  });

  it('the flow-matching Euler kernel (kind 3) steps every position as the TypeScript loop does, bit for bit (static and dynamic shifts, every step)', () => {
    const rng = createRandom(10, 'test');
    const configs = [
      { _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 3 },
      { _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 1 },
      { _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 1, use_dynamic_shifting: true, base_image_seq_len: 256, max_image_seq_len: 4096, base_shift: 0.5, max_shift: 1.15 },
    ];
    for (const config of configs) {
      const sched = createScheduler(config, 28, undefined, { imageSeqLen: 1024 }) as FlowMatchEulerScheduler;
      kernelMatchesLoop(sched, rng, JSON.stringify(config), (k, m, s, kernel) => {
        // And against the formula written out here: s + (sigma_{k+1} - sigma_k) m in float32.
        const dt = Math.fround(sched.sigmas[k + 1]! - sched.sigmas[k]!);
        for (const i of [0, kernel.length >> 1, kernel.length - 1]) assert.equal(kernel[i], Math.fround(s[i]! + Math.fround(dt * m[i]!)), `element ${i}`);
      });
    }
  });

  it('the DDIM kernel (kinds 4 to 6) steps every position as the TypeScript loop does, bit for bit (each prediction type, every step); with clipping it declines', () => {
    const rng = createRandom(12, 'test');
    for (const prediction of ['epsilon', 'v_prediction', 'sample']) {
      for (const setAlphaToOne of [false, true]) {
        const sched = createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'DDIMScheduler', prediction_type: prediction, set_alpha_to_one: setAlphaToOne }, 25) as DdimScheduler;
        const kind = 4 + ['epsilon', 'sample', 'v_prediction'].indexOf(prediction);
        for (let k = 0; k < sched.numSteps; k++) assert.equal(sched.eulerCoefficients(k)?.kind, kind, `${prediction} step ${k}: the kernel takes it`);
        kernelMatchesLoop(sched, rng, `${prediction}, set_alpha_to_one ${setAlphaToOne}`);
      }
    }
    // Against the formula written out here (epsilon): sqrt(abar') (s - sqrt(1 - abar) m) / sqrt(abar) + sqrt(1 - abar') m.
    const sched = createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'DDIMScheduler' }, 10) as DdimScheduler;
    const m = Float32Array.from(rng.randn([9]));
    const s = Float32Array.from(rng.randn([9]));
    const out = new Float32Array(9);
    sched.stepPositions(3, m, s, out, null);
    const f = Math.fround;
    const a = sched.alphasCumprod[sched.timesteps[3]!]!;
    const ap = sched.alphasCumprod[sched.timesteps[3]! - 100]!;
    for (let i = 0; i < 9; i++) {
      const x0 = f(f(s[i]! - f(f(Math.sqrt(f(1 - a))) * m[i]!)) / f(Math.sqrt(a)));
      assert.equal(out[i], f(f(f(Math.sqrt(ap)) * x0) + f(f(Math.sqrt(f(1 - ap))) * m[i]!)), `element ${i}`);
    }
    const clipping = createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'DDIMScheduler', clip_sample: true }, 10) as DdimScheduler;
    assert.equal(clipping.eulerCoefficients(0), null, 'clip_sample: the TypeScript loop');
  });

  it('whole asg generations give the same bits with and without WebAssembly', () => {
    const run = (...args: string[]) =>
      JSON.parse(execFileSync(process.execPath, ['--import', 'tsx', 'test/helpers/kernel-free-run.ts', ...args], { encoding: 'utf8' })) as { webassembly: boolean; hashes: string[] };
    const withKernels = run();
    const without = run('--no-webassembly');
    assert.equal(withKernels.webassembly, true, 'the first run had the kernels');
    assert.equal(without.webassembly, false, 'the second run had none');
    assert.equal(new Set(withKernels.hashes).size, withKernels.hashes.length, 'the generations differ from each other');
    assert.deepEqual(without.hashes, withKernels.hashes);
  });

  it('a step the kernel memory cannot hold is taken by the TypeScript loops, with the same bits', () => {
    // The step needs about 11 pages (three latents of 120 KiB and more); this memory may have 2.
    const capped = KernelMemory.create(2 * 65536)!;
    assert.equal(capped.layout([65536, 65536]) !== null, true, 'two pages fit');
    assert.equal(capped.layout([65536, 65537]), null, 'a third page does not');
    const sched = createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler' }, 12) as EulerScheduler;
    const rng = createRandom(4, 'test');
    const n = 4;
    const plane = 48 * 40;
    const size = 4 * plane;
    const patches = Float32Array.from(rng.randn([n * size]));
    const outputs = Array.from({ length: n }, () => Float32Array.from(rng.randn([size])));
    const perm = drawPermutations(rng, size, n);
    const key = Float32Array.from(rng.randn([size]));
    const step = 3;
    const { alpha, sigma } = sched.noiseLevel(step);
    const take = (memory: KernelMemory | null) => {
      const b = new BarrierStep({
        step, patches, layout: patchLayout(n, size), perm, n, size,
        advance: (k, m, x, into = new Float32Array(x.length), at) => (sched.stepPositions(k, m, x, into, at ?? null), into),
        eps: new Float32Array(n * size), next: new Float32Array(n * size),
        guidance: () => ({ space: 'eps', key, alpha, sigma, weights: weightedMask(null, 0.5, plane) }),
        ...(memory ? { kernel: { memory, step: { euler: sched.eulerCoefficients(step)! } } } : {}),
      });
      outputs.forEach((o, j) => b.take(j, { output: o }));
      return b;
    };
    const loops = take(null);
    for (const memory of [capped, KernelMemory.create()!]) {
      const b = take(memory);
      assert.ok(sameBits(b.eps, loops.eps) && sameBits(b.next, loops.next), 'guided outputs and stepped patches');
      assert.ok(sameBits(b.keyLatent, loops.keyLatent) && sameBits(b.keyOutput, loops.keyOutput), 'the key patch');
    }
  });

  it('stage-2 tiles (Euler, flow-matching Euler, DDIM) fused by the kernel, fused and stepped by the kernels, by the TypeScript loops, or by the loops reading the windows that fit from a memory too small for all, give the same bits', async () => {
    const steps = 6;
    const schedulers = [
      createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler' }, steps) as EulerScheduler,
      createScheduler({ _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 3 }, steps) as FlowMatchEulerScheduler,
      createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'DDIMScheduler', prediction_type: 'v_prediction' }, steps) as DdimScheduler,
    ];
    // A 72 x 76 latent, padded to 80 x 80, in windows of 32 (16 KiB of output each), every step in stage 2.
    const plan = planMethod('multidiffusion', resolveMethodOptions({}), { height: 72, width: 76, nativeHeight: 32, nativeWidth: 32, latentMultiple: 8, channels: 4, numSteps: steps });
    assert.deepEqual([plan.geometry.paddedHeight, plan.geometry.paddedWidth], [80, 80], 'edge-padded on both axes');
    const latent = Float32Array.from(createRandom(2, 'test').randn([4 * 72 * 76]));
    const flow = async (sched: EulerScheduler | FlowMatchEulerScheduler | DdimScheduler, memory: KernelMemory | null | undefined, euler = false) => {
      const rng = createRandom(8, 'test');
      const outputs: Float32Array[] = [];
      const f = new WindowFlow(plan, latent, 0, createRandom(3, 'jitter'), {
        scheduler: sched,
        advance: (k, m, x) => sched.step({ stepIndex: k, history: [] }, m, x).prevSample,
        // The window's output: its input, scaled and shifted by the step; windows finish in a random order.
        evaluate: async (unit: UnetUnit) => {
          await new Promise((r) => setTimeout(r, rng.randint(3)));
          return Float32Array.from(unit.sample, (v, i) => v * 0.9 + ((i % 7) - 3) * 0.01 * (unit.step + 1));
        },
        ...(memory === undefined ? {} : { memory }),
        // With the Euler step's scalars, whole tiles are fused, placed and stepped in the kernels' memory.
        ...(euler ? { eulerStep: (k: number) => sched.eulerCoefficients(k) } : {}),
      });
      for (let k = 0; k < steps; k++) {
        const r = await f.result(k);
        outputs.push(r.fused, ...(r.after ? [r.after] : []));
      }
      return outputs;
    };
    // One page (64 KiB): room for a few windows' outputs only, the rest kept in JavaScript arrays.
    const small = KernelMemory.create(65536)!;
    assert.ok(plan.windows.count * 4 * 32 * 32 * 4 > 2 * 65536, `${plan.windows.count} windows a step need more than the small memory holds`);
    for (const sched of schedulers) {
      const loops = await flow(sched, null);
      for (const [memory, euler, label] of [[undefined, false, 'fuse kernel'], [undefined, true, 'tile kernels'], [small, true, 'small memory']] as const) {
        const got = await flow(sched, memory, euler);
        assert.equal(got.length, loops.length);
        got.forEach((a, i) => assert.ok(sameBits(a, loops[i]!), `array ${i} (${sched.name}, ${label})`));
      }
    }
  });

  it('the window kernel cuts what extractWindow cuts, zeros outside the latent included, whatever the memory held before', () => {
    const km = KernelMemory.create()!;
    const [C, H, W, wh, ww] = [3, 20, 24, 8, 10];
    const [src, dst] = km.layout([C * H * W * 4, C * wh * ww * 4])!;
    const latent = Float32Array.from(createRandom(6, 'test').randn([C * H * W]));
    km.f32(src, latent.length).set(latent);
    // Windows inside, across every edge, wholly outside (rows or columns), scaled and not.
    for (const [top, left] of [[0, 0], [5, 7], [-3, -4], [15, 18], [-8, 2], [20, 3], [4, -10], [6, 24], [-20, -20]] as const) {
      for (const scale of [1, 0.3712]) {
        km.f32(dst, C * wh * ww).fill(Number.NaN); // what an earlier window left there
        km.kernels.extractWindow(src, dst, C, H, W, top, left, wh, ww, scale);
        const expected = extractWindow(latent, C, H, W, top, left, wh, ww, scale);
        assert.ok(sameBits(km.f32(dst, C * wh * ww), expected), `window at (${top}, ${left}), scale ${scale}`);
      }
    }
  });

  it('a kernel heap hands out aligned regions, gives a returned one to the next request of its size, and says when it is full', () => {
    const heap = new KernelHeap(KernelMemory.create(2 * 65536)!);
    const a = heap.alloc(100);
    const b = heap.alloc(100);
    assert.deepEqual([a, b], [0, 112], 'one after another, 16-byte aligned');
    heap.release(a!, 100);
    assert.equal(heap.alloc(50), 112 + 112, 'a returned region goes to requests of its size only');
    assert.equal(heap.alloc(100), 0, 'the returned region, again');
    assert.equal(heap.alloc(2 * 65536), null, 'past the memory\'s maximum');
    assert.equal(heap.alloc(65536), 224 + 64, 'and the heap still works after a refusal (after the 64-byte region)');
  });
});
