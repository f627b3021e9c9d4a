/**
 * Task cost estimates per device, learned from measured durations. A task's work is its latent area, times
 * (1 + probeExtra) on the probe graph; each device has a rate (time per unit of work) for whole units and one for
 * CFG halves, running averages of what it measured. Unmeasured rates are borrowed: a device with no measurement
 * gets the mean of the others; a kind (whole or half) a device has not run yet gets its other rate times the
 * half/whole ratio measured on the devices that ran both, or `halfCost` before any did. Estimates only steer the
 * scheduling; they never change results. Portable: no Node APIs.
 */
import type { UnitTask } from './tasks.ts';

export interface CostParams {
  /** Cost of one CFG half relative to the whole unit until measured (0.5: a batch-1 call costs half a batch-2 one). */
  halfCost: number;
  /** Extra work of the attention-probe graph, relative to the same task on the plain graph. */
  probeExtra: number;
  /** Weight of a new measurement in the running averages, (0, 1]. */
  learningRate: number;
}

export const DEFAULT_COST_PARAMS: Readonly<CostParams> = Object.freeze({ halfCost: 0.5, probeExtra: 0.15, learningRate: 0.3 });

type RateKind = 'whole' | 'half';

export class CostModel {
  readonly params: CostParams;
  private readonly rates: Record<RateKind, (number | undefined)[]>;

  constructor(devices: number, params: Partial<CostParams> = {}) {
    this.params = { ...DEFAULT_COST_PARAMS, ...params };
    this.rates = { whole: new Array(devices).fill(undefined), half: new Array(devices).fill(undefined) };
  }

  /** Device-independent work of a task (latent area, probe extra included). */
  work(task: UnitTask): number {
    return task.unit.height * task.unit.width * (task.probe ? 1 + this.params.probeExtra : 1);
  }

  /** Estimated duration of `task` on `device` (in the clock's unit once measured; relative before). */
  estimate(task: UnitTask, device: number): number {
    return this.work(task) * this.rate(task.part === 'both' ? 'whole' : 'half', device);
  }

  /** Whether any device has measured this kind of task. */
  measured(kind: 'whole' | 'half'): boolean {
    return this.rates[kind].some((r) => r !== undefined);
  }

  /** Records a measured duration. */
  observe(task: UnitTask, device: number, duration: number): void {
    if (!(duration >= 0) || !Number.isFinite(duration)) return;
    const kind: RateKind = task.part === 'both' ? 'whole' : 'half';
    const rate = duration / this.work(task);
    const old = this.rates[kind][device];
    const a = this.params.learningRate;
    this.rates[kind][device] = old === undefined ? rate : old + a * (rate - old);
  }

  private rate(kind: RateKind, device: number): number {
    const own = this.rates[kind][device];
    if (own !== undefined) return own;
    const other: RateKind = kind === 'whole' ? 'half' : 'whole';
    const sibling = this.rates[other][device];
    if (sibling !== undefined) return sibling * this.ratio(kind);
    // Nothing measured on this device: the mean of the devices that measured this kind, else a neutral 1.
    const known = this.rates[kind].filter((r): r is number => r !== undefined);
    if (known.length > 0) return known.reduce((a, b) => a + b, 0) / known.length;
    const knownOther = this.rates[other].filter((r): r is number => r !== undefined);
    if (knownOther.length > 0) return (knownOther.reduce((a, b) => a + b, 0) / knownOther.length) * this.ratio(kind);
    return kind === 'half' ? this.params.halfCost : 1;
  }

  /**
   * Rate of `kind` over the other kind: measured on the devices that ran both (mean of their ratios), else the
   * ratio of the mean rates over devices, else from halfCost.
   */
  private ratio(kind: RateKind): number {
    let sum = 0;
    let n = 0;
    for (let d = 0; d < this.rates.whole.length; d++) {
      const w = this.rates.whole[d];
      const h = this.rates.half[d];
      if (w !== undefined && h !== undefined) {
        sum += h / w;
        n++;
      }
    }
    let halfOverWhole = this.params.halfCost;
    if (n > 0) halfOverWhole = sum / n;
    else if (this.measured('whole') && this.measured('half')) {
      // No device ran both: compare the means over devices (fine for devices of one kind).
      const mean = (xs: (number | undefined)[]) => {
        const k = xs.filter((x): x is number => x !== undefined);
        return k.reduce((a, b) => a + b, 0) / k.length;
      };
      halfOverWhole = mean(this.rates.half) / mean(this.rates.whole);
    }
    return kind === 'half' ? halfOverWhole : 1 / halfOverWhole;
  }
}
