/**
 * The browser's runner of a VAE half for the portable tiled decoding and encoding (src/core/vae/pipeline-decode.ts):
 * the plain decoder or encoder and its derived graphs (norm statistics, attention split) run on the device worker
 * holding it, which derives them in memory from the half's bytes (src/browser/device/vae-graphs.ts).
 */
import { DEFAULT_ATTENTION_CHUNK_BYTES, headSizeProblem } from '../core/vae/attention-chunks.ts';
import { graphBackend, segmentName, type NormGraphRun, type VaeGraphRunner } from '../core/vae/pipeline-decode.ts';
import { stateBuffers, type DecodedImage, type TiledVaeBackend } from '../core/vae/tiled.ts';
import type { VaeGraphRequest, VaeGraphSource, VaeHalf } from './device/protocol.ts';
import type { WebDevice } from './device/web-device.ts';

export function webVaeRunner(device: WebDevice, half: VaeHalf): VaeGraphRunner & { run(input: Float32Array, channels: number, height: number, width: number): Promise<DecodedImage & { channels: number }> } {
  const verb = half === 'decoder' ? 'decoding' : 'encoding';
  // The plain model: an image's 3 channels out of the decoder, the latent's out of the encoder.
  const run = async (input: Float32Array, channels: number, height: number, width: number): Promise<DecodedImage & { channels: number }> => {
    if (half === 'encoder') {
      const r = await device.request<'vaeEncode'>({ type: 'vaeEncode', image: input, height, width }, 'VAE encoding', [input.buffer as ArrayBuffer]);
      return { data: r.data, channels: r.channels, height: r.height, width: r.width };
    }
    const r = await device.request<'vaeDecode'>({ type: 'vaeDecode', latent: input, channels, height, width }, 'VAE decoding', [input.buffer as ArrayBuffer]);
    return { data: r.data, channels: 3, height: r.height, width: r.width };
  };
  const graphRun = (of: VaeGraphSource) => (
    graph: VaeGraphRequest['graph'], input: Float32Array, channels: number, height: number, width: number, tile?: Parameters<NormGraphRun>[5],
  ) =>
    device.request<'vaeGraph'>(
      {
        type: 'vaeGraph', half, of, graph, input, channels, height, width, affine: tile?.affine, region: tile ? [...tile.region] : undefined,
        ...(tile?.state ? { state: tile.state } : {}), keep: tile?.keep,
      },
      typeof graph === 'object' ? `VAE ${verb} (${segmentName(graph.segment)})` : `VAE ${graph === 'tile' ? 'tile' : 'statistics'}`,
      // A state given with keep is replaced by the one returned: moved, not copied (core/vae/tiled.ts).
      [input.buffer as ArrayBuffer, ...(tile?.keep ? stateBuffers(tile.state) : [])],
    );
  const norms = async (of: VaeGraphSource): Promise<TiledVaeBackend['norms']> => {
    const r = await device.request<'vaeNorms'>({ type: 'vaeNorms', half, of }, 'deriving the VAE statistics graphs');
    return r.layers ? { layers: r.layers } : { reason: r.reason ?? 'the device worker gave no reason' };
  };
  // A WebGPU worker holds tile states on its device (vae-graphs.ts); the tiling frees them through it.
  const releaseStates: TiledVaeBackend['releaseStates'] = async (states) => {
    const held = states.flatMap((st) => st.held ?? []);
    if (held.length > 0) await device.request<'ok'>({ type: 'vaeReleaseStates', half, held }, 'releasing VAE tile states');
  };
  return {
    run,
    modelBackend: async (n) => graphBackend(n === 'derived' ? await norms('whole') : n, run, graphRun('whole'), releaseStates),
    attentionSplit: async (stats) => {
      const split = await device.request<'vaeSplit'>({ type: 'vaeSplit', half }, `splitting the VAE ${half} at its attention`);
      if (split.reason !== undefined) return { reason: split.reason };
      const tail = graphRun('tail');
      const runTail = async (input: Float32Array, channels: number, height: number, width: number): Promise<DecodedImage> => tail('plain', input, channels, height, width);
      const chunkBytes = DEFAULT_ATTENTION_CHUNK_BYTES;
      return {
        tiled: graphBackend(stats === 'off' ? { reason: 'statistics off' } : await norms('tail'), runTail, tail, releaseStates),
        check: (h, w) => headSizeProblem(split.chunked ? undefined : split.coreReason, h, w, chunkBytes),
        runGlobal: (input, channels, height, width) =>
          device.request<'vaeHead'>({ type: 'vaeHead', half, input, channels, height, width, chunkBytes }, half === 'decoder' ? 'VAE decoding (up to the attention)' : 'VAE encoding (from the attention)', [input.buffer as ArrayBuffer]),
      };
    },
  };
}
