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
import { checkStep, partIndex, stepWhole } from './common.ts';
import { predictionKind, x0Element } from './euler.ts';
import { f32, sqrt32 } from './numeric.ts';
import { buildSigmaSchedule } from './sigma-schedule.ts';
import { SigmaScheduler } from './sigma-scheduler.ts';
import type { LatentPart, SchedulerState, StepResult } from './types.ts';

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
    return stepWhole(this, state, modelOutput, sample);
  }

  /**
   * The step on a part of the latent (Scheduler.stepPart); `step` is this on every position. Per element: the
   * derivative (x - x0) / sigma, then sample + sum(coeff * derivative) over the newest `order` derivatives, each
   * product and partial sum rounded to float32 as diffusers' float32 tensors are.
   */
  stepPart(state: SchedulerState, part: LatentPart): SchedulerState {
    const { modelOutput, sample, into } = part;
    const k = checkStep(this.name, this.numSteps, state, modelOutput, sample);
    const sigma = this.sigmas[k]!;
    const kind = predictionKind(this.predictionType);
    const s2p1 = f32(f32(sigma * sigma) + 1);
    const cOut = f32(-sigma / sqrt32(s2p1));
    const order = Math.min(k + 1, LMS_ORDER);
    const before = state.history;
    // Coefficients newest first: coeffs[0] for this step's derivative, coeffs[c] for before[before.length - c].
    const coeffs = Float64Array.from({ length: order }, (_, c) => f32(this.coefficient(order, k, c)));
    // The history after: the newest LMS_ORDER - 1 derivatives, this step's last.
    const after = part.after(Math.min(before.length + 1, LMS_ORDER - 1));
    const shift = before.length + 1 - after.length;
    const last = after.length - 1;
    const { io, hx, count } = partIndex(part);
    for (let i = 0; i < count; i++) {
      const a = io === null ? i : io[i]!;
      const p = hx === null ? i : hx[i]!;
      const x = sample[a]!;
      const d = f32(f32(x - x0Element(kind, modelOutput[a]!, x, sigma, cOut, s2p1)) / sigma);
      // 0 + first product, as the float32 tensor of zeros it is added to (a -0 product gives +0).
      let total = 0 + f32(coeffs[0]! * d);
      for (let c = 1; c < order; c++) total = f32(total + f32(coeffs[c]! * before[before.length - c]![p]!));
      for (let j = 0; j < last; j++) after[j]![p] = before[j + shift]![p]!;
      after[last]![p] = d;
      into[a] = x + total;
    }
    return { stepIndex: k + 1, history: after };
  }
}
