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

/**
 * An axis of `count` windows spread evenly over `size` (bases round(i * (size - window) / (count - 1)), the last
 * at the end), jitter J = floor((window - largest gap) / 4): 0 where consecutive windows only touch, so coverage
 * holds for any draw as in planAxis.
 */
export function spreadAxis(size: number, native: number, count: number): WindowAxis {
  const window = Math.min(native, size);
  if (count <= 1 || size <= window) return { size, window, stride: window, jitter: 0, bases: [0] };
  const bases: number[] = [];
  for (let i = 0; i < count; i++) bases.push(i === count - 1 ? size - window : Math.round((i * (size - window)) / (count - 1)));
  let gap = 0;
  for (let i = 1; i < count; i++) gap = Math.max(gap, bases[i] - bases[i - 1]);
  if (gap > window) throw new Error(`windows: ${count} windows of ${window} leave gaps on an axis of ${size}`);
  return { size, window, stride: gap, jitter: Math.floor((window - gap) / 4), bases };
}

/**
 * Stage-2 grids sized to a device count K (method option stage2Windows): every grid has a multiple of K windows,
 * as few as cover the padded latent with overlap along at least one axis (an axis of windows that only touch has
 * fixed seams in that step). When several row x column layouts tie (2 x 4 and 4 x 2 on an SDXL 2048 latent with
 * K = 4), all are returned and the steps cycle through them, so the seams move from step to step. Depends only on
 * the geometry and K, never on the devices that run it.
 */
export function planWindowsFor(geo: PatchGeometry, k: number): WindowGrid[] {
  const axisMin = (size: number, native: number) => (size <= native ? 1 : Math.ceil(size / native));
  const axisMax = (size: number, native: number) => (size <= native ? 1 : size - native + 1);
  const overlaps = (size: number, native: number, c: number) => c === 1 || c * Math.min(native, size) > size;
  const rMin = axisMin(geo.paddedHeight, geo.nativeHeight);
  const cMin = axisMin(geo.paddedWidth, geo.nativeWidth);
  const rMax = axisMax(geo.paddedHeight, geo.nativeHeight);
  const cMax = axisMax(geo.paddedWidth, geo.nativeWidth);
  let best = Infinity;
  let layouts: [number, number][] = [];
  for (let r = rMin; r <= Math.min(rMax, rMin + 2 * k); r++) {
    for (let c = cMin; c <= Math.min(cMax, cMin + 2 * k); c++) {
      if ((r * c) % k !== 0 || r * c > best) continue;
      const single = r === 1 && c === 1;
      if (!single && !overlaps(geo.paddedHeight, geo.nativeHeight, r) && !overlaps(geo.paddedWidth, geo.nativeWidth, c)) continue;
      if (r * c < best) layouts = [];
      best = r * c;
      layouts.push([r, c]);
    }
  }
  if (layouts.length === 0) return [planWindows(geo)];
  return layouts.map(([r, c]) => {
    const vertical = spreadAxis(geo.paddedHeight, geo.nativeHeight, r);
    const horizontal = spreadAxis(geo.paddedWidth, geo.nativeWidth, c);
    return { vertical, horizontal, count: r * c };
  });
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
 * outside it, multiplied by `scale`, into `out` (or a new Float32Array) [C, winH, winW].
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
  out?: Float32Array,
): Float32Array {
  const dst = out ?? new Float32Array(channels * winH * winW);
  const x0 = Math.max(0, Math.min(winW, -left));
  const x1 = Math.max(x0, Math.min(winW, srcW - left));
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < winH; y++) {
      const sy = top + y;
      const d = (c * winH + y) * winW;
      if (sy < 0 || sy >= srcH || x1 === x0) {
        dst.fill(0, d, d + winW);
        continue;
      }
      if (x0 > 0) dst.fill(0, d, d + x0);
      if (x1 < winW) dst.fill(0, d + x1, d + winW);
      const s = (c * srcH + sy) * srcW + left;
      if (scale === 1) dst.set(src.subarray(s + x0, s + x1), d + x0);
      else for (let x = x0; x < x1; x++) dst[d + x] = src[s + x] * scale;
    }
  }
  return dst;
}

/**
 * Uniform-weight fusion of window outputs into an outH x outW canvas (the cropped HR latent): positions of a
 * window outside the canvas (zero padding, geometry padding) are dropped. Outputs are summed straight into
 * the result array and divided by the coverage at the end; coverage is counted with a 2-D difference array
 * (four updates per window), so the per-element work is one add per window element and one multiply.
 */
export class WindowCanvas {
  private out: Float32Array;
  private readonly diff: Int32Array;

  constructor(
    readonly channels: number,
    readonly height: number,
    readonly width: number,
  ) {
    this.out = new Float32Array(channels * height * width);
    this.diff = new Int32Array((height + 1) * (width + 1));
  }

  /** Starts a new fusion into a fresh result array. */
  reset(): void {
    this.out = new Float32Array(this.channels * this.height * this.width);
    this.diff.fill(0);
  }

  add(window: Float32Array, top: number, left: number, winH: number, winW: number): void {
    const { channels, height, width, out, diff } = this;
    const x0 = Math.max(0, -left);
    const x1 = Math.min(winW, width - left);
    const y0 = Math.max(0, -top);
    const y1 = Math.min(winH, height - top);
    if (x1 <= x0 || y1 <= y0) return;
    const w1 = width + 1;
    diff[(top + y0) * w1 + left + x0]++;
    diff[(top + y0) * w1 + left + x1]--;
    diff[(top + y1) * w1 + left + x0]--;
    diff[(top + y1) * w1 + left + x1]++;
    for (let c = 0; c < channels; c++) {
      for (let y = y0; y < y1; y++) {
        const d = (c * height + top + y) * width + left;
        const s = (c * winH + y) * winW;
        for (let x = x0; x < x1; x++) out[d + x] += window[s + x];
      }
    }
  }

  /** Number of windows covering each position [height * width] (prefix sums of the difference array). */
  coverageMap(): Int32Array {
    const { height, width, diff } = this;
    const w1 = width + 1;
    const cov = new Int32Array(height * width);
    const row = new Int32Array(width);
    for (let y = 0; y < height; y++) {
      let run = 0;
      for (let x = 0; x < width; x++) {
        run += diff[y * w1 + x];
        row[x] += run;
        cov[y * width + x] = row[x];
      }
    }
    return cov;
  }

  /** sum / coverage as float32 [C, height, width]; throws if a position is uncovered (a planning bug). */
  result(): Float32Array {
    const { channels, height, width, out } = this;
    const plane = height * width;
    const cov = this.coverageMap();
    const inv = new Float32Array(plane);
    let allOnce = true;
    for (let i = 0; i < plane; i++) {
      if (cov[i] === 0) throw new Error(`windows: latent position ${i} is not covered by any window`);
      if (cov[i] !== 1) allOnce = false;
      inv[i] = 1 / cov[i];
    }
    if (!allOnce) {
      for (let c = 0; c < channels; c++) {
        const base = c * plane;
        for (let i = 0; i < plane; i++) out[base + i] *= inv[i];
      }
    }
    return out;
  }
}
