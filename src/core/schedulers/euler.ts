/**
 * Euler discrete (diffusers EulerDiscreteScheduler with s_churn = 0; Karras et al. 2022, Algorithm 2):
 * x_{k+1} = x_k + (x_k - x0) / sigma_k * (sigma_{k+1} - sigma_k).
 */
import type { ConfigReader } from './config.ts';
import { checkStep, stepAll } from './common.ts';
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

/**
 * One element of an Euler step: x0 per prediction type (sigmaSpaceX0's arithmetic; kind 0 epsilon, 1 v, 2 sample),
 * then x + (x - x0) / sigma * dt.
 */
function eulerElement(kind: number, m: number, s: number, sigma: number, dt: number, cOut: number, s2p1: number): number {
  const x0 = kind === 0 ? f32(s - f32(sigma * m)) : kind === 1 ? f32(f32(m * cOut) + f32(s / s2p1)) : m;
  return s + f32(f32(f32(s - x0) / sigma) * dt);
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
    return { prevSample: stepAll(this, k, modelOutput, sample), state: { stepIndex: k + 1, history: [] } };
  }

  stepPositions(stepIndex: number, modelOutput: Float32Array, sample: Float32Array, into: Float32Array, at: Int32Array | null): void {
    const sigma = this.sigmas[stepIndex]!;
    const dt = f32(this.sigmas[stepIndex + 1]! - sigma);
    const kind = this.predictionType === 'epsilon' ? 0 : this.predictionType === 'v_prediction' ? 1 : 2;
    const s2p1 = f32(f32(sigma * sigma) + 1);
    const cOut = f32(-sigma / sqrt32(s2p1));
    // Two loops (every position, or those listed) rather than a choice per element: V8 compiles each tighter.
    if (at === null) {
      for (let e = 0; e < sample.length; e++) into[e] = eulerElement(kind, modelOutput[e]!, sample[e]!, sigma, dt, cOut, s2p1);
    } else {
      for (const e of at) into[e] = eulerElement(kind, modelOutput[e]!, sample[e]!, sigma, dt, cOut, s2p1);
    }
  }

}
