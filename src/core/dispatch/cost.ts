/**
 * Task cost estimates per device, learned from measured durations. A task's work is its latent area, times
 * (1 + probeExtra) on the probe graph; each device has a rate (time per unit of work) for whole units and one for
 * CFG halves, running averages of what it measured. Unmeasured rates are borrowed: a device with no measurement
 * gets the mean of the others; a kind (whole or half) a device has not run yet gets its other rate times the
 * half/whole ratio measured on the devices that ran both, or `halfCost` before any did. Estimates only steer the
 * scheduling; they never change results. Portable: no Node APIs.
 *
 * Warm-up: a device's first calls of each kind on each graph (`warmup`) carry one-time costs (WebGPU compiles its
 * shaders per graph and shape, ONNX Runtime sizes its memory arenas, a busy host delays a thread's start), often
 * many times a warm call. Averaged in, one such call makes the device look slow; earliest-finish-time then gives it
 * no more work, so the rate is never measured again and the device idles for the rest of the generation (seen in
 * CI: the second of two CPU workers ran at most 3 calls, where it usually runs about half of 22-34). So a warm-up
 * call only sets a provisional rate, used until the device's first warm call and never slower than the mean warm
 * rate of the other devices.
 */
import type { UnitTask } from './tasks.ts';

export interface CostParams {
  /** Cost of one CFG half relative to the whole unit until measured (0.5: a batch-1 call costs half a batch-2 one). */
  halfCost: number;
  /** Extra work of the attention-probe graph, relative to the same task on the plain graph. */
  probeExtra: number;
  /** Weight of a new measurement in the running averages, (0, 1]. */
  learningRate: number;
  /** Calls per device, kind (whole or half) and graph (plain or probe) that count as warm-up (see above). */
  warmup: number;
}

export const DEFAULT_COST_PARAMS: Readonly<CostParams> = Object.freeze({ halfCost: 0.5, probeExtra: 0.15, learningRate: 0.3, warmup: 1 });

type RateKind = 'whole' | 'half';

export class CostModel {
  readonly params: CostParams;
  /** Running averages of warm calls. */
  private readonly rates: Record<RateKind, (number | undefined)[]>;
  /** The fastest warm-up call, per kind and device. */
  private readonly coldRates: Record<RateKind, (number | undefined)[]>;
  /** Calls seen per device, kind and graph (`${device}/${kind}/${probe}`). */
  private readonly calls = new Map<string, number>();

  constructor(devices: number, params: Partial<CostParams> = {}) {
    this.params = { ...DEFAULT_COST_PARAMS, ...params };
    const empty = () => new Array<number | undefined>(devices).fill(undefined);
    this.rates = { whole: empty(), half: empty() };
    this.coldRates = { whole: empty(), half: empty() };
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
    return this.rates[kind].some((r) => r !== undefined) || this.coldRates[kind].some((r) => r !== undefined);
  }

  /** Records a measured duration. */
  observe(task: UnitTask, device: number, duration: number): void {
    if (!(duration >= 0) || !Number.isFinite(duration)) return;
    const kind: RateKind = task.part === 'both' ? 'whole' : 'half';
    const rate = duration / this.work(task);
    const key = `${device}/${kind}/${task.probe}`;
    const seen = this.calls.get(key) ?? 0;
    this.calls.set(key, seen + 1);
    if (seen < this.params.warmup) {
      this.coldRates[kind][device] = Math.min(rate, this.coldRates[kind][device] ?? Infinity);
      return;
    }
    const old = this.rates[kind][device];
    const a = this.params.learningRate;
    this.rates[kind][device] = old === undefined ? rate : old + a * (rate - old);
  }

  /** A device's own rate: warm, else provisional (its warm-up, capped by the other devices' mean warm rate). */
  private own(kind: RateKind, device: number): number | undefined {
    const warm = this.rates[kind][device];
    if (warm !== undefined) return warm;
    const cold = this.coldRates[kind][device];
    if (cold === undefined) return undefined;
    const others = this.rates[kind].filter((r, d): r is number => r !== undefined && d !== device);
    return others.length > 0 ? Math.min(cold, mean(others)) : cold;
  }

  private known(kind: RateKind): number[] {
    return this.rates[kind].map((_, d) => this.own(kind, d)).filter((r): r is number => r !== undefined);
  }

  private rate(kind: RateKind, device: number): number {
    const own = this.own(kind, device);
    if (own !== undefined) return own;
    const other: RateKind = kind === 'whole' ? 'half' : 'whole';
    const sibling = this.own(other, device);
    if (sibling !== undefined) return sibling * this.ratio(kind);
    // Nothing measured on this device: the mean of the devices that measured this kind, else a neutral 1.
    const known = this.known(kind);
    if (known.length > 0) return mean(known);
    const knownOther = this.known(other);
    if (knownOther.length > 0) return mean(knownOther) * this.ratio(kind);
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
      const w = this.own('whole', d);
      const h = this.own('half', d);
      if (w !== undefined && h !== undefined) {
        sum += h / w;
        n++;
      }
    }
    let halfOverWhole = this.params.halfCost;
    if (n > 0) halfOverWhole = sum / n;
    else if (this.measured('whole') && this.measured('half')) {
      // No device ran both: compare the means over devices (fine for devices of one kind).
      halfOverWhole = mean(this.known('half')) / mean(this.known('whole'));
    }
    return kind === 'half' ? halfOverWhole : 1 / halfOverWhole;
  }
}

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}
