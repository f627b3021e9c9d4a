/**
 * The scheduling settings of issue 15: stage-2 grids sized to a window count K (stage2Windows) and pixel interaction
 * every m-th stage-1 step (interactionEvery) with the patches running ahead of each other in between.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { denoise } from '../src/core/generation/denoise.ts';
import { planGeometry } from '../src/core/methods/geometry.ts';
import { createMethod } from '../src/core/methods/index.ts';
import type { MethodName, UnetUnit, UnitResult } from '../src/core/methods/types.ts';
import { WindowCanvas, placeWindows, planWindowsFor } from '../src/core/methods/windows.ts';
import { resolveParams } from '../src/core/params.ts';
import { createRandom } from '../src/core/random/index.ts';
import { createScheduler } from '../src/core/schedulers/index.ts';
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

/** Runs the denoise stage on the fake UNet; `devices` > 1 completes units out of order with random delays. */
async function run(
  methodOptions: Record<string, unknown>,
  opts: { devices: number; lockstep?: boolean; seed?: number; method?: MethodName; scheduler?: string; size?: number } = { devices: 1 },
): Promise<{ latent: Float32Array; aheadDispatches: number; units: UnetUnit[] }> {
  const size = opts.size ?? 32;
  const params = resolveParams(
    { prompt: 'x', width: size * 8, height: size * 8, steps: 12, seed: 7, method: opts.method ?? 'asg', methodOptions },
    { width: 128, height: 128 },
  );
  const scheduler = createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: opts.scheduler ?? 'EulerDiscreteScheduler' }, 12);
  const jitter = createRandom(opts.seed ?? 1, 'test');
  const done = new Set<string>();
  const units: UnetUnit[] = [];
  let aheadDispatches = 0;
  const evaluate = async (batch: UnetUnit[]): Promise<UnitResult[]> => {
    for (const u of batch) {
      units.push(u);
      // A unit of step t handed over while a unit of step t-1 of another patch is still outstanding: run-ahead.
      if (u.kind === 'patch' && u.step > 0 && units.some((o) => o.kind === 'patch' && o.step === u.step - 1 && o.index !== u.index && !done.has(o.id))) aheadDispatches++;
    }
    const results = batch.map((u) => ({ ...fakeUnet({ ...u, sample: Float32Array.from(u.sample) }), id: u.id }));
    if (opts.devices > 1) await new Promise((r) => setTimeout(r, jitter.randint(4)));
    for (const u of batch) done.add(u.id);
    return results.map(({ id: _, ...r }) => r);
  };
  const r = await denoise({
    params, scheduler, latentHeight: size, latentWidth: size, nativeHeight: 16, nativeWidth: 16, channels: 4, latentMultiple: 8,
    evaluate, maskTokens: [1, 2, 3], previewEvery: 0, lockstep: opts.lockstep,
  });
  return { latent: r.latent, aheadDispatches, units };
}

const sameBits = (a: Float32Array, b: Float32Array) =>
  a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

describe('interactionEvery: stage-1 patches run ahead between pixel-interaction steps', () => {
  it('bit-identical latents with every step a barrier, and out of order on "several devices", for each guidance mode', async () => {
    const cases: [string, Record<string, unknown>, MethodName?][] = [
      ['asg m 3', { interactionEvery: 3 }],
      ['asg m 4, sync', { interactionEvery: 4, guidanceSync: true }],
      ['asg m 4, eps space, mask every 2', { interactionEvery: 4, structureSpace: 'eps', maskEvery: 2 }],
      ['asg m 2 (blocks of one step)', { interactionEvery: 2 }],
      ['asg, no pixel interaction', { pixelInteraction: false }],
      ['asg m 3 with stage2Windows 4', { interactionEvery: 3, stage2Windows: 4 }],
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

  it('DDIM runs ahead too; multistep and stochastic schedulers keep every step a barrier with the same result', async () => {
    const ddimLock = await run({ interactionEvery: 4 }, { devices: 1, lockstep: true, scheduler: 'DDIMScheduler' });
    const ddim = await run({ interactionEvery: 4 }, { devices: 4, scheduler: 'DDIMScheduler' });
    assert.ok(ddim.aheadDispatches > 0);
    assert.ok(sameBits(ddim.latent, ddimLock.latent));
    for (const s of ['DPMSolverMultistepScheduler', 'EulerAncestralDiscreteScheduler']) {
      const lock = await run({ interactionEvery: 4 }, { devices: 1, lockstep: true, scheduler: s });
      const many = await run({ interactionEvery: 4 }, { devices: 4, scheduler: s });
      assert.equal(many.aheadDispatches, 0, s);
      assert.ok(sameBits(many.latent, lock.latent), s);
    }
  });

  it('interactionEvery 1 (the default) is today: every step shuffles, nothing runs ahead', async () => {
    const a = await run({}, { devices: 4 });
    const b = await run({ interactionEvery: 1 }, { devices: 1, lockstep: true });
    assert.equal(a.aheadDispatches, 0);
    assert.ok(sameBits(a.latent, b.latent));
    const m = await run({ interactionEvery: 3 }, { devices: 1, lockstep: true });
    assert.ok(!sameBits(m.latent, b.latent), 'fewer interactions change the image');
  });
});
