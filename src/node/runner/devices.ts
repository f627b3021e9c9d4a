/** Parsing `--devices` (cpu, cpu,cpu, webgpu:0, cuda:0,cuda:1, mixtures) into device specs. */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { supportedBackends } from '../../onnx/session.ts';
import { AsgdError, invalidArgument } from '../../core/errors.ts';
import { PIPELINE_OPTIONS, optionSpec } from '../../core/options/registry.ts';
import { checkOption } from '../../core/options/spec.ts';
import type { ProviderName } from '../../onnx/io.ts';
import type { FlashCheck } from '../../graph/attention-check.ts';
import type { DenseTimes, WebGpuCheck } from './webgpu-check.ts';

export interface DeviceSpec {
  provider: ProviderName;
  deviceId?: number;
  /** CPU intra-op threads for this worker (0: ONNX Runtime's default). */
  threads: number;
  /** Display name, e.g. "cpu#1" or "cuda:0". */
  label: string;
}

const PROVIDERS: ProviderName[] = ['cpu', 'webgpu', 'cuda'];

/** Where a device worker runs: a thread of this process, or a process of its own (runner/device-worker.ts). */
export type WorkerIsolation = 'thread' | 'process';

/**
 * Where each device's worker runs (PipelineOptions.workerIsolation). 'auto': a process of its own for each WebGPU
 * worker when there are two or more, or when this process already runs a WebGPU worker thread (another pipeline's:
 * `liveWebgpuThreads`): onnxruntime-node 1.30 could not run two WebGPU sessions at once in two threads of one
 * process (two processes can), and in 1.31.1, which can, two threads share the process's WebGPU device and generated
 * slower than two processes on lavapipe (docs/benchmarks.md, "ONNX Runtime 1.31.1"); threads for everything else: a thread takes its sample from shared memory and hands
 * its output over without a copy, while a process pays a copy each way (files in /dev/shm: array-stow.ts).
 */
export function workerIsolations(mode: unknown, devices: readonly DeviceSpec[], liveWebgpuThreads = 0): WorkerIsolation[] {
  const m = checkOption<'auto' | WorkerIsolation>(optionSpec(PIPELINE_OPTIONS, 'workerIsolation'), mode);
  if (m !== 'auto') return devices.map(() => m);
  const webgpu = devices.filter((d) => d.provider === 'webgpu').length;
  return devices.map((d) => (d.provider === 'webgpu' && (webgpu > 1 || liveWebgpuThreads > 0) ? 'process' : 'thread'));
}

/**
 * One spec per entry. `threads` applies to every CPU worker; 0 means ONNX Runtime's default for a single CPU
 * worker, and the machine's cores divided among several (each session would otherwise take every core).
 */
export function parseDevices(list: string, threads = 0, cores = os.availableParallelism()): DeviceSpec[] {
  if (!Number.isInteger(threads) || threads < 0) throw invalidArgument('threads', 'an integer >= 0 (0: ONNX Runtime default)', threads);
  const entries = list.split(',').map((s) => s.trim());
  if (entries.length === 0 || entries.some((e) => e === '')) {
    throw invalidArgument('devices', 'a comma-separated list such as "cpu", "cpu,cpu", "webgpu:0" or "cuda:0,cuda:1"', list);
  }
  let cpuCount = 0;
  const cpuWorkers = entries.filter((e) => /^cpu$/i.test(e)).length;
  const cpuThreads = threads === 0 && cpuWorkers > 1 ? Math.max(1, Math.floor(cores / cpuWorkers)) : threads;
  return entries.map((entry) => {
    const m = /^([a-z]+)(?::(\d+))?$/i.exec(entry);
    const provider = m?.[1]?.toLowerCase() as ProviderName | undefined;
    if (provider === ('auto' as string)) {
      throw entries.length > 1
        ? invalidArgument('devices', '"auto" alone (it picks the devices itself), or a list of cpu, webgpu[:N] and cuda[:N]', list)
        : invalidArgument('devices', 'a list of cpu, webgpu[:N] and cuda[:N]', list, 'parseDevices takes the devices themselves: resolve "auto" with autoDevices() first (loadPipeline does)');
    }
    if (!m || !provider || !PROVIDERS.includes(provider)) {
      throw invalidArgument('devices', `entries of the form cpu, webgpu[:N] or cuda[:N] (providers: ${PROVIDERS.join(', ')})`, entry);
    }
    if (provider === 'cpu' && m[2] !== undefined) throw invalidArgument('devices', '"cpu" without an index (repeat it for more CPU workers)', entry);
    if (provider === 'webgpu' && m[2] !== undefined && m[2] !== '0') {
      throw invalidArgument('devices', '"webgpu" or "webgpu:0"', entry, "onnxruntime-node's WebGPU provider always uses the system's default GPU adapter; use cuda:N to pick a GPU");
    }
    const deviceId = m[2] !== undefined ? Number(m[2]) : provider === 'cpu' ? undefined : 0;
    const label = provider === 'cpu' ? `cpu#${cpuCount++}` : `${provider}:${deviceId}`;
    return { provider, deviceId, threads: provider === 'cpu' ? cpuThreads : threads, label };
  });
}

/**
 * A warning when the CPU workers' threads given (--threads) add up to more than this machine's cores, which makes a
 * run slower, not faster (on 2 cores, --threads 128 took 14 s where 8 took 2.5 s). Undefined otherwise (threads
 * given to a list without CPU workers change nothing and harm nothing: not warned of).
 */
export function threadsWarning(devices: DeviceSpec[], cores = os.availableParallelism()): string | undefined {
  const cpu = devices.filter((d) => d.provider === 'cpu');
  const total = cpu.reduce((n, d) => n + d.threads, 0);
  if (cpu.length === 0 || cpu.some((d) => d.threads === 0) || total <= cores) return undefined;
  const each = Math.max(1, Math.floor(cores / cpu.length));
  return `${total} CPU threads (${cpu.length} worker${cpu.length > 1 ? 's' : ''} x --threads ${cpu[0]!.threads}) on ${cores} cores: slower than fewer (try --threads ${each}, or leave it out)`;
}

/** Throws a clear error for providers this onnxruntime-node build does not have. */
export function checkProvidersAvailable(devices: DeviceSpec[]): void {
  const backends = supportedBackends();
  for (const d of devices) {
    const b = backends.find((x) => x.name === d.provider);
    if (!b || (d.provider === 'cuda' && !cudaInstalled())) {
      throw new AsgdError(`The ${d.provider} execution provider is not installed`, {
        kind: 'device',
        parameter: 'devices',
        received: d.label,
        hint:
          d.provider === 'cuda'
            ? 'Install it with `ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node` on a machine with CUDA 12 and cuDNN 9 (and internet), or use --devices cpu / webgpu'
            : `This onnxruntime-node build offers: ${backends.map((x) => x.name).join(', ')}`,
      });
    }
  }
}

let cudaCache: boolean | undefined;
/** The CUDA provider ships as a separate shared library that onnxruntime-node's install script downloads. */
export function cudaInstalled(): boolean {
  if (cudaCache !== undefined) return cudaCache;
  const b = supportedBackends().find((x) => x.name === 'cuda');
  cudaCache = !!b && (b.bundled || providerLibraryPresent('libonnxruntime_providers_cuda.so'));
  return cudaCache;
}

function providerLibraryPresent(name: string): boolean {
  try {
    const pkg = createRequire(import.meta.url).resolve('onnxruntime-node/package.json');
    return fs.existsSync(path.join(path.dirname(pkg), 'bin', 'napi-v6', process.platform, process.arch, name));
  } catch {
    return false;
  }
}

export interface DeviceAvailability {
  name: string;
  available: boolean;
  note: string;
}

export function describeAvailableDevices(): DeviceAvailability[] {
  const backends = supportedBackends();
  return [
    { name: 'cpu', available: true, note: `bundled; ${os.availableParallelism()} cores; repeat "cpu" for several CPU workers` },
    { name: 'webgpu', available: backends.some((b) => b.name === 'webgpu'), note: 'bundled; runs on the GPU through Vulkan/Metal/D3D12 when a driver is present' },
    { name: 'cuda', available: cudaInstalled(), note: cudaInstalled() ? `installed; ${gpusSentence(cudaGpus())}` : 'not installed: ONNXRUNTIME_NODE_INSTALL=cuda12 npm rebuild onnxruntime-node' },
  ];
}

/**
 * Like describeAvailableDevices, but the WebGPU entry is checked by running a one-node model on adapter 0: the
 * provider is bundled everywhere, a GPU adapter (and its driver) is not. The check runs in a process of its own, once
 * per process unless `refresh` (an adapter does not come and go while a program runs): a WebGPU session in this
 * process while a WebGPU worker thread generates ended the process in onnxruntime-node 1.30 (a segmentation fault,
 * three times out of three here: the server's device list asked for during a generation would have ended the
 * server), and ONNX Runtime keeps the WebGPU instance of its first try for the life of a process.
 */
export async function checkAvailableDevices(options: { refresh?: boolean } = {}): Promise<DeviceAvailability[]> {
  const list = describeAvailableDevices();
  const webgpu = list.find((d) => d.name === 'webgpu');
  if (webgpu?.available) {
    if (options.refresh || !webgpuCheck) webgpuCheck = webgpuCheckInAChild();
    const r = await webgpuCheck;
    webgpu.available = r.ok;
    webgpu.note = r.ok
      ? `adapter found: a test model ran in ${r.ms.toFixed(0)} ms; it ${r.dense ? denseSentence(r.dense) : `failed the dense test: ${r.denseError}`}`
      : `bundled, but no usable adapter: ${r.reason}`;
  }
  return list;
}

function denseSentence(d: DenseTimes): string {
  const ratio = d.webgpuMs < d.cpuMs ? `${(d.cpuMs / d.webgpuMs).toFixed(1)}x faster` : `${(d.webgpuMs / d.cpuMs).toFixed(1)}x slower`;
  return `ran a dense test (8 products of 512x512 matrices) in ${fmtMs(d.webgpuMs)}, ${ratio} than the CPU (${fmtMs(d.cpuMs)})`;
}

const fmtMs = (ms: number) => `${ms < 10 ? ms.toFixed(1) : ms.toFixed(0)} ms`;

/** What `devices: 'auto'` chose, and why (ModelInfo.notes and `asgd devices` say it). */
export interface AutoDevices {
  /** The device list picked: "cuda:0" (or one per GPU: "cuda:0,cuda:1"), "webgpu:0" or "cpu". */
  devices: string;
  /** Why, in a sentence (with the dense test's times where it ran). */
  reason: string;
}

/** The CUDA GPUs this process can use, and where that number was read ('auto' puts a worker on each). */
export interface CudaGpus {
  /** Undefined where it could not be read. */
  count: number | undefined;
  /** 'CUDA_VISIBLE_DEVICES', the driver's list (/proc/driver/nvidia/gpus or nvidia-smi), or why it is unknown. */
  from: string;
}

/**
 * How many GPUs the CUDA provider can use here. The NVIDIA driver's list gives the GPUs (/proc/driver/nvidia/gpus on
 * Linux, else `nvidia-smi -L`); where CUDA_VISIBLE_DEVICES is set, its entries count, as CUDA reads them: up to the
 * first that names no device (such as -1, an index beyond the GPUs, or a repeat). The provider numbers the visible
 * GPUs from 0, so cuda:0 .. cuda:count-1 are theirs.
 */
export function cudaGpus(env: NodeJS.ProcessEnv = process.env, driverDir = '/proc/driver/nvidia/gpus', driverList: () => string | undefined = nvidiaSmiList): CudaGpus {
  let physical: number | undefined;
  let from = 'unknown: no NVIDIA driver list could be read';
  try {
    physical = fs.readdirSync(driverDir).length;
    from = driverDir;
  } catch {
    const listed = driverList();
    if (listed !== undefined) {
      physical = listed.split('\n').filter((l) => /^GPU \d+:/.test(l)).length;
      from = 'nvidia-smi -L';
    }
  }
  const visible = env['CUDA_VISIBLE_DEVICES'];
  if (visible === undefined) return { count: physical, from };
  const seen = new Set<string>();
  for (const entry of visible.split(',').map((e) => e.trim())) {
    const index = /^\d+$/.test(entry) ? Number(entry) : undefined;
    const names = index !== undefined ? physical === undefined || index < physical : /^(GPU|MIG)-[\w/-]+$/.test(entry);
    if (!names || seen.has(entry)) break;
    seen.add(entry);
  }
  return { count: physical === undefined ? seen.size : Math.min(seen.size, physical), from: `CUDA_VISIBLE_DEVICES=${JSON.stringify(visible)}` };
}

const gpusSentence = (g: CudaGpus) => (g.count === undefined ? `GPUs unknown (${g.from})` : `can use ${g.count} GPU${g.count === 1 ? '' : 's'} (${g.from})`);

function nvidiaSmiList(): string | undefined {
  try {
    return execFileSync('nvidia-smi', ['-L'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
}

/**
 * `devices: 'auto'`: the CUDA provider where it is installed, a worker on each GPU it can use (each GPU has its own
 * memory, so more workers cost none); else the WebGPU adapter where it ran the dense test faster than the CPU (a CPU
 * emulation such as lavapipe is many times slower: then, and without an adapter, the CPU). One worker on WebGPU or
 * the CPU: several on one GPU or CPU are a choice of speed against memory left to the user. `cuda` is undefined where
 * the CUDA provider is not installed; `webgpu` is undefined when this onnxruntime-node build has no WebGPU provider.
 */
export function chooseAutoDevices(cuda: CudaGpus | undefined, webgpu: WebGpuCheck | undefined): AutoDevices {
  if (cuda && cuda.count !== 0) {
    if (cuda.count === undefined) {
      return { devices: 'cuda:0', reason: `the CUDA execution provider is installed; how many GPUs it can use is unknown (${cuda.from}), so one worker on cuda:0 (name more with --devices cuda:0,cuda:1)` };
    }
    const n = cuda.count;
    return {
      devices: Array.from({ length: n }, (_, i) => `cuda:${i}`).join(','),
      reason: `the CUDA execution provider is installed and ${gpusSentence(cuda)}: ${n > 1 ? 'a worker on each' : 'one worker'}`,
    };
  }
  const noCuda = cuda ? ` (the CUDA execution provider is installed but can use no GPU: ${cuda.from})` : '';
  const pick = (devices: string, reason: string): AutoDevices => ({ devices, reason: `${reason}${noCuda}` });
  if (!webgpu) return pick('cpu', 'this onnxruntime-node build has no WebGPU provider');
  if (!webgpu.ok) return pick('cpu', `WebGPU found no usable adapter (${webgpu.reason})`);
  if (!webgpu.dense) return pick('cpu', `the WebGPU adapter failed the dense test (${webgpu.denseError})`);
  const faster = webgpu.dense.webgpuMs < webgpu.dense.cpuMs;
  const what = faster ? '' : ': a CPU emulation such as lavapipe or SwiftShader, or a slow GPU';
  return pick(faster ? 'webgpu:0' : 'cpu', `the WebGPU adapter ${denseSentence(webgpu.dense)}${what}`);
}

/** Resolves `devices: 'auto'` on this machine (the WebGPU check runs once per process: checkAvailableDevices). */
export async function autoDevices(): Promise<AutoDevices> {
  const cuda = cudaInstalled() ? cudaGpus() : undefined;
  if (cuda && cuda.count !== 0) return chooseAutoDevices(cuda, undefined);
  if (!supportedBackends().some((b) => b.name === 'webgpu')) return chooseAutoDevices(cuda, undefined);
  webgpuCheck ??= webgpuCheckInAChild();
  return chooseAutoDevices(cuda, await webgpuCheck);
}

/** The line that says what 'auto' picked (ModelInfo.notes, and the servers' start). */
export const autoDevicesNote = (a: AutoDevices): string => `devices auto picked ${a.devices}: ${a.reason}`;
export const isAutoDevicesNote = (note: string): boolean => note.startsWith('devices auto picked ');

/** Whether a `devices` string asks for the automatic choice. */
export const isAutoDevices = (list: unknown): list is string => typeof list === 'string' && list.trim().toLowerCase() === 'auto';

let webgpuCheck: Promise<WebGpuCheck> | undefined;

function webgpuCheckInAChild(): Promise<WebGpuCheck> {
  return checkInAChild<WebGpuCheck>('webgpu-check', 'tryWebGpu', (reason) => ({ ok: false, reason }));
}

let flashCheck: Promise<FlashCheck> | undefined;

/**
 * Whether ONNX Runtime's WebGPU flash-attention kernel is right on this machine's adapter (flash-check.ts), checked
 * in a process of its own for the reasons above, once per process unless `refresh`.
 */
export function checkFlashAttention(options: { refresh?: boolean } = {}): Promise<FlashCheck> {
  if (options.refresh || !flashCheck) flashCheck = checkInAChild<FlashCheck>('flash-check', 'tryFlashAttention', (reason) => ({ ok: false, reason }));
  return flashCheck;
}

/** `fn` of the runner module `name` (webgpu-check, flash-check) in a child process: its JSON on stdout. */
function checkInAChild<T>(name: string, fn: string, failed: (reason: string) => T): Promise<T> {
  const fromSources = import.meta.url.endsWith('.ts');
  const check = new URL(`./${name}.${fromSources ? 'ts' : 'js'}`, import.meta.url).href;
  const code = `const m = await import(${JSON.stringify(check)}); process.stdout.write(JSON.stringify(await m[${JSON.stringify(fn)}]())); process.exit(0);`;
  // From the TypeScript sources (tests, a clone), the child needs the TypeScript loader the built package does not.
  const args = [...(fromSources ? ['--import', 'tsx'] : []), '--input-type=module', '-e', code];
  return new Promise((resolve) => {
    execFile(process.execPath, args, { encoding: 'utf8', timeout: 120_000, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      try {
        resolve(JSON.parse(stdout) as T);
      } catch {
        const how = err ? (err.killed ? 'was stopped after 120 s' : `ended with ${err.code ?? err.signal ?? err.message}`) : 'printed no result';
        resolve(failed(`the check process ${how}${stderr.trim() ? `: ${stderr.trim().slice(-300)}` : ''}`));
      }
    });
  });
}
