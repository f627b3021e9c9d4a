/**
 * The scheduling of issue 15: stage-2 grids sized to a window count K (stage2Windows), pixel interaction every m-th
 * stage-1 step (interactionEvery) with the patches running ahead of each other in between, and stage 2 as a dataflow
 * (window-flow.ts). Every assert.ok has a message: without one, a failing assert under tsx hangs.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { denoise } from '../src/core/generation/denoise.ts';
import { schedulerFrom } from '../src/core/generation/img2img.ts';
import { planGeometry, type PatchGeometry } from '../src/core/methods/geometry.ts';
import { createMethod } from '../src/core/methods/index.ts';
import type { StagedMethod } from '../src/core/methods/staged.ts';
import type { EvaluateHint, MethodName, UnetUnit, UnitResult } from '../src/core/methods/types.ts';
import { WindowCanvas, placeWindows, planWindowsFor } from '../src/core/methods/windows.ts';
import { BarrierStep, UNIT_BLOCK } from '../src/core/methods/barrier-step.ts';
import { applyEpsGuidance, applyX0Guidance, weightedMask } from '../src/core/methods/guidance.ts';
import { drawPermutations, shuffleToUnits, unshuffleFromUnits } from '../src/core/methods/pixel-interaction.ts';
import { latentLayout, patchLayout, relocatePatches } from '../src/core/methods/polyphase.ts';
import { resolveParams } from '../src/core/params.ts';
import { createRandom } from '../src/core/random/index.ts';
import { createScheduler } from '../src/core/schedulers/index.ts';
import { PartStepper } from '../src/core/schedulers/part-stepper.ts';
import type { EulerScheduler } from '../src/core/schedulers/euler.ts';
import { KernelMemory } from '../src/core/kernels/memory.ts';
import { fakeUnet, SD_SCHEDULER_CONFIG } from './helpers/fake-unet.ts';

const geo = (h: number, w: number, native: number) =>
  planGeometry({ height: h, width: w, nativeHeight: native, nativeWidth: native, latentMultiple: 8, channels: 1 });

describe('stage2Windows: grids sized to K', () => {
  it('SDXL 2048 px with K = 4 alternates 2 x 4 and 4 x 2 (8 windows); 3072 px with K = 8 is 4 x 4 (16)', () => {
    const a = planWindowsFor(geo(256, 256, 128), 4);
    assert.deepEqual(a.map((g) => [g.vertical.bases.length, g.horizontal.bases.length]), [[2, 4], [4, 2]]);
    assert.deepEqual(a[0]!.vertical.bases, [0, 128]);
    assert.equal(a[0]!.vertical.jitter, 0, 'windows that only touch do not move');
    assert.deepEqual(a[0]!.horizontal.bases, [0, 43, 85, 128]);
    const b = planWindowsFor(geo(384, 384, 128), 8);
    assert.deepEqual(b.map((g) => g.count), [16]);
    assert.deepEqual(b[0]!.vertical.bases, [0, 85, 171, 256]);
    // 16x area on a 16 px native model (the fidelity benchmark's 512 px): 20 windows with K = 4.
    assert.deepEqual(planWindowsFor(geo(64, 64, 16), 4).map((g) => [g.vertical.bases.length, g.horizontal.bases.length]), [[4, 5], [5, 4]]);
  });

  it('every grid has a multiple of K windows, covers every position under any jitter, and its weights sum to 1', () => {
    for (const [h, w, native] of [[256, 256, 128], [384, 384, 128], [64, 64, 16], [48, 80, 16], [16, 64, 16], [24, 24, 16], [16, 16, 16]] as const) {
      for (const k of [1, 2, 3, 4, 5, 8]) {
        const g = geo(h, w, native);
        const grids = planWindowsFor(g, k);
        for (const grid of grids) {
          // A latent of the native size has its one window whatever K is.
          if (grid.count > 1) assert.equal(grid.count % k, 0, `${h}x${w} K ${k}`);
          for (let draw = 0; draw < 4; draw++) {
            const rng = createRandom(draw, 'jitter');
            const canvas = new WindowCanvas(1, g.height, g.width);
            const win = grid.vertical.window * grid.horizontal.window;
            for (const p of placeWindows(grid, rng)) canvas.add(new Float32Array(win).fill(1), p.top, p.left, grid.vertical.window, grid.horizontal.window);
            const fused = canvas.result(); // throws on an uncovered position
            assert.ok(fused.every((v) => Math.abs(v - 1) < 1e-6), `${h}x${w} K ${k}: weights sum to 1`);
          }
        }
      }
    }
  });

  it('is a pure function of the geometry and K; the method evaluates what its plan counts, the grids cycling step by step', async () => {
    assert.deepEqual(planWindowsFor(geo(256, 256, 128), 4), planWindowsFor(geo(256, 256, 128), 4));
    const setup = { height: 32, width: 32, nativeHeight: 16, nativeWidth: 16, latentMultiple: 4, numSteps: 10 };
    const m = createMethod('asg', { stage2Windows: 4, stageSplit: 0.6 }, setup);
    assert.deepEqual(m.plan.grids.map((g) => g.count), [8, 8]);
    assert.deepEqual(Array.from({ length: 10 }, (_, k) => m.unitsAt(k)), [4, 4, 4, 4, 4, 4, 8, 8, 8, 8]);
    assert.throws(() => createMethod('asg', { stage2Windows: 4, windowStride: 8 }, setup), /stage2Windows/);
    assert.equal(createMethod('asg', {}, setup).plan.grids.length, 1, 'default: the one fixed-stride grid');
  });
});

interface RunOptions {
  devices: number;
  lockstep?: boolean;
  seed?: number;
  method?: MethodName;
  /** A scheduler class, or a class with config fields beside SD 1.5's. */
  scheduler?: string | { _class_name: string; [field: string]: unknown };
  /** Latent size (width too unless `width`). */
  size?: number;
  width?: number;
  previewEvery?: number;
  signal?: AbortSignal;
  /** The fake device fails this unit. */
  failUnit?: string;
  /** Sees every unit handed over, with the hint it came with. */
  onUnit?(unit: UnetUnit, hint?: EvaluateHint): void;
  /** Hand every result over one by one (EvaluateHint.onResult) before evaluate returns, in reverse order. */
  resultsAtOnce?: boolean;
  /** An upscale's steps: the scheduler from this step on (schedulerFrom), from a fixed encoded input. */
  upscale?: { start: number; skipResidual?: boolean; target?: 'shared' | 'per-patch' };
}

interface RunResult {
  latent: Float32Array;
  aheadDispatches: number;
  /** Windows of step t handed over while a window of step t-1 was still outstanding. */
  aheadWindows: number;
  units: UnetUnit[];
  progress: string[];
  previews: Float32Array[];
  /** The denoise loop's own scheduler steps (the method's advance steps not counted). */
  wholeSteps: number;
  /** Per step k: the units of step k + 1 already handed over when the loop had the latent after step k. */
  handedEarly: number[];
  /** Units whose results the method asked for one by one (EvaluateHint.onResult). */
  oneByOne: number;
  /** Steps of the whole latent taken in the kernels with a history (Scheduler.statefulCoefficients asked). */
  statefulKernelSteps: number;
}

/** Runs the denoise stage on the fake UNet; `devices` > 1 completes units out of order with random delays. */
async function run(methodOptions: Record<string, unknown>, opts: RunOptions = { devices: 1 }): Promise<RunResult> {
  const size = opts.size ?? 32;
  const width = opts.width ?? size;
  const params = resolveParams(
    { prompt: 'x', width: width * 8, height: size * 8, steps: 12, seed: 7, method: opts.method ?? 'asg', methodOptions },
    { width: 128, height: 128 },
  );
  const sched = typeof opts.scheduler === 'string' ? { _class_name: opts.scheduler } : (opts.scheduler ?? { _class_name: 'EulerDiscreteScheduler' });
  const full = createScheduler({ ...SD_SCHEDULER_CONFIG, ...sched }, 12);
  const up = opts.upscale;
  const base = up ? schedulerFrom(full, up.start) : full;
  const inputLatent = () => Float32Array.from(createRandom(5, 'test').randn([4 * size * width]), (v) => v * 0.5);
  const init = up ? { latent: inputLatent(), ...(up.skipResidual ? { skipResidual: true } : {}), ...(up.target ? { structureTarget: inputLatent().subarray(0, (up.target === 'shared' ? 1 : (size / 16) * (width / 16)) * 4 * 16 * 16) } : {}) } : undefined;
  let wholeSteps = 0;
  const scheduler: typeof base = Object.create(base);
  scheduler.step = (state, output, sample, rng) => {
    // The loop's own step passes a noise source (the generator, or PartStepper's for the step) and the whole latent;
    // the method's part-of-the-latent steps (advance) pass none (stepPositions) or one part (PartStepper): with
    // asynchronous guidance a run-ahead patch, a unit's block or a stage-2 tile, never all 4 x size x width values.
    if (rng !== undefined && output.length === 4 * size * width) wholeSteps++;
    return base.step(state, output, sample, rng);
  };
  let statefulKernelSteps = 0;
  if (base.statefulCoefficients) {
    scheduler.statefulCoefficients = (state) => {
      statefulKernelSteps++;
      return base.statefulCoefficients!(state);
    };
  }
  const jitter = createRandom(opts.seed ?? 1, 'test');
  const done = new Set<string>();
  const units: UnetUnit[] = [];
  const progress: string[] = [];
  const previews: Float32Array[] = [];
  let aheadDispatches = 0;
  let aheadWindows = 0;
  const handedEarly: number[] = [];
  let oneByOne = 0;
  const outstanding = (u: UnetUnit) => units.some((o) => o.kind === u.kind && o.step === u.step - 1 && o.index !== u.index && !done.has(o.id));
  const evaluate = async (batch: UnetUnit[], hint?: EvaluateHint): Promise<UnitResult[]> => {
    if (hint?.onResult) oneByOne += batch.length;
    for (const u of batch) {
      units.push(u);
      opts.onUnit?.(u, hint);
      // A unit of step t handed over while a unit of step t-1 of another patch (window) is still outstanding: run-ahead.
      if (u.kind === 'patch' && u.step > 0 && outstanding(u)) aheadDispatches++;
      if (u.kind === 'window' && outstanding(u)) aheadWindows++;
    }
    const results = batch.map((u) => ({ ...fakeUnet({ ...u, sample: Float32Array.from(u.sample) }), id: u.id }));
    if (opts.resultsAtOnce && hint?.onResult) {
      for (let i = results.length - 1; i >= 0; i--) {
        const { id: _, ...r } = results[i]!;
        hint.onResult(i, r);
      }
    }
    if (opts.devices > 1) await new Promise((r) => setTimeout(r, jitter.randint(4)));
    if (batch.some((u) => u.id === opts.failUnit)) throw new Error(`device lost running ${opts.failUnit}`);
    if (opts.devices > 1 && hint?.onResult) {
      // Hand some results over one by one, in a random order, as a dispatcher does when they come in; the rest
      // only with the resolved batch (an evaluator may do either).
      const order = results.map((_, i) => i).sort(() => jitter.randint(3) - 1);
      for (const i of order.slice(0, order.length - jitter.randint(2))) {
        const { id: _, ...r } = results[i]!;
        hint.onResult(i, r);
        if (jitter.randint(2) === 0) await new Promise((r) => setTimeout(r, jitter.randint(2)));
      }
    }
    for (const u of batch) done.add(u.id);
    return results.map(({ id: _, ...r }) => r);
  };
  const r = await denoise({
    params, scheduler, latentHeight: size, latentWidth: width, nativeHeight: 16, nativeWidth: 16, channels: 4, latentMultiple: 8,
    evaluate, maskTokens: [1, 2, 3], lockstep: opts.lockstep, signal: opts.signal, ...(init ? { init } : {}),
    onProgress: (e) => progress.push(`${e.stage}/${e.step}/${e.unitsDone}/${e.unitId}`),
    previewEvery: opts.previewEvery ?? 0,
    onPreviewLatent: (latent) => previews.push(Float32Array.from(latent)),
    onStep: (k) => handedEarly.push(units.filter((u) => u.step === k + 1).length),
  });
  return { latent: r.latent, aheadDispatches, aheadWindows, units, progress, previews, wholeSteps, handedEarly, oneByOne, statefulKernelSteps };
}

const sameBits = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

describe('interactionEvery: stage-1 patches run ahead between pixel-interaction steps', () => {
  it('bit-identical latents with every step a barrier, and out of order on "several devices", for each guidance mode', async () => {
    const cases: [string, Record<string, unknown>, MethodName?][] = [
      ['asg m 3', { interactionEvery: 3 }],
      ['asg m 4, sync', { interactionEvery: 4, guidanceSync: true }],
      ['asg m 4, eps space, mask every 2', { interactionEvery: 4, structureSpace: 'eps', maskEvery: 2 }],
      ['asg m 2 (blocks of one step)', { interactionEvery: 2 }],
      ['asg, no pixel interaction', { pixelInteraction: false }],
      ['asg m 3 with stage2Windows 4', { interactionEvery: 3, stage2Windows: 4 }],
      ['asg m 4, interactionTail 0.3', { interactionEvery: 4, interactionTail: 0.3 }],
      ['cutdiffusion m 3', { interactionEvery: 3 }, 'cutdiffusion'],
    ];
    for (const [label, options, method] of cases) {
      const lock = await run(options, { devices: 1, lockstep: true, method });
      assert.equal(lock.aheadDispatches, 0, label);
      const one = await run(options, { devices: 1, method });
      assert.ok(sameBits(one.latent, lock.latent), `${label}: 1 device`);
      for (const seed of [1, 2]) {
        const many = await run(options, { devices: 4, seed, method });
        if (options.interactionEvery !== 2) assert.ok(many.aheadDispatches > 0, `${label}: patches ran ahead`);
        assert.ok(sameBits(many.latent, lock.latent), `${label}: several devices, order ${seed}`);
        assert.equal(many.units.length, one.units.length, label);
      }
    }
  });

  it("interactionGroups 'lines': the lines run ahead of each other within a period; 1 device, several, and lockstep give the same bits", async () => {
    // 3 x 3 patches (a 48 x 48 latent on the 16 x 16 native size) and 2 x 2 (32 x 32); 12 steps, 10 in stage 1.
    const cases: [string, Record<string, unknown>, number, MethodName?][] = [
      ['asg lines 3 x 3', { interactionGroups: 'lines' }, 48],
      ['asg lines 2 x 2, period 3', { interactionGroups: 'lines', linesPeriod: 3 }, 32],
      ['asg lines, sync', { interactionGroups: 'lines', guidanceSync: true }, 48],
      ['asg lines, eps space, mask every 2', { interactionGroups: 'lines', structureSpace: 'eps', maskEvery: 2 }, 48],
      ['asg lines, m 3', { interactionGroups: 'lines', interactionEvery: 3, linesPeriod: 1 }, 48],
      ['cutdiffusion lines', { interactionGroups: 'lines' }, 48, 'cutdiffusion'],
      ['asg lines, period 1', { interactionGroups: 'lines', linesPeriod: 1 }, 48],
    ];
    for (const [label, options, size, method] of cases) {
      const lock = await run(options, { devices: 1, lockstep: true, method, size });
      assert.equal(lock.aheadDispatches, 0, label);
      // (Without guidance the fake UNet, elementwise, commutes with any shuffle: cutdiffusion cannot show it.)
      const all = await run({ ...options, interactionGroups: 'all' }, { devices: 1, lockstep: true, method, size });
      if (method !== 'cutdiffusion') assert.ok(!sameBits(all.latent, lock.latent), `${label}: lines shuffle otherwise than all`);
      const one = await run(options, { devices: 1, method, size });
      assert.ok(sameBits(one.latent, lock.latent), `${label}: 1 device`);
      for (const seed of [1, 2]) {
        const many = await run(options, { devices: 4, seed, method, size });
        // Rows and columns swapping at every interacting step wait for every patch, as 'all' does.
        if (options.linesPeriod === 1 && !options.interactionEvery) assert.equal(many.aheadDispatches, 0, `${label}: a swap every step is a barrier`);
        else assert.ok(many.aheadDispatches > 0, `${label}: patches ran ahead across interacting steps`);
        assert.ok(sameBits(many.latent, lock.latent), `${label}: several devices, order ${seed}`);
        assert.equal(many.units.length, one.units.length, label);
      }
    }
  });

  it('DDIM, the multistep solvers (each position its own history) and Euler ancestral (the step\'s noise at each position) run ahead too, with the same result', async () => {
    const m4 = { interactionEvery: 4 };
    const ahead: [RunOptions['scheduler'], Record<string, unknown>][] = [
      ['DDIMScheduler', m4], ['DPMSolverMultistepScheduler', m4], ['LMSDiscreteScheduler', m4], ['PNDMScheduler', m4],
      [{ _class_name: 'DPMSolverMultistepScheduler', solver_type: 'heun', lower_order_final: false }, m4],
      [{ _class_name: 'PNDMScheduler', skip_prk_steps: false }, m4],
      // Synchronous guidance steps all patches at once where it guides them (staged.ts), then runs ahead.
      ['DPMSolverMultistepScheduler', { ...m4, guidanceSync: true }],
      ['PNDMScheduler', { ...m4, guidanceSync: true }],
      ['EulerAncestralDiscreteScheduler', m4],
      ['EulerAncestralDiscreteScheduler', { ...m4, guidanceSync: true }],
    ];
    for (const [s, options] of ahead) {
      const label = `${JSON.stringify(s)} ${JSON.stringify(options)}`;
      const lock = await run(options, { devices: 1, lockstep: true, scheduler: s });
      for (const [devices, seed] of [[1, 1], [4, 1], [4, 2]] as const) {
        const r = await run(options, { devices, seed, scheduler: s });
        if (devices > 1) assert.ok(r.aheadDispatches > 0, `${label}: patches ran ahead`);
        assert.ok(sameBits(r.latent, lock.latent), `${label}: ${devices} device(s), order ${seed}: same latent`);
      }
    }
  });

  it('interactionTail: the last fraction of stage 1 shuffles at every step', () => {
    const setup = { height: 32, width: 32, nativeHeight: 16, nativeWidth: 16, latentMultiple: 8, channels: 4, numSteps: 20 };
    const steps = (options: Record<string, unknown>) => {
      const m = createMethod('asg', options, setup) as StagedMethod;
      return Array.from({ length: 20 }, (_, k) => k).filter((k) => m.interactsAt(k));
    };
    // Stage 1 is steps 0-15 (split 0.8); a quarter of it is the last 4.
    assert.deepEqual(steps({ interactionEvery: 8, interactionTail: 0.25 }), [0, 8, 12, 13, 14, 15]);
    assert.deepEqual(steps({ interactionEvery: 16, interactionTail: 0.25 }), [0, 12, 13, 14, 15]);
    assert.deepEqual(steps({ interactionEvery: 8 }), [0, 8]);
    assert.deepEqual(steps({ interactionEvery: 8, interactionTail: 1 }), steps({}));
    assert.deepEqual(steps({ interactionEvery: 8, interactionTail: 0.25, pixelInteraction: false }), []);
    assert.throws(() => createMethod('asg', { interactionTail: 1.5 }, setup), /interactionTail/);
  });

  it('interactionEvery 1 (the default) is today: every step shuffles, nothing runs ahead', async () => {
    const a = await run({}, { devices: 4 });
    const b = await run({ interactionEvery: 1 }, { devices: 1, lockstep: true });
    assert.equal(a.aheadDispatches, 0);
    assert.ok(sameBits(a.latent, b.latent), 'the default is today');
    const m = await run({ interactionEvery: 3 }, { devices: 1, lockstep: true });
    assert.ok(!sameBits(m.latent, b.latent), 'fewer interactions change the image');
  });
});

describe('the denoise loop takes the latent the method already stepped', () => {
  it('steps the whole latent only where no run-ahead block or dataflow stepped it, with the same bits', async () => {
    // 12 steps. The method steps every stage-1 patch itself (lockstep steps and run-ahead blocks alike) and the
    // dataflow every stage-2 step but the last, which the loop steps (1). Padded geometries: the loop steps stage 1
    // (6 at split 0.5) and the flow's last step. multidiffusion: the flow from step 0 hands over steps 0-10.
    const cases: [string, Record<string, unknown>, MethodName, number, string?, number?, number?][] = [
      ['asg, split 0.5', { stageSplit: 0.5 }, 'asg', 1],
      ['asg, split 0.5, padded', { stageSplit: 0.5 }, 'asg', 7, undefined, 40, 44],
      ['asg, interactionEvery 3', { interactionEvery: 3 }, 'asg', 1],
      ['asg, split 0.5, synchronous guidance', { stageSplit: 0.5, guidanceSync: true }, 'asg', 1],
      ['cutdiffusion, split 1 (stage 1 only, a shuffle every step)', { stageSplit: 1 }, 'cutdiffusion', 0],
      ['multidiffusion', {}, 'multidiffusion', 1],
      ['multidiffusion, DDIM', {}, 'multidiffusion', 1, 'DDIMScheduler'],
      ['asg, split 0.5, dpmpp-2m (a history per position)', { stageSplit: 0.5 }, 'asg', 1, 'DPMSolverMultistepScheduler'],
      ['asg, split 0.5, padded, lms', { stageSplit: 0.5 }, 'asg', 7, 'LMSDiscreteScheduler', 40, 44],
      ['multidiffusion, lms', {}, 'multidiffusion', 1, 'LMSDiscreteScheduler'],
      ['asg, split 0.5, Euler ancestral (the step\'s noise cut to each part)', { stageSplit: 0.5 }, 'asg', 1, 'EulerAncestralDiscreteScheduler'],
      ['multidiffusion, Euler ancestral', {}, 'multidiffusion', 1, 'EulerAncestralDiscreteScheduler'],
    ];
    for (const [label, options, method, expected, scheduler, size, width] of cases) {
      const lock = await run(options, { devices: 1, lockstep: true, method, scheduler, size, width });
      assert.equal(lock.wholeSteps, 12, `${label}: lockstep steps every step`);
      for (const devices of [1, 4]) {
        const r = await run(options, { devices, method, scheduler, size, width });
        assert.equal(r.wholeSteps, expected, `${label}: whole-latent steps on ${devices} device(s)`);
        // DPM-Solver++ and Euler ancestral: each of the 6 stage-1 steps (pixel interaction, a barrier) taken unit by
        // unit in the kernels.
        const stateful = scheduler === 'DPMSolverMultistepScheduler' || scheduler === 'EulerAncestralDiscreteScheduler';
        assert.equal(r.statefulKernelSteps, stateful && method === 'asg' ? 6 : 0, `${label}: stage-1 steps in the kernels`);
        assert.ok(sameBits(r.latent, lock.latent), `${label}: ${devices} device(s), same latent`);
      }
    }
  });

  it('the same bits when an evaluator hands the results over before it returns (a step taken unit by unit is ready for them)', async () => {
    for (const options of [{}, { structureSpace: 'eps' }, { interactionEvery: 3 }]) {
      const lock = await run(options, { devices: 1, lockstep: true });
      const r = await run(options, { devices: 1, resultsAtOnce: true });
      assert.ok(r.oneByOne > 0, 'results were handed over one by one');
      assert.ok(sameBits(r.latent, lock.latent), JSON.stringify(options));
    }
  });
});

describe('the next step is on the devices before the loop has the latent', () => {
  it('at every stage-1 step where the method steps the patches, and at the stage switch; not with padding or sync guidance', async () => {
    // 12 steps, 4 patches, 9 windows. handedEarly[k]: units of step k + 1 handed over when the loop took step k.
    // oneByOne: units of the pixel-interaction steps, whose results are guided and stepped as they come in.
    const cases: [string, Record<string, unknown>, number[], number, number?, number?][] = [
      // Split 0.5: stage 1 is steps 0-5 (lockstep, a shuffle every step); the dataflow hands steps over by itself.
      ['asg, split 0.5', { stageSplit: 0.5 }, [4, 4, 4, 4, 4], 24],
      ['asg, default split (0.8, stage 1 steps 0-9)', {}, [4, 4, 4, 4, 4, 4, 4, 4, 4], 40],
      ['asg, eps space', { structureSpace: 'eps' }, [4, 4, 4, 4, 4, 4, 4, 4, 4], 40],
      ['cutdiffusion', {}, [4, 4, 4, 4, 4, 4, 4, 4, 4], 40],
      // interactionEvery 3 (stage 1 0-9, shuffles at 0, 3, 6, 9): blocks 1-2, 4-5, 7-8; each step after one is on
      // the devices when the loop takes the block's last step.
      ['asg, interactionEvery 3', { interactionEvery: 3 }, [4, 4, 4, 4, 4, 4, 4, 4, 4], 16],
      ['asg, synchronous guidance (lockstep steps are not launched early)', { guidanceSync: true }, [0, 0, 0, 0, 0, 0, 0, 0, 0], 0],
      ['asg, padded', {}, [0, 0, 0, 0, 0, 0, 0, 0, 0], 0, 40, 44],
    ];
    for (const [label, options, early, oneByOne, size, width] of cases) {
      const method = label.startsWith('cutdiffusion') ? 'cutdiffusion' : 'asg';
      const lock = await run(options, { devices: 1, lockstep: true, size, width, method });
      assert.ok(lock.handedEarly.every((c) => c === 0), `${label}: lockstep hands nothing over early`);
      assert.equal(lock.oneByOne, 0, `${label}: lockstep takes results as a batch`);
      for (const devices of [1, 4]) {
        const r = await run(options, { devices, size, width, method });
        const stage1 = early.length;
        assert.deepEqual(r.handedEarly.slice(0, stage1), early, `${label}: ${devices} device(s)`);
        assert.equal(r.oneByOne, oneByOne, `${label}: ${devices} device(s), units taken one by one`);
        if (!size) assert.ok(r.handedEarly[stage1]! > 0, `${label}: the first stage-2 windows are out at the stage switch`);
        assert.ok(sameBits(r.latent, lock.latent), `${label}: ${devices} device(s), same latent`);
        assert.deepEqual(r.progress, lock.progress, `${label}: progress`);
      }
    }
  });
});

describe('stage-1 hand-over under cancellation and device failure', () => {
  it('an abort or a failed unit in stage 1 ends the run with that error, and nothing more is handed over', async () => {
    const settle = () => new Promise((r) => setTimeout(r, 30));
    for (const options of [{}, { interactionEvery: 3 }]) {
      const controller = new AbortController();
      const seen: UnetUnit[] = [];
      const onUnit = (u: UnetUnit) => {
        seen.push(u);
        if (u.step === 3) controller.abort(); // a pixel-interaction step either way (all its units go in one call)
      };
      await assert.rejects(run(options, { devices: 4, signal: controller.signal, onUnit }), (e: Error & { kind?: string }) => e.kind === 'cancelled');
      await settle();
      assert.equal(seen.filter((u) => u.step === 3).length, 4, `${JSON.stringify(options)}: step 3 was handed over`);
      assert.ok(!seen.some((u) => u.step > 3), `${JSON.stringify(options)}: nothing handed over after the abort`);
      const lost: UnetUnit[] = [];
      await assert.rejects(run(options, { devices: 4, failUnit: 's1/k4/p2', onUnit: (u) => lost.push(u) }), /device lost running s1\/k4\/p2/);
      const atFailure = lost.length;
      await settle();
      assert.equal(lost.length, atFailure, `${JSON.stringify(options)}: nothing handed over after the failure`);
      assert.ok(!lost.some((u) => u.step > 6), `${JSON.stringify(options)}: stopped within a step or two of the failure`);
    }
  });

  it("'lines' (the groups run ahead): an abort or a failed unit ends the run with that error; nothing is handed over after", async () => {
    const settle = () => new Promise((r) => setTimeout(r, 30));
    const options = { interactionGroups: 'lines' };
    const controller = new AbortController();
    const seen: UnetUnit[] = [];
    const onUnit = (u: UnetUnit) => {
      seen.push(u);
      if (u.step === 3) controller.abort();
    };
    await assert.rejects(run(options, { devices: 4, size: 48, signal: controller.signal, onUnit }), (e: Error & { kind?: string }) => e.kind === 'cancelled');
    const atAbort = seen.length;
    await settle();
    assert.equal(seen.length, atAbort, 'nothing handed over after the abort');
    assert.ok(!seen.some((u) => u.step > 4), 'stopped within a step of the abort');
    const lost: UnetUnit[] = [];
    await assert.rejects(run(options, { devices: 4, size: 48, failUnit: 's1/k4/p2', onUnit: (u) => lost.push(u) }), /device lost running s1\/k4\/p2/);
    const atFailure = lost.length;
    await settle();
    assert.equal(lost.length, atFailure, 'nothing handed over after the failure');
    assert.ok(!lost.some((u) => u.step > 6), 'stopped within a step or two of the failure');
  });
});

describe('a pixel-interaction step taken unit by unit (BarrierStep)', () => {
  // A small unit (one block), and one taken in blocks (UNIT_BLOCK elements) whose second block starts inside a plane;
  // the patches patch-major, or in the latent itself (latentLayout: 2 x 3 polyphase patches of a 2 x ph x 3 pw latent).
  for (const [ph, pw] of [[6, 4], [61, 50]] as const) for (const where of ['patch-major', 'in the latent'] as const) it(`equals un-shuffling all outputs, guiding the patches and stepping them, bit for bit, in any arrival order (patches of ${ph} x ${pw}, ${where})`, () => {
    const rows = 2;
    const cols = 3;
    const n = rows * cols;
    const channels = 2;
    const plane = ph * pw;
    const size = channels * plane;
    if (plane > 24) assert.ok(size > UNIT_BLOCK && UNIT_BLOCK % plane !== 0, 'the unit spans blocks, the second starting inside a plane');
    const g: PatchGeometry = {
      channels, height: rows * ph, width: cols * pw, nativeHeight: ph, nativeWidth: pw, latentMultiple: 1, rows, cols, count: n,
      patchHeight: ph, patchWidth: pw, paddedHeight: rows * ph, paddedWidth: cols * pw,
    };
    const inLatent = where === 'in the latent';
    const layout = inLatent ? latentLayout(g) : patchLayout(n, size);
    // A patch-major array laid out as the layout under test (the latent: relocated by polyphase.ts, independently).
    const laid = (a: Float32Array) => (inLatent ? relocatePatches(a, g) : a);
    const rng = createRandom(3, 'test');
    const noise = (k: number) => Float32Array.from(rng.randn([k]));
    // Every scheduler that steps elements (Euler with each prediction type, DDIM with each and with clipping, flow
    // Euler); pixel interaction on and off (perm null: each unit is its own patch); guidance in either space or none.
    const schedulers = [
      createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler' }, 12),
      createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler', prediction_type: 'v_prediction' }, 12),
      createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler', prediction_type: 'sample' }, 12),
      createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'DDIMScheduler', clip_sample: true, clip_sample_range: 1.5 }, 12),
      createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'DDIMScheduler' }, 12),
      createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'DDIMScheduler', prediction_type: 'v_prediction' }, 12),
      createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'DDIMScheduler', prediction_type: 'sample' }, 12),
      createScheduler({ _class_name: 'FlowMatchEulerDiscreteScheduler', num_train_timesteps: 1000, shift: 3 }, 12),
    ];
    const memory = KernelMemory.create();
    assert.ok(memory !== null, 'WebAssembly is there');
    for (const sched of schedulers) {
      const advance = (step: number, out: Float32Array, x: Float32Array, into = new Float32Array(x.length), at?: Int32Array) => {
        sched.stepPositions!(step, out, x, into, at ?? null);
        return into;
      };
      // 'shared' and 'per-patch': toward structure targets (an upscale's input), every patch guided, the key too.
      for (const [space, shuffled] of [['x0', true], ['eps', true], ['none', true], ['x0', false], ['eps', false], ['none', false], ['shared', true], ['per-patch', true], ['per-patch', false]] as const) {
        for (const masked of [false, true]) {
          const step = 4;
          const patches = noise(n * size);
          const outputs = Array.from({ length: n }, () => noise(size));
          const given = outputs.map((o) => o.slice());
          const perm = shuffled ? drawPermutations(rng, size, n) : null;
          const key = noise(size);
          const mask = masked ? Float32Array.from(rng.randn([plane]), (v) => Math.abs(v) / 3) : null;
          const { alpha, sigma } = sched.noiseLevel(step);
          const weight = 0.7;
          // The reference: the lockstep path's functions over all patches at once.
          const eps = unshuffleFromUnits(outputs, perm, n, size);
          const targets = space === 'per-patch' ? noise(n * size) : key;
          if (space === 'x0') applyX0Guidance(eps, patches, key, mask, weight, alpha, sigma, n, channels, plane);
          else if (space === 'eps') applyEpsGuidance(eps, key, mask, weight, n, channels, plane);
          else if (space === 'shared') applyX0Guidance(eps, patches, key, mask, weight, alpha, sigma, n, channels, plane, 0);
          else if (space === 'per-patch') {
            for (let i = 0; i < n; i++) {
              const part = (a: Float32Array) => a.subarray(i * size, (i + 1) * size);
              applyX0Guidance(part(eps), part(patches), part(targets), mask, weight, alpha, sigma, 1, channels, plane, 0);
            }
          }
          const toward = space === 'shared' || space === 'per-patch';
          const next = sched.step({ stepIndex: step, history: [] }, eps, patches).prevSample;
          // Euler, flow Euler and DDIM (without clipping) steps also through the WebAssembly kernel (unit-kernel.ts),
          // in one memory reused step after step.
          const euler = sched.eulerCoefficients?.(step) ?? null;
          const clips = (sched as { clipRange?: number | null }).clipRange != null;
          assert.equal(euler !== null, !clips, `${sched.name}: the kernel takes the step unless it clips`);
          for (const [order, kernel] of [[[0, 1, 2, 3, 4, 5], false], [[4, 2, 0, 5, 3, 1], false], [[3, 5, 4, 1, 0, 2], false], [[0, 1, 2, 3, 4, 5], true], [[4, 2, 0, 5, 3, 1], true]] as const) {
            if (kernel && euler === null) continue;
            const b: BarrierStep = new BarrierStep({
              step, patches: laid(patches), layout, perm, n, size, advance, eps: new Float32Array(n * size), next: new Float32Array(n * size),
              guidance: () =>
                space === 'none' ? null
                  : toward ? { space: 'x0', key: targets, targets: space, alpha, sigma, weights: weightedMask(mask, (weight * alpha) / sigma, plane) }
                  : { space, key, alpha, sigma, weights: weightedMask(mask, space === 'x0' ? (weight * alpha) / sigma : weight, plane) },
              ...(kernel ? { kernel: { memory: memory!, step: { euler: euler! }, ...(toward ? { keyLength: targets.length } : {}) } } : {}),
            });
            for (const j of order) {
              assert.ok(!b.complete, 'not complete before the last unit');
              b.take(j, { output: outputs[j]! });
            }
            b.take(order[0]!, { output: noise(size) }); // a second result for a unit is ignored
            assert.ok(b.complete, 'complete');
            const label = `${sched.name} (${sched.predictionType}), ${space}, shuffled ${shuffled}, mask ${masked}, order ${order}, kernel ${kernel}`;
            // With the kernel, the next step's units come from the stepped patches in its memory before anything is
            // read: what shuffleToUnits cuts from them (the reference: the lockstep step's patches).
            const nextPerm = shuffled ? drawPermutations(rng, size, n) : null;
            const units = Array.from({ length: n }, () => new Float32Array(size));
            assert.equal(b.shuffleNext(nextPerm, 0.37, units, patchLayout(n, size)), false, `${label}: not with another layout`);
            assert.equal(b.shuffleNext(nextPerm, 0.37, units, layout), kernel, `${label}: shuffled from the kernel's memory`);
            if (kernel) {
              const expected = shuffleToUnits(laid(next), nextPerm, n, size, 0.37, undefined, layout);
              units.forEach((u, j) => assert.ok(sameBits(u, expected[j]!), `${label}: next step's unit ${j}`));
            }
            assert.ok(sameBits(b.eps, laid(eps)), `${label}: guided outputs`);
            assert.ok(sameBits(b.next, laid(next)), `${label}: stepped patches`);
            assert.ok(sameBits(b.keyLatent, patches.subarray(0, size)), `${label}: the key patch's latent`);
            assert.ok(sameBits(b.keyOutput, eps.subarray(0, size)), `${label}: the key patch's output`);
            assert.equal(b.shuffleNext(nextPerm, 0.37, units, layout), false, `${label}: not once the results were read`);
          }
          assert.ok(outputs.every((o, j) => sameBits(o, given[j]!)), 'the results are not changed in place');
        }
      }
    }
    // DPM-Solver++ (a history per position) and Euler ancestral (the step's noise): the TypeScript loops step each
    // unit's positions through PartStepper; the kernel reads the x0 predictions of the step before and writes this
    // step's, or reads the noise (MethodContext.statefulStep). The reference: the whole-latent step on the lockstep
    // functions' guided outputs (its noise the same values at the same places of the latent), its history after.
    const statefulCases: [string, Record<string, unknown>, number][] = [
      ['DPMSolverMultistepScheduler', {}, 4], ['DPMSolverMultistepScheduler', { prediction_type: 'v_prediction', solver_type: 'heun' }, 4],
      ['DPMSolverMultistepScheduler', { prediction_type: 'sample', solver_order: 1 }, 4],
      // lower_order_final at 12 steps: the last step is first order (its kind reads no history).
      ['DPMSolverMultistepScheduler', { lower_order_final: true }, 11],
      ['EulerAncestralDiscreteScheduler', {}, 4], ['EulerAncestralDiscreteScheduler', { prediction_type: 'v_prediction' }, 6],
    ];
    // Where each latent position's value comes from in the patch-major arrays (laid is a permutation).
    const from = laid(Float32Array.from({ length: n * size }, (_, i) => i));
    for (const [className, config, step] of statefulCases) {
      const sched = createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: className, ...config }, 12);
      const ancestral = className === 'EulerAncestralDiscreteScheduler';
      const order = ancestral ? 0 : (sched as { solverOrder?: number }).solverOrder!;
      const kind = ancestral ? 13 + ['epsilon', 'v_prediction'].indexOf(sched.predictionType) : 7 + ['epsilon', 'v_prediction', 'sample'].indexOf(sched.predictionType) + (order === 2 && step !== 11 ? 3 : 0);
      for (const [space, shuffled] of [['x0', true], ['eps', true], ['none', false]] as const) {
        const patches = noise(n * size);
        const outputs = Array.from({ length: n }, () => noise(size));
        const perm = shuffled ? drawPermutations(rng, size, n) : null;
        const key = noise(size);
        const mask = Float32Array.from(rng.randn([plane]), (v) => Math.abs(v) / 3);
        const { alpha, sigma } = sched.noiseLevel(step);
        const eps = unshuffleFromUnits(outputs, perm, n, size);
        if (space === 'x0') applyX0Guidance(eps, patches, key, mask, 0.7, alpha, sigma, n, channels, plane);
        else if (space === 'eps') applyEpsGuidance(eps, key, mask, 0.7, n, channels, plane);
        const state = { stepIndex: step, history: order === 2 ? [noise(n * size)] : [], ...(ancestral ? {} : { extra: { lowerOrderNums: 2 } }) };
        // The step's noise as PartStepper draws it (in the latent's layout), and where the patch-major step reads it.
        const drawn = createRandom(9, 'noise').randn([n * size]);
        const moved = new Float32Array(n * size);
        from.forEach((p, q) => (moved[p] = drawn[q]!));
        const ref = sched.step(state, eps, patches, { randn: () => moved, randint: () => 0, uniform: () => 0 });
        for (const kernel of [false, true]) {
          const label = `${className} ${JSON.stringify(config)}, ${space}, shuffled ${shuffled}, kernel ${kernel}, ${where}`;
          const parts = new PartStepper(sched, n * size, { ...state, history: state.history.map(laid) }, createRandom(9, 'noise'));
          const stateful = kernel ? parts.statefulStep(step) : null;
          if (kernel) assert.ok(stateful !== null && stateful.coefficients.kind === kind, `${label}: the kernel's kind`);
          const b = new BarrierStep({
            step, patches: laid(patches), layout, perm, n, size,
            advance: (k, out, x, into = new Float32Array(x.length), at, positions) => (parts.step(k, out, x, into, at ?? null, positions ?? null), into),
            eps: new Float32Array(n * size), next: new Float32Array(n * size),
            guidance: () => (space === 'none' ? null : { space, key, alpha, sigma, weights: weightedMask(mask, space === 'x0' ? (0.7 * alpha) / sigma : 0.7, plane) }),
            ...(stateful ? { kernel: { memory: memory!, step: { stateful } } } : {}),
          });
          for (const j of [3, 0, 5, 1, 4, 2]) b.take(j, { output: outputs[j]! });
          assert.ok(sameBits(b.next, laid(ref.prevSample)), `${label}: stepped patches`);
          assert.ok(sameBits(b.eps, laid(eps)), `${label}: guided outputs`);
          const after = parts.stateAfter(step);
          assert.deepEqual(after.extra, ref.state.extra, `${label}: the state after`);
          assert.equal(after.history.length, ref.state.history.length, `${label}: history kept`);
          after.history.forEach((h, j) => assert.ok(sameBits(h as Float32Array, laid(ref.state.history[j] as Float32Array)), `${label}: history ${j} after`));
        }
      }
    }
    const b = new BarrierStep({ step: 1, patches: noise(n * size), layout, perm: null, n, size, advance: (step, out, x) => schedulers[0]!.step({ stepIndex: step, history: [] }, out, x).prevSample, eps: new Float32Array(n * size), next: new Float32Array(n * size), guidance: () => null });
    assert.throws(() => b.take(2, { output: noise(size - 1) }), /Unit s1\/k1\/p2 returned an output of the wrong size/);
    // Two steps in one kernel memory: the one set up first lost it and says so instead of reading the other's data.
    const euler = (schedulers[0] as EulerScheduler).eulerCoefficients(1)!;
    const setup = (p: Float32Array) => ({ step: 1, patches: p, layout, perm: null, n, size, advance: () => new Float32Array(0), eps: new Float32Array(n * size), next: new Float32Array(n * size), guidance: () => null, kernel: { memory: memory!, step: { euler } } });
    const first = new BarrierStep(setup(noise(n * size)));
    new BarrierStep(setup(noise(n * size)));
    assert.throws(() => first.take(0, { output: noise(size) }), /lost its kernel memory to another step/);
  });
});

describe('units of a stream are marked so that balance does not split them', () => {
  it('dataflow windows and run-ahead patches are a stream except at the last step before a barrier or the end', async () => {
    const seen = new Map<string, boolean>();
    const onUnit = (u: UnetUnit, hint?: EvaluateHint) => seen.set(u.id, hint?.stream === true);
    // 12 steps, split 0.8: stage 1 is steps 0-9 with interaction at 0, 4, 8 (blocks 1-3, 5-7, 9), stage 2 steps 10-11.
    await run({ interactionEvery: 4 }, { devices: 4, onUnit });
    const streamed = (step: number) => [...seen].filter(([id]) => id.includes(`/k${step}/`)).map(([, s]) => s);
    for (const k of [0, 3, 4, 7, 8, 9, 11]) assert.ok(streamed(k).every((s) => !s), `step ${k}: not a stream`);
    for (const k of [1, 2, 5, 6, 10]) assert.ok(streamed(k).length > 0 && streamed(k).every((s) => s), `step ${k}: a stream`);
  });
});

describe('stage 2 as a dataflow: windows of step t+1 start before step t is done', () => {
  const perStep = (units: UnetUnit[]) => {
    const counts = new Map<number, number>();
    for (const u of units) counts.set(u.step, (counts.get(u.step) ?? 0) + 1);
    return [...counts.entries()].sort((a, b) => a[0] - b[0]);
  };

  it('bit-identical latents, previews and progress with every step a barrier, on randomized completion orders', async () => {
    // 32: windows on the stride; 40 x 44 and 40 x 36: the latent is edge-padded on both axes to 48 x 48.
    const cases: [string, Record<string, unknown>, MethodName, number, number?][] = [
      ['asg, guided, mask', { stageSplit: 0.5 }, 'asg', 32],
      ['asg, no jitter', { stageSplit: 0.5, windowJitter: false }, 'asg', 32],
      ['asg, padded', { stageSplit: 0.5, maskEvery: 2 }, 'asg', 40, 44],
      ['asg, stage2Windows 4', { stageSplit: 0.5, stage2Windows: 4 }, 'asg', 32],
      ['asg, stage2Windows 3, padded', { stageSplit: 0.5, stage2Windows: 3 }, 'asg', 40, 36],
      ['cutdiffusion', { stageSplit: 0.5 }, 'cutdiffusion', 32],
      ['cutdiffusion, padded, no jitter', { stageSplit: 0.5, windowJitter: false }, 'cutdiffusion', 40, 36],
      ['multidiffusion', {}, 'multidiffusion', 32],
      ['multidiffusion, padded', {}, 'multidiffusion', 40, 44],
      ['multidiffusion, padded, stage2Windows 4, no jitter', { stage2Windows: 4, windowJitter: false }, 'multidiffusion', 40, 36],
    ];
    for (const [label, options, method, size, width] of cases) {
      const common = { method, size, width, previewEvery: 2 };
      const lock = await run(options, { ...common, devices: 1, lockstep: true });
      assert.equal(lock.aheadWindows, 0, label);
      const one = await run(options, { ...common, devices: 1 });
      assert.ok(sameBits(one.latent, lock.latent), `${label}: 1 device`);
      for (const seed of [1, 2, 3]) {
        const many = await run(options, { ...common, devices: 4, seed });
        assert.ok(many.aheadWindows > 0, `${label}: windows of the next step started early (order ${seed})`);
        assert.ok(sameBits(many.latent, lock.latent), `${label}: several devices, order ${seed}`);
        assert.deepEqual(perStep(many.units), perStep(lock.units), `${label}: units per step`);
        assert.equal(new Set(many.units.map((u) => u.id)).size, many.units.length, `${label}: every unit once`);
        assert.deepEqual(many.progress, lock.progress, `${label}: progress`);
        assert.equal(many.previews.length, lock.previews.length, label);
        many.previews.forEach((p, i) => assert.ok(sameBits(p, lock.previews[i]!), `${label}: preview ${i}`));
      }
    }
  });

  it('DDIM, the multistep solvers (dpmpp-2m, lms, pndm) and Euler ancestral flow too, padded or not', async () => {
    const flows: [RunOptions['scheduler'], MethodName, number, number][] = [
      ['DDIMScheduler', 'multidiffusion', 32, 32],
      ['DPMSolverMultistepScheduler', 'multidiffusion', 32, 32],
      ['DPMSolverMultistepScheduler', 'asg', 40, 44],
      [{ _class_name: 'DPMSolverMultistepScheduler', solver_order: 1 }, 'asg', 40, 44],
      ['LMSDiscreteScheduler', 'asg', 40, 44],
      ['PNDMScheduler', 'asg', 40, 44],
      [{ _class_name: 'PNDMScheduler', skip_prk_steps: false }, 'multidiffusion', 40, 44],
      ['EulerAncestralDiscreteScheduler', 'asg', 40, 44],
      ['EulerAncestralDiscreteScheduler', 'multidiffusion', 32, 32],
    ];
    for (const [s, method, size, width] of flows) {
      const label = `${JSON.stringify(s)} ${method} ${size} x ${width}`;
      const lock = await run({ stageSplit: 0.5 }, { devices: 1, lockstep: true, method, scheduler: s, size, width });
      for (const seed of [1, 2]) {
        const many = await run({ stageSplit: 0.5 }, { devices: 4, seed, method, scheduler: s, size, width });
        assert.ok(many.aheadWindows > 0, `${label}: windows ran ahead`);
        assert.ok(sameBits(many.latent, lock.latent), `${label}, order ${seed}: same latent`);
      }
    }
  });

  it("an upscale's steps (the schedule from a later step) flow too, and asg's stage-1 units toward a structure target are taken one by one, with the same bits; a skip residual keeps every step a barrier", async () => {
    const cases: [RunOptions['scheduler'], MethodName, RunOptions['upscale']][] = [
      ['EulerDiscreteScheduler', 'asg', { start: 4, target: 'shared' }],
      ['EulerDiscreteScheduler', 'asg', { start: 2, target: 'per-patch' }],
      ['EulerDiscreteScheduler', 'multidiffusion', { start: 6 }],
      ['DDIMScheduler', 'asg', { start: 4 }],
      ['DPMSolverMultistepScheduler', 'asg', { start: 4, target: 'shared' }],
      ['EulerAncestralDiscreteScheduler', 'asg', { start: 2, target: 'per-patch' }],
      ['EulerAncestralDiscreteScheduler', 'multidiffusion', { start: 5 }],
    ];
    for (const [s, method, upscale] of cases) {
      const label = `${JSON.stringify(s)} ${method} ${JSON.stringify(upscale)}`;
      const lock = await run({ stageSplit: 0.5 }, { devices: 1, lockstep: true, method, scheduler: s, upscale });
      for (const seed of [1, 2]) {
        const many = await run({ stageSplit: 0.5 }, { devices: 4, seed, method, scheduler: s, upscale });
        assert.ok(many.aheadWindows > 0, `${label}: windows ran ahead`);
        // Toward a structure target too, asg's stage-1 units are guided and stepped as they come in.
        if (method === 'asg') assert.ok(many.oneByOne > 0, `${label}: stage-1 units taken one by one`);
        assert.ok(sameBits(many.latent, lock.latent), `${label}, order ${seed}: same latent`);
      }
    }
    const skip = { start: 4, skipResidual: true };
    const lock = await run({ stageSplit: 0.5 }, { devices: 1, lockstep: true, upscale: skip });
    const many = await run({ stageSplit: 0.5 }, { devices: 4, upscale: skip });
    assert.equal(many.aheadWindows, 0, 'skip residual: a barrier every step');
    assert.ok(sameBits(many.latent, lock.latent), 'skip residual: same latent');
  });

  it('cancellation and a failed device end the dataflow: the error comes out and nothing more is handed over', async () => {
    const settle = () => new Promise((r) => setTimeout(r, 30));
    const controller = new AbortController();
    const seen: UnetUnit[] = [];
    const onUnit = (u: UnetUnit) => {
      seen.push(u);
      if (seen.length === 50) controller.abort(); // step 5 of 12, 9 windows a step
    };
    await assert.rejects(run({}, { devices: 4, method: 'multidiffusion', signal: controller.signal, onUnit }), (e: Error & { kind?: string }) => e.kind === 'cancelled');
    await settle();
    assert.equal(seen.length, 50, 'nothing handed over after the abort');
    const lost: UnetUnit[] = [];
    await assert.rejects(run({}, { devices: 4, method: 'multidiffusion', failUnit: 's2/k6/w3', onUnit: (u) => lost.push(u) }), /device lost running s2\/k6\/w3/);
    const atFailure = lost.length;
    await settle();
    assert.equal(lost.length, atFailure, 'nothing handed over after the failure');
    assert.ok(!lost.some((u) => u.step > 8), 'the flow stopped within a step or two of the failure');
  });
});
