import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AsgdError } from '../src/core/errors.ts';
import { createRandom } from '../src/core/random/index.ts';
import { createMethod as createMethodWithDefaults, DEFAULT_METHOD_OPTIONS, METHOD_NAMES } from '../src/core/methods/index.ts';
import type { MethodOptions, MethodSetup } from '../src/core/methods/index.ts';
import { fakeUnet, SD_SCHEDULER_CONFIG } from './helpers/fake-unet.ts';
import { createScheduler } from '../src/core/schedulers/index.ts';
import { patchSize } from '../src/core/methods/geometry.ts';
import { applyEpsGuidance, structureWeightAt } from '../src/core/methods/guidance.ts';
import { buildMask } from '../src/core/methods/mask.ts';
import { drawPermutations, unshuffleFromUnits } from '../src/core/methods/pixel-interaction.ts';
import { extractPatches, patchesToLatent, relocatePatches } from '../src/core/methods/polyphase.ts';
import type {
  MethodContext,
  MethodPreview,
  ProgressEvent,
  UnetUnit,
  UnitResult,
} from '../src/core/methods/types.ts';
import type { Scheduler } from '../src/core/schedulers/types.ts';

/**
 * These tests exercise the paper's reading (eps-space guidance, half the steps in stage 1, w_max 0.5); the
 * shipped defaults differ by measurement (docs/repetition.md), so every method here is built on that reading.
 */
const PAPER_READING = { stageSplit: 0.5, structureSpace: 'eps', structureWeight: 0.5 } as const;
const createMethod: typeof createMethodWithDefaults = (name, options, setup) =>
  createMethodWithDefaults(name, { ...PAPER_READING, ...options }, setup);

const TOKENS = [1, 2, 3];

function euler(steps: number, extra: Record<string, unknown> = {}): Scheduler {
  return createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler', ...extra }, steps);
}

interface Run {
  fused: Float32Array[];
  latents: Float32Array[];
  calls: { units: UnetUnit[]; results: UnitResult[] }[];
  warnings: string[];
  progress: ProgressEvent[];
  previews: MethodPreview[];
  method: ReturnType<typeof createMethod>;
}

async function generate(
  name: string,
  options: Partial<MethodOptions>,
  setup: MethodSetup,
  extra: { seed?: number; attention?: boolean; scheduler?: Scheduler; previewEvery?: number } = {},
): Promise<Run> {
  const seed = extra.seed ?? 42;
  const method = createMethod(name, options, setup);
  const sched = extra.scheduler ?? euler(setup.numSteps);
  const geo = method.plan.geometry;
  const noise = createRandom(seed, 'noise').randn([geo.count, geo.channels, geo.patchHeight, geo.patchWidth]);
  for (let i = 0; i < noise.length; i++) noise[i] *= sched.initNoiseSigma;
  let latent = patchesToLatent(noise, geo);
  const run: Run = { fused: [], latents: [], calls: [], warnings: [], progress: [], previews: [], method };
  const ctx: MethodContext = {
    scheduler: sched,
    evaluate: async (units) => {
      const results = units.map((u) => fakeUnet(u, extra.attention ?? true));
      run.calls.push({ units, results });
      return results;
    },
    random: { permutation: createRandom(seed, 'permutation'), jitter: createRandom(seed, 'jitter') },
    maskTokens: TOKENS,
    onWarning: (m) => run.warnings.push(m),
    onProgress: (e) => run.progress.push(e),
    onPreview: (p) => run.previews.push(p),
    previewEvery: extra.previewEvery ?? 0,
  };
  let state = sched.initialState();
  const ancestral = createRandom(seed, 'ancestral');
  for (let k = 0; k < setup.numSteps; k++) {
    run.latents.push(latent);
    const fused = await method.predict(latent, k, ctx);
    assert.equal(fused.length, latent.length);
    run.fused.push(fused);
    ({ prevSample: latent, state } = sched.step(state, fused, latent, ancestral));
  }
  return run;
}

/** A 2 x 2 patch setup that runs in milliseconds: latent 32 x 32, native 16, multiple 4. */
const SMALL: MethodSetup = { height: 32, width: 32, nativeHeight: 16, nativeWidth: 16, latentMultiple: 4, numSteps: 6 };

function unitsPerStep(run: Run, steps: number): number[] {
  const counts = new Array(steps).fill(0);
  for (const call of run.calls) for (const u of call.units) counts[u.step]++;
  return counts;
}

describe('methods at the native size equal direct bit for bit', () => {
  it('direct, multidiffusion, cutdiffusion and asg give identical fused outputs for every step', async () => {
    const setup: MethodSetup = { height: 16, width: 24, nativeHeight: 16, nativeWidth: 24, latentMultiple: 4, numSteps: 6 };
    const reference = await generate('direct', {}, setup);
    for (const name of ['multidiffusion', 'cutdiffusion', 'asg']) {
      for (const options of [{}, { guidanceSync: true, structureSchedule: 'constant' as const }]) {
        const run = await generate(name, options, setup);
        for (let k = 0; k < setup.numSteps; k++) {
          assert.deepEqual(run.fused[k], reference.fused[k], `${name} step ${k}`);
        }
      }
    }
  });
});

describe('asg', () => {
  it('with weight 0 equals cutdiffusion bit for bit', async () => {
    const cut = await generate('cutdiffusion', {}, SMALL);
    const asg = await generate('asg', { structureWeight: 0 }, SMALL);
    const guided = await generate('asg', {}, SMALL);
    for (let k = 0; k < SMALL.numSteps; k++) assert.deepEqual(asg.fused[k], cut.fused[k], `step ${k}`);
    assert.notDeepEqual(guided.fused[1], cut.fused[1]);
  });

  /** Recomputes stage-1 guided outputs from the recorded evaluator calls. */
  function check(run: Run, sync: boolean, options: MethodOptions) {
    const geo = run.method.plan.geometry;
    const s = run.method.plan.stage1Steps;
    const n = geo.count;
    const size = patchSize(geo);
    const rng = createRandom(42, 'permutation');
    const stage1Calls = run.calls.filter((c) => c.units[0].kind === 'patch');
    let prevKey: Float32Array | null = null;
    let prevMask: Float32Array | null = null;
    for (let k = 0; k < s; k++) {
      const calls = stage1Calls.filter((c) => c.units[0].step === k);
      assert.equal(calls.length, sync ? 2 : 1, `evaluate calls at step ${k}`);
      if (sync) assert.deepEqual([calls[0].units.length, calls[0].units[0].index], [1, 0]);
      const results = calls.flatMap((c) => c.results);
      const units = calls.flatMap((c) => c.units);
      assert.deepEqual(
        units.map((u) => u.wantAttention),
        units.map((u) => u.index === 0 && (sync ? k >= 1 : k <= s - 2)),
        `wantAttention at step ${k}`,
      );
      const perm = drawPermutations(rng, size, n);
      const eps = unshuffleFromUnits(
        results.map((r) => r.output),
        perm,
        n,
        size,
      );
      const mask = units[0].wantAttention
        ? buildMask(results[0].attention, geo.patchHeight, geo.patchWidth, {
            tokens: TOKENS,
            layers: [],
            gamma: options.maskGamma,
            threshold: options.maskThreshold,
          }).mask
        : null;
      const key = Float32Array.from(eps.subarray(0, size));
      const expected = Float32Array.from(eps);
      const w = structureWeightAt(options.structureSchedule, options.structureWeight, options.structureGamma, units[0].timestep);
      if (k >= 1) {
        assert.ok(mask !== null || !sync);
        applyEpsGuidance(expected, sync ? key : prevKey!, sync ? mask : prevMask, w, n, geo.channels, geo.patchHeight * geo.patchWidth);
        // The other choice of key (current vs stale) must not also match: the check discriminates.
        const other = Float32Array.from(eps);
        applyEpsGuidance(other, sync ? prevKey! : key, sync ? mask : prevMask, w, n, geo.channels, geo.patchHeight * geo.patchWidth);
        assert.notDeepEqual(other, expected);
      }
      assert.deepEqual(extractPatches(run.fused[k], geo), expected, `guided output at step ${k}`);
      assert.deepEqual(run.fused[k], relocatePatches(expected, geo));
      prevKey = key;
      if (mask) prevMask = mask;
    }
  }

  it('asynchronous guidance at step k uses the key output and mask of step k-1; synchronous uses step k', async () => {
    const options = { ...DEFAULT_METHOD_OPTIONS, ...PAPER_READING, structureWeight: 0.7 };
    const asyncRun = await generate('asg', { structureWeight: 0.7 }, SMALL);
    const syncRun = await generate('asg', { structureWeight: 0.7, guidanceSync: true }, SMALL);
    assert.equal(asyncRun.method.plan.stage1Steps, 3);
    check(asyncRun, false, options);
    check(syncRun, true, options);
    assert.deepEqual(syncRun.fused[0], asyncRun.fused[0]);
    for (let k = 1; k < SMALL.numSteps; k++) assert.notDeepEqual(syncRun.fused[k], asyncRun.fused[k], `step ${k}`);
  });

  it('maskEvery n recomputes the mask at every n-th guided step only', async () => {
    const setup = { ...SMALL, numSteps: 10 }; // S = 5, guided steps 1..4
    const wanted = (run: Run) =>
      run.calls.flatMap((c) => c.units.filter((u) => u.wantAttention).map((u) => `${u.step}/${u.index}`));
    assert.deepEqual(wanted(await generate('asg', { maskEvery: 2 }, setup)), ['0/0', '2/0']);
    assert.deepEqual(wanted(await generate('asg', { maskEvery: 2, guidanceSync: true }, setup)), ['1/0', '3/0']);
    assert.deepEqual(wanted(await generate('asg', { mask: false }, setup)), []);
    assert.deepEqual(wanted(await generate('cutdiffusion', {}, setup)), []);
  });

  it('falls back to M = 1 with one warning when the model returns no attention', async () => {
    const run = await generate('asg', {}, SMALL, { attention: false });
    const unmasked = await generate('asg', { mask: false }, SMALL);
    assert.equal(run.warnings.length, 1);
    assert.match(run.warnings[0], /mask disabled/);
    assert.deepEqual(run.method.warnings, run.warnings);
    for (let k = 0; k < SMALL.numSteps; k++) assert.deepEqual(run.fused[k], unmasked.fused[k]);
    const masked = await generate('asg', {}, SMALL);
    assert.notDeepEqual(masked.fused[2], unmasked.fused[2]);
  });

  it('x0-space guidance runs, differs from eps space, and needs an epsilon model', async () => {
    const eps = await generate('asg', {}, SMALL);
    const x0 = await generate('asg', { structureSpace: 'x0' }, SMALL);
    assert.deepEqual(x0.fused[0], eps.fused[0]);
    assert.notDeepEqual(x0.fused[1], eps.fused[1]);
    const v = euler(SMALL.numSteps, { prediction_type: 'v_prediction' });
    await assert.rejects(generate('asg', { structureSpace: 'x0' }, SMALL, { scheduler: v }), (e: unknown) => {
      return e instanceof AsgdError && e.parameter === 'structureSpace';
    });
  });
});

describe('unit counts', () => {
  it("match the formula at the paper's stage split 0.5: SD 1.x 2048 px (N 16, 49 windows) and SDXL 2048 px (325 units at T = 50)", () => {
    const sd = { height: 256, width: 256, nativeHeight: 64, nativeWidth: 64, numSteps: 50 };
    const xl = { ...sd, nativeHeight: 128, nativeWidth: 128 };
    const total = (name: string, setup: MethodSetup) => createMethod(name, {}, setup).unitsTotal;
    assert.equal(total('asg', xl), 25 * 4 + 25 * 9);
    assert.equal(total('asg', xl), 325);
    assert.equal(total('asg', sd), 25 * 16 + 25 * 49);
    assert.equal(total('cutdiffusion', sd), 25 * 16 + 25 * 49);
    assert.equal(total('multidiffusion', sd), 50 * 49);
    assert.equal(total('direct', sd), 50);
    const m = createMethod('asg', { stageSplit: 0.3 }, sd);
    assert.deepEqual([m.unitsAt(0), m.unitsAt(14), m.unitsAt(15), m.unitsAt(49)], [16, 16, 49, 49]);
  });

  it('at the default stage split 0.8: SDXL 2048 px makes 250 units at T = 50 (325 at 0.5), SD 1.x 2048 px 1130 (1625)', () => {
    // Built without the paper reading above: these are the counts a user gets with the shipped defaults.
    const sd = { height: 256, width: 256, nativeHeight: 64, nativeWidth: 64, numSteps: 50 };
    const xl = { ...sd, nativeHeight: 128, nativeWidth: 128 };
    const total = (name: string, setup: MethodSetup, options: Partial<MethodOptions> = {}) => createMethodWithDefaults(name, options, setup).unitsTotal;
    assert.equal(createMethodWithDefaults('asg', {}, xl).plan.stage1Steps, 40);
    for (const name of ['asg', 'cutdiffusion']) {
      assert.equal(total(name, xl), 40 * 4 + 10 * 9, name);
      assert.equal(total(name, xl), 250, name);
      assert.equal(total(name, xl, { stageSplit: 0.5 }), 325, name);
      assert.equal(total(name, sd), 40 * 16 + 10 * 49, name);
      assert.equal(total(name, sd), 1130, name);
      assert.equal(total(name, sd, { stageSplit: 0.5 }), 1625, name);
    }
    // The stage split does not apply to the one-stage methods.
    assert.equal(total('multidiffusion', xl), 50 * 9);
    assert.equal(total('direct', xl), 50);
    // docs/benchmarks.md, methods on the shipped model (native latent 16), 10 steps: 4x area 50 units (65 at 0.5),
    // 16x area 226 (325 at 0.5).
    const shapes = (px: number) => ({ height: px / 8, width: px / 8, nativeHeight: 16, nativeWidth: 16, numSteps: 10 });
    assert.deepEqual([total('asg', shapes(256)), total('asg', shapes(256), { stageSplit: 0.5 })], [50, 65]);
    assert.deepEqual([total('asg', shapes(512)), total('asg', shapes(512), { stageSplit: 0.5 })], [226, 325]);
  });

  it('equal the units actually evaluated per step, and progress counts them', async () => {
    const setup: MethodSetup = { height: 40, width: 52, nativeHeight: 16, nativeWidth: 16, latentMultiple: 4, numSteps: 5 };
    for (const name of METHOD_NAMES) {
      for (const options of [{}, { guidanceSync: true }]) {
        const run = await generate(name, options, setup);
        const expected = Array.from({ length: setup.numSteps }, (_, k) => run.method.unitsAt(k));
        assert.deepEqual(unitsPerStep(run, setup.numSteps), expected, name);
        const last = run.progress[run.progress.length - 1];
        assert.deepEqual([last.unitsDone, last.unitsTotal, last.step], [run.method.unitsTotal, run.method.unitsTotal, 4]);
        const ids = run.calls.flatMap((c) => c.units.map((u) => u.id));
        assert.equal(new Set(ids).size, ids.length, 'unit ids are unique');
      }
    }
    const asg = await generate('asg', {}, setup);
    assert.deepEqual(
      asg.calls.map((c) => c.units[0].id),
      ['s1/k0/p0', 's1/k1/p0', 's1/k2/p0', 's2/k3/w0', 's2/k4/w0'], // S = round(2.5) = 3,
    );
  });
});

describe('schedulers', () => {
  it('asg runs deterministically with multistep and stochastic schedulers', async () => {
    for (const className of ['DPMSolverMultistepScheduler', 'EulerAncestralDiscreteScheduler', 'DDIMScheduler', 'PNDMScheduler']) {
      const sched = () => createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: className, skip_prk_steps: true }, SMALL.numSteps);
      // The method is planned for the scheduler's model evaluations (PNDM: one more than the steps asked).
      const setup = { ...SMALL, numSteps: sched().numSteps };
      const a = await generate('asg', {}, setup, { scheduler: sched() });
      const b = await generate('asg', {}, setup, { scheduler: sched() });
      assert.deepEqual(a.fused, b.fused, className);
      assert.ok(a.fused.every((f) => f.every(Number.isFinite)), className);
      assert.equal(a.calls.reduce((n, c) => n + c.units.length, 0), a.method.unitsTotal, className);
    }
  });
});

describe('odd and non-square sizes', () => {
  it('latent 125 x 75 at native 64 (1000 x 600 px) gives fused outputs of exactly that size', async () => {
    const setup: MethodSetup = { height: 125, width: 75, nativeHeight: 64, nativeWidth: 64, numSteps: 2 };
    for (const name of METHOD_NAMES) {
      const run = await generate(name, {}, setup);
      for (const f of run.fused) {
        assert.equal(f.length, 4 * 125 * 75);
        assert.ok(f.every(Number.isFinite));
      }
      for (const call of run.calls) {
        for (const u of call.units) {
          assert.equal(u.sample.length, 4 * u.height * u.width);
          assert.ok(u.height % 8 === 0 && u.width % 8 === 0, `${u.id} is ${u.height}x${u.width}`);
        }
      }
    }
    const asg = await generate('asg', {}, setup);
    assert.deepEqual(
      asg.calls.map((c) => [c.units.length, c.units[0].height, c.units[0].width]),
      [
        [2, 64, 80],
        [6, 64, 64],
      ],
    );
  });
});

describe('conditioning, previews and step order', () => {
  it('SDXL time_ids: HR size in pixels, crop (0, 0) for patches and 8 x the padded window origin', async () => {
    const setup: MethodSetup = { ...SMALL, numSteps: 2, timeIds: true };
    const run = await generate('asg', {}, setup);
    const grid = run.method.plan.windows;
    for (const call of run.calls) {
      for (const u of call.units) {
        const [oh, ow, ct, cl, th, tw] = u.timeIds!;
        assert.deepEqual([oh, ow, th, tw], [256, 256, 256, 256]);
        if (u.kind === 'patch') assert.deepEqual([ct, cl], [0, 0]);
      }
    }
    const windows = run.calls[1].units;
    assert.equal(windows.length, grid.count);
    for (const u of windows) {
      const [, , ct, cl] = u.timeIds!;
      assert.ok(ct % 8 === 0 && cl % 8 === 0 && ct >= 0 && cl >= 0);
      assert.ok(ct / 8 <= grid.vertical.bases[grid.vertical.bases.length - 1] + 2 * grid.vertical.jitter);
    }
  });

  it('previews the key patch in stage 1 and the downscaled latent in stage 2', async () => {
    const run = await generate('asg', {}, SMALL, { previewEvery: 2 });
    assert.deepEqual(
      run.previews.map((p) => [p.step, p.stage, p.kind, p.latent.shape.join('x')]),
      [
        [1, 1, 'key-patch', '1x4x16x16'],
        [3, 2, 'downscaled', '1x4x16x16'],
        [5, 2, 'downscaled', '1x4x16x16'],
      ],
    );
    const geo = run.method.plan.geometry;
    assert.deepEqual(run.previews[0].latent.data, extractPatches(run.latents[1], geo).subarray(0, patchSize(geo)));
    assert.ok(run.previews[0].denoised);
  });

  it('rejects steps out of order and a latent of the wrong size', async () => {
    const method = createMethod('asg', {}, SMALL);
    const ctx: MethodContext = {
      scheduler: euler(SMALL.numSteps),
      evaluate: async (units) => units.map((u) => fakeUnet(u)),
      random: { permutation: createRandom(1, 'permutation'), jitter: createRandom(1, 'jitter') },
      maskTokens: TOKENS,
    };
    const latent = new Float32Array(4 * 32 * 32);
    await assert.rejects(method.predict(latent, 2, ctx), /steps must run in order/);
    await method.predict(latent, 0, ctx);
    await assert.rejects(method.predict(latent, 2, ctx), /steps must run in order/);
    await assert.rejects(method.predict(new Float32Array(5), 1, ctx), /Invalid latent/);
  });
});

describe('option validation', () => {
  const setup = SMALL;
  const cases: [string, Partial<MethodOptions> | Record<string, unknown>, string, RegExp][] = [
    ['asg', { structureWeight: -0.1 }, 'structureWeight', /Invalid structureWeight; expected a number in \[0, 1\]; received -0.1/],
    ['asg', { windowStride: 17 }, 'windowStride', /windowStride.*1 to the window size \(16 latent px\).*received 17/],
    ['asg', { windowStride: 0 }, 'windowStride', /windowStride.*>= 1.*received 0/],
    ['asg', { stageSplit: 1.5 }, 'stageSplit', /stageSplit.*\[0, 1\].*1.5/],
    ['asg', { maskEvery: 0 }, 'maskEvery', /maskEvery.*integer >= 1/],
    ['asg', { maskThreshold: 2 }, 'maskThreshold', /maskThreshold/],
    ['asg', { structureSchedule: 'linear' }, 'structureSchedule', /one of cosine, constant.*"linear"/],
    ['asg', { structureWieght: 1 }, 'methodOptions.structureWieght', /Invalid methodOptions.structureWieght: not a known setting; expected one of .*structureWeight.*; received 1. Check the spelling/],
    ['ultra', {}, 'method', /Invalid method; expected one of asg, cutdiffusion, multidiffusion, direct; received "ultra"/],
  ];
  for (const [name, options, parameter, message] of cases) {
    it(`rejects ${name} ${JSON.stringify(options)} naming ${parameter}`, () => {
      assert.throws(
        () => createMethod(name, options as Partial<MethodOptions>, setup),
        (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && e.parameter === parameter && message.test(e.message),
      );
    });
  }
  it('rejects a bad step count', () => {
    assert.throws(() => createMethod('asg', {}, { ...setup, numSteps: 0 }), /Invalid steps/);
  });
  it('exports documented defaults', () => {
    assert.equal(DEFAULT_METHOD_OPTIONS.stageSplit, 0.8);
    assert.equal(DEFAULT_METHOD_OPTIONS.structureSpace, 'x0');
    assert.equal(DEFAULT_METHOD_OPTIONS.structureWeight, 1);
    assert.equal(DEFAULT_METHOD_OPTIONS.guidanceSync, false);
    assert.equal(createMethod('asg', {}, setup).plan.stage1Steps, 3);
    assert.equal(createMethod('asg', { stageSplit: 1 }, setup).plan.stage1Steps, 6);
    assert.equal(createMethod('asg', { windowStride: undefined, stageSplit: undefined }, setup).plan.stage1Steps, 5); // undefined: the default 0.8
    assert.equal(createMethod('multidiffusion', { windowStride: 4 }, setup).unitsAt(0), 25);
  });
});
