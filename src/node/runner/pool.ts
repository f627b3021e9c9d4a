/**
 * The device pool: the coordinator's view of its workers. Hands independent units to idle devices as they free
 * up; results land in unit order whatever the completion order, so the generation does not depend on how many
 * devices ran it. The key unit (which wants attention probabilities) runs on a device that holds the probe graph, if any does.
 */
import { AsgdError, cancelled } from '../../core/errors.ts';
import type { UnetUnit, UnitResult } from '../../core/methods/types.ts';
import type { DeviceWorker } from './device-worker.ts';

export interface PoolStats {
  /** Sum over devices of time spent inside model calls, ms (as measured by the coordinator). */
  busyMs: number[];
  units: number[];
}

export class DevicePool {
  readonly stats: PoolStats;
  /** Whether the last attention request found no probe graph (the model has no separable attention). */
  attentionUnsupported = false;

  constructor(
    readonly workers: DeviceWorker[],
    private readonly probeHolders: ReadonlySet<number>,
  ) {
    this.stats = { busyMs: workers.map(() => 0), units: workers.map(() => 0) };
  }

  async evaluate(units: UnetUnit[], guidanceScale: number, signal?: AbortSignal): Promise<UnitResult[]> {
    if (signal?.aborted) throw cancelled();
    const results: (UnitResult | undefined)[] = new Array(units.length);
    // Probe units first, each to a probe holder; then the rest to whoever is free.
    const queue = units.map((u, i) => i).sort((a, b) => Number(units[b]!.wantAttention) - Number(units[a]!.wantAttention));
    let failure: unknown;
    const runOn = async (w: number): Promise<void> => {
      while (queue.length > 0 && failure === undefined) {
        const pick = queue.findIndex((i) => !units[i]!.wantAttention || this.probeHolders.size === 0 || this.probeHolders.has(w));
        if (pick < 0) return;
        const i = queue.splice(pick, 1)[0]!;
        const u = units[i]!;
        const t0 = performance.now();
        try {
          const r = await this.workers[w]!.request<'unet'>(
            {
              type: 'unet', sample: u.sample, channels: u.sample.length / (u.height * u.width), height: u.height, width: u.width,
              timestep: u.timestep, guidanceScale, wantAttention: u.wantAttention, timeIds: u.timeIds ? [...u.timeIds] : undefined,
            },
            `unit ${u.id}`,
          );
          if (r.attentionUnsupported) this.attentionUnsupported = true;
          results[i] = { output: r.output, attention: r.attention };
        } catch (err) {
          if (failure === undefined) failure = err instanceof AsgdError && err.kind !== 'cancelled' && !err.message.includes(u.id)
            ? new AsgdError(`${err.message} (unit ${u.id} on ${this.workers[w]!.label})`, { kind: err.kind, parameter: err.parameter, cause: err })
            : err;
        }
        this.stats.busyMs[w]! += performance.now() - t0;
        this.stats.units[w]!++;
      }
    };
    await Promise.all(this.workers.map((_, w) => runOn(w)));
    if (signal?.aborted) throw cancelled();
    if (failure !== undefined) throw failure;
    if (queue.length > 0) throw new Error('pool: units left with no device able to run them');
    return results as UnitResult[];
  }
}
