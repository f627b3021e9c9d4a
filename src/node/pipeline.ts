/**
 * The text-to-image pipeline: the coordinator. It owns the latent, the scheduler state and the random
 * generators; device workers own the ONNX Runtime sessions. A generation is a pure function of its settings and
 * seed, whatever the number of devices.
 */
import { createHash } from 'node:crypto';
import path from 'node:path';
import { AsgdError, invalidArgument, throwIfAborted } from '../core/errors.ts';
import { PIPELINE_OPTIONS, UPSCALE_OPTIONS } from '../core/options/registry.ts';
import { checkOption, refuseUnknownKeys } from '../core/options/spec.ts';
import { cropRgb, type RgbImage } from '../core/image.ts';
import { buildMetadata, unetRecord, type GenerationMetadata } from '../core/metadata.ts';
import { schedulerFrom, startStep, type UpscaleSettings } from '../core/generation/img2img.ts';
import { bothStages, checkGenerateUpscale, checkUpscaleRun, encodeLatent, noVaeEncoderError, upscaleInit, upscaleRecord, upscaleStageParams, type GenerateUpscaleSettings } from '../core/generation/upscale.ts';
import { readSourceImage, type ImageInput, type SourceImage } from './image/read.ts';
import type { EvaluateHint, UnetUnit, UnitResult } from '../core/methods/types.ts';
import { PARAM_KEYS, resolveVaeOptions, type GenerateParams, type ResolvedParams, type VaeDecodeOptions } from '../core/params.ts';
import { checkInputLength } from '../core/vae/tiled.ts';
import { decoderInput } from '../core/vae/pipeline-decode.ts';
import { createScheduler } from '../core/schedulers/index.ts';
import { fusionChangesNothing } from '../core/fusion-note.ts';
import { ClipTokenizer } from '../core/text/clip-tokenizer.ts';
import { checkGeneration, loadedModelFacts, type GenerationPlan, type ModelFacts } from '../core/generation/check.ts';
import { denoise, noMapsReason, planDenoiseInput, type DenoiseInput, type DenoiseResult } from '../core/generation/denoise.ts';
import type { Scheduler } from '../core/schedulers/types.ts';
import { encodeFamilyPrompt, familyMaskTokens } from '../core/generation/sd3-prompt.ts';
import { T5Tokenizer } from '../core/text/t5-tokenizer.ts';
import { TOOL_VERSION } from './version.ts';
import { decodeLatentImage, encodeImageLatent, type DecoderRequest } from './vae-decode.ts';
import { readModelFolder, withVaeFolder, type ModelSpec } from './model/folder.ts';
import { describeModel, type ModelInfo } from './model/describe.ts';
import { attentionForm, attentionOnCpuWarnings, fuseAttentionFiles } from './attention-files.ts';
import type { DeviceWorker } from './runner/device-worker.ts';
import { startDevices, type DeviceFiles, type DeviceTestHooks, type StartedDevices } from './runner/start-devices.ts';
import { autoDevices, autoDevicesNote, checkFlashAttention, checkProvidersAvailable, isAutoDevices, parseDevices, threadsWarning, workerIsolations, type DeviceSpec, type WorkerIsolation } from './runner/devices.ts';
import type { DevicePool } from './runner/pool.ts';
import type { WorkerResult } from './runner/protocol.ts';
import type { SplitMode } from '../core/dispatch/tasks.ts';
import type { TextConditioning } from '../core/conditioning.ts';

export type { GenerateUpscaleSettings, ModelInfo };

export interface PipelineOptions {
  /** Comma-separated device list ("cpu", "cpu,cpu", "webgpu:0", "cuda:0,cuda:1"), "auto" (autoDevices) or parsed specs. Default "cpu". */
  devices?: string | DeviceSpec[];
  /** Intra-op threads per CPU worker (0: ONNX Runtime's default). */
  threads?: number;
  /** Build the attention-probe UNet for the cross-attention mask (default true; false skips it). */
  attentionProbe?: boolean;
  /** A separate VAE folder replacing the model's (`--vae`). */
  vae?: string;
  /**
   * Split units into their CFG halves (two batch-1 calls) to balance devices. 'auto' (default): 'balance' when
   * every device is a CPU (ONNX Runtime's CPU provider gives a batch-1 call the same bits as the row of a batch-2
   * call, so results stay identical on any device count), else 'never'. 'balance' on GPUs may change the last
   * bits with the device count; 'always' splits every unit on any device count (identical results everywhere).
   */
  splitCfg?: 'auto' | SplitMode;
  /** Re-run a unit whose device failed on another device (that device is given up) instead of failing. */
  retryOnOtherDevice?: boolean;
  /**
   * Where device workers run: 'thread' (threads of this process), 'process' (a process each: a crash ends that
   * worker only, e.g. a crash in the GPU driver stack fails that device with an error instead of ending the program;
   * tensors are copied between processes), or 'auto' (default): processes for the WebGPU workers when a pipeline has
   * two or more of them (onnxruntime-node 1.30 ended the process when two WebGPU sessions ran at the same time in two
   * threads; 1.31.1 runs them, but two threads share one WebGPU device and were slower than two processes on
   * lavapipe), threads for the rest.
   */
  workerIsolation?: 'auto' | WorkerIsolation;
  /**
   * Run the UNet's attention (and the probe graph's: its probed layers keep their scores for the maps) as fused MultiHeadAttention nodes
   * (src/graph/attention-fusion.ts), q and k padded per head so that ONNX Runtime's WebGPU provider (1.30, 1.31.1) leaves out
   * its flash-attention kernel, which was wrong on Mesa's lavapipe (docs/benchmarks.md, "Fused attention"); with the
   * padding the fused graph is within float rounding of the written-out one there. Off by default: the padded form's
   * speed on a GPU is not measured yet (the measured speed-up was the flash kernel's; on lavapipe the padded form is
   * slower than the plain graph). Every device of a pipeline runs the same graph.
   */
  fuseAttention?: boolean;
  /**
   * 'float16': a float32 UNet export runs as a float16 graph (src/graph/float16-downcast.ts), converted on first use
   * and stored beside the export (`unet/model.asgd-float16.onnx` with its `.data`) or in the cache folder: half the
   * weights' memory, and half the bytes each activation moves on a GPU. The images differ from the float32 run's
   * by float16 rounding, as a float16 export's do. 'native' (default): the UNet as exported.
   */
  unetPrecision?: 'native' | 'float16';
  /**
   * 'shared' (default): where the attention-probe graph computes the UNet's bits (DeviceFiles.probeServesUnet), every
   * unit runs on it and the device holding the probe opens one UNet session, not two. ONNX Runtime runs every node of
   * a graph on each call whatever is fetched, so a unit that is not probed still computes the probed layers' maps.
   * 'separate': those units run the UNet itself, and the device holding the probe keeps both graphs (a second copy of
   * the UNet's weights in its memory), for a GPU on which the maps' work costs more than the memory is worth.
   */
  probeSession?: 'shared' | 'separate';
  /**
   * Cancels loading (a large model takes a while): the load rejects at once with a 'cancelled' error and ends the
   * device workers it started (a worker thread once the session it is creating exists; a process at once). Loading
   * only: each run takes its own signal.
   */
  signal?: AbortSignal;
}

/**
 * Fault and timing injection for the runner's tests; not part of the public API (use `openPipeline`, which
 * `src/index.ts` does not export).
 * @internal
 */
export interface PipelineTestHooks extends DeviceTestHooks {
  /** Receives a function that asks every device worker for its description (the device-conditioning counts). */
  inspectWorkers?: (ask: () => Promise<Extract<WorkerResult, { type: 'describe' }>[]>) => void;
}

export type { DeviceActivity, GenerationCallbacks, GenerationPhase, GenerationProgress, GenerationTimings } from '../core/generation/progress.ts';
import { collectWarnings, finalStage, type DeviceActivity, type GenerationCallbacks, type GenerationProgress, type GenerationTimings } from '../core/generation/progress.ts';

export interface GenerateRunOptions extends GenerationCallbacks {
  signal?: AbortSignal;
  /** Instrument: the text conditioning sent to the devices (embeddings, pooled embeddings). */
  onConditioning?: (cond: TextConditioning) => void;
  /** Instrument: every batch of independent units, before it is evaluated. */
  onUnits?: (units: readonly UnetUnit[]) => void;
}

/** A run whose progress carries the devices' activity (Pipeline.withDeviceActivity). */
interface ActivityRun extends GenerateRunOptions {
  onDispatched?(): void;
}

export interface GenerateResult {
  image: RgbImage;
  metadata: GenerationMetadata;
  /** Final latent [1, C, h, w] (before VAE scaling). */
  latent: Float32Array;
  unetEvaluations: number;
  timings: GenerationTimings;
  warnings: string[];
}

/** `pipe.upscale`: the source image, the upscale settings, and generate's settings (the prompt is optional). */
export interface UpscaleParams extends Omit<GenerateParams, 'prompt' | 'width' | 'height'>, UpscaleSettings {
  /** A file path, the file's bytes (PNG, JPEG, WebP), or decoded RGB pixels. */
  image: ImageInput;
  /** Default: the prompt embedded in the input (this project's metadata or another tool's `parameters`), else empty. */
  prompt?: string;
}


export class Pipeline implements AsyncDisposable {
  private closed = false;
  /** The device workers were ended by a cancel or a device failure: the next run starts them again. */
  private stopped = false;
  /** The last generate / upscale call's end (see oneAtATime). */
  private runs: Promise<unknown> = Promise.resolve();
  /** The last VAE decode's end: decodes run one after another (a preview's with the final one). */
  private decodes: Promise<unknown> = Promise.resolve();
  private constructor(
    readonly spec: ModelSpec,
    readonly devices: DeviceSpec[],
    private workers: DeviceWorker[],
    private pool: DevicePool,
    private readonly restart: (signal: AbortSignal | undefined, cancelled: () => AsgdError) => Promise<StartedDevices>,
    private readonly tokenizer: ClipTokenizer,
    readonly info: ModelInfo,
    private readonly tokenizer2?: ClipTokenizer,
    private readonly tokenizer3?: T5Tokenizer,
    /** What every run warns of because of how the model meets the devices (ModelInfo.notes has them too). */
    private readonly deviceWarnings: string[] = [],
  ) {}

  /** @internal */
  static async load(dir: string, given: PipelineOptions | undefined, hooks: PipelineTestHooks = {}): Promise<Pipeline> {
    const options = checkLoadArguments(dir, given);
    const signal = options.signal;
    const loadCancelled = () => new AsgdError('Loading cancelled', { kind: 'cancelled' });
    if (signal?.aborted) throw loadCancelled();
    const folder = readModelFolder(dir);
    const chosen = options.vae ? withVaeFolder(folder, options.vae) : folder;
    const auto = isAutoDevices(options.devices) ? await autoDevices() : undefined;
    if (signal?.aborted) throw loadCancelled();
    const devices = typeof options.devices === 'string' || options.devices === undefined
      ? parseDevices(auto?.devices ?? options.devices ?? 'cpu', options.threads ?? 0)
      : options.devices;
    checkProvidersAvailable(devices);
    workerIsolations(options.workerIsolation ?? 'auto', devices); // the option checked before anything loads
    // A float16 VAE whose config sets force_upcast runs as a float32 graph, as diffusers runs it.
    const upcast = chosen.vae.forceUpcast ? await (await import('./float32-vae.ts')).withFloat32Vae(chosen) : chosen;
    // A float32 UNet asked to run in float16: the converted graph replaces the export (the probe and fusion derive from it).
    const { spec, unetFloat16, warning: unconverted } = options.unetPrecision === 'float16'
      ? await (await import('./float16-unet.ts')).withFloat16Unet(upcast, { ...(signal ? { signal } : {}) })
      : { spec: upcast, unetFloat16: undefined, warning: undefined };
    if (signal?.aborted) throw loadCancelled();
    const tokenizer = new ClipTokenizer(spec.tokenizer, 'tokenizer');
    const tokenizer2 = spec.tokenizer2 ? new ClipTokenizer(spec.tokenizer2, 'tokenizer_2') : undefined;
    const tokenizer3 = spec.tokenizer3 ? new T5Tokenizer(spec.tokenizer3, 'tokenizer_3') : undefined;

    let probe: { file: string; layers: string[] } | { reason: string } = { reason: 'disabled' };
    if (options.attentionProbe !== false) {
      const { prepareAttentionProbe } = await import('./probe.ts');
      probe = await prepareAttentionProbe(spec.paths.unet);
    }
    if (signal?.aborted) throw loadCancelled();
    const form = options.fuseAttention ? await attentionForm(devices, checkFlashAttention) : undefined;
    const fused = await fuseAttentionFiles(spec.paths.unet, probe, form && { ...form, webgpuOnly: devices.every((d) => d.provider === 'webgpu') });
    const unetFile = fused.unet ?? spec.paths.unet;
    const probeFile = fused.probe ?? ('file' in probe ? probe.file : undefined);
    const files: DeviceFiles = {
      spec, unet: unetFile, probe: probeFile, pool: { ...spec.paths, unet: unetFile, ...(probeFile ? { unetProbe: probeFile } : {}) },
      probeServesUnet: options.probeSession !== 'separate' && probeFile !== undefined
        && (fused.unet === undefined ? fused.probe === undefined : fused.probeServesUnet === true),
    };
    const started = await startDevices(files, devices, options, hooks, signal, loadCancelled);
    hooks.inspectWorkers?.(() => Promise.all(started.workers.map((w) => w.request<'describe'>({ type: 'describe' }, 'describing the worker'))));
    try {
      // Only threads the user gave: the default divides the cores among the CPU workers.
      const threads = typeof options.threads === 'number' && options.threads > 0 ? threadsWarning(devices) : undefined;
      // Asked for but not applied: said at every run, as asgd info says it.
      const unfused = options.fuseAttention && !fused.info.applied ? fusionChangesNothing(fused.info.reason ?? 'not fused') : undefined;
      const deviceWarnings = [...(threads ? [threads] : []), ...(unfused ? [unfused] : []), ...(unconverted ? [unconverted] : []), ...(await attentionOnCpuWarnings(unetFile, devices))];
      const autoNote = auto && autoDevicesNote(auto);
      const info = describeModel(spec, started.desc.components, probe, fused.info, [...(autoNote ? [autoNote] : []), ...deviceWarnings]);
      if (unetFloat16) info.unetFloat16 = unetFloat16;
      if (signal?.aborted) throw loadCancelled();
      // A restart (after a cancel or a device failure) starts the same workers with the split already decided.
      const restart = (s: AbortSignal | undefined, cancelled: () => AsgdError) =>
        startDevices(files, devices, { ...options, splitCfg: undefined }, { completionJitter: hooks.completionJitter }, s, cancelled, started.pool.splitMode);
      return new Pipeline(spec, devices, started.workers, started.pool, restart, tokenizer, info, tokenizer2, tokenizer3, deviceWarnings);
    } catch (err) {
      await Promise.all(started.workers.map((w) => w.terminate()));
      throw signal?.aborted ? loadCancelled() : err;
    }
  }

  get nativeSize(): { width: number; height: number } {
    return { width: this.info.nativeWidth, height: this.info.nativeHeight };
  }

  /**
   * Generates one image. Calls on one pipeline run one after another (the devices hold one prompt's conditioning
   * at a time), in the order they were made.
   */
  async generate(params: GenerateParams, run: GenerateRunOptions = {}): Promise<GenerateResult> {
    checkRunOptions(run);
    return this.oneAtATime(() => this.generateNow(params, run));
  }

  /**
   * Runs `body` after every run started before it has ended (however it ended). Two generations at once on one
   * pipeline would overwrite each other's conditioning on the devices: the first image was drawn partly with the
   * second prompt, under its own metadata.
   */
  private oneAtATime<T>(body: () => Promise<T>): Promise<T> {
    const result = this.runs.then(body);
    this.runs = result.catch(() => undefined);
    return result;
  }

  private async generateNow(params: GenerateParams, run: GenerateRunOptions): Promise<GenerateResult> {
    this.assertOpen();
    // Stage 1, check: every setting against the model, before any model call.
    const plan = checkGeneration(params, this.facts(), this.tokenizer);
    const p = plan.params;
    const signal = run.signal;
    await this.ready(signal, 'Generation cancelled');
    const { warnings, warn } = this.warningsFor(run);
    plan.warnings.forEach(warn);
    run = this.withDeviceActivity(run);
    return this.guarded(signal, 'Generation cancelled', warn, async () => {
      const t0 = performance.now();
      // Progress counts the scheduler's steps: PNDM runs more than asked (one more with skip_prk_steps, SD 1.x's).
      const scheduler = createScheduler(this.spec.schedulerConfig, p.steps, plan.scheduler, { imageSeqLen: plan.imageSeqLen });
      // Stage 2, encode the prompt, and hand the conditioning to every device once.
      await this.encodeAndShare(plan, run, scheduler.numSteps, warn);
      const tText = performance.now();

      // Stage 3, denoise: the method fuses one prediction per step, the scheduler steps it; units run on the devices.
      const { sampled, unetMs } = await this.denoiseStage(plan, scheduler, scheduler.numSteps, run, warn);
      const tDenoise = performance.now();
      throwIfAborted(signal);

      // Stage 4, decode (tiled above the tile size).
      const image = await this.decodeStage(plan, scheduler.numSteps, sampled, run, warn);
      throwIfAborted(signal);
      const tEnd = performance.now();
      const metadata = { ...buildMetadata({ ...p, methodOptions: sampled.methodOptions }, this.modelRecord(), scheduler.name, TOOL_VERSION), ...unetRecord(this.info) };
      return {
        image,
        metadata,
        latent: sampled.latent,
        unetEvaluations: sampled.unitEvaluations,
        warnings,
        timings: {
          textMs: tText - t0,
          denoiseMs: tDenoise - tText,
          unetMs,
          hostMs: tDenoise - tText - unetMs,
          decodeMs: tEnd - tDenoise,
          totalMs: tEnd - t0,
        },
      };
    });
  }

  /**
   * Upscales an image: resize (Lanczos) to the output size, VAE-encode, noise to `strength`, denoise the remaining
   * steps with the method (asg takes its structure from the input: see UpscaleSettings.structureSource), decode.
   * The result's metadata records the source's SHA-256 and size and the upscale settings.
   */
  async upscale(params: UpscaleParams, run: GenerateRunOptions = {}): Promise<GenerateResult> {
    checkRunOptions(run);
    return this.oneAtATime(async () => {
      this.assertOpen();
      if (!params || typeof params !== 'object') throw new AsgdError('Invalid upscale parameters', { kind: 'invalid-argument', parameter: 'params', expected: 'an object with an image', received: String(params) });
      // Here, not in resolveParams: its list of the settings it knows would leave the upscale's out.
      refuseUnknownKeys(params, ['image', ...UPSCALE_OPTIONS.map((s) => s.key), ...PARAM_KEYS], 'an upscale setting');
      const source = await readSourceImage(params.image);
      return this.upscaleSource(source, params, run);
    });
  }

  /** Generates at the given settings, then upscales the image in the same run: one result whose metadata holds both. */
  async generateUpscaled(params: GenerateParams, upscale: GenerateUpscaleSettings, run: GenerateRunOptions = {}): Promise<GenerateResult> {
    checkRunOptions(run);
    // The upscale settings are checked before anything runs (the size against the first stage's).
    const first = checkGeneration(params, this.facts(), this.tokenizer).params;
    checkGenerateUpscale({ width: first.width, height: first.height }, upscale);
    return this.oneAtATime(() => this.generateThenUpscale(params, upscale, run));
  }

  private async generateThenUpscale(params: GenerateParams, upscale: GenerateUpscaleSettings, run: GenerateRunOptions): Promise<GenerateResult> {
    const g = await this.generateNow(params, run);
    const source: SourceImage = { image: g.image, hadAlpha: false, sha256: createHash('sha256').update(g.image.data).digest('hex'), name: 'the generated image' };
    const r = await this.upscaleSource(source, { ...upscaleStageParams(params, upscale, g.metadata.seed), image: g.image }, run, g.metadata);
    return bothStages(g, r);
  }


  private async upscaleSource(source: SourceImage, params: UpscaleParams, run: GenerateRunOptions, generation?: GenerationMetadata): Promise<GenerateResult> {
    const { image: _image, ...settings } = params;
    if (!this.spec.paths.vaeEncoder) throw noVaeEncoderError('Export the model with its encoder (optimum-cli exports it by default), or pass --vae with a folder holding vae_encoder');
    // Stage 1, check: the upscale against its source, then the generation at the (grid-rounded) output size.
    const check = checkUpscaleRun({ width: source.image.width, height: source.image.height, embedded: source.embedded }, settings, {
      facts: this.facts(), tokenizer: this.tokenizer, schedulerClass: String(this.spec.schedulerConfig._class_name ?? ''),
    });
    const { up, plan } = check;
    // `generation`: the upscale stage of generateUpscaled, whose generate stage warned of the devices already.
    const { warnings, warn } = this.warningsFor(run, generation !== undefined);
    check.warnings.forEach(warn);
    const p = plan.params;
    const signal = run.signal;
    await this.ready(signal, 'Upscale cancelled');
    run = this.withDeviceActivity(run);
    return this.guarded(signal, 'Upscale cancelled', warn, async () => {
      const t0 = performance.now();
      const full = createScheduler(this.spec.schedulerConfig, p.steps, plan.scheduler, { imageSeqLen: plan.imageSeqLen });
      const start = startStep(p.steps, up.strength);
      const scheduler = schedulerFrom(full, start);
      // A large input takes a while to encode (tile by tile): its own progress phase.
      const onTile = (tilesDone: number, tilesTotal: number) =>
        run.onProgress?.({ phase: 'encode', stage: 1, step: 0, totalSteps: scheduler.numSteps, unitsDone: 0, unitsTotal: 0, tilesDone, tilesTotal });
      // Stage 2, the input: resized to the output, padded to the latent grid, encoded (core/generation/upscale.ts).
      await this.pool.ensure('vaeEncoder', 'vaeDecoder');
      const { init, resized } = await upscaleInit(source.image, check, (img) => this.encodeImage(img, p.vae, warn, onTile));
      throwIfAborted(signal);
      const tEncode = performance.now();

      // Stage 3, the prompt, as generate.
      await this.encodeAndShare(plan, run, scheduler.numSteps, warn);
      const tText = performance.now();

      // Stage 4, denoise the last steps from the noised input.
      const { sampled, unetMs } = await this.denoiseStage(plan, scheduler, scheduler.numSteps, run, warn, init);
      const tDenoise = performance.now();
      throwIfAborted(signal);

      // Stage 5, decode and crop to the output size.
      const decoded = await this.decodeStage(plan, scheduler.numSteps, sampled, run, warn);
      throwIfAborted(signal);
      const image = cropRgb(decoded, up.targetWidth, up.targetHeight);
      // The input's opacity, resized with it (the models draw colour only).
      if (resized.alpha) image.alpha = resized.alpha;
      const tEnd = performance.now();
      const metadata: GenerationMetadata = {
        ...buildMetadata({ ...p, width: up.targetWidth, height: up.targetHeight, methodOptions: sampled.methodOptions }, this.modelRecord(), scheduler.name, TOOL_VERSION),
        ...unetRecord(this.info),
        upscale: upscaleRecord({ sha256: source.sha256, width: source.image.width, height: source.image.height }, up, start, generation),
      };
      return {
        image,
        metadata,
        latent: sampled.latent,
        unetEvaluations: sampled.unitEvaluations,
        warnings,
        timings: {
          textMs: tText - tEncode,
          denoiseMs: tDenoise - tText,
          unetMs,
          hostMs: tDenoise - tText - unetMs,
          decodeMs: tEnd - tDenoise,
          totalMs: tEnd - t0,
          encodeMs: tEncode - t0,
        },
      };
    });
  }

  /**
   * VAE-encodes an RGB image (sides multiples of 8) to a latent multiplied by the scaling factor; tiled like decoding
   * (the same `vae` settings, tile size in latent pixels) with the whole image's GroupNorm statistics.
   */
  private encodeImage(img: RgbImage, vae: ResolvedParams['vae'], onWarning?: (message: string) => void, onTile?: (done: number, total: number) => void): Promise<Float32Array> {
    const request: DecoderRequest = (req, what, transfer) => this.pool.request('vaeEncoder', req, what, transfer);
    return encodeLatent(
      img,
      (image, height, width) => encodeImageLatent({ image, height, width, opts: vae, encoderPath: this.spec.paths.vaeEncoder!, request, onWarning, onTile }),
      { latentChannels: this.info.latentChannels, scalingFactor: this.spec.vae.scalingFactor, shiftFactor: this.spec.vae.shiftFactor },
    );
  }

  /**
   * Runs a generation's model-calling stages: an abort stops every worker at once and ends as a 'cancelled' error;
   * a failed device (not retried) leaves no worker running, since their state is unknown; a device given up under
   * retry is warned of (`warn`) once the run has its result.
   */
  private async guarded<T>(signal: AbortSignal | undefined, cancelledMessage: string, warn: (m: string) => void, body: () => Promise<T>): Promise<T> {
    // Aborted before it started: nothing to stop.
    if (signal?.aborted) throw new AsgdError(cancelledMessage, { kind: 'cancelled' });
    const onAbort = () => void this.abortWorkers();
    signal?.addEventListener('abort', onAbort, { once: true });
    const pool = this.pool;
    const lostBefore = pool.losses.length;
    try {
      const result = await body();
      // With retry a failed device is given up and the run goes on without it: the image is the same, but a
      // device failing run after run should not go unnoticed.
      for (const l of pool.losses.slice(lostBefore)) warn(`Device ${l.device} failed and was given up; the other devices ran its work (retry): ${l.error}`);
      return result;
    } catch (err) {
      if (signal?.aborted) {
        await this.abortWorkers();
        throw new AsgdError(cancelledMessage, { kind: 'cancelled' });
      }
      if (err instanceof AsgdError && err.kind === 'device') await this.abortWorkers();
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** The prompt-encoding stage on the device that holds the text encoders; the conditioning goes to every device once. */
  private async encodeAndShare(plan: GenerationPlan, run: GenerateRunOptions, totalSteps: number, warn: (m: string) => void = () => undefined): Promise<void> {
    const p = plan.params;
    run.onProgress?.({ phase: 'text', stage: 1, step: 0, totalSteps, unitsDone: 0, unitsTotal: 0 });
    const input = { prompt: p.prompt, negativePrompt: p.negativePrompt, tokens: plan.prompt, negativeTokens: plan.negative };
    const encode = (which: 'textEncoder' | 'textEncoder2' | 'textEncoder3', rows: Int32Array[], layer: 'last' | 'penultimate') =>
      this.pool.request<'encodeText'>(which, { type: 'encodeText', which, rows, layer }, which === 'textEncoder' ? 'encoding the prompt' : `encoding the prompt (${which})`);
    const cond = await encodeFamilyPrompt(this.spec.family, input, {
      tokenizer2: this.tokenizer2, tokenizer3: this.tokenizer3, forceZerosForEmptyPrompt: this.spec.forceZerosForEmptyPrompt, jointDim: this.info.textWidth, onWarning: warn,
    }, encode);
    run.onConditioning?.(cond);
    await Promise.all(this.workers.filter((w) => w.alive).map((w) => w.request<'ok'>({ type: 'setConditioning', cond }, 'receiving the text embeddings')));
  }

  /** The denoise stage with the units evaluated on the devices; returns the result and the time spent in UNet calls. */
  private async denoiseStage(
    plan: GenerationPlan, scheduler: Scheduler, totalSteps: number, run: GenerateRunOptions, warn: (m: string) => void, init?: DenoiseInput['init'],
  ): Promise<{ sampled: DenoiseResult; unetMs: number }> {
    const p = plan.params;
    const signal = run.signal;
    let unetMs = 0;
    // Wall time with at least one call outstanding (stage-1 run-ahead keeps several outstanding at once).
    let inFlight = 0;
    let since = 0;
    const evaluate = async (units: UnetUnit[], hint?: EvaluateHint): Promise<UnitResult[]> => {
      run.onUnits?.(units);
      if (inFlight++ === 0) since = performance.now();
      // Handing the units over starts them on the devices at once: tell the watcher which devices are busy now.
      const pending = this.pool.evaluate(units, p.guidanceScale, signal, hint);
      (run as ActivityRun).onDispatched?.();
      try {
        return await pending;
      } finally {
        if (--inFlight === 0) unetMs += performance.now() - since;
      }
    };
    const model = { nativeWidth: this.info.nativeWidth, nativeHeight: this.info.nativeHeight, latentChannels: this.info.latentChannels, timeIds: this.spec.family === 'sdxl' };
    const sampled = await denoise(planDenoiseInput(plan, scheduler, model, {
      evaluate,
      noMapsReason: noMapsReason(this.info.attentionProbe),
      maskTokens: familyMaskTokens(this.spec.family, plan, this.tokenizer.maxLength, this.tokenizer3),
      signal,
      onWarning: warn,
      init,
      totalSteps,
      onProgress: run.onProgress,
      previewEvery: run.previewEvery,
      onPreviewLatent: run.onPreview
        ? (latent, h, w, step) => void this.decodeLatent(latent, h, w, { ...p.vae, tiling: 'off' }).then((img) => run.onPreview!(img, step), () => undefined)
        : undefined,
    }));
    return { sampled, unetMs };
  }

  /**
   * `run` with progress events that carry the devices' activity (GenerationProgress.devices): which devices run
   * a model call now, and the UNet calls each has done in this run. Its `onDispatched` repeats the last denoise
   * event right after a batch of units is handed to the devices, so a watcher sees them busy during a step (at
   * the step's own event, once its units are back, they are mostly idle again). No onProgress: `run` as it is.
   */
  private withDeviceActivity(run: GenerateRunOptions): ActivityRun {
    const report = run.onProgress;
    if (!report || (run as ActivityRun).onDispatched) return run;
    const base = this.pool.stats.map((s) => s.tasks);
    const devices = (): DeviceActivity[] => {
      const stats = this.pool.stats;
      return this.workers.map((w, i) => ({ id: w.label, busy: w.busy, calls: stats[i]!.tasks - base[i]!, ...(w.alive ? {} : { lost: true }) }));
    };
    let last: GenerationProgress | undefined;
    return {
      ...run,
      onProgress: (q) => {
        if (q.phase === 'denoise') last = q;
        report({ ...q, devices: devices() });
      },
      onDispatched: () => {
        if (last) report({ ...last, devices: devices() });
      },
    };
  }

  /** A run's warnings; the pipeline's own first, unless the run is the second stage of one that gave them already. */
  private warningsFor(run: GenerateRunOptions, secondStage = false): { warnings: string[]; warn: (message: string) => void } {
    return collectWarnings(run.onWarning, secondStage ? [] : this.deviceWarnings);
  }

  /** What the check stage needs of the model. */
  private facts(): ModelFacts {
    return loadedModelFacts(this.spec, this.info);
  }

  /** The decode stage of a generation or an upscale: the denoised latent to pixels, reporting tiles as progress. */
  private decodeStage(plan: GenerationPlan, steps: number, sampled: DenoiseResult, run: GenerateRunOptions, warn: (m: string) => void): Promise<RgbImage> {
    const units = sampled.unitEvaluations;
    return this.decodeLatent(sampled.latent, plan.latentHeight, plan.latentWidth, plan.params.vae, (done, total) =>
      run.onProgress?.({ phase: 'decode', stage: finalStage(plan.method), step: steps, totalSteps: steps, unitsDone: units, unitsTotal: units, tilesDone: done, tilesTotal: total }),
    warn);
  }

  /**
   * VAE decoding of a latent [C, h, w] (as `generate` returns it) on the device that holds the decoder, tiled when the
   * latent exceeds the tile (or when asked); unset VAE options take their defaults.
   */
  async decodeLatent(
    latent: Float32Array, h: number, w: number, vae: Partial<VaeDecodeOptions> = {}, onTile?: (done: number, total: number) => void,
    onWarning?: (message: string) => void,
  ): Promise<RgbImage> {
    const opts = resolveVaeOptions(vae);
    const c = this.info.latentChannels;
    checkInputLength('latent', latent, c, h, w);
    const scaled = decoderInput(latent, this.spec.vae);
    const request: DecoderRequest = (req, what, transfer) => this.pool.request('vaeDecoder', req, what, transfer);
    // One decode at a time: the tiled path and the whole-image one release each other's sessions on the device.
    const result = this.decodes.then(() => decodeLatentImage({ scaled, channels: c, height: h, width: w, opts, decoderPath: this.spec.paths.vaeDecoder, request, onTile, onWarning }));
    this.decodes = result.catch(() => undefined);
    return result;
  }

  private async abortWorkers(): Promise<void> {
    // Terminating stops an in-flight model call at once; the next run starts the workers again (ready()).
    this.stopped = true;
    await Promise.all(this.workers.map((w) => w.terminate()));
  }

  /** The model as the metadata records it: its folder's name and family, and the separate VAE's folder name (a re-run needs it too). */
  private modelRecord(): GenerationMetadata['model'] {
    return { name: path.basename(this.spec.dir), family: this.spec.family, ...(this.spec.vaeDir ? { vae: path.basename(this.spec.vaeDir) } : {}) };
  }

  private assertOpen(): void {
    if (this.closed) throw new AsgdError('The pipeline is closed', { kind: 'invalid-argument', parameter: 'pipeline', hint: 'Load it again' });
  }

  /**
   * Before a run's first model call: a signal aborted already cancels it without touching the devices; workers
   * ended by an earlier cancel or device failure are started again (the model loads again, as at loadPipeline).
   */
  private async ready(signal: AbortSignal | undefined, cancelledMessage: string): Promise<void> {
    this.assertOpen();
    const cancelled = () => new AsgdError(cancelledMessage, { kind: 'cancelled' });
    if (signal?.aborted) throw cancelled();
    if (!this.stopped) return;
    const started = await this.restart(signal, cancelled);
    if (this.closed) {
      // Closed while the workers started: end them too.
      await Promise.all(started.workers.map((w) => w.terminate()));
      this.assertOpen();
    }
    this.workers = started.workers;
    this.pool = started.pool;
    this.stopped = false;
  }

  /** `await using pipe = await loadPipeline(...)` closes the pipeline when the scope ends. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed || this.stopped) {
      this.closed = true;
      await Promise.all(this.workers.map((w) => w.terminate()));
      return;
    }
    this.closed = true;
    await Promise.all(this.workers.map((w) => w.request<'ok'>({ type: 'close' }, 'closing').catch(() => undefined)));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}



/** loadPipeline's arguments, checked as the registry describes the options (JavaScript callers pass anything). */
function checkLoadArguments(dir: unknown, options: unknown): PipelineOptions {
  if (typeof dir !== 'string' || dir === '') throw invalidArgument('dir', 'the path of a model folder, as a string', dir, 'Pass the export folder, e.g. loadPipeline("./sd15-onnx")');
  if (options === undefined) return {};
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw invalidArgument('options', 'an object of PipelineOptions, or nothing', options);
  const o = options as Record<string, unknown>;
  refuseUnknownKeys(o, [...PIPELINE_OPTIONS.map((s) => s.key), 'attentionProbe', 'signal'], 'a pipeline option', 'Check the spelling; generation settings go to generate()');
  for (const spec of PIPELINE_OPTIONS) {
    if (spec.key !== 'devices' && o[spec.key] !== undefined) checkOption(spec, o[spec.key]);
  }
  const devices = o['devices'];
  const isSpec = (d: unknown) => d !== null && typeof d === 'object' && typeof (d as DeviceSpec).provider === 'string' && typeof (d as DeviceSpec).label === 'string';
  if (devices !== undefined && typeof devices !== 'string' && !(Array.isArray(devices) && devices.length > 0 && devices.every(isSpec))) {
    throw invalidArgument('devices', 'a device list such as "cpu", "cpu,cpu" or "webgpu:0" (or parseDevices\' result)', devices);
  }
  if (o['attentionProbe'] !== undefined && typeof o['attentionProbe'] !== 'boolean') throw invalidArgument('attentionProbe', 'true or false', o['attentionProbe']);
  checkSignal(o['signal'], 'signal');
  return o as PipelineOptions;
}

/** A run's options (the second argument of generate / upscale): callbacks are functions, the signal a signal. */
function checkRunOptions(run: unknown): void {
  if (run === null || typeof run !== 'object' || Array.isArray(run)) throw invalidArgument('run', 'an object of run options (signal, onProgress, ...), or nothing', run);
  const o = run as Record<string, unknown>;
  checkSignal(o['signal'], 'signal');
  for (const key of ['onProgress', 'onWarning', 'onPreview', 'onConditioning', 'onUnits']) {
    if (o[key] !== undefined && typeof o[key] !== 'function') throw invalidArgument(key, 'a function, or nothing', o[key]);
  }
  const every = o['previewEvery'];
  if (every !== undefined && !(typeof every === 'number' && Number.isInteger(every) && every >= 1)) throw invalidArgument('previewEvery', 'a whole number of steps, at least 1', every);
}

/** An AbortSignal, or nothing. */
function checkSignal(signal: unknown, parameter: string): void {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgument(parameter, 'an AbortSignal (e.g. new AbortController().signal), or nothing', signal);
}

/** Loads a model folder onto the devices: reads the folder, starts one worker per device, opens the sessions. */
export async function loadPipeline(dir: string, options?: PipelineOptions): Promise<Pipeline> {
  return Pipeline.load(dir, options);
}

/**
 * loadPipeline with test hooks (fault and timing injection).
 * @internal
 */
export async function openPipeline(dir: string, options: PipelineOptions, hooks: PipelineTestHooks): Promise<Pipeline> {
  return Pipeline.load(dir, options, hooks);
}
