/**
 * A tiled-VAE backend over sessions in this thread (benchmarks, tests) whose decoder or encoder may run its attention
 * once for the whole latent (attention 'global'): the part with the attention through src/onnx/vae-attention.ts, the
 * tiled part through a local backend of its graph (src/node/vae-local.ts).
 */
import { DEFAULT_ATTENTION_CHUNK_BYTES, headSizeProblem } from '../core/vae/attention-chunks.ts';
import type { GlobalAttentionBackend, TiledVaeBackend } from '../core/vae/tiled.ts';
import type { SessionOptions } from '../onnx/session.ts';
import type { TileStateCounts } from '../onnx/tile-states.ts';
import { runAttentionHead } from '../onnx/vae-attention.ts';
import { prepareVaeAttentionGraphs, type VaeAttentionGraphs } from './vae-attention-graphs.ts';
import { localBackend } from './vae-local.ts';

export interface LocalAttentionOptions {
  /** 'decoder' (default) or 'encoder'. */
  half?: 'decoder' | 'encoder';
  /** Bound on one query chunk's attention scores, bytes (default 256 MiB). */
  chunkBytes?: number;
  /** Run the whole graph with the attention, never the chunked core (to compare them). */
  unchunked?: boolean;
  /** Memory benchmarks: the attention core runs the model for this many query chunks only (see runAttentionHead). */
  modelChunks?: number;
}

/** A local backend offering the attention split. Release it with `close`. */
export async function localAttentionBackend(
  modelPath: string, session: SessionOptions = { provider: 'cpu' }, opts: LocalAttentionOptions = {},
): Promise<TiledVaeBackend & { attentionGraphs: VaeAttentionGraphs; tileStates(): TileStateCounts | undefined; close(): Promise<void> }> {
  const half = opts.half ?? 'decoder';
  const component = half === 'decoder' ? 'vae_decoder' : 'vae_encoder';
  const base = await localBackend(modelPath, component, session);
  const graphs = await prepareVaeAttentionGraphs(modelPath, half);
  if ('reason' in graphs) return { ...base, attention: { reason: graphs.reason }, attentionGraphs: graphs };
  const load = graphs.externalDataFolder ? { externalDataFolder: graphs.externalDataFolder } : {};
  const tiled = await localBackend(graphs.tiled, component, session, { load, graphs: graphs.tiledNorms });
  const budget = opts.chunkBytes ?? DEFAULT_ATTENTION_CHUNK_BYTES;
  const files = { global: graphs.global, ...(graphs.chunked && !opts.unchunked ? { chunked: graphs.chunked } : {}) };
  const attention: GlobalAttentionBackend = {
    check: (h, w) => headSizeProblem(files.chunked ? undefined : (graphs.coreReason ?? 'the core is not split'), h, w, budget),
    runGlobal: (input, c, h, w) => runAttentionHead(files, session, load, input, c, h, w, budget, component, opts.modelChunks === undefined ? {} : { modelChunks: opts.modelChunks }),
    tiled,
  };
  return {
    ...base,
    attention,
    attentionGraphs: graphs,
    // The states of the whole model's segments and of the tiled part's.
    tileStates: () => sumCounts(base.tileStates(), tiled.tileStates()),
    close: async () => {
      await base.close();
      await tiled.close();
    },
  };
}

function sumCounts(a: TileStateCounts | undefined, b: TileStateCounts | undefined): TileStateCounts | undefined {
  if (!a || !b) return a ?? b;
  return { held: a.held + b.held, released: a.released + b.released, live: a.live + b.live, liveBytes: a.liveBytes + b.liveBytes };
}
