/**
 * The training noise schedule: betas -> alphas_cumprod, with diffusers' dtypes. Every returned value is
 * a float32 number held in a float64 array (diffusers keeps these as float32 tensors).
 *
 * dtype notes (checked against torch 1.13, the version Debian ships):
 * - torch.linspace(..., dtype=float32) computes in float32 and differs from NumPy's float64 linspace
 *   cast to float32 by one ulp in about a third of the entries (how many depends on torch's CPU
 *   vector width). We use the float64 linspace rounded to float32; the resulting sigmas differ from
 *   torch's by at most 4e-7 relative (measured for SD's scaled_linear and the default linear betas).
 * - torch.cumprod on a CPU float32 tensor accumulates in float64 and rounds each output to float32;
 *   we do the same (this reproduces torch's alphas_cumprod bit for bit given the same alphas).
 */
import { invalidArgument } from '../errors.ts';
import type { ConfigReader } from './config.ts';
import { f32, linspace, sqrt32 } from './numeric.ts';

export interface NoiseScheduleConfig {
  numTrainTimesteps: number;
  betaStart: number;
  betaEnd: number;
  betaSchedule: string;
  trainedBetas: readonly number[] | null;
  rescaleBetasZeroSnr: boolean;
}

export const BETA_SCHEDULES = ['linear', 'scaled_linear', 'squaredcos_cap_v2'] as const;

/** diffusers' betas_for_alpha_bar with the cosine transform (squaredcos_cap_v2), max_beta 0.999. */
function cosineBetas(n: number): number[] {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * Math.PI / 2) ** 2;
  const betas: number[] = [];
  for (let i = 0; i < n; i++) {
    betas.push(Math.min(1 - alphaBar((i + 1) / n) / alphaBar(i / n), 0.999));
  }
  return betas;
}

/** Betas as float32 values. Caller has validated betaSchedule. */
export function betas(config: NoiseScheduleConfig): Float64Array {
  const n = config.numTrainTimesteps;
  let values: number[];
  if (config.trainedBetas) values = [...config.trainedBetas];
  else if (config.betaSchedule === 'linear') values = linspace(config.betaStart, config.betaEnd, n);
  else if (config.betaSchedule === 'scaled_linear') {
    // torch.linspace(sqrt(start), sqrt(end)) ** 2, the square taken in float32.
    values = linspace(Math.sqrt(config.betaStart), Math.sqrt(config.betaEnd), n).map((b) => f32(f32(b) * f32(b)));
  } else values = cosineBetas(n);
  const out = Float64Array.from(values, f32);
  return config.rescaleBetasZeroSnr ? rescaleZeroTerminalSnr(out) : out;
}

/** Cumulative product of float32 alphas, accumulated in float64, each output rounded to float32. */
function cumprod32(alphas: Float64Array): Float64Array {
  const out = new Float64Array(alphas.length);
  let acc = 1;
  for (let i = 0; i < alphas.length; i++) {
    acc *= alphas[i]!;
    out[i] = f32(acc);
  }
  return out;
}

/**
 * diffusers' rescale_zero_terminal_snr (Lin et al. 2023, Algorithm 1) on float32 tensors: shift and
 * scale sqrt(alphas_cumprod) so the last step has zero SNR, then convert back to betas.
 */
function rescaleZeroTerminalSnr(b: Float64Array): Float64Array {
  const abar = cumprod32(b.map((x) => f32(1 - x)));
  const sq = abar.map(sqrt32);
  const s0 = sq[0]!;
  const sT = sq[sq.length - 1]!;
  const scale = f32(s0 / f32(s0 - sT));
  const shifted = sq.map((x) => f32(f32(x - sT) * scale));
  const abarNew = shifted.map((x) => f32(x * x));
  const out = new Float64Array(b.length);
  for (let i = 0; i < b.length; i++) {
    const alpha = i === 0 ? abarNew[0]! : f32(abarNew[i]! / abarNew[i - 1]!);
    out[i] = f32(1 - alpha);
  }
  return out;
}

/** alphas_cumprod = cumprod(1 - betas), float32 values. */
export function alphasCumprod(config: NoiseScheduleConfig): Float64Array {
  return cumprod32(betas(config).map((b) => f32(1 - b)));
}

/** sigma_t = sqrt((1 - abar_t) / abar_t) for every training timestep, in float32 as diffusers does. */
export function trainingSigmas(abar: Float64Array): Float64Array {
  return abar.map((a) => sqrt32(f32(f32(1 - a) / a)));
}

/**
 * Reads and validates the noise-schedule fields of a resolved config. `hasRescale`: whether the
 * target class has rescale_betas_zero_snr (PNDM and LMS ignore it, as in diffusers).
 */
export function readNoiseSchedule(reader: ConfigReader, hasRescale: boolean): NoiseScheduleConfig {
  const numTrainTimesteps = reader.integer('num_train_timesteps', 2);
  const trained = reader.raw('trained_betas');
  let trainedBetas: number[] | null = null;
  if (trained !== undefined && trained !== null) {
    if (
      !Array.isArray(trained) ||
      trained.length !== numTrainTimesteps ||
      !trained.every((b) => typeof b === 'number' && b > 0 && b < 1)
    ) {
      throw invalidArgument(
        'scheduler config trained_betas',
        `null or an array of ${numTrainTimesteps} numbers in (0, 1)`,
        Array.isArray(trained) ? `an array of ${trained.length} values` : trained,
      );
    }
    trainedBetas = trained as number[];
  }
  const betaSchedule = trainedBetas ? 'trained' : reader.oneOf('beta_schedule', BETA_SCHEDULES);
  const inUnit = (v: number) => Number.isFinite(v) && v >= 0 && v < 1;
  const betaStart = reader.number('beta_start', inUnit, 'a number in [0, 1)');
  const betaEnd = reader.number('beta_end', inUnit, 'a number in [0, 1)');
  const rescaleBetasZeroSnr = hasRescale ? reader.boolean('rescale_betas_zero_snr') : false;
  return { numTrainTimesteps, betaStart, betaEnd, betaSchedule, trainedBetas, rescaleBetasZeroSnr };
}
