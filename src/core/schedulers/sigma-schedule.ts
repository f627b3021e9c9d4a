/**
 * The sigma grid of diffusers' k-diffusion style schedulers (EulerDiscrete, EulerAncestralDiscrete,
 * LMSDiscrete): sample = x0 + sigma * eps, timesteps are float32 (fractional for linspace spacing),
 * sigmas are the training sigmas interpolated at the timesteps (np.interp, float64) then cast to
 * float32, with a final sigma appended.
 */
import { invalidArgument } from '../errors.ts';
import type { ConfigReader } from './config.ts';
import { alphasCumprod, readNoiseSchedule, trainingSigmas } from './noise-schedule.ts';
import { f32, interpIndex, log32, sqrt32 } from './numeric.ts';
import { karrasSigmas, sigmaToT } from './sigmas.ts';
import {
  TIMESTEP_SPACINGS,
  checkNumSteps,
  leadingDescending,
  linspaceDescending,
  trailingDescending,
} from './spacing.ts';

export interface SigmaSchedule {
  /** float32 model timesteps, one per step. */
  timesteps: number[];
  /** float32 sigmas, numSteps + 1 values (the last is the final sigma). */
  sigmas: Float64Array;
  initNoiseSigma: number;
}

export interface SigmaScheduleOptions {
  /** Class supports use_karras_sigmas. */
  karras: boolean;
  /** Class reads sigma_min / sigma_max from its config for the Karras range. */
  karrasRangeFromConfig: boolean;
  /** Class supports final_sigmas_type ("zero" otherwise). */
  finalSigmasType: boolean;
  /** Class has rescale_betas_zero_snr. */
  rescale: boolean;
}

/** A nullable positive config number (sigma_min / sigma_max). */
export function optionalPositive(reader: ConfigReader, key: string): number | undefined {
  const v = reader.raw(key);
  if (v === undefined || v === null) return undefined;
  return reader.number(key, (x) => Number.isFinite(x) && x > 0, 'null or a positive number');
}

export function buildSigmaSchedule(reader: ConfigReader, numSteps: number, opts: SigmaScheduleOptions): SigmaSchedule {
  const noise = readNoiseSchedule(reader, opts.rescale);
  const n = noise.numTrainTimesteps;
  checkNumSteps(numSteps, n);
  const abar = alphasCumprod(noise);
  // diffusers' Euler-type classes pin the zero-SNR terminal abar to 2^-24 so sigma stays finite.
  if (noise.rescaleBetasZeroSnr) abar[n - 1] = 2 ** -24;
  const train = trainingSigmas(abar);

  const spacing = reader.oneOf('timestep_spacing', TIMESTEP_SPACINGS);
  const offset = reader.integer('steps_offset', 0);
  let timesteps: number[];
  if (spacing === 'linspace') timesteps = linspaceDescending(n - 1, numSteps).map(f32);
  else if (spacing === 'leading') timesteps = leadingDescending(n, numSteps, offset);
  else timesteps = trailingDescending(n, n, numSteps);

  let sig = timesteps.map((t) => interpIndex(t, train));
  if (opts.karras) {
    reader.unsupportedFlag('use_exponential_sigmas');
    reader.unsupportedFlag('use_beta_sigmas');
    if (reader.boolean('use_karras_sigmas')) {
      const fromConfig = (key: string) => (opts.karrasRangeFromConfig ? optionalPositive(reader, key) : undefined);
      const lo = fromConfig('sigma_min') ?? sig[sig.length - 1]!;
      const hi = fromConfig('sigma_max') ?? sig[0]!;
      sig = karrasSigmas(lo, hi, numSteps);
      const logSigmas = train.map(log32);
      timesteps = sig.map((s) => sigmaToT(s, logSigmas));
    }
  }
  let last = 0;
  if (opts.finalSigmasType && reader.oneOf('final_sigmas_type', ['zero', 'sigma_min']) === 'sigma_min') {
    last = train[0]!;
  }
  const sigmas = Float64Array.from([...sig, last], f32);
  let max = 0;
  for (const s of sigmas) max = Math.max(max, s);
  const initNoiseSigma = spacing === 'leading' ? sqrt32(f32(f32(max * max) + 1)) : max;
  if (timesteps.length !== numSteps) {
    throw invalidArgument('steps', `${numSteps} timesteps`, timesteps.length);
  }
  return { timesteps: timesteps.map(f32), sigmas, initNoiseSigma };
}

/** 1 / sqrt(sigma^2 + 1) with the denominator in float32 (diffusers' scale_model_input). */
export function sigmaInputScale(sigma: number): number {
  return 1 / sqrt32(f32(f32(sigma * sigma) + 1));
}
