/**
 * A VAE half's derived graphs in a device worker (the decoder's for tiled decoding, the encoder's for an upscale's
 * tiled encoding): the same graph surgery as in Node (src/graph/vae-derived-models.ts) on the half's bytes, kept in memory with the weights inline (there is no disk store in the browser). The
 * statistics, tile and split graphs are derived once per loaded half and kept for the session; a segment of the
 * tile graph (src/graph/vae-segments.ts) is cut when its session opens (each holds the weights of its part, so keeping
 * all of them would hold the half's weights again). One derived session is open at a time, as in Node's worker. Loaded by the
 * worker on demand, so pages that never tile never load the protobuf code. On a WebGPU worker the tile states of
 * 'exact' statistics stay on the device between segments (src/onnx/tile-states.ts), as in Node: the page holds handles.
 */
import type { ModelProto } from 'onnx-buf';
import { modelBytes } from '../../graph/model-bytes.ts';
import type { NormLayer } from '../../core/vae/norm-stats.ts';
import { segmentName } from '../../core/vae/pipeline-decode.ts';
import { deriveSegmentModel, deriveVaeAttentionModels, deriveVaeNormModels } from '../../graph/vae-derived-models.ts';
import { runAttentionParts, type AttentionPart } from '../../onnx/vae-attention-parts.ts';
import type { OpenSession } from '../../onnx/tensors.ts';
import { statesOnDevice, type DeviceTileStates } from '../../onnx/tile-states.ts';
import { VaeNormAdapter } from '../../onnx/vae.ts';
import type { DeviceResult, VaeGraphRequest, VaeGraphSource, VaeHalf } from './protocol.ts';

type Reason = { reason: string };
type Norms = { layers: NormLayer[]; stats: Uint8Array; tile: Uint8Array } | Reason;
type Split = { global: Uint8Array; chunked?: Record<Exclude<AttentionPart, 'global'>, Uint8Array>; coreReason?: string; tail: Uint8Array } | Reason;

/**
 * Opens a session from a model's bytes (the worker's providers and settings); `label` names it in errors;
 * `outputLocation`: where each output is left (a segment's states on the device).
 */
export type OpenBytes = (bytes: Uint8Array, label: string, outputLocation?: Record<string, 'gpu-buffer' | 'cpu'>) => Promise<OpenSession>;

const bin = (m: ModelProto) => modelBytes(m);

export class VaeHalfGraphs {
  private readonly norms = new Map<VaeGraphSource, Norms>();
  private split?: Split;
  private held?: { key: string; adapter: VaeNormAdapter };

  /** `states`: where segments keep the tile states (a WebGPU worker's device); without it they come to the page. */
  constructor(
    private readonly half: VaeHalf,
    private readonly model: Uint8Array,
    private readonly open: OpenBytes,
    private readonly states?: DeviceTileStates,
  ) {}

  private get label(): 'vae_decoder' | 'vae_encoder' {
    return `vae_${this.half}`;
  }

  private normsOf(of: VaeGraphSource): Norms {
    let n = this.norms.get(of);
    if (!n) {
      const split = of === 'tail' ? this.splitGraphs() : undefined;
      const m = split && 'reason' in split ? split : deriveVaeNormModels(split ? split.tail : this.model);
      n = 'reason' in m ? m : { layers: m.layers, stats: bin(m.stats), tile: bin(m.tile) };
      this.norms.set(of, n);
    }
    return n;
  }

  private splitGraphs(): Split {
    if (!this.split) {
      const m = deriveVaeAttentionModels(this.model, this.half);
      this.split = 'reason' in m
        ? m
        : {
          global: bin(m.global), tail: bin(m.tiled), ...(m.coreReason ? { coreReason: m.coreReason } : {}),
          ...(m.chunked ? { chunked: { pre: bin(m.chunked.pre), core: bin(m.chunked.core), post: bin(m.chunked.post) } } : {}),
        };
    }
    return this.split;
  }

  prepareNorms(of: VaeGraphSource): Extract<DeviceResult, { type: 'vaeNorms' }> {
    const n = this.normsOf(of);
    return 'reason' in n ? { type: 'vaeNorms', reason: n.reason } : { type: 'vaeNorms', layers: n.layers };
  }

  prepareSplit(): Extract<DeviceResult, { type: 'vaeSplit' }> {
    const s = this.splitGraphs();
    if ('reason' in s) return { type: 'vaeSplit', reason: s.reason };
    return { type: 'vaeSplit', chunked: s.chunked !== undefined, ...(s.coreReason ? { coreReason: s.coreReason } : {}) };
  }

  async run(req: VaeGraphRequest): Promise<Extract<DeviceResult, { type: 'vaeGraph' }>> {
    const adapter = await this.session(req.of, req.graph);
    const tile = req.affine && req.region ? { affine: req.affine, region: req.region, state: req.state, keep: req.keep } : undefined;
    const r = await adapter.run(req.input, req.channels, req.height, req.width, tile);
    return { type: 'vaeGraph', data: r.data.slice(), channels: r.channels, height: r.height, width: r.width, stats: r.stats.slice(), ...(r.state ? { state: r.state } : {}) };
  }

  /** The part up to just after the attention, on the whole latent (its core in query chunks when it can be). */
  async runHead(input: Float32Array, channels: number, height: number, width: number, chunkBytes: number): Promise<Extract<DeviceResult, { type: 'vaeHead' }>> {
    const s = this.splitGraphs();
    if ('reason' in s) throw new Error(`device worker: no attention split (${s.reason})`);
    await this.release();
    const chunked = s.chunked;
    const parts = {
      chunked: chunked !== undefined,
      open: (part: AttentionPart, label: string) => this.open(part === 'global' ? s.global : chunked![part], label),
      release: (x: OpenSession) => x.session.release(),
    };
    const r = await runAttentionParts(parts, input, channels, height, width, chunkBytes, this.label);
    return { type: 'vaeHead', ...r, data: r.data.slice() };
  }

  private async session(of: VaeGraphSource, graph: VaeGraphRequest['graph']): Promise<VaeNormAdapter> {
    const key = `${of}:${typeof graph === 'object' ? segmentName(graph.segment) : graph}`;
    if (this.held?.key === key) return this.held.adapter;
    await this.release();
    let bytes: Uint8Array;
    let location: Record<string, 'gpu-buffer' | 'cpu'> | undefined;
    if (graph === 'plain') {
      const s = this.splitGraphs();
      if ('reason' in s) throw new Error(`device worker: no attention split (${s.reason})`);
      bytes = s.tail;
    } else {
      const n = this.normsOf(of);
      if ('reason' in n) throw new Error(`device worker: no norm-statistics graphs (${n.reason})`);
      if (typeof graph === 'object') {
        const m = deriveSegmentModel(n.tile, graph.segment);
        if ('reason' in m) throw new Error(`device worker: ${m.reason}`);
        bytes = m.bytes;
        if (this.states && graph.segment.to !== 'end') location = statesOnDevice(m.outputs);
      } else {
        bytes = graph === 'stats' ? n.stats : n.tile;
      }
    }
    const what = of === 'tail' ? `${this.label} after its attention` : this.label;
    const label = `${what} (${typeof graph === 'object' ? `tile graph's ${segmentName(graph.segment)}` : graph === 'plain' ? 'tiled part' : `${graph} graph`})`;
    const segment = typeof graph === 'object';
    const adapter = new VaeNormAdapter(await this.open(bytes, label, location), this.label, segment ? this.states : undefined, segment);
    this.held = { key, adapter };
    return adapter;
  }

  /** Frees tile states held on the device (the page's TiledVaeBackend.releaseStates). */
  async releaseStates(handles: readonly number[]): Promise<void> {
    await this.states?.release(handles);
  }

  get tileStates(): DeviceTileStates['counts'] | undefined {
    return this.states?.counts;
  }

  /**
   * Releases the derived session held (before the head runs, on close); a session whose tile states are still held
   * goes after them (src/onnx/tile-states.ts). `all`: every state too (the worker closes, the half is replaced).
   */
  async release(all = false): Promise<void> {
    if (all) await this.states?.clear();
    const held = this.held;
    this.held = undefined;
    if (!held) return;
    const s = held.adapter.s;
    if (this.states) await this.states.retire(s, () => s.session.release());
    else await s.session.release();
  }
}
