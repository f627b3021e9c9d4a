/**
 * VAE decoding for the pipeline: untiled, or tiled with the whole image's normalisation statistics
 * (src/core/vae/tiled.ts) through the derived graphs (src/node/vae-graphs.ts) on the worker that holds the decoder.
 * The coordinator loads neither ONNX Runtime nor the graph surgery until a tiled decode needs it (src/node/vae-local.ts
 * has a backend over sessions in this thread, for benchmarks and tests).
 */
import type { RgbImage } from '../core/image.ts';
import { chwToRgb8 } from '../core/image.ts';
import type { VaeDecodeOptions } from '../core/params.ts';
import { attentionModeFor, decodeTiled, encodeTiled, type DecodedImage, type GlobalAttentionBackend, type TiledDecodeResult, type TiledVaeBackend } from '../core/vae/tiled.ts';
import type { VaeGraphName, WorkerRequest, WorkerResult } from './runner/protocol.ts';
import type { VaeGraphs } from './vae-graphs.ts';

/** Sends a request to the worker holding the VAE decoder. */
export type DecoderRequest = <T extends WorkerResult['type']>(req: WorkerRequest, what: string, transfer?: ArrayBuffer[]) => Promise<Extract<WorkerResult, { type: T }>>;

const prepared = new Map<string, Promise<VaeGraphs>>();

/** The derived graphs of a decoder, prepared once per process and file. */
export function vaeGraphsFor(modelPath: string): Promise<VaeGraphs> {
  let p = prepared.get(modelPath);
  if (!p) {
    p = import('./vae-graphs.ts').then((m) => m.prepareVaeGraphs(modelPath)).catch((err: unknown) => ({ reason: `the derived graphs could not be prepared (${err instanceof Error ? err.message : String(err)})` }));
    prepared.set(modelPath, p);
  }
  return p;
}

/** A backend whose graphs run on a device worker. */
export function workerBackend(request: DecoderRequest, graphs: VaeGraphs, which: 'decoder' | 'encoder' = 'decoder'): TiledVaeBackend {
  const plain = async (input: Float32Array, channels: number, height: number, width: number): Promise<DecodedImage> => {
    if (which === 'encoder') {
      const r = await request<'vaeEncode'>({ type: 'vaeEncode', image: input, height, width }, 'VAE encoding', [input.buffer as ArrayBuffer]);
      return { data: r.data, height: r.height, width: r.width };
    }
    const r = await request<'vaeDecode'>({ type: 'vaeDecode', latent: input, channels, height, width }, 'VAE decoding', [input.buffer as ArrayBuffer]);
    return r;
  };
  const norm = async (graph: VaeGraphName, file: string, input: Float32Array, channels: number, height: number, width: number, tile?: { affine: Float32Array; region: readonly number[] }) => {
    if ('reason' in graphs) throw new Error('workerBackend: no derived graphs');
    const r = await request<'vaeNorm'>(
      {
        type: 'vaeNorm', graph, file, externalDataFolder: graphs.externalDataFolder, input, channels, height, width,
        affine: tile?.affine, region: tile ? [...tile.region] : undefined,
      },
      `VAE ${graph.endsWith('Tile') ? 'tile' : 'statistics'}`,
      [input.buffer as ArrayBuffer],
    );
    return r;
  };
  const prefix = which === 'decoder' ? 'vaeDecoder' : 'vaeEncoder';
  return {
    norms: 'reason' in graphs ? { reason: graphs.reason } : { layers: graphs.layers },
    run: plain,
    runStats: (input, c, h, w) => norm(`${prefix}Stats`, (graphs as { statsFile: string }).statsFile, input, c, h, w),
    runTile: (input, c, h, w, affine, region) => norm(`${prefix}Tile`, (graphs as { tileFile: string }).tileFile, input, c, h, w, { affine, region }),
    runPrefix: (k, input, c, h, w, affine, region) => norm(`${prefix}Prefix`, (graphs as { prefixFiles: string[] }).prefixFiles[k]!, input, c, h, w, { affine, region }),
  };
}

/** The model split at its attention (attention 'global'), or why not; the surgery loads only when needed. */
async function attentionSplit(
  request: DecoderRequest, modelPath: string, stats: VaeDecodeOptions['stats'], half: 'decoder' | 'encoder',
): Promise<GlobalAttentionBackend | { reason: string }> {
  const m = await import('./vae-decode-attention.ts');
  return m.workerAttention(request, await m.vaeAttentionGraphsFor(modelPath, half), stats, half);
}

/**
 * The whole model's statistics graphs: not prepared when statistics are off, or when the attention split will run
 * on this latent (its tiled part has its own; on SD that saves deriving 30 prefix graphs).
 */
async function wholeGraphs(modelPath: string, stats: VaeDecodeOptions['stats'], split: GlobalAttentionBackend | { reason: string } | undefined, h: number, w: number): Promise<VaeGraphs> {
  if (stats === 'off') return { reason: 'statistics off' };
  if (split && !('reason' in split) && split.check?.(h, w) === undefined) return { reason: 'the whole model was not rewritten: its attention split runs instead' };
  return vaeGraphsFor(modelPath);
}

/**
 * The pipeline's VAE decoding: `scaled` is the latent already divided by the scaling factor. Tiles when the latent
 * exceeds the tile (tiling 'auto') or when asked ('on'); warns (once per call) when the decoder's norm layers cannot
 * share statistics.
 */
export async function decodeLatentImage(args: {
  scaled: Float32Array;
  channels: number;
  height: number;
  width: number;
  opts: VaeDecodeOptions;
  decoderPath: string;
  request: DecoderRequest;
  onTile?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}): Promise<RgbImage & { tiled?: TiledDecodeResult }> {
  const { scaled, channels: c, height: h, width: w, opts } = args;
  const tile = opts.tiling === 'on' || (opts.tiling === 'auto' && (h > opts.tileSize || w > opts.tileSize));
  if (!tile) {
    const r = await args.request<'vaeDecode'>({ type: 'vaeDecode', latent: scaled, channels: c, height: h, width: w }, 'VAE decoding', [scaled.buffer as ArrayBuffer]);
    args.onTile?.(1, 1);
    return chwToRgb8(r.data, r.height, r.width);
  }
  const split = attentionModeFor(opts.attention, h, w) === 'global' ? await attentionSplit(args.request, args.decoderPath, opts.stats, 'decoder') : undefined;
  const backend = workerBackend(args.request, await wholeGraphs(args.decoderPath, opts.stats, split, h, w));
  backend.attention = split;
  const result = await decodeTiled(scaled, c, h, w, backend, {
    tileSize: opts.tileSize, overlap: opts.overlap, stats: opts.stats, attention: opts.attention, onTile: args.onTile, onWarning: args.onWarning,
  });
  return { ...chwToRgb8(result.data, result.height, result.width), tiled: result };
}

/**
 * VAE encoding of an image [3, H, W] in [-1, 1] to the latent mean [C, H/8, W/8] (not yet multiplied by the scaling
 * factor), tiled like decoding (tile size and overlap in latent pixels) with the whole image's GroupNorm statistics.
 * `request` reaches a worker holding the VAE encoder.
 */
export async function encodeImageLatent(args: {
  image: Float32Array;
  height: number;
  width: number;
  opts: VaeDecodeOptions;
  encoderPath: string;
  request: DecoderRequest;
  onTile?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}): Promise<{ data: Float32Array; channels: number; height: number; width: number; tiled?: TiledDecodeResult }> {
  const { image, height: H, width: W, opts } = args;
  const tile = opts.tiling === 'on' || (opts.tiling === 'auto' && (H > opts.tileSize * 8 || W > opts.tileSize * 8));
  if (!tile) {
    const r = await args.request<'vaeEncode'>({ type: 'vaeEncode', image, height: H, width: W }, 'VAE encoding', [image.buffer as ArrayBuffer]);
    args.onTile?.(1, 1);
    return r;
  }
  const split = attentionModeFor(opts.attention, H / 8, W / 8) === 'global' ? await attentionSplit(args.request, args.encoderPath, opts.stats, 'encoder') : undefined;
  const backend = workerBackend(args.request, await wholeGraphs(args.encoderPath, opts.stats, split, H / 8, W / 8), 'encoder');
  backend.attention = split;
  const r = await encodeTiled(image, H, W, backend, {
    tileSize: opts.tileSize, overlap: opts.overlap, stats: opts.stats, attention: opts.attention, onTile: args.onTile, onWarning: args.onWarning,
  });
  return { data: r.data, channels: r.channels, height: r.height, width: r.width, tiled: r };
}
