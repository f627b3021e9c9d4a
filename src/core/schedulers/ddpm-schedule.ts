/**
 * The schedule maths DDIM and PNDM share (both are diffusers' DDPM-type classes): integer timesteps by spacing,
 * float32 alphas_cumprod, and the alpha of the step after the last (final_alpha_cumprod).
 */
import type { ConfigReader } from './config.ts';
import { alphasCumprod, type NoiseScheduleConfig } from './noise-schedule.ts';
import { f32, roundHalfEven, sqrt32 } from './numeric.ts';
import { TIMESTEP_SPACINGS, checkTimestepRange, leadingDescending, linspaceDescending, trailingDescending } from './spacing.ts';

/** Integer timesteps, descending. `linspace` rounds half to even as NumPy does. */
export function integerTimesteps(reader: ConfigReader, numTrain: number, numSteps: number): number[] {
  const spacing = reader.oneOf('timestep_spacing', TIMESTEP_SPACINGS);
  const offset = reader.integer('steps_offset', 0);
  let ts: number[];
  if (spacing === 'linspace') ts = linspaceDescending(numTrain - 1, numSteps).map(roundHalfEven);
  else if (spacing === 'leading') ts = leadingDescending(numTrain, numSteps, offset);
  else ts = trailingDescending(numTrain, numTrain, numSteps);
  checkTimestepRange(ts, numTrain);
  return ts;
}

/** alphas_cumprod over the training timesteps, and abar(t) with t < 0 meaning final_alpha_cumprod. */
export class CumulativeAlphas {
  readonly values: Float64Array;
  /** 1 with set_alpha_to_one, else abar_0. */
  readonly final: number;

  constructor(reader: ConfigReader, noise: NoiseScheduleConfig) {
    this.values = alphasCumprod(noise);
    this.final = reader.boolean('set_alpha_to_one') ? 1 : this.values[0]!;
  }

  at(t: number): number {
    return t >= 0 ? this.values[t]! : this.final;
  }

  /**
   * The noise level x = alpha x0 + sigma eps (float32) at step `stepIndex` of `timesteps`; `stepIndex` = their count
   * is the level after the last step (its timestep minus `stride`).
   */
  levelAt(timesteps: readonly number[], stepIndex: number, stride: number): { alpha: number; sigma: number } {
    const t = stepIndex < timesteps.length ? timesteps[stepIndex]! : timesteps[timesteps.length - 1]! - stride;
    const a = this.at(t);
    return { alpha: sqrt32(a), sigma: sqrt32(f32(1 - a)) };
  }
}
