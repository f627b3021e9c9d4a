/**
 * BENCHMARK INSTRUMENT, not a device: a latency model of GPUs for measuring the runner's scheduling.
 *
 * `LatencyModelDevice` implements the same ExecDevice interface as a worker thread, but instead of running a
 * model it spends a configured time per task on a virtual clock (a discrete-event simulation: no real sleeping)
 * and returns cheap zero outputs. Driving the real methods (createMethod, via the real denoising loop, the denoise stage),
 * the real scheduler and the real dispatcher with such devices measures how well the scheduling keeps K devices
 * busy, in seconds of wall time for 50-step runs. Host work (methods, scheduler) takes no virtual time unless
 * `chargeHost` is set, in which case the coordinator's measured wall time is added (one coordinator thread).
 */
import { SD15_SCHEDULER_CONFIG } from '../src/core/schedulers/presets.ts';
import { SD3_SCHEDULER_CONFIG } from '../src/core/sd3-config.ts';
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { AttentionMap, EvaluateHint, UnetUnit } from '../src/core/methods/types.ts';
import { resolveParams } from '../src/core/params.ts';
import { Dispatcher } from '../src/core/dispatch/dispatcher.ts';
import type { ExecDevice, SplitMode, TaskOutput, UnitTask } from '../src/core/dispatch/tasks.ts';
import { createScheduler } from '../src/core/schedulers/index.ts';
import { denoise as runMethod } from '../src/core/generation/denoise.ts';
import { schedulerFrom, startStep } from '../src/core/generation/img2img.ts';

/**
 * Discrete-event clock: `run` advances time to the next timer whenever the program waits only on timers. With
 * `chargeHost`, the wall time the program spends between events (the coordinator's host work) passes on the
 * virtual clock too, as it would on a single coordinator thread.
 */
export class VirtualClock {
  private now = 0;
  private readonly events: { at: number; seq: number; fire: () => void }[] = [];
  private seq = 0;
  /** Wall time spent in host work between events (measured with performance.now). */
  hostMs = 0;
  private realStart = performance.now();

  constructor(private readonly chargeHost = false) {}

  /** Current virtual time, ms. */
  get time(): number {
    return this.chargeHost ? this.now + (performance.now() - this.realStart) : this.now;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const e = { at: this.time + ms, seq: this.seq++, fire: resolve };
      let i = this.events.length;
      while (i > 0 && (this.events[i - 1]!.at > e.at || (this.events[i - 1]!.at === e.at && this.events[i - 1]!.seq > e.seq))) i--;
      this.events.splice(i, 0, e);
    });
  }

  async run<T>(main: () => Promise<T>): Promise<T> {
    let done = false;
    let value: T | undefined;
    let error: unknown;
    this.realStart = performance.now();
    const p = main().then(
      (v) => void ((done = true), (value = v)),
      (e: unknown) => void ((done = true), (error = e)),
    );
    for (;;) {
      // One turn of the event loop runs every promise chain that is not waiting on a timer.
      await yieldToLoop();
      const host = performance.now() - this.realStart;
      this.hostMs += host;
      if (this.chargeHost) this.now += host;
      if (done) break;
      const e = this.events.shift();
      if (!e) throw new Error('VirtualClock: the program waits on nothing the clock schedules');
      this.now = Math.max(this.now, e.at);
      this.realStart = performance.now();
      e.fire();
    }
    await p;
    if (error !== undefined) throw error;
    return value as T;
  }
}

export interface LatencyParams {
  /** Time of one whole unit (batch-2 CFG call) at the native size, ms. */
  unitMs: number;
  /** Native latent area (a unit of this area costs unitMs). */
  nativeArea: number;
  /** Time of a CFG half (batch-1 call) relative to a whole unit. */
  halfCost: number;
  /** Extra time of the attention-probe graph (the key unit's mask), relative to the same task. */
  probeExtra: number;
  /** Fixed cost per call (dispatch, transfers, launch), ms. */
  callOverheadMs: number;
}

const FAKE_MAP_LAYERS = ['/up_blocks.0/attentions.0/transformer_blocks.0/attn2', '/up_blocks.1/attentions.0/transformer_blocks.0/attn2'];

/** Cheap attention maps with some spatial structure, so the real mask code runs. */
function fakeAttention(): AttentionMap[] {
  return FAKE_MAP_LAYERS.map((layer, l) => {
    const size = 16 << l;
    const data = new Float32Array(size * size * 77);
    for (let i = 0; i < data.length; i++) data[i] = ((i * 2654435761 + l) % 1000) / 77000;
    return { layer, height: size, width: size, tokens: 77, data };
  });
}

export class LatencyModelDevice implements ExecDevice {
  private readonly zeros = new Map<number, Float32Array>();
  private static attention: AttentionMap[] | undefined;

  constructor(
    readonly label: string,
    readonly hasProbe: boolean,
    private readonly clock: VirtualClock,
    private readonly params: LatencyParams,
    /** Relative speed (2 = twice as fast as the reference device). */
    private readonly speed = 1,
  ) {}

  duration(task: UnitTask): number {
    const p = this.params;
    const area = (task.unit.height * task.unit.width) / p.nativeArea;
    return (p.unitMs * area * (task.part === 'both' ? 1 : p.halfCost) * (task.probe ? 1 + p.probeExtra : 1) + p.callOverheadMs) / this.speed;
  }

  async run(task: UnitTask): Promise<TaskOutput> {
    await this.clock.sleep(this.duration(task));
    const n = task.unit.sample.length;
    let out = this.zeros.get(n);
    if (!out) this.zeros.set(n, (out = new Float32Array(n)));
    if (!task.probe) return { output: out };
    LatencyModelDevice.attention ??= fakeAttention();
    return { output: out, attention: LatencyModelDevice.attention };
  }
}

export interface Geometry {
  name: string;
  /** HR latent size (square) and native latent size. */
  latent: number;
  native: number;
  /** SD3's: 16 latent channels, latent sides in multiples of 2, flow-matching Euler, no time ids (default SDXL's). */
  sd3?: boolean;
}

/** The paper's SDXL geometries: 4 patches and 9 windows at 2048 px, 9 and 25 at 3072 px (native 1024 px). */
export const SDXL_GEOMETRIES: readonly Geometry[] = [
  { name: 'SDXL 2048x2048 (4 patches, 9 windows)', latent: 256, native: 128 },
  { name: 'SDXL 3072x3072 (9 patches, 25 windows)', latent: 384, native: 128 },
];

/** SD3 at 2048 px (native 1024 px): SDXL's 2048 geometry with 16 latent channels and flow-matching Euler. */
export const SD3_GEOMETRY: Geometry = { name: 'SD3 2048x2048 (4 patches, 9 windows, 16 channels)', latent: 256, native: 128, sd3: true };

export interface SimSettings {
  geometry: Geometry;
  devices: number;
  steps: number;
  pixelInteraction: boolean;
  guidanceSync: boolean;
  split: SplitMode;
  latency: LatencyParams;
  chargeHost?: boolean;
  /** Relative device speeds (default all 1). */
  speeds?: number[];
  /** Stage split (default 0.5, the paper's; the shipped default is 0.8). */
  stageSplit?: number;
  /** Method options beyond the above (e.g. interactionEvery, stage2Windows). */
  methodOptions?: Record<string, unknown>;
  /** Every stage-1 step a barrier (no run-ahead), as before run-ahead existed. */
  lockstep?: boolean;
  /** A scheduler other than the geometry's Euler (--scheduler's names, e.g. dpmpp-2m), with the same config. */
  scheduler?: string;
  /**
   * An upscale at this strength instead of a generation: the last steps from an encoded input (zeros here: the
   * devices' time does not depend on it), asg's stage 1 guided toward a structure target as the default source is.
   */
  upscaleStrength?: number;
}

/**
 * The latency-model generation at the shipped defaults (stage split 0.8, async guidance, pixel interaction, split
 * 'balance', a CFG half 1.04 of a whole call, host time charged) whose host work bench/host-profile.ts and
 * bench/host-ab.ts measure: SDXL at 2048 px on 4 devices or 3072 px on 8 (native 1024 px), SD 1.5 (native 512 px), or
 * SD3 (native 1024 px; 16 latent channels, so four times SDXL's host work per element count, and flow-matching Euler).
 */
export function shippedDefaultsSettings(size: 2048 | 3072, model: 'sdxl' | 'sd15' | 'sd3' = 'sdxl'): SimSettings {
  const latent = size === 2048 ? 256 : 384;
  const native = model === 'sd15' ? 64 : 128;
  const name = { sdxl: 'SDXL', sd15: 'SD 1.5', sd3: 'SD3' }[model];
  return {
    geometry: { name: `${name} ${size}x${size}`, latent, native, ...(model === 'sd3' ? { sd3: true } : {}) },
    devices: size === 2048 ? 4 : 8,
    steps: 50,
    pixelInteraction: true,
    guidanceSync: false,
    split: 'balance',
    latency: { unitMs: 100, nativeArea: native * native, halfCost: 1.04, probeExtra: 0.15, callOverheadMs: 1 },
    stageSplit: 0.8,
    chargeHost: true,
  };
}

export interface SimResult {
  makespanMs: number;
  /** Fraction of the makespan each device spent idle. */
  idle: number[];
  unitsSplit: number;
  /** Wall time of the coordinator's host work (methods, scheduler, dispatcher), ms per step. */
  hostMsPerStep: number;
  units: number;
  /** The final latent (the latency model's outputs are deterministic, so it depends only on the settings). */
  latent: Float32Array;
}

/** One generation with the real method, scheduler and dispatcher on latency-model devices. */
export async function simulateGeneration(s: SimSettings): Promise<SimResult> {
  const clock = new VirtualClock(s.chargeHost ?? false);
  const devices = Array.from({ length: s.devices }, (_, i) => new LatencyModelDevice(`gpu${i}`, i === 0, clock, s.latency, s.speeds?.[i] ?? 1));
  const dispatcher = new Dispatcher(devices, { now: () => clock.time, split: s.split });
  const px = s.geometry.latent * 8;
  const params = resolveParams(
    { prompt: 'a photo', width: px, height: px, steps: s.steps, seed: 1, method: 'asg', methodOptions: { stageSplit: s.stageSplit ?? 0.5, pixelInteraction: s.pixelInteraction, guidanceSync: s.guidanceSync, ...s.methodOptions } },
    { width: s.geometry.native * 8, height: s.geometry.native * 8 },
  );
  const sd3 = s.geometry.sd3 === true;
  const full = createScheduler(
    sd3 ? SD3_SCHEDULER_CONFIG : { ...SD15_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler' },
    s.steps,
    s.scheduler,
  );
  const channels = sd3 ? 16 : 4;
  const start = s.upscaleStrength === undefined ? 0 : startStep(s.steps, s.upscaleStrength);
  const scheduler = schedulerFrom(full, start);
  const init = s.upscaleStrength === undefined ? undefined : {
    latent: new Float32Array(channels * s.geometry.latent * s.geometry.latent),
    structureTarget: new Float32Array(channels * s.geometry.native * s.geometry.native),
  };
  let units = 0;
  const result = await clock.run(() =>
    runMethod({
      params,
      scheduler,
      latentHeight: s.geometry.latent,
      latentWidth: s.geometry.latent,
      nativeHeight: s.geometry.native,
      nativeWidth: s.geometry.native,
      channels,
      latentMultiple: sd3 ? 2 : 8,
      ...(init ? { init } : {}),
      timeIds: !sd3,
      evaluate: (batch: UnetUnit[], hint?: EvaluateHint) => {
        units += batch.length;
        return dispatcher.evaluate(batch, 5, { priority: hint?.priority, stream: hint?.stream, onResult: hint?.onResult });
      },
      lockstep: s.lockstep,
      maskTokens: [1, 2, 3],
      previewEvery: 0,
    }),
  );
  const makespan = clock.time;
  return {
    makespanMs: makespan,
    idle: dispatcher.stats.map((d) => 1 - d.busy / makespan),
    unitsSplit: dispatcher.unitsSplit,
    hostMsPerStep: clock.hostMs / s.steps,
    units,
    latent: result.latent,
  };
}
