/**
 * Part-of-the-latent steps for a scheduler that keeps a history (`Scheduler.elementwise`: DPM-Solver++, LMS, PNDM) or
 * draws noise for the whole latent each step (Euler ancestral). Every position's history is its own, so positions may
 * be at different steps (stage-1 patches running ahead of each other, stage-2 tiles of two steps), and the latent
 * stepped in parts is bit for bit the whole step's. The state before each step is kept as whole-latent arrays, filled
 * in as the parts of the step before come in, until the denoise loop has taken that step. A scheduler that offers
 * `stepPart` reads and writes those arrays in place; another (PNDM) is given the history cut to the part's positions
 * by its own `step`, and the history it returns is written back there. Noise (Euler ancestral: rng.randn of the whole
 * sample each step) is the whole step's, drawn from the generation's stream when the step's first part comes (steps
 * begin in order, so the stream is read as the whole steps read it), at the part's positions. Portable: no Node APIs.
 */
import { AsgdError } from '../errors.ts';
import type { RandomSource } from '../random/types.ts';
import type { StatefulKernelStep } from '../kernels/stateful-coefficients.ts';
import type { LatentPart, Scheduler, SchedulerState, StepResult } from './types.ts';

interface StepState {
  state: SchedulerState;
  /** Positions whose history is not written yet (0 for a state a whole step made). */
  left: number;
}

const internal = (message: string) => new AsgdError(message, { kind: 'internal' });

/** whole[where[i]] for every i, into `part` (at least where.length long) from its start. */
function gather(whole: Float32Array, where: Int32Array, part: Float32Array): Float32Array {
  for (let i = 0, n = where.length; i < n; i++) part[i] = whole[where[i]!]!;
  return part.length === where.length ? part : part.subarray(0, where.length);
}

function scatter(part: Float32Array, where: Int32Array, whole: Float32Array): void {
  for (let i = 0, n = where.length; i < n; i++) whole[where[i]!] = part[i]!;
}

function sameExtra(a: SchedulerState['extra'], b: SchedulerState['extra']): boolean {
  const ka = Object.keys(a ?? {});
  return ka.length === Object.keys(b ?? {}).length && ka.every((k) => Object.is(a![k], b?.[k]));
}

export class PartStepper {
  /** The state before step k, by k. */
  private readonly states = new Map<number, StepState>();
  /** Gathered parts: the model output, the sample, then the history arrays. */
  private readonly buffers: Float32Array[] = [];
  /** The whole latent's noise of each step begun, for a scheduler that draws it. */
  private readonly noise = new Map<number, Float32Array>();

  constructor(
    private readonly scheduler: Scheduler,
    private readonly length: number,
    initial: SchedulerState,
    private readonly rng?: RandomSource,
  ) {
    this.states.set(initial.stepIndex, { state: initial, left: 0 });
  }

  /** The whole latent's noise at `step`, drawn when first asked for. */
  private wholeNoise(step: number): Float32Array {
    let whole = this.noise.get(step);
    if (whole === undefined) {
      if (this.rng === undefined) throw internal(`The ${this.scheduler.name} scheduler draws noise but the part stepper was given no random source`);
      whole = this.rng.randn([this.length]);
      this.noise.set(step, whole);
    }
    return whole;
  }

  /** What `step` draws its noise from at `step` for the positions `where` (null: all): that step's noise there. */
  private noiseSource(step: number, where: Int32Array | null): RandomSource {
    const refuse = () => {
      throw internal(`The ${this.scheduler.name} scheduler drew other than one normal value per position in a part of the latent`);
    };
    return {
      randn: (shape) => {
        const count = shape.reduce((a, b) => a * b, 1);
        if (count !== (where?.length ?? this.length)) refuse();
        const whole = this.wholeNoise(step);
        return where === null ? Float32Array.from(whole) : gather(whole, where, new Float32Array(where.length));
      },
      randint: refuse,
      uniform: refuse,
    };
  }

  /**
   * Step `step` of some positions into `into`: those `at` lists, where the arrays are the whole latent; or, with
   * `positions`, every element of `modelOutput`, `sample` and `into` (one part, compact), element i lying at
   * position positions[i] of the latent; with neither, the whole latent. Each position once per step, in step order.
   */
  step(step: number, modelOutput: Float32Array, sample: Float32Array, into: Float32Array, at: Int32Array | null, positions: Int32Array | null): void {
    const before = this.states.get(step);
    if (before === undefined) throw internal(`A part of the latent was stepped at step ${step} before the step ahead of it had begun`);
    const where = positions ?? at;
    if (where === null) {
      const r = this.scheduler.step(before.state, modelOutput, sample, this.noiseSource(step, null));
      into.set(r.prevSample);
      this.states.set(step + 1, { state: r.state, left: 0 });
      return;
    }
    if (this.scheduler.stepPart !== undefined) {
      this.stepInPlace(step, before.state, { modelOutput, sample, into, at, positions }, where.length);
      return;
    }
    // The gathered arrays are scratch, reused from call to call: the step's result is scattered before the next.
    const history = before.state.history;
    const cut: Float32Array[] = [];
    for (let j = 0; j < history.length; j++) cut.push(gather(history[j]!, where, this.scratch(j + 2, where.length)));
    const part: SchedulerState = { ...before.state, history: cut };
    const noise = this.noiseSource(step, where);
    const r = positions
      ? this.scheduler.step(part, modelOutput, sample, noise)
      : this.scheduler.step(part, gather(modelOutput, where, this.scratch(0, where.length)), gather(sample, where, this.scratch(1, where.length)), noise);
    if (positions) into.set(r.prevSample);
    else scatter(r.prevSample, where, into);
    let after = this.states.get(step + 1);
    if (after === undefined) {
      const made: Float32Array[] = [];
      for (let j = 0; j < r.state.history.length; j++) made.push(new Float32Array(this.length));
      after = { state: { ...r.state, history: made }, left: this.length };
      this.states.set(step + 1, after);
    } else if (after.state.history.length !== r.state.history.length || !sameExtra(after.state.extra, r.state.extra)) {
      throw internal(`The ${this.scheduler.name} scheduler's state after step ${step} differs between parts of the latent: its step is not elementwise`);
    }
    for (let j = 0; j < r.state.history.length; j++) scatter(r.state.history[j]!, where, after.state.history[j] as Float32Array);
    after.left -= where.length;
  }

  /** A part stepped by the scheduler's stepPart, the history read from the state before and written to the state after. */
  private stepInPlace(step: number, before: SchedulerState, part: Omit<LatentPart, 'after' | 'noise'>, count: number): void {
    let after = this.states.get(step + 1);
    const differs = () => internal(`The ${this.scheduler.name} scheduler's state after step ${step} differs between parts of the latent: its step is not elementwise`);
    let made: Float32Array[] | undefined;
    const next = this.scheduler.stepPart!(before, {
      ...part,
      noise: () => this.wholeNoise(step),
      after: (n) => {
        if (after === undefined) return (made = Array.from({ length: n }, () => new Float32Array(this.length)));
        if (after.state.history.length !== n) throw differs();
        return after.state.history as Float32Array[];
      },
    });
    if (after === undefined) {
      if (made === undefined || next.history !== made) throw internal(`The ${this.scheduler.name} scheduler's stepPart returned a history other than the arrays it was given`);
      after = { state: next, left: this.length };
      this.states.set(step + 1, after);
    } else if (next.history !== after.state.history || !sameExtra(after.state.extra, next.extra)) {
      throw differs();
    }
    after.left -= count;
  }

  private scratch(slot: number, length: number): Float32Array {
    const b = this.buffers[slot];
    if (b !== undefined && b.length >= length) return b;
    return (this.buffers[slot] = new Float32Array(Math.max(length, 2 * (b?.length ?? 0))));
  }

  /**
   * The loop's own whole-latent step (where no method stepped `step`): the scheduler's, whose state the parts go on
   * from (its noise the step's, drawn now unless a part drew it).
   */
  stepAll(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array): StepResult {
    const r = this.scheduler.step(state, modelOutput, sample, this.noiseSource(state.stepIndex, null));
    this.states.set(state.stepIndex + 1, { state: r.state, left: 0 });
    return r;
  }

  /**
   * For the kernels (Scheduler.statefulCoefficients): step `step` of every position taken in one go elsewhere, from the
   * state before it, reading the history it reads (DPM-Solver++) or the step's noise (Euler ancestral: drawn now, in
   * the stream's order, unless a part drew it); `commit` records the history after it as the state after (no
   * position may have stepped it in parts). Null where the scheduler has no kernel form of that step.
   */
  statefulStep(step: number): StatefulKernelStep | null {
    const before = this.states.get(step);
    if (before === undefined) throw internal(`The latent was stepped at step ${step} before the step ahead of it had begun`);
    const coefficients = this.scheduler.statefulCoefficients?.(before.state) ?? null;
    if (coefficients === null) return null;
    const history = before.state.history;
    const ancestral = 'up' in coefficients;
    const input = ancestral ? this.wholeNoise(step) : coefficients.kind >= 10 ? (history[history.length - 1] as Float32Array) : null;
    return {
      coefficients,
      input,
      commit: (after) => {
        if (this.states.has(step + 1)) throw internal(`Step ${step} of the latent was taken in the kernels after parts of it had been taken, or twice`);
        if ((after === null) === coefficients.keeps || (after !== null && after.length !== this.length)) {
          throw internal(`The history after step ${step} from the kernels is not what the ${this.scheduler.name} scheduler keeps`);
        }
        const state: SchedulerState = { stepIndex: step + 1, history: after === null ? [] : [after], ...(ancestral ? {} : { extra: coefficients.extra }) };
        this.states.set(step + 1, { state, left: 0 });
      },
    };
  }

  /** The state after `step` once every position has taken it in parts. */
  stateAfter(step: number): SchedulerState {
    const after = this.states.get(step + 1);
    if (after === undefined || after.left !== 0) {
      const left = after === undefined ? this.length : after.left;
      throw internal(`The latent after step ${step} was taken with ${left} of ${this.length} positions not stepped once`);
    }
    return after.state;
  }

  /** Drops the state before `step`: the loop has taken that step. */
  release(step: number): void {
    this.states.delete(step);
    this.noise.delete(step);
  }
}
