/**
 * LMS (diffusers LMSDiscreteScheduler, order 4): linear multistep on the ODE derivative in sigma space.
 * The coefficient of each stored derivative is the integral over [sigma_k, sigma_{k+1}] of its Lagrange
 * basis polynomial through the last `order` sigmas. diffusers integrates with scipy's quad
 * (epsrel 1e-4), which is exact for these polynomials of degree <= 3; we use 4-point Gauss-Legendre,
 * also exact for them.
 *
 * State: history = the previous derivatives the next step reads, newest last, at most 3.
 */
import type { ConfigReader } from './config.ts';
import { checkStep } from './common.ts';
import { sigmaSpaceX0 } from './euler.ts';
import { f32 } from './numeric.ts';
import { buildSigmaSchedule } from './sigma-schedule.ts';
import { SigmaScheduler } from './sigma-scheduler.ts';
import type { SchedulerState, StepResult } from './types.ts';

const LMS_ORDER = 4;

// 4-point Gauss-Legendre nodes and weights on [-1, 1].
const GL_NODES = [-0.8611363115940526, -0.3399810435848563, 0.3399810435848563, 0.8611363115940526];
const GL_WEIGHTS = [0.3478548451374538, 0.6521451548625461, 0.6521451548625461, 0.3478548451374538];

export class LmsScheduler extends SigmaScheduler {
  readonly name = 'lms';
  /** Each position's history is its own (Scheduler.elementwise). */
  readonly elementwise = true;

  constructor(reader: ConfigReader, numSteps: number) {
    const prediction = reader.oneOf('prediction_type', ['epsilon', 'v_prediction', 'sample']);
    const plan = buildSigmaSchedule(reader, numSteps, {
      karras: true,
      karrasRangeFromConfig: false,
      finalSigmasType: false,
      rescale: false,
    });
    super(prediction, plan, numSteps);
  }

  /** Coefficient of the derivative taken `current` steps ago, for step k with `order` derivatives. */
  coefficient(order: number, k: number, current: number): number {
    const s = this.sigmas;
    const basis = (tau: number) => {
      let prod = 1;
      for (let j = 0; j < order; j++) {
        if (j === current) continue;
        prod *= (tau - s[k - j]!) / (s[k - current]! - s[k - j]!);
      }
      return prod;
    };
    const a = s[k]!;
    const b = s[k + 1]!;
    const half = (b - a) / 2;
    const mid = (a + b) / 2;
    let sum = 0;
    for (let i = 0; i < GL_NODES.length; i++) sum += GL_WEIGHTS[i]! * basis(mid + half * GL_NODES[i]!);
    return sum * half;
  }

  step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array): StepResult {
    const k = checkStep(this.name, this.numSteps, state, modelOutput, sample);
    const sigma = this.sigmas[k]!;
    const x0 = sigmaSpaceX0(this.predictionType, sigma, modelOutput, sample);
    const derivative = new Float32Array(sample.length);
    for (let i = 0; i < derivative.length; i++) derivative[i] = f32(sample[i]! - x0[i]!) / sigma;
    const derivatives = [...state.history, derivative].slice(-LMS_ORDER) as Float32Array[];
    const order = Math.min(k + 1, LMS_ORDER);
    // sample + sum(coeff * derivative): each product and partial sum is a float32 tensor in diffusers.
    const total = new Float32Array(sample.length);
    for (let c = 0; c < order; c++) {
      const coeff = f32(this.coefficient(order, k, c));
      const d = derivatives[derivatives.length - 1 - c]!;
      for (let i = 0; i < total.length; i++) total[i] = total[i]! + f32(coeff * d[i]!);
    }
    const prev = new Float32Array(sample.length);
    for (let i = 0; i < prev.length; i++) prev[i] = sample[i]! + total[i]!;
    return { prevSample: prev, state: { stepIndex: k + 1, history: derivatives.slice(-(LMS_ORDER - 1)) } };
  }
}
