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
 * attention.
 *
 * Pixel interaction every m-th stage-1 step (interactionEvery): the steps in between form run-ahead blocks in which
 * every patch runs its own chain of units (startBlock), waiting only for itself and the key patch, where the context
 * offers a part-of-the-latent scheduler step (MethodContext.advance); the fused outputs are bit for bit the lockstep
 * ones. With interactionGroups 'lines' the whole of stage 1 is such a block, its patches grouped by line at the steps
 * that shuffle. With advance, stage 2 runs as a dataflow too (window-flow.ts): no barrier between its steps. And at a
 * pixel-interaction barrier each unit's output is guided and stepped as it comes in (barrier-step.ts), and the next
 * step goes to the devices before anything is relocated for the denoise loop (launchAfter): after the last unit the
 * devices wait only for its share of the work and the next shuffle.
 * Portable: no Node APIs.
 */
import { AsgdError, invalidArgument } from '../errors.ts';
import { KernelMemory } from '../kernels/memory.ts';
import { BufferPool } from './buffers.ts';
import { deferred, type Deferred } from './deferred.ts';
import { isPadded, patchSize } from './geometry.ts';
import { BarrierStep } from './barrier-step.ts';
import { applyEpsGuidance, applyX0Guidance, denoisedEstimate, structureWeightAt, weightedMask } from './guidance.ts';
import { buildMask } from './mask.ts';
import { MethodBase } from './method-base.ts';
import { X0_MAPPED, outputToX0 } from '../schedulers/prediction.ts';
import type { MethodOptions } from './options.ts';
import type { MethodPlan } from './plan.ts';
import { gridAt, unitTimeIds } from './plan.ts';
import type { Permutations } from './pixel-interaction.ts';
import { drawGroupPermutations, interactionGroups, shuffleToUnits, unshuffleFromUnits } from './pixel-interaction.ts';
import { downscaleLatent, extractPatches, latentLayout, padLatent, relocatePatches, type PatchLayout } from './polyphase.ts';
import type { MethodContext, UnetUnit, UnitResult } from './types.ts';
import { WindowFlow, windowUnit } from './window-flow.ts';
import { WindowCanvas, placeWindows } from './windows.ts';

/** The key patch's guidance reference after a step: its estimate and the latest mask. */
interface KeyRef {
  key: Float32Array | null;
  mask: Float32Array | null;
  /** The step `key` is from (-1 before the first). */
  step: number;
}

/** Stage-1 steps start..end-1 run ahead (see startBlock). */
interface AheadBlock {
  start: number;
  end: number;
  /** Per step: the guided outputs of all patches [N, C, p_h, p_w], done when the last patch has written its own. */
  steps: Map<number, { eps: Float32Array; next: Float32Array; after?: Float32Array; left: number; done: Deferred<Float32Array> }>;
  /** Per step: the key patch's reference after it. */
  keys: Map<number, Deferred<KeyRef>>;
  /** The reference before `start` (from the lockstep path). */
  startRef: KeyRef;
  /** The key patch's reference after the latest step it finished (as `keys` holds it, but readable at once). */
  latestRef?: KeyRef;
  /** A group task failed: the others hand nothing more over. */
  failed: boolean;
  /** Each patch's latent after each step (start - 1: the block's input). */
  patchAfter: Map<number, Deferred<Float32Array>[]>;
  /** The steps' permutations (null: no shuffle), drawn in step order as first asked for. */
  perms: Map<number, Permutations | null>;
  /** The last step whose permutations are drawn. */
  drawnTo: number;
  /** The mask as the key patch's group tasks leave it (they run in step order). */
  keyMask: Float32Array | null;
}

/** A lockstep stage-1 step whose units are on the devices (launchStep). */
interface Launched {
  step: number;
  /**
   * The un-shuffled patches the units were cut from: [N, C, p_h, p_w], or, for a step taken unit by unit (`barrier`),
   * the latent itself (launchStep).
   */
  patches: Float32Array;
  perm: Permutations | null;
  wantMask: boolean;
  results: Promise<UnitResult[]>;
  /** The step taken unit by unit as results come in, where it is (see launchStep). */
  barrier?: BarrierStep;
}

export class StagedMethod extends MethodBase {
  /** Structure guidance is on (asg with w_max > 0 and at least one guided step). */
  private readonly guided: boolean;
  private staleKey: Float32Array | null = null;
  /** The step staleKey is from: a step guided asynchronously must find the step before's (checked where read late). */
  private staleKeyStep = -1;
  /** Latest mask; null = M = 1 (mask off, fallback, or constant map). */
  private mask: Float32Array | null = null;
  private patchBuffer: Float32Array | null = null;
  /** Where the patches lie in the latent (built once: the geometry is fixed). */
  private inLatent: PatchLayout | null = null;
  /** The same per element of the patches [N, C, p_h, p_w], for ctx.advance (built at the first use). */
  private inLatentPositions: Int32Array | null = null;
  /** The WebAssembly memory the unit-by-unit steps are taken in (null where WebAssembly is unavailable), made at the first. */
  private kernelMemory: KernelMemory | null | undefined;
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

  /** The run-ahead block in progress, if any. */
  private block: AheadBlock | null = null;
  /** The stage-2 dataflow in progress, if any. */
  private flow: WindowFlow | null = null;
  /** The next lockstep step, handed over at the end of the one before (see launchAfter). */
  private launched: Launched | null = null;

  protected override reset(): void {
    super.reset();
    this.block = null;
    this.flow?.stop(new AsgdError('The generation started over', { kind: 'internal' }));
    this.flow = null;
    this.staleKey = null;
    this.staleKeyStep = -1;
    this.mask = null;
    this.aheadPerm = null;
    this.launched = null;
  }

  /** Whether the key unit of this stage-1 step must return attention (see the schedule above). */
  maskComputedAt(step: number): boolean {
    if (!this.guided || !this.options.mask) return false;
    const s = this.plan.stage1Steps;
    const n = this.options.maskEvery;
    const g = this.options.guidanceSync ? step : step + 1; // the guided step this mask serves first
    return g >= 1 && g <= s - 1 && (g - 1) % n === 0;
  }

  /**
   * Whether stage-1 step `step` shuffles: pixel interaction at every interactionEvery-th step, and at every step of
   * the last interactionTail of stage 1.
   */
  interactsAt(step: number): boolean {
    const { options, plan } = this;
    const denseFrom = plan.stage1Steps - Math.round(plan.stage1Steps * options.interactionTail);
    return options.pixelInteraction && plan.geometry.count > 1 && step < plan.stage1Steps &&
      (step % options.interactionEvery === 0 || step >= denseFrom);
  }

  protected async predictStep(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    return step < this.plan.stage1Steps ? this.stage1(latent, step, ctx) : this.stage2(latent, step, ctx);
  }

  /** Checks of stage 1's inputs; returns the structure target when guidance uses one. */
  private checkStage1(ctx: MethodContext): Float32Array | undefined {
    const { options } = this;
    const geo = this.plan.geometry;
    const n = geo.count;
    const size = patchSize(geo);
    const sched = ctx.scheduler;
    const target = this.guided ? ctx.structureTarget : undefined;
    if (target && target.length !== size && target.length !== n * size) {
      throw invalidArgument('structureTarget', `${size} values (one patch, [${geo.channels}, ${geo.patchHeight}, ${geo.patchWidth}]) or ${n * size} (one per patch)`, target.length);
    }
    if (this.guided && (options.structureSpace === 'x0' || target) && !X0_MAPPED.includes(sched.predictionType)) {
      throw invalidArgument(
        'structureSpace',
        "'eps' for a scheduler whose prediction type is neither epsilon nor flow",
        'x0',
        `The model predicts ${sched.predictionType}; use structureSpace 'eps'.`,
      );
    }
    return target;
  }

  /** The cross-attention mask from the key patch's attention maps (null: uniform guidance); warns once on a problem. */
  private keyMask(attention: Parameters<typeof buildMask>[0], ctx: MethodContext): Float32Array | null {
    const geo = this.plan.geometry;
    const o = this.options;
    const built = buildMask(attention, geo.patchHeight, geo.patchWidth, { tokens: ctx.maskTokens, layers: o.maskLayers, gamma: o.maskGamma, threshold: o.maskThreshold, noMapsReason: ctx.noMapsReason });
    if (built.warning) this.warn(ctx, built.warning);
    return built.mask;
  }

  /**
   * Whether the method may step stage-1 patches itself: the context can step part of the latent, and no geometry
   * padding couples the patches (its replicated edge would be stepped apart from its source).
   */
  private canStepPatches(ctx: MethodContext): boolean {
    const geo = this.plan.geometry;
    return ctx.advance !== undefined && geo.count > 1 && !isPadded(geo);
  }

  /**
   * Whether the patches may also be guided and stepped apart from each other (run-ahead, the synchronous path's own
   * step): not toward a structure target, which only the lockstep functions and the unit-by-unit step guide by.
   */
  private canRunPatchesApart(ctx: MethodContext): boolean {
    return this.canStepPatches(ctx) && !(this.guided && ctx.structureTarget);
  }

  /** The latent position of each element of the patches [N, C, p_h, p_w] (an unpadded geometry: canStepPatches). */
  private patchPositions(): Int32Array {
    if (this.inLatentPositions === null) {
      const { base, offset } = (this.inLatent ??= latentLayout(this.plan.geometry));
      const size = offset.length;
      const positions = new Int32Array(base.length * size);
      for (let o = 0; o < base.length; o++) for (let e = 0; e < size; e++) positions[o * size + e] = base[o]! + offset[e]!;
      this.inLatentPositions = positions;
    }
    return this.inLatentPositions;
  }

  /** Whether stage-1 step `step` may start a run-ahead block: patches can be stepped apart and the step does not shuffle. */
  private canRunAhead(step: number, ctx: MethodContext): boolean {
    return this.canRunPatchesApart(ctx) && (this.linesFlow() || !this.interactsAt(step));
  }

  /** 'lines' interaction: no step is a barrier, so one block runs the whole of stage 1 as a dataflow (startBlock). */
  private linesFlow(): boolean {
    const geo = this.plan.geometry;
    return this.options.interactionGroups === 'lines' && geo.rows > 1 && geo.cols > 1;
  }

  private async stage1(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    const { plan, options } = this;
    const geo = plan.geometry;
    const n = geo.count;
    const size = patchSize(geo);
    const plane = geo.patchHeight * geo.patchWidth;
    const sched = ctx.scheduler;
    const target = this.checkStage1(ctx);
    if (this.block && step >= this.block.start && step < this.block.end) return this.fromBlock(latent, step, ctx);
    if (this.canRunAhead(step, ctx)) {
      this.block = this.startBlock(extractPatches(padLatent(latent, geo), geo), step, ctx);
      return this.fromBlock(latent, step, ctx);
    }

    let launched = this.launched?.step === step ? this.launched : null;
    this.launched = null;
    launched ??= this.launchStep(latent, step, ctx);
    const { patches, perm, wantMask } = launched;
    const results = await launched.results;
    if (!(this.guided && options.guidanceSync)) this.reportProgress(ctx, step, n, `s1/k${step}/p${n - 1}`);
    if (launched.barrier) return this.afterBarrier(launched, launched.barrier, results, ctx);

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
        newMask = this.keyMask(results[0].attention, ctx);
      }
      if (sync && newMask !== undefined) this.mask = newMask;

      // x0 = (x - sigma * output) / alpha: the noise level for epsilon, (1, sigma) for flow velocity.
      const { alpha, sigma } = outputToX0(sched, step) ?? sched.noiseLevel(step);
      if (target) {
        // A fixed x0 target (an upscale's input): every patch, the key too, from the first step on.
        const w = this.guidanceWeight(step, sched, 0);
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
      const keyNow = this.keyReference(patches.subarray(0, size), eps.subarray(0, size), step, sched);
      const key = sync ? keyNow : this.staleKey;
      const weight = this.guidanceWeight(step, sched);
      if (!target && key !== null && weight > 0) {
        const mask = options.mask ? this.mask : null;
        if (options.structureSpace === 'eps') applyEpsGuidance(eps, key, mask, weight, n, geo.channels, plane);
        else applyX0Guidance(eps, patches, key, mask, weight, alpha, sigma, n, geo.channels, plane);
      }
      if (!sync && newMask !== undefined) this.mask = newMask;
      this.staleKey = keyNow;
      this.staleKeyStep = step;
    }

    if (this.canRunPatchesApart(ctx)) {
      // Synchronous guidance: step the patches here too, and start a run-ahead block or the dataflow from them.
      const next = ctx.advance!(step, eps, patches, undefined, undefined, this.patchPositions());
      const after = relocatePatches(next, geo, geo.height, geo.width);
      this.launchAfter(step, after, ctx, next);
      this.handoff = { step, latent: after };
    }
    const fused = relocatePatches(eps, geo, geo.height, geo.width);
    this.keyPatchPreview(ctx, step, patches.subarray(0, size), eps.subarray(0, size));
    return fused;
  }

  /** w_t of structure guidance at `step`: 0 before step `from` (1: at step 0 nothing stale exists to guide by). */
  private guidanceWeight(step: number, sched: MethodContext['scheduler'], from = 1): number {
    const o = this.options;
    return step >= from ? structureWeightAt(o.structureSchedule, o.structureWeight, o.structureGamma, sched.timesteps[step]) : 0;
  }

  /**
   * The key patch's reference after a step, from its latent `x` and output `eps` at that step ([C, p_h, p_w] each):
   * its output (eps space) or its denoised estimate (x0 space).
   */
  private keyReference(x: Float32Array, eps: Float32Array, step: number, sched: MethodContext['scheduler']): Float32Array {
    if (this.options.structureSpace === 'eps') return Float32Array.from(eps);
    // x0 = (x - sigma * output) / alpha: the noise level for epsilon, (1, sigma) for flow velocity.
    const { alpha, sigma } = outputToX0(sched, step) ?? sched.noiseLevel(step);
    return denoisedEstimate(x, eps, alpha, sigma);
  }

  /** Preview of patch 0 of the current latent (un-shuffled) and its output (the key patch is never guided). */
  private keyPatchPreview(ctx: MethodContext, step: number, keyLatent: Float32Array, keyOutput: Float32Array): void {
    if (!this.wantsPreview(step, ctx)) return;
    const geo = this.plan.geometry;
    this.emitPreview(ctx, step, 'key-patch', Float32Array.from(keyLatent), Float32Array.from(keyOutput), geo.patchHeight, geo.patchWidth);
  }

  /**
   * The end of a step taken unit by unit (BarrierStep): the units the evaluator did not hand over one by one are
   * taken now; the next step goes to the devices at once, and the key reference and mask it guides by (asynchronous
   * guidance: this step's), the fused output and the stepped latent are built while it runs. A run-ahead block takes
   * the reference when it starts, so before it the reference comes first.
   */
  private afterBarrier(launched: Launched, barrier: BarrierStep, results: UnitResult[], ctx: MethodContext): Float32Array {
    const { plan } = this;
    const { step } = launched;
    // The step was taken on the latent itself (launchStep): its guided outputs are the fused output, and the patches
    // after it the stepped latent, with nothing to relocate.
    results.forEach((r, j) => barrier.take(j, r));
    const updateReference = () => {
      if (!this.guided) return;
      if (launched.wantMask) this.mask = this.keyMask(results[0].attention, ctx);
      this.staleKey = this.keyReference(barrier.keyLatent, barrier.keyOutput, step, ctx.scheduler);
      this.staleKeyStep = step;
    };
    const blockNext = step + 1 < plan.stage1Steps && this.canRunAhead(step + 1, ctx);
    if (blockNext) updateReference();
    // The barrier itself: the next step's units may be shuffled from where the kernel stepped the latent.
    this.launchAfter(step, barrier, ctx);
    if (!blockNext) updateReference();
    this.handoff = { step, latent: barrier.next };
    this.keyPatchPreview(ctx, step, barrier.keyLatent, barrier.keyOutput);
    return barrier.eps;
  }

  /**
   * Whether lockstep stage-1 steps are taken unit by unit (BarrierStep): the method steps the patches, guidance is not
   * synchronous (a structure target, which needs no key unit first, included).
   */
  private unitByUnit(ctx: MethodContext): boolean {
    return this.canStepPatches(ctx) && !(this.guided && this.options.guidanceSync);
  }

  /**
   * Hands a lockstep stage-1 step's units to the devices: draws (or takes the one drawn ahead) the step's
   * permutations, shuffles the patches of `latent` into the units, evaluates them, and, while the devices work, draws
   * the next step's permutations (same stream, same order). Where the method steps the patches itself and guidance is
   * asynchronous (or off), each unit's output is guided and stepped as it comes in (BarrierStep), on the latent
   * itself (latentLayout: the geometry is not padded there); otherwise the patches are extracted first.
   */
  private launchStep(source: Float32Array | BarrierStep, step: number, ctx: MethodContext): Launched {
    const { plan, options } = this;
    const geo = plan.geometry;
    const n = geo.count;
    const size = patchSize(geo);
    const sched = ctx.scheduler;
    const layout = this.unitByUnit(ctx) ? (this.inLatent ??= latentLayout(geo)) : null;
    // Asked for only when needed: where the step before holds its stepped latent in kernel memory, the units are
    // shuffled from there and the latent is copied out after they are on the devices.
    let patchesMemo: Float32Array | undefined;
    const patchesOf = () => {
      const latent = source instanceof BarrierStep ? source.next : source;
      return (patchesMemo ??= layout ? latent : extractPatches(padLatent(latent, geo), geo, (this.patchBuffer ??= new Float32Array(n * size))));
    };
    const interacting = this.interactsAt(step);
    let perm: Permutations | null = null;
    if (interacting && this.aheadPerm?.step === step) {
      // Drawn during the previous step: swap it in, keeping the old buffer for the next draw ahead.
      perm = this.aheadPerm.perm;
      this.spareBuffer = this.permBuffer;
    } else if (interacting) {
      perm = this.drawPermutationsFor(step, ctx, this.permBuffer);
    }
    this.aheadPerm = null;
    if (perm) this.permBuffer = perm;
    const drawAhead = this.interactsAt(step + 1) ? () => this.drawAhead(step + 1, ctx) : undefined;
    const into = Array.from({ length: n }, (_, j) => this.samples.take(j, size));
    const scale = sched.inputScale(step);
    const fromKernel = layout !== null && source instanceof BarrierStep && source.shuffleNext(perm, scale, into, layout);
    const samples = fromKernel ? into : shuffleToUnits(patchesOf(), perm, n, size, scale, into, layout ?? undefined);
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
      ...attentionRequest(j, wantMask, ctx),
      timeIds,
    }));
    let results: Promise<UnitResult[]>;
    let barrier: BarrierStep | undefined;
    if (this.guided && options.guidanceSync) {
      // Synchronous mode: the key unit first, in its own call, then the others.
      results = (async () => {
        const key = await this.evaluate(ctx, units.slice(0, 1), step, 0, drawAhead);
        const rest = await this.evaluate(ctx, units.slice(1), step, 1);
        return key.concat(rest);
      })();
    } else {
      // Results are taken one by one from the next microtask on: by then the turn that launched this step has built
      // the key reference it is guided by (afterBarrier). One handed over sooner is taken with the resolved results.
      let armed = false;
      const onResult = layout
        ? (j: number, r: UnitResult) => {
            if (armed) barrier!.take(j, r);
          }
        : undefined;
      // Progress is reported when the step is taken up (stage1), which may be after this launch returns.
      results = this.evaluate(ctx, units, step, 0, drawAhead, { quiet: true, ...(onResult ? { onResult } : {}) });
      if (layout) {
        // Its arrays (the step's fused output and next latent, new each step) are made after the hand-over.
        barrier = this.barrierStep(patchesOf(), layout, perm, step, ctx);
        void Promise.resolve().then(() => (armed = true));
      }
    }
    // A launched step the generation never takes up (it failed or was cancelled) must not reject unobserved.
    results.catch(() => undefined);
    return { step, patches: patchesOf(), perm, wantMask, results, barrier };
  }

  /**
   * A pixel-interaction step whose units are guided and stepped as they come in (barrier-step.ts), on `latent` laid
   * out by `layout`. Its guided outputs and stepped latent go to new arrays: the denoise loop keeps them (the fused
   * output and the latent after the step).
   */
  private barrierStep(latent: Float32Array, layout: PatchLayout, perm: Permutations | null, step: number, ctx: MethodContext): BarrierStep {
    const { plan, options } = this;
    const geo = plan.geometry;
    const n = geo.count;
    const size = patchSize(geo);
    const plane = geo.patchHeight * geo.patchWidth;
    const sched = ctx.scheduler;
    const target = this.guided ? ctx.structureTarget : undefined;
    const euler = ctx.eulerStep?.(step) ?? null;
    const stateful = euler === null ? ctx.statefulStep?.(step) ?? null : null;
    const kernelStep = euler !== null ? { euler } : stateful !== null ? { stateful } : null;
    // The generation's kernel memory (one step at a time holds it: a step is complete before the next is set up).
    if (kernelStep && this.kernelMemory === undefined) this.kernelMemory = KernelMemory.create();
    const memory = kernelStep ? this.kernelMemory : null;
    return new BarrierStep({
      step, patches: latent, layout, perm, n, size, advance: ctx.advance!,
      ...(kernelStep && memory ? { kernel: { memory, step: kernelStep, ...(target ? { keyLength: target.length } : {}) } } : {}),
      eps: new Float32Array(latent.length),
      next: new Float32Array(latent.length),
      guidance: () => {
        if (target) {
          // A fixed x0 target (an upscale's input): every patch, the key too, from the first step on (the lockstep
          // path's weights and mask).
          const w = this.guidanceWeight(step, sched, 0);
          const { alpha, sigma } = outputToX0(sched, step) ?? sched.noiseLevel(step);
          if (!(w > 0) || !(sigma > 0)) return null;
          const mask = options.mask ? this.mask : null;
          return { space: 'x0', key: target, targets: target.length === size ? 'shared' : 'per-patch', weights: weightedMask(mask, (w * alpha) / sigma, plane), alpha, sigma };
        }
        // Asynchronous: the key patch's reference from the step before (lockstep path: the same weights and mask).
        const key = this.staleKey;
        // Read when the first unit is in: the step before must have set its reference by then (it does so in the
        // turn that hands this step over). A late one would guide by the wrong step's key: fail loudly instead.
        if (key !== null && this.staleKeyStep !== step - 1) {
          throw new AsgdError(`Stage-1 step ${step} found the key reference of step ${this.staleKeyStep}, not of step ${step - 1}`, { kind: 'internal' });
        }
        const weight = this.guidanceWeight(step, sched);
        if (!this.guided || key === null || !(weight > 0)) return null;
        const { alpha, sigma } = outputToX0(sched, step) ?? sched.noiseLevel(step);
        const x0 = options.structureSpace === 'x0';
        if (x0 && !(sigma > 0)) return null; // no noise left: nothing to steer through eps
        const mask = options.mask ? this.mask : null;
        return { space: options.structureSpace, key, weights: weightedMask(mask, x0 ? (weight * alpha) / sigma : weight, plane), alpha, sigma };
      },
    });
  }

  /** Stage-1 step `step`'s permutations (within its interaction groups), drawn from the permutation stream. */
  private drawPermutationsFor(step: number, ctx: MethodContext, into?: Permutations): Permutations {
    const geo = this.plan.geometry;
    const groups = interactionGroups(this.options.interactionGroups, geo.rows, geo.cols, this.linesRound(step));
    return drawGroupPermutations(ctx.random.permutation, patchSize(geo), geo.count, groups, into);
  }

  /** Draws stage-1 step `step`'s permutations now, while the devices work (the stream's order is unchanged). */
  private drawAhead(step: number, ctx: MethodContext): void {
    const next = this.drawPermutationsFor(step, ctx, this.spareBuffer);
    this.spareBuffer = undefined;
    this.aheadPerm = { step, perm: next };
  }

  /**
   * After stage-1 step `step`, whose patches the method stepped itself (the latent after it; `patches`, the same in
   * patch-major layout where the caller has it): hands the next step to the devices at once, before anything else is
   * built for the denoise loop, so that host work does not delay the devices at a pixel-interaction barrier. The next
   * step is a lockstep step (asynchronous guidance or none), a run-ahead block, or the stage-2 dataflow. Same
   * arithmetic, same random streams in the same order: the images do not change.
   */
  private launchAfter(step: number, source: Float32Array | BarrierStep, ctx: MethodContext, patches?: Float32Array): void {
    const { plan } = this;
    const geo = plan.geometry;
    const t = step + 1;
    const latent = () => (source instanceof BarrierStep ? source.next : source);
    if (t < plan.stage1Steps) {
      if (this.canRunAhead(t, ctx)) this.block = this.startBlock(patches ?? extractPatches(padLatent(latent(), geo), geo), t, ctx);
      else if (this.unitByUnit(ctx)) this.launched = this.launchStep(source, t, ctx);
    } else if (t + 1 < plan.numSteps) {
      this.flow = this.startFlow(latent(), t, ctx, ctx.advance!);
    }
  }

  /**
   * Stage-1 run-ahead from `start` to the next pixel-interaction step (or the stage's end; with 'lines' interaction,
   * the stage's end). The block runs groups of patches (groupTask): each patch alone between pixel-interaction steps,
   * a line of patches at a 'lines' step. A group evaluates its units at step t, guides them (async: by the key patch's
   * step t-1; sync: step t), steps its part of the latent with ctx.advance, and its patches go on to t+1. A group
   * thus waits only for its own patches' previous step and the key patch's, never for all patches, so on several
   * devices the patches run ahead of each other. The arithmetic is that of the lockstep path (same inputs, same
   * guidance per element, same scheduler step), so the fused outputs and the latent are bit for bit those of one
   * device; predict(t) returns step t's fused output once every patch has it, and the latent after t (the patches'
   * own steps relocated; steppedLatent), which the denoise loop takes instead of stepping the whole latent again.
   * After the block's last step the step that follows is handed to the devices at once (launchAfter).
   */
  private startBlock(patches: Float32Array, start: number, ctx: MethodContext): AheadBlock {
    const { plan } = this;
    const geo = plan.geometry;
    const n = geo.count;
    const size = patchSize(geo);
    const lines = this.linesFlow();
    let end = start + 1;
    while (end < plan.stage1Steps && (lines || !this.interactsAt(end))) end++;
    const block: AheadBlock = {
      start,
      end,
      steps: new Map(),
      keys: new Map(),
      startRef: { key: this.staleKey, mask: this.mask, step: this.staleKeyStep },
      failed: false,
      patchAfter: new Map(),
      perms: new Map(),
      drawnTo: start - 1,
      keyMask: this.mask,
    };
    for (let t = start; t < end; t++) {
      // The patches' latents after each step, stepped by their groups.
      block.steps.set(t, { eps: new Float32Array(n * size), next: new Float32Array(n * size), left: n, done: deferred() });
      block.keys.set(t, deferred());
    }
    for (let t = start - 1; t < end; t++) block.patchAfter.set(t, Array.from({ length: n }, () => deferred<Float32Array>()));
    block.patchAfter.get(start - 1)!.forEach((d, i) => d.resolve(patches.slice(i * size, (i + 1) * size)));
    const fail = (error: unknown) => {
      block.failed = true;
      for (const s of block.steps.values()) s.done.reject(error);
      for (const k of block.keys.values()) k.reject(error);
      for (const ds of block.patchAfter.values()) for (const d of ds) d.reject(error);
    };
    for (let t = start; t < end; t++) for (const g of this.stepGroups(t)) this.groupTask(block, t, g, ctx).catch(fail);
    // The groups' first units are on the devices: draw the permutations of the step after the block now.
    if (this.interactsAt(end)) this.drawAhead(end, ctx);
    return block;
  }

  /** Structure guidance of one patch's output `eps` (its latent `x`) by a key reference, as the lockstep path guides it. */
  private guidePatch(eps: Float32Array, x: Float32Array, ref: KeyRef, t: number, sched: MethodContext['scheduler']): void {
    const { options, plan } = this;
    const geo = plan.geometry;
    const weight = this.guidanceWeight(t, sched);
    if (ref.key === null || !(weight > 0)) return;
    const plane = geo.patchHeight * geo.patchWidth;
    const m = options.mask ? ref.mask : null;
    if (options.structureSpace === 'eps') return applyEpsGuidance(eps, ref.key, m, weight, 1, geo.channels, plane, 0);
    const { alpha, sigma } = outputToX0(sched, t) ?? sched.noiseLevel(t);
    applyX0Guidance(eps, x, ref.key, m, weight, alpha, sigma, 1, geo.channels, plane, 0);
  }

  /** The patch groups of stage-1 step `step`: its lines where it interacts, else each patch alone. */
  private stepGroups(step: number): number[][] {
    const geo = this.plan.geometry;
    if (!this.interactsAt(step)) return Array.from({ length: geo.count }, (_, i) => [i]);
    return interactionGroups('lines', geo.rows, geo.cols, this.linesRound(step));
  }

  /** Rows (even) or columns (odd) at stage-1 step `step`: they swap every linesPeriod interacting steps. */
  private linesRound(step: number): number {
    let interacting = 0;
    for (let k = 0; k < step; k++) if (this.interactsAt(k)) interacting++;
    return Math.floor(interacting / this.options.linesPeriod);
  }

  /** Step `step`'s permutations in a 'lines' block, drawing every step before it first (the stream's order). */
  private blockPerm(block: AheadBlock, step: number, ctx: MethodContext): Permutations | null {
    while (block.drawnTo < step) {
      const t = ++block.drawnTo;
      if (!this.interactsAt(t)) {
        block.perms.set(t, null);
        continue;
      }
      // A step's permutations drawn ahead by the lockstep step before the block.
      const ahead = this.aheadPerm?.step === t ? this.aheadPerm.perm : undefined;
      if (ahead) this.aheadPerm = null;
      block.perms.set(t, ahead ?? this.drawPermutationsFor(t, ctx, undefined));
    }
    return block.perms.get(step)!;
  }

  /**
   * One group of patches at one step of a run-ahead block (a patch alone, or a line at a 'lines' step): waits for the
   * group's latents after the step before, shuffles them among the group's units (the step's permutation maps within
   * each group; none for a patch alone), evaluates the units, un-shuffles,
   * guides (the key patch's reference first) and steps each patch. The arithmetic per element is that of the
   * lockstep path, so the result is bit for bit one device's; a group waits only for its own patches, never for a
   * barrier of all.
   */
  private async groupTask(block: AheadBlock, t: number, g: readonly number[], ctx: MethodContext): Promise<void> {
    const { plan, options } = this;
    const geo = plan.geometry;
    const n = geo.count;
    const size = patchSize(geo);
    const sched = ctx.scheduler;
    const before = block.patchAfter.get(t - 1)!;
    const xs: Float32Array[] = new Array(n);
    for (const p of g) xs[p] = await before[p]!.promise;
    if (block.failed) return;
    // Drawn when the step's first group is ready (with every step before it, in the stream's order).
    const perm = this.blockPerm(block, t, ctx);
    const scale = sched.inputScale(t);
    const timestep = sched.timesteps[t];
    const timeIds = unitTimeIds(plan, 0, 0);
    const units: UnetUnit[] = g.map((j) => {
      const sample = this.samples.take(j, size);
      // shuffleToUnits' arithmetic for unit j alone.
      if (!perm) {
        const x = xs[j]!;
        if (scale === 1) sample.set(x);
        else for (let e = 0; e < size; e++) sample[e] = x[e]! * scale;
      } else if (scale === 1) {
        for (let e = 0, q = j; e < size; e++, q += n) sample[e] = xs[perm[q]!]![e]!;
      } else {
        for (let e = 0, q = j; e < size; e++, q += n) sample[e] = xs[perm[q]!]![e]! * scale;
      }
      return {
        id: `s1/k${t}/p${j}`, kind: 'patch', step: t, index: j, sample, height: geo.patchHeight, width: geo.patchWidth,
        timestep, ...attentionRequest(j, this.maskComputedAt(t), ctx), timeIds,
      };
    });
    const hasKey = g.includes(0);
    const results = await this.evaluate(ctx, units, t, 0, undefined, { priority: hasKey ? 1 : 0, stream: t < block.end - 1, quiet: true });
    if (block.failed) return;
    const slot = block.steps.get(t)!;
    // Un-shuffle: patch perm_e[j] gets unit j's output at element e.
    g.forEach((j, u) => {
      const out = results[u]!.output;
      if (!perm) slot.eps.set(out, j * size);
      else for (let e = 0, q = j; e < size; e++, q += n) slot.eps[perm[q]! * size + e] = out[e]!;
    });
    const epsOf = (p: number) => slot.eps.subarray(p * size, (p + 1) * size);
    if (this.guided) {
      if (hasKey) {
        const u = g.indexOf(0);
        if (units[u]!.wantAttention) block.keyMask = this.keyMask(results[u]!.attention, ctx);
        block.latestRef = { key: this.keyReference(xs[0]!, epsOf(0), t, sched), mask: block.keyMask, step: t };
        block.keys.get(t)!.resolve(block.latestRef);
      }
      const guided = g.filter((p) => p !== 0);
      if (guided.length > 0) {
        const ref = options.guidanceSync ? await block.keys.get(t)!.promise : t === block.start ? block.startRef : await block.keys.get(t - 1)!.promise;
        if (block.failed) return;
        for (const p of guided) this.guidePatch(epsOf(p), xs[p]!, ref, t, sched);
      }
    }
    const after = block.patchAfter.get(t)!;
    const positions = this.patchPositions();
    for (const p of g) {
      const x = ctx.advance!(t, epsOf(p), xs[p]!, undefined, undefined, positions.subarray(p * size, (p + 1) * size));
      slot.next.set(x, p * size);
      after[p]!.resolve(x);
    }
    slot.left -= g.length;
    if (slot.left > 0) return;
    // Every group of step t has read its inputs and permutations.
    block.patchAfter.delete(t - 1);
    block.perms.delete(t);
    // The last group of step t: after the block's last step, hand the next step over at once (launchAfter).
    if (t === block.end - 1) {
      if (this.guided && block.latestRef) ({ key: this.staleKey, mask: this.mask, step: this.staleKeyStep } = block.latestRef);
      slot.after = relocatePatches(slot.next, geo, geo.height, geo.width);
      this.launchAfter(t, slot.after, ctx, slot.next);
    }
    slot.done.resolve(slot.eps);
  }

  /** Step `step` of the run-ahead block: its fused output once every patch has its guided output. */
  private async fromBlock(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    const block = this.block!;
    const geo = this.plan.geometry;
    const size = patchSize(geo);
    const slot = block.steps.get(step)!;
    const eps = await slot.done.promise;
    block.steps.delete(step);
    // Run-ahead blocks never start on a padded geometry (canRunAhead), so the patches relocate to the whole latent.
    this.handoff = { step, latent: slot.after ?? relocatePatches(slot.next, geo, geo.height, geo.width) };
    if (this.guided) {
      // The guidance state after this step, as the lockstep path leaves it.
      const rec = await block.keys.get(step)!.promise;
      this.staleKey = rec.key;
      this.staleKeyStep = rec.step;
      this.mask = rec.mask;
      block.keys.delete(step - 1);
    }
    if (step === block.end - 1) this.block = null;
    this.reportProgress(ctx, step, geo.count, `s1/k${step}/p${geo.count - 1}`);
    const fused = relocatePatches(eps, geo, geo.height, geo.width);
    if (this.wantsPreview(step, ctx)) {
      const key = extractPatches(padLatent(latent, geo), geo).subarray(0, size);
      this.emitPreview(ctx, step, 'key-patch', Float32Array.from(key), Float32Array.from(eps.subarray(0, size)), geo.patchHeight, geo.patchWidth);
    }
    return fused;
  }

  private async stage2(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    if (!this.flow && ctx.advance && step + 1 < this.plan.numSteps) this.flow = this.startFlow(latent, step, ctx, ctx.advance);
    if (this.flow) return this.fromFlow(latent, step, ctx);
    const { plan } = this;
    const geo = plan.geometry;
    const grid = gridAt(plan, step);
    const padded = padLatent(latent, geo);
    const placements = placeWindows(grid, this.options.windowJitter ? ctx.random.jitter : undefined);
    const size = geo.channels * grid.vertical.window * grid.horizontal.window;
    const units = placements.map((p) => windowUnit(plan, ctx.scheduler, step, grid, p, padded, this.samples.take(p.index, size)));
    const results = await this.evaluate(ctx, units, step, 0);
    this.canvas ??= new WindowCanvas(geo.channels, geo.height, geo.width);
    const canvas = this.canvas;
    canvas.reset();
    for (let i = 0; i < units.length; i++) {
      canvas.add(results[i].output, placements[i].top, placements[i].left, grid.vertical.window, grid.horizontal.window);
    }
    let fused: Float32Array;
    try {
      fused = canvas.result();
    } catch (cause) {
      throw new AsgdError('Stage-2 windows left a latent position uncovered', { kind: 'internal', cause });
    }
    this.stage2Preview(latent, fused, step, ctx);
    return fused;
  }

  /** Stage-2 steps from `start` on as a dataflow (window-flow.ts): no barrier between steps. */
  private startFlow(latent: Float32Array, start: number, ctx: MethodContext, advance: NonNullable<MethodContext['advance']>): WindowFlow {
    return new WindowFlow(this.plan, latent, start, this.options.windowJitter ? ctx.random.jitter : undefined, {
      scheduler: ctx.scheduler,
      advance: (step, output, sample, positions, into) => advance(step, output, sample, into, undefined, positions),
      ...(ctx.eulerStep ? { eulerStep: ctx.eulerStep } : {}),
      evaluate: async (unit, priority, stream) => {
        const [result] = await this.evaluate(ctx, [unit], unit.step, 0, undefined, { priority, stream, quiet: true });
        return result.output;
      },
    });
  }

  /** Step `step` of the dataflow: its fused output once all its windows are done. */
  private async fromFlow(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    const { fused, after } = await this.flow!.result(step);
    if (after) this.handoff = { step, latent: after };
    if (step === this.plan.numSteps - 1) this.flow = null;
    const count = gridAt(this.plan, step).count;
    this.reportProgress(ctx, step, count, `s2/k${step}/w${count - 1}`);
    this.stage2Preview(latent, fused, step, ctx);
    return fused;
  }

  private stage2Preview(latent: Float32Array, fused: Float32Array, step: number, ctx: MethodContext): void {
    if (!this.wantsPreview(step, ctx)) return;
    const geo = this.plan.geometry;
    const down = (x: Float32Array) => downscaleLatent(padLatent(x, geo), geo);
    this.emitPreview(ctx, step, 'downscaled', down(latent), down(fused), geo.patchHeight, geo.patchWidth);
  }
}

/** What a stage-1 unit asks of the probe: the key unit (index 0), at a step that computes the mask, over the mask tokens. */
function attentionRequest(index: number, maskStep: boolean, ctx: MethodContext): Pick<UnetUnit, 'wantAttention' | 'maskTokens'> {
  return index === 0 && maskStep ? { wantAttention: true, maskTokens: ctx.maskTokens } : { wantAttention: false };
}
