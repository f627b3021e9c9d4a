/**
 * DPM-Solver++ multistep (diffusers DPMSolverMultistepScheduler, algorithm_type "dpmsolver++",
 * solver_order 1 or 2, solver_type midpoint or heun): the "DPM++ 2M" sampler. The sample lives in
 * DDPM space (sample = alpha_t x0 + sigma_t eps, init noise sigma 1, no input scaling); the solver
 * works on x0 predictions and log-SNR lambda = log(alpha_t / sigma_t).
 *
 * State: history = the previous x0 predictions the next step reads (the newest, at most solver_order - 1), extra.lowerOrderNums
 * = how many steps have been taken, capped at solver_order (diffusers' lower_order_nums).
 */
import { invalidArgument } from '../errors.ts';
import type { ConfigReader } from './config.ts';
import { checkIndex, checkStep, initialState, partIndex, stepWhole } from './common.ts';
import { alphasCumprod, readNoiseSchedule, trainingSigmas } from './noise-schedule.ts';
import { predictionKind } from './euler.ts';
import type { DpmCoefficients } from '../kernels/stateful-coefficients.ts';
import { exp32, f32, log32, roundHalfEven, sqrt32 } from './numeric.ts';
import { optionalPositive } from './sigma-schedule.ts';
import { karrasSigmas, sigmaToT } from './sigmas.ts';
import {
  TIMESTEP_SPACINGS,
  checkNumSteps,
  checkTimestepRange,
  leadingDescending,
  linspaceDescending,
  trailingDescending,
} from './spacing.ts';
import type { LatentPart, PredictionType, Scheduler, SchedulerState, StepResult } from './types.ts';

/** diffusers' _sigma_to_alpha_sigma_t in float32: alpha = 1 / sqrt(sigma^2 + 1), sigma_t = sigma alpha. */
export function alphaSigma(sigma: number): { alpha: number; sigma: number } {
  const alpha = f32(1 / sqrt32(f32(f32(sigma * sigma) + 1)));
  return { alpha, sigma: f32(sigma * alpha) };
}

function lambdaOf(p: { alpha: number; sigma: number }): number {
  return f32(log32(p.alpha) - log32(p.sigma));
}

/**
 * The x0 prediction of element i of a part (diffusers' convert_model_output for dpmsolver++), stored as float32 in
 * x0s[i]: kind 0 epsilon (x - sigma m) / alpha, 1 v alpha x - sigma m, 2 sample m; the model output and sample read at
 * io[i] (at i where io is null). A loop per kind and index mode: V8 compiles each tight (one loop with the choices
 * inside took 1.7x as long for the whole latent here).
 */
function x0Pass(kind: number, m: Float32Array, x: Float32Array, io: Int32Array | null, x0s: Float32Array, alpha: number, sigma: number): void {
  const n = x0s.length;
  if (io === null) {
    if (kind === 0) for (let i = 0; i < n; i++) x0s[i] = f32(x[i]! - f32(sigma * m[i]!)) / alpha;
    else if (kind === 1) for (let i = 0; i < n; i++) x0s[i] = f32(alpha * x[i]!) - f32(sigma * m[i]!);
    else x0s.set(m.subarray(0, n));
  } else if (kind === 0) {
    for (let i = 0; i < n; i++) x0s[i] = f32(x[io[i]!]! - f32(sigma * m[io[i]!]!)) / alpha;
  } else if (kind === 1) {
    for (let i = 0; i < n; i++) x0s[i] = f32(alpha * x[io[i]!]!) - f32(sigma * m[io[i]!]!);
  } else {
    for (let i = 0; i < n; i++) x0s[i] = m[io[i]!]!;
  }
}

/**
 * The update of element i of a part from its x0 prediction x0s[i]: first order ratio x - c0 x0; second order adds
 * c1 D1, D1 = (x0 - m1) / r0 with m1 the x0 prediction of the step before. Each operation rounded as diffusers'
 * float32 tensors are; the last rounding is the store's. The sample and `into` at io[i], the history at hx[i] (i
 * where null; `kept`, the history after, gets x0 there unless the caller wrote it). Written out in each loop: V8
 * did not inline a helper here (the whole latent's step took 1.25x as long).
 */
function updatePass(x: Float32Array, x0s: Float32Array, m1: Float32Array | null, io: Int32Array | null, hx: Int32Array | null, into: Float32Array, kept: Float32Array | null, ratio: number, c0: number, c1: number, invR0: number): void {
  const n = x0s.length;
  if (io === null && hx === null) {
    if (m1 !== null) {
      for (let i = 0; i < n; i++) into[i] = f32(f32(ratio * x[i]!) - f32(c0 * x0s[i]!)) + f32(c1 * f32(invR0 * f32(x0s[i]! - m1[i]!)));
    } else {
      for (let i = 0; i < n; i++) into[i] = f32(ratio * x[i]!) - f32(c0 * x0s[i]!);
    }
    return;
  }
  for (let i = 0; i < n; i++) {
    const a = io === null ? i : io[i]!;
    const p = hx === null ? i : hx[i]!;
    const x0 = x0s[i]!;
    into[a] = m1 !== null ? f32(f32(ratio * x[a]!) - f32(c0 * x0)) + f32(c1 * f32(invR0 * f32(x0 - m1[p]!))) : f32(ratio * x[a]!) - f32(c0 * x0);
    if (kept !== null) kept[p] = x0;
  }
}

export class DpmSolverMultistepScheduler implements Scheduler {
  readonly name = 'dpmpp-2m';
  /** Each position's history is its own (Scheduler.elementwise). */
  readonly elementwise = true;
  readonly predictionType: PredictionType;
  readonly timesteps: readonly number[];
  readonly numSteps: number;
  readonly initNoiseSigma = 1;
  /** float32 sigmas (sqrt((1 - abar) / abar) at each step), numSteps + 1 values. */
  readonly sigmas: Float64Array;
  readonly solverOrder: 1 | 2;
  readonly solverType: 'midpoint' | 'heun';
  private readonly lowerOrderFinal: boolean;
  private readonly eulerAtFinal: boolean;
  private readonly finalSigmaZero: boolean;
  /** A part's x0 predictions, reused from call to call (a call uses it only until it returns; no state is kept in it). */
  private scratch = new Float32Array(0);

  constructor(reader: ConfigReader, numSteps: number) {
    this.predictionType = reader.oneOf('prediction_type', ['epsilon', 'sample', 'v_prediction']);
    reader.oneOf('algorithm_type', ['dpmsolver++']);
    const order = reader.raw('solver_order');
    if (order !== 1 && order !== 2) {
      throw invalidArgument(
        'scheduler config solver_order',
        '1 or 2 (for dpmpp-2m)',
        order,
        'Set solver_order to 2 in scheduler/scheduler_config.json.',
      );
    }
    this.solverOrder = order;
    // diffusers maps the UniPC / DEIS solver types to midpoint.
    const type = reader.oneOf('solver_type', ['midpoint', 'heun', 'logrho', 'bh1', 'bh2']);
    this.solverType = type === 'heun' ? 'heun' : 'midpoint';
    reader.unsupportedFlag('thresholding');
    reader.unsupportedFlag('use_exponential_sigmas');
    reader.unsupportedFlag('use_beta_sigmas');
    reader.unsupportedFlag('use_lu_lambdas');
    reader.unsupportedFlag('use_flow_sigmas');
    reader.unsupportedFlag('use_dynamic_shifting');
    const variance = reader.raw('variance_type');
    if (variance !== undefined && variance !== null) {
      throw invalidArgument('scheduler config variance_type', 'null (learned variance is not implemented)', variance);
    }
    const clipped = reader.raw('lambda_min_clipped');
    if (clipped !== undefined && clipped !== null && clipped !== -Infinity) {
      throw invalidArgument('scheduler config lambda_min_clipped', 'null or -Infinity (no clipping)', clipped);
    }
    this.lowerOrderFinal = reader.boolean('lower_order_final');
    this.eulerAtFinal = reader.boolean('euler_at_final');
    this.finalSigmaZero = reader.oneOf('final_sigmas_type', ['zero', 'sigma_min']) === 'zero';

    const noise = readNoiseSchedule(reader, true);
    const n = noise.numTrainTimesteps;
    checkNumSteps(numSteps, n);
    const abar = alphasCumprod(noise);
    if (noise.rescaleBetasZeroSnr) abar[n - 1] = 2 ** -24;
    const train = trainingSigmas(abar);

    const spacing = reader.oneOf('timestep_spacing', TIMESTEP_SPACINGS);
    const offset = reader.integer('steps_offset', 0);
    let timesteps: number[];
    // linspace and leading lay out numSteps + 1 points and drop the last (t = 0 before the offset).
    if (spacing === 'linspace') {
      timesteps = linspaceDescending(n - 1, numSteps + 1)
        .map(roundHalfEven)
        .slice(0, -1);
    } else if (spacing === 'leading') timesteps = leadingDescending(n, numSteps + 1, offset).slice(0, -1);
    else timesteps = trailingDescending(n, n, numSteps);
    checkTimestepRange(timesteps, n);

    let sig: number[];
    if (reader.boolean('use_karras_sigmas')) {
      const lo = optionalPositive(reader, 'sigma_min') ?? train[0]!;
      const hi = optionalPositive(reader, 'sigma_max') ?? train[n - 1]!;
      sig = karrasSigmas(lo, hi, numSteps);
      const logSigmas = train.map(log32);
      const cosine = noise.betaSchedule === 'squaredcos_cap_v2';
      // Rounded (half to even) except for squaredcos_cap_v2, where torch's int64 cast truncates.
      timesteps = sig.map((s) => sigmaToT(s, logSigmas)).map((t) => (cosine ? Math.trunc(t) : roundHalfEven(t)));
    } else {
      sig = timesteps.map((t) => train[t]!);
    }
    const last = this.finalSigmaZero ? 0 : train[0]!;
    this.sigmas = Float64Array.from([...sig, last], f32);
    this.timesteps = timesteps;
    this.numSteps = timesteps.length;
  }

  initialState(): SchedulerState {
    return { ...initialState(), extra: { lowerOrderNums: 0 } };
  }

  inputScale(stepIndex: number): number {
    checkIndex(this.name, stepIndex, this.numSteps);
    return 1;
  }

  noiseLevel(stepIndex: number): { alpha: number; sigma: number } {
    checkIndex(this.name, stepIndex, this.numSteps);
    return alphaSigma(this.sigmas[stepIndex]!);
  }

  step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array): StepResult {
    return stepWhole(this, state, modelOutput, sample);
  }

  /**
   * The step on a part of the latent (Scheduler.stepPart); `step` is this on every position. Per element: diffusers'
   * convert_model_output for dpmsolver++ (the x0 prediction, stored as float32), then the first- or second-order update.
   */
  /**
   * The scalars of the step from `state` (diffusers' multistep_dpm_solver_first/second_order_update in float32): the
   * update is ratio x - c0 x0, plus c1 D1 at second order, D1 = invR0 (x0 - x0 of the step before); midpoint's c1 is
   * -0.5 c0, heun's alpha_t ((exp(-h) - 1) / h + 1).
   */
  private scalars(state: SchedulerState): { k: number; second: boolean; alpha: number; sigma: number; ratio: number; c0: number; c1: number; invR0: number; extra: Record<string, number> } {
    const k = state.stepIndex;
    const lowerOrderNums = state.extra?.lowerOrderNums ?? 0;
    const n = this.numSteps;
    const lowerOrderFinal =
      k === n - 1 && (this.eulerAtFinal || (this.lowerOrderFinal && n < 15) || this.finalSigmaZero);
    const t = alphaSigma(this.sigmas[k + 1]!);
    const s0 = alphaSigma(this.sigmas[k]!);
    const lambdaT = lambdaOf(t);
    const lambdaS0 = lambdaOf(s0);
    const h = f32(lambdaT - lambdaS0);
    const ratio = f32(t.sigma / s0.sigma);
    const expm1 = f32(exp32(-h) - 1);
    const c0 = f32(t.alpha * expm1);
    const second = !(this.solverOrder === 1 || lowerOrderNums < 1 || lowerOrderFinal);
    let invR0 = 0;
    let c1 = 0;
    if (second) {
      const s1 = alphaSigma(this.sigmas[k - 1]!);
      const h0 = f32(lambdaS0 - lambdaOf(s1));
      invR0 = f32(1 / f32(h0 / h));
      c1 = this.solverType === 'midpoint' ? -f32(0.5 * c0) : f32(t.alpha * f32(f32(expm1 / h) + 1));
    }
    const extra = { lowerOrderNums: Math.min(lowerOrderNums + 1, this.solverOrder) };
    return { k, second, alpha: s0.alpha, sigma: s0.sigma, ratio, c0, c1, invR0, extra };
  }

  statefulCoefficients(state: SchedulerState): DpmCoefficients {
    checkIndex(this.name, state.stepIndex, this.numSteps - 1);
    const { second, alpha, sigma, ratio, c0, c1, invR0, extra } = this.scalars(state);
    return { kind: 7 + predictionKind(this.predictionType) + (second ? 3 : 0), alpha, sigma, ratio, c0, c1, invR0, keeps: this.solverOrder === 2, extra };
  }

  stepPart(state: SchedulerState, part: LatentPart): SchedulerState {
    const { modelOutput, sample, into } = part;
    checkStep(this.name, this.numSteps, state, modelOutput, sample);
    const { k, second, alpha, sigma, ratio, c0, c1, invR0, extra } = this.scalars(state);
    const m1 = second ? state.history[state.history.length - 1]! : null;
    // The history after: the newest x0 prediction where the solver is of order 2.
    const after = part.after(this.solverOrder - 1);
    const kept = after.length > 0 ? after[0]! : null;
    const { io, hx, count } = partIndex(part);
    // The x0 predictions first (straight into the history after where the part is the whole latent), then the update.
    const whole = io === null && hx === null;
    if (this.scratch.length < count && !(whole && kept !== null)) this.scratch = new Float32Array(count);
    const x0s = whole && kept !== null ? kept : this.scratch.subarray(0, count);
    x0Pass(predictionKind(this.predictionType), modelOutput, sample, io, x0s, alpha, sigma);
    updatePass(sample, x0s, m1, io, hx, into, whole ? null : kept, ratio, c0, c1, invR0);
    return { stepIndex: k + 1, history: after, extra };
  }
}

