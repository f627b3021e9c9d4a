/**
 * The attention split of a decoder or encoder (src/node/vae-attention-graphs.ts) for the pipeline's tiled decoding and
 * encoding: the part with the attention runs on the worker holding the model (one `vaeHead` request), the tiled
 * part's graphs through `vaeNorm` requests like the model's own derived graphs. The graph surgery is loaded only when
 * a tiled decode or encode with attention 'global' needs it.
 */
import { DEFAULT_ATTENTION_CHUNK_BYTES, headSizeProblem } from '../core/vae/attention-chunks.ts';
import type { GlobalAttentionBackend, TiledVaeBackend } from '../core/vae/tiled.ts';
import type { VaeAttentionGraphs } from './vae-attention-graphs.ts';
import { workerBackend, type DecoderRequest } from './vae-decode.ts';

const prepared = new Map<string, Promise<VaeAttentionGraphs>>();

/** The attention split of a decoder or encoder, prepared once per process and file. */
export function vaeAttentionGraphsFor(modelPath: string, half: 'decoder' | 'encoder' = 'decoder'): Promise<VaeAttentionGraphs> {
  const key = `${half}:${modelPath}`;
  let p = prepared.get(key);
  if (!p) {
    p = import('./vae-attention-graphs.ts')
      .then((m) => m.prepareVaeAttentionGraphs(modelPath, half))
      .catch((err: unknown) => ({ reason: `the attention split could not be prepared (${err instanceof Error ? err.message : String(err)})` }));
    prepared.set(key, p);
  }
  return p;
}

/**
 * The global-attention side of a worker backend: the part with the attention on the worker, the other part tiled
 * (with its statistics graphs unless `stats` is 'off'), or why the model cannot be split.
 */
export function workerAttention(
  request: DecoderRequest, graphs: VaeAttentionGraphs, stats: 'exact' | 'estimate' | 'off', half: 'decoder' | 'encoder' = 'decoder',
  chunkBytes = DEFAULT_ATTENTION_CHUNK_BYTES,
): GlobalAttentionBackend | { reason: string } {
  if ('reason' in graphs) return { reason: graphs.reason };
  const external = graphs.externalDataFolder;
  const base = workerBackend(request, stats === 'off' ? { reason: 'statistics off' } : graphs.tiledNorms, half);
  const tiled: TiledVaeBackend = {
    ...base,
    run: async (input, channels, height, width) => {
      const r = await request<'vaeNorm'>(
        { type: 'vaeNorm', graph: half === 'decoder' ? 'vaeDecoderTail' : 'vaeEncoderHead', file: graphs.tiled, externalDataFolder: external, input, channels, height, width },
        half === 'decoder' ? 'VAE decoding (after the attention)' : 'VAE encoding (before the attention)',
        [input.buffer as ArrayBuffer],
      );
      return { data: r.data, height: r.height, width: r.width };
    },
  };
  return {
    tiled,
    check: (h, w) => headSizeProblem(graphs.chunked ? undefined : graphs.coreReason, h, w, chunkBytes),
    runGlobal: async (input, channels, height, width) => {
      const r = await request<'vaeHead'>(
        {
          type: 'vaeHead', half: half === 'decoder' ? 'vae_decoder' : 'vae_encoder', files: { global: graphs.global, ...(graphs.chunked ? { chunked: graphs.chunked } : {}) },
          externalDataFolder: external, input, channels, height, width, chunkBytes,
        },
        half === 'decoder' ? 'VAE decoding (up to the attention)' : 'VAE encoding (from the attention)',
        [input.buffer as ArrayBuffer],
      );
      return r;
    },
  };
}
