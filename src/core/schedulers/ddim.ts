/**
 * DDIM (diffusers DDIMScheduler, eta = 0, deterministic): sample = sqrt(abar) x0 + sqrt(1 - abar) eps.
 * As in diffusers, the previous timestep is always t - num_train_timesteps // numSteps, whatever the
 * spacing, and a negative one uses final_alpha_cumprod (1 with set_alpha_to_one, else abar_0).
 */
import type { ConfigReader } from './config.ts';
import { checkIndex, checkStep, initialState } from './common.ts';
import { CumulativeAlphas, integerTimesteps } from './ddpm-schedule.ts';
import { readNoiseSchedule } from './noise-schedule.ts';
import { f32, sqrt32 } from './numeric.ts';
import { checkNumSteps } from './spacing.ts';
import type { PredictionType, Scheduler, SchedulerState, StepResult } from './types.ts';

export class DdimScheduler implements Scheduler {
  readonly name = 'ddim';
  readonly predictionType: PredictionType;
  readonly timesteps: readonly number[];
  readonly numSteps: number;
  readonly initNoiseSigma = 1;
  /** float32 alphas_cumprod over the training timesteps. */
  readonly alphasCumprod: Float64Array;
  readonly finalAlphaCumprod: number;
  private readonly alphas: CumulativeAlphas;
  private readonly stride: number;
  private readonly clipRange: number | null;

  constructor(reader: ConfigReader, numSteps: number) {
    this.predictionType = reader.oneOf('prediction_type', ['epsilon', 'sample', 'v_prediction']);
    reader.unsupportedFlag('thresholding');
    const noise = readNoiseSchedule(reader, true);
    const n = noise.numTrainTimesteps;
    checkNumSteps(numSteps, n);
    this.alphas = new CumulativeAlphas(reader, noise);
    this.alphasCumprod = this.alphas.values;
    this.finalAlphaCumprod = this.alphas.final;
    this.clipRange = reader.boolean('clip_sample')
      ? reader.number('clip_sample_range', (v) => Number.isFinite(v) && v > 0, 'a positive number')
      : null;
    this.timesteps = integerTimesteps(reader, n, numSteps);
    this.numSteps = numSteps;
    this.stride = Math.floor(n / numSteps);
  }

  initialState(): SchedulerState {
    return initialState();
  }

  inputScale(stepIndex: number): number {
    checkIndex(this.name, stepIndex, this.numSteps);
    return 1;
  }

  noiseLevel(stepIndex: number): { alpha: number; sigma: number } {
    checkIndex(this.name, stepIndex, this.numSteps);
    return this.alphas.levelAt(this.timesteps, stepIndex, this.stride);
  }

  step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array): StepResult {
    const k = checkStep(this.name, this.numSteps, state, modelOutput, sample);
    const t = this.timesteps[k]!;
    const a = this.alphas.at(t);
    const aPrev = this.alphas.at(t - this.stride);
    const sa = sqrt32(a);
    const sb = sqrt32(f32(1 - a));
    const saPrev = sqrt32(aPrev);
    const direction = sqrt32(f32(1 - aPrev));
    const clip = this.clipRange;
    const prev = new Float32Array(sample.length);
    for (let i = 0; i < prev.length; i++) {
      const s = sample[i]!;
      const m = modelOutput[i]!;
      let x0: number;
      let eps: number;
      if (this.predictionType === 'epsilon') {
        x0 = f32(f32(s - f32(sb * m)) / sa);
        eps = m;
      } else if (this.predictionType === 'sample') {
        x0 = m;
        eps = f32(f32(s - f32(sa * x0)) / sb);
      } else {
        x0 = f32(f32(sa * s) - f32(sb * m));
        eps = f32(f32(sa * m) + f32(sb * s));
      }
      if (clip !== null) x0 = Math.min(Math.max(x0, -clip), clip);
      prev[i] = f32(saPrev * x0) + f32(direction * eps);
    }
    return { prevSample: prev, state: { stepIndex: k + 1, history: [] } };
  }
}
