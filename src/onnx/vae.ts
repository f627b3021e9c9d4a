/** VAE decoder/encoder adapters: latents (already divided by the scaling factor) to images in [-1, 1] and back. */
import type { IoInfo, SessionMemory } from './io.ts';
import { findIo, float32Tensor, floatTensor, int64Tensor, makeTensor, readFloat, type OpenSession, type OrtTensor } from './tensors.ts';
import type { StateTensor, TileState } from '../core/vae/tiled.ts';
import { NORM_AFFINE_INPUT, NORM_REGION_INPUT, NORM_STATS_OUTPUT } from '../graph/vae-norm-graph.ts';
import { STATE_PREFIX } from '../graph/vae-segments.ts';
import type { DeviceTileStates } from './tile-states.ts';

export class VaeDecoderAdapter {
  readonly input: IoInfo;
  readonly output: IoInfo;
  constructor(readonly s: OpenSession) {
    this.input = findIo(s.inputs, ['latent_sample'], 'latent_sample input', 'vae_decoder', 0);
    this.output = findIo(s.outputs, ['sample'], 'sample output', 'vae_decoder', 0);
  }

  /** latent [1, C, h, w] -> image [1, 3, 8h, 8w] (the factor is read from the output). */
  async decode(latent: Float32Array, channels: number, h: number, w: number): Promise<{ data: Float32Array; height: number; width: number }> {
    const out = await this.s.session.run({ [this.input.name]: floatTensor(this.input.type, latent, [1, channels, h, w], 'vae_decoder latent_sample') });
    const t = out[this.output.name]!;
    return { data: readFloat(t, 'vae_decoder output'), height: Number(t.dims[2]), width: Number(t.dims[3]) };
  }
}

export class VaeEncoderAdapter {
  readonly input: IoInfo;
  readonly output: IoInfo;
  constructor(readonly s: OpenSession) {
    this.input = findIo(s.inputs, ['sample'], 'sample input', 'vae_encoder', 0);
    this.output = findIo(s.outputs, ['latent_parameters', 'latent_sample'], 'latent output', 'vae_encoder', 0);
  }

  /** image [1, 3, H, W] in [-1, 1] -> latent mean [1, 4, H/8, W/8] (not yet multiplied by the scaling factor). */
  async encodeMean(image: Float32Array, h: number, w: number): Promise<{ data: Float32Array; channels: number; height: number; width: number }> {
    const out = await this.s.session.run({ [this.input.name]: floatTensor(this.input.type, image, [1, 3, h, w], 'vae_encoder sample') });
    const t = out[this.output.name]!;
    const data = readFloat(t, 'vae_encoder output');
    const c = Number(t.dims[1]);
    const lh = Number(t.dims[2]);
    const lw = Number(t.dims[3]);
    // latent_parameters holds mean then logvar; keep the mean.
    const channels = this.output.name === 'latent_parameters' ? c / 2 : c;
    return { data: data.slice(0, channels * lh * lw), channels, height: lh, width: lw };
  }
}

/**
 * ONNX Runtime settings of the derived VAE graphs' sessions (measured in docs/vae-tiling.md, "Memory"):
 * - graph optimisations up to 'extended', without the 'all' level's NCHWc layout transformation, which keeps a
 *   second, reordered copy of every convolution's weights and reorders activations between layouts: the tile graph
 *   of the SD-width decoder at one 512 px tile peaks at 1360 MiB against 1616 MiB with 'all', at the same speed;
 * - no memory pattern: with it, the second run of a session (the second tile) raised the peak by 840 MiB (most
 *   likely the block ORT allocates for the pattern it planned in the first run, beside the arena's chunks of the
 *   first run); without it three runs of the tile graph peak at 1362, 1365 and 1365 MiB.
 */
export const VAE_GRAPH_MEMORY: SessionMemory = { optimization: 'extended', memPattern: false };

/**
 * The derived VAE graphs (src/graph/vae-norm-graph.ts): the statistics graph (decode or encode plus every norm
 * layer's statistics), the tile graph (norm layers applying given affine maps; statistics over a region) and its
 * segments (src/graph/vae-segments.ts: a tile's state in and out). Works for a decoder (latent in, image out) and an
 * encoder (image in, the latent mean out) alike; also runs the plain encoder (no statistics output).
 */
export class VaeNormAdapter {
  /** The model's input (a segment that starts after the first norm layer may not read it). */
  readonly input: IoInfo | undefined;
  /** The image or latent output (a segment that ends at a norm layer has none: statistics and state). */
  readonly output: IoInfo | undefined;
  /** A segment's state outputs: the tensors live where it ends. */
  private readonly stateOutputs: string[];
  /**
   * `device`: where the states this adapter makes and reads are held (src/onnx/tile-states.ts); only with a session
   * whose state outputs stay on the device (statesOnDevice). Without it, states come back to the host. `segment`: the
   * session is a segment of the tile graph (src/graph/vae-segments.ts), which may end at a norm layer with the tile's
   * state; otherwise its first output that is not the statistics is the result, whatever its name (the tiled part of
   * an encoder's attention split ends at the tensor before the attention, not at the encoder's output).
   */
  constructor(readonly s: OpenSession, component: 'vae_decoder' | 'vae_encoder', private readonly device?: DeviceTileStates, segment = false) {
    const dec = component === 'vae_decoder';
    const names = dec ? ['latent_sample'] : ['sample'];
    const own = s.inputs.filter((i) => !i.name.startsWith(STATE_PREFIX) && i.name !== NORM_AFFINE_INPUT && i.name !== NORM_REGION_INPUT);
    const resumes = s.inputs.some((i) => i.name.startsWith(STATE_PREFIX));
    this.input = resumes && own.length === 0 ? undefined : findIo(s.inputs, names, dec ? 'latent_sample input' : 'sample input', component, 0);
    const modelOutputs = dec ? ['sample'] : ['latent_parameters', 'latent_sample'];
    const outputs = s.outputs.filter((o) => o.name !== NORM_STATS_OUTPUT);
    const segmentEnd = segment && outputs.length > 0 && outputs.every((o) => !modelOutputs.includes(o.name)) && s.outputs.some((o) => o.name === NORM_STATS_OUTPUT);
    this.stateOutputs = segmentEnd ? outputs.map((o) => o.name) : [];
    this.output = outputs.length > 0 && !segmentEnd ? findIo(outputs, modelOutputs, dec ? 'sample output' : 'latent output', component, 0) : undefined;
  }

  async run(
    input: Float32Array, channels: number, h: number, w: number, tile?: { affine: Float32Array; region: readonly number[]; state?: TileState; keep?: boolean },
  ): Promise<{ data: Float32Array; channels: number; height: number; width: number; stats: Float32Array; state?: TileState }> {
    const feeds: Record<string, OrtTensor> = {};
    if (this.input) feeds[this.input.name] = floatTensor(this.input.type, input, [1, channels, h, w], `${this.input.name}`);
    // Only what the graph reads: a segment may not read the maps or the region (onnxruntime-web refuses extra feeds).
    const reads = (name: string) => this.s.inputs.some((i) => i.name === name);
    if (tile && reads(NORM_AFFINE_INPUT)) feeds[NORM_AFFINE_INPUT] = float32Tensor(tile.affine, [tile.affine.length]);
    if (tile && reads(NORM_REGION_INPUT)) feeds[NORM_REGION_INPUT] = int64Tensor(tile.region);
    const state = tile?.state;
    const held = state?.held !== undefined ? this.heldTensors(state) : undefined;
    for (const io of this.s.inputs) {
      if (!io.name.startsWith(STATE_PREFIX)) continue;
      const name = io.name.slice(STATE_PREFIX.length);
      const host = state?.tensors[name];
      const t = held ? held[name] : host && makeTensor(host.type as 'float32', host.data as Float32Array, host.dims);
      if (!t) throw new Error(`${this.s.file}: the segment needs the tile's state ${name}, which it was not given`);
      feeds[io.name] = t;
    }
    // On the host a segment's state is fetched only when kept: ONNX Runtime then does not copy it out. Outputs kept on
    // the device are all fetched (onnxruntime-node refuses a subset when their locations are set) and freed unless kept.
    const keep = this.stateOutputs.length > 0 && tile?.keep === true;
    const fetches = this.stateOutputs.length > 0 ? [NORM_STATS_OUTPUT, ...(keep || this.device ? this.stateOutputs : [])] : undefined;
    const out = fetches ? await this.s.session.run(feeds, fetches) : await this.s.session.run(feeds);
    const stats = (out[NORM_STATS_OUTPUT]?.data as Float32Array | undefined) ?? new Float32Array(0);
    if (!this.output) {
      const outputs = this.stateOutputs.map((n) => [n, out[n]!] as const);
      if (!keep && this.device) for (const [, t] of outputs) t.dispose();
      const kept = !keep ? undefined : this.device ? this.device.hold(Object.fromEntries(outputs), this.s) : stateOf(outputs);
      return { data: new Float32Array(0), channels: 0, height: 0, width: 0, stats, ...(kept ? { state: kept } : {}) };
    }
    const t = out[this.output.name]!;
    let data = readFloat(t, 'vae output');
    let c = Number(t.dims[1]);
    const lh = Number(t.dims[2]);
    const lw = Number(t.dims[3]);
    // An encoder's latent_parameters holds mean then logvar: keep the mean, as VaeEncoderAdapter does.
    if (this.output.name === 'latent_parameters') {
      c /= 2;
      data = data.slice(0, c * lh * lw);
    }
    return { data, channels: c, height: lh, width: lw, stats };
  }

  private heldTensors(state: TileState): Record<string, OrtTensor> {
    if (!this.device) throw new Error(`${this.s.file}: the tile's state is held on a device, and this session reads states from the host`);
    return this.device.tensors(state);
  }
}

/** A tile's state from a segment's outputs, each tensor in a buffer of its own (so that it can be transferred). */
function stateOf(outputs: readonly (readonly [string, OrtTensor])[]): TileState {
  const tensors: TileState['tensors'] = {};
  let bytes = 0;
  for (const [name, t] of outputs) {
    let data = t.data as StateTensor['data'];
    if (data.byteOffset !== 0 || data.buffer.byteLength !== data.byteLength) data = data.slice();
    tensors[name] = { type: t.type, dims: t.dims.map(Number), data };
    bytes += data.byteLength;
  }
  return { tensors, bytes };
}
