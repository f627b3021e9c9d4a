/**
 * Tile states held on the device. With 'exact' tiled statistics every tile's state (the tensors live at a cut of the
 * tile graph: src/graph/vae-segments.ts) goes from one segment's run to the next one's. On the WebGPU provider a
 * segment's session keeps those outputs in GPU buffers (its statistics come back to the host) and the next segment
 * reads them from there, so no state crosses between host and GPU; the tiling holds a handle (TileState.held) and
 * releases it when the state is replaced, not kept, or the decode ends (TiledVaeBackend.releaseStates). Portable: no
 * Node APIs.
 */
import type { TileState } from '../core/vae/tiled.ts';
import { NORM_STATS_OUTPUT } from '../graph/vae-norm-graph.ts';
import type { TileStateCounts } from './io.ts';
import type { OrtTensor } from './tensors.ts';

export type { TileStateCounts } from './io.ts';

/** Bytes per element of the tensor types a state holds. */
const ELEMENT_BYTES: Record<string, number> = { float32: 4, float16: 2, int64: 8, uint64: 8, int32: 4, uint32: 4, int16: 2, uint16: 2, int8: 1, uint8: 1, bool: 1, float64: 8 };

/** The output locations of a segment whose states stay on the device: every output but the statistics. */
export function statesOnDevice(outputs: readonly string[]): Record<string, 'gpu-buffer' | 'cpu'> {
  return Object.fromEntries(outputs.map((o) => [o, o === NORM_STATS_OUTPUT ? 'cpu' : 'gpu-buffer']));
}

/**
 * A segment's state outputs held on the device, by handle, with the sessions that made them. Measured on
 * onnxruntime-node 1.30 and 1.31.1 (lavapipe): disposing such a tensor after its session was released and another session ran
 * on it crashes the process, and releasing the last session on the device before the next one opens tears the
 * device's context down under the held buffers. So a session that made states still held is released only after
 * the last of them (`retire`), and its successor opens before that.
 */
export class DeviceTileStates {
  private readonly held = new Map<number, { tensors: Record<string, OrtTensor>; bytes: number; owner: object }>();
  /** Live states per session that made them, and the sessions whose release waits for theirs. */
  private readonly owners = new Map<object, number>();
  private readonly retiring = new Map<object, () => Promise<void>>();
  private next = 1;
  private taken = 0;
  private freed = 0;

  /** Takes the tensors (already on the device) that session `owner` returned; the state the tiling passes around. */
  hold(tensors: Record<string, OrtTensor>, owner: object): TileState {
    let bytes = 0;
    for (const t of Object.values(tensors)) bytes += t.dims.reduce((n, d) => n * Number(d), 1) * (ELEMENT_BYTES[t.type] ?? 4);
    const id = this.next++;
    this.held.set(id, { tensors, bytes, owner });
    this.owners.set(owner, (this.owners.get(owner) ?? 0) + 1);
    this.taken++;
    return { tensors: {}, held: id, bytes };
  }

  /** The held tensors of a state (an error names a state freed before, or one this store never held). */
  tensors(state: TileState): Record<string, OrtTensor> {
    const h = state.held === undefined ? undefined : this.held.get(state.held);
    if (!h) throw new Error(`tile state ${String(state.held)} is not held on this device (released already, or held by another worker)`);
    return h.tensors;
  }

  /**
   * Frees the states' buffers, then releases the retired sessions none of whose states are left. Unknown or already
   * freed handles are ignored (a failed decode releases all it has).
   */
  async release(handles: readonly number[]): Promise<void> {
    for (const id of handles) {
      const h = this.held.get(id);
      if (!h) continue;
      this.held.delete(id);
      this.freed++;
      for (const t of Object.values(h.tensors)) t.dispose();
      const left = (this.owners.get(h.owner) ?? 1) - 1;
      if (left > 0) this.owners.set(h.owner, left);
      else this.owners.delete(h.owner);
    }
    for (const [owner, release] of [...this.retiring]) {
      if (this.owners.has(owner)) continue;
      this.retiring.delete(owner);
      await release();
    }
  }

  /** Releases session `owner` (through `release`) now, or once the last state it made is freed. */
  async retire(owner: object, release: () => Promise<void>): Promise<void> {
    if (this.owners.has(owner)) this.retiring.set(owner, release);
    else await release();
  }

  /** Frees every state and releases the sessions waiting for them (the worker closes, a decode ends). */
  async clear(): Promise<void> {
    await this.release([...this.held.keys()]);
  }

  get counts(): TileStateCounts {
    let liveBytes = 0;
    for (const h of this.held.values()) liveBytes += h.bytes;
    return { held: this.taken, released: this.freed, live: this.held.size, liveBytes };
  }
}
