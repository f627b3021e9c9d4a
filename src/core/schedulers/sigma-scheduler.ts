/**
 * What the sigma-space schedulers (Euler, Euler ancestral, LMS) share: the plan from buildSigmaSchedule,
 * the explicit initial state, the model-input scale 1/sqrt(sigma^2 + 1) and the noise level (alpha 1, sigma).
 * Subclasses add their step.
 */
import type { RandomSource } from '../random/types.ts';
import { checkIndex, initialState } from './common.ts';
import { sigmaInputScale, type SigmaSchedule } from './sigma-schedule.ts';
import type { PredictionType, Scheduler, SchedulerState, StepResult } from './types.ts';

export abstract class SigmaScheduler implements Scheduler {
  abstract readonly name: string;
  readonly timesteps: readonly number[];
  readonly initNoiseSigma: number;
  /** float32 sigmas, numSteps + 1 values. */
  readonly sigmas: Float64Array;

  constructor(
    readonly predictionType: PredictionType,
    plan: SigmaSchedule,
    readonly numSteps: number,
  ) {
    this.timesteps = plan.timesteps;
    this.sigmas = plan.sigmas;
    this.initNoiseSigma = plan.initNoiseSigma;
  }

  initialState(): SchedulerState {
    return initialState();
  }

  inputScale(stepIndex: number): number {
    checkIndex(this.name, stepIndex, this.numSteps);
    return sigmaInputScale(this.sigmas[stepIndex]!);
  }

  noiseLevel(stepIndex: number): { alpha: number; sigma: number } {
    checkIndex(this.name, stepIndex, this.numSteps);
    return { alpha: 1, sigma: this.sigmas[stepIndex]! };
  }

  abstract step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array, rng?: RandomSource): StepResult;
}
