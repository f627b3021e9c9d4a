/** A backend over ONNX Runtime sessions opened in this thread, for benchmarks and tests (the pipeline runs its graphs on workers). */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { segmentName } from '../core/vae/pipeline-decode.ts';
import { deriveSegmentModel } from '../graph/vae-derived-models.ts';
import type { DecodedImage, TiledVaeBackend } from '../core/vae/tiled.ts';
import { openSession, releaseSession, type ModelLoad, type OpenSession, type SessionOptions } from '../onnx/session.ts';
import { statesOnDevice, type TileStateCounts } from '../onnx/tile-states.ts';
import { VAE_GRAPH_MEMORY, VaeDecoderAdapter, VaeNormAdapter } from '../onnx/vae.ts';
import { deviceTileStates } from './device-tile-states.ts';
import { prepareVaeGraphs, type VaeGraphs } from './vae-graphs.ts';

/** A backend over sessions opened in this thread (benchmarks, tests). Release it with `close`. */
export async function localBackend(
  modelPath: string, component: 'vae_decoder' | 'vae_encoder', session: SessionOptions = { provider: 'cpu' },
  /** A derived graph as the model (the attention split's tail): its weights' folder and its prepared graphs. */
  derived: { load?: ModelLoad; graphs?: VaeGraphs } = {},
): Promise<TiledVaeBackend & { graphs: VaeGraphs; tileStates(): TileStateCounts | undefined; close(): Promise<void> }> {
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
  // On webgpu the tile states stay on the device between segments.
  const device = deviceTileStates(session.provider);
  // Derived sessions open on first use and one at a time, as in the worker.
  let held: { file: string; adapter: VaeNormAdapter } | undefined;
  const use = async (file: string, what: string | (() => Promise<OpenSession>)) => {
    if (held?.file !== file) {
      // A session whose states the device still holds is released after them (src/onnx/tile-states.ts).
      const last = held?.adapter.s;
      if (device && last) await device.retire(last, () => releaseSession(last));
      else await releaseSession(last);
      held = undefined;
      const s = typeof what === 'string' ? await openSession(file, `${component} (${what})`, session, load) : await what();
      held = { file, adapter: typeof what === 'string' ? new VaeNormAdapter(s, component) : new VaeNormAdapter(s, component, device, true) };
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
    runSegment: async (from, to, input, c, h, w, affine, region, state, keep) => {
      if ('reason' in graphs) throw missing();
      const span = { from, to };
      const key = `${graphs.tileFile}#${segmentName(span)}`;
      const open = async () => {
        const m = deriveSegmentModel(await readFile(graphs.tileFile), span);
        if ('reason' in m) throw new Error(`${graphs.tileFile}: ${m.reason}`);
        const location = device && to !== 'end' ? { outputLocation: statesOnDevice(m.outputs) } : {};
        return openSession(m.bytes, `${component} (tile graph's ${segmentName(span)})`, session, { externalDataFolder: graphs.externalDataFolder ?? path.dirname(graphs.tileFile), memory: VAE_GRAPH_MEMORY, ...location });
      };
      return (await use(key, open)).run(input, c, h, w, { affine, region, state, keep });
    },
    ...(device ? { releaseStates: (states) => device.release(states.flatMap((st) => st.held ?? [])) } : {}),
    tileStates: () => device?.counts,
    close: async () => {
      await device?.clear();
      for (const s of [plain?.s, held?.adapter.s]) await releaseSession(s);
    },
  };
}
