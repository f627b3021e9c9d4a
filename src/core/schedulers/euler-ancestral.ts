/**
 * Euler ancestral (diffusers EulerAncestralDiscreteScheduler): an Euler step down to sigma_down, then
 * fresh noise of standard deviation sigma_up, with sigma_down^2 + sigma_up^2 = sigma_next^2.
 * The noise is rng.randn([n]) each step, as diffusers' randn_tensor(model_output.shape).
 */
import type { RandomSource } from '../random/types.ts';
import type { ConfigReader } from './config.ts';
import { checkStep, drawNoise } from './common.ts';
import { sigmaSpaceX0 } from './euler.ts';
import { f32, sqrt32 } from './numeric.ts';
import { buildSigmaSchedule } from './sigma-schedule.ts';
import { SigmaScheduler } from './sigma-scheduler.ts';
import type { SchedulerState, StepResult } from './types.ts';

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
    const k = checkStep(this.name, this.numSteps, state, modelOutput, sample);
    const sigma = this.sigmas[k]!;
    const { up, down } = this.ancestralSigmas(k);
    const dt = f32(down - sigma);
    const x0 = sigmaSpaceX0(this.predictionType, sigma, modelOutput, sample);
    const noise = drawNoise(this.name, rng, sample.length);
    const prev = new Float32Array(sample.length);
    for (let i = 0; i < prev.length; i++) {
      const s = sample[i]!;
      prev[i] = f32(s + f32(f32(f32(s - x0[i]!) / sigma) * dt)) + f32(noise[i]! * up);
    }
    return { prevSample: prev, state: { stepIndex: k + 1, history: [] } };
  }
}
