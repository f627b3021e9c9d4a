/**
 * The two-stage methods: `asg` (stage 1 with structure guidance and mask, then stage 2), `cutdiffusion`
 * (stage 1 without guidance, then stage 2) and `multidiffusion` (stage 2 for all steps).
 *
 * Stage 1 (steps 0..S-1): the HR latent is edge-padded, cut into N polyphase patches, shuffled per element
 * (pixel interaction), evaluated, un-shuffled, guided, and scattered back. Stage 2 (S..T-1): jittered
 * windows, uniform-weight fusion. The stage switch needs nothing: the latent is always in HR layout and
 * the scheduler keeps stepping it (no noise added).
 *
 * Guidance state carried between steps (asynchronous mode): the key reference of the previous step
 * (eps^0_{k-1}, or in x0 space x0^0_{k-1} = (x^0_{k-1} - sigma_{k-1} eps^0_{k-1}) / alpha_{k-1}, i.e. the
 * key's own denoised estimate at its own step) and the latest mask. Staleness is by step index only.
 * Mask schedule: guided steps are g = 1..S-1; the mask used at g comes from step g-1 (async) or g (sync)
 * and is recomputed when (g - 1) % maskEvery == 0, reused in between. Only those steps' key unit asks for
 * attention. Portable: no Node APIs.
 */
import { AsgdError, invalidArgument } from '../errors.ts';
import { BufferPool } from './buffers.ts';
import { patchSize } from './geometry.ts';
import { applyEpsGuidance, applyX0Guidance, denoisedEstimate, structureWeightAt } from './guidance.ts';
import { buildMask } from './mask.ts';
import { MethodBase } from './method-base.ts';
import type { MethodOptions } from './options.ts';
import type { MethodPlan } from './plan.ts';
import { unitTimeIds } from './plan.ts';
import type { Permutations } from './pixel-interaction.ts';
import { drawPermutations, shuffleToUnits, unshuffleFromUnits } from './pixel-interaction.ts';
import { downscaleLatent, extractPatches, padLatent, relocatePatches } from './polyphase.ts';
import type { MethodContext, UnetUnit, UnitResult } from './types.ts';
import { WindowCanvas, extractWindow, placeWindows } from './windows.ts';

export class StagedMethod extends MethodBase {
  /** Structure guidance is on (asg with w_max > 0 and at least one guided step). */
  private readonly guided: boolean;
  private staleKey: Float32Array | null = null;
  /** Latest mask; null = M = 1 (mask off, fallback, or constant map). */
  private mask: Float32Array | null = null;
  private patchBuffer: Float32Array | null = null;
  private epsBuffer: Float32Array | null = null;
  /** Unit inputs, reused from step to step (see buffers.ts and the contract in types.ts). */
  private readonly samples = new BufferPool();
  private canvas: WindowCanvas | null = null;
  private permBuffer: Permutations | undefined;
  /** The next stage-1 step's permutations, drawn while the devices work on this step (same stream, same order). */
  private aheadPerm: { step: number; perm: Permutations } | null = null;
  private spareBuffer: Permutations | undefined;

  constructor(plan: MethodPlan, options: MethodOptions) {
    super(plan, options);
    this.guided =
      plan.name === 'asg' && options.structureWeight > 0 && plan.stage1Steps > 1 && plan.geometry.count > 1;
  }

  protected override reset(): void {
    super.reset();
    this.staleKey = null;
    this.mask = null;
    this.aheadPerm = null;
  }

  /** Whether the key unit of this stage-1 step must return attention (see the schedule above). */
  maskComputedAt(step: number): boolean {
    if (!this.guided || !this.options.mask) return false;
    const s = this.plan.stage1Steps;
    const n = this.options.maskEvery;
    const g = this.options.guidanceSync ? step : step + 1; // the guided step this mask serves first
    return g >= 1 && g <= s - 1 && (g - 1) % n === 0;
  }

  protected async predictStep(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    return step < this.plan.stage1Steps ? this.stage1(latent, step, ctx) : this.stage2(latent, step, ctx);
  }

  private async stage1(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    const { plan, options } = this;
    const geo = plan.geometry;
    const n = geo.count;
    const size = patchSize(geo);
    const plane = geo.patchHeight * geo.patchWidth;
    const sched = ctx.scheduler;
    const target = this.guided ? ctx.structureTarget : undefined;
    if (target && target.length !== size && target.length !== n * size) {
      throw invalidArgument('structureTarget', `${size} values (one patch, [${geo.channels}, ${geo.patchHeight}, ${geo.patchWidth}]) or ${n * size} (one per patch)`, target.length);
    }
    if (this.guided && (options.structureSpace === 'x0' || target) && sched.predictionType !== 'epsilon') {
      throw invalidArgument(
        'structureSpace',
        "'eps' for a scheduler whose prediction type is not epsilon",
        'x0',
        `The model predicts ${sched.predictionType}; use structureSpace 'eps'.`,
      );
    }

    const padded = padLatent(latent, geo);
    this.patchBuffer ??= new Float32Array(n * size);
    const patches = extractPatches(padded, geo, this.patchBuffer);
    const interacting = options.pixelInteraction && n > 1;
    let perm: Permutations | null = null;
    if (interacting && this.aheadPerm?.step === step) {
      // Drawn during the previous step: swap it in, keeping the old buffer for the next draw ahead.
      perm = this.aheadPerm.perm;
      this.spareBuffer = this.permBuffer;
    } else if (interacting) {
      perm = drawPermutations(ctx.random.permutation, size, n, this.permBuffer);
    }
    this.aheadPerm = null;
    if (perm) this.permBuffer = perm;
    const drawAhead =
      interacting && step + 1 < plan.stage1Steps
        ? () => {
            const next = drawPermutations(ctx.random.permutation, size, n, this.spareBuffer);
            this.spareBuffer = undefined;
            this.aheadPerm = { step: step + 1, perm: next };
          }
        : undefined;
    const into = Array.from({ length: n }, (_, j) => this.samples.take(j, size));
    const samples = shuffleToUnits(patches, perm, n, size, sched.inputScale(step), into);
    const wantMask = this.maskComputedAt(step);
    const timestep = sched.timesteps[step];
    const timeIds = unitTimeIds(plan, 0, 0);
    const units: UnetUnit[] = samples.map((sample, j) => ({
      id: `s1/k${step}/p${j}`,
      kind: 'patch',
      step,
      index: j,
      sample,
      height: geo.patchHeight,
      width: geo.patchWidth,
      timestep,
      wantAttention: j === 0 && wantMask,
      timeIds,
    }));

    let results: UnitResult[];
    if (this.guided && options.guidanceSync) {
      // Synchronous mode: the key unit first, in its own call, then the others.
      const key = await this.evaluate(ctx, units.slice(0, 1), step, 0, drawAhead);
      const rest = await this.evaluate(ctx, units.slice(1), step, 1);
      results = key.concat(rest);
    } else {
      results = await this.evaluate(ctx, units, step, 0, drawAhead);
    }

    this.epsBuffer ??= new Float32Array(n * size);
    const eps = unshuffleFromUnits(
      results.map((r) => r.output),
      perm,
      n,
      size,
      this.epsBuffer,
    );

    if (this.guided) {
      const sync = options.guidanceSync;
      let newMask: Float32Array | null | undefined;
      if (wantMask) {
        const built = buildMask(results[0].attention, geo.patchHeight, geo.patchWidth, {
          tokens: ctx.maskTokens,
          layers: options.maskLayers,
          gamma: options.maskGamma,
          threshold: options.maskThreshold,
        });
        if (built.warning) this.warn(ctx, built.warning);
        newMask = built.mask;
      }
      if (sync && newMask !== undefined) this.mask = newMask;

      const { alpha, sigma } = sched.noiseLevel(step);
      if (target) {
        // A fixed x0 target (an upscale's input): every patch, the key too, from the first step on.
        const w = structureWeightAt(options.structureSchedule, options.structureWeight, options.structureGamma, timestep);
        const m = options.mask ? this.mask : null;
        if (w > 0 && target.length === size) applyX0Guidance(eps, patches, target, m, w, alpha, sigma, n, geo.channels, plane, 0);
        else if (w > 0) {
          // One target per patch (its own polyphase component of the input).
          for (let i = 0; i < n; i++) {
            const part = (a: Float32Array) => a.subarray(i * size, (i + 1) * size);
            applyX0Guidance(part(eps), part(patches), part(target), m, w, alpha, sigma, 1, geo.channels, plane, 0);
          }
        }
        if (newMask !== undefined) this.mask = newMask;
      }
      const keyEps = eps.subarray(0, size);
      const keyNow =
        options.structureSpace === 'eps'
          ? Float32Array.from(keyEps)
          : denoisedEstimate(patches.subarray(0, size), keyEps, alpha, sigma);
      const key = sync ? keyNow : this.staleKey;
      const weight =
        step >= 1
          ? structureWeightAt(options.structureSchedule, options.structureWeight, options.structureGamma, timestep)
          : 0;
      if (!target && key !== null && weight > 0) {
        const mask = options.mask ? this.mask : null;
        if (options.structureSpace === 'eps') applyEpsGuidance(eps, key, mask, weight, n, geo.channels, plane);
        else applyX0Guidance(eps, patches, key, mask, weight, alpha, sigma, n, geo.channels, plane);
      }
      if (!sync && newMask !== undefined) this.mask = newMask;
      this.staleKey = keyNow;
    }

    const fused = relocatePatches(eps, geo, geo.height, geo.width);
    if (this.wantsPreview(step, ctx)) {
      // Patch 0 of the current latent (un-shuffled) and its output (the key patch is never guided).
      this.emitPreview(
        ctx,
        step,
        'key-patch',
        Float32Array.from(patches.subarray(0, size)),
        Float32Array.from(eps.subarray(0, size)),
        geo.patchHeight,
        geo.patchWidth,
      );
    }
    return fused;
  }

  private async stage2(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    const { plan } = this;
    const geo = plan.geometry;
    const grid = plan.windows;
    const sched = ctx.scheduler;
    const padded = padLatent(latent, geo);
    const winH = grid.vertical.window;
    const winW = grid.horizontal.window;
    const scale = sched.inputScale(step);
    const timestep = sched.timesteps[step];
    const placements = placeWindows(grid, this.options.windowJitter ? ctx.random.jitter : undefined);
    const units: UnetUnit[] = placements.map((p) => ({
      id: `s2/k${step}/w${p.index}`,
      kind: 'window',
      step,
      index: p.index,
      sample: extractWindow(
        padded,
        geo.channels,
        geo.paddedHeight,
        geo.paddedWidth,
        p.top,
        p.left,
        winH,
        winW,
        scale,
        this.samples.take(p.index, geo.channels * winH * winW),
      ),
      height: winH,
      width: winW,
      timestep,
      wantAttention: false,
      // Crop = the window's origin in the canvas zero-padded by J on every side (always >= 0).
      timeIds: unitTimeIds(plan, p.top + grid.vertical.jitter, p.left + grid.horizontal.jitter),
    }));
    const results = await this.evaluate(ctx, units, step, 0);
    this.canvas ??= new WindowCanvas(geo.channels, geo.height, geo.width);
    const canvas = this.canvas;
    canvas.reset();
    for (let i = 0; i < units.length; i++) {
      canvas.add(results[i].output, placements[i].top, placements[i].left, winH, winW);
    }
    let fused: Float32Array;
    try {
      fused = canvas.result();
    } catch (cause) {
      throw new AsgdError('Stage-2 windows left a latent position uncovered', { kind: 'internal', cause });
    }
    if (this.wantsPreview(step, ctx)) {
      this.emitPreview(
        ctx,
        step,
        'downscaled',
        downscaleLatent(padded, geo),
        downscaleLatent(padLatent(fused, geo), geo),
        geo.patchHeight,
        geo.patchWidth,
      );
    }
    return fused;
  }
}
