/**
 * How a model output turns into the denoised estimate x0, for the prediction types whose x0 is an affine map
 * of the sample and the output: x0 = (x - sigma * output) / alpha.
 * - epsilon: (alpha, sigma) is the noise level, x = alpha x0 + sigma eps.
 * - flow (velocity v = n - x0, x = (1 - sigma) x0 + sigma n): x0 = x - sigma v, i.e. alpha 1.
 * Structure guidance in x0 space and the denoised previews rely on this. Portable: no Node APIs.
 */
import type { PredictionType, Scheduler } from './types.ts';

/** Prediction types with an x0 map (see outputToX0). */
export const X0_MAPPED: readonly PredictionType[] = ['epsilon', 'flow'];

/** The (alpha, sigma) of x0 = (x - sigma * output) / alpha at this step; undefined for other prediction types. */
export function outputToX0(scheduler: Scheduler, stepIndex: number): { alpha: number; sigma: number } | undefined {
  if (scheduler.predictionType === 'epsilon') return scheduler.noiseLevel(stepIndex);
  if (scheduler.predictionType === 'flow') return { alpha: 1, sigma: scheduler.noiseLevel(stepIndex).sigma };
  return undefined;
}
