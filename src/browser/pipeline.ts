/**
 * The text-to-image pipeline in the browser: the portable core's stages (check, prompt, denoise, decode; see
 * src/core/generation/) with device Web Workers running ONNX Runtime Web. As in Node, the page is the coordinator
 * (latent, scheduler, random generators) and UNet units go through the core's dispatcher, so the image does not
 * depend on how many workers ran it.
 */
import type { TextConditioning } from '../core/conditioning.ts';
import { Dispatcher, type DeviceStats } from '../core/dispatch/dispatcher.ts';
import { resolveSplitMode, type SplitMode } from '../core/dispatch/tasks.ts';
import { AsgdError, throwIfAborted } from '../core/errors.ts';
import { webgpuAttentionNote } from '../core/webgpu-attention-note.ts';
import { fusionChangesNothing } from '../core/fusion-note.ts';
import { checkGeneration, loadedModelFacts, type GenerationPlan, type ModelFacts } from '../core/generation/check.ts';
import { denoise, noMapsReason, planDenoiseInput } from '../core/generation/denoise.ts';
import { apiWording } from '../core/options/api-wording.ts';
import { collectWarnings, finalStage, type GenerationCallbacks, type GenerationTimings } from '../core/generation/progress.ts';
import { encodeFamilyPrompt, familyMaskTokens } from '../core/generation/sd3-prompt.ts';
import { checkComponents, textFacts } from '../core/model-contract.ts';
import { chwToRgb8, cropRgb, type RgbImage } from '../core/image.ts';
import { schedulerFrom, startStep, type UpscaleSettings } from '../core/generation/img2img.ts';
import {
  bothStages, checkGenerateUpscale, checkUpscaleRun, encodeLatent, noVaeEncoderError, upscaleInit, upscaleRecord, upscaleStageParams, type GenerateUpscaleSettings,
} from '../core/generation/upscale.ts';
import { float16AlreadyNote, float16FailedWarning, float16UnetInfo, float16UnetNote, type UnetFloat16Info } from '../core/unet-precision.ts';
import { folderOf, readExternalFiles, readModelFile, type PageExternalFile } from './model/external-data.ts';
import { buildMetadata, unetRecord, type GenerationMetadata } from '../core/metadata.ts';
import type { EvaluateHint, UnetUnit, UnitResult } from '../core/methods/types.ts';
import { PARAM_KEYS, type GenerateParams, type VaeDecodeOptions } from '../core/params.ts';
import { createScheduler } from '../core/schedulers/index.ts';
import type { Scheduler } from '../core/schedulers/types.ts';
import { UPSCALE_OPTIONS } from '../core/options/registry.ts';
import { refuseUnknownKeys } from '../core/options/spec.ts';
import { ClipTokenizer } from '../core/text/clip-tokenizer.ts';
import { T5Tokenizer } from '../core/text/t5-tokenizer.ts';
import { decodeLatentWith, decoderInput, encodeImageWith } from '../core/vae/pipeline-decode.ts';
import type { DenoiseInput } from '../core/generation/denoise.ts';
import { nativeSize, type ModelFamily } from '../core/model-family.ts';
import type { ComponentIo, DeviceInit, WebComponent, WebProvider } from './device/protocol.ts';
import { WebDevice } from './device/web-device.ts';
import { folderUrl, modelFileSource } from './model/model-files.ts';
import { storedCopyRetry, type CompanionFiles, type FileSource } from './model/file-source.ts';
import { readWebModel, type WebModelSpec } from './model/web-model.ts';
import { checkLoadOptions, type LoadProgress, type WebPipelineOptions } from './options.ts';
import { pickProvider } from './provider.ts';
import { noteLoad } from './load-notes.ts';
import { encodePng } from './png.ts';
import { webVaeRunner } from './vae-runner.ts';
import { readWebSourceImage, type WebImageInput } from './source-image.ts';
import { TOOL_VERSION } from './version.ts';

export interface WebGenerateRunOptions extends GenerationCallbacks {
  /** Stops the generation at the next unit boundary; the pipeline stays usable. */
  signal?: AbortSignal;
}

/** Where a browser generation's time went (`encodeMs`: an upscale's reading and encoding of its input). */
export type WebGenerationTimings = GenerationTimings;

/**
 * `pipe.upscale`: the source image (a file as a Blob or its bytes, a canvas' ImageData, or RGB pixels), the upscale
 * settings, and generate's settings (the prompt is optional: the source's embedded one, else empty).
 */
export interface WebUpscaleParams extends Omit<GenerateParams, 'prompt' | 'width' | 'height'>, UpscaleSettings {
  /** The image to upscale. */
  image: WebImageInput;
  /** The prompt; default: the one the source file holds (this project's metadata or another tool's), else empty. */
  prompt?: string;
}

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
  family: ModelFamily;
  nativeWidth: number;
  nativeHeight: number;
  latentChannels: number;
  /** Width of the denoiser's encoder_hidden_states (SD3: joint_attention_dim). */
  textWidth?: number;
  /** SD3: the transformer's patch size (as Node's ModelInfo). */
  patchSize?: number;
  /** SD3: which text encoders the folder has, e.g. "text_encoder_3 (T5)" (as Node's ModelInfo). */
  textEncoders?: string[];
  provider: WebProvider;
  workers: number;
  attentionProbe: { available: boolean; layers: string[]; reason?: string };
  /**
   * Whether the UNet runs with its attention fused (WebPipelineOptions.fuseAttention), how many layers, or why not;
   * `form`, when applied: 'flash' (q and k as they are: ONNX Runtime Web's flash-attention kernel, where a check on the
   * WebGPU device found it right) or 'padded'; `formReason` says why.
   */
  attentionFusion: { applied: boolean; layers: number; reason?: string; form?: 'padded' | 'flash'; formReason?: string; biasSplitGelus?: number; groupNorms?: number };
  /** How units are split into CFG halves: WebPipelineOptions.splitCfg, 'auto' resolved. */
  splitCfg: SplitMode;
  /** Whether the folder has the VAE encoder upscale() needs (opened on the first upscale). */
  canUpscale: boolean;
  /** What unetPrecision 'float16' did (absent with 'native'), as Node's ModelInfo.unetFloat16. */
  unetFloat16?: UnetFloat16Info;
  components: Partial<Record<WebComponent, ComponentIo>>;
  staticLatentSize?: { height: number; width: number };
  notes: string[];
}

function defaultWorker(index: number): Worker {
  return new Worker(new URL('./device/worker.js', import.meta.url), { type: 'module', name: `asgdiffusion-device-${index}` });
}

const NO_ENCODER_HINT = 'Serve the whole export folder with its vae_encoder (optimum-cli exports it by default)';

/**
 * SD3's T5 (text_encoder_3) that the folder lists but does not serve: a folder without T5 is a choice users make (it
 * holds about 9 GB), so the error says how to load without it.
 */
function withoutT5Hint(err: unknown): unknown {
  if (!(err instanceof AsgdError) || err.kind !== 'model' || !err.summary.startsWith('Cannot download')) return err;
  return new AsgdError(err.summary, {
    kind: 'model', parameter: 'text_encoder_3', expected: err.expected, received: err.received, cause: err,
    hint: 'Serve the whole export folder, or load without T5: set text_encoder_3 (and tokenizer_3) to [null, null] in model_index.json',
  });
}

function loadCancelled(): AsgdError {
  return new AsgdError('Model loading cancelled', { kind: 'cancelled' });
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
    /** SD3's T5 tokenizer, where the folder has T5. */
    private readonly tokenizer3: T5Tokenizer | undefined,
    /** What every generation warns of because of how the model meets the provider (info.notes has them too). */
    private readonly deviceWarnings: string[],
    /** The model's files, for the VAE encoder an upscale opens on first use. */
    private readonly src: FileSource,
  ) {}

  /** @internal Use loadWebPipeline. */
  static async load(url: string | URL, given?: WebPipelineOptions): Promise<WebPipeline> {
    const options = checkLoadOptions(given);
    const base = folderUrl(url);
    const workers = options.workers ?? 1;
    const threads = options.threads ?? 0;
    const fuse = options.fuseAttention ?? false;
    const signal = options.signal;
    const report = options.onProgress;
    const src = await modelFileSource(base, {
      store: options.store ?? true, signal, fetch: options.fetch,
      onProgress: report ? (p) => report({ phase: 'download', ...p }) : undefined,
    });
    const spec = await readWebModel(base, src);
    const tokenizer = new ClipTokenizer(spec.tokenizer, 'tokenizer');
    const tokenizer2 = spec.tokenizer2 ? new ClipTokenizer(spec.tokenizer2, 'tokenizer_2') : undefined;
    const tokenizer3 = spec.tokenizer3 ? new T5Tokenizer(spec.tokenizer3, 'tokenizer_3') : undefined;
    const picked = await pickProvider(options.provider);
    const provider = picked.provider;
    if (picked.note) spec.notes.push(picked.note);
    // Large model files go to the workers as their stored copies, never read into the page (readModelFile); a UNet
    // converted to float16 here is read, since the page converts it.
    const bytes: Partial<Record<WebComponent, Uint8Array | Blob>> = {};
    for (const [c, file] of Object.entries(spec.files) as [WebComponent, string][]) {
      if (signal?.aborted) throw loadCancelled();
      bytes[c] = c === 'unet' && options.unetPrecision === 'float16' ? (await src.get(file))! : await readModelFile(src, file).catch((err: unknown) => {
        throw c === 'textEncoder3' ? withoutT5Hint(err) : err;
      });
    }
    if (signal?.aborted) throw loadCancelled();
    // Weights kept outside a model file (ONNX external data) are fetched beside it; a float32 UNet converted to float16
    // first where asked, as its weights arrive.
    const external: Partial<Record<WebComponent, PageExternalFile[]>> = {};
    const precisionWarnings: string[] = [];
    let unetFloat16: UnetFloat16Info | undefined;
    let unetConverted = false;
    /** Converts again, where a stored conversion fails to open (once for all the devices). */
    let convertAgain: (() => Promise<void>) | undefined;
    if (options.unetPrecision === 'float16') {
      const { float16Unet, forgetFloat16Unet } = await import('./model/float16-unet.ts');
      const source = bytes.unet as Uint8Array;
      const r = await float16Unet(src, spec.files.unet!, source, spec.unetUpcastAttention);
      if ('reason' in r) {
        unetFloat16 = { applied: false, reason: r.reason };
        if (r.alreadyFloat16) spec.notes.push(float16AlreadyNote(spec.files.unet!));
        else precisionWarnings.push(float16FailedWarning(r.reason));
      } else {
        bytes.unet = r.model;
        external.unet = r.external;
        unetConverted = true;
        unetFloat16 = float16UnetInfo(r);
        const note = spec.notes.push(float16UnetNote(`${r.file}${r.fromStore ? ", from this browser's storage" : ''}`, r)) - 1;
        if (r.fromStore) {
          let again: Promise<void> | undefined;
          convertAgain = () => (again ??= (async () => {
            await forgetFloat16Unet(src, spec.files.unet!);
            const fresh = await float16Unet(src, spec.files.unet!, source, spec.unetUpcastAttention);
            if ('reason' in fresh) throw new Error(fresh.reason);
            bytes.unet = fresh.model;
            external.unet = fresh.external;
            spec.notes[note] = float16UnetNote(fresh.file, fresh);
          })());
        }
      }
    }
    const readExternal = (c: WebComponent) => {
      const hint = c === 'unet' && !unetConverted ? "Load with unetPrecision: 'float16' (a float32 UNet export then holds half the bytes), use a float16 export, or use the Node API" : undefined;
      return readExternalFiles(src, spec.files[c]!, bytes[c]!, hint);
    };
    for (const c of Object.keys(spec.files) as WebComponent[]) {
      if (signal?.aborted) throw loadCancelled();
      external[c] ??= await readExternal(c);
    }
    if (signal?.aborted) throw loadCancelled();
    const create = options.createWorker ?? defaultWorker;
    const devices: WebDevice[] = [];
    // Ends the workers at once: a session being created cannot be interrupted otherwise.
    const stop = () => devices.forEach((d) => d.terminate());
    signal?.addEventListener('abort', stop, { once: true });
    try {
      const init: DeviceInit = { provider, threads, ...(options.wasmPaths ? { wasmPaths: options.wasmPaths } : {}) };
      for (let i = 0; i < workers; i++) devices.push(new WebDevice(create(i), `${provider}#${i}`));
      await Promise.all(devices.map((d) => d.request<'ok'>({ type: 'init', init }, 'starting the device')));
      const components: Partial<Record<WebComponent, ComponentIo>> = {};
      let fusion: WebModelInfo['attentionFusion'] = { applied: false, layers: 0, reason: 'fuseAttention is off' };
      let onnxAttention = 0; // ONNX Attention nodes, counted where a derivation parses the UNet (probe or fusion)
      // A stored copy that fails to load as a model is downloaded once again (once for all the devices), with the
      // weights files it names. (Not a converted UNet: its bytes are not the file's.)
      const companions = (c: WebComponent): CompanionFiles => ({
        paths: () => (external[c] ?? []).map((e) => folderOf(spec.files[c]!) + e.path),
        reread: async () => void (external[c] = await readExternal(c)),
      });
      const retries = new Map((Object.keys(bytes) as WebComponent[]).map((c) => [c, storedCopyRetry(src, spec.files[c]!, bytes[c]!, false, (b) => (bytes[c] = b), companions(c))]));
      const isModelError = (err: unknown) => err instanceof AsgdError && err.kind === 'model';
      const loadFrom = async <T>(c: WebComponent, load: (b: Uint8Array | Blob) => Promise<T>): Promise<T> => {
        if (!(c === 'unet' && unetConverted)) return (await retries.get(c)!(load, isModelError))!;
        try {
          return await load(bytes.unet!);
        } catch (err) {
          // A stored conversion that fails to open is removed and made again from the export.
          if (!convertAgain || !isModelError(err)) throw err;
          await convertAgain();
          return load(bytes.unet!);
        }
      };
      // Every device opens the UNet as the probe graph where that computes the UNet's bits (one session serves both on
      // the device holding the probe, and every device runs the same graph), unless probeSession is 'separate'; else
      // the UNet as it is.
      const probeWanted = options.attentionProbe !== false;
      const open = async (d: WebDevice, c: WebComponent, source: WebComponent = c) => {
        report?.({ phase: 'session', component: c, device: d.label });
        // Each device gets its own copy; ONNX Runtime reads it once.
        const float32 = c === 'vaeDecoder' && spec.vae.forceUpcast;
        const probe = c === 'unet' && probeWanted && options.probeSession !== 'separate';
        // The probe graph, derived from the UNet's bytes, is opened with the UNet's external files (as read last: a
        // retry reads them again).
        const files = () => (external[source]!.length > 0 ? { external: external[source] } : {});
        const load = (b: Uint8Array | Blob) => d.load({ type: 'load', component: c, bytes: b, ...files(), fuse: fuse && source === 'unet', float32, probe }, `loading ${c}`);
        // The probe graph is derived from bytes the UNet's session has just accepted on this device.
        const r = c === source ? await loadFrom(c, load) : await load(bytes[source]!);
        if (fuse && c === 'unet') {
          fusion = r.fused
            ? { applied: true, layers: r.fused, ...(r.form ? { form: r.form, formReason: r.formReason } : {}), ...(r.biasSplitGelus ? { biasSplitGelus: r.biasSplitGelus } : {}), ...(r.groupNorms ? { groupNorms: r.groupNorms } : {}) }
            : { applied: false, layers: 0, reason: r.fuseReason ?? 'not fused' };
        }
        // The UNet as it runs: the derived UNet's count (fused, or the probe graph serving it), else the probe's (its
        // surgery keeps every Attention node).
        if (r.onnxAttention !== undefined && (c === 'unet' || !fuse)) onnxAttention = r.onnxAttention;
        components[c] ??= r.io;
        noteLoad(spec.notes, spec.files[source]!, r);
        return r;
      };
      let probe: { layers: string[] } | { reason: string } = { reason: 'disabled' };
      await Promise.all(devices.map(async (d, i) => {
        const unet = await open(d, 'unet');
        if (i > 0) return;
        await open(d, 'textEncoder');
        if (bytes.textEncoder2) await open(d, 'textEncoder2');
        if (bytes.textEncoder3) await open(d, 'textEncoder3');
        await open(d, 'vaeDecoder');
        if (unet.servesProbe) {
          probe = { layers: unet.layers ?? [] };
          d.hasProbe = true;
          components.unetProbe = unet.probeIo;
        } else if (unet.probeFailed) {
          probe = { reason: unet.probeReason ?? 'no probe graph' };
        } else if (probeWanted) {
          const r = await open(d, 'unetProbe', 'unet');
          probe = r.reason !== undefined ? { reason: r.reason } : { layers: r.layers ?? [] };
          if (r.reason === undefined) d.hasProbe = true;
          else delete components.unetProbe;
        }
      }));
      if (signal?.aborted) throw loadCancelled();
      // Asked for but not applied: said at every run, as the Node pipeline does.
      const unfused = fuse && !fusion.applied ? [fusionChangesNothing(fusion.reason ?? 'not fused')] : [];
      const deviceWarnings = [...unfused, ...precisionWarnings, ...(provider === 'webgpu' && onnxAttention > 0 ? [webgpuAttentionNote(onnxAttention)] : [])];
      const split = await resolveSplitMode(options.splitCfg ?? 'auto', { devices: workers, cpuKernels: provider === 'wasm', unetInputs: components.unet!.inputs }, async () =>
        (await devices[0]!.request<'checkCfgSplit'>({ type: 'checkCfgSplit', height: 16, width: 16 }, 'checking CFG splitting')).identical,
      );
      if (signal?.aborted) throw loadCancelled();
      const info = { ...describe(spec, components, probe, fusion, provider, workers, deviceWarnings, split), ...(unetFloat16 ? { unetFloat16 } : {}) };
      const dispatcher = new Dispatcher(devices, { now: () => performance.now(), split });
      return new WebPipeline(spec, info, devices, dispatcher, tokenizer, tokenizer2, tokenizer3, deviceWarnings, src);
    } catch (err) {
      stop();
      throw signal?.aborted ? loadCancelled() : err;
    } finally {
      signal?.removeEventListener('abort', stop);
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
    return this.enqueue(run, (live) => this.generateOnce(plan, live));
  }

  /**
   * Runs `body` after the runs queued before it (the devices hold one run's conditioning), with `given`'s callbacks
   * silenced once its promise has settled: a preview decode still running after a cancel ends later.
   */
  private enqueue(given: WebGenerateRunOptions, body: (run: WebGenerateRunOptions) => Promise<WebGenerateResult>): Promise<WebGenerateResult> {
    const next = this.queue.then(async () => {
      let settled = false;
      const live = <A extends unknown[]>(fn: ((...a: A) => void) | undefined) => fn && ((...a: A) => void (settled || fn(...a)));
      try {
        return await body({ ...given, onProgress: live(given.onProgress), onWarning: live(given.onWarning), onPreview: live(given.onPreview) });
      } finally {
        settled = true;
      }
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async generateOnce(plan: GenerationPlan, run: WebGenerateRunOptions): Promise<WebGenerateResult> {
    const p = plan.params;
    const signal = run.signal;
    const { warnings, warn } = this.warningsFor(run);
    plan.warnings.forEach(warn);
    throwIfAborted(signal);
    const t0 = performance.now();
    const scheduler = createScheduler(this.spec.schedulerConfig, p.steps, plan.scheduler);
    await this.encodeText(plan, scheduler.numSteps, run, warn);
    const tText = performance.now();
    throwIfAborted(signal);
    const { sampled, unetMs } = await this.denoiseStage(plan, scheduler, run, warn);
    const tDenoise = performance.now();
    throwIfAborted(signal);
    const image = await this.decodeStage(plan, scheduler.numSteps, sampled, run, warn);
    throwIfAborted(signal);
    // As Node records it, so that `asgd generate --from` fuses the attention and converts the UNet again.
    const metadata: GenerationMetadata = {
      ...buildMetadata({ ...p, methodOptions: sampled.methodOptions }, { name: this.spec.name, family: this.spec.family }, scheduler.name, TOOL_VERSION),
      ...unetRecord(this.info),
    };
    const png = await encodePng(image, metadata);
    const tEnd = performance.now();
    return {
      image, png, metadata, latent: sampled.latent, unetEvaluations: sampled.unitEvaluations, warnings,
      timings: { textMs: tText - t0, denoiseMs: tDenoise - tText, unetMs, hostMs: tDenoise - tText - unetMs, decodeMs: tEnd - tDenoise, totalMs: tEnd - t0 },
    };
  }

  /**
   * A run's warnings, in the settings' names where they name a CLI flag (a page sets `scheduler`, not `--scheduler`);
   * the model's device warnings first (unless `repeated`).
   */
  private warningsFor(run: WebGenerateRunOptions, repeated = false): { warnings: string[]; warn: (m: string) => void } {
    return collectWarnings(run.onWarning, repeated ? [] : this.deviceWarnings, apiWording);
  }

  /** Encodes the prompt on the first device and hands the conditioning to every device. */
  private async encodeText(plan: GenerationPlan, totalSteps: number, run: WebGenerateRunOptions, warn: (m: string) => void): Promise<void> {
    const p = plan.params;
    run.onProgress?.({ phase: 'text', stage: 1, step: 0, totalSteps, unitsDone: 0, unitsTotal: 0 });
    const head = this.devices[0]!;
    const input = { prompt: p.prompt, negativePrompt: p.negativePrompt, tokens: plan.prompt, negativeTokens: plan.negative };
    const encode = (which: 'textEncoder' | 'textEncoder2' | 'textEncoder3', rows: Int32Array[], layer: 'last' | 'penultimate') =>
      head.request<'encodeText'>({ type: 'encodeText', which, rows, layer }, which === 'textEncoder' ? 'encoding the prompt' : `encoding the prompt (${which})`);
    const cond: TextConditioning = await encodeFamilyPrompt(this.spec.family, input, {
      tokenizer2: this.tokenizer2, tokenizer3: this.tokenizer3, forceZerosForEmptyPrompt: this.spec.forceZerosForEmptyPrompt, jointDim: this.info.textWidth, onWarning: warn,
    }, encode);
    await Promise.all(this.devices.map((d) => d.request<'ok'>({ type: 'setConditioning', cond }, 'receiving the text embeddings')));
  }

  /** The denoising through the dispatcher; `init`: an upscale's start from its encoded input. */
  private async denoiseStage(
    plan: GenerationPlan, scheduler: Scheduler, run: WebGenerateRunOptions, warn: (m: string) => void, init?: DenoiseInput['init'],
  ): Promise<{ sampled: Awaited<ReturnType<typeof denoise>>; unetMs: number }> {
    const p = plan.params;
    const signal = run.signal;
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
      noMapsReason: noMapsReason(this.info.attentionProbe),
      evaluate,
      maskTokens: familyMaskTokens(this.spec.family, plan, this.tokenizer.maxLength, this.tokenizer3),
      signal,
      onWarning: warn,
      init,
      // The scheduler's steps: PNDM runs more than asked (one more with skip_prk_steps, SD 1.x's).
      totalSteps: scheduler.numSteps,
      onProgress: run.onProgress,
      previewEvery: run.previewEvery,
      onPreviewLatent: run.onPreview
        ? (latent, h, w, step) => void this.decodeLatent(latent, h, w, { ...p.vae, tiling: 'off' }).then((img) => run.onPreview!(img, step), () => undefined)
        : undefined,
    }));
    return { sampled, unetMs };
  }

  private decodeStage(plan: GenerationPlan, totalSteps: number, sampled: { latent: Float32Array; unitEvaluations: number }, run: WebGenerateRunOptions, warn: (m: string) => void): Promise<RgbImage> {
    // A cancel stops a tiled decode between tiles, as it stops an encode.
    return this.decodeLatent(sampled.latent, plan.latentHeight, plan.latentWidth, plan.params.vae, (done, total) => {
      throwIfAborted(run.signal);
      run.onProgress?.({ phase: 'decode', stage: finalStage(plan.method), step: totalSteps, totalSteps, unitsDone: sampled.unitEvaluations, unitsTotal: sampled.unitEvaluations, tilesDone: done, tilesTotal: total });
    }, warn);
  }

  /**
   * Upscales an image as Node's pipeline does (src/core/generation/upscale.ts): resize (the core's Lanczos3) to the
   * output size, VAE-encode on the first device (tiled like decoding for a large one), noise to `strength`, denoise the
   * remaining steps with the method, decode. The VAE encoder is downloaded and opened on the first upscale. The
   * result's metadata records the source's SHA-256 and size and the upscale settings; its PNG keeps the input's alpha.
   */
  upscale(params: WebUpscaleParams, run: WebGenerateRunOptions = {}): Promise<WebGenerateResult> {
    if (this.closed) return Promise.reject(new AsgdError('The pipeline is closed', { kind: 'invalid-argument', parameter: 'pipeline', hint: 'Load it again' }));
    try {
      if (!params || typeof params !== 'object') throw new AsgdError('Invalid upscale parameters', { kind: 'invalid-argument', parameter: 'params', expected: 'an object with an image', received: String(params) });
      refuseUnknownKeys(params, ['image', ...UPSCALE_OPTIONS.map((o) => o.key), ...PARAM_KEYS], 'an upscale setting');
      if (params.image === undefined) throw new AsgdError('No image to upscale', { kind: 'invalid-argument', parameter: 'image', expected: 'an image file (a Blob or its bytes), a canvas\' ImageData, or RGB pixels', received: 'undefined' });
      if (!this.spec.vaeEncoder) throw noVaeEncoderError(NO_ENCODER_HINT);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.enqueue(run, (live) => this.upscaleOnce(params, live));
  }

  /**
   * Generates at the given settings, then upscales the image in the same run (as Node's generateUpscaled): one result
   * whose metadata holds both stages; the upscale settings are checked (the size against the first stage's) first.
   */
  generateUpscaled(params: GenerateParams, upscale: GenerateUpscaleSettings, run: WebGenerateRunOptions = {}): Promise<WebGenerateResult> {
    if (this.closed) return Promise.reject(new AsgdError('The pipeline is closed', { kind: 'invalid-argument', parameter: 'pipeline', hint: 'Load it again' }));
    let plan: GenerationPlan;
    try {
      plan = checkGeneration(params, this.facts(), this.tokenizer);
      checkGenerateUpscale({ width: plan.params.width, height: plan.params.height }, upscale);
      if (!this.spec.vaeEncoder) throw noVaeEncoderError(NO_ENCODER_HINT);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.enqueue(run, async (live) => {
      const g = await this.generateOnce(plan, live);
      const r = await this.upscaleOnce({ ...upscaleStageParams(params, upscale, g.metadata.seed), image: g.image }, live, g.metadata);
      return bothStages(g, r);
    });
  }

  /** `generation`: the first stage of generateUpscaled (its record goes into the upscale's; it warned of the devices). */
  private async upscaleOnce(params: WebUpscaleParams, run: WebGenerateRunOptions, generation?: GenerationMetadata): Promise<WebGenerateResult> {
    const signal = run.signal;
    const t0 = performance.now();
    const { image: input, ...settings } = params;
    const source = await readWebSourceImage(input);
    const check = checkUpscaleRun({ width: source.image.width, height: source.image.height, embedded: source.embedded }, settings, {
      facts: this.facts(), tokenizer: this.tokenizer, schedulerClass: String(this.spec.schedulerConfig._class_name ?? ''),
    });
    const { up, plan } = check;
    const p = plan.params;
    const { warnings, warn } = this.warningsFor(run, generation !== undefined);
    check.warnings.forEach(warn);
    throwIfAborted(signal);
    const full = createScheduler(this.spec.schedulerConfig, p.steps, plan.scheduler);
    const start = startStep(p.steps, up.strength);
    const scheduler = schedulerFrom(full, start);
    await this.openEncoder();
    throwIfAborted(signal);
    // A large input takes a while to encode (tile by tile): its own progress phase, and a cancel stops it between
    // tiles (the tiling frees the states it holds when a tile's callback throws).
    const onTile = (tilesDone: number, tilesTotal: number) => {
      throwIfAborted(signal);
      run.onProgress?.({ phase: 'encode', stage: 1, step: 0, totalSteps: scheduler.numSteps, unitsDone: 0, unitsTotal: 0, tilesDone, tilesTotal });
    };
    const runner = webVaeRunner(this.devices[0]!, 'encoder');
    const vae = { latentChannels: this.info.latentChannels, scalingFactor: this.spec.vae.scalingFactor, shiftFactor: this.spec.vae.shiftFactor };
    const { init, resized } = await upscaleInit(source.image, check, (img) =>
      encodeLatent(img, (chw, h, w) => encodeImageWith(runner, chw, h, w, p.vae, { onTile, onWarning: warn }), vae));
    throwIfAborted(signal);
    const tEncode = performance.now();
    await this.encodeText(plan, scheduler.numSteps, run, warn);
    const tText = performance.now();
    throwIfAborted(signal);
    const { sampled, unetMs } = await this.denoiseStage(plan, scheduler, run, warn, init);
    const tDenoise = performance.now();
    throwIfAborted(signal);
    const image = cropRgb(await this.decodeStage(plan, scheduler.numSteps, sampled, run, warn), up.targetWidth, up.targetHeight);
    throwIfAborted(signal);
    // The input's opacity, resized with it (the models draw colour only).
    if (resized.alpha) image.alpha = resized.alpha;
    const metadata: GenerationMetadata = {
      ...buildMetadata({ ...p, width: up.targetWidth, height: up.targetHeight, methodOptions: sampled.methodOptions }, { name: this.spec.name, family: this.spec.family }, scheduler.name, TOOL_VERSION),
      ...unetRecord(this.info),
      upscale: upscaleRecord({ sha256: source.sha256, width: source.image.width, height: source.image.height }, up, start, generation),
    };
    const png = await encodePng(image, metadata);
    const tEnd = performance.now();
    return {
      image, png, metadata, latent: sampled.latent, unetEvaluations: sampled.unitEvaluations, warnings,
      timings: { encodeMs: tEncode - t0, textMs: tText - tEncode, denoiseMs: tDenoise - tText, unetMs, hostMs: tDenoise - tText - unetMs, decodeMs: tEnd - tDenoise, totalMs: tEnd - t0 },
    };
  }

  private encoderOpen?: Promise<void>;

  /**
   * Downloads (or reads from the storage) and opens the VAE encoder on the first device, once; a stored copy that does
   * not open is downloaded again, as at load. A failed open is tried again by the next upscale.
   */
  private openEncoder(): Promise<void> {
    const file = this.spec.vaeEncoder!;
    const src = this.src;
    this.encoderOpen ??= (async () => {
      let bytes = await readModelFile(src, file);
      let external = await readExternalFiles(src, file, bytes);
      const retry = storedCopyRetry(src, file, bytes, false, (b) => (bytes = b), {
        paths: () => external.map((e) => folderOf(file) + e.path),
        reread: async () => void (external = await readExternalFiles(src, file, bytes)),
      });
      const isModelError = (err: unknown) => err instanceof AsgdError && err.kind === 'model';
      const r = await retry((b) => this.devices[0]!.load(
        { type: 'load', component: 'vaeEncoder', bytes: b, ...(external.length > 0 ? { external } : {}), float32: this.spec.vae.forceUpcast }, 'loading vaeEncoder',
      ), isModelError);
      if (!r) throw noVaeEncoderError(NO_ENCODER_HINT);
      this.info.components.vaeEncoder = r.io;
      noteLoad(this.info.notes, file, r);
    })();
    this.encoderOpen.catch(() => (this.encoderOpen = undefined));
    return this.encoderOpen;
  }

  /**
   * VAE decoding on the first device: whole, or tiled when the latent exceeds the tile (or when asked), with the
   * whole image's normalisation statistics and the attention where the settings put it, as in Node
   * (src/core/vae/pipeline-decode.ts); the device worker derives the graphs from the decoder's bytes.
   */
  private async decodeLatent(
    latent: Float32Array, h: number, w: number, opts: VaeDecodeOptions, onTile?: (done: number, total: number) => void, onWarning?: (m: string) => void,
  ): Promise<RgbImage> {
    const scaled = decoderInput(latent, this.spec.vae);
    const r = await decodeLatentWith(webVaeRunner(this.devices[0]!, 'decoder'), scaled, this.info.latentChannels, h, w, opts, { onTile, onWarning });
    return chwToRgb8(r.data, r.height, r.width);
  }

  private facts(): ModelFacts {
    return loadedModelFacts(this.spec, this.info);
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
  attentionFusion: WebModelInfo['attentionFusion'], provider: WebProvider, workers: number, deviceNotes: string[], splitCfg: SplitMode,
): WebModelInfo {
  // The components checked against each other as in Node (src/core/model-contract.ts): a VAE of another family,
  // SD3 parts that do not fit or an SDXL refiner are named at load rather than failing at the first call.
  const { sample, channels, sd3, unetTextWidth } = checkComponents({ where: spec.url, vaeDecoder: spec.files.vaeDecoder! }, spec.family, components);
  const staticH = sample.shape[2];
  const staticW = sample.shape[3];
  const native = nativeSize(spec.family, spec.unetSampleSize, staticH, spec.notes);
  return {
    url: spec.url,
    name: spec.name,
    family: spec.family,
    nativeWidth: native,
    nativeHeight: native,
    latentChannels: channels,
    ...textFacts(sd3, unetTextWidth, spec.patchSize, spec.files.textEncoder3 !== undefined),
    provider,
    workers,
    splitCfg,
    canUpscale: spec.vaeEncoder !== undefined,
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
