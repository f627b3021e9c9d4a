/** A backend over ONNX Runtime sessions opened in this thread, for benchmarks and tests (the pipeline runs its graphs on workers). */
import type { TiledVaeBackend } from '../core/vae/tiled.ts';
import { openSession, releaseSession, type ModelLoad, type SessionOptions } from '../onnx/session.ts';
import { VaeDecoderAdapter, VaeNormAdapter } from '../onnx/vae.ts';
import { prepareVaeGraphs, type VaeGraphs } from './vae-graphs.ts';

/** A backend over sessions opened in this thread (benchmarks, tests). Release it with `close`. */
export async function localBackend(
  modelPath: string, component: 'vae_decoder' | 'vae_encoder', session: SessionOptions = { provider: 'cpu' },
  /** A derived graph as the model (the attention split's tail): its weights' folder and its prepared graphs. */
  derived: { load?: ModelLoad; graphs?: VaeGraphs } = {},
): Promise<TiledVaeBackend & { graphs: VaeGraphs; close(): Promise<void> }> {
  const graphs = derived.graphs ?? (await prepareVaeGraphs(modelPath));
  const plainSession = await openSession(modelPath, component, session, derived.load);
  const load = 'reason' in graphs || !graphs.externalDataFolder ? {} : { externalDataFolder: graphs.externalDataFolder };
  const plainNorm = component === 'vae_encoder' ? new VaeNormAdapter(plainSession, component) : undefined;
  const decoder = component === 'vae_decoder' ? new VaeDecoderAdapter(plainSession) : undefined;
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
    run: async (input, c, h, w) => (decoder ? decoder.decode(input, c, h, w) : plainNorm!.run(input, c, h, w)),
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
      for (const s of [plainSession, held?.adapter.s]) await releaseSession(s);
    },
  };
}
