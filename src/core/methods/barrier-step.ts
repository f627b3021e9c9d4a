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
import { guideUnit, type StepGuidance, type UnitTarget } from './guidance.ts';
import type { Permutations } from './pixel-interaction.ts';
import type { PatchLayout } from './polyphase.ts';
import type { StatefulKernelStep } from '../kernels/stateful-coefficients.ts';
import type { MethodContext, UnitResult } from './types.ts';
import { UnitKernel } from './unit-kernel.ts';
import type { EulerCoefficients } from '../kernels/euler-range.ts';
import type { KernelMemory } from '../kernels/memory.ts';

export interface BarrierStepSetup {
  step: number;
  /** The patches at this step (not input-scaled), where `layout` puts them (staged.ts: in the latent itself). */
  patches: Float32Array;
  layout: PatchLayout;
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
  /** Guided outputs go here, laid out as the patches. */
  eps: Float32Array;
  /** The patches after the step go here, laid out as before it. */
  next: Float32Array;
  /**
   * Where `advance` is an Euler step (MethodContext.eulerStep) or DPM-Solver++'s or Euler ancestral's
   * (MethodContext.statefulStep) and WebAssembly is there: the memory to take the step in with the kernels
   * (unit-kernel.ts), which the step holds until its last unit is in.
   */
  kernel?: { memory: KernelMemory; step: { euler: EulerCoefficients } | { stateful: StatefulKernelStep }; keyLength?: number };
}

/**
 * Elements of a unit guided, then stepped, at a time: a unit's positions are spread over all N patches (megabytes at
 * SDXL sizes), and in blocks of this size the step reads what the guidance just wrote from the processor's cache
 * (the whole unit per pass: about 1.7x slower for both passes here; 1024 and 16384 were no better than 4096).
 */
export const UNIT_BLOCK = 4096;

export class BarrierStep {
  private readonly taken: Uint8Array;
  private left: number;
  private guidance: StepGuidance | null | undefined;
  /** The positions of the unit being taken, in the patches' layout. */
  private readonly at: Int32Array;
  private readonly target: UnitTarget;
  private readonly kernel: UnitKernel | null;
  /** Every unit is in and the kernel's results are not yet copied out (settle). */
  private unsettled = false;

  constructor(private readonly s: BarrierStepSetup) {
    this.taken = new Uint8Array(s.n);
    this.left = s.n;
    // The kernel reads byte permutations and patch numbers (more than 256 patches keep the TypeScript loops).
    const bytes = s.n <= 256 && (s.perm === null || s.perm instanceof Uint8Array);
    // Where the kernel memory cannot grow to hold the step, the TypeScript loops take it.
    this.kernel = s.kernel && bytes ? UnitKernel.create(s.kernel.memory, { latent: s.patches, layout: s.layout, perm: s.perm as Uint8Array | null, n: s.n, size: s.size, step: s.kernel.step, ...(s.kernel.keyLength === undefined ? {} : { keyLength: s.kernel.keyLength }) }) : null;
    this.at = new Int32Array(this.kernel ? 0 : s.size);
    this.target = {
      latent: s.patches, layout: s.layout, perm: s.perm, n: s.n, eps: s.eps,
      keyLatent: new Float32Array(s.size), keyOutput: new Float32Array(s.size),
    };
  }

  /** The guided outputs, once every unit is in. */
  get eps(): Float32Array {
    this.settle();
    return this.s.eps;
  }

  /** The patches after the step, once every unit is in. */
  get next(): Float32Array {
    this.settle();
    return this.s.next;
  }

  /** The key patch's latent at this step [C, p_h, p_w], once every unit is in. */
  get keyLatent(): Float32Array {
    this.settle();
    return this.target.keyLatent;
  }

  /** The key patch's output at this step [C, p_h, p_w] (never guided), once every unit is in. */
  get keyOutput(): Float32Array {
    this.settle();
    return this.target.keyOutput;
  }

  /**
   * Once every unit is in and before the results are read: the next step's units shuffled from the patches after the
   * step where the kernel holds them (unit-kernel.ts shuffleNext; what pixel-interaction.ts shuffleToUnits gives on
   * `next` with `layout`, which must be this step's), written into `into`; false (nothing written) where the step
   * has no kernel, its results were read already, or `perm` has 16-bit entries. Reading the results copies them out
   * of the kernel's memory: done after the units are on the devices, that copy is not in the devices' way.
   */
  shuffleNext(perm: Permutations | null, scale: number, into: readonly Float32Array[], layout: PatchLayout): boolean {
    if (!this.unsettled || this.kernel === null || layout !== this.s.layout || perm instanceof Uint16Array) return false;
    this.kernel.shuffleNext(perm, scale, into);
    return true;
  }

  /** The kernel's results copied out, once, after the last unit. */
  private settle(): void {
    if (!this.unsettled) return;
    this.unsettled = false;
    this.kernel!.finish(this.s.eps, this.s.next, this.target.keyLatent, this.target.keyOutput);
  }

  /** Every unit is in. */
  get complete(): boolean {
    return this.left === 0;
  }

  /** Unit j's result: guide and step its elements and write them back to their patches (a second call is ignored). */
  take(j: number, result: UnitResult): void {
    const { patches, size, step } = this.s;
    if (this.taken[j]) return;
    if (result.output.length !== size) {
      throw new AsgdError(`Unit s1/k${step}/p${j} returned an output of the wrong size`, { kind: 'internal', expected: String(size), received: String(result.output.length) });
    }
    this.taken[j] = 1;
    this.left--;
    if (this.guidance === undefined) {
      this.guidance = this.s.guidance();
      this.kernel?.guide(this.guidance);
    }
    const { eps, next } = this.s;
    if (this.kernel) {
      this.kernel.take(result.output, j);
      if (this.left === 0) this.unsettled = true;
      return;
    }
    const at = this.at;
    for (let from = 0; from < size; from += UNIT_BLOCK) {
      const to = Math.min(size, from + UNIT_BLOCK);
      guideUnit(result.output, j, this.target, this.guidance, at, from, to);
      this.s.advance(step, eps, patches, next, at.subarray(from, to));
    }
  }
}
