/**
 * Image metrics of the fidelity benchmark (bench/fidelity.ts), on interleaved 8-bit RGB images; portable (no Node
 * APIs). What a structure method should move, beside counting objects (bench/analysis/scenes.ts):
 *
 * - layout fidelity: the high-resolution image box-downscaled to the native size (downscaleBox) against the
 *   native image of the same seed: per-colour mask IoU (maskIoU) and the distance between mask centres
 *   (maskCentre, centreDistance);
 * - artefacts: high-frequency energy inside flat regions (flatEnergy) and the colour step across patch/window
 *   borders against the step elsewhere (seamContrast);
 * - intervals: Wilson score interval of a proportion, percentile bootstrap of a mean and of a paired difference.
 */

export interface Rgb {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Box average over factor x factor blocks (integer factor dividing both sides), rounded to the nearest integer. */
export function downscaleBox(image: Rgb, factor: number): Rgb {
  const { data, width, height } = image;
  if (!Number.isInteger(factor) || factor < 1 || width % factor !== 0 || height % factor !== 0) {
    throw new Error(`downscaleBox: factor ${factor} must be a positive integer dividing ${width}x${height}`);
  }
  const w = width / factor;
  const h = height / factor;
  const out = new Uint8Array(w * h * 3);
  const n = factor * factor;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let dy = 0; dy < factor; dy++) {
          const row = (y * factor + dy) * width;
          for (let dx = 0; dx < factor; dx++) sum += data[3 * (row + x * factor + dx) + c]!;
        }
        out[3 * (y * w + x) + c] = Math.round(sum / n);
      }
    }
  }
  return { data: out, width: w, height: h };
}

/** |A and B| / |A or B| of two masks of one size; null when both are empty (nothing to compare). */
export function maskIoU(a: Uint8Array, b: Uint8Array): number | null {
  if (a.length !== b.length) throw new Error(`maskIoU: masks of ${a.length} and ${b.length} pixels`);
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i] !== 0;
    const y = b[i] !== 0;
    if (x && y) inter++;
    if (x || y) union++;
  }
  return union === 0 ? null : inter / union;
}

/** Centre of the set pixels (pixel centres at x + 0.5), null for an empty mask. */
export function maskCentre(mask: Uint8Array, width: number): { x: number; y: number } | null {
  let sx = 0;
  let sy = 0;
  let n = 0;
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    const x = i % width;
    sx += x + 0.5;
    sy += (i - x) / width + 0.5;
    n++;
  }
  return n === 0 ? null : { x: sx / n, y: sy / n };
}

/** Euclidean distance between two points divided by `side` (so 0.1 = a tenth of the image side); null if either is missing. */
export function centreDistance(a: { x: number; y: number } | null, b: { x: number; y: number } | null, side: number): number | null {
  return a && b ? Math.hypot(a.x - b.x, a.y - b.y) / side : null;
}

/**
 * Interior of flat regions: pixels with a label (>= 0) whose whole (2r+1)x(2r+1) neighbourhood inside the image has
 * the same label. Excludes object outlines, stripe edges and unlabelled (off-palette) pixels.
 */
export function flatInterior(labels: Int8Array, width: number, height: number, r: number): Uint8Array {
  const out = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const l = labels[y * width + x]!;
      if (l < 0) continue;
      let flat = true;
      for (let yy = Math.max(0, y - r); yy <= Math.min(height - 1, y + r) && flat; yy++) {
        for (let xx = Math.max(0, x - r); xx <= Math.min(width - 1, x + r); xx++) {
          if (labels[yy * width + xx] !== l) {
            flat = false;
            break;
          }
        }
      }
      if (flat) out[y * width + x] = 1;
    }
  }
  return out;
}

/**
 * High-frequency energy inside flat regions: the mean over the interior pixels (not on the image border) of the
 * squared 4-neighbour Laplacian, summed over R, G and B, in unit RGB (values / 255). 0 for flat colour and for
 * any linear ramp; speckle and ringing raise it. Null when no interior pixel is left.
 */
export function flatEnergy(image: Rgb, interior: Uint8Array): number | null {
  const { data, width, height } = image;
  let sum = 0;
  let n = 0;
  for (let y = 1; y < height - 1; y++) {
    for (let x = 1; x < width - 1; x++) {
      const p = y * width + x;
      if (!interior[p]) continue;
      let e = 0;
      for (let c = 0; c < 3; c++) {
        const v = 4 * data[3 * p + c]! - data[3 * (p - 1) + c]! - data[3 * (p + 1) + c]! - data[3 * (p - width) + c]! - data[3 * (p + width) + c]!;
        e += (v / 255) ** 2;
      }
      sum += e;
      n++;
    }
  }
  return n === 0 ? null : sum / n;
}

export interface SeamContrast {
  /** Mean squared RGB step (unit RGB, summed over channels) across the border lines. */
  border: number;
  /** The same across the reference boundaries: same phase (multiples of `phase`), within `band` px of a line. */
  elsewhere: number;
  /** border / elsewhere (1: no seam), null when either is undefined or elsewhere is 0. */
  ratio: number | null;
  /** Pixel pairs counted across the border lines. */
  pairs: number;
}

/**
 * The colour step across the lines x = k * period and y = k * period (0 < k * period < side: where patch or window
 * edges of a method sit), against the step across the column and row boundaries at other multiples of `phase`
 * within `band` px of such a line. Local, so what the image holds cancels out; on the same phase, because a VAE
 * decoder that upsamples by 8 leaves a pattern with period 8 (every window line is also a latent-cell edge).
 * A pair of neighbours counts only when both pixels are in `keep` (e.g. flatInterior with r >= 1, so object and
 * stripe edges that cross a line are not seams). Squared RGB distance in unit RGB.
 */
export function seamContrast(image: Rgb, period: number, keep: Uint8Array, band = 16, phase = 8): SeamContrast {
  const { data, width, height } = image;
  if (!Number.isInteger(phase) || phase < 1 || !Number.isInteger(period) || period % phase !== 0 || period < 2 * phase) {
    throw new Error(`seamContrast: period ${period} must be a multiple (>= 2) of phase ${phase}`);
  }
  if (!Number.isInteger(band) || band < phase || band >= period) throw new Error(`seamContrast: band ${band} for period ${period}, phase ${phase}`);
  let bSum = 0;
  let bN = 0;
  let oSum = 0;
  let oN = 0;
  const step = (p: number, q: number) => {
    let e = 0;
    for (let c = 0; c < 3; c++) e += ((data[3 * p + c]! - data[3 * q + c]!) / 255) ** 2;
    return e;
  };
  /** Per boundary position (between i - 1 and i): 0 on a line, 1 a reference, -1 neither. */
  const places = (size: number) => {
    const out = new Int8Array(size).fill(-1);
    for (let line = period; line < size; line += period) {
      out[line] = 0;
      for (let d = phase; d <= band; d += phase) {
        for (const i of [line - d, line + d]) if (i > 0 && i < size && out[i] !== 0) out[i] = 1;
      }
    }
    return out;
  };
  const col = places(width);
  const row = places(height);
  const add = (where: number, e: number) => {
    if (where === 0) {
      bSum += e;
      bN++;
    } else if (where > 0) {
      oSum += e;
      oN++;
    }
  };
  for (let y = 0; y < height; y++) {
    for (let x = 1; x < width; x++) {
      const p = y * width + x;
      if (col[x]! >= 0 && keep[p] && keep[p - 1]) add(col[x]!, step(p, p - 1));
    }
  }
  for (let y = 1; y < height; y++) {
    if (row[y]! < 0) continue;
    for (let x = 0; x < width; x++) {
      const p = y * width + x;
      if (keep[p] && keep[p - width]) add(row[y]!, step(p, p - width));
    }
  }
  const border = bN === 0 ? NaN : bSum / bN;
  const elsewhere = oN === 0 ? NaN : oSum / oN;
  const ratio = bN === 0 || oN === 0 || elsewhere === 0 ? null : border / elsewhere;
  return { border, elsewhere, ratio, pairs: bN };
}

/** Wilson score interval of k successes in n trials (z 1.96: 95 %). [0, 1] for n = 0. */
export function wilson(k: number, n: number, z = 1.96): { rate: number; low: number; high: number } {
  if (n === 0) return { rate: NaN, low: 0, high: 1 };
  const p = k / n;
  const z2 = z * z;
  const centre = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (z / (1 + z2 / n)) * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n));
  // At k = 0 and k = n the bounds are exactly 0 and 1 (the formula reaches them up to rounding).
  return { rate: p, low: k === 0 ? 0 : Math.max(0, centre - half), high: k === n ? 1 : Math.min(1, centre + half) };
}

/** Deterministic uniform [0, 1) generator (mulberry32) for the bootstrap. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Value at quantile q of sorted values (linear interpolation between order statistics). */
export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** Percentile bootstrap interval of the mean (resamples, 95 % by default, seeded). */
export function bootstrapMean(xs: readonly number[], resamples = 2000, level = 0.95, seed = 1): { mean: number; low: number; high: number } {
  const n = xs.length;
  if (n === 0) return { mean: NaN, low: NaN, high: NaN };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const rand = mulberry32(seed);
  const means: number[] = [];
  for (let r = 0; r < resamples; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += xs[Math.floor(rand() * n)]!;
    means.push(s / n);
  }
  means.sort((a, b) => a - b);
  return { mean, low: quantile(means, (1 - level) / 2), high: quantile(means, 1 - (1 - level) / 2) };
}

/**
 * Paired difference mean(a - b) over matched items (same prompt and seed), with a percentile bootstrap interval
 * over the pairs. An interval that excludes 0 is a difference at that level.
 */
export function pairedDifference(a: readonly number[], b: readonly number[], resamples = 2000, level = 0.95, seed = 1) {
  if (a.length !== b.length) throw new Error(`pairedDifference: ${a.length} vs ${b.length} items`);
  return bootstrapMean(a.map((v, i) => v - b[i]!), resamples, level, seed);
}
