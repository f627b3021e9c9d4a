/**
 * Inference timestep spacings of diffusers ("Common Diffusion Noise Schedules and Sample Steps are
 * Flawed", Table 2): linspace, leading (+ steps_offset), trailing. All lists are in sampling order
 * (descending). Values are float64; each scheduler casts or rounds as its diffusers class does.
 */
import { invalidArgument } from '../errors.ts';
import { arange, linspace, roundHalfEven } from './numeric.ts';

export const TIMESTEP_SPACINGS = ['linspace', 'leading', 'trailing'] as const;
export type TimestepSpacing = (typeof TIMESTEP_SPACINGS)[number];

/** linspace(0, last, count) reversed, not rounded. */
export function linspaceDescending(last: number, count: number): number[] {
  return linspace(0, last, count).reverse();
}

/** (arange(count) * (span // count)) reversed, plus steps_offset. */
export function leadingDescending(span: number, count: number, offset: number): number[] {
  const ratio = Math.floor(span / count);
  const out: number[] = [];
  for (let i = count - 1; i >= 0; i--) out.push(i * ratio + offset);
  return out;
}

/**
 * round(arange(start, 0, -numTrain / count)) - 1 with NumPy's half-to-even rounding.
 *
 * NumPy's float arange sometimes yields count + 1 values (e.g. 61 steps of 1000: the last one is
 * round(~1e-13) - 1 = -1), so diffusers then runs an extra step at timestep -1. We keep the first
 * `count` values, which differs from diffusers only for those step counts.
 */
export function trailingDescending(start: number, numTrain: number, count: number): number[] {
  return arange(start, 0, -numTrain / count)
    .slice(0, count)
    .map((t) => roundHalfEven(t) - 1);
}

/** Checks numSteps: an integer in [1, numTrainTimesteps]. */
export function checkNumSteps(numSteps: number, numTrainTimesteps: number): void {
  if (!Number.isInteger(numSteps) || numSteps < 1 || numSteps > numTrainTimesteps) {
    throw invalidArgument(
      'steps',
      `an integer from 1 to ${numTrainTimesteps} (the model's num_train_timesteps)`,
      numSteps,
      'Pass a whole number of inference steps, e.g. --steps 30.',
    );
  }
}

/** Integer timesteps must index alphas_cumprod: large steps_offset with many steps can overflow. */
export function checkTimestepRange(timesteps: readonly number[], numTrainTimesteps: number): void {
  for (const t of timesteps) {
    if (t < 0 || t > numTrainTimesteps - 1) {
      throw invalidArgument(
        'steps',
        `a step count whose timesteps stay within 0..${numTrainTimesteps - 1}`,
        timesteps.length,
        `Timestep ${t} is out of range (steps_offset pushes the last one past the end); use fewer steps.`,
      );
    }
  }
}
