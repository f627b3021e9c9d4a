/**
 * PNDM (diffusers PNDMScheduler; Liu et al. 2022, pseudo numerical methods). With skip_prk_steps (SD 1.x
 * configs) it is PLMS: a linear multistep method on the noise predictions whose second model evaluation
 * repeats the second timestep (50 steps -> 51 evaluations: 981, 961, 961, 941, ...). Without it, the
 * first three steps are pseudo Runge-Kutta (12 evaluations), then PLMS.
 *
 * State: history = [ets..., curSample?, prkAccumulator?], extra = { counter, ets, cur, acc } where ets
 * counts the stored model outputs (at most 4) and cur / acc (0 or 1) say whether the optional arrays
 * follow.
 */
import { invalidArgument } from '../errors.ts';
import type { ConfigReader } from './config.ts';
import { checkIndex, checkStep, initialState } from './common.ts';
import { CumulativeAlphas, integerTimesteps } from './ddpm-schedule.ts';
import { readNoiseSchedule } from './noise-schedule.ts';
import { f32, sqrt32 } from './numeric.ts';
import { checkNumSteps } from './spacing.ts';
import type { PredictionType, Scheduler, SchedulerState, StepResult } from './types.ts';

interface PndmMemory {
  counter: number;
  ets: Float32Array[];
  curSample: Float32Array | null;
  acc: Float32Array | null;
}

function unpack(state: SchedulerState): PndmMemory {
  const e = state.extra ?? {};
  const nEts = e.ets ?? 0;
  const h = state.history;
  let i = nEts;
  const curSample = e.cur ? (h[i++] as Float32Array) : null;
  const acc = e.acc ? (h[i++] as Float32Array) : null;
  return { counter: e.counter ?? 0, ets: h.slice(0, nEts) as Float32Array[], curSample, acc };
}

function pack(stepIndex: number, m: PndmMemory): SchedulerState {
  const history: Float32Array[] = [...m.ets];
  if (m.curSample) history.push(m.curSample);
  if (m.acc) history.push(m.acc);
  return {
    stepIndex,
    history,
    extra: { counter: m.counter, ets: m.ets.length, cur: m.curSample ? 1 : 0, acc: m.acc ? 1 : 0 },
  };
}

export class PndmScheduler implements Scheduler {
  readonly name = 'pndm';
  /** Each position's history is its own (Scheduler.elementwise). */
  readonly elementwise = true;
  readonly predictionType: PredictionType;
  readonly timesteps: readonly number[];
  readonly numSteps: number;
  readonly initNoiseSigma = 1;
  readonly alphasCumprod: Float64Array;
  readonly finalAlphaCumprod: number;
  private readonly alphas: CumulativeAlphas;
  readonly skipPrkSteps: boolean;
  /** Number of leading PRK evaluations (0 with skip_prk_steps). */
  readonly prkSteps: number;
  /** num_train_timesteps // numSteps: the PLMS stride. */
  private readonly stride: number;

  constructor(reader: ConfigReader, numSteps: number) {
    this.predictionType = reader.oneOf('prediction_type', ['epsilon', 'v_prediction']);
    const noise = readNoiseSchedule(reader, false);
    const n = noise.numTrainTimesteps;
    checkNumSteps(numSteps, n);
    this.alphas = new CumulativeAlphas(reader, noise);
    this.alphasCumprod = this.alphas.values;
    this.finalAlphaCumprod = this.alphas.final;
    this.skipPrkSteps = reader.boolean('skip_prk_steps');
    this.stride = Math.floor(n / numSteps);
    const asc = integerTimesteps(reader, n, numSteps).reverse();
    let timesteps: number[];
    if (this.skipPrkSteps) {
      // concat(ts[:-1], ts[-2:-1], ts[-1:]) reversed: the second-to-last value repeats.
      timesteps = [...asc.slice(0, -1), ...asc.slice(-2, -1), ...asc.slice(-1)].reverse();
      this.prkSteps = 0;
    } else {
      if (numSteps < 4) {
        throw invalidArgument(
          'steps',
          'at least 4 for PNDM with skip_prk_steps false (its Runge-Kutta warm-up needs 4 timesteps)',
          numSteps,
          'Use more steps, or set skip_prk_steps to true.',
        );
      }
      const half = Math.floor(this.stride / 2);
      const last4 = asc.slice(-4);
      const pairs = last4.flatMap((t) => [t, t + half]);
      const repeated = pairs.slice(0, -1).flatMap((t) => [t, t]);
      const prk = repeated.slice(1, -1).reverse();
      timesteps = [...prk, ...asc.slice(0, -3).reverse()];
      this.prkSteps = prk.length;
    }
    this.timesteps = timesteps;
    this.numSteps = timesteps.length;
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

  /** diffusers' _get_prev_sample (PNDM paper, eq. 9), float32 scalar coefficients. */
  private prevSample(sample: Float32Array, t: number, tPrev: number, e: ArrayLike<number>): Float32Array {
    const a = this.alphas.at(t);
    const ap = this.alphas.at(tPrev);
    const b = f32(1 - a);
    const bp = f32(1 - ap);
    const sampleCoeff = sqrt32(f32(ap / a));
    const denom = f32(f32(a * sqrt32(bp)) + sqrt32(f32(f32(a * b) * ap)));
    const diff = f32(ap - a);
    const sa = sqrt32(a);
    const sb = sqrt32(b);
    const v = this.predictionType === 'v_prediction';
    const out = new Float32Array(sample.length);
    for (let i = 0; i < out.length; i++) {
      const s = sample[i]!;
      const eps = v ? f32(f32(sa * e[i]!) + f32(sb * s)) : e[i]!;
      out[i] = f32(sampleCoeff * s) - f32(f32(diff * eps) / denom);
    }
    return out;
  }

  step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array): StepResult {
    const k = checkStep(this.name, this.numSteps, state, modelOutput, sample);
    const m = unpack(state);
    if (m.counter !== k) {
      throw invalidArgument(`${this.name} scheduler state`, `counter ${k}`, m.counter, 'Pass the state step() returns.');
    }
    const e = Float32Array.from(modelOutput);
    const result = m.counter < this.prkSteps ? this.stepPrk(m, e, sample) : this.stepPlms(m, e, sample);
    return { prevSample: result.prev, state: pack(k + 1, result.memory) };
  }

  private stepPrk(m: PndmMemory, e: Float32Array, sample: Float32Array): { prev: Float32Array; memory: PndmMemory } {
    const c = m.counter;
    const t = this.timesteps[c]!;
    const tPrev = t - (c % 2 ? 0 : Math.floor(this.stride / 2));
    const tFrom = this.timesteps[Math.floor(c / 4) * 4]!;
    let ets = m.ets;
    let curSample = m.curSample;
    let acc = m.acc;
    let output: ArrayLike<number> = e;
    const n = e.length;
    // diffusers: cur_model_output += 1/6 * e, += 1/3 * e, ...; the Python float becomes float32.
    const sixth = f32(1 / 6);
    const third = f32(1 / 3);
    if (c % 4 === 0) {
      acc = new Float32Array(n);
      for (let i = 0; i < n; i++) acc[i] = sixth * e[i]!;
      ets = [...ets, e];
      curSample = Float32Array.from(sample);
    } else if (c % 4 === 3) {
      const combined = new Float32Array(n);
      for (let i = 0; i < n; i++) combined[i] = acc![i]! + f32(sixth * e[i]!);
      output = combined;
      acc = null;
    } else {
      const next = new Float32Array(n);
      for (let i = 0; i < n; i++) next[i] = acc![i]! + f32(third * e[i]!);
      acc = next;
    }
    const prev = this.prevSample(curSample ?? sample, tFrom, tPrev, output);
    return { prev, memory: { counter: c + 1, ets, curSample, acc } };
  }

  private stepPlms(m: PndmMemory, e: Float32Array, sample: Float32Array): { prev: Float32Array; memory: PndmMemory } {
    const c = m.counter;
    let t = this.timesteps[c]!;
    let tPrev = t - this.stride;
    let ets = m.ets;
    if (c !== 1) {
      ets = [...ets.slice(-3), e];
    } else {
      // The repeated second timestep: redo the first step from the first sample with averaged noise.
      tPrev = t;
      t = t + this.stride;
    }
    let curSample = m.curSample;
    let from = sample;
    const n = e.length;
    let output: ArrayLike<number>;
    if (ets.length === 1 && c === 0) {
      output = e;
      curSample = Float32Array.from(sample);
    } else if (ets.length === 1 && c === 1) {
      const avg = new Float32Array(n);
      for (let i = 0; i < n; i++) avg[i] = f32(e[i]! + ets[0]![i]!) / 2;
      output = avg;
      from = curSample!;
      curSample = null;
    } else {
      output = plmsCombination(ets);
    }
    const prev = this.prevSample(from, t, tPrev, output);
    return { prev, memory: { counter: c + 1, ets, curSample, acc: m.acc } };
  }
}

/** Adams-Bashforth combination of the stored noise predictions (newest last), float32 per operation. */
function plmsCombination(ets: Float32Array[]): Float32Array {
  const n = ets[0]!.length;
  const out = new Float32Array(n);
  const e1 = ets[ets.length - 1]!;
  const e2 = ets[ets.length - 2]!;
  if (ets.length === 2) {
    for (let i = 0; i < n; i++) out[i] = f32(f32(3 * e1[i]!) - e2[i]!) / 2;
  } else if (ets.length === 3) {
    const e3 = ets[0]!;
    for (let i = 0; i < n; i++) {
      out[i] = f32(f32(f32(23 * e1[i]!) - f32(16 * e2[i]!)) + f32(5 * e3[i]!)) / 12;
    }
  } else {
    const e3 = ets[ets.length - 3]!;
    const e4 = ets[ets.length - 4]!;
    const c = f32(1 / 24);
    for (let i = 0; i < n; i++) {
      const inner = f32(f32(f32(f32(55 * e1[i]!) - f32(59 * e2[i]!)) + f32(37 * e3[i]!)) - f32(9 * e4[i]!));
      out[i] = c * inner;
    }
  }
  return out;
}
