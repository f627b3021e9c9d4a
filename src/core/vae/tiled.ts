/**
 * Tiled VAE decoding with the normalisation statistics of the whole image. The model runs behind a backend (three
 * graphs: the plain decoder, its statistics graph, its tile graph; see src/graph/vae-norm-graph.ts); this module plans
 * the tiles, gets the statistics and blends. Portable: no Node APIs.
 *
 * Statistics modes:
 * - 'estimate': one run of the statistics graph on the latent downscaled (box filter) to fit one tile, then one
 *   tiled pass that normalises every tile with those statistics.
 * - 'exact': the decoder split at its norm layers. Layer k's statistics depend only on the layers before it; for
 *   k = 1..L the segment of the tile graph up to layer k runs over all tiles, fed the statistics found so far, and
 *   each tile contributes its input's statistics over the part of the image it owns (combined exactly over the
 *   tiles). Then the rest of the model makes the image. Each segment starts where the last kept one ended: a tile's
 *   state there (the tensors live at that cut) is kept while all tiles' states fit `statsMemory`, else the segment
 *   starts further back (at worst at the input). With every state kept, the cost is about one pass; with none, one
 *   prefix of the model per layer plus a pass. Exact up to the tiles' border
 *   effects. Without segments (runSegment absent), whole passes of the tile graph are repeated from the estimate
 *   (after k passes the first k layers are exact) until the statistics stop changing (statsChange below
 *   `tolerance`) or after `maxPasses`; the image of the last pass is the result.
 * - 'off': tiles normalise with their own statistics (the old behaviour; colours shift between tiles).
 */
import { AsgdError, invalidArgument } from '../errors.ts';
import { VAE_OPTIONS, optionSpec } from '../options/registry.ts';
import { checkOption } from '../options/spec.ts';
import { NO_ATTENTION_REASON } from './attention-chunks.ts';
import { axisWeights, blendTile, planAxis, validateTileOptions, type AxisTile } from './tiling.ts';
import { StatsAccumulator, downscaleArea, ownedSpans, packAffine, statsChange, unpackStats, type NormLayer, type NormStats } from './norm-stats.ts';

export type TileStatsMode = 'exact' | 'estimate' | 'off';

/** MiB of tile states 'exact' keeps by default (the options registry's). */
const STATS_MEMORY_DEFAULT = optionSpec(VAE_OPTIONS, 'statsMemory').default as number;

export const TILE_STATS_MODES: readonly TileStatsMode[] = ['exact', 'estimate', 'off'];

/**
 * Where the self-attention runs when tiling: 'global' computes the decoder up to just after its attention (the head)
 * once on the whole latent and tiles the rest (the tail); an encoder is tiled up to just before its attention and the
 * rest runs once; 'tile' runs the whole model per tile, so the attention sees only its tile.
 */
export type VaeAttentionMode = 'auto' | 'global' | 'tile';

export const VAE_ATTENTION_MODES: readonly VaeAttentionMode[] = ['auto', 'global', 'tile'];

/**
 * 'auto' runs the attention globally up to this latent area (256 x 256: 2048 px), per tile above it. The part run
 * once holds whole-latent tensors of the decoder's mid-block width: on SD's decoder (512 channels) a 4096 px decode
 * peaked at 5.3 GiB with 'global' against 1.6 GiB with 'tile' (docs/vae-tiling.md, Memory).
 */
export const AUTO_GLOBAL_MAX_LATENT_AREA = 256 * 256;

/** The attention mode a tiled decode or encode of an h x w latent runs with ('auto' resolved). */
export function attentionModeFor(mode: VaeAttentionMode | undefined, h: number, w: number): 'global' | 'tile' {
  if (mode === 'auto') return h * w <= AUTO_GLOBAL_MAX_LATENT_AREA ? 'global' : 'tile';
  return mode ?? 'tile';
}

/**
 * A decoder split after its attention, or an encoder split before it (src/graph/vae-attention-split.ts), for
 * attention 'global'.
 */
export interface GlobalAttentionBackend {
  /**
   * The part with the attention, on the whole latent grid [C, h, w]: a decoder's head (the latent in, the tensor
   * after the attention out, [C', h, w]) or an encoder's tail (the tensor before the attention in, the latent out).
   */
  runGlobal(input: Float32Array, channels: number, height: number, width: number): Promise<DecodedImage & { channels: number; chunks?: number }>;
  /** The other part, run over tiles exactly as the whole model is, statistics included: a decoder's tail, an encoder's head. */
  tiled: TiledVaeBackend;
  /** Why the global part cannot run on an h x w latent (e.g. unchunkable attention scores over the memory budget). */
  check?(height: number, width: number): string | undefined;
}

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
  /**
   * Segment (from, to) of the tile graph (src/graph/vae-segments.ts): resumes a tile at cut `from` from its state there
   * (from -1: from the tile's input, no state) and runs to cut `to`, just before norm layer `to` applies its map:
   * that layer's statistics over `region` and, when `keep`, the tile's state at `to` (a state given with `keep` is
   * replaced by it, so the backend may detach its buffers). To 'end': the decoded tile.
   * When present, 'exact' runs the layers in order, every tile resumed from the latest cut whose states fit the memory
   * budget (`statsMemory`), instead of repeating whole passes.
   */
  runSegment?(
    from: number, to: number | 'end', input: Float32Array, channels: number, height: number, width: number, affine: Float32Array,
    region: readonly [number, number, number, number], state: TileState | undefined, keep: boolean,
  ): Promise<DecodedImage & { stats: Float32Array; state?: TileState }>;
  /**
   * Frees the states the backend holds itself (`TileState.held`: on its GPU) once the tiling no longer needs them: a
   * state replaced by the next cut's, one not kept, the last ones after the image's pass, all of them when a decode
   * fails. The backend never frees a held state on its own. Needed by backends that hold states.
   */
  releaseStates?(states: TileState[]): Promise<void>;
  /** The model split at its attention (a decoder after it, an encoder before it), or why it cannot be (attention 'global'; absent: not offered). */
  attention?: GlobalAttentionBackend | { reason: string };
}

/** A tensor of a tile's state, as ONNX Runtime gives it. */
export interface StateTensor {
  type: string;
  dims: number[];
  data: Float32Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array;
}

/**
 * A tile's state at a cut of the tile graph: the tensors live there, by name (opaque to the tiling). Either on the
 * host (`tensors`), or held by the backend on its device (`held`, a handle; `tensors` empty) until the tiling
 * releases it (TiledVaeBackend.releaseStates).
 */
export interface TileState {
  tensors: Record<string, StateTensor>;
  /** The backend's handle of the tensors it holds (on a GPU), instead of `tensors`. */
  held?: number;
  /** Their data's bytes (on the host or the device). */
  bytes: number;
}

function cloneState(state: TileState | undefined): TileState | undefined {
  // A held state is not moved by a run (the backend frees it only when released): nothing to copy.
  if (!state || state.held !== undefined) return state;
  const tensors = Object.fromEntries(Object.entries(state.tensors).map(([n, t]) => [n, { ...t, data: t.data.slice() }]));
  return { tensors, bytes: state.bytes };
}

/** The buffers of a state, to transfer it between threads. */
export function stateBuffers(state: TileState | undefined): ArrayBuffer[] {
  return state ? Object.values(state.tensors).map((t) => t.data.buffer as ArrayBuffer) : [];
}

export interface TiledDecodeOptions {
  tileSize: number;
  overlap: number;
  stats: TileStatsMode;
  /**
   * Run 'exact' as repeated whole passes of the tile graph, at most this many (default: layer by layer through the
   * tile graph's segments when the backend has them, else passes until converged, at most the number of norm layers + 1).
   */
  maxPasses?: number;
  /**
   * Largest side (input pixels) the estimate decodes at (default: the tile size, so the estimate costs one tile). At
   * or above the input's size the estimate is the untiled statistics (a measurement device, not a saving).
   */
  estimateMaxSize?: number;
  /**
   * MiB of tile states 'exact' may hold (default: the options registry's `statsMemory`): with them every layer resumes
   * each tile where the last kept cut left it; 0 recomputes each layer from the input (one pass of the model's
   * prefix per layer: 28-31 passes on SD's decoder).
   */
  statsMemory?: number;
  /** 'exact' stops when statsChange falls below this (default 1e-3). */
  tolerance?: number;
  /** Where the attention runs (default 'tile'; the pipeline's default is the options registry's, 'auto'). */
  attention?: VaeAttentionMode;
  onTile?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}

export interface TiledDecodeResult extends DecodedImage {
  /** The statistics mode that ran ('off' after a fallback). */
  stats: TileStatsMode;
  /** Tiled passes run. */
  passes: number;
  /** 'exact' by segments: the last cut whose tile states were kept (the image's pass resumed there; -1: none). */
  resumedFrom?: number;
  /** statsChange of the last pass of 'exact' (how far from converged the image's statistics are). */
  lastChange?: number;
  tiles: number;
  /** Where the attention ran ('tile' after a fallback); set by decodeTiled. */
  attention?: 'global' | 'tile';
  /** Query chunks the global part's attention ran in (global attention; 0: it ran whole). */
  headChunks?: number;
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

/** Refuses options a tiled run would otherwise misread (an unknown mode ran as another) before any model call. */
function checkTiledOptions(opts: TiledDecodeOptions): void {
  validateTileOptions(opts);
  checkOption(optionSpec(VAE_OPTIONS, 'stats'), opts.stats, 'stats');
  if (opts.attention !== undefined) checkOption(optionSpec(VAE_OPTIONS, 'attention'), opts.attention, 'attention');
  if (opts.statsMemory !== undefined) checkOption(optionSpec(VAE_OPTIONS, 'statsMemory'), opts.statsMemory, 'statsMemory');
  // Measurement settings (library only): a limit below one would leave the image without a pass.
  for (const key of ['maxPasses', 'estimateMaxSize'] as const) {
    const v = opts[key];
    if (v !== undefined && !(Number.isInteger(v) && v >= 1)) throw invalidArgument(key, 'an integer >= 1', v, `Use a positive integer, or leave ${key} unset for the default`);
  }
  const t = opts.tolerance;
  if (t !== undefined && !(Number.isFinite(t) && t >= 0)) throw invalidArgument('tolerance', 'a number >= 0', t, 'Use e.g. 1e-3, or leave tolerance unset for the default');
}

/** Refuses an input whose length is not channels x height x width (a tile would be cut out of the wrong place). */
export function checkInputLength(name: string, input: Float32Array, channels: number, height: number, width: number): void {
  const want = channels * height * width;
  if (input.length === want) return;
  throw new AsgdError(`Invalid ${name}`, {
    kind: 'invalid-argument', parameter: name, expected: `${want} values (${channels} channels x ${height} x ${width})`, received: `${input.length} values`,
    hint: `Pass the ${name} as one [C, height, width] array with its own channels, height and width`,
  });
}

/**
 * Tiled decoding of a latent [C, h, w] (tiles and overlap in latent pixels). The result is the image [3, 8h, 8w]
 * (the factor is read from the decoder's output).
 */
export async function decodeTiled(
  latent: Float32Array, channels: number, h: number, w: number, backend: TiledVaeBackend, opts: TiledDecodeOptions,
): Promise<TiledDecodeResult> {
  checkTiledOptions(opts);
  checkInputLength('latent', latent, channels, h, w);
  if (attentionModeFor(opts.attention, h, w) === 'global') {
    const split = backend.attention;
    let why = !split ? 'the backend does not split the decoder at its attention' : 'reason' in split ? split.reason : split.check?.(h, w);
    if (split && !('reason' in split) && why === undefined) {
      // A copy: backends may transfer (detach) the buffers they are given.
      const head = await split.runGlobal(latent.slice(), channels, h, w);
      if (head.height === h && head.width === w) {
        const r = await runTiled(head.data, head.channels, h, w, 1, split.tiled, opts);
        return { ...r, attention: 'global', headChunks: head.chunks };
      }
      why = `the tensor after its attention is ${head.width}x${head.height}, not on the latent's ${w}x${h} grid`;
    }
    // A decoder without attention has nothing to compute globally: it tiles whole, silently.
    if (why !== NO_ATTENTION_REASON) opts.onWarning?.(`Tiled VAE decoding falls back to per-tile attention (each tile's attention sees only the tile): ${why}`);
  }
  return { ...(await runTiled(latent, channels, h, w, 1, backend, opts)), attention: 'tile' };
}

/**
 * Tiled encoding of an image [3, H, W] (H and W multiples of 8; tile size and overlap in latent pixels, i.e. eighths
 * of the image). The result is the encoder's output [C, H/8, W/8] (all its channels: mean and logvar for
 * latent_parameters). The encoder's norm layers run at 1/1 to 1/8 of the image, so owned regions are cut at
 * multiples of 8 image pixels.
 */
export async function encodeTiled(
  image: Float32Array, height: number, width: number, backend: TiledVaeBackend, opts: TiledDecodeOptions,
): Promise<TiledDecodeResult & { channels: number }> {
  checkTiledOptions(opts);
  for (const [name, size] of [['height', height], ['width', width]] as const) {
    if (!Number.isInteger(size) || size <= 0 || size % 8 !== 0) throw invalidArgument(name, 'a multiple of 8 (image pixels)', size, 'Pad the image to a multiple of 8, e.g. by repeating its edges');
  }
  checkInputLength('image', image, 3, height, width);
  const h = height / 8;
  const w = width / 8;
  if (attentionModeFor(opts.attention, h, w) === 'global') {
    // The mirror of decoding: the encoder up to just before its attention in tiles, the rest once on the whole grid.
    const split = backend.attention;
    let why = !split ? 'the backend does not split the encoder at its attention' : 'reason' in split ? split.reason : split.check?.(h, w);
    if (split && !('reason' in split) && why === undefined) {
      const head = await runTiled(image, 3, h, w, 8, split.tiled, opts);
      if (head.height === h && head.width === w) {
        const r = await split.runGlobal(head.data, head.channels, h, w);
        return { ...head, data: r.data, channels: r.channels, height: r.height, width: r.width, attention: 'global', headChunks: r.chunks };
      }
      why = `the tensor before its attention is ${head.width}x${head.height}, not on the latent's ${w}x${h} grid`;
    }
    if (why !== NO_ATTENTION_REASON) opts.onWarning?.(`Tiled VAE encoding falls back to per-tile attention (each tile's attention sees only the tile): ${why}`);
  }
  return { ...(await runTiled(image, 3, h, w, 8, backend, opts)), attention: 'tile' };
}

/**
 * Runs a VAE half over tiles of a grid of gh x gw cells; the input has `inScale` pixels per cell (1 for the decoder's
 * latent, 8 for the encoder's image). Tiles are planned and blended in cells; the output's pixels per cell are read
 * from the first tile's output.
 */
async function runTiled(
  input: Float32Array, inChannels: number, gh: number, gw: number, inScale: number, backend: TiledVaeBackend, opts: TiledDecodeOptions,
): Promise<TiledDecodeResult & { channels: number }> {
  validateTileOptions(opts);
  const ys = planAxis(gh, opts.tileSize, opts.overlap);
  const xs = planAxis(gw, opts.tileSize, opts.overlap);
  const ownY = ownedSpans(ys);
  const ownX = ownedSpans(xs);
  const total = ys.length * xs.length;
  const H = gh * inScale;
  const W = gw * inScale;
  const inAxis = (t: AxisTile): AxisTile => ({ start: t.start * inScale, end: t.end * inScale });
  let mode = opts.stats;
  if (mode !== 'off' && 'reason' in backend.norms) {
    opts.onWarning?.(`Tiled VAE ${inScale === 1 ? 'decoding' : 'encoding'} falls back to per-tile normalisation (colours may shift between tiles): ${backend.norms.reason}`);
    mode = 'off';
  }
  const layers = 'layers' in backend.norms ? backend.norms.layers : [];
  // A model without norm layers is local: plain tiles are already right.
  if (layers.length === 0) mode = 'off';

  let canvas: Float32Array | undefined;
  let scale = 0;
  let outChannels = 0;
  let wy: Float32Array[] = [];
  let wx: Float32Array[] = [];
  const place = (r: DecodedImage, iy: number, ix: number) => {
    const ty = ys[iy]!;
    const tx = xs[ix]!;
    if (!canvas) {
      scale = r.height / (ty.end - ty.start);
      outChannels = r.data.length / (r.height * r.width);
      canvas = new Float32Array(outChannels * gh * scale * gw * scale);
      wy = axisWeights(ys, gh, opts.overlap, scale);
      wx = axisWeights(xs, gw, opts.overlap, scale);
    }
    blendTile(canvas, gh * scale, gw * scale, r.data, { y: ty, x: tx }, wy[iy]!, wx[ix]!, scale, outChannels);
  };
  const tileInput = (ty: AxisTile, tx: AxisTile) => cropChw(input, inChannels, H, W, inAxis(ty), inAxis(tx));
  const result = (passes: number, lastChange?: number) =>
    ({ data: canvas!, channels: outChannels, height: gh * scale, width: gw * scale, stats: mode, passes, lastChange, tiles: total });

  if (mode === 'off') {
    let done = 0;
    for (const [iy, ty] of ys.entries()) {
      for (const [ix, tx] of xs.entries()) {
        place(await backend.run(tileInput(ty, tx), inChannels, (ty.end - ty.start) * inScale, (tx.end - tx.start) * inScale), iy, ix);
        opts.onTile?.(++done, total);
      }
    }
    return result(1);
  }

  const tileOrder = ys.flatMap((_, iy) => xs.map((_, ix) => [iy, ix] as const));
  const regionOf = (iy: number, ix: number) => {
    const ty = ys[iy]!;
    const tx = xs[ix]!;
    const oy = ownY[iy]!;
    const ox = ownX[ix]!;
    const region = [(oy.start - ty.start) * inScale, (ox.start - tx.start) * inScale, (oy.end - ty.start) * inScale, (ox.end - tx.start) * inScale] as const;
    return { region, count: (oy.end - oy.start) * (ox.end - ox.start) };
  };

  if (mode === 'exact' && backend.runSegment && opts.maxPasses === undefined) {
    // Layer by layer: segment k over all tiles, with layers < k already exact, each tile resumed at the last cut kept.
    const states: (TileState | undefined)[] = new Array(total).fill(undefined);
    // States the backend holds are freed as soon as they are not needed, and all of them if the decode fails.
    const release = async (list: (TileState | undefined)[]) => {
      const held = list.filter((st): st is TileState => st?.held !== undefined);
      if (held.length > 0) await backend.releaseStates?.(held);
    };
    try {
      const runSegment = backend.runSegment.bind(backend);
      const stats: NormStats = { mean: layers.map((l) => new Float64Array(l.groups)), variance: layers.map((l) => new Float64Array(l.groups).fill(1)), count: 1 };
      const budget = (opts.statsMemory ?? STATS_MEMORY_DEFAULT) * 2 ** 20;
      let from = -1;
      const totalWork = total * (layers.length + 1);
      let done = 0;
      for (const [k, layer] of layers.entries()) {
        const affine = packAffine(layers, stats);
        const acc = new StatsAccumulator([layer]);
        // Whether the states at cut k are kept: decided on the first tile (tiles have one size), by the budget.
        let keep: boolean | undefined = budget > 0 ? undefined : false;
        for (const [i, [iy, ix]] of tileOrder.entries()) {
          const ty = ys[iy]!;
          const tx = xs[ix]!;
          const { region, count } = regionOf(iy, ix);
          // Given with keep, a state may be moved to the backend (detached): a copy while it may still be needed.
          const given = keep === undefined ? cloneState(states[i]) : states[i];
          const r = await runSegment(from, k, tileInput(ty, tx), inChannels, (ty.end - ty.start) * inScale, (tx.end - tx.start) * inScale, affine, region, given, keep !== false);
          acc.add(unpackStats([layer], r.stats, count));
          keep ??= r.state !== undefined && r.state.bytes * total <= budget;
          // A tile's state at k replaces its state at the cut before: the tiles after it still read theirs.
          const old = states[i];
          if (keep) states[i] = r.state;
          await release(keep ? [old] : [r.state]);
          opts.onTile?.(++done, totalWork);
        }
        if (keep) from = k;
        const layerStats = acc.result();
        stats.mean[k] = layerStats.mean[0]!;
        stats.variance[k] = layerStats.variance[0]!;
      }
      const affine = packAffine(layers, stats);
      for (const [i, [iy, ix]] of tileOrder.entries()) {
        const ty = ys[iy]!;
        const tx = xs[ix]!;
        const { region } = regionOf(iy, ix);
        place(await runSegment(from, 'end', tileInput(ty, tx), inChannels, (ty.end - ty.start) * inScale, (tx.end - tx.start) * inScale, affine, region, states[i], false), iy, ix);
        const last = states[i];
        states[i] = undefined;
        await release([last]);
        opts.onTile?.(++done, totalWork);
      }
      return { ...result(layers.length + 1), resumedFrom: from };
    } catch (err) {
      await release(states).catch(() => undefined);
      throw err;
    }
  }

  // The estimate: the statistics graph on the input shrunk to fit one tile.
  const small = estimateSize(gh, gw, opts.estimateMaxSize ?? opts.tileSize);
  // A copy when not downscaled: backends may transfer (detach) the buffers they are given.
  const smallInput = small.height === gh && small.width === gw
    ? input.slice()
    : downscaleArea(input, inChannels, H, W, small.height * inScale, small.width * inScale);
  let stats: NormStats = unpackStats(layers, (await backend.runStats(smallInput, inChannels, small.height * inScale, small.width * inScale)).stats, 1);
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
        const { region, count } = regionOf(iy, ix);
        const r = await backend.runTile(tileInput(ty, tx), inChannels, (ty.end - ty.start) * inScale, (tx.end - tx.start) * inScale, affine, region);
        place(r, iy, ix);
        if (mode === 'exact') acc.add(unpackStats(layers, r.stats, count));
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
  return result(passes, lastChange);
}
