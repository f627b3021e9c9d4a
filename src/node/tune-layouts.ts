/**
 * `asgd tune`: how many device workers to run. On the CPU one worker gets every core as ONNX Runtime's intra-op
 * threads; several split the cores and run units side by side. On a GPU several workers share it, and may keep it
 * busier while one of them is on the host. Which is faster depends on the model's layer sizes and the machine, and a
 * generation gives the same image on any number of workers of one provider, so this is measured, not guessed: a short
 * asg generation at twice the native size per worker count, timing the denoising only.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { workersText, type WorkerLayoutTimes } from '../core/tune-advice.ts';
import { loadPipeline } from './pipeline.ts';
import { parseDevices } from './runner/devices.ts';

/**
 * Memory a CPU worker's UNet session takes, over its weights on disk: ONNX Runtime's CPU kernels keep prepacked copies
 * of convolution and matrix weights (a 62.5 MiB graph of such weights raised the resident memory by 132-154 MiB once
 * opened, some 40-47 MiB of it the runtime's own: docs/benchmarks.md).
 */
export const SESSION_OVER_WEIGHTS = 1.5;

/** The generation each layout runs (after a one-step warm-up generation): asg at twice the native size per side. */
export const LAYOUT_STEPS = 4;

/** Weights on disk a CPU worker loads for the UNet: the graph and the external data files beside it. */
export function unetBytes(unetFile: string): number {
  const dir = path.dirname(unetFile);
  let total = fs.statSync(unetFile).size;
  for (const name of fs.readdirSync(dir)) {
    // External data as exporters name it; the graphs this project derives (.asgd-*) reference the same weights.
    if (/(\.onnx_data|\.onnx\.data|^weights\.pb)$/.test(name) && !name.includes('.asgd-')) total += fs.statSync(path.join(dir, name)).size;
  }
  return total;
}

/** Worker counts worth trying on `cores` cores: 1, 2, 4, ... up to the cores (at most 8), and `current`. */
export function layoutCandidates(cores: number, current: number): number[] {
  const out = new Set<number>([current]);
  for (let w = 1; w <= Math.min(cores, 8); w *= 2) out.add(w);
  return [...out].sort((a, b) => a - b);
}

export interface LayoutOptions {
  workers: number[];
  /** The device each worker runs on: "cpu", "webgpu:0", "cuda:1". */
  device: string;
  /** --threads as given (0: the cores divided among the workers). */
  threads: number;
  fuseAttention: boolean;
  /** CPU: memory the layouts may use, bytes (default: 80 % of what the system reports free). */
  memoryBytes?: number;
  log: (line: string) => void;
}

/**
 * Times each worker count's generation. On the CPU a count whose UNet sessions would not fit in memory is skipped; a
 * GPU's memory cannot be read here, so a count that fails there (out of memory) is recorded as failed.
 */
export async function timeLayouts(dir: string, unetFile: string, o: LayoutOptions): Promise<WorkerLayoutTimes[]> {
  const cpu = o.device === 'cpu';
  const perWorker = SESSION_OVER_WEIGHTS * unetBytes(unetFile);
  const budget = o.memoryBytes ?? 0.8 * os.freemem();
  const out: WorkerLayoutTimes[] = [];
  let reference: Uint8Array | undefined;
  for (const workers of o.workers) {
    const devices = Array(workers).fill(o.device).join(',');
    const layout = { workers, devices, ...(cpu ? { threads: parseDevices(devices, o.threads)[0]!.threads } : {}) };
    const say = (what: string) => o.log(`${workersText(layout)}: ${what}`);
    const need = workers * perWorker;
    if (cpu && need > budget) {
      const gb = (b: number) => (b / 2 ** 30).toFixed(1);
      out.push({ ...layout, skipped: `${workers} UNet sessions need about ${gb(need)} GiB, ${gb(budget)} GiB is free to use` });
      say(`skipped (${out.at(-1)!.skipped})`);
      continue;
    }
    try {
      const pipe = await loadPipeline(dir, { devices, ...(o.threads > 0 ? { threads: o.threads } : {}), fuseAttention: o.fuseAttention });
      try {
        const size = { width: 2 * pipe.nativeSize.width, height: 2 * pipe.nativeSize.height };
        const params = { prompt: 'a red circle on a blue background', seed: 1, method: 'asg' as const, ...size };
        await pipe.generate({ ...params, steps: 1 });
        const r = await pipe.generate({ ...params, steps: LAYOUT_STEPS });
        const same = reference === undefined ? undefined : Buffer.from(r.image.data).equals(Buffer.from(reference));
        reference ??= r.image.data;
        out.push({ ...layout, denoiseMs: r.timings.denoiseMs, ...(same !== undefined ? { sameImage: same } : {}) });
        say(`denoising ${r.timings.denoiseMs.toFixed(0)} ms (${LAYOUT_STEPS}-step asg at ${size.width}x${size.height})`);
      } finally {
        await pipe.close();
      }
    } catch (err) {
      out.push({ ...layout, skipped: `failed: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}` });
      say(out.at(-1)!.skipped!);
    }
  }
  return out;
}
