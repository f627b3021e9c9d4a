/**
 * Load balance for one batch of independent units: earliest-finish-time list scheduling, and the choice of which
 * units to split into their two CFG halves so that the batch ends soonest (9 windows on 4 devices: 8 whole and one
 * split, 2.5 unit-times instead of 3). The probe task (the key unit's conditional branch) goes first, to a device
 * holding the probe graph. Portable: no Node APIs.
 */
import type { UnetUnit } from '../methods/types.ts';
import type { CostModel } from './cost.ts';
import { taskOf, type SplitMode, type UnitTask } from './tasks.ts';

/** A device as the planner sees it: when it is free (relative to now) and whether it holds the probe graph. */
export interface Slot {
  device: number;
  freeAt: number;
  probe: boolean;
}

export interface Simulation {
  /** Device chosen for each task (same order as the tasks), -1 where no slot can run it. */
  devices: number[];
  /** Predicted end of the last task. */
  makespan: number;
}

/** A split only pays when it shortens the predicted batch by more than this fraction (each call has overhead). */
const MIN_GAIN = 0.02;

/**
 * Assigns `tasks`, in order, each to the slot where it would finish first (ties: the slot free first, then the
 * lower device index). With `probeRequired`, probe tasks only go to probe slots.
 */
export function simulateEft(
  tasks: readonly UnitTask[],
  slots: readonly Slot[],
  estimate: (task: UnitTask, device: number) => number,
  probeRequired: boolean,
): Simulation {
  const free = slots.map((s) => s.freeAt);
  const devices: number[] = [];
  let makespan = Math.max(0, ...free);
  for (const task of tasks) {
    let best = -1;
    let bestEnd = Infinity;
    for (let i = 0; i < slots.length; i++) {
      if (task.probe && probeRequired && !slots[i]!.probe) continue;
      const end = free[i]! + estimate(task, slots[i]!.device);
      if (end < bestEnd || (end === bestEnd && best >= 0 && free[i]! < free[best]!)) {
        best = i;
        bestEnd = end;
      }
    }
    devices.push(best < 0 ? -1 : slots[best]!.device);
    if (best >= 0) {
      free[best] = bestEnd;
      makespan = Math.max(makespan, bestEnd);
    }
  }
  return { devices, makespan };
}

/** Probe tasks first (the mask's producer), then by decreasing work, stable in unit order otherwise. */
export function orderTasks(tasks: UnitTask[], cost: CostModel): UnitTask[] {
  const key = (t: UnitTask) => cost.work(t) * (t.part === 'both' ? 1 : cost.params.halfCost);
  return tasks
    .map((t, i) => ({ t, i }))
    .sort((a, b) => Number(b.t.probe) - Number(a.t.probe) || key(b.t) - key(a.t) || a.i - b.i)
    .map((x) => x.t);
}

function tasksFor(units: readonly UnetUnit[], split: ReadonlySet<number>): UnitTask[] {
  const tasks: UnitTask[] = [];
  units.forEach((u, i) => {
    if (split.has(i)) tasks.push(taskOf(u, 'uncond'), taskOf(u, 'cond'));
    else tasks.push(taskOf(u, 'both'));
  });
  return tasks;
}

export interface BatchPlan {
  /** Tasks in dispatch order. */
  tasks: UnitTask[];
  /** Predicted end of the batch (relative to now, including work already queued). */
  makespan: number;
  /** How many units were split into halves. */
  splitUnits: number;
}

/**
 * Decides which units of a batch run as CFG halves. `ahead` are tasks already queued before this batch (they
 * occupy the slots first). 'balance' tries splitting the s smallest units (s = 0 .. 2 * devices), with and
 * without the probe unit, and keeps the fastest predicted plan; a plan with more halves must win by MIN_GAIN.
 */
export function planBatch(
  units: readonly UnetUnit[],
  slots: readonly Slot[],
  cost: CostModel,
  mode: SplitMode,
  probeRequired: boolean,
  ahead: readonly UnitTask[] = [],
): BatchPlan {
  const estimate = (t: UnitTask, d: number) => cost.estimate(t, d);
  const base = simulateEft(ahead, slots, estimate, probeRequired);
  const busy = slots.map((s) => ({ ...s }));
  base.devices.forEach((d, i) => {
    const slot = busy.find((s) => s.device === d);
    if (slot) slot.freeAt += estimate(ahead[i]!, d);
  });
  const evaluate = (split: Set<number>): BatchPlan => {
    const tasks = orderTasks(tasksFor(units, split), cost);
    return { tasks, makespan: simulateEft(tasks, busy, estimate, probeRequired).makespan, splitUnits: split.size };
  };
  if (mode === 'never' || units.length === 0) return evaluate(new Set());
  if (mode === 'always') return evaluate(new Set(units.map((_, i) => i)));

  // Candidates split the units that would run last: the smallest ones, latest in unit order among equals.
  const bySize = units
    .map((u, i) => ({ i, w: u.height * u.width }))
    .sort((a, b) => b.w - a.w || a.i - b.i)
    .map((x) => x.i);
  const probeUnit = units.findIndex((u) => u.wantAttention);
  let best = evaluate(new Set());
  const maxSplit = Math.min(units.length, 2 * slots.length);
  for (let s = 0; s <= maxSplit; s++) {
    const tail = new Set(bySize.slice(units.length - s));
    const variants = [tail];
    if (probeUnit >= 0 && !tail.has(probeUnit)) variants.push(new Set([...tail, probeUnit]));
    for (const split of variants) {
      if (split.size === 0) continue;
      // Until some device has timed a whole unit, keep one whole so the half/whole ratio gets measured.
      if (split.size === units.length && units.length > 1 && !cost.measured('whole')) continue;
      const plan = evaluate(split);
      const gain = plan.splitUnits > best.splitUnits ? 1 - MIN_GAIN : 1;
      if (plan.makespan < best.makespan * gain) best = plan;
    }
  }
  return best;
}
