/**
 * `asgd tune` / `tuneDevice`: times the denoiser's call on the first device of a list as a device worker runs it (the
 * adapter the worker uses, the conditioning kept on a WebGPU device), at the native latent: the graph as exported and
 * fused (`fuseAttention`, in the form the pipeline writes for that list), a whole CFG unit and one half, and the
 * attention-probe graph serving a unit that is not probed against the graph it serves; on GPU lists, a float32 export
 * converted to float16 (`unetPrecision`) against the graph advised. core/tune-advice.ts turns the times into the
 * loading settings to use there. At most two graphs are open at a time (as a `probeSession: 'separate'` worker holds
 * them): the plain and the fused UNet, then the one advised and the probe graph, then the one advised and its float16
 * form; the calls of each pair alternate, so that each ratio compares calls of one round.
 */
import os from 'node:os';
import { AsgdError, invalidArgument } from '../core/errors.ts';
import type { TextConditioning } from '../core/conditioning.ts';
import { recommendSettings, type CallRatios, type FusedCallTimes, type TuneAdvice, type TuneMeasurement, type UnetCallTimes } from '../core/tune-advice.ts';
import { DEFAULT_NATIVE_SIZE, type ModelFamily } from '../core/model-family.ts';
import { DeviceConditioning } from '../onnx/device-conditioning.ts';
import { DeviceUploader } from '../onnx/device-upload.ts';
import { openSession, releaseSession, runtimeVersion, type OpenSession, type SessionOptions } from '../onnx/session.ts';
import { denoiserAdapter } from '../onnx/transformer.ts';
import type { UnetAdapter, UnetCall } from '../onnx/unet.ts';
import { prepareFloat16Unet, upcastsAttention } from './float16-unet.ts';
import { fusedLoadOptions } from './fused-attention.ts';
import { readModelFolder } from './model/folder.ts';
import { attentionForm, fuseAttentionFiles } from './attention-files.ts';
import { prepareAttentionProbe, probeLoadOptions } from './probe.ts';
import { layoutCandidates, timeLayouts } from './tune-layouts.ts';
import { autoDevices, checkFlashAttention, checkProvidersAvailable, isAutoDevices, parseDevices, type DeviceSpec } from './runner/devices.ts';

export interface TuneOptions {
  /** The device list the advice is for (default "cpu"; "auto" as loadPipeline takes it); the first one is measured. */
  devices?: string;
  /** Intra-op threads per CPU worker, as PipelineOptions.threads. */
  threads?: number;
  /** Timed calls of each kind (default 10), after `warmup` untimed ones (default 2). */
  iters?: number;
  warmup?: number;
  /** Latent side of the calls (default: the model's native one, as every patch and window has). */
  latent?: number;
  /**
   * The worker counts whose short generation is timed to advise `--devices cpu,cpu...` (CPU lists: default 1, 2, 4,
   * ... up to the cores, at most 8, and the list's own count; false skips it) or, given for a GPU list, its first
   * device repeated (`webgpu:0,webgpu:0`: several workers on one GPU).
   */
  workers?: number[] | false;
  /** A line per finished measurement. */
  onProgress?: (line: string) => void;
}

export interface TuneReport extends TuneMeasurement {
  model: string;
  family: ModelFamily;
  /** The device measured, e.g. "webgpu:0". */
  device: string;
  onnxruntime: string;
  latent: number;
  iters: number;
  warmup: number;
  /** The fused graph measured (its layers, form and why that form), or why nothing fused. */
  fusion: { layers: number; form?: 'padded' | 'flash'; formReason?: string } | { reason: string };
  /** Which graph the probe was measured against, or why there is none. */
  probeAgainst: 'plain' | 'fused' | { reason: string };
  /** Which graph the float16 conversion was measured against, or why it was not (CPU lists, a float16 export). */
  float16Against: 'plain' | 'fused' | { reason: string };
  advice: TuneAdvice;
}

const DEFAULT_ITERS = 10;
const DEFAULT_WARMUP = 2;

/** Deterministic values in [-1, 1]: the same inputs on every run, no RNG state. */
const wave = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.618 + k));

/** The q-quantile of `xs` (linear between the sorted values). */
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const at = (s.length - 1) * q;
  const lo = Math.floor(at);
  return s[lo]! + (s[Math.min(lo + 1, s.length - 1)]! - s[lo]!) * (at - lo);
}
const median = (xs: number[]) => quantile(xs, 0.5);

function checkTuneOptions(o: TuneOptions): Required<Pick<TuneOptions, 'iters' | 'warmup'>> {
  const whole = (key: 'iters' | 'warmup' | 'latent', min: number, hint: string) => {
    const v = o[key];
    if (v !== undefined && !(Number.isInteger(v) && v >= min)) throw invalidArgument(key, `an integer >= ${min}`, v, hint);
  };
  whole('iters', 1, 'Use at least 1 timed call, e.g. 10');
  whole('warmup', 0, 'Use 0 or more untimed calls, e.g. 2');
  whole('latent', 8, 'Use a latent side in latent pixels (an eighth of the image side), e.g. 64');
  const w = o.workers;
  if (w !== undefined && w !== false && !(Array.isArray(w) && w.length > 0 && w.every((n) => Number.isInteger(n) && n >= 1 && n <= 64))) {
    throw invalidArgument('workers', 'false or a list of worker counts from 1 to 64', w, 'Use e.g. [1, 2, 4]');
  }
  return { iters: o.iters ?? DEFAULT_ITERS, warmup: o.warmup ?? DEFAULT_WARMUP };
}

/**
 * Calls `fns` in turn, `warmup` rounds untimed then `iters` timed: each one's times in ms, round by round. Every
 * other round runs them in reverse order, so that no call always follows the same one.
 */
async function alternate(fns: (() => Promise<unknown>)[], warmup: number, iters: number): Promise<number[][]> {
  const times = fns.map((): number[] => []);
  for (let i = 0; i < warmup + iters; i++) {
    const order = [...fns.entries()];
    if (i % 2) order.reverse();
    for (const [k, fn] of order) {
      const t0 = performance.now();
      await fn();
      if (i >= warmup) times[k]!.push(performance.now() - t0);
    }
  }
  return times;
}

export async function tuneDevice(dir: string, options: TuneOptions = {}): Promise<TuneReport> {
  if (typeof dir !== 'string' || dir === '') throw invalidArgument('dir', 'the path of a model folder, as a string', dir);
  const { iters, warmup } = checkTuneOptions(options);
  const log = options.onProgress ?? (() => undefined);
  const spec = readModelFolder(dir);
  const list = isAutoDevices(options.devices) ? (await autoDevices()).devices : (options.devices ?? 'cpu');
  const devices = parseDevices(list, options.threads ?? 0);
  const device = devices[0]!;
  if (devices.some((d) => d.provider !== device.provider)) {
    throw invalidArgument('devices', 'devices of one kind (the first is measured, the advice is for all)', list, 'Tune each kind on its own, e.g. --devices webgpu:0 then --devices cpu');
  }
  checkProvidersAvailable(devices);
  const session: SessionOptions = { provider: device.provider, ...(device.deviceId !== undefined ? { deviceId: device.deviceId } : {}), threads: device.threads };
  const uploader = device.provider === 'webgpu' ? new DeviceUploader(session) : undefined;
  // Sessions still open, released in the end whatever fails.
  const opened: OpenSession[] = [];
  const open = async (file: string, label: string, load: object): Promise<{ s: OpenSession; adapter: UnetAdapter }> => {
    const s = await openSession(file, label, session, load);
    opened.push(s);
    return { s, adapter: denoiserAdapter(s, uploader ? { device: new DeviceConditioning(uploader) } : {}) };
  };
  const close = async (s: OpenSession) => {
    opened.splice(opened.indexOf(s), 1);
    await releaseSession(s);
  };
  try {
    // The plain graph and the fused one, as loadPipeline writes it for this device list, both open: their whole units
    // and halves alternate call by call, so that a machine's drift does not decide between them.
    const plainGraph = await open(spec.paths.unet, 'unet', {});
    const setup = callSetup(plainGraph.adapter, plainGraph.s, spec.family, options.latent ?? nativeLatent(spec.unetSampleSize, plainGraph.adapter, spec.family), spec.paths.textEncoder3 !== undefined);
    const { call, cond, latent } = setup;
    const probe = await prepareAttentionProbe(spec.paths.unet);
    const form = await attentionForm(devices, checkFlashAttention);
    const fusedFiles = await fuseAttentionFiles(spec.paths.unet, probe, { ...form, webgpuOnly: devices.every((d) => d.provider === 'webgpu') });
    const fusedGraph = fusedFiles.unet ? await open(fusedFiles.unet, 'unet (fused attention)', fusedLoadOptions(fusedFiles.unet)) : undefined;
    const { plain, fused } = await timeUnits(plainGraph.adapter, fusedGraph?.adapter, setup, warmup, iters);
    log(`UNet as exported: ${unitsLine(plain)}`);
    log(fused ? `UNet fused (${fusedFiles.info.layers} attentions, ${fusedFiles.info.form ?? 'padded'} form): ${unitsLine(fused)}` : `UNet fused: nothing fuses (${fusedFiles.info.reason})`);
    const fuse = recommendSettings({ provider: device.provider, devices: devices.length, plain, ...(fused ? { fused } : {}) }).fuseAttention;
    // Only the graph the advice keeps stays open for the probe's comparison.
    const g = fuse ? fusedGraph! : plainGraph;
    const dropped = fuse ? plainGraph : fusedGraph;
    if (dropped) await close(dropped.s);

    // The probe graph serving a unit that is not probed, against the graph it would serve.
    let probeTimes: TuneMeasurement['probe'];
    let probeAgainst: TuneReport['probeAgainst'];
    const probeFile = fuse ? fusedFiles.probe : 'file' in probe ? probe.file : undefined;
    if (probeFile === undefined) {
      probeAgainst = { reason: 'reason' in probe ? probe.reason : 'the fused probe graph could not be written' };
    } else if (fuse && !fusedFiles.probeServesUnet) {
      probeAgainst = { reason: 'the fused probe graph keeps ONNX Attention nodes that the fused UNet has fused, so the two are apart either way' };
    } else {
      const p = await open(probeFile, 'unet (attention probe)', fuse ? fusedLoadOptions(probeFile) : probeLoadOptions(probeFile));
      const unprobed: UnetCall = { ...call, maps: false, maskTokens: [1, 2, 3] };
      const [graphMs, probeMs] = await alternate([() => g.adapter.run(call, cond), () => p.adapter.run(unprobed, cond)], warmup, iters);
      probeTimes = { graphMs: median(graphMs!), probeMs: median(probeMs!), ...ratioQuartiles(probeMs!, graphMs!) };
      probeAgainst = fuse ? 'fused' : 'plain';
      log(`a unit that is not probed, on the probe graph: ${probeTimes.probeMs.toFixed(1)} ms against ${probeTimes.graphMs.toFixed(1)} ms on the ${probeAgainst} UNet`);
      await close(p.s);
    }

    // A float32 export converted to float16 (fused too where fusion is advised), against the graph advised so far.
    let float16Times: TuneMeasurement['float16'];
    let float16Against: TuneReport['float16Against'];
    if (device.provider === 'cpu') {
      float16Against = { reason: "not measured on CPU lists: ONNX Runtime's CPU provider runs most float16 operators in float32" };
    } else {
      const h = await prepareFloat16Unet(spec.paths.unet, { attentionScoresFloat32: await upcastsAttention(spec.paths.unet) });
      const f = 'reason' in h || !fuse ? undefined : await fuseAttentionFiles(h.file, { reason: 'not needed' }, { ...form, webgpuOnly: devices.every((d) => d.provider === 'webgpu') });
      const file = 'reason' in h ? undefined : fuse ? f?.unet : h.file;
      if (file === undefined) {
        float16Against = { reason: 'reason' in h ? h.reason : `the converted graph does not fuse (${f?.info.reason ?? 'not fused'})` };
      } else {
        const q = await open(file, 'unet (float16)', fuse ? fusedLoadOptions(file) : {});
        const [graphMs, float16Ms] = await alternate([() => g.adapter.run(call, cond), () => q.adapter.run(call, cond)], warmup, iters);
        float16Times = { graphMs: median(graphMs!), float16Ms: median(float16Ms!), ...ratioQuartiles(float16Ms!, graphMs!) };
        float16Against = fuse ? 'fused' : 'plain';
        log(`UNet converted to float16: ${float16Times.float16Ms.toFixed(1)} ms against ${float16Times.graphMs.toFixed(1)} ms on the ${float16Against} float32 UNet`);
      }
    }
    for (const s of [...opened].reverse()) await close(s);

    // How many workers, by a short generation on each count (the pipelines load the model themselves): on CPU lists
    // unless turned off, on a GPU where counts are given (its memory cannot be checked first).
    const counts = device.provider === 'cpu'
      ? options.workers === false ? undefined : options.workers ?? layoutCandidates(os.availableParallelism(), devices.length)
      : options.workers || undefined;
    const layouts = counts
      ? await timeLayouts(dir, spec.paths.unet, { workers: counts, device: deviceName(device), threads: options.threads ?? 0, fuseAttention: fuse, log })
      : undefined;
    const measured: TuneMeasurement = {
      provider: device.provider, devices: devices.length, plain, ...(fused ? { fused } : {}), ...(probeTimes ? { probe: probeTimes } : {}), ...(layouts ? { layouts } : {}),
      ...(float16Times ? { float16: float16Times } : {}),
    };
    const fusion: TuneReport['fusion'] = fusedFiles.unet
      ? { layers: fusedFiles.info.layers, ...(fusedFiles.info.form ? { form: fusedFiles.info.form } : {}), ...(fusedFiles.info.formReason ? { formReason: fusedFiles.info.formReason } : {}) }
      : { reason: fusedFiles.info.reason ?? 'not fused' };
    return {
      model: spec.dir, family: spec.family, device: deviceName(device), onnxruntime: runtimeVersion(), latent, iters, warmup,
      ...measured, fusion, probeAgainst, float16Against, advice: recommendSettings(measured),
    };
  } finally {
    for (const s of [...opened].reverse()) await releaseSession(s);
    await uploader?.release();
  }
}

const unitsLine = (t: UnetCallTimes) => `a whole unit ${t.wholeMs.toFixed(1)} ms, ${t.halfMs === undefined ? 'no CFG half (batch fixed at 2)' : `a CFG half ${t.halfMs.toFixed(1)} ms`}`;

const deviceName = (d: DeviceSpec) => (d.provider === 'cpu' ? 'cpu' : `${d.provider}:${d.deviceId ?? 0}`);

/** The native latent side: config.json's sample_size, else the export's static sample size, else the family's. */
function nativeLatent(sampleSize: number | undefined, adapter: UnetAdapter, family: ModelFamily): number {
  const h = adapter.sample.shape[2];
  return sampleSize ?? (typeof h === 'number' && h > 0 ? h : DEFAULT_NATIVE_SIZE[family] / 8);
}

/** One unit's call at a square latent with deterministic inputs, and its text conditioning, from the export's shapes. */
function callSetup(adapter: UnetAdapter, s: OpenSession, family: ModelFamily, latent: number, t5: boolean): { call: UnetCall; cond: TextConditioning; latent: number } {
  const channels = adapter.sample.shape[1];
  const dim = adapter.hidden.shape[2];
  const pooled = adapter.textEmbeds?.shape[1];
  const shapeTokens = adapter.hidden.shape[1];
  const tokens = typeof shapeTokens === 'number' && shapeTokens > 0 ? shapeTokens : family === 'sd3' ? 77 + (t5 ? 256 : 77) : 77;
  if (typeof channels !== 'number' || typeof dim !== 'number' || (adapter.textEmbeds && typeof pooled !== 'number')) {
    throw new AsgdError(`The denoiser export (${s.file ?? 'unet'}) leaves its channel or text widths open, so tune cannot make its inputs`, {
      kind: 'model', parameter: 'unet', expected: 'static channel, text and pooled widths (as optimum exports them)', received: JSON.stringify(s.inputs.map((i) => [i.name, i.shape])),
    });
  }
  const n = channels * latent * latent;
  const cond: TextConditioning = {
    hidden: wave(2 * tokens * dim, 2), tokens, dim,
    ...(adapter.textEmbeds ? { textEmbeds: wave(2 * (pooled as number), 3), pooledDim: pooled as number } : {}),
  };
  const px = 8 * latent;
  const call: UnetCall = {
    sample: wave(n, 1), channels, height: latent, width: latent, timestep: 500, guidanceScale: 7.5,
    ...(adapter.timeIds ? { timeIds: [px, px, 0, 0, px, px] } : {}),
  };
  return { call, cond, latent };
}

/** The call-by-call ratios `a[i] / b[i]` (calls of one round): their median and quartiles, the timing's noise. */
function ratioQuartiles(a: number[], b: number[]): Required<CallRatios> {
  const ratios = a.map((t, i) => t / b[i]!);
  return { ratio: median(ratios), ratioLow: quantile(ratios, 0.25), ratioHigh: quantile(ratios, 0.75) };
}

/**
 * A whole CFG unit and its conditional half on the plain graph and, where there is one, the fused graph: all calls
 * alternating, so each fused unit is compared with the plain unit of its round.
 */
async function timeUnits(
  plain: UnetAdapter, fused: UnetAdapter | undefined, setup: { call: UnetCall; cond: TextConditioning }, warmup: number, iters: number,
): Promise<{ plain: UnetCallTimes; fused?: FusedCallTimes }> {
  const { call, cond } = setup;
  const halves = plain.staticBatch !== 2;
  const calls = (a: UnetAdapter) => [() => a.run(call, cond), ...(halves ? [() => a.run({ ...call, part: 'cond' }, cond)] : [])];
  const times = await alternate([...calls(plain), ...(fused ? calls(fused) : [])], warmup, iters);
  const timesOf = (t: number[][]): UnetCallTimes => ({ wholeMs: median(t[0]!), ...(halves ? { halfMs: median(t[1]!) } : {}) });
  const per = halves ? 2 : 1;
  const plainTimes = timesOf(times.slice(0, per));
  if (!fused) return { plain: plainTimes };
  return { plain: plainTimes, fused: { ...timesOf(times.slice(per)), ...ratioQuartiles(times[per]!, times[0]!) } };
}
