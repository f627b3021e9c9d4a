/**
 * A tiled-VAE backend over sessions in this thread (benchmarks, tests) whose decoder may run its attention once for
 * the whole latent (attention 'global'): the head through src/onnx/vae-attention.ts, the tail through a local backend
 * of the tail graph (src/node/vae-local.ts).
 */
import type { GlobalAttentionBackend, TiledVaeBackend } from '../core/vae/tiled.ts';
import type { SessionOptions } from '../onnx/session.ts';
import { runAttentionHead } from '../onnx/vae-attention.ts';
import { DEFAULT_ATTENTION_CHUNK_BYTES, headSizeProblem } from '../core/vae/attention-chunks.ts';
import { prepareVaeAttentionGraphs, type VaeAttentionGraphs } from './vae-attention-graphs.ts';
import { localBackend } from './vae-local.ts';

export interface LocalAttentionOptions {
  /** Bound on one query chunk's attention scores, bytes (default 256 MiB). */
  chunkBytes?: number;
  /** Run the whole head graph, never the chunked core (to compare them). */
  unchunked?: boolean;
}

/** A local decoder backend offering the attention split. Release it with `close`. */
export async function localAttentionBackend(
  modelPath: string, session: SessionOptions = { provider: 'cpu' }, opts: LocalAttentionOptions = {},
): Promise<TiledVaeBackend & { attentionGraphs: VaeAttentionGraphs; close(): Promise<void> }> {
  const base = await localBackend(modelPath, 'vae_decoder', session);
  const graphs = await prepareVaeAttentionGraphs(modelPath);
  if ('reason' in graphs) return { ...base, attention: { reason: graphs.reason }, attentionGraphs: graphs };
  const load = graphs.externalDataFolder ? { externalDataFolder: graphs.externalDataFolder } : {};
  const tail = await localBackend(graphs.tail, 'vae_decoder', session, { load, graphs: graphs.tailNorms });
  const budget = opts.chunkBytes ?? DEFAULT_ATTENTION_CHUNK_BYTES;
  const files = { head: graphs.head, ...(graphs.chunked && !opts.unchunked ? { chunked: graphs.chunked } : {}) };
  const attention: GlobalAttentionBackend = {
    check: (h, w) => headSizeProblem(files.chunked ? undefined : (graphs.coreReason ?? 'the head runs unchunked'), h, w, budget),
    runHead: (input, c, h, w) => runAttentionHead(files, session, load, input, c, h, w, budget),
    tail,
  };
  return {
    ...base,
    attention,
    attentionGraphs: graphs,
    close: async () => {
      await base.close();
      await tail.close();
    },
  };
}
