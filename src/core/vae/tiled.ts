/**
 * Tiled VAE decoding with the normalisation statistics of the whole image. The model runs behind a backend (three
 * graphs: the plain decoder, its statistics graph, its tile graph; see src/onnx/vae-norm-graph.ts); this module plans
 * the tiles, gets the statistics and blends. Portable: no Node APIs.
 *
 * Statistics modes:
 * - 'estimate': one run of the statistics graph on the latent downscaled (box filter) to fit one tile, then one
 *   tiled pass that normalises every tile with those statistics.
 * - 'exact': starts from the estimate, then repeats tiled passes; each pass normalises with the statistics of the
 *   previous one and measures, for every norm layer, the statistics of its input over the part of the image each
 *   tile owns, combined over the tiles. Layer k's statistics depend only on layers before it, so after k passes the
 *   first k layers are exact (up to the tiles' border effects); the passes stop when the statistics stop changing
 *   (statsChange below `tolerance`) or after `maxPasses`. The image of the last pass is the result.
 * - 'off': tiles normalise with their own statistics (the old behaviour; colours shift between tiles).
 */
import { axisWeights, blendTile, planAxis, validateTileOptions, type AxisTile } from './tiling.ts';
import { StatsAccumulator, downscaleArea, ownedSpans, packAffine, statsChange, unpackStats, type NormLayer, type NormStats } from './norm-stats.ts';

export type TileStatsMode = 'exact' | 'estimate' | 'off';

export const TILE_STATS_MODES: readonly TileStatsMode[] = ['exact', 'estimate', 'off'];

export interface DecodedImage {
  data: Float32Array;
  height: number;
  width: number;
}

/** What runs the decoder. `layers` is the norm layers of the derived graphs, or why there are none. */
export interface TiledVaeBackend {
  norms: { layers: NormLayer[] } | { reason: string };
  /** The plain decoder on a [C, h, w] input. */
  run(input: Float32Array, channels: number, height: number, width: number): Promise<DecodedImage>;
  /** The statistics graph: the decode and the flat statistics of every norm layer. */
  runStats(input: Float32Array, channels: number, height: number, width: number): Promise<{ stats: Float32Array }>;
  /** The tile graph with the given affine maps; statistics over `region` ([y0, x0, y1, x1], input pixels). */
  runTile(
    input: Float32Array, channels: number, height: number, width: number, affine: Float32Array, region: readonly [number, number, number, number],
  ): Promise<DecodedImage & { stats: Float32Array }>;
}

export interface TiledDecodeOptions {
  tileSize: number;
  overlap: number;
  stats: TileStatsMode;
  /** Passes of 'exact' at most (default: the number of norm layers + 1, which makes every layer exact). */
  maxPasses?: number;
  /**
   * Largest side (input pixels) the estimate decodes at (default: the tile size, so the estimate costs one tile). At
   * or above the input's size the estimate is the untiled statistics (a measurement device, not a saving).
   */
  estimateMaxSize?: number;
  /** 'exact' stops when statsChange falls below this (default 1e-3). */
  tolerance?: number;
  onTile?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}

export interface TiledDecodeResult extends DecodedImage {
  /** The statistics mode that ran ('off' after a fallback). */
  stats: TileStatsMode;
  /** Tiled passes run. */
  passes: number;
  /** statsChange of the last pass of 'exact' (how far from converged the image's statistics are). */
  lastChange?: number;
  tiles: number;
}

/** Copies the [C, th, tw] window at (y0, x0) out of a [C, h, w] tensor. */
export function cropChw(src: Float32Array, channels: number, h: number, w: number, y: AxisTile, x: AxisTile): Float32Array {
  const th = y.end - y.start;
  const tw = x.end - x.start;
  const part = new Float32Array(channels * th * tw);
  for (let c = 0; c < channels; c++) {
    for (let r = 0; r < th; r++) {
      const at = (c * h + y.start + r) * w + x.start;
      part.set(src.subarray(at, at + tw), (c * th + r) * tw);
    }
  }
  return part;
}

/** The size the estimate decodes at: the input shrunk by one integer factor until it fits one tile. */
export function estimateSize(h: number, w: number, tileSize: number): { height: number; width: number } {
  const k = Math.max(1, Math.ceil(Math.max(h, w) / tileSize));
  return { height: Math.max(1, Math.round(h / k)), width: Math.max(1, Math.round(w / k)) };
}

export async function decodeTiled(
  latent: Float32Array, channels: number, h: number, w: number, backend: TiledVaeBackend, opts: TiledDecodeOptions,
): Promise<TiledDecodeResult> {
  validateTileOptions(opts);
  const ys = planAxis(h, opts.tileSize, opts.overlap);
  const xs = planAxis(w, opts.tileSize, opts.overlap);
  const ownY = ownedSpans(ys);
  const ownX = ownedSpans(xs);
  const total = ys.length * xs.length;
  let mode = opts.stats;
  if (mode !== 'off' && 'reason' in backend.norms) {
    opts.onWarning?.(`Tiled VAE decoding falls back to per-tile normalisation (colours may shift between tiles): ${backend.norms.reason}`);
    mode = 'off';
  }
  const layers = 'layers' in backend.norms ? backend.norms.layers : [];
  // A decoder without norm layers is local: plain tiles are already right.
  if (layers.length === 0) mode = 'off';

  let canvas: Float32Array | undefined;
  let scale = 0;
  let wy: Float32Array[] = [];
  let wx: Float32Array[] = [];
  const place = (r: DecodedImage, iy: number, ix: number) => {
    const ty = ys[iy]!;
    const tx = xs[ix]!;
    if (!canvas) {
      scale = r.height / (ty.end - ty.start);
      canvas = new Float32Array(3 * h * scale * w * scale);
      wy = axisWeights(ys, h, opts.overlap, scale);
      wx = axisWeights(xs, w, opts.overlap, scale);
    }
    blendTile(canvas, h * scale, w * scale, r.data, { y: ty, x: tx }, wy[iy]!, wx[ix]!, scale);
  };

  if (mode === 'off') {
    let done = 0;
    for (const [iy, ty] of ys.entries()) {
      for (const [ix, tx] of xs.entries()) {
        const part = cropChw(latent, channels, h, w, ty, tx);
        place(await backend.run(part, channels, ty.end - ty.start, tx.end - tx.start), iy, ix);
        opts.onTile?.(++done, total);
      }
    }
    return { data: canvas!, height: h * scale, width: w * scale, stats: 'off', passes: 1, tiles: total };
  }

  // The estimate: the statistics graph on the latent shrunk to fit one tile.
  const small = estimateSize(h, w, opts.estimateMaxSize ?? opts.tileSize);
  const smallLatent = small.height === h && small.width === w ? latent : downscaleArea(latent, channels, h, w, small.height, small.width);
  let stats: NormStats = unpackStats(layers, (await backend.runStats(smallLatent, channels, small.height, small.width)).stats, 1);
  const maxPasses = mode === 'exact' ? (opts.maxPasses ?? layers.length + 1) : 1;
  const tolerance = opts.tolerance ?? 1e-3;
  let passes = 0;
  let lastChange: number | undefined;
  let done = 0;
  const totalWork = total * maxPasses;
  while (passes < maxPasses) {
    passes++;
    canvas?.fill(0);
    const affine = packAffine(layers, stats);
    const acc = new StatsAccumulator(layers);
    for (const [iy, ty] of ys.entries()) {
      for (const [ix, tx] of xs.entries()) {
        const part = cropChw(latent, channels, h, w, ty, tx);
        const oy = ownY[iy]!;
        const ox = ownX[ix]!;
        const region = [oy.start - ty.start, ox.start - tx.start, oy.end - ty.start, ox.end - tx.start] as const;
        const r = await backend.runTile(part, channels, ty.end - ty.start, tx.end - tx.start, affine, region);
        place(r, iy, ix);
        if (mode === 'exact') acc.add(unpackStats(layers, r.stats, (oy.end - oy.start) * (ox.end - ox.start)));
        opts.onTile?.(++done, totalWork);
      }
    }
    if (mode !== 'exact') break;
    const next = acc.result();
    lastChange = statsChange(layers, stats, next);
    stats = next;
    if (lastChange < tolerance) break;
  }
  if (done < totalWork) opts.onTile?.(totalWork, totalWork);
  return { data: canvas!, height: h * scale, width: w * scale, stats: mode, passes, lastChange, tiles: total };
}
