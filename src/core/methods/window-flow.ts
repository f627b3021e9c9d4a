/**
 * Stage-2 dataflow: the windows of step t+1 start as soon as the part of the latent they read is known, instead of
 * after every window of step t (a barrier per step).
 *
 * The fused output at a position is the average of the windows covering it (WindowCanvas), and where the context
 * offers a part-of-the-latent scheduler step (MethodContext.advance) the latent at t+1 there depends only on those
 * windows. Each step's latent is cut into square tiles; a tile is fused and stepped once every window over it is
 * done, and a window of the next step is handed over once every tile it reads is. The sums run in window order from
 * zero and are multiplied by the same float32 reciprocal as in WindowCanvas, so the fused outputs and the latent are
 * bit for bit those of the barrier. Where WebAssembly is there, the windows' outputs, the latents and the fused outputs
 * live in a kernel heap and a tile is fused, placed and (Euler) stepped there by the kernels (src/core/kernels), with
 * the same arithmetic in the same order; the fused output and the next latent leave it as plain arrays once a step is
 * done. Portable: no Node APIs.
 */
import { AsgdError } from '../errors.ts';
import { KernelHeap } from '../kernels/heap.ts';
import { KernelMemory } from '../kernels/memory.ts';
import type { EulerCoefficients } from '../kernels/euler-range.ts';
import type { RandomSource } from '../random/types.ts';
import type { Scheduler } from '../schedulers/types.ts';
import { BufferStack } from './buffers.ts';
import { deferred, type Deferred } from './deferred.ts';
import type { PatchGeometry } from './geometry.ts';
import type { MethodPlan } from './plan.ts';
import { gridAt, unitTimeIds } from './plan.ts';
import { cropLatent, padLatent } from './polyphase.ts';
import type { UnetUnit } from './types.ts';
import type { WindowGrid, WindowPlacement } from './windows.ts';
import { extractWindow, placeWindows } from './windows.ts';

/** The unit of the window at `p` of step `step`, cut out of the padded latent into `into` (null: `into` holds it). */
export function windowUnit(
  plan: MethodPlan, scheduler: Scheduler, step: number, grid: WindowGrid, p: WindowPlacement, padded: Float32Array | null, into: Float32Array,
): UnetUnit {
  const geo = plan.geometry;
  const winH = grid.vertical.window;
  const winW = grid.horizontal.window;
  return {
    id: `s2/k${step}/w${p.index}`,
    kind: 'window',
    step,
    index: p.index,
    sample: padded === null ? into : extractWindow(padded, geo.channels, geo.paddedHeight, geo.paddedWidth, p.top, p.left, winH, winW, scheduler.inputScale(step), into),
    height: winH,
    width: winW,
    timestep: scheduler.timesteps[step],
    wantAttention: false,
    // Crop = the window's origin in the canvas zero-padded by J on every side (always >= 0).
    timeIds: unitTimeIds(plan, p.top + grid.vertical.jitter, p.left + grid.horizontal.jitter),
  };
}

/** Half-open rows y0..y1-1 and columns x0..x1-1 of the latent. */
interface Rect {
  y0: number;
  y1: number;
  x0: number;
  x1: number;
}

/** A square of the latent, fused and stepped as one piece once every window over it is done. */
interface Tile extends Rect {
  /** The windows over it in ascending order (the order WindowCanvas adds them in). */
  windows: number[];
  /** Windows over it not done yet. */
  left: number;
  /** Windows of the next step that read it. */
  readers: number[];
}

/** A latent-sized array of the flow: in the kernel heap (its offset) or, where the heap cannot hold it, a plain array. */
type FlowArray = Float32Array | { readonly at: number; readonly length: number };

interface FlowStep {
  step: number;
  grid: WindowGrid;
  placements: WindowPlacement[];
  /** Per window: the part of the latent it writes. */
  rects: Rect[];
  tiles: Tile[];
  /** Per window: the tiles it writes to. */
  covers: Tile[][];
  /** Per window: tiles of the previous step it still waits for. */
  waits: number[];
  /** Per window: a copy of its output once done, where the heap cannot hold it (else in `slots`). */
  outputs: (Float32Array | undefined)[];
  /** Per window: where the heap holds a copy of its output once done. */
  slots: (number | undefined)[];
  /** The padded latent at this step, written tile by tile by the previous step (null once no longer read). */
  latent: FlowArray | null;
  /** Once the step is done: the next step's latent [C, h, w], complete (null after the last step). */
  after: Float32Array | null;
  /** The fused output [C, h, w], written tile by tile (null until the first tile is done). */
  fused: FlowArray | null;
  tilesLeft: number;
  done: Deferred<Float32Array>;
}

export interface FlowHooks {
  scheduler: Scheduler;
  /**
   * MethodContext.advance on one tile: `positions` gives each element's place in the latent [C, h, w]; the stepped
   * tile goes to `into` (the flow's, reused from tile to tile), which it returns.
   */
  advance(step: number, modelOutput: Float32Array, sample: Float32Array, positions: Int32Array, into: Float32Array): Float32Array;
  /** Evaluates one window; the output is read before the next await. `stream`: more windows follow (EvaluateHint). */
  evaluate(unit: UnetUnit, priority: number, stream: boolean): Promise<Float32Array>;
  /** Where advance is an Euler step: its scalars at `step` (MethodContext.eulerStep), for the tile kernel. */
  eulerStep?(step: number): EulerCoefficients | null;
  /**
   * The memory for the windows' outputs, the latents, the fused outputs and the kernels' work (default: a new one;
   * null: the TypeScript loops only).
   */
  memory?: KernelMemory | null;
}

/** The part of the latent a window writes (its rectangle clipped to the latent; empty if it lies outside). */
function canvasRect(geo: PatchGeometry, grid: WindowGrid, p: WindowPlacement): Rect {
  const y0 = Math.max(0, p.top);
  const x0 = Math.max(0, p.left);
  return { y0, y1: Math.max(y0, Math.min(geo.height, p.top + grid.vertical.window)), x0, x1: Math.max(x0, Math.min(geo.width, p.left + grid.horizontal.window)) };
}

/**
 * The latent positions a window reads: its rectangle within the padded latent, the padding mapped to the last row or
 * column; the whole latent for a window that reads only zeros, so that it still waits for the previous step.
 */
function readRect(geo: PatchGeometry, grid: WindowGrid, p: WindowPlacement): Rect {
  const y0 = Math.max(0, p.top);
  const y1 = Math.min(geo.paddedHeight, p.top + grid.vertical.window);
  const x0 = Math.max(0, p.left);
  const x1 = Math.min(geo.paddedWidth, p.left + grid.horizontal.window);
  if (y1 <= y0 || x1 <= x0) return { y0: 0, y1: geo.height, x0: 0, x1: geo.width };
  const last = (v: number, size: number) => Math.min(v, size - 1);
  return { y0: last(y0, geo.height), y1: last(y1 - 1, geo.height) + 1, x0: last(x0, geo.width), x1: last(x1 - 1, geo.width) + 1 };
}

const isEmpty = (r: Rect) => r.y1 <= r.y0 || r.x1 <= r.x0;
const overlaps = (a: Rect, b: Rect) => !isEmpty(a) && !isEmpty(b) && a.y0 < b.y1 && b.y0 < a.y1 && a.x0 < b.x1 && b.x0 < a.x1;

/**
 * Tiles of half the window stride: fine enough that a window waits for little more than the windows it reads, coarse
 * enough that the host work per tile stays small (rectangles of equal coverage are a few pixels wide once every
 * window has its own jitter).
 */
function tileSize(grid: WindowGrid): number {
  return Math.max(4, Math.floor(Math.min(grid.vertical.stride, grid.horizontal.stride) / 2));
}

/** The tiles of one step and, per window, the tiles it writes to. */
function cutTiles(geo: PatchGeometry, rects: Rect[], size: number): { tiles: Tile[]; covers: Tile[][] } {
  const tiles: Tile[] = [];
  const covers: Tile[][] = rects.map(() => []);
  for (let y0 = 0; y0 < geo.height; y0 += size) {
    for (let x0 = 0; x0 < geo.width; x0 += size) {
      const tile: Tile = { y0, y1: Math.min(geo.height, y0 + size), x0, x1: Math.min(geo.width, x0 + size), windows: [], left: 0, readers: [] };
      rects.forEach((r, i) => {
        if (!overlaps(r, tile)) return;
        tile.windows.push(i);
        covers[i].push(tile);
      });
      if (tile.windows.length === 0) throw uncovered();
      tile.left = tile.windows.length;
      tiles.push(tile);
    }
  }
  return { tiles, covers };
}

const uncovered = () => new AsgdError('Stage-2 windows left a latent position uncovered', { kind: 'internal' });

/** Stage-2 steps start..T-1 as a dataflow (see the top of this file). */
export class WindowFlow {
  private readonly steps = new Map<number, FlowStep>();
  private readonly buffers = new BufferStack();
  /** Per position of a tile: the number of windows over it, and its float32 reciprocal (as WindowCanvas). */
  private coverage = new Int32Array(0);
  private inverse = new Float32Array(0);
  /** A tile's fused output and its latent, handed to advance (which keeps neither), and the tile it steps into. */
  private tileOutput = new Float32Array(0);
  private tileLatent = new Float32Array(0);
  private tileStepped = new Float32Array(0);
  /** A tile's positions in the latent (tilePositions). */
  private tileAt = new Int32Array(0);
  private stopped = false;
  /** The windows' outputs, the latents, the fused outputs and the kernels' work (src/core/kernels); null where unavailable. */
  private readonly heap: KernelHeap | null;

  constructor(
    private readonly plan: MethodPlan,
    latent: Float32Array,
    start: number,
    jitter: RandomSource | undefined,
    private readonly hooks: FlowHooks,
  ) {
    const geo = plan.geometry;
    const memory = hooks.memory === undefined ? KernelMemory.create() : hooks.memory;
    this.heap = memory ? new KernelHeap(memory) : null;
    let prev: FlowStep | undefined;
    for (let t = start; t < plan.numSteps; t++) {
      // All steps' placements now, in step order: the jitter stream's draws are those of the barrier.
      const grid = gridAt(plan, t);
      const placements = placeWindows(grid, jitter);
      const rects = placements.map((p) => canvasRect(geo, grid, p));
      const { tiles, covers } = cutTiles(geo, rects, tileSize(grid));
      const waits = placements.map(() => 0);
      if (prev) this.link(prev, grid, placements, waits);
      const s: FlowStep = {
        step: t, grid, placements, rects, tiles, covers, waits, outputs: [], slots: [], latent: null, after: null,
        fused: null, tilesLeft: tiles.length, done: deferred(),
      };
      this.steps.set(t, s);
      prev = s;
    }
    const first = this.steps.get(start)!;
    first.latent = this.adopt(padLatent(latent, geo));
    for (let i = 0; i < first.placements.length; i++) this.dispatch(first, i);
  }

  /**
   * Step `step`'s fused output once all its windows are done, and the latent after it [C, h, w] (every tile stepped
   * into the next step's latent; absent after the last step).
   */
  async result(step: number): Promise<{ fused: Float32Array; after?: Float32Array }> {
    const s = this.steps.get(step)!;
    const fused = await s.done.promise;
    this.steps.delete(step);
    return s.after ? { fused, after: s.after } : { fused };
  }

  /** Hands nothing more over (after a failure, or when the method starts a new run). */
  stop(error: unknown): void {
    this.stopped = true;
    for (const s of this.steps.values()) s.done.reject(error);
  }

  /** Which tiles of `prev` each window of the next step reads. */
  private link(prev: FlowStep, grid: WindowGrid, placements: WindowPlacement[], waits: number[]): void {
    placements.forEach((p, j) => {
      const reads = readRect(this.plan.geometry, grid, p);
      for (const tile of prev.tiles) {
        if (!overlaps(tile, reads)) continue;
        tile.readers.push(j);
        waits[j]++;
      }
    });
  }

  private dispatch(s: FlowStep, i: number): void {
    if (this.stopped) return;
    const geo = this.plan.geometry;
    const sample = this.buffers.take(geo.channels * s.grid.vertical.window * s.grid.horizontal.window);
    const cut = this.extractInHeap(s, i, sample);
    const unit = windowUnit(this.plan, this.hooks.scheduler, s.step, s.grid, s.placements[i], cut ? null : this.view(s.latent!), sample);
    // Earlier steps first: their tiles unblock the most.
    this.hooks
      // The last step's windows end the stream: splitting one of them may shorten the tail.
      .evaluate(unit, this.plan.numSteps - s.step, s.step < this.plan.numSteps - 1)
      .then((output) => {
        this.buffers.give(sample);
        if (!this.stopped) this.windowDone(s, i, output);
      })
      .catch((error: unknown) => this.stop(error));
  }

  /** Window i's input cut out of the step's latent in the heap by the kernel (kernels.wat extractWindow) into `into`; false: not taken. */
  private extractInHeap(s: FlowStep, i: number, into: Float32Array): boolean {
    const heap = this.heap;
    const latent = s.latent!;
    if (heap === null || latent instanceof Float32Array) return false;
    const dst = heap.alloc(into.length * 4);
    if (dst === null) return false;
    const geo = this.plan.geometry;
    const p = s.placements[i];
    heap.memory.kernels.extractWindow(
      latent.at, dst, geo.channels, geo.paddedHeight, geo.paddedWidth, p.top, p.left, s.grid.vertical.window, s.grid.horizontal.window,
      this.hooks.scheduler.inputScale(s.step),
    );
    into.set(heap.memory.f32(dst, into.length));
    heap.release(dst, into.length * 4);
    return true;
  }

  private windowDone(s: FlowStep, i: number, output: Float32Array): void {
    const slot = this.heap?.alloc(output.length * 4) ?? null;
    if (slot !== null) {
      this.heap!.memory.f32(slot, output.length).set(output);
      s.slots[i] = slot;
    } else {
      const copy = this.buffers.take(output.length);
      copy.set(output);
      s.outputs[i] = copy;
    }
    for (const tile of s.covers[i]) if (--tile.left === 0) this.tileDone(s, tile);
  }

  private tileDone(s: FlowStep, tile: Tile): void {
    const geo = this.plan.geometry;
    const next = this.steps.get(s.step + 1);
    s.fused ??= this.place(geo.channels * geo.height * geo.width);
    if (next) next.latent ??= this.place(geo.channels * geo.paddedHeight * geo.paddedWidth);
    if (!this.tileKernel(s, next, tile)) {
      const part = this.fuse(s, tile);
      copyRect(part, this.view(s.fused), tile, geo.height, geo.width, geo.channels, true);
      if (next) this.stepTile(s, next, tile, part);
    }
    if (next) {
      this.padTile(next, tile);
      for (const j of tile.readers) if (--next.waits[j] === 0) this.dispatch(next, j);
    }
    if (--s.tilesLeft > 0) return;
    for (const out of s.outputs) if (out) this.buffers.give(out);
    const bytes = 4 * geo.channels * s.grid.vertical.window * s.grid.horizontal.window;
    for (const slot of s.slots) if (slot !== undefined) this.heap!.release(slot, bytes);
    s.outputs = [];
    s.slots = [];
    // What the loop keeps leaves the heap as plain arrays. The next latent is complete and no longer written (later
    // tiles go to later steps' latents); a plain one unpadded is handed over itself.
    const fused = this.takeOut(s.fused);
    if (next) {
      const { channels, height, width, paddedHeight, paddedWidth } = geo;
      const after = this.view(next.latent!);
      const cropped = cropLatent(after, channels, paddedHeight, paddedWidth, height, width);
      s.after = cropped === after && !(next.latent instanceof Float32Array) ? after.slice() : cropped;
    }
    this.drop(s.latent);
    s.latent = null;
    s.fused = null;
    s.done.resolve(fused);
  }

  /** A new array of `length` values, in the heap where it has room. */
  private place(length: number): FlowArray {
    const at = this.heap?.alloc(length * 4) ?? null;
    return at === null ? new Float32Array(length) : { at, length };
  }

  /** `a` copied into the heap where it has room, else `a` itself. */
  private adopt(a: Float32Array): FlowArray {
    const placed = this.place(a.length);
    if (placed instanceof Float32Array) return a;
    this.view(placed).set(a);
    return placed;
  }

  /** The values of `a` (a view into the heap: valid until the heap next grows). */
  private view(a: FlowArray): Float32Array {
    return a instanceof Float32Array ? a : this.heap!.memory.f32(a.at, a.length);
  }

  private drop(a: FlowArray | null): void {
    if (a !== null && !(a instanceof Float32Array)) this.heap!.release(a.at, a.length * 4);
  }

  /** `a` as a plain array (copied out of the heap, which then takes it back). */
  private takeOut(a: FlowArray): Float32Array {
    if (a instanceof Float32Array) return a;
    const out = this.view(a).slice();
    this.drop(a);
    return out;
  }

  /**
   * The fused output over a tile, [C, th, tw], with WindowCanvas's arithmetic per position: the windows added in
   * ascending order starting from zero, then times the float32 reciprocal of their number.
   */
  private fuse(s: FlowStep, tile: Tile): Float32Array {
    const channels = this.plan.geometry.channels;
    const winH = s.grid.vertical.window;
    const winW = s.grid.horizontal.window;
    const tw = tile.x1 - tile.x0;
    const plane = (tile.y1 - tile.y0) * tw;
    if (this.coverage.length < plane) {
      this.coverage = new Int32Array(plane);
      this.inverse = new Float32Array(plane);
      this.tileOutput = new Float32Array(channels * plane);
      this.tileLatent = new Float32Array(channels * plane);
      this.tileStepped = new Float32Array(channels * plane);
    }
    const part = this.tileOutput.subarray(0, channels * plane);
    if (this.fuseInHeap(s, tile, (partAt) => part.set(this.heap!.memory.f32(partAt, part.length)))) return part;
    part.fill(0);
    const cov = this.coverage;
    cov.fill(0, 0, plane);
    const windowSize = channels * winH * winW;
    for (const i of tile.windows) {
      const slot = s.slots[i];
      const out = slot === undefined ? s.outputs[i]! : this.heap!.memory.f32(slot, windowSize);
      const { top, left } = s.placements[i];
      const r = s.rects[i];
      const y0 = Math.max(r.y0, tile.y0);
      const y1 = Math.min(r.y1, tile.y1);
      const x0 = Math.max(r.x0, tile.x0);
      const x1 = Math.min(r.x1, tile.x1);
      for (let y = y0; y < y1; y++) {
        const d = (y - tile.y0) * tw - tile.x0;
        for (let x = x0; x < x1; x++) cov[d + x]++;
      }
      for (let c = 0; c < channels; c++) {
        for (let y = y0; y < y1; y++) {
          const d = c * plane + (y - tile.y0) * tw - tile.x0;
          const src = (c * winH + y - top) * winW - left;
          for (let x = x0; x < x1; x++) part[d + x] += out[src + x];
        }
      }
    }
    const inv = this.inverse;
    for (let k = 0; k < plane; k++) {
      if (cov[k] === 0) throw uncovered();
      inv[k] = 1 / cov[k];
    }
    for (let c = 0; c < channels; c++) {
      const base = c * plane;
      for (let k = 0; k < plane; k++) part[base + k] *= inv[k];
    }
    return part;
  }

  /**
   * The tile's fused output computed in the heap by the WebAssembly kernel (kernels.wat fuseTile): the same arithmetic
   * in the same order as fuse, so the same bits. Where every window over the tile is in the heap and the heap holds
   * the work: `use` is called with the output's offset, then the work's memory is given back; false: not taken.
   */
  private fuseInHeap(s: FlowStep, tile: Tile, use: (partAt: number) => void): boolean {
    const heap = this.heap;
    if (heap === null || !tile.windows.every((i) => s.slots[i] !== undefined)) return false;
    const channels = this.plan.geometry.channels;
    const winH = s.grid.vertical.window;
    const winW = s.grid.horizontal.window;
    const th = tile.y1 - tile.y0;
    const tw = tile.x1 - tile.x0;
    const count = tile.windows.length;
    const bytes = [channels * th * tw * 4, th * tw * 4, count * 28];
    const at = bytes.map((b) => heap.alloc(b));
    try {
      if (at.some((o) => o === null)) return false;
      const [partAt, covAt, descAt] = at as [number, number, number];
      const desc = heap.memory.i32(descAt, count * 7);
      tile.windows.forEach((i, w) => {
        const { top, left } = s.placements[i];
        const r = s.rects[i];
        // Where the window's output would hold the tile's (0, 0) in channel 0 (outside it where the window starts
        // inside the tile; only its rows ry0..ry1 and columns rx0..rx1 are read).
        desc[w * 7] = s.slots[i]! + 4 * ((tile.y0 - top) * winW + (tile.x0 - left));
        desc[w * 7 + 1] = 4 * winH * winW;
        desc[w * 7 + 2] = 4 * winW;
        desc[w * 7 + 3] = Math.max(r.y0, tile.y0) - tile.y0;
        desc[w * 7 + 4] = Math.min(r.y1, tile.y1) - tile.y0;
        desc[w * 7 + 5] = Math.max(r.x0, tile.x0) - tile.x0;
        desc[w * 7 + 6] = Math.min(r.x1, tile.x1) - tile.x0;
      });
      if (!heap.memory.kernels.fuseTile(partAt, covAt, descAt, count, channels, th, tw)) throw uncovered();
      use(partAt);
      return true;
    } finally {
      at.forEach((o, k) => o !== null && heap.release(o, bytes[k]!));
    }
  }

  /**
   * The whole of tileDone's arithmetic in the heap (fuseTile, then placeTile: the fused output written to the step's
   * and the tile stepped into the next latent by the Euler step advance takes), where the latents, the fused output
   * and the windows are all there and the step is an Euler step; false: not taken.
   */
  private tileKernel(s: FlowStep, next: FlowStep | undefined, tile: Tile): boolean {
    const inHeap = (a: FlowArray | null) => a !== null && !(a instanceof Float32Array);
    if (!inHeap(s.fused) || (next && !(inHeap(s.latent) && inHeap(next.latent)))) return false;
    const euler = next ? (this.hooks.eulerStep?.(s.step) ?? null) : null;
    if (next && euler === null) return false;
    const { channels, height: h, width: w, paddedHeight: H, paddedWidth: W } = this.plan.geometry;
    const at = (a: FlowArray | null) => (a === null || a instanceof Float32Array ? 0 : a.at);
    const c = euler ?? { kind: 0, sigma: 1, dt: 0, cOut: 0, s2p1: 1 };
    return this.fuseInHeap(s, tile, (partAt) => {
      this.heap!.memory.kernels.placeTile(
        partAt, at(s.fused), at(s.latent), at(next?.latent ?? null), next ? 1 : 0,
        channels, tile.y0, tile.x0, tile.y1 - tile.y0, tile.x1 - tile.x0, h, w, H, W, c.kind, c.sigma, c.dt, c.cOut, c.s2p1,
      );
    });
  }

  /** The next step's latent over the tile (ctx.advance). */
  private stepTile(s: FlowStep, next: FlowStep, tile: Tile, fused: Float32Array): void {
    const { channels, paddedHeight: H, paddedWidth: W } = this.plan.geometry;
    const sample = this.tileLatent.subarray(0, fused.length);
    copyRect(sample, this.view(s.latent!), tile, H, W, channels, false);
    const stepped = this.hooks.advance(s.step, fused, sample, this.tilePositions(tile, fused.length), this.tileStepped.subarray(0, fused.length));
    copyRect(stepped, this.view(next.latent!), tile, H, W, channels, true);
  }

  /** Where each element of a tile's compact arrays (copyRect's order) lies in the latent [C, h, w]. */
  private tilePositions(tile: Tile, length: number): Int32Array {
    if (this.tileAt.length < length) this.tileAt = new Int32Array(length);
    const { height: h, width: w, channels } = this.plan.geometry;
    const at = this.tileAt.subarray(0, length);
    for (let c = 0, k = 0; c < channels; c++) {
      for (let y = tile.y0; y < tile.y1; y++) for (let x = tile.x0; x < tile.x1; x++) at[k++] = (c * h + y) * w + x;
    }
    return at;
  }

  /** The padding's copies of the last row and column of the next step's latent, over the tile. */
  private padTile(next: FlowStep, tile: Tile): void {
    const { channels, height: h, width: w, paddedHeight: H, paddedWidth: W } = this.plan.geometry;
    if (H === h && W === w) return;
    const out = this.view(next.latent!);
    const right = tile.x1 === w ? W : tile.x1;
    for (let c = 0; c < channels; c++) {
      if (right > tile.x1) {
        for (let y = tile.y0; y < tile.y1; y++) {
          const row = (c * H + y) * W;
          out.fill(out[row + w - 1], row + w, row + W);
        }
      }
      if (tile.y1 !== h) continue;
      const last = (c * H + h - 1) * W;
      for (let y = h; y < H; y++) out.copyWithin((c * H + y) * W + tile.x0, last + tile.x0, last + right);
    }
  }
}

/**
 * Copies between a packed tile [C, th, tw] and the rectangle `r` of a [C, height, width] array: into the array when
 * `scatter`, out of it otherwise.
 */
function copyRect(part: Float32Array, whole: Float32Array, r: Rect, height: number, width: number, channels: number, scatter: boolean): void {
  const tw = r.x1 - r.x0;
  for (let c = 0, k = 0; c < channels; c++) {
    for (let y = r.y0; y < r.y1; y++, k += tw) {
      const o = (c * height + y) * width + r.x0;
      // A row at a time as a block copy (about 3x faster than element by element for 128-wide tiles here).
      if (scatter) whole.set(part.subarray(k, k + tw), o);
      else part.set(whole.subarray(o, o + tw), k);
    }
  }
}
