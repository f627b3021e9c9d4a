/**
 * DDIM (diffusers DDIMScheduler, eta = 0, deterministic): sample = sqrt(abar) x0 + sqrt(1 - abar) eps.
 * As in diffusers, the previous timestep is always t - num_train_timesteps // numSteps, whatever the
 * spacing, and a negative one uses final_alpha_cumprod (1 with set_alpha_to_one, else abar_0).
 */
import { eulerRangeKernel, type EulerCoefficients } from '../kernels/euler-range.ts';
import type { ConfigReader } from './config.ts';
import { checkIndex, checkStep, initialState, stepAll } from './common.ts';
import { CumulativeAlphas, integerTimesteps } from './ddpm-schedule.ts';
import { readNoiseSchedule } from './noise-schedule.ts';
import { f32, sqrt32 } from './numeric.ts';
import { checkNumSteps } from './spacing.ts';
import type { PredictionType, Scheduler, SchedulerState, StepResult } from './types.ts';

interface DdimCoefficients {
  /** 0 epsilon, 1 sample, 2 v-prediction. */
  kind: number;
  sa: number;
  sb: number;
  saPrev: number;
  direction: number;
  clip: number | null;
}

/** One element of a DDIM step (eta 0): x0 and eps per prediction type, x0 clipped, then the step to t - stride. */
function ddimElement(c: DdimCoefficients, m: number, s: number): number {
  let x0: number;
  let eps: number;
  if (c.kind === 0) {
    x0 = f32(f32(s - f32(c.sb * m)) / c.sa);
    eps = m;
  } else if (c.kind === 1) {
    x0 = m;
    eps = f32(f32(s - f32(c.sa * x0)) / c.sb);
  } else {
    x0 = f32(f32(c.sa * s) - f32(c.sb * m));
    eps = f32(f32(c.sa * m) + f32(c.sb * s));
  }
  if (c.clip !== null) x0 = Math.min(Math.max(x0, -c.clip), c.clip);
  return f32(c.saPrev * x0) + f32(c.direction * eps);
}

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
    return { prevSample: stepAll(this, k, modelOutput, sample), state: { stepIndex: k + 1, history: [] } };
  }

  private coefficients(stepIndex: number): DdimCoefficients {
    const t = this.timesteps[stepIndex]!;
    const a = this.alphas.at(t);
    const aPrev = this.alphas.at(t - this.stride);
    return {
      kind: this.predictionType === 'epsilon' ? 0 : this.predictionType === 'sample' ? 1 : 2,
      sa: sqrt32(a), sb: sqrt32(f32(1 - a)), saPrev: sqrt32(aPrev), direction: sqrt32(f32(1 - aPrev)), clip: this.clipRange,
    };
  }

  /**
   * The step at `stepIndex` as the WebAssembly kernels take it (kinds 4 to 6 of EulerCoefficients: DDIM is an Euler
   * step of the probability-flow ODE in the scaled sample's space), or null with clip_sample, which they do not take.
   */
  eulerCoefficients(stepIndex: number): EulerCoefficients | null {
    const c = this.coefficients(stepIndex);
    if (c.clip !== null) return null;
    return { kind: 4 + c.kind, sigma: c.sa, dt: c.sb, cOut: c.saPrev, s2p1: c.direction };
  }

  stepPositions(stepIndex: number, modelOutput: Float32Array, sample: Float32Array, into: Float32Array, at: Int32Array | null): void {
    if (at === null) {
      // Every position: the WebAssembly kernel where there is one (same bits).
      const k = this.eulerCoefficients(stepIndex);
      if (k !== null && eulerRangeKernel(k, modelOutput, sample, into)) return;
    }
    const c = this.coefficients(stepIndex);
    // Two loops (every position, or those listed) rather than a choice per element: V8 compiles each tighter.
    if (at === null) {
      for (let e = 0; e < sample.length; e++) into[e] = ddimElement(c, modelOutput[e]!, sample[e]!);
    } else {
      for (let k = 0, len = at.length | 0; k < len; k++) {
        const e = at[k]!;
        into[e] = ddimElement(c, modelOutput[e]!, sample[e]!);
      }
    }
  }
}
