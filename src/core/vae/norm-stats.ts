/**
 * Shared normalisation statistics for tiled VAE decoding and encoding. A VAE's GroupNorm layers normalise with the
 * mean and variance of the whole image; a tile decoded on its own would normalise with its own, so colours shift
 * from tile to tile. Here: the statistics of every norm layer are accumulated over tiles (each tile contributes the
 * part of the image it owns), combined exactly (Chan et al.'s pairwise update, in float64), and turned into the
 * per-group affine map (x * a + b) the tile graph applies instead of computing its own statistics.
 * Portable: no Node APIs.
 */
import type { AxisTile } from './tiling.ts';

/** One normalisation layer of a derived VAE graph. */
export interface NormLayer {
  /** The layer's scope in the source graph, e.g. `/decoder/up_blocks.0/resnets.1/norm1`. */
  name: string;
  groups: number;
  epsilon: number;
}

/** Per-group mean and (biased) variance of every norm layer, in layer order, with the element count they cover. */
export interface NormStats {
  mean: Float64Array[];
  variance: Float64Array[];
  /** Relative weight of these statistics (pixels covered, in any fixed unit). */
  count: number;
}

/** Statistics in the flat float32 layout a graph run returns: per layer, `groups` means then `groups` variances. */
export function unpackStats(layers: readonly NormLayer[], flat: Float32Array, count: number): NormStats {
  const mean: Float64Array[] = [];
  const variance: Float64Array[] = [];
  let at = 0;
  for (const l of layers) {
    mean.push(Float64Array.from(flat.subarray(at, at + l.groups)));
    variance.push(Float64Array.from(flat.subarray(at + l.groups, at + 2 * l.groups)));
    at += 2 * l.groups;
  }
  if (at !== flat.length) throw new Error(`unpackStats: ${flat.length} values for layers needing ${at}`);
  return { mean, variance, count };
}

/** Accumulates statistics of disjoint parts into those of their union (exact up to float64 rounding). */
export class StatsAccumulator {
  private mean: Float64Array[];
  private m2: Float64Array[];
  private n = 0;

  constructor(readonly layers: readonly NormLayer[]) {
    this.mean = layers.map((l) => new Float64Array(l.groups));
    this.m2 = layers.map((l) => new Float64Array(l.groups));
  }

  add(part: NormStats): void {
    if (part.count <= 0) return;
    const n = this.n + part.count;
    const wb = part.count / n;
    for (let k = 0; k < this.layers.length; k++) {
      const mean = this.mean[k]!;
      const m2 = this.m2[k]!;
      const pm = part.mean[k]!;
      const pv = part.variance[k]!;
      for (let g = 0; g < mean.length; g++) {
        const delta = pm[g]! - mean[g]!;
        m2[g] = m2[g]! + pv[g]! * part.count + delta * delta * this.n * wb;
        mean[g] = mean[g]! + delta * wb;
      }
    }
    this.n = n;
  }

  get count(): number {
    return this.n;
  }

  result(): NormStats {
    if (this.n <= 0) throw new Error('StatsAccumulator: no statistics were added');
    return { mean: this.mean.map((m) => m.slice()), variance: this.m2.map((m) => m.map((v) => Math.max(0, v / this.n))), count: this.n };
  }
}

/**
 * The tile graph's norm inputs: per layer, `groups` scales a = 1/sqrt(var + eps) then `groups` shifts b = -mean * a,
 * so that the layer computes x * a + b, which is (x - mean) / sqrt(var + eps).
 */
export function packAffine(layers: readonly NormLayer[], stats: NormStats): Float32Array {
  const out = new Float32Array(layers.reduce((s, l) => s + 2 * l.groups, 0));
  let at = 0;
  layers.forEach((l, k) => {
    for (let g = 0; g < l.groups; g++) {
      const a = 1 / Math.sqrt(stats.variance[k]![g]! + l.epsilon);
      out[at + g] = a;
      out[at + l.groups + g] = -stats.mean[k]![g]! * a;
    }
    at += 2 * l.groups;
  });
  return out;
}

/**
 * How far two sets of statistics are apart, in units the output sees: the largest shift of a group's mean relative
 * to its standard deviation, plus the largest relative change of its standard deviation.
 */
export function statsChange(layers: readonly NormLayer[], a: NormStats, b: NormStats): number {
  let worst = 0;
  layers.forEach((l, k) => {
    for (let g = 0; g < l.groups; g++) {
      const sa = Math.sqrt(a.variance[k]![g]! + l.epsilon);
      const sb = Math.sqrt(b.variance[k]![g]! + l.epsilon);
      const d = Math.abs(a.mean[k]![g]! - b.mean[k]![g]!) / sa + Math.abs(sb / sa - 1);
      if (!(d <= worst)) worst = d; // NaN propagates as "not converged"
    }
  });
  return worst;
}

/**
 * The part of each tile that it owns along one axis: the owned spans partition [0, size), each boundary lying in the
 * middle of the overlap of two neighbouring tiles (as far from both tiles' edges as possible). `multiple` rounds the
 * boundaries down to a multiple (the encoder's tiles are planned in image pixels, whose norm layers run at 1/8).
 */
export function ownedSpans(tiles: readonly AxisTile[], multiple = 1): AxisTile[] {
  const spans: AxisTile[] = [];
  let start = 0;
  tiles.forEach((t, i) => {
    const next = tiles[i + 1];
    let end = next ? Math.floor((next.start + t.end) / 2) : t.end;
    if (next) end = Math.floor(end / multiple) * multiple;
    end = Math.max(start, Math.min(end, t.end));
    spans.push({ start, end });
    start = end;
  });
  return spans;
}

/**
 * Box-filter downscale of a [C, h, w] tensor to [C, oh, ow] (each output value is the mean of the input cells its
 * bin covers; bins split the input as evenly as integers allow).
 */
export function downscaleArea(data: Float32Array, channels: number, h: number, w: number, oh: number, ow: number): Float32Array {
  if (oh > h || ow > w || oh < 1 || ow < 1) throw new Error(`downscaleArea: ${h}x${w} -> ${oh}x${ow} is not a downscale`);
  const out = new Float32Array(channels * oh * ow);
  const ys = Array.from({ length: oh + 1 }, (_, i) => Math.floor((i * h) / oh));
  const xs = Array.from({ length: ow + 1 }, (_, i) => Math.floor((i * w) / ow));
  for (let c = 0; c < channels; c++) {
    for (let oy = 0; oy < oh; oy++) {
      for (let ox = 0; ox < ow; ox++) {
        let s = 0;
        for (let y = ys[oy]!; y < ys[oy + 1]!; y++) for (let x = xs[ox]!; x < xs[ox + 1]!; x++) s += data[(c * h + y) * w + x]!;
        out[(c * oh + oy) * ow + ox] = s / ((ys[oy + 1]! - ys[oy]!) * (xs[ox + 1]! - xs[ox]!));
      }
    }
  }
  return out;
}
