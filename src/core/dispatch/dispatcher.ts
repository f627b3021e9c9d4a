/**
 * The dispatcher: hands the tasks of independent units to devices, one task in flight per device, and assembles
 * the results in unit order whatever the completion order (CFG halves are combined here, with the same
 * arithmetic as a batch-2 call), so a generation does not depend on how many devices ran it or when each finished.
 *
 * Scheduling: each batch is planned (balance.ts: which units to split into CFG halves, probe task first); queued
 * tasks are then assigned by earliest finish time whenever a device frees up, using per-device speeds learned
 * from measured durations (cost.ts), so a slow device does not take the last unit from a fast one. Several
 * batches may be outstanding (higher priority first, then first come first served).
 *
 * Faults: a device whose task fails is given up. Without retry the batch fails with an error naming the device
 * and the unit; with retry the task is queued again for the remaining devices (loading the probe graph on one of
 * them if every holder is gone). Portable: no Node APIs; time comes from `now`.
 */
import { AsgdError, cancelled } from '../errors.ts';
import type { UnetUnit, UnitResult } from '../methods/types.ts';
import { planBatch, simulateEft, type Slot } from './balance.ts';
import { combineCfg } from './cfg.ts';
import { CostModel, type CostParams } from './cost.ts';
import type { ExecDevice, SplitMode, TaskOutput, UnitTask } from './tasks.ts';
import type { AbortSignalLike } from '../platform.ts';

export interface DispatcherOptions {
  /** Monotonic clock in milliseconds (performance.now, or a virtual clock). */
  now(): number;
  split?: SplitMode;
  /** Re-run a failed task on another device instead of failing the batch. */
  retry?: boolean;
  cost?: Partial<CostParams>;
  /** A device was given up after a failure (the caller may end its worker). */
  onDeviceLost?(device: ExecDevice, error: AsgdError): void;
  /** Makes `device` able to run probe tasks (when every probe holder is lost); without it such tasks fail. */
  acquireProbe?(device: ExecDevice): Promise<void>;
  /** Called when a task starts and ends (benchmark instrument). */
  onTask?(event: TaskEvent): void;
}

export interface TaskEvent {
  task: UnitTask;
  device: string;
  start: number;
  end: number;
  ok: boolean;
}

export interface EvaluateOptions {
  signal?: AbortSignalLike;
  /** Higher runs first among queued batches (default 0). */
  priority?: number;
  /** A unit of a stream (EvaluateHint.stream): 'balance' does not split it. */
  stream?: boolean;
  /** Each unit's result as soon as it is in (EvaluateHint.onResult). */
  onResult?(index: number, result: UnitResult): void;
}

export interface DeviceStats {
  label: string;
  /** Time spent with a task in flight. */
  busy: number;
  tasks: number;
  halves: number;
  lost: boolean;
}

interface Batch {
  scale: number;
  priority: number;
  results: (UnitResult | undefined)[];
  halves: Map<number, { uncond?: TaskOutput; cond?: TaskOutput }>;
  remaining: number;
  settled: boolean;
  /** The signal that cancels it (one listener per signal: see watch). */
  signal?: AbortSignalLike;
  onResult?(index: number, result: UnitResult): void;
  resolve(results: UnitResult[]): void;
  reject(error: unknown): void;
}

interface Entry {
  task: UnitTask;
  unitIndex: number;
  batch: Batch;
  seq: number;
}

interface DeviceState {
  dev: ExecDevice;
  index: number;
  probe: boolean;
  lost: boolean;
  loading: boolean;
  running: { entry: Entry; start: number; expectedEnd: number } | null;
  busy: number;
  tasks: number;
  halves: number;
}

export class Dispatcher {
  readonly cost: CostModel;
  /** Set once a probe task ran on a device without the probe graph (no mask available). */
  attentionUnsupported = false;
  /** Tasks re-run on another device after a failure. */
  readonly retried: { task: string; from: string; error: string }[] = [];
  private readonly states: DeviceState[];
  private readonly queue: Entry[] = [];
  private readonly split: SplitMode;
  /** Probe tasks must run on a probe holder (some device started with the probe graph). */
  private readonly probeRequired: boolean;
  private seq = 0;
  private splitUnits = 0;
  /**
   * The batches in flight per signal, with the one abort listener that cancels them all. A run hands many batches
   * over at once (stage-1 run-ahead, stage-2 windows); a listener per batch would pass the platform's listener
   * warning threshold on one signal.
   */
  private readonly watched = new Map<AbortSignalLike, { batches: Set<Batch>; onAbort: () => void }>();

  constructor(
    devices: readonly ExecDevice[],
    private readonly options: DispatcherOptions,
  ) {
    if (devices.length === 0) throw new AsgdError('No devices to run on', { kind: 'invalid-argument', parameter: 'devices', hint: 'Pass at least one device, e.g. "cpu"' });
    this.states = devices.map((dev, index) => ({ dev, index, probe: dev.hasProbe, lost: false, loading: false, running: null, busy: 0, tasks: 0, halves: 0 }));
    this.cost = new CostModel(devices.length, options.cost);
    this.split = options.split ?? 'never';
    this.probeRequired = devices.some((d) => d.hasProbe);
  }

  get stats(): DeviceStats[] {
    return this.states.map((s) => ({ label: s.dev.label, busy: s.busy, tasks: s.tasks, halves: s.halves, lost: s.lost }));
  }

  /** Units split into CFG halves so far. */
  get unitsSplit(): number {
    return this.splitUnits;
  }

  /** Devices not given up. */
  get liveDevices(): ExecDevice[] {
    return this.states.filter((s) => !s.lost).map((s) => s.dev);
  }

  /** Evaluates independent units; results in unit order. */
  evaluate(units: readonly UnetUnit[], guidanceScale: number, opts: EvaluateOptions = {}): Promise<UnitResult[]> {
    const signal = opts.signal;
    if (signal?.aborted) return Promise.reject(cancelled());
    if (units.length === 0) return Promise.resolve([]);
    return new Promise<UnitResult[]>((resolve, reject) => {
      const batch: Batch = {
        scale: guidanceScale,
        priority: opts.priority ?? 0,
        results: new Array(units.length),
        halves: new Map(),
        remaining: 0,
        settled: false,
        signal,
        onResult: opts.onResult,
        resolve,
        reject,
      };
      if (signal) this.watch(signal, batch);
      const index = new Map(units.map((u, i) => [u, i]));
      const mode = opts.stream && this.split === 'balance' ? 'never' : this.split;
      const plan = planBatch(units, this.slots(), this.cost, mode, this.probeRequired, this.queue.map((e) => e.task));
      this.splitUnits += plan.splitUnits;
      batch.remaining = plan.tasks.length;
      for (const task of plan.tasks) this.enqueue({ task, unitIndex: index.get(task.unit)!, batch, seq: this.seq++ });
      this.pump();
    });
  }

  private enqueue(entry: Entry): void {
    // Sorted by priority (high first), then arrival.
    let i = this.queue.length;
    while (i > 0) {
      const prev = this.queue[i - 1]!;
      if (prev.batch.priority > entry.batch.priority || (prev.batch.priority === entry.batch.priority && prev.seq < entry.seq)) break;
      i--;
    }
    this.queue.splice(i, 0, entry);
  }

  private slots(): Slot[] {
    const now = this.options.now();
    return this.states
      .filter((s) => !s.lost && !s.loading)
      .map((s) => ({ device: s.index, freeAt: s.running ? Math.max(0, s.running.expectedEnd - now) : 0, probe: s.probe }));
  }

  /** Starts tasks on idle devices: each takes the first queued task that the earliest-finish plan gives it. */
  private pump(): void {
    if (this.queue.length === 0) return;
    this.failIfNoDevices();
    if (this.queue.length === 0) return;
    const slots = this.slots();
    const sim = simulateEft(
      this.queue.map((e) => e.task),
      slots,
      (t, d) => this.cost.estimate(t, d),
      this.probeRequired,
    );
    const picks: [DeviceState, Entry][] = [];
    for (const s of this.states) {
      if (s.lost || s.loading || s.running) continue;
      const i = sim.devices.indexOf(s.index);
      if (i >= 0) picks.push([s, this.queue[i]!]);
    }
    for (const [s, entry] of picks) {
      this.queue.splice(this.queue.indexOf(entry), 1);
      this.start(s, entry);
    }
    if (this.queue.length > 0 && sim.devices.includes(-1)) this.handleUnplaceable();
  }

  /** Queued probe tasks with no live probe holder: load the probe graph on a device, or fail. */
  private handleUnplaceable(): void {
    const live = this.states.filter((s) => !s.lost);
    if (live.some((s) => s.probe || s.loading)) return;
    const idle = live.find((s) => !s.running) ?? live[0];
    const entry = this.queue.find((e) => e.task.probe)!;
    if (!idle || !this.options.acquireProbe) {
      this.settle(entry.batch, new AsgdError(`No device left that holds the attention probe for unit ${entry.task.id}`, {
        kind: 'device', parameter: 'devices', hint: 'Every device holding the probe graph failed; see the earlier device error',
      }));
      return;
    }
    idle.loading = true;
    this.options.acquireProbe(idle.dev).then(
      () => {
        idle.loading = false;
        idle.probe = true;
        this.pump();
      },
      (err: unknown) => {
        idle.loading = false;
        this.loseDevice(idle, this.describeFailure(idle, 'loading the attention probe', err));
        this.failIfNoDevices();
        this.pump();
      },
    );
  }

  private start(s: DeviceState, entry: Entry): void {
    const now = this.options.now();
    s.running = { entry, start: now, expectedEnd: now + this.cost.estimate(entry.task, s.index) };
    let promise: Promise<TaskOutput>;
    try {
      promise = s.dev.run(entry.task, entry.batch.scale);
    } catch (err) {
      promise = Promise.reject(err);
    }
    promise.then(
      (out) => this.finish(s, entry, out),
      (err: unknown) => this.fail(s, entry, err),
    );
  }

  private endTask(s: DeviceState, entry: Entry, ok: boolean): void {
    const end = this.options.now();
    const start = s.running?.start ?? end;
    s.running = null;
    s.busy += end - start;
    this.options.onTask?.({ task: entry.task, device: s.dev.label, start, end, ok });
    if (ok) {
      s.tasks++;
      if (entry.task.part !== 'both') s.halves++;
      this.cost.observe(entry.task, s.index, end - start);
    }
  }

  private finish(s: DeviceState, entry: Entry, out: TaskOutput): void {
    this.endTask(s, entry, true);
    // The freed device takes its next queued task first: the host work on this result (onResult) runs meanwhile.
    this.pump();
    const batch = entry.batch;
    if (!batch.settled) {
      try {
        this.accept(entry, out);
      } catch (err) {
        this.settle(batch, err);
      }
    }
  }

  private accept(entry: Entry, out: TaskOutput): void {
    const { batch, unitIndex: i, task } = entry;
    if (out.attentionUnsupported) this.attentionUnsupported = true;
    let result: UnitResult | undefined;
    if (task.part === 'both') {
      result = out.attention ? { output: out.output, attention: out.attention } : { output: out.output };
    } else {
      const h = batch.halves.get(i) ?? {};
      h[task.part] = out;
      batch.halves.set(i, h);
      if (h.uncond && h.cond) {
        const output = combineCfg(h.uncond.output, h.cond.output, batch.scale);
        result = h.cond.attention ? { output, attention: h.cond.attention } : { output };
        batch.halves.delete(i);
      }
    }
    if (result) {
      batch.results[i] = result;
      batch.onResult?.(i, result);
    }
    if (--batch.remaining === 0) this.settle(batch);
  }

  private fail(s: DeviceState, entry: Entry, err: unknown): void {
    this.endTask(s, entry, false);
    const batch = entry.batch;
    if (!batch.settled) {
      if (err instanceof AsgdError && err.kind === 'cancelled') {
        this.settle(batch, err);
      } else {
        const error = this.describeFailure(s, `unit ${entry.task.id}`, err);
        this.loseDevice(s, error);
        if (this.options.retry && this.states.some((x) => !x.lost)) {
          this.retried.push({ task: entry.task.id, from: s.dev.label, error: error.message });
          this.enqueue(entry);
        } else {
          this.settle(batch, error);
        }
      }
    }
    this.failIfNoDevices();
    this.pump();
  }

  private loseDevice(s: DeviceState, error: AsgdError): void {
    if (s.lost) return;
    s.lost = true;
    this.options.onDeviceLost?.(s.dev, error);
  }

  private failIfNoDevices(): void {
    if (this.states.some((s) => !s.lost)) return;
    for (const e of [...this.queue]) {
      this.settle(e.batch, new AsgdError(`No device left to run unit ${e.task.id}`, { kind: 'device', parameter: 'devices', hint: 'Every device failed; see the earlier device error' }));
    }
  }

  /** An error that names the device and the task, whatever the device reported. */
  private describeFailure(s: DeviceState, what: string, err: unknown): AsgdError {
    const label = s.dev.label;
    const msg = err instanceof Error ? err.message : String(err);
    if (err instanceof AsgdError && err.kind === 'device' && msg.includes(label) && msg.includes(what)) return err;
    return new AsgdError(`Device ${label} failed on ${what}: ${msg}`, {
      kind: 'device',
      parameter: 'devices',
      hint: 'Run with retry on to finish on the other devices, or check that device alone',
      cause: err,
    });
  }

  /** Cancels `batch` when `signal` aborts, through the signal's one listener. */
  private watch(signal: AbortSignalLike, batch: Batch): void {
    let w = this.watched.get(signal);
    if (!w) {
      const batches = new Set<Batch>();
      const onAbort = () => {
        for (const b of [...batches]) this.settle(b, cancelled());
      };
      w = { batches, onAbort };
      this.watched.set(signal, w);
      signal.addEventListener('abort', onAbort, { once: true });
    }
    w.batches.add(batch);
  }

  private unwatch(batch: Batch): void {
    const signal = batch.signal;
    const w = signal && this.watched.get(signal);
    if (!signal || !w) return;
    w.batches.delete(batch);
    if (w.batches.size === 0) {
      signal.removeEventListener('abort', w.onAbort);
      this.watched.delete(signal);
    }
  }

  private settle(batch: Batch, error?: unknown): void {
    if (batch.settled) return;
    batch.settled = true;
    this.unwatch(batch);
    for (let i = this.queue.length - 1; i >= 0; i--) if (this.queue[i]!.batch === batch) this.queue.splice(i, 1);
    if (error !== undefined) batch.reject(error);
    else batch.resolve(batch.results as UnitResult[]);
  }
}
