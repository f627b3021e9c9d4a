/**
 * Starting a pipeline's device workers: a worker per device, the model loaded into each (the UNet everywhere; the
 * text encoders, VAE decoder and probe on the first), then the pool that dispatches units over them.
 */
import type { AsgdError } from '../../core/errors.ts';
import { resolveSplitMode, type SplitMode } from '../../core/dispatch/tasks.ts';
import { createRandom } from '../../core/random/index.ts';
import type { IoInfo } from '../../onnx/io.ts';
import type { ModelSpec } from '../model/folder.ts';
import type { PipelineOptions } from '../pipeline.ts';
import { DeviceWorker, liveWebgpuThreads } from './device-worker.ts';
import { workerIsolations, type DeviceSpec } from './devices.ts';
import { DevicePool } from './pool.ts';
import type { ComponentName, FailMode, WorkerResult } from './protocol.ts';

/** The pipeline options that decide how the workers start. */
export type StartOptions = Pick<PipelineOptions, 'splitCfg' | 'retryOnOtherDevice' | 'workerIsolation'>;

/** Fault and timing injection for the runner's tests (PipelineTestHooks). */
export interface DeviceTestHooks {
  /** Make device `device` fail after `after` UNet calls, by throwing (default) or by ending its thread. */
  injectFailure?: { device: number; after: number; mode?: FailMode };
  /** Hold each UNet result back by a random delay (seeded) of up to maxMs, shuffling completion order. */
  completionJitter?: { seed: number; maxMs: number };
}

/** The model files the device workers load. */
export interface DeviceFiles {
  spec: ModelSpec;
  /** The UNet each worker runs (the fused-attention one when asked for) and the attention-probe graph, if any. */
  unet: string;
  probe?: string;
  /** Every component by file, for loading one on another worker later. */
  pool: Partial<Record<ComponentName, string>>;
  /**
   * The probe graph is the UNet (fused or not) plus its small map outputs, so its noise prediction is the UNet's bit
   * for bit (test/attention-probe.test.ts and test/attention-fusion.test.ts on the CPU; test/webgpu.test.ts on
   * WebGPU). Every worker then runs every unit on the probe graph: the worker holding the probe opens one UNet
   * session instead of two (the whole UNet's weights less: on a GPU, its memory), and every worker runs the same
   * graph, so the bits do not depend on which worker ran a unit. A unit that is not probed fetches the noise
   * prediction alone (UnetCall.maps): its maps are computed (ONNX Runtime runs every node whatever is fetched) but
   * never read. False where `probeSession` is 'separate'.
   */
  probeServesUnet: boolean;
}

export interface StartedDevices {
  workers: DeviceWorker[];
  pool: DevicePool;
  desc: Extract<WorkerResult, { type: 'describe' }>;
}

/**
 * Starts a worker per device and loads the model into them (the UNet everywhere; the text encoders, VAE decoder
 * and probe on the first), then the pool over them. `split`: the CFG split mode decided before (a restart), else
 * decided now. An abort of `signal` ends the workers and rejects with `cancelled()`; any failure ends them too.
 */
export async function startDevices(
  files: DeviceFiles, devices: DeviceSpec[], options: StartOptions, hooks: DeviceTestHooks,
  signal: AbortSignal | undefined, cancelled: () => AsgdError, split?: SplitMode,
): Promise<StartedDevices> {
  const { spec } = files;
  const workers: DeviceWorker[] = [];
  // Terminating rejects the request a worker is answering at once (its session creation cannot be interrupted).
  const onAbort = () => workers.forEach((w) => void w.terminate());
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (const [i, d] of devices.entries()) {
      if (signal?.aborted) throw cancelled();
      // Decided as the worker starts, with the WebGPU worker threads running now (other pipelines load meanwhile).
      const w = new DeviceWorker(d, workerIsolations(options.workerIsolation ?? 'auto', devices, liveWebgpuThreads())[i]);
      workers.push(w);
      const paths: Partial<Record<ComponentName, string>> = { unet: files.probeServesUnet ? files.probe! : files.unet };
      if (i === 0) {
        paths.textEncoder = spec.paths.textEncoder;
        if (spec.paths.textEncoder2) paths.textEncoder2 = spec.paths.textEncoder2;
        if (spec.paths.textEncoder3) paths.textEncoder3 = spec.paths.textEncoder3;
        paths.vaeDecoder = spec.paths.vaeDecoder;
        if (files.probe) paths.unetProbe = files.probe;
      }
      await w.request<'ok'>(
        {
          type: 'init', paths, session: { provider: d.provider, deviceId: d.deviceId, threads: d.threads },
          failAfterUnetCalls: hooks.injectFailure?.device === i ? hooks.injectFailure.after : undefined,
          failMode: hooks.injectFailure?.device === i ? hooks.injectFailure.mode : undefined,
        },
        'loading the model',
      );
    }
    const desc = await workers[0]!.request<'describe'>({ type: 'describe' }, 'describing the model');
    const holdings = workers.map((_, i): ComponentName[] =>
      i > 0 ? ['unet'] : ['unet', 'textEncoder', 'vaeDecoder', ...(spec.paths.textEncoder2 ? ['textEncoder2' as const] : []), ...(spec.paths.textEncoder3 ? ['textEncoder3' as const] : []), ...(files.probe ? ['unetProbe' as const] : [])],
    );
    const pool = new DevicePool(workers, holdings, {
      split: split ?? await splitModeFor(options.splitCfg ?? 'auto', devices, desc.components.unet?.inputs, () =>
        workers[0]!.request<'checkCfgSplit'>({ type: 'checkCfgSplit', height: 16, width: 16 }, 'checking CFG splitting').then((r) => r.identical),
      ),
      retry: options.retryOnOtherDevice ?? false,
      paths: files.pool,
      completionJitter: hooks.completionJitter
        ? { random: createRandom(BigInt(hooks.completionJitter.seed), 'jitter'), maxMs: hooks.completionJitter.maxMs }
        : undefined,
    });
    if (signal?.aborted) throw cancelled();
    return { workers, pool, desc };
  } catch (err) {
    const ended = Promise.all(workers.map((w) => w.terminate()));
    if (signal?.aborted) {
      // Not waited for: a thread still creating a session ends when it is done (the caller need not wait).
      void ended.catch(() => undefined);
      throw cancelled();
    }
    await ended;
    throw err;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

/** resolveSplitMode for a device list: ONNX Runtime's CPU kernels where every device is a cpu one. */
function splitModeFor(
  mode: 'auto' | SplitMode, devices: DeviceSpec[], unetInputs: IoInfo[] | undefined, splitIsExact: () => Promise<boolean>,
): Promise<SplitMode> {
  return resolveSplitMode(mode, { devices: devices.length, cpuKernels: devices.every((d) => d.provider === 'cpu'), unetInputs }, splitIsExact);
}
