/**
 * A pipeline's VAE decoding and tiled encoding over a runner of ONNX sessions (Node: worker threads running graphs
 * derived on disk, src/node/vae-decode.ts; the browser: a device Web Worker deriving them in memory,
 * src/browser/vae-runner.ts): whether to tile, which derived graphs the settings need, and the backend decodeTiled
 * or encodeTiled runs. Portable: no Node APIs.
 */
import type { VaeDecodeOptions } from '../params.ts';
import { nonFinite } from '../tensor.ts';
import { attentionModeFor, decodeTiled, encodeTiled, type DecodedImage, type GlobalAttentionBackend, type TiledDecodeResult, type TiledVaeBackend, type TileState, type TileStatsMode } from './tiled.ts';

/** Runs one VAE half (decoder or encoder) and its derived graphs. */
export interface VaeGraphRunner {
  /**
   * A backend over the model: with its norm-statistics graphs when `norms` is 'derived' (its `norms` field names
   * why when they cannot be derived), else the plain model only, `norms` saying why.
   */
  modelBackend(norms: 'derived' | { reason: string }): Promise<TiledVaeBackend>;
  /** The model split at its attention, its tiled part with statistics graphs unless `stats` is 'off'; or why not. */
  attentionSplit(stats: TileStatsMode): Promise<GlobalAttentionBackend | { reason: string }>;
}

export interface VaeRunCallbacks {
  onTile?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}

/**
 * What the VAE decoder takes for a denoised latent, as diffusers computes it: latent / scaling_factor + shift_factor
 * (the shift is 0 except for SD3's VAE).
 */
export function decoderInput(latent: Float32Array, vae: { scalingFactor: number; shiftFactor?: number }): Float32Array {
  const shift = vae.shiftFactor ?? 0;
  const out = new Float32Array(latent.length);
  if (shift === 0) {
    const inv = 1 / vae.scalingFactor;
    for (let i = 0; i < latent.length; i++) out[i] = latent[i]! * inv;
  } else {
    for (let i = 0; i < latent.length; i++) out[i] = latent[i]! / vae.scalingFactor + shift;
  }
  return out;
}

/** Whether an h x w latent is decoded in tiles: larger than a tile (tiling 'auto'), or asked ('on'). */
export function tilingWanted(opts: Pick<VaeDecodeOptions, 'tiling' | 'tileSize'>, h: number, w: number): boolean {
  return opts.tiling === 'on' || (opts.tiling === 'auto' && (h > opts.tileSize || w > opts.tileSize));
}

/**
 * The backend a tiled run of an h x w latent needs: the attention split when the attention runs globally; the whole
 * model's statistics graphs unless statistics are off or the split runs instead (its tiled part has its own: that
 * saves deriving the whole model's).
 */
export async function tiledBackend(runner: VaeGraphRunner, opts: Pick<VaeDecodeOptions, 'stats' | 'attention'>, h: number, w: number): Promise<TiledVaeBackend> {
  const split = attentionModeFor(opts.attention, h, w) === 'global' ? await runner.attentionSplit(opts.stats) : undefined;
  const splitRuns = split !== undefined && !('reason' in split) && split.check?.(h, w) === undefined;
  const norms = opts.stats === 'off' ? { reason: 'statistics off' } : splitRuns ? { reason: 'the whole model was not rewritten: its attention split runs instead' } : 'derived';
  return { ...(await runner.modelBackend(norms)), attention: split };
}

/**
 * Decodes a latent [C, h, w] already divided by the scaling factor: whole, or tiled with the whole image's
 * normalisation statistics and the attention where `opts.attention` puts it (decodeTiled warns when it falls back).
 */
export async function decodeLatentWith(
  runner: VaeGraphRunner & { run(input: Float32Array, channels: number, height: number, width: number): Promise<DecodedImage> },
  scaled: Float32Array, channels: number, h: number, w: number, opts: VaeDecodeOptions, cb: VaeRunCallbacks = {},
): Promise<DecodedImage & { tiled?: TiledDecodeResult }> {
  // Counted first (a runner may hand the latent's buffer over to a worker), and only where a warning can be given.
  const latentBroken = cb.onWarning !== undefined && nonFinite(scaled) > 0;
  if (!tilingWanted(opts, h, w)) {
    const r = await runner.run(scaled, channels, h, w);
    cb.onTile?.(1, 1);
    warnNonFinite(r.data, latentBroken, cb);
    return r;
  }
  const backend = await tiledBackend(runner, opts, h, w);
  const tiled = await decodeTiled(scaled, channels, h, w, backend, {
    tileSize: opts.tileSize, overlap: opts.overlap, stats: opts.stats, statsMemory: opts.statsMemory, attention: opts.attention, onTile: cb.onTile, onWarning: cb.onWarning,
  });
  warnNonFinite(tiled.data, latentBroken, cb);
  return { data: tiled.data, height: tiled.height, width: tiled.width, tiled };
}

/**
 * VAE encoding of an image [3, H, W] in [-1, 1] (sides multiples of 8) to the latent mean [C, H/8, W/8] (not yet
 * multiplied by the scaling factor): whole, or tiled like decoding (tile size and overlap in latent pixels) with the
 * whole image's normalisation statistics and the attention where `opts.attention` puts it.
 */
export async function encodeImageWith(
  runner: VaeGraphRunner & { run(input: Float32Array, channels: number, height: number, width: number): Promise<DecodedImage & { channels: number }> },
  image: Float32Array, height: number, width: number, opts: VaeDecodeOptions, cb: VaeRunCallbacks = {},
): Promise<{ data: Float32Array; channels: number; height: number; width: number; tiled?: TiledDecodeResult }> {
  const h = height / 8;
  const w = width / 8;
  if (!tilingWanted(opts, h, w)) {
    const r = await runner.run(image, 3, height, width);
    cb.onTile?.(1, 1);
    return { data: r.data, channels: r.channels, height: r.height, width: r.width };
  }
  const backend = await tiledBackend(runner, opts, h, w);
  const r = await encodeTiled(image, height, width, backend, {
    tileSize: opts.tileSize, overlap: opts.overlap, stats: opts.stats, statsMemory: opts.statsMemory, attention: opts.attention, onTile: cb.onTile, onWarning: cb.onWarning,
  });
  return { data: r.data, channels: r.channels, height: r.height, width: r.width, tiled: r };
}

/**
 * Warns when a decoded image holds values that are not finite (drawn as black): what a float16 decoder gives where
 * its activations overflow float16's range, as SDXL's VAE does. Not where the latent itself is not finite.
 */
function warnNonFinite(data: Float32Array, latentBroken: boolean, cb: VaeRunCallbacks): void {
  if (!cb.onWarning) return; // previews: nobody to tell
  // A latent that is not finite already decodes to NaN whatever the decoder: the denoising's own warning says why.
  if (latentBroken) return;
  const n = nonFinite(data);
  if (n > 0) {
    cb.onWarning(
      `The VAE decoder gave ${n} of ${data.length} values that are not finite numbers (NaN or infinity), drawn as black: a float16 decoder ` +
      'whose activations overflow gives them. Set "force_upcast": true in the VAE\'s config.json to run it in float32, or use a float32 VAE export (in Node: --vae)',
    );
  }
}

/**
 * What a derived graph run sends to the worker holding the model: the input [1, C, h, w] and, for the tile graph and
 * its segments, the affine maps and the owned region; for a segment, the tile's state at its first cut and whether
 * to return the state at its last.
 */
export interface NormGraphInput {
  input: Float32Array;
  channels: number;
  height: number;
  width: number;
  affine?: Float32Array;
  region?: number[];
  state?: TileState;
  keep?: boolean;
}

/** A segment of the tile graph: from cut `from` (-1: the input) to cut `to` (before norm layer `to`) or the end. */
export interface SegmentSpan {
  from: number;
  to: number | 'end';
}

/** One of a model's norm-statistics graphs (src/graph/vae-norm-graph.ts): statistics, tile, or a segment of the tile graph (src/graph/vae-segments.ts). */
export type NormGraphKind = 'stats' | 'tile' | { segment: SegmentSpan };

/** A segment's name in labels and session keys. */
export function segmentName(s: SegmentSpan): string {
  return `segment from ${s.from < 0 ? 'the input' : `norm layer ${s.from}`} to ${s.to === 'end' ? 'the end' : `norm layer ${s.to}`}`;
}

/** Runs a norm-statistics graph; `tile` (affine maps, owned region; a segment's state) for the tile graph and its segments. */
export type NormGraphRun = (
  graph: NormGraphKind, input: Float32Array, channels: number, height: number, width: number,
  tile?: { affine: Float32Array; region: readonly number[]; state?: TileState; keep?: boolean },
) => Promise<DecodedImage & { stats: Float32Array; state?: TileState }>;

/**
 * A backend whose plain model runs through `run` and whose derived graphs run through `runGraph` (absent: `norms`
 * says why); `releaseStates` frees the tile states the runner holds on its device (TileState.held).
 */
export function graphBackend(
  norms: TiledVaeBackend['norms'], run: TiledVaeBackend['run'], runGraph: NormGraphRun, releaseStates?: TiledVaeBackend['releaseStates'],
): TiledVaeBackend {
  return {
    ...(releaseStates ? { releaseStates } : {}),
    norms,
    run,
    runStats: (input, c, h, w) => runGraph('stats', input, c, h, w),
    runTile: (input, c, h, w, affine, region) => runGraph('tile', input, c, h, w, { affine, region }),
    runSegment: (from, to, input, c, h, w, affine, region, state, keep) => runGraph({ segment: { from, to } }, input, c, h, w, { affine, region, state, keep }),
  };
}
