/**
 * The attention split of a decoder (src/node/vae-attention-graphs.ts) for the pipeline's tiled decoding: the head
 * runs on the worker holding the decoder (one `vaeHead` request), the tail's graphs through `vaeNorm` requests like
 * the decoder's own derived graphs. The graph surgery is loaded only when a tiled decode with attention 'global'
 * needs it.
 */
import { DEFAULT_ATTENTION_CHUNK_BYTES, headSizeProblem } from '../core/vae/attention-chunks.ts';
import type { GlobalAttentionBackend, TiledVaeBackend } from '../core/vae/tiled.ts';
import type { VaeAttentionGraphs } from './vae-attention-graphs.ts';
import { workerBackend, type DecoderRequest } from './vae-decode.ts';

const prepared = new Map<string, Promise<VaeAttentionGraphs>>();

/** The attention split of a decoder, prepared once per process and file. */
export function vaeAttentionGraphsFor(modelPath: string): Promise<VaeAttentionGraphs> {
  let p = prepared.get(modelPath);
  if (!p) {
    p = import('./vae-attention-graphs.ts')
      .then((m) => m.prepareVaeAttentionGraphs(modelPath))
      .catch((err: unknown) => ({ reason: `the attention split could not be prepared (${err instanceof Error ? err.message : String(err)})` }));
    prepared.set(modelPath, p);
  }
  return p;
}

/**
 * The global-attention side of a worker backend: the head on the worker, the tail tiled (with the tail's statistics
 * graphs unless `stats` is 'off'), or why the decoder cannot be split.
 */
export function workerAttention(
  request: DecoderRequest, graphs: VaeAttentionGraphs, stats: 'exact' | 'estimate' | 'off', chunkBytes = DEFAULT_ATTENTION_CHUNK_BYTES,
): GlobalAttentionBackend | { reason: string } {
  if ('reason' in graphs) return { reason: graphs.reason };
  const external = graphs.externalDataFolder;
  const base = workerBackend(request, stats === 'off' ? { reason: 'statistics off' } : graphs.tailNorms);
  const tail: TiledVaeBackend = {
    ...base,
    run: async (input, channels, height, width) => {
      const r = await request<'vaeNorm'>(
        { type: 'vaeNorm', graph: 'vaeDecoderTail', file: graphs.tail, externalDataFolder: external, input, channels, height, width },
        'VAE decoding (after the attention)',
        [input.buffer as ArrayBuffer],
      );
      return { data: r.data, height: r.height, width: r.width };
    },
  };
  return {
    tail,
    check: (h, w) => headSizeProblem(graphs.chunked ? undefined : graphs.coreReason, h, w, chunkBytes),
    runHead: async (input, channels, height, width) => {
      const r = await request<'vaeHead'>(
        { type: 'vaeHead', files: { head: graphs.head, ...(graphs.chunked ? { chunked: graphs.chunked } : {}) }, externalDataFolder: external, input, channels, height, width, chunkBytes },
        'VAE decoding (up to the attention)',
        [input.buffer as ArrayBuffer],
      );
      return r;
    },
  };
}
