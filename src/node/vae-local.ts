/** A backend over ONNX Runtime sessions opened in this thread, for benchmarks and tests (the pipeline runs its graphs on workers). */
import type { DecodedImage, TiledVaeBackend } from '../core/vae/tiled.ts';
import { openSession, releaseSession, type ModelLoad, type OpenSession, type SessionOptions } from '../onnx/session.ts';
import { VAE_GRAPH_MEMORY, VaeDecoderAdapter, VaeNormAdapter } from '../onnx/vae.ts';
import { prepareVaeGraphs, type VaeGraphs } from './vae-graphs.ts';

/** A backend over sessions opened in this thread (benchmarks, tests). Release it with `close`. */
export async function localBackend(
  modelPath: string, component: 'vae_decoder' | 'vae_encoder', session: SessionOptions = { provider: 'cpu' },
  /** A derived graph as the model (the attention split's tail): its weights' folder and its prepared graphs. */
  derived: { load?: ModelLoad; graphs?: VaeGraphs } = {},
): Promise<TiledVaeBackend & { graphs: VaeGraphs; close(): Promise<void> }> {
  const graphs = derived.graphs ?? (await prepareVaeGraphs(modelPath));
  const load = { ...('reason' in graphs || !graphs.externalDataFolder ? {} : { externalDataFolder: graphs.externalDataFolder }), memory: VAE_GRAPH_MEMORY };
  // The plain model's session opens on first use: a tiled run with shared statistics never needs it.
  let plain: { s: OpenSession; run: (input: Float32Array, c: number, h: number, w: number) => Promise<DecodedImage> } | undefined;
  const openPlain = async () => {
    if (!plain) {
      const s = await openSession(modelPath, component, session, derived.load);
      if (component === 'vae_decoder') {
        const decoder = new VaeDecoderAdapter(s);
        plain = { s, run: (input, c, h, w) => decoder.decode(input, c, h, w) };
      } else {
        const encoder = new VaeNormAdapter(s, component);
        plain = { s, run: (input, c, h, w) => encoder.run(input, c, h, w) };
      }
    }
    return plain;
  };
  const missing = () => new Error('localBackend: no derived graphs');
  // Derived sessions open on first use and one at a time, as in the worker.
  let held: { file: string; adapter: VaeNormAdapter } | undefined;
  const use = async (file: string, what: string) => {
    if (held?.file !== file) {
      await releaseSession(held?.adapter.s);
      held = undefined;
      held = { file, adapter: new VaeNormAdapter(await openSession(file, `${component} (${what})`, session, load), component) };
    }
    return held.adapter;
  };
  return {
    graphs,
    norms: 'reason' in graphs ? { reason: graphs.reason } : { layers: graphs.layers },
    run: async (input, c, h, w) => (await openPlain()).run(input, c, h, w),
    runStats: async (input, c, h, w) => {
      if ('reason' in graphs) throw missing();
      return (await use(graphs.statsFile, 'statistics graph')).run(input, c, h, w);
    },
    runTile: async (input, c, h, w, affine, region) => {
      if ('reason' in graphs) throw missing();
      return (await use(graphs.tileFile, 'tile graph')).run(input, c, h, w, { affine, region });
    },
    runPrefix: async (k, input, c, h, w, affine, region) => {
      if ('reason' in graphs) throw missing();
      return (await use(graphs.prefixFiles[k]!, `prefix graph ${k}`)).run(input, c, h, w, { affine, region });
    },
    close: async () => {
      for (const s of [plain?.s, held?.adapter.s]) await releaseSession(s);
    },
  };
}
