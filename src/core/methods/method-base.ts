/**
 * What every method shares: input checks, the step sequence, progress counting, warnings and the evaluate
 * wrapper that checks the evaluator's answers. Portable: no Node APIs.
 */
import { AsgdError, invalidArgument, throwIfAborted } from '../errors.ts';
import type { Tensor } from '../tensor.ts';
import { denoisedEstimate } from './guidance.ts';
import { outputToX0 } from '../schedulers/prediction.ts';
import type { MethodOptions } from './options.ts';
import type { MethodPlan } from './plan.ts';
import type {
  EvaluateHint,
  HighResMethod,
  MethodContext,
  MethodName,
  MethodPreview,
  UnetUnit,
  UnitResult,
} from './types.ts';

export abstract class MethodBase implements HighResMethod {
  readonly warnings: string[] = [];
  /** Last step whose predict completed; -1 before the first. */
  protected completedStep = -1;

  constructor(
    readonly plan: MethodPlan,
    readonly options: MethodOptions,
  ) {}

  get name(): MethodName {
    return this.plan.name;
  }

  get unitsTotal(): number {
    return this.plan.unitsBefore[this.plan.numSteps];
  }

  unitsAt(step: number): number {
    if (!Number.isInteger(step) || step < 0 || step >= this.plan.numSteps) return 0;
    return this.plan.unitsBefore[step + 1] - this.plan.unitsBefore[step];
  }

  stageOf(step: number): 1 | 2 {
    return this.plan.name === 'direct' || step < this.plan.stage1Steps ? 1 : 2;
  }

  async predict(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    const geo = this.plan.geometry;
    const expected = geo.channels * geo.height * geo.width;
    if (latent.length !== expected) {
      throw invalidArgument(
        'latent',
        `${expected} values ([1, ${geo.channels}, ${geo.height}, ${geo.width}])`,
        `${latent.length} values`,
      );
    }
    if (ctx.scheduler.numSteps !== this.plan.numSteps) {
      throw new AsgdError('Method and scheduler disagree on the number of steps', {
        kind: 'internal',
        expected: String(this.plan.numSteps),
        received: String(ctx.scheduler.numSteps),
      });
    }
    if (step === 0) this.reset();
    else if (step !== this.completedStep + 1 || step >= this.plan.numSteps) {
      // State (stale key, mask) is carried from step to step: steps must come in order.
      throw new AsgdError('Method steps must run in order from 0', {
        kind: 'internal',
        expected: `step ${this.completedStep + 1}`,
        received: `step ${step}`,
      });
    }
    this.handoff = null;
    const out = await this.predictStep(latent, step, ctx);
    this.completedStep = step;
    return out;
  }

  /** The latent after a step, set by predictStep where ctx.advance already stepped all of it (see steppedLatent). */
  protected handoff: { step: number; latent: Float32Array } | null = null;

  steppedLatent(step: number): Float32Array | undefined {
    const h = this.handoff;
    if (h?.step !== step) return undefined;
    this.handoff = null;
    return h.latent;
  }

  protected abstract predictStep(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array>;

  /** Called at step 0: forget everything carried over from a previous run. */
  protected reset(): void {
    this.completedStep = -1;
  }

  protected warn(ctx: MethodContext, message: string): void {
    if (this.warnings.includes(message)) return;
    this.warnings.push(message);
    ctx.onWarning?.(message);
  }

  /**
   * Evaluates one batch of independent units and reports progress; `doneBefore` = units of this step already done.
   * `whileWaiting` runs right after the units are handed over (the evaluator dispatches them synchronously), so host
   * work that does not depend on their results overlaps the devices' work.
   */
  protected async evaluate(
    ctx: MethodContext, units: UnetUnit[], step: number, doneBefore: number, whileWaiting?: () => void,
    hint?: EvaluateHint & { quiet?: boolean },
  ): Promise<UnitResult[]> {
    throwIfAborted(ctx.signal);
    // `quiet` is this method's own; the rest of the hint goes to the evaluator.
    const { quiet: _quiet, ...forwarded } = hint ?? {};
    const pending = ctx.evaluate(units, forwarded);
    whileWaiting?.();
    const results = await pending;
    throwIfAborted(ctx.signal);
    if (!Array.isArray(results) || results.length !== units.length) {
      throw new AsgdError('The evaluator returned the wrong number of results', {
        kind: 'internal',
        expected: String(units.length),
        received: String(Array.isArray(results) ? results.length : results),
      });
    }
    for (let i = 0; i < units.length; i++) {
      if (results[i]?.output?.length !== units[i].sample.length) {
        throw new AsgdError(`Unit ${units[i].id} returned an output of the wrong size`, {
          kind: 'internal',
          expected: String(units[i].sample.length),
          received: String(results[i]?.output?.length),
        });
      }
    }
    if (!hint?.quiet) this.reportProgress(ctx, step, doneBefore + units.length, units[units.length - 1]?.id);
    return results;
  }

  /** Progress: `done` units of `step` are finished. */
  protected reportProgress(ctx: MethodContext, step: number, done: number, unitId?: string): void {
    ctx.onProgress?.({
      stage: this.stageOf(step),
      step,
      totalSteps: this.plan.numSteps,
      unitsDone: this.plan.unitsBefore[step] + done,
      unitsTotal: this.unitsTotal,
      unitId,
    });
  }

  protected wantsPreview(step: number, ctx: MethodContext): boolean {
    const n = ctx.previewEvery ?? 0;
    return n > 0 && ctx.onPreview !== undefined && (step + 1) % n === 0;
  }

  /** Preview of a latent and its model output (both [C, h, w]); denoised for epsilon and flow prediction. */
  protected emitPreview(
    ctx: MethodContext,
    step: number,
    kind: MethodPreview['kind'],
    latent: Float32Array,
    output: Float32Array,
    h: number,
    w: number,
  ): void {
    const c = this.plan.geometry.channels;
    const shape = [1, c, h, w];
    const preview: MethodPreview = { stage: this.stageOf(step), step, kind, latent: { data: latent, shape } };
    const map = outputToX0(ctx.scheduler, step);
    if (map) {
      const { alpha, sigma } = map;
      const denoised: Tensor = { data: denoisedEstimate(latent, output, alpha, sigma), shape: [...shape] };
      preview.denoised = denoised;
    }
    ctx.onPreview?.(preview);
  }
}
