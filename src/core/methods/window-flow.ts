/**
 * Stage-2 dataflow: the windows of step t+1 start as soon as the part of the latent they read is known, instead of
 * after every window of step t (a barrier per step).
 *
 * The fused output at a position is the average of the windows covering it (WindowCanvas), and where the context
 * offers a part-of-the-latent scheduler step (MethodContext.advance) the latent at t+1 there depends only on those
 * windows. Each step's latent is cut into cells, rectangles covered by the same windows; a cell is fused and stepped
 * once its windows are done, and a window of the next step is handed over once every cell it reads is. The sums run
 * in window order from zero and divide by the same float32 reciprocal as WindowCanvas, so the fused outputs and the
 * latent are bit for bit those of the barrier. Portable: no Node APIs.
 */
import { AsgdError } from '../errors.ts';
import type { RandomSource } from '../random/types.ts';
import type { Scheduler } from '../schedulers/types.ts';
import { BufferStack } from './buffers.ts';
import { deferred, type Deferred } from './deferred.ts';
import type { PatchGeometry } from './geometry.ts';
import type { MethodPlan } from './plan.ts';
import { gridAt, unitTimeIds } from './plan.ts';
import { padLatent } from './polyphase.ts';
import type { UnetUnit } from './types.ts';
import type { WindowGrid, WindowPlacement } from './windows.ts';
import { extractWindow, placeWindows } from './windows.ts';

/** The unit of the window at `p` of step `step`, cut out of the padded latent into `into`. */
export function windowUnit(
  plan: MethodPlan, scheduler: Scheduler, step: number, grid: WindowGrid, p: WindowPlacement, padded: Float32Array, into: Float32Array,
): UnetUnit {
  const geo = plan.geometry;
  const winH = grid.vertical.window;
  const winW = grid.horizontal.window;
  return {
    id: `s2/k${step}/w${p.index}`,
    kind: 'window',
    step,
    index: p.index,
    sample: extractWindow(padded, geo.channels, geo.paddedHeight, geo.paddedWidth, p.top, p.left, winH, winW, scheduler.inputScale(step), into),
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

/** A rectangle covered by the same windows of a step: fused and stepped as one piece. */
interface Cell extends Rect {
  /** The covering windows in ascending order (the order WindowCanvas adds them in). */
  windows: number[];
  /** Covering windows not done yet. */
  left: number;
  /** Windows of the next step that read this cell. */
  readers: number[];
}

interface FlowStep {
  step: number;
  grid: WindowGrid;
  placements: WindowPlacement[];
  cells: Cell[];
  /** Per window: the cells it covers. */
  covers: Cell[][];
  /** Per window: cells of the previous step it still waits for. */
  waits: number[];
  /** Per window: a copy of its output once done. */
  outputs: (Float32Array | undefined)[];
  /** The padded latent at this step, written cell by cell by the previous step (null once no longer read). */
  latent: Float32Array | null;
  fused: Float32Array;
  cellsLeft: number;
  done: Deferred<Float32Array>;
}

export interface FlowHooks {
  scheduler: Scheduler;
  advance(step: number, modelOutput: Float32Array, sample: Float32Array): Float32Array;
  /** Evaluates one window; the output is read before the next await. */
  evaluate(unit: UnetUnit, priority: number): Promise<Float32Array>;
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

/** Sorted distinct cut positions of one axis: 0, size and every rectangle's edges. */
function cuts(rects: Rect[], size: number, lo: 'y0' | 'x0', hi: 'y1' | 'x1'): number[] {
  const at = new Set([0, size]);
  for (const r of rects) if (!isEmpty(r)) at.add(r[lo]).add(r[hi]);
  return [...at].sort((a, b) => a - b);
}

/** The cells of one step's windows and, per window, the cells it covers. */
function cutCells(geo: PatchGeometry, rects: Rect[]): { cells: Cell[]; covers: Cell[][] } {
  const ys = cuts(rects, geo.height, 'y0', 'y1');
  const xs = cuts(rects, geo.width, 'x0', 'x1');
  const cells: Cell[] = [];
  const covers: Cell[][] = rects.map(() => []);
  for (let a = 0; a + 1 < ys.length; a++) {
    for (let b = 0; b + 1 < xs.length; b++) {
      const cell: Cell = { y0: ys[a], y1: ys[a + 1], x0: xs[b], x1: xs[b + 1], windows: [], left: 0, readers: [] };
      rects.forEach((r, i) => {
        if (overlaps(r, cell)) {
          cell.windows.push(i);
          covers[i].push(cell);
        }
      });
      if (cell.windows.length === 0) throw new AsgdError('Stage-2 windows left a latent position uncovered', { kind: 'internal' });
      cell.left = cell.windows.length;
      cells.push(cell);
    }
  }
  return { cells, covers };
}

/** Stage-2 steps start..T-1 as a dataflow (see the top of this file). */
export class WindowFlow {
  private readonly steps = new Map<number, FlowStep>();
  private readonly buffers = new BufferStack();
  private stopped = false;

  constructor(
    private readonly plan: MethodPlan,
    latent: Float32Array,
    start: number,
    jitter: RandomSource | undefined,
    private readonly hooks: FlowHooks,
  ) {
    const geo = plan.geometry;
    let prev: FlowStep | undefined;
    for (let t = start; t < plan.numSteps; t++) {
      // All steps' placements now, in step order: the jitter stream's draws are those of the barrier.
      const grid = gridAt(plan, t);
      const placements = placeWindows(grid, jitter);
      const { cells, covers } = cutCells(geo, placements.map((p) => canvasRect(geo, grid, p)));
      const waits = placements.map(() => 0);
      if (prev) this.link(prev, grid, placements, waits);
      const s: FlowStep = {
        step: t, grid, placements, cells, covers, waits, outputs: [], latent: null,
        fused: new Float32Array(0), cellsLeft: cells.length, done: deferred(),
      };
      this.steps.set(t, s);
      prev = s;
    }
    const first = this.steps.get(start)!;
    first.latent = padLatent(latent, geo);
    for (let i = 0; i < first.placements.length; i++) this.dispatch(first, i);
  }

  /** Step `step`'s fused output, once all its windows are done. */
  async result(step: number): Promise<Float32Array> {
    const s = this.steps.get(step)!;
    const fused = await s.done.promise;
    this.steps.delete(step);
    return fused;
  }

  /** Hands nothing more over (after a failure, or when the method starts a new run). */
  stop(error: unknown): void {
    this.stopped = true;
    for (const s of this.steps.values()) s.done.reject(error);
  }

  /** Which cells of `prev` each window of the next step reads. */
  private link(prev: FlowStep, grid: WindowGrid, placements: WindowPlacement[], waits: number[]): void {
    placements.forEach((p, j) => {
      const reads = readRect(this.plan.geometry, grid, p);
      for (const cell of prev.cells) {
        if (!overlaps(cell, reads)) continue;
        cell.readers.push(j);
        waits[j]++;
      }
    });
  }

  private dispatch(s: FlowStep, i: number): void {
    if (this.stopped) return;
    const geo = this.plan.geometry;
    const sample = this.buffers.take(geo.channels * s.grid.vertical.window * s.grid.horizontal.window);
    const unit = windowUnit(this.plan, this.hooks.scheduler, s.step, s.grid, s.placements[i], s.latent!, sample);
    // Earlier steps first: their cells unblock the most.
    this.hooks
      .evaluate(unit, this.plan.numSteps - s.step)
      .then((output) => {
        this.buffers.give(sample);
        if (!this.stopped) this.windowDone(s, i, output);
      })
      .catch((error: unknown) => this.stop(error));
  }

  private windowDone(s: FlowStep, i: number, output: Float32Array): void {
    const copy = this.buffers.take(output.length);
    copy.set(output);
    s.outputs[i] = copy;
    for (const cell of s.covers[i]) if (--cell.left === 0) this.cellDone(s, cell);
  }

  private cellDone(s: FlowStep, cell: Cell): void {
    const geo = this.plan.geometry;
    if (s.fused.length === 0) s.fused = new Float32Array(geo.channels * geo.height * geo.width);
    this.fuse(s, cell);
    const next = this.steps.get(s.step + 1);
    if (next) {
      this.stepCell(s, next, cell);
      for (const j of cell.readers) if (--next.waits[j] === 0) this.dispatch(next, j);
    }
    if (--s.cellsLeft > 0) return;
    for (const out of s.outputs) if (out) this.buffers.give(out);
    s.outputs = [];
    s.latent = null;
    s.done.resolve(s.fused);
  }

  /** WindowCanvas's arithmetic over one cell: add the windows in order starting from zero, times 1 / coverage. */
  private fuse(s: FlowStep, cell: Cell): void {
    const { channels, height, width } = this.plan.geometry;
    const winH = s.grid.vertical.window;
    const winW = s.grid.horizontal.window;
    const fused = s.fused;
    const n = cell.windows.length;
    const inv = Math.fround(1 / n);
    for (let c = 0; c < channels; c++) {
      for (let y = cell.y0; y < cell.y1; y++) {
        const d = (c * height + y) * width;
        for (const i of cell.windows) {
          const out = s.outputs[i]!;
          const p = s.placements[i];
          const src = (c * winH + y - p.top) * winW - p.left;
          for (let x = cell.x0; x < cell.x1; x++) fused[d + x] += out[src + x];
        }
        if (n > 1) for (let x = cell.x0; x < cell.x1; x++) fused[d + x] *= inv;
      }
    }
  }

  /** The next step's latent over the cell (ctx.advance), with the padding's copies of the last row and column. */
  private stepCell(s: FlowStep, next: FlowStep, cell: Cell): void {
    const { channels, height: h, width: w, paddedHeight: H, paddedWidth: W } = this.plan.geometry;
    const ch = cell.y1 - cell.y0;
    const cw = cell.x1 - cell.x0;
    const fusedPart = new Float32Array(channels * ch * cw);
    const latentPart = new Float32Array(channels * ch * cw);
    const latent = s.latent!;
    for (let c = 0, k = 0; c < channels; c++) {
      for (let y = cell.y0; y < cell.y1; y++, k += cw) {
        fusedPart.set(s.fused.subarray((c * h + y) * w + cell.x0, (c * h + y) * w + cell.x1), k);
        latentPart.set(latent.subarray((c * H + y) * W + cell.x0, (c * H + y) * W + cell.x1), k);
      }
    }
    const stepped = this.hooks.advance(s.step, fusedPart, latentPart);
    next.latent ??= new Float32Array(channels * H * W);
    const out = next.latent;
    const right = cell.x1 === w ? W : cell.x1;
    for (let c = 0, k = 0; c < channels; c++) {
      for (let y = cell.y0; y < cell.y1; y++, k += cw) {
        const row = (c * H + y) * W;
        out.set(stepped.subarray(k, k + cw), row + cell.x0);
        if (right > cell.x1) out.fill(out[row + w - 1], row + w, row + W);
      }
      if (cell.y1 !== h) continue;
      const last = (c * H + h - 1) * W;
      for (let y = h; y < H; y++) out.copyWithin((c * H + y) * W + cell.x0, last + cell.x0, last + right);
    }
  }
}
