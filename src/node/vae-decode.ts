/**
 * VAE decoding for the pipeline: untiled, or tiled with the whole image's normalisation statistics
 * (src/core/vae/tiled.ts) through the derived graphs (src/node/vae-graphs.ts) on the worker that holds the decoder.
 * The coordinator loads neither ONNX Runtime nor the graph surgery until a tiled decode needs it (src/node/vae-local.ts
 * has a backend over sessions in this thread, for benchmarks and tests).
 */
import type { RgbImage } from '../core/image.ts';
import { chwToRgb8 } from '../core/image.ts';
import type { VaeDecodeOptions } from '../core/params.ts';
import { decodeLatentWith, encodeImageWith, graphBackend, segmentName, type VaeGraphRunner } from '../core/vae/pipeline-decode.ts';
import { stateBuffers, type DecodedImage, type TiledDecodeResult, type TiledVaeBackend } from '../core/vae/tiled.ts';
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
  if ('reason' in graphs) return graphBackend({ reason: graphs.reason }, plain, () => Promise.reject(new Error('workerBackend: no derived graphs')));
  const prefix = which === 'decoder' ? 'vaeDecoder' : 'vaeEncoder';
  return graphBackend({ layers: graphs.layers }, plain, async (kind, input, channels, height, width, tile) => {
    const graph: VaeGraphName = kind === 'stats' ? `${prefix}Stats` : kind === 'tile' ? `${prefix}Tile` : `${prefix}Segment`;
    const file = kind === 'stats' ? graphs.statsFile : graphs.tileFile;
    const segment = typeof kind === 'object' ? kind.segment : undefined;
    return request<'vaeNorm'>(
      {
        type: 'vaeNorm', graph, file, ...(segment ? { segment } : {}), externalDataFolder: graphs.externalDataFolder, input, channels, height, width,
        affine: tile?.affine, region: tile ? [...tile.region] : undefined, ...(tile?.state ? { state: tile.state } : {}), keep: tile?.keep,
      },
      segment ? `VAE decoding (${segmentName(segment)})` : `VAE ${kind === 'tile' ? 'tile' : 'statistics'}`,
      // A state given with keep is replaced by the one returned: moved, not copied (core/vae/tiled.ts).
      [input.buffer as ArrayBuffer, ...(tile?.keep ? stateBuffers(tile.state) : [])],
    );
  }, async (states) => {
    await request<'ok'>({ type: 'vaeReleaseStates', held: states.flatMap((st) => st.held ?? []) }, 'VAE decoding (freeing tile states)');
  });
}

/** A runner of a decoder or encoder on its worker, its derived graphs prepared on disk when first needed. */
function workerRunner(request: DecoderRequest, modelPath: string, half: 'decoder' | 'encoder'): VaeGraphRunner {
  return {
    modelBackend: async (norms) => workerBackend(request, norms === 'derived' ? await vaeGraphsFor(modelPath) : norms, half),
    // The surgery loads only when the attention runs globally.
    attentionSplit: async (stats) => {
      const m = await import('./vae-decode-attention.ts');
      return m.workerAttention(request, await m.vaeAttentionGraphsFor(modelPath, half), stats, half);
    },
  };
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
  const runner = {
    ...workerRunner(args.request, args.decoderPath, 'decoder'),
    run: (input: Float32Array, channels: number, height: number, width: number) =>
      args.request<'vaeDecode'>({ type: 'vaeDecode', latent: input, channels, height, width }, 'VAE decoding', [input.buffer as ArrayBuffer]),
  };
  const r = await decodeLatentWith(runner, args.scaled, args.channels, args.height, args.width, args.opts, { onTile: args.onTile, onWarning: args.onWarning });
  return { ...chwToRgb8(r.data, r.height, r.width), ...(r.tiled ? { tiled: r.tiled } : {}) };
}

/**
 * VAE encoding of an image [3, H, W] in [-1, 1] to the latent mean [C, H/8, W/8] (not yet multiplied by the scaling
 * factor), tiled like decoding (core/vae/pipeline-decode.ts, encodeImageWith). `request` reaches a worker holding the
 * VAE encoder.
 */
export function encodeImageLatent(args: {
  image: Float32Array;
  height: number;
  width: number;
  opts: VaeDecodeOptions;
  encoderPath: string;
  request: DecoderRequest;
  onTile?: (done: number, total: number) => void;
  onWarning?: (message: string) => void;
}): Promise<{ data: Float32Array; channels: number; height: number; width: number; tiled?: TiledDecodeResult }> {
  const runner = {
    ...workerRunner(args.request, args.encoderPath, 'encoder'),
    run: (image: Float32Array, _channels: number, height: number, width: number) =>
      args.request<'vaeEncode'>({ type: 'vaeEncode', image, height, width }, 'VAE encoding', [image.buffer as ArrayBuffer]),
  };
  return encodeImageWith(runner, args.image, args.height, args.width, args.opts, { onTile: args.onTile, onWarning: args.onWarning });
}
