/**
 * Stage-2 windows (MultiDiffusion with jitter) over the padded HR latent (see geometry.ts for the padding).
 *
 * Per axis: window = min(native, padded size); base positions 0, stride, 2*stride, ... with the last one
 * aligned to the end; jitter J = floor((native - stride) / 4) latent px, redrawn every step. Interior windows
 * shift by U{-J..J}; the first window only outward into the padding ([-J, 0]) and the last only outward
 * ([0, J]), so the borders stay covered. The latent is conceptually zero-padded by J on every side, so a
 * shifted window reads zeros outside the padded latent. An axis with a single window never moves.
 * Coverage holds for any draw: the "core" [base + J, base + window - J) of consecutive windows touch because
 * 2J <= window - stride, and every window of a column covers its column's core.
 * Portable: no Node APIs.
 */
import type { RandomSource } from '../random/types.ts';
import type { PatchGeometry } from './geometry.ts';

export interface WindowAxis {
  /** Padded latent size along this axis. */
  size: number;
  window: number;
  stride: number;
  /** Maximum shift in latent px (0 for a single window). */
  jitter: number;
  /** Unjittered window origins. */
  bases: number[];
}

export interface WindowGrid {
  vertical: WindowAxis;
  horizontal: WindowAxis;
  /** Number of windows (vertical.bases.length * horizontal.bases.length). */
  count: number;
}

export interface WindowPlacement {
  index: number;
  /** Origin in padded-latent coordinates; negative or past the end means the window reads zero padding. */
  top: number;
  left: number;
}

export function planAxis(size: number, native: number, stride: number): WindowAxis {
  const window = Math.min(native, size);
  const count = size <= window ? 1 : Math.ceil((size - window) / stride) + 1;
  const bases: number[] = [];
  for (let i = 0; i < count; i++) bases.push(i === count - 1 ? size - window : i * stride);
  const jitter = count > 1 ? Math.floor((native - stride) / 4) : 0;
  return { size, window, stride, jitter, bases };
}

/** `stride` in latent px for both axes; undefined means half the native size of each axis. */
export function planWindows(geo: PatchGeometry, stride?: number): WindowGrid {
  const vertical = planAxis(geo.paddedHeight, geo.nativeHeight, stride ?? geo.nativeHeight / 2);
  const horizontal = planAxis(geo.paddedWidth, geo.nativeWidth, stride ?? geo.nativeWidth / 2);
  return { vertical, horizontal, count: vertical.bases.length * horizontal.bases.length };
}

function shift(axis: WindowAxis, i: number, rng: RandomSource): number {
  const j = axis.jitter;
  if (j === 0) return 0;
  const last = axis.bases.length - 1;
  if (i === 0) return -rng.randint(j + 1);
  if (i === last) return rng.randint(j + 1);
  return rng.randint(2 * j + 1) - j;
}

/**
 * Window origins for one step, row-major. With `rng`, each window draws its vertical then its horizontal
 * shift (axes without jitter draw nothing); without it the windows sit at their bases.
 */
export function placeWindows(grid: WindowGrid, rng?: RandomSource): WindowPlacement[] {
  const out: WindowPlacement[] = [];
  const { vertical: v, horizontal: h } = grid;
  let index = 0;
  for (let r = 0; r < v.bases.length; r++) {
    for (let c = 0; c < h.bases.length; c++) {
      const dy = rng ? shift(v, r, rng) : 0;
      const dx = rng ? shift(h, c, rng) : 0;
      out.push({ index: index++, top: v.bases[r] + dy, left: h.bases[c] + dx });
    }
  }
  return out;
}

/**
 * Copies the window at (top, left) of size winH x winW out of `src` ([C, srcH, srcW]), reading zeros
 * outside it, multiplied by `scale`, into a new Float32Array [C, winH, winW].
 */
export function extractWindow(
  src: Float32Array,
  channels: number,
  srcH: number,
  srcW: number,
  top: number,
  left: number,
  winH: number,
  winW: number,
  scale: number,
): Float32Array {
  const out = new Float32Array(channels * winH * winW);
  const x0 = Math.max(0, -left);
  const x1 = Math.min(winW, srcW - left);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < winH; y++) {
      const sy = top + y;
      if (sy < 0 || sy >= srcH || x1 <= x0) continue;
      const s = (c * srcH + sy) * srcW + left;
      const d = (c * winH + y) * winW;
      if (scale === 1) out.set(src.subarray(s + x0, s + x1), d + x0);
      else for (let x = x0; x < x1; x++) out[d + x] = src[s + x] * scale;
    }
  }
  return out;
}

/**
 * Uniform-weight fusion of window outputs into an outH x outW canvas (the cropped HR latent): positions of a
 * window outside the canvas (zero padding, geometry padding) are dropped.
 */
export class WindowCanvas {
  private readonly sum: Float64Array;
  private readonly coverage: Uint16Array;

  constructor(
    readonly channels: number,
    readonly height: number,
    readonly width: number,
  ) {
    this.sum = new Float64Array(channels * height * width);
    this.coverage = new Uint16Array(height * width);
  }

  add(window: Float32Array, top: number, left: number, winH: number, winW: number): void {
    const { channels, height, width, sum, coverage } = this;
    const x0 = Math.max(0, -left);
    const x1 = Math.min(winW, width - left);
    if (x1 <= x0) return;
    const y0 = Math.max(0, -top);
    const y1 = Math.min(winH, height - top);
    for (let y = y0; y < y1; y++) {
      const row = (top + y) * width + left;
      for (let x = x0; x < x1; x++) coverage[row + x]++;
    }
    for (let c = 0; c < channels; c++) {
      for (let y = y0; y < y1; y++) {
        const d = (c * height + top + y) * width + left;
        const s = (c * winH + y) * winW;
        for (let x = x0; x < x1; x++) sum[d + x] += window[s + x];
      }
    }
  }

  /** Number of windows covering each position [height * width]. */
  coverageMap(): Uint16Array {
    return this.coverage;
  }

  /** sum / coverage as float32 [C, height, width]; throws if a position is uncovered (a planning bug). */
  result(): Float32Array {
    const { channels, height, width, sum, coverage } = this;
    const plane = height * width;
    const out = new Float32Array(channels * plane);
    for (let i = 0; i < plane; i++) {
      if (coverage[i] === 0) throw new Error(`windows: latent position ${i} is not covered by any window`);
    }
    for (let c = 0; c < channels; c++) {
      const base = c * plane;
      for (let i = 0; i < plane; i++) out[base + i] = sum[base + i] / coverage[i];
    }
    return out;
  }
}
