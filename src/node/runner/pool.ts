/**
 * The device pool: the coordinator's view of its device workers. UNet units go through the portable dispatcher
 * (src/core/dispatch: load balance, CFG-half splitting, result order, faults); the other components (text
 * encoder, VAE) are requested from a worker holding them. With retry on, a lost worker is replaced: its tasks run
 * on the others, which load the component they miss (probe graph, text encoder, VAE) on demand.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { AsgdError } from '../../core/errors.ts';
import type { EvaluateHint, UnetUnit, UnitResult } from '../../core/methods/types.ts';
import type { RandomSource } from '../../core/random/types.ts';
import { Dispatcher, type DeviceStats } from '../../core/dispatch/dispatcher.ts';
import type { ExecDevice, SplitMode, TaskOutput, UnitTask } from '../../core/dispatch/tasks.ts';
import type { DeviceWorker } from './device-worker.ts';
import type { ComponentName, WorkerRequest, WorkerResult } from './protocol.ts';

export interface PoolOptions {
  /** How units may be split into CFG halves (see SplitMode). Default 'never'. */
  split?: SplitMode;
  /** Re-run a failed unit on another device instead of failing. */
  retry?: boolean;
  /** Component files, for loading a component on a surviving worker. */
  paths?: Partial<Record<ComponentName, string>>;
  /** Test hook: hold each UNet result back by a random delay of up to `maxMs`, to shuffle completion order. */
  completionJitter?: { random: RandomSource; maxMs: number };
}

/** One device worker as the dispatcher sees it. */
class WorkerDevice implements ExecDevice {
  /** Shared staging buffer for samples (worker threads): one copy in, no allocation, nothing to serialise. */
  private staging: Float32Array | undefined;

  constructor(
    readonly worker: DeviceWorker,
    readonly hasProbe: boolean,
    private readonly jitter?: PoolOptions['completionJitter'],
  ) {}

  get label(): string {
    return this.worker.label;
  }

  async run(task: UnitTask, guidanceScale: number): Promise<TaskOutput> {
    const u = task.unit;
    const n = u.sample.length;
    let sample: Float32Array;
    if (this.worker.isolation === 'process') {
      // Copied to the worker process, which shares no memory with this one (array-stow.ts: a file, or the channel).
      sample = u.sample;
    } else {
      if (!this.staging || this.staging.length < n) this.staging = new Float32Array(new SharedArrayBuffer(4 * n));
      sample = this.staging.subarray(0, n);
      sample.set(u.sample);
    }
    const r = await this.worker.request<'unet'>(
      {
        type: 'unet', sample, part: task.part, channels: n / (u.height * u.width), height: u.height, width: u.width,
        timestep: u.timestep, guidanceScale, wantAttention: u.wantAttention,
        maskTokens: u.maskTokens ? [...u.maskTokens] : undefined, timeIds: u.timeIds ? [...u.timeIds] : undefined,
      },
      `unit ${task.id}`,
    );
    if (this.jitter) await sleep(this.jitter.random.uniform() * this.jitter.maxMs);
    return { output: r.output, attention: r.attention, attentionUnsupported: r.attentionUnsupported };
  }
}

export class DevicePool {
  readonly dispatcher: Dispatcher;
  private readonly devices: WorkerDevice[];
  /** Components each worker holds. */
  private readonly holdings: Set<ComponentName>[];
  private readonly retry: boolean;
  /** Devices given up with retry on (their work went to the others), in order: the pipeline warns of them. */
  readonly losses: { device: string; error: string }[] = [];

  constructor(
    readonly workers: DeviceWorker[],
    holdings: ReadonlyArray<Iterable<ComponentName>>,
    private readonly options: PoolOptions = {},
  ) {
    this.retry = options.retry ?? false;
    this.holdings = workers.map((_, i) => new Set(holdings[i] ?? []));
    this.devices = workers.map((w, i) => new WorkerDevice(w, this.holdings[i]!.has('unetProbe'), options.completionJitter));
    this.dispatcher = new Dispatcher(this.devices, {
      now: () => performance.now(),
      split: options.split ?? 'never',
      retry: this.retry,
      // A worker that failed may be broken (out of memory, a crashed provider): end it.
      onDeviceLost: (dev, error) => {
        this.losses.push({ device: dev.label, error: error.message });
        void (dev as WorkerDevice).worker.terminate();
      },
      acquireProbe: options.paths?.unetProbe && this.retry
        ? async (dev) => {
            const i = this.devices.indexOf(dev as WorkerDevice);
            await this.load(i, 'unetProbe');
          }
        : undefined,
    });
  }

  /** How units are split into CFG halves. */
  get splitMode(): SplitMode {
    return this.options.split ?? 'never';
  }

  /** Whether a unit asked for attention and its device had no probe graph. */
  get attentionUnsupported(): boolean {
    return this.dispatcher.attentionUnsupported;
  }

  get stats(): DeviceStats[] {
    return this.dispatcher.stats;
  }

  evaluate(units: UnetUnit[], guidanceScale: number, signal?: AbortSignal, hint?: EvaluateHint): Promise<UnitResult[]> {
    return this.dispatcher.evaluate(units, guidanceScale, { signal, priority: hint?.priority, stream: hint?.stream, onResult: hint?.onResult });
  }

  /**
   * A request for `component` on a live worker holding it. With retry on, a failure of that worker (or its loss)
   * moves the request to another worker, loading the component there; `transfer` buffers are then copied, not
   * transferred, so that the request can be sent again.
   */
  async request<T extends WorkerResult['type']>(
    component: ComponentName, req: WorkerRequest, what: string, transfer: ArrayBuffer[] = [],
  ): Promise<Extract<WorkerResult, { type: T }>> {
    // With retry, the failure that stopped the last device: where every device fails the same way (a broken model),
    // that is the cause to report, not that no device is left.
    let failed: unknown;
    for (;;) {
      let i = this.workers.findIndex((w, k) => w.alive && this.holdings[k]!.has(component));
      if (i < 0) {
        if (!this.retry) throw this.missing(component, what);
        i = this.workers.findIndex((w) => w.alive);
        if (i < 0) throw failed ?? this.missing(component, what);
        await this.load(i, component);
      }
      try {
        return await this.workers[i]!.request<T>(req, what, this.retry ? [] : transfer);
      } catch (err) {
        if (!this.retry || (err instanceof AsgdError && err.kind === 'cancelled')) throw err;
        failed = err;
        this.losses.push({ device: this.workers[i]!.label, error: err instanceof Error ? err.message : String(err) });
        await this.workers[i]!.terminate();
      }
    }
  }

  /** Loads `component` (once) on the first live worker holding `beside`, e.g. the VAE encoder beside the decoder. */
  async ensure(component: ComponentName, beside: ComponentName): Promise<void> {
    if (this.workers.some((w, k) => w.alive && this.holdings[k]!.has(component))) return;
    let i = this.workers.findIndex((w, k) => w.alive && this.holdings[k]!.has(beside));
    if (i < 0) i = this.workers.findIndex((w) => w.alive);
    if (i < 0) throw this.missing(component, `loading ${component}`);
    await this.load(i, component);
  }

  private async load(i: number, component: ComponentName): Promise<void> {
    const file = this.options.paths?.[component];
    if (!file) throw this.missing(component, `loading ${component}`);
    await this.workers[i]!.request<'ok'>({ type: 'load', paths: { [component]: file } }, `loading ${component}`);
    this.holdings[i]!.add(component);
  }

  private missing(component: ComponentName, what: string): AsgdError {
    const holders = this.workers.filter((_, k) => this.holdings[k]!.has(component)).map((w) => w.label);
    return new AsgdError(`No running device holds ${component} for ${what}`, {
      kind: 'device',
      parameter: 'devices',
      received: holders.length ? `${holders.join(', ')} (stopped)` : 'none',
      hint: this.retry ? 'Every device that could run it failed earlier; the first failure says why' : 'A device failed earlier; turn retry on (--retry) to continue on the other devices',
    });
  }
}
