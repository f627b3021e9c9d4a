/**
 * An Euler step on contiguous elements through the WebAssembly kernel (kernels.wat eulerRange): copied in, stepped,
 * copied out, in one call on the thread's scratch memory. About 4x faster than the TypeScript loop with the copies
 * (docs/benchmarks.md), same bits. Portable: no Node APIs.
 */
import { scratchKernels } from './memory.ts';

/**
 * An Euler step's scalars as the kernels take them (src/core/schedulers/euler.ts): x0 by prediction `kind` (0
 * epsilon, 1 v, 2 sample), then s + (s - x0) / sigma * dt; or flow matching's (kind 3, src/core/schedulers/flow-match.ts),
 * s + m dt; or DDIM's with eta 0 (kinds 4 to 6, src/core/schedulers/ddim.ts, no clipping), sqrt(abar_prev) x0 +
 * sqrt(1 - abar_prev) eps, its four scalars in the same four fields; every value a float32 value.
 */
export interface EulerCoefficients {
  /** 0 epsilon, 1 v, 2 sample, 3 flow (the velocity: sigma, cOut and s2p1 unused); DDIM: 4 epsilon, 5 sample, 6 v. */
  kind: number;
  /** sigma at the step (positive); DDIM: sqrt(abar) at the step. */
  sigma: number;
  /** sigma at the next step minus sigma; DDIM: sqrt(1 - abar) at the step. */
  dt: number;
  /** -sigma / sqrt(sigma^2 + 1), for v prediction; DDIM: sqrt(abar) at the previous timestep. */
  cOut: number;
  /** sigma^2 + 1, for v prediction; DDIM: sqrt(1 - abar) at the previous timestep. */
  s2p1: number;
}

/** into[e] = the Euler step of (modelOutput[e], sample[e]) for every e; false (nothing written) where WebAssembly is unavailable or its memory cannot grow. */
export function eulerRangeKernel(c: EulerCoefficients, modelOutput: Float32Array, sample: Float32Array, into: Float32Array): boolean {
  const km = scratchKernels();
  if (km === null) return false;
  const len = sample.length;
  const at = km.layout([len * 4, len * 4, len * 4]);
  if (at === null) return false;
  const [m, s, out] = at;
  km.f32(m, len).set(modelOutput.subarray(0, len));
  km.f32(s, len).set(sample);
  km.kernels.eulerRange(out, m, s, len, c.kind, c.sigma, c.dt, c.cOut, c.s2p1);
  into.set(km.f32(out, len));
  return true;
}
