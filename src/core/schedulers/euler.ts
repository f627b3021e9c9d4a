/**
 * Euler discrete (diffusers EulerDiscreteScheduler with s_churn = 0; Karras et al. 2022, Algorithm 2):
 * x_{k+1} = x_k + (x_k - x0) / sigma_k * (sigma_{k+1} - sigma_k).
 */
import { eulerRangeKernel, type EulerCoefficients } from '../kernels/euler-range.ts';
import type { ConfigReader } from './config.ts';
import { checkStep, stepAll } from './common.ts';
import { f32, sqrt32 } from './numeric.ts';
import { buildSigmaSchedule, type SigmaSchedule } from './sigma-schedule.ts';
import { SigmaScheduler } from './sigma-scheduler.ts';
import type { PredictionType, SchedulerState, StepResult } from './types.ts';

/** The prediction type as x0Element takes it: 0 epsilon, 1 v, 2 sample. */
export function predictionKind(prediction: PredictionType): number {
  return prediction === 'epsilon' ? 0 : prediction === 'v_prediction' ? 1 : 2;
}

/**
 * One element's x0 prediction in sigma space, rounded to float32 after every operation, in diffusers' order; for v,
 * x0 = cOut * v + x / s2p1 with s2p1 = sigma^2 + 1 and cOut = -sigma / sqrt(s2p1). Plain numbers, not an object of
 * them: V8 then keeps them in registers through the loops that call it.
 */
export function x0Element(kind: number, m: number, s: number, sigma: number, cOut: number, s2p1: number): number {
  return kind === 0 ? f32(s - f32(sigma * m)) : kind === 1 ? f32(f32(m * cOut) + f32(s / s2p1)) : m;
}

/** x0Element's scalars for v prediction at `sigma`: cOut = -sigma / sqrt(s2p1), s2p1 = sigma^2 + 1, in float32. */
export function vScalars(sigma: number): { cOut: number; s2p1: number } {
  const s2p1 = f32(f32(sigma * sigma) + 1);
  return { cOut: f32(-sigma / sqrt32(s2p1)), s2p1 };
}

/** One element of an Euler step: x + (x - x0) / sigma * dt. */
function eulerElement(kind: number, m: number, s: number, sigma: number, dt: number, cOut: number, s2p1: number): number {
  return s + f32(f32(f32(s - x0Element(kind, m, s, sigma, cOut, s2p1)) / sigma) * dt);
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

  /**
   * The step at `stepIndex` as the WebAssembly kernels take it, or null where a kernel would not give the bits of
   * eulerElement (a sigma that is not a float32 value, or not positive).
   */
  eulerCoefficients(stepIndex: number): EulerCoefficients | null {
    const sigma = this.sigmas[stepIndex]!;
    if (!(sigma > 0) || f32(sigma) !== sigma) return null;
    return { kind: predictionKind(this.predictionType), sigma, dt: f32(this.sigmas[stepIndex + 1]! - sigma), ...vScalars(sigma) };
  }

  stepPositions(stepIndex: number, modelOutput: Float32Array, sample: Float32Array, into: Float32Array, at: Int32Array | null): void {
    if (at === null) {
      // Every position: the WebAssembly kernel where there is one (same bits, about 4x faster with its copies).
      const c = this.eulerCoefficients(stepIndex);
      if (c !== null && eulerRangeKernel(c, modelOutput, sample, into)) return;
    }
    const sigma = this.sigmas[stepIndex]!;
    const dt = f32(this.sigmas[stepIndex + 1]! - sigma);
    const kind = predictionKind(this.predictionType);
    const { cOut, s2p1 } = vScalars(sigma);
    // Two loops (every position, or those listed) rather than a choice per element: V8 compiles each tighter; an
    // index loop over the list, not for-of (12 % faster here).
    if (at === null) {
      for (let e = 0; e < sample.length; e++) into[e] = eulerElement(kind, modelOutput[e]!, sample[e]!, sigma, dt, cOut, s2p1);
    } else {
      for (let k = 0, len = at.length | 0; k < len; k++) {
        const e = at[k]!;
        into[e] = eulerElement(kind, modelOutput[e]!, sample[e]!, sigma, dt, cOut, s2p1);
      }
    }
  }

}
