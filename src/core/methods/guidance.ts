/**
 * Structure guidance (ASGDiffusion Eq. 3 with the mask of Eq. 4), applied on the host to the un-shuffled
 * patch outputs [N, C, p_h, p_w] of one step. Patch 0 is the key patch and is never changed.
 *
 *   eps space (default):  eps~^i = eps^i + w_t * M ⊙ (K - eps^i),                 K = key eps
 *   x0 space (option):    eps~^i = eps^i - w_t * M ⊙ (alpha / sigma) * (X - x0^i),  X = key x0,
 *                         x0^i = (x^i - sigma * eps^i) / alpha
 *
 * The x0 form makes the guided denoised estimate exactly x0^i + w_t * M ⊙ (X - x0^i) (with alpha = 1 it is
 * method.md's formula). alpha and sigma are scheduler.noiseLevel(step) of the step being guided and x^i is
 * the patch of the latent passed to predict at that step. What K and X are (current or one step stale) is
 * decided by the caller (staged.ts). M is [p_h, p_w] broadcast over channels; null means M = 1.
 * Portable: no Node APIs.
 */
import type { PatchLayout } from './polyphase.ts';

/** How structure guidance's weight w_t follows the timestep: `constant` w_max, or `cosine` (structureWeightAt). */
export type StructureSchedule = 'constant' | 'cosine';
export type StructureSpace = 'eps' | 'x0';

/** Model timesteps run over [0, 1000) for every supported scheduler family. */
const TRAIN_TIMESTEPS = 1000;

/** w_t: constant w_max, or w_max * c(t)^gamma with c(t) = (1 + cos(pi * (1000 - t) / 1000)) / 2 (1 at t = 1000, 0 at t = 0). */
export function structureWeightAt(
  schedule: StructureSchedule,
  wMax: number,
  gamma: number,
  timestep: number,
): number {
  if (schedule === 'constant') return wMax;
  const c = (1 + Math.cos((Math.PI * (TRAIN_TIMESTEPS - timestep)) / TRAIN_TIMESTEPS)) / 2;
  return wMax * Math.pow(Math.min(1, Math.max(0, c)), gamma);
}

/** In place on eps [N, C, plane] (plane = p_h * p_w), patches first..N-1 (default 1). */
export function applyEpsGuidance(
  eps: Float32Array,
  key: Float32Array,
  mask: Float32Array | null,
  weight: number,
  n: number,
  channels: number,
  plane: number,
  first = 1,
): void {
  const size = channels * plane;
  const wm = weightedMask(mask, weight, plane);
  for (let i = first; i < n; i++) {
    const base = i * size;
    for (let c = 0; c < channels; c++) {
      const o = c * plane;
      for (let q = 0; q < plane; q++) {
        const e = base + o + q;
        eps[e] += wm[q] * (key[o + q] - eps[e]);
      }
    }
  }
}

/** w * M per position (w everywhere when the mask is null), in double precision. */
export function weightedMask(mask: Float32Array | null, weight: number, plane: number): Float64Array {
  const wm = new Float64Array(plane);
  for (let q = 0; q < plane; q++) wm[q] = mask === null ? weight : weight * mask[q];
  return wm;
}

/** x0 = (x - sigma * eps) / alpha, elementwise. */
export function denoisedEstimate(
  x: Float32Array,
  eps: Float32Array,
  alpha: number,
  sigma: number,
  out?: Float32Array,
): Float32Array {
  const dst = out ?? new Float32Array(x.length);
  for (let e = 0; e < x.length; e++) dst[e] = (x[e] - sigma * eps[e]) / alpha;
  return dst;
}

/** In place on eps [N, C, plane], patches first..N-1 (default 1); `x` holds the patches' latents [N, C, plane]. */
export function applyX0Guidance(
  eps: Float32Array,
  x: Float32Array,
  keyX0: Float32Array,
  mask: Float32Array | null,
  weight: number,
  alpha: number,
  sigma: number,
  n: number,
  channels: number,
  plane: number,
  first = 1,
): void {
  if (!(sigma > 0)) return; // no noise left: nothing to steer through eps
  const size = channels * plane;
  const gm = weightedMask(mask, (weight * alpha) / sigma, plane);
  for (let i = first; i < n; i++) {
    const base = i * size;
    for (let c = 0; c < channels; c++) {
      const o = c * plane;
      for (let q = 0; q < plane; q++) {
        const e = base + o + q;
        const x0 = (x[e] - sigma * eps[e]) / alpha;
        eps[e] -= gm[q] * (keyX0[o + q] - x0);
      }
    }
  }
}

/** Structure guidance at a step, as guideUnit takes it. */
export interface StepGuidance {
  space: StructureSpace;
  /**
   * The key patch's reference (its eps or its denoised estimate) [C, p_h, p_w]; with `targets`, a fixed x0 target for
   * every patch ('shared', [C, p_h, p_w]) or one per patch ('per-patch', [N, C, p_h, p_w]).
   */
  key: Float32Array;
  /** Every patch, the key patch too, guided toward `key` (x0 space): an upscale's structure target. */
  targets?: 'shared' | 'per-patch';
  /** weightedMask for `space`: of w in eps space, of w alpha / sigma in x0 space. */
  weights: Float64Array;
  alpha: number;
  sigma: number;
}

/** What guideUnit reads and writes besides a unit's output. */
export interface UnitTarget {
  /** The patches at the step (not input-scaled), where `layout` puts them. */
  latent: Float32Array;
  layout: PatchLayout;
  perm: Uint8Array | Uint16Array | null;
  n: number;
  /** The guided outputs, laid out as the patches. */
  eps: Float32Array;
  /** The key patch's (patch 0's) latent and output [C, p_h, p_w], copied out as its elements come by. */
  keyLatent: Float32Array;
  keyOutput: Float32Array;
}

/**
 * Unit j's output guided and written where its elements lie, in one pass: its element e belongs to patch
 * owner(e) = perm[e * n + j] (patch j throughout when perm is null), which the layout puts at
 * at[e] = base[owner(e)] + offset[e] of `latent` and `eps`; eps[at[e]] = output[e], guided where owner(e) is not the
 * key patch (0), with the latent value latent[at[e]]. `g` null: no guidance (eps is the output). In x0 space `weights`
 * is weightedMask(mask, w alpha / sigma) (none when sigma is 0: nothing to steer). Per element the arithmetic is that
 * of applyEpsGuidance / applyX0Guidance, so guiding the units one by one gives the un-shuffled patches' guided outputs
 * bit for bit; `at` then lists the positions to step (MethodContext.advance). Elements `from` to `to` only (the
 * caller takes a unit in blocks that stay in the processor's cache between this pass and the step).
 */
export function guideUnit(output: Float32Array, j: number, t: UnitTarget, g: StepGuidance | null, at: Int32Array, from = 0, to = output.length): void {
  // `| 0`: V8 then keeps the indices in integer registers (without it these loops ran 2x slower).
  from |= 0;
  to |= 0;
  const { latent, perm, n, eps, keyLatent, keyOutput } = t;
  const { base, offset } = t.layout;
  if (g === null) {
    for (let e = from, p = from * n + j; e < to; e++, p += n) {
      const owner = perm === null ? j : perm[p]!;
      const i = base[owner]! + offset[e]!;
      const v = output[e]!;
      eps[i] = v;
      at[e] = i;
      if (owner === 0) {
        keyOutput[e] = v;
        keyLatent[e] = latent[i]!;
      }
    }
    return;
  }
  const { key, weights: wm, alpha, sigma } = g;
  const plane = wm.length | 0;
  const x0Space = g.space === 'x0';
  // The key patch's elements keep the output (a branch: measured faster than selecting bits, docs/benchmarks.md);
  // toward structure targets no patch keeps it (keep -1) and the key is read per owner (stride: a patch's values).
  const keep = g.targets === undefined ? 0 : -1;
  const stride = g.targets === 'per-patch' ? output.length | 0 : 0;
  for (let e = from, p = from * n + j, q = from % plane; e < to; e++, p += n, q++) {
    if (q === plane) q = 0;
    const owner = perm === null ? j : perm[p]!;
    const i = base[owner]! + offset[e]!;
    const v = output[e]!;
    at[e] = i;
    if (owner === keep) {
      eps[i] = keyOutput[e] = v;
      keyLatent[e] = latent[i]!;
    } else {
      const k = key[owner * stride + e]!;
      eps[i] = x0Space ? v - wm[q]! * (k - (latent[i]! - sigma * v) / alpha) : v + wm[q]! * (k - v);
      if (owner === 0) {
        keyOutput[e] = eps[i]!;
        keyLatent[e] = latent[i]!;
      }
    }
  }
}
