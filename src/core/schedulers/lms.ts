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
import { predictionKind, vScalars, x0Element } from './euler.ts';
import { f32 } from './numeric.ts';
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
    const { cOut, s2p1 } = vScalars(sigma);
    const order = Math.min(k + 1, LMS_ORDER);
    const before = state.history;
    // Coefficients newest first: c0 for this step's derivative, c1 to c3 for the derivatives before, newest first
    // (d1 to d3; the arrays and tests written out: V8 keeps them in registers, where a loop over an array of arrays
    // cost LMS's whole step about a third more).
    const coeff = (c: number) => (c < order ? f32(this.coefficient(order, k, c)) : 0);
    const [c0, c1, c2, c3] = [coeff(0), coeff(1), coeff(2), coeff(3)];
    const none = new Float32Array(0);
    const d1 = order > 1 ? before[before.length - 1]! : none;
    const d2 = order > 2 ? before[before.length - 2]! : none;
    const d3 = order > 3 ? before[before.length - 3]! : none;
    // The history after: the newest LMS_ORDER - 1 derivatives, this step's last; the ones kept move down.
    const after = part.after(Math.min(before.length + 1, LMS_ORDER - 1));
    const shift = before.length + 1 - after.length;
    const kept = after.length - 1;
    const newest = after[kept]!;
    const [to0, to1] = [kept > 0 ? after[0]! : none, kept > 1 ? after[1]! : none];
    const [from0, from1] = [kept > 0 ? before[shift]! : none, kept > 1 ? before[shift + 1]! : none];
    const { io, hx, count } = partIndex(part);
    for (let i = 0; i < count; i++) {
      const a = io === null ? i : io[i]!;
      const p = hx === null ? i : hx[i]!;
      const x = sample[a]!;
      const d = f32(f32(x - x0Element(kind, modelOutput[a]!, x, sigma, cOut, s2p1)) / sigma);
      // 0 + first product, as the float32 tensor of zeros it is added to (a -0 product gives +0).
      let total = 0 + f32(c0 * d);
      if (order > 1) {
        total = f32(total + f32(c1 * d1[p]!));
        if (order > 2) {
          total = f32(total + f32(c2 * d2[p]!));
          if (order > 3) total = f32(total + f32(c3 * d3[p]!));
        }
      }
      if (kept > 0) {
        to0[p] = from0[p]!;
        if (kept > 1) to1[p] = from1[p]!;
      }
      newest[p] = d;
      into[a] = x + total;
    }
    return { stepIndex: k + 1, history: after };
  }
}
