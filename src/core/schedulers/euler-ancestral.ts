/**
 * Euler ancestral (diffusers EulerAncestralDiscreteScheduler): an Euler step down to sigma_down, then
 * fresh noise of standard deviation sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2.
 * The noise is rng.randn([n]) each step, as diffusers' randn_tensor(model_output.shape).
 */
import type { RandomSource } from '../random/types.ts';
import type { ConfigReader } from './config.ts';
import type { AncestralCoefficients } from '../kernels/stateful-coefficients.ts';
import { checkIndex, checkStep, partIndex, stepWhole } from './common.ts';
import { predictionKind, vScalars, x0Element } from './euler.ts';
import { f32, sqrt32 } from './numeric.ts';
import { buildSigmaSchedule } from './sigma-schedule.ts';
import { SigmaScheduler } from './sigma-scheduler.ts';
import type { LatentPart, SchedulerState, StepResult } from './types.ts';

export class EulerAncestralScheduler extends SigmaScheduler {
  readonly name = 'euler-ancestral';
  /** Each position by itself, its noise the step's at that position (Scheduler.elementwise). */
  readonly elementwise = true;

  constructor(reader: ConfigReader, numSteps: number) {
    const prediction = reader.oneOf('prediction_type', ['epsilon', 'v_prediction']);
    const plan = buildSigmaSchedule(reader, numSteps, {
      karras: false,
      karrasRangeFromConfig: false,
      finalSigmasType: false,
      rescale: true,
    });
    super(prediction, plan, numSteps);
  }

  /**
   * sigma_up and sigma_down of step k, in float32 as diffusers computes them; but where rounding makes up² exceed
   * to² (a first step from a very large sigma: a cosine-schedule model at 3 or 4 steps), down is 0, not diffusers'
   * sqrt of a negative number, a NaN that would fill the whole latent.
   */
  ancestralSigmas(k: number): { up: number; down: number } {
    const from = this.sigmas[k]!;
    const to = this.sigmas[k + 1]!;
    const from2 = f32(from * from);
    const to2 = f32(to * to);
    const up = sqrt32(f32(f32(to2 * f32(from2 - to2)) / from2));
    const down = sqrt32(Math.max(0, f32(to2 - f32(up * up))));
    return { up, down };
  }

  step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array, rng?: RandomSource): StepResult {
    return stepWhole(this, state, modelOutput, sample, rng);
  }

  /**
   * The step from `state` as the unit kernel takes it (kinds 13 epsilon, 14 v; Scheduler.statefulCoefficients), or null
   * where the kernel would not give stepPart's bits (a sigma that is not a float32 value, or not positive).
   */
  statefulCoefficients(state: SchedulerState): AncestralCoefficients | null {
    checkIndex(this.name, state.stepIndex, this.numSteps - 1);
    const c = this.scalars(state.stepIndex);
    if (!(c.sigma > 0) || f32(c.sigma) !== c.sigma) return null;
    return { ...c, kind: 13 + c.kind, keeps: false };
  }

  /** Step k's scalars: x0Element's (kind 0 epsilon, 1 v; cOut, s2p1), dt = sigma_down - sigma, and sigma_up. */
  private scalars(k: number): { kind: number; sigma: number; dt: number; up: number; cOut: number; s2p1: number } {
    const sigma = this.sigmas[k]!;
    const { up, down } = this.ancestralSigmas(k);
    return { kind: predictionKind(this.predictionType), sigma, dt: f32(down - sigma), up, ...vScalars(sigma) };
  }

  /** The step on a part of the latent (Scheduler.stepPart), the step's noise at the part's positions; `step` is this on every position. */
  stepPart(state: SchedulerState, part: LatentPart): SchedulerState {
    const { modelOutput, sample, into } = part;
    const k = checkStep(this.name, this.numSteps, state, modelOutput, sample);
    const { kind, sigma, dt, up, cOut, s2p1 } = this.scalars(k);
    const noise = part.noise();
    const { io, hx, count } = partIndex(part);
    for (let i = 0; i < count; i++) {
      const a = io === null ? i : io[i]!;
      const s = sample[a]!;
      const x0 = x0Element(kind, modelOutput[a]!, s, sigma, cOut, s2p1);
      into[a] = f32(s + f32(f32(f32(s - x0) / sigma) * dt)) + f32(noise[hx === null ? i : hx[i]!]! * up);
    }
    return { stepIndex: k + 1, history: part.after(0) };
  }
}
