/** Sigma-space helpers shared by the k-diffusion style schedulers (Euler, LMS) and DPM-Solver. */

/** Karras et al. (2022) sigmas, rho = 7, from sigmaMax down to sigmaMin, `count` values, float64. */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, count: number): number[] {
  const rho = 7;
  const minInv = sigmaMin ** (1 / rho);
  const maxInv = sigmaMax ** (1 / rho);
  const out: number[] = [];
  for (let i = 0; i < count; i++) {
    // NumPy's linspace(0, 1, count): i * (1 / (count - 1)), last exactly 1.
    const ramp = count === 1 ? 0 : i === count - 1 ? 1 : i * (1 / (count - 1));
    out.push((maxInv + ramp * (minInv - maxInv)) ** rho);
  }
  return out;
}

/**
 * diffusers' _sigma_to_t: the fractional training timestep whose log-sigma matches, by linear
 * interpolation in log-sigma. `logSigmas` are float32 logs of the training sigmas (ascending in t).
 */
export function sigmaToT(sigma: number, logSigmas: Float64Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  // Last index whose log-sigma is <= logSigma (0 if none), at most len - 2.
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigma - logSigmas[i]! >= 0) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  const w = Math.min(Math.max((lo - logSigma) / (lo - hi), 0), 1);
  return (1 - w) * low + w * (low + 1);
}
