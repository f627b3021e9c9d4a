/**
 * Euler discrete (diffusers EulerDiscreteScheduler with s_churn = 0; Karras et al. 2022, Algorithm 2):
 * x_{k+1} = x_k + (x_k - x0) / sigma_k * (sigma_{k+1} - sigma_k).
 */
import type { ConfigReader } from './config.ts';
import { checkStep } from './common.ts';
import { f32, sqrt32 } from './numeric.ts';
import { buildSigmaSchedule, type SigmaSchedule } from './sigma-schedule.ts';
import { SigmaScheduler } from './sigma-scheduler.ts';
import type { PredictionType, SchedulerState, StepResult } from './types.ts';

/**
 * x0 prediction in sigma space for a step at `sigma`, per prediction type. Element arithmetic is
 * rounded to float32 after every operation, in diffusers' order, so results follow torch's float32
 * tensors (see numeric.ts).
 */
export function sigmaSpaceX0(
  prediction: PredictionType,
  sigma: number,
  modelOutput: Float32Array,
  sample: Float32Array,
): Float32Array {
  const n = sample.length;
  const x0 = new Float32Array(n);
  if (prediction === 'epsilon') {
    for (let i = 0; i < n; i++) x0[i] = sample[i]! - f32(sigma * modelOutput[i]!);
  } else if (prediction === 'v_prediction') {
    // x0 = -sigma / sqrt(sigma^2 + 1) * v + x / (sigma^2 + 1)
    const s2p1 = f32(f32(sigma * sigma) + 1);
    const cOut = f32(-sigma / sqrt32(s2p1));
    for (let i = 0; i < n; i++) x0[i] = f32(modelOutput[i]! * cOut) + f32(sample[i]! / s2p1);
  } else {
    x0.set(modelOutput);
  }
  return x0;
}

export class EulerScheduler extends SigmaScheduler {
  readonly name = 'euler';

  constructor(reader: ConfigReader, numSteps: number) {
    const prediction = reader.oneOf('prediction_type', ['epsilon', 'v_prediction', 'sample']);
    reader.oneOf('interpolation_type', ['linear']);
    if (prediction === 'v_prediction') reader.oneOf('timestep_type', ['discrete']);
    const plan: SigmaSchedule = buildSigmaSchedule(reader, numSteps, {
      karras: true,
      karrasRangeFromConfig: true,
      finalSigmasType: true,
      rescale: true,
    });
    super(prediction, plan, numSteps);
  }

  step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array): StepResult {
    const k = checkStep(this.name, this.numSteps, state, modelOutput, sample);
    const sigma = this.sigmas[k]!;
    const dt = f32(this.sigmas[k + 1]! - sigma);
    const prev = new Float32Array(sample.length);
    if (this.predictionType === 'epsilon') {
      // The same operations as below with x0 = sample - sigma * eps inlined (no x0 array: this runs on the
      // coordinator between device rounds, on the whole high-resolution latent).
      for (let i = 0; i < prev.length; i++) {
        const s = sample[i]!;
        const x0 = f32(s - f32(sigma * modelOutput[i]!));
        prev[i] = s + f32(f32(f32(s - x0) / sigma) * dt);
      }
      return { prevSample: prev, state: { stepIndex: k + 1, history: [] } };
    }
    const x0 = sigmaSpaceX0(this.predictionType, sigma, modelOutput, sample);
    for (let i = 0; i < prev.length; i++) {
      const s = sample[i]!;
      prev[i] = s + f32(f32(f32(s - x0[i]!) / sigma) * dt);
    }
    return { prevSample: prev, state: { stepIndex: k + 1, history: [] } };
  }
}
