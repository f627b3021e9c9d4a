/**
 * Flow matching with an Euler solver (diffusers FlowMatchEulerDiscreteScheduler, the scheduler of
 * Stable Diffusion 3). The sample is a straight line between data and noise, x_t = (1 - sigma) x0 + sigma n,
 * the model predicts the velocity v = n - x0, and one step is x_{k+1} = x_k + (sigma_{k+1} - sigma_k) v.
 *
 * The schedule, as diffusers builds it:
 * - training sigmas t / N for t = N..1 (float32), shifted by sigma' = s sigma / (1 + (s - 1) sigma) unless the
 *   config asks for the dynamic shift; sigma_max / sigma_min are the first and last of them;
 * - inference: timesteps = linspace(N sigma_max, N sigma_min, steps) (float64), sigmas = timesteps / N, then the
 *   shift again (static: the formula above with `shift`; dynamic: e^mu / (e^mu + (1 / sigma - 1)^1), or
 *   mu / (mu + (1 / sigma - 1)) with time_shift_type "linear"), cast to float32; timesteps = sigmas * N in
 *   float32; a final sigma 0 appended.
 * The shift is thus applied twice to sigma_min, as diffusers does. The dynamic shift's mu comes from the
 * image's token count: mu = m * seqLen + b on the line through (base_image_seq_len, base_shift) and
 * (max_image_seq_len, max_shift) (diffusers' calculate_shift in its SD3 and FLUX pipelines).
 * Portable: no Node APIs.
 */
import { invalidArgument } from '../errors.ts';
import { eulerRangeKernel, type EulerCoefficients } from '../kernels/euler-range.ts';
import { checkIndex, checkStep, initialState, stepAll } from './common.ts';
import type { ConfigReader } from './config.ts';
import { f32, linspace } from './numeric.ts';
import { checkNumSteps } from './spacing.ts';
import type { PredictionType, Scheduler, SchedulerState, StepResult } from './types.ts';

export interface FlowMatchOptions {
  /**
   * Number of image tokens of the latent being generated, (h / patch) * (w / patch): needed only when the
   * config sets use_dynamic_shifting.
   */
  imageSeqLen?: number;
}

/** mu of the dynamic shift for `seqLen` image tokens (diffusers' calculate_shift). */
export function dynamicShiftMu(reader: ConfigReader, seqLen: number): number {
  const baseLen = reader.number('base_image_seq_len');
  const maxLen = reader.number('max_image_seq_len');
  const baseShift = reader.number('base_shift');
  const maxShift = reader.number('max_shift');
  if (maxLen === baseLen) {
    throw invalidArgument('scheduler config max_image_seq_len', `a value other than base_image_seq_len (${baseLen})`, maxLen);
  }
  const m = (maxShift - baseShift) / (maxLen - baseLen);
  const b = baseShift - m * baseLen;
  return seqLen * m + b;
}

/** The static shift in float32 (diffusers' __init__ does it on float32 tensors). */
function shift32(shift: number, sigma: number): number {
  return f32(f32(shift * sigma) / f32(1 + f32((shift - 1) * sigma)));
}

export class FlowMatchEulerScheduler implements Scheduler {
  readonly name = 'flow-euler';
  readonly predictionType: PredictionType = 'flow';
  readonly timesteps: readonly number[];
  readonly initNoiseSigma = 1;
  /** float32 sigmas, numSteps + 1 values (the last is 0). */
  readonly sigmas: Float64Array;
  /** mu of the dynamic shift when the config uses it. */
  readonly mu: number | undefined;

  constructor(
    reader: ConfigReader,
    readonly numSteps: number,
    options: FlowMatchOptions = {},
  ) {
    const n = reader.integer('num_train_timesteps', 1);
    checkNumSteps(numSteps, n);
    const shift = reader.number('shift', (v) => Number.isFinite(v) && v > 0, 'a positive number');
    const dynamic = reader.boolean('use_dynamic_shifting');
    for (const flag of ['invert_sigmas', 'use_karras_sigmas', 'use_exponential_sigmas', 'use_beta_sigmas', 'stochastic_sampling']) {
      reader.unsupportedFlag(flag);
    }
    const terminal = reader.raw('shift_terminal');
    if (terminal !== undefined && terminal !== null && terminal !== 0) {
      throw invalidArgument(
        'scheduler config shift_terminal',
        'null (shift_terminal is not implemented for flow-euler)',
        terminal,
        'Set it to null in scheduler/scheduler_config.json.',
      );
    }

    // Training sigmas: only their ends matter for inference.
    const trainSigma = (t: number) => {
      const s = f32(f32(t) / n);
      return dynamic ? s : shift32(shift, s);
    };
    const sigmaMax = trainSigma(n);
    const sigmaMin = trainSigma(1);

    let inference = linspace(sigmaMax * n, sigmaMin * n, numSteps).map((t) => t / n);
    if (dynamic) {
      const seqLen = options.imageSeqLen;
      if (seqLen === undefined || !(seqLen > 0)) {
        throw invalidArgument(
          'imageSeqLen',
          'the number of image tokens (the config sets use_dynamic_shifting, which needs mu)',
          seqLen,
        );
      }
      const mu = dynamicShiftMu(reader, seqLen);
      this.mu = mu;
      const kind = reader.oneOf('time_shift_type', ['exponential', 'linear']);
      const c = kind === 'exponential' ? Math.exp(mu) : mu;
      inference = inference.map((s) => c / (c + (1 / s - 1)));
    } else {
      inference = inference.map((s) => (shift * s) / (1 + (shift - 1) * s));
    }
    const sig = inference.map(f32);
    this.timesteps = sig.map((s) => f32(s * n));
    this.sigmas = Float64Array.from([...sig, 0]);
  }

  initialState(): SchedulerState {
    return initialState();
  }

  /** Flow matching feeds the sample unscaled. */
  inputScale(stepIndex: number): number {
    checkIndex(this.name, stepIndex, this.numSteps);
    return 1;
  }

  /** x_t = (1 - sigma) x0 + sigma n. */
  noiseLevel(stepIndex: number): { alpha: number; sigma: number } {
    checkIndex(this.name, stepIndex, this.numSteps);
    const sigma = this.sigmas[stepIndex]!;
    return { alpha: 1 - sigma, sigma };
  }

  step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array): StepResult {
    const k = checkStep(this.name, this.numSteps, state, modelOutput, sample);
    return { prevSample: stepAll(this, k, modelOutput, sample), state: { stepIndex: k + 1, history: [] } };
  }

  /** The step at `stepIndex` as the WebAssembly kernels take it (kind 3: s + m dt). */
  eulerCoefficients(stepIndex: number): EulerCoefficients {
    const sigma = this.sigmas[stepIndex]!;
    return { kind: 3, sigma, dt: f32(this.sigmas[stepIndex + 1]! - sigma), cOut: 0, s2p1: 0 };
  }

  stepPositions(stepIndex: number, modelOutput: Float32Array, sample: Float32Array, into: Float32Array, at: Int32Array | null): void {
    // Every position: the WebAssembly kernel where there is one (same bits).
    if (at === null && eulerRangeKernel(this.eulerCoefficients(stepIndex), modelOutput, sample, into)) return;
    const dt = f32(this.sigmas[stepIndex + 1]! - this.sigmas[stepIndex]!);
    if (at === null) for (let e = 0; e < sample.length; e++) into[e] = sample[e]! + f32(dt * modelOutput[e]!);
    else {
      for (let k = 0, len = at.length | 0; k < len; k++) {
        const e = at[k]!;
        into[e] = sample[e]! + f32(dt * modelOutput[e]!);
      }
    }
  }
}
