/**
 * A pixel-interaction step taken unit by unit. As each unit's output comes in (EvaluateHint.onResult), its elements
 * are guided and written back to their patches in one pass (guideUnit), then stepped there (the scheduler's step on
 * those positions), so that when the last unit arrives only that unit's share and the next step's shuffle are left
 * before the devices get work again. Per element the arithmetic is that of un-shuffling every output, guiding the
 * patches and stepping the latent (staged.ts), and every element is written by exactly one unit, so the result is
 * the same bit for bit in any arrival order.
 * Portable: no Node APIs.
 */
import { AsgdError } from '../errors.ts';
import { guideUnit, type StepGuidance } from './guidance.ts';
import type { Permutations } from './pixel-interaction.ts';
import type { MethodContext, UnitResult } from './types.ts';

export interface BarrierStepSetup {
  step: number;
  /** The patches [N, C, p_h, p_w] at this step (not input-scaled). */
  patches: Float32Array;
  perm: Permutations | null;
  n: number;
  /** Values per patch. */
  size: number;
  /** The scheduler step on some positions of the latent (MethodContext.advance). */
  advance: NonNullable<MethodContext['advance']>;
  /**
   * The guidance to apply, or null for none; asked once, when the first unit is in (the key reference of the step
   * before is set by then: it is built right after this step's units are handed over, in the same turn).
   */
  guidance(): StepGuidance | null;
  /** Guided outputs [N, C, p_h, p_w] go here. */
  eps: Float32Array;
  /** The patches after the step [N, C, p_h, p_w] go here. */
  next: Float32Array;
}

export class BarrierStep {
  private readonly taken: Uint8Array;
  private left: number;
  private guidance: StepGuidance | null | undefined;
  /** The positions of the unit being taken, in the patches' layout. */
  private readonly at: Int32Array;

  constructor(private readonly s: BarrierStepSetup) {
    this.taken = new Uint8Array(s.n);
    this.left = s.n;
    this.at = new Int32Array(s.size);
  }

  get eps(): Float32Array {
    return this.s.eps;
  }

  get next(): Float32Array {
    return this.s.next;
  }

  /** Every unit is in. */
  get complete(): boolean {
    return this.left === 0;
  }

  /** Unit j's result: guide and step its elements and write them back to their patches (a second call is ignored). */
  take(j: number, result: UnitResult): void {
    const { patches, perm, n, size, step } = this.s;
    if (this.taken[j]) return;
    if (result.output.length !== size) {
      throw new AsgdError(`Unit s1/k${step}/p${j} returned an output of the wrong size`, { kind: 'internal', expected: String(size), received: String(result.output.length) });
    }
    this.taken[j] = 1;
    this.left--;
    if (this.guidance === undefined) this.guidance = this.s.guidance();
    const { eps, next } = this.s;
    guideUnit(result.output, patches, perm, n, j, this.guidance, eps, this.at);
    this.s.advance(step, eps, patches, next, this.at);
  }
}
