/**
 * The text-to-image pipeline in the browser: the portable core's stages (check, prompt, denoise, decode; see
 * src/core/generation/) with device Web Workers running ONNX Runtime Web. As in Node, the page is the coordinator
 * (latent, scheduler, random generators) and UNet units go through the core's dispatcher, so the image does not
 * depend on how many workers ran it.
 */
import type { TextConditioning } from '../core/conditioning.ts';
import { Dispatcher, type DeviceStats } from '../core/dispatch/dispatcher.ts';
import { AsgdError, throwIfAborted } from '../core/errors.ts';
import { webgpuAttentionNote } from '../core/webgpu-attention-note.ts';
import { checkGeneration, type GenerationPlan, type ModelFacts } from '../core/generation/check.ts';
import { denoise, planDenoiseInput } from '../core/generation/denoise.ts';
import { finalStage, type GenerationCallbacks, type GenerationTimings } from '../core/generation/progress.ts';
import { encodePrompt } from '../core/generation/prompt.ts';
import { chwToRgb8, type RgbImage } from '../core/image.ts';
import { buildMetadata, type GenerationMetadata } from '../core/metadata.ts';
import type { EvaluateHint, UnetUnit, UnitResult } from '../core/methods/types.ts';
import type { GenerateParams, VaeDecodeOptions } from '../core/params.ts';
import { createScheduler } from '../core/schedulers/index.ts';
import { PIPELINE_OPTIONS, optionSpec } from '../core/options/registry.ts';
import { checkOption } from '../core/options/spec.ts';
import { ClipTokenizer } from '../core/text/clip-tokenizer.ts';
import { decodeLatentWith } from '../core/vae/pipeline-decode.ts';
import type { IoInfo } from '../onnx/io.ts';
import type { ComponentIo, DeviceInit, WebComponent, WebProvider } from './device/protocol.ts';
import { WebDevice } from './device/web-device.ts';
import { folderUrl, modelFileSource } from './model/model-files.ts';
import { readWebModel, type WebModelSpec } from './model/web-model.ts';
import type { LoadProgress, WebPipelineOptions } from './options.ts';
import { encodePng } from './png.ts';
import { webDecoderRunner } from './vae-runner.ts';
import { TOOL_VERSION } from './version.ts';

export interface WebGenerateRunOptions extends GenerationCallbacks {
  /** Stops the generation at the next unit boundary; the pipeline stays usable. */
  signal?: AbortSignal;
}

/** Where a browser generation's time went (no encodeMs: no upscaling in the browser). */
export type WebGenerationTimings = Omit<GenerationTimings, 'encodeMs'>;

export interface WebGenerateResult {
  image: RgbImage;
  /** The image as PNG with the metadata embedded (the `parameters` and `asgdiffusion` iTXt chunks). */
  /** ArrayBuffer-backed, so `new Blob([r.png])` type-checks. */
  png: Uint8Array<ArrayBuffer>;
  metadata: GenerationMetadata;
  /** Final latent [1, C, h, w] (before VAE scaling). */
  latent: Float32Array;
  unetEvaluations: number;
  timings: WebGenerationTimings;
  warnings: string[];
}

export interface WebModelInfo {
  url: string;
  name: string;
  family: 'sd' | 'sdxl';
  nativeWidth: number;
  nativeHeight: number;
  latentChannels: number;
  provider: WebProvider;
  workers: number;
  attentionProbe: { available: boolean; layers: string[]; reason?: string };
  /** Whether the UNet runs with its attention fused (WebPipelineOptions.fuseAttention), how many layers, or why not. */
  attentionFusion: { applied: boolean; layers: number; reason?: string };
  components: Partial<Record<WebComponent, ComponentIo>>;
  staticLatentSize?: { height: number; width: number };
  notes: string[];
}

function defaultWorker(index: number): Worker {
  return new Worker(new URL('./device/worker.js', import.meta.url), { type: 'module', name: `asgdiffusion-device-${index}` });
}

async function pickProvider(asked: WebPipelineOptions['provider']): Promise<WebProvider> {
  if (asked !== undefined && asked !== 'auto' && asked !== 'wasm' && asked !== 'webgpu') {
    throw new AsgdError('Invalid provider', { kind: 'invalid-argument', parameter: 'provider', expected: '"auto", "webgpu" or "wasm"', received: JSON.stringify(asked) });
  }
  const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<unknown> } } | undefined)?.gpu;
  if (asked === 'wasm') return 'wasm';
  const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
  if (asked === 'webgpu' && !adapter) {
    throw new AsgdError('WebGPU is not available in this browser', { kind: 'device', parameter: 'provider', expected: 'a browser with a WebGPU adapter', received: gpu ? 'no adapter' : 'no navigator.gpu', hint: 'Use provider "wasm" or "auto"' });
  }
  return adapter ? 'webgpu' : 'wasm';
}

function positiveInt(name: string, v: number | undefined, def: number, min: number): number {
  if (v === undefined) return def;
  if (!Number.isInteger(v) || v < min) throw new AsgdError(`Invalid ${name}`, { kind: 'invalid-argument', parameter: name, expected: `an integer >= ${min}`, received: String(v) });
  return v;
}

export class WebPipeline {
  private closed = false;
  /** Generations run one after another (the devices hold one generation's conditioning). */
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly spec: WebModelSpec,
    readonly info: WebModelInfo,
    private readonly devices: WebDevice[],
    private readonly dispatcher: Dispatcher,
    private readonly tokenizer: ClipTokenizer,
    private readonly tokenizer2: ClipTokenizer | undefined,
    /** What every generation warns of because of how the model meets the provider (info.notes has them too). */
    private readonly deviceWarnings: string[],
  ) {}

  /** @internal Use loadWebPipeline. */
  static async load(url: string | URL, options: WebPipelineOptions = {}): Promise<WebPipeline> {
    const workers = positiveInt('workers', options.workers, 1, 1);
    const threads = positiveInt('threads', options.threads, 0, 0);
    const base = folderUrl(url);
    const report = options.onProgress;
    const src = await modelFileSource(base, {
      store: options.store ?? true, signal: options.signal, fetch: options.fetch,
      onProgress: report ? (p) => report({ phase: 'download', ...p }) : undefined,
    });
    const spec = await readWebModel(base, src);
    const tokenizer = new ClipTokenizer(spec.tokenizer, 'tokenizer');
    const tokenizer2 = spec.tokenizer2 ? new ClipTokenizer(spec.tokenizer2, 'tokenizer_2') : undefined;
    const provider = await pickProvider(options.provider);
    const bytes: Partial<Record<WebComponent, Uint8Array>> = {};
    for (const [c, file] of Object.entries(spec.files) as [WebComponent, string][]) {
      throwIfAborted(options.signal);
      bytes[c] = (await src.get(file))!;
    }
    const create = options.createWorker ?? defaultWorker;
    const devices: WebDevice[] = [];
    try {
      const init: DeviceInit = { provider, threads, ...(options.wasmPaths ? { wasmPaths: options.wasmPaths } : {}) };
      for (let i = 0; i < workers; i++) devices.push(new WebDevice(create(i), `${provider}#${i}`));
      await Promise.all(devices.map((d) => d.request<'ok'>({ type: 'init', init }, 'starting the device')));
      const components: Partial<Record<WebComponent, ComponentIo>> = {};
      const fuse = checkOption<boolean>(optionSpec(PIPELINE_OPTIONS, 'fuseAttention'), options.fuseAttention ?? false);
      let fusion: WebModelInfo['attentionFusion'] = { applied: false, layers: 0, reason: 'fuseAttention is off' };
      let onnxAttention = 0; // ONNX Attention nodes, counted where a derivation parses the UNet (probe or fusion)
      const open = async (d: WebDevice, c: WebComponent, source: WebComponent = c) => {
        report?.({ phase: 'session', component: c, device: d.label });
        // Each device gets its own copy; ONNX Runtime reads it once.
        const r = await d.request<'loaded'>({ type: 'load', component: c, bytes: bytes[source]!, fuse: fuse && source === 'unet' }, `loading ${c}`);
        if (fuse && c === 'unet') fusion = r.fused ? { applied: true, layers: r.fused } : { applied: false, layers: 0, reason: r.fuseReason ?? 'not fused' };
        // The UNet as it runs: the fused graph's count, else the probe's (its surgery keeps every Attention node).
        if (c === (fuse ? 'unet' : 'unetProbe') && r.onnxAttention !== undefined) onnxAttention = r.onnxAttention;
        components[c] ??= r.io;
        return r;
      };
      let probe: { layers: string[] } | { reason: string } = { reason: 'disabled' };
      await Promise.all(devices.map(async (d, i) => {
        await open(d, 'unet');
        if (i > 0) return;
        await open(d, 'textEncoder');
        if (bytes.textEncoder2) await open(d, 'textEncoder2');
        await open(d, 'vaeDecoder');
        if (options.attentionProbe !== false) {
          const r = await open(d, 'unetProbe', 'unet');
          probe = r.reason !== undefined ? { reason: r.reason } : { layers: r.layers ?? [] };
          if (r.reason === undefined) d.hasProbe = true;
          else delete components.unetProbe;
        }
      }));
      const deviceWarnings = provider === 'webgpu' && onnxAttention > 0 ? [webgpuAttentionNote(onnxAttention)] : [];
      const info = describe(spec, components, probe, fusion, provider, workers, deviceWarnings);
      const dispatcher = new Dispatcher(devices, { now: () => performance.now(), split: 'never' });
      return new WebPipeline(spec, info, devices, dispatcher, tokenizer, tokenizer2, deviceWarnings);
    } catch (err) {
      devices.forEach((d) => d.terminate());
      throw err;
    }
  }

  /** Per device: tasks run, time busy, whether it was given up (the dispatcher's view). */
  get deviceStats(): DeviceStats[] {
    return this.dispatcher.stats;
  }

  get nativeSize(): { width: number; height: number } {
    return { width: this.info.nativeWidth, height: this.info.nativeHeight };
  }

  /** Generates an image; same settings and seed as in Node give the same image (within the stated tolerance). */
  generate(params: GenerateParams, run: WebGenerateRunOptions = {}): Promise<WebGenerateResult> {
    if (this.closed) return Promise.reject(new AsgdError('The pipeline is closed', { kind: 'invalid-argument', parameter: 'pipeline', hint: 'Load it again' }));
    // Checked at once, before waiting for an earlier generation.
    let plan: GenerationPlan;
    try {
      plan = checkGeneration(params, this.facts(), this.tokenizer);
    } catch (err) {
      return Promise.reject(err);
    }
    const next = this.queue.then(() => this.runGeneration(plan, run));
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async runGeneration(plan: GenerationPlan, given: WebGenerateRunOptions): Promise<WebGenerateResult> {
    let settled = false;
    // No callback once the promise has settled: a preview decode still running after a cancel ends later.
    const live = <A extends unknown[]>(fn: ((...a: A) => void) | undefined) => fn && ((...a: A) => void (settled || fn(...a)));
    try {
      return await this.generateOnce(plan, { ...given, onProgress: live(given.onProgress), onWarning: live(given.onWarning), onPreview: live(given.onPreview) });
    } finally {
      settled = true;
    }
  }

  private async generateOnce(plan: GenerationPlan, run: WebGenerateRunOptions): Promise<WebGenerateResult> {
    const p = plan.params;
    const signal = run.signal;
    const warnings: string[] = [];
    const warn = (m: string) => {
      warnings.push(m);
      run.onWarning?.(m);
    };
    this.deviceWarnings.forEach(warn);
    plan.warnings.forEach(warn);
    throwIfAborted(signal);
    const t0 = performance.now();
    const scheduler = createScheduler(this.spec.schedulerConfig, p.steps, plan.scheduler);
    run.onProgress?.({ phase: 'text', stage: 1, step: 0, totalSteps: scheduler.numSteps, unitsDone: 0, unitsTotal: 0 });
    const head = this.devices[0]!;
    const cond: TextConditioning = await encodePrompt(
      { prompt: p.prompt, negativePrompt: p.negativePrompt, tokens: plan.prompt, negativeTokens: plan.negative },
      { tokenizer2: this.tokenizer2, forceZerosForEmptyPrompt: this.spec.forceZerosForEmptyPrompt },
      (which, rows, layer) => {
        // encodePrompt asks for the SD1/2/XL encoders only (SD3's T5 goes through encodeSd3Prompt, Node only).
        if (which === 'textEncoder3') throw new AsgdError('SD3 models do not run in the browser yet', { kind: 'model', parameter: 'model', hint: 'Use an SD 1.x, 2.x or SDXL export, or the Node API' });
        return head.request<'encodeText'>({ type: 'encodeText', which, rows, layer }, 'encoding the prompt');
      },
    );
    await Promise.all(this.devices.map((d) => d.request<'ok'>({ type: 'setConditioning', cond }, 'receiving the text embeddings')));
    const tText = performance.now();
    throwIfAborted(signal);

    let unetMs = 0;
    // Wall time with at least one call outstanding (stage-1 run-ahead keeps several outstanding at once).
    let inFlight = 0;
    let since = 0;
    const evaluate = async (units: UnetUnit[], hint?: EvaluateHint): Promise<UnitResult[]> => {
      if (inFlight++ === 0) since = performance.now();
      try {
        return await this.dispatcher.evaluate(units, p.guidanceScale, { signal, priority: hint?.priority, stream: hint?.stream, onResult: hint?.onResult });
      } finally {
        if (--inFlight === 0) unetMs += performance.now() - since;
      }
    };
    const model = { nativeWidth: this.info.nativeWidth, nativeHeight: this.info.nativeHeight, latentChannels: this.info.latentChannels, timeIds: this.spec.family === 'sdxl' };
    const sampled = await denoise(planDenoiseInput(plan, scheduler, model, {
      evaluate,
      signal,
      onWarning: warn,
      // The scheduler's steps: PNDM runs more than asked (one more with skip_prk_steps, SD 1.x's).
      totalSteps: scheduler.numSteps,
      onProgress: run.onProgress,
      previewEvery: run.previewEvery,
      onPreviewLatent: run.onPreview
        ? (latent, h, w, step) => void this.decodeLatent(latent, h, w, { ...p.vae, tiling: 'off' }).then((img) => run.onPreview!(img, step), () => undefined)
        : undefined,
    }));
    const tDenoise = performance.now();
    throwIfAborted(signal);
    const image = await this.decodeLatent(sampled.latent, plan.latentHeight, plan.latentWidth, p.vae, (done, total) =>
      run.onProgress?.({ phase: 'decode', stage: finalStage(plan.method), step: scheduler.numSteps, totalSteps: scheduler.numSteps, unitsDone: sampled.unitEvaluations, unitsTotal: sampled.unitEvaluations, tilesDone: done, tilesTotal: total }),
    warn);
    throwIfAborted(signal);
    // As Node records it (its fusedRecord), so that `asgd generate --from` fuses the attention again.
    const metadata: GenerationMetadata = {
      ...buildMetadata({ ...p, methodOptions: sampled.methodOptions }, { name: this.spec.name, family: this.spec.family }, scheduler.name, TOOL_VERSION),
      ...(this.info.attentionFusion.applied ? { fusedAttention: true as const } : {}),
    };
    const png = await encodePng(image, metadata);
    const tEnd = performance.now();
    return {
      image, png, metadata, latent: sampled.latent, unetEvaluations: sampled.unitEvaluations, warnings,
      timings: { textMs: tText - t0, denoiseMs: tDenoise - tText, unetMs, hostMs: tDenoise - tText - unetMs, decodeMs: tEnd - tDenoise, totalMs: tEnd - t0 },
    };
  }

  /**
   * VAE decoding on the first device: whole, or tiled when the latent exceeds the tile (or when asked), with the
   * whole image's normalisation statistics and the attention where the settings put it, as in Node
   * (src/core/vae/pipeline-decode.ts); the device worker derives the graphs from the decoder's bytes.
   */
  private async decodeLatent(
    latent: Float32Array, h: number, w: number, opts: VaeDecodeOptions, onTile?: (done: number, total: number) => void, onWarning?: (m: string) => void,
  ): Promise<RgbImage> {
    const inv = 1 / this.spec.vae.scalingFactor;
    const scaled = new Float32Array(latent.length);
    for (let i = 0; i < latent.length; i++) scaled[i] = latent[i]! * inv;
    const r = await decodeLatentWith(webDecoderRunner(this.devices[0]!), scaled, this.info.latentChannels, h, w, opts, { onTile, onWarning });
    return chwToRgb8(r.data, r.height, r.width);
  }

  private facts(): ModelFacts {
    return {
      family: this.spec.family,
      nativeWidth: this.info.nativeWidth,
      nativeHeight: this.info.nativeHeight,
      latentChannels: this.info.latentChannels,
      staticLatentSize: this.info.staticLatentSize,
      schedulerClassName: String(this.spec.schedulerConfig._class_name ?? ''),
      vaeForceUpcast: this.spec.vae.forceUpcast,
      vaeIsFloat16: this.info.components.vaeDecoder?.inputs[0]?.type === 'float16',
    };
  }

  /** Ends the device workers (their sessions go with them). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
    await Promise.all(this.devices.map((d) => d.request<'ok'>({ type: 'close' }, 'closing').catch(() => undefined)));
    this.devices.forEach((d) => d.terminate());
  }
}

function describe(
  spec: WebModelSpec, components: Partial<Record<WebComponent, ComponentIo>>, probe: { layers: string[] } | { reason: string },
  attentionFusion: WebModelInfo['attentionFusion'], provider: WebProvider, workers: number, deviceNotes: string[],
): WebModelInfo {
  const unet = components.unet!;
  const sample = unet.inputs.find((i: IoInfo) => i.name === 'sample') ?? unet.inputs[0]!;
  const channels = typeof sample.shape[1] === 'number' ? sample.shape[1] : 4;
  const staticH = sample.shape[2];
  const staticW = sample.shape[3];
  let native = spec.unetSampleSize ? spec.unetSampleSize * 8 : typeof staticH === 'number' && staticH > 0 ? staticH * 8 : 512;
  if (!spec.unetSampleSize && typeof staticH !== 'number') spec.notes.push('no unet/config.json sample_size: assuming a native size of 512 px');
  native = Math.max(64, native);
  return {
    url: spec.url,
    name: spec.name,
    family: spec.family,
    nativeWidth: native,
    nativeHeight: native,
    latentChannels: channels,
    provider,
    workers,
    attentionProbe: 'layers' in probe ? { available: true, layers: probe.layers } : { available: false, layers: [], reason: probe.reason },
    attentionFusion,
    components,
    ...(typeof staticH === 'number' && typeof staticW === 'number' ? { staticLatentSize: { height: staticH, width: staticW } } : {}),
    notes: [...spec.notes, ...deviceNotes],
  };
}

/**
 * Loads a model folder served over HTTP (an optimum ONNX export) onto Web Worker devices: downloads the files with
 * progress (or reads them from the browser's storage), opens the sessions.
 *
 *   const pipe = await loadWebPipeline('/models/shapes-128/', { onProgress: console.log });
 *   const r = await pipe.generate({ prompt: 'a red circle', width: 256, height: 256, seed: 1 });
 *   // r.png: PNG bytes with the generation metadata
 */
export function loadWebPipeline(url: string | URL, options?: WebPipelineOptions): Promise<WebPipeline> {
  return WebPipeline.load(url, options);
}

export type { LoadProgress, WebPipelineOptions };
