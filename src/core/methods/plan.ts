/**
 * Everything fixed before the first step: patch geometry, stage-2 windows, the stage split and the number
 * of units per step. Portable: no Node APIs.
 */
import { invalidArgument } from '../errors.ts';
import type { GeometryInput, PatchGeometry } from './geometry.ts';
import { planGeometry } from './geometry.ts';
import type { MethodOptions } from './options.ts';
import type { MethodName } from './types.ts';
import type { WindowGrid } from './windows.ts';
import { planWindows, planWindowsFor } from './windows.ts';

export interface MethodSetup extends GeometryInput {
  /** T, the number of scheduler steps (must equal ctx.scheduler.numSteps). */
  numSteps: number;
  /** SDXL micro-conditioning: give every unit time_ids (target = HR size in pixels, crop per unit). */
  timeIds?: boolean;
  /** SDXL `original_size` in pixels for the time ids (default: the HR size). */
  originalSize?: { width: number; height: number };
  /** Image pixels per latent pixel (8 for Stable Diffusion). Default 8. */
  vaeScaleFactor?: number;
}

export interface MethodPlan {
  name: MethodName;
  geometry: PatchGeometry;
  /** The stage-2 grid of the first stage-2 step (the only one unless stage2Windows is set). */
  windows: WindowGrid;
  /** Stage-2 grids; stage-2 step k uses grids[(k - S) % grids.length] (see gridAt). */
  grids: WindowGrid[];
  numSteps: number;
  /** S: steps 0..S-1 are stage 1 (patches), S..T-1 stage 2 (windows); 0 for direct and multidiffusion. */
  stage1Steps: number;
  /** unitsBefore[k] = units of steps 0..k-1; unitsBefore[T] = total. */
  unitsBefore: number[];
  timeIds: boolean;
  originalSize?: { width: number; height: number };
  vaeScaleFactor: number;
}

export function unitsPerStep(name: MethodName, geo: PatchGeometry, grids: readonly WindowGrid[], s: number, step: number): number {
  if (name === 'direct') return 1;
  return step < s ? geo.count : grids[(step - s) % grids.length].count;
}

/** The stage-2 grid of step `step` (>= S). */
export function gridAt(plan: MethodPlan, step: number): WindowGrid {
  return plan.grids[(step - plan.stage1Steps) % plan.grids.length];
}

export function planMethod(name: MethodName, options: MethodOptions, setup: MethodSetup): MethodPlan {
  const geometry = planGeometry(setup);
  const numSteps = setup.numSteps;
  if (typeof numSteps !== 'number' || !Number.isInteger(numSteps) || numSteps < 1) {
    throw invalidArgument('steps', 'a positive integer', numSteps, 'Use e.g. 50.');
  }
  const vaeScaleFactor = setup.vaeScaleFactor ?? 8;
  if (!Number.isInteger(vaeScaleFactor) || vaeScaleFactor < 1) {
    throw invalidArgument('vaeScaleFactor', 'a positive integer', vaeScaleFactor, 'Stable Diffusion uses 8.');
  }
  const maxStride = Math.min(geometry.nativeHeight, geometry.nativeWidth);
  if (options.windowStride !== null && options.windowStride > maxStride) {
    throw invalidArgument(
      'windowStride',
      `an integer from 1 to the window size (${maxStride} latent px)`,
      options.windowStride,
      'A stride larger than the window leaves gaps; omit it for half the window.',
    );
  }
  if (options.stage2Windows > 0 && options.windowStride !== null) {
    throw invalidArgument(
      'stage2Windows',
      'no windowStride beside it (the grids set their own spacing)',
      options.stage2Windows,
      'Give either windowStride or stage2Windows.',
    );
  }
  const grids = options.stage2Windows > 0 ? planWindowsFor(geometry, options.stage2Windows) : [planWindows(geometry, options.windowStride ?? undefined)];
  const windows = grids[0];
  const stage1Steps = name === 'cutdiffusion' || name === 'asg' ? Math.round(numSteps * options.stageSplit) : 0;
  const unitsBefore = [0];
  for (let k = 0; k < numSteps; k++) {
    unitsBefore.push(unitsBefore[k] + unitsPerStep(name, geometry, grids, stage1Steps, k));
  }
  return { name, geometry, windows, grids, numSteps, stage1Steps, unitsBefore, timeIds: setup.timeIds ?? false, originalSize: setup.originalSize, vaeScaleFactor };
}

/** SDXL time_ids for a unit whose origin in the (zero-padded) canvas is (cropTop, cropLeft) latent px. */
export function unitTimeIds(plan: MethodPlan, cropTop: number, cropLeft: number): number[] | undefined {
  if (!plan.timeIds) return undefined;
  const f = plan.vaeScaleFactor;
  const h = plan.geometry.height * f;
  const w = plan.geometry.width * f;
  const original = plan.originalSize ?? { height: h, width: w };
  return [original.height, original.width, cropTop * f, cropLeft * f, h, w];
}
