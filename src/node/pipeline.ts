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
import { createRandom } from '../core/random/index.ts';
import { createScheduler } from '../core/schedulers/index.ts';
import { webgpuAttentionNote } from '../core/webgpu-attention-note.ts';
import { fusionChangesNothing } from '../core/fusion-note.ts';
import { ClipTokenizer } from '../core/text/clip-tokenizer.ts';
import { checkGeneration, loadedModelFacts, type GenerationPlan, type ModelFacts } from '../core/generation/check.ts';
import { denoise, noMapsReason, planDenoiseInput, type DenoiseInput, type DenoiseResult } from '../core/generation/denoise.ts';
import type { Scheduler } from '../core/schedulers/types.ts';
import { encodePrompt } from '../core/generation/prompt.ts';
import { encodeSd3Prompt, sd3MaskTokens } from '../core/generation/sd3-prompt.ts';
import { T5Tokenizer, T5_MAX_LENGTH } from '../core/text/t5-tokenizer.ts';
import { TOOL_VERSION } from './version.ts';
import { decodeLatentImage, encodeImageLatent, type DecoderRequest } from './vae-decode.ts';
import { DEFAULT_NATIVE_SIZE, denoiserConfigFile, readModelFolder, withVaeFolder, type ModelFamily, type ModelSpec } from './model/folder.ts';
import { checkVaeDecoder } from './model/vae-contract.ts';
import { checkSd3Components } from './model/sd3-contract.ts';
import { DeviceWorker, liveWebgpuThreads } from './runner/device-worker.ts';
import { autoDevices, autoDevicesNote, checkFlashAttention, checkProvidersAvailable, isAutoDevices, parseDevices, threadsWarning, workerIsolations, type DeviceSpec, type WorkerIsolation } from './runner/devices.ts';
import { attentionFormFor, NO_WEBGPU_FORM, type AttentionForm, type FlashCheck } from '../graph/attention-check.ts';
import { DevicePool } from './runner/pool.ts';
import type { ComponentName, FailMode, WorkerResult } from './runner/protocol.ts';
import { resolveSplitMode, type SplitMode } from '../core/dispatch/tasks.ts';
import type { TextConditioning } from '../core/conditioning.ts';
import type { IoInfo } from '../onnx/io.ts';
import type { UnetFloat16Info } from '../core/unet-precision.ts';

export type { GenerateUpscaleSettings };

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
export interface PipelineTestHooks {
  /** Make device `device` fail after `after` UNet calls, by throwing (default) or by ending its thread. */
  injectFailure?: { device: number; after: number; mode?: FailMode };
  /** Hold each UNet result back by a random delay (seeded) of up to maxMs, shuffling completion order. */
  completionJitter?: { seed: number; maxMs: number };
  /** Receives a function that asks every device worker for its description (the device-conditioning counts). */
  inspectWorkers?: (ask: () => Promise<Extract<WorkerResult, { type: 'describe' }>[]>) => void;
}

export type { DeviceActivity, GenerationCallbacks, GenerationPhase, GenerationProgress, GenerationTimings } from '../core/generation/progress.ts';
import { finalStage, type DeviceActivity, type GenerationCallbacks, type GenerationProgress, type GenerationTimings } from '../core/generation/progress.ts';

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

export interface ModelInfo {
  dir: string;
  name: string;
  family: ModelFamily;
  layout: string;
  className: string;
  nativeWidth: number;
  nativeHeight: number;
  latentChannels: number;
  scheduler: { className: string; config: Record<string, unknown> };
  vae: { scalingFactor: number; forceUpcast: boolean; shiftFactor?: number };
  /** The VAE encoder upscaling needs (opened when an upscale first runs), relative to `dir`; absent when there is none. */
  vaeEncoder?: string;
  /** Width of the denoiser's encoder_hidden_states (SD3: joint_attention_dim). */
  textWidth?: number;
  /** SD3: the transformer's patch size, and which text encoders the folder has. */
  patchSize?: number;
  textEncoders?: string[];
  components: Partial<Record<ComponentName, { file: string; inputs: IoInfo[]; outputs: IoInfo[] }>>;
  attentionProbe: { available: boolean; layers: string[]; reason?: string };
  /** Whether the UNet runs with its attention fused (PipelineOptions.fuseAttention), how many layers, or why not. */
  attentionFusion: {
    applied: boolean;
    layers: number;
    reason?: string;
    /**
     * How the fused attention is written, when applied: 'padded' (q and k padded per head, which keeps ONNX Runtime's
     * WebGPU provider off its flash-attention kernel) or 'flash' (as they are: that kernel, where a check on this
     * machine's WebGPU adapter found it right); `formReason` says why.
     */
    form?: 'padded' | 'flash';
    formReason?: string;
    /** GEGLUs run as one BiasSplitGelu node each: only where every device is a WebGPU one (no CPU kernel for it). */
    biasSplitGelus?: number;
    /** Group norms (with their SiLU) run as one GroupNorm node each: only where every device is a WebGPU one. */
    groupNorms?: number;
  };
  /**
   * Present when PipelineOptions.unetPrecision is 'float16': whether the UNet was converted (counts of what changed)
   * or why not (an export in float16 already needs nothing).
   */
  unetFloat16?: UnetFloat16Info;
  /** Set when the UNet export fixed its spatial input size (static-shape exports). */
  staticLatentSize?: { height: number; width: number };
  notes: string[];
}

/** `pipe.upscale`: the source image, the upscale settings, and generate's settings (the prompt is optional). */
export interface UpscaleParams extends Omit<GenerateParams, 'prompt' | 'width' | 'height'>, UpscaleSettings {
  /** A file path, the file's bytes (PNG, JPEG, WebP), or decoded RGB pixels. */
  image: ImageInput;
  /** Default: the prompt embedded in the input (this project's metadata or another tool's `parameters`), else empty. */
  prompt?: string;
}


function contractError(message: string, parameter: string, expected: string, received: string): AsgdError {
  return new AsgdError(message, { kind: 'model', parameter, expected, received, hint: 'The model does not match the Stable Diffusion ONNX contract; re-export it with optimum-cli' });
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
    const cond =
      this.spec.family === 'sd3'
        ? await encodeSd3Prompt(
            input,
            {
              tokenizer2: this.tokenizer2!,
              t5: this.tokenizer3 ? { tokenizer: this.tokenizer3, maxLength: T5_MAX_LENGTH } : undefined,
              jointDim: this.info.textWidth!,
              onWarning: warn,
            },
            encode,
          )
        : await encodePrompt(input, { tokenizer2: this.tokenizer2, forceZerosForEmptyPrompt: this.spec.forceZerosForEmptyPrompt }, encode);
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
      maskTokens:
        this.spec.family === 'sd3'
          ? sd3MaskTokens(plan.maskTokens, this.tokenizer.maxLength, this.tokenizer3?.encode(p.prompt, T5_MAX_LENGTH).eosIndex, p.maskWords !== undefined)
          : undefined,
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

  /**
   * A run's warnings, collected and passed on as they come; the pipeline's own (deviceWarnings) first, unless the
   * run is the second stage of one that gave them already.
   */
  private warningsFor(run: GenerateRunOptions, secondStage = false): { warnings: string[]; warn: (message: string) => void } {
    const warnings: string[] = [];
    const warn = (m: string) => {
      warnings.push(m);
      run.onWarning?.(m);
    };
    if (!secondStage) this.deviceWarnings.forEach(warn);
    return { warnings, warn };
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
    // diffusers: latent / scaling_factor + shift_factor (the shift is 0 except for SD3's VAE).
    const sf = this.spec.vae.scalingFactor;
    const shift = this.spec.vae.shiftFactor ?? 0;
    const scaled = new Float32Array(latent.length);
    if (shift === 0) {
      const inv = 1 / sf;
      for (let i = 0; i < latent.length; i++) scaled[i] = latent[i]! * inv;
    } else {
      for (let i = 0; i < latent.length; i++) scaled[i] = latent[i]! / sf + shift;
    }
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

/**
 * How the fused attention is written for these devices: the flash form where a WebGPU device is present and the
 * check of ONNX Runtime's flash-attention kernel on its adapter passes (`check`: runner/devices.ts, a process of its
 * own, once per process); else padded, as on every other provider (the CPU provider computes either form right).
 */
export async function attentionForm(devices: readonly DeviceSpec[], check: () => Promise<FlashCheck>): Promise<AttentionForm> {
  return devices.some((d) => d.provider === 'webgpu') ? attentionFormFor(await check()) : NO_WEBGPU_FORM;
}

/**
 * The fused-attention UNet and probe (fused-attention.ts) in `form` when asked for (a form given); the plain files
 * otherwise, or when the model has no attention the fusion recognises (the reason is reported in ModelInfo).
 * `webgpuOnly`: every device is a WebGPU one, so the GEGLUs and group norms are fused too (BiasSplitGelu and GroupNorm
 * have no CPU kernel).
 */
export async function fuseAttentionFiles(
  unet: string, probe: { file: string } | { reason: string }, form: (AttentionForm & { webgpuOnly: boolean }) | undefined,
): Promise<{ unet?: string; probe?: string; probeServesUnet?: boolean; info: ModelInfo['attentionFusion'] }> {
  if (!form) return { info: { applied: false, layers: 0, reason: 'fuseAttention is off; --fuse-attention turns it on' } };
  const { prepareFusedAttention } = await import('./fused-attention.ts');
  const { probeLoadOptions } = await import('./probe.ts');
  const { webgpuOnly, ...shape } = form;
  const how = { flashForm: form.form === 'flash', biasSplitGelu: webgpuOnly };
  const main = await prepareFusedAttention(unet, how);
  if ('reason' in main) return { info: { applied: false, layers: 0, reason: main.reason } };
  const fusedProbe = 'file' in probe ? await prepareFusedAttention(probe.file, { weightsFolder: probeLoadOptions(probe.file).externalDataFolder, ...how }) : undefined;
  const info = {
    applied: true, layers: main.fused, ...shape,
    ...(main.biasSplitGelus ? { biasSplitGelus: main.biasSplitGelus } : {}), ...(main.groupNorms ? { groupNorms: main.groupNorms } : {}),
  };
  if (!fusedProbe || !('file' in fusedProbe)) return { unet: main.file, info };
  // Every attention fused in both, the probed layers' too (attention-fusion.ts): the probe's noise prediction is then
  // the fused UNet's. An ONNX Attention node whose probabilities the probe reads stays unfused: two graphs then.
  const same = fusedProbe.fused === main.fused && fusedProbe.groupNorms === main.groupNorms && fusedProbe.biasSplitGelus === main.biasSplitGelus && fusedProbe.skipLayerNorms === main.skipLayerNorms;
  return { unet: main.file, probe: fusedProbe.file, probeServesUnet: same, info };
}

/**
 * On WebGPU devices: a warning when the UNet as loaded has ONNX Attention nodes, which ONNX Runtime runs on the CPU
 * there (fused-attention.ts counts them, once per file).
 */
async function attentionOnCpuWarnings(unetFile: string, devices: DeviceSpec[]): Promise<string[]> {
  if (!devices.some((d) => d.provider === 'webgpu')) return [];
  const { countOnnxAttentionIn } = await import('./fused-attention.ts');
  const n = await countOnnxAttentionIn(unetFile);
  return typeof n === 'number' && n > 0 ? [webgpuAttentionNote(n)] : [];
}

function describeModel(
  spec: ModelSpec,
  components: Partial<Record<ComponentName, { inputs: IoInfo[]; outputs: IoInfo[] }>>,
  probe: { file: string; layers: string[] } | { reason: string },
  attentionFusion: ModelInfo['attentionFusion'],
  deviceNotes: string[],
): ModelInfo {
  const unet = components.unet;
  const te = components.textEncoder;
  if (!unet || !te) throw new Error('describeModel: components missing');
  const sd3 = spec.family === 'sd3' ? checkSd3Components(spec, components) : undefined;
  const sample = unet.inputs.find((i) => i.name === 'sample' || i.name === 'hidden_states') ?? unet.inputs[0]!;
  const channels = typeof sample.shape[1] === 'number' ? sample.shape[1] : 4;
  if (!sd3) checkVaeDecoder(spec, components.vaeDecoder, channels, 'UNet');
  const hidden = unet.inputs.find((i) => i.name === 'encoder_hidden_states');
  const width = (c: { outputs: IoInfo[] } | undefined) => (c?.outputs.find((o) => o.name === 'last_hidden_state') ?? c?.outputs[0])?.shape[2];
  const unetDim = hidden?.shape[2];
  // SDXL concatenates both encoders' hidden states on the feature axis.
  const w1 = width(te);
  const w2 = spec.family === 'sdxl' ? width(components.textEncoder2) : 0;
  const teDim = typeof w1 === 'number' && typeof w2 === 'number' ? w1 + w2 : undefined;
  if (!sd3 && typeof unetDim === 'number' && teDim !== undefined && unetDim !== teDim) {
    const what = spec.family === 'sdxl' ? 'the two text encoders\' widths added' : 'the text encoder\'s';
    throw contractError('The text encoder and the UNet disagree on the text embedding width', 'unet', `encoder_hidden_states width ${teDim} (${what})`, String(unetDim));
  }
  const timeIds = unet.inputs.find((i) => i.name === 'time_ids');
  if (timeIds && timeIds.shape[1] === 5) {
    throw new AsgdError('SDXL refiner exports are not supported', { kind: 'model', parameter: 'unet', expected: 'time_ids with 6 values (SDXL base)', received: '5 values (refiner: aesthetic score)', hint: 'Use an SDXL base export' });
  }
  const staticH = sample.shape[2];
  const fallback = DEFAULT_NATIVE_SIZE[spec.family];
  let native = spec.unetSampleSize ? spec.unetSampleSize * 8 : typeof staticH === 'number' && staticH > 0 ? staticH * 8 : fallback;
  if (!spec.unetSampleSize && typeof staticH !== 'number') spec.notes.push(`no ${denoiserConfigFile(spec.family)} sample_size: assuming a native size of ${fallback} px`);
  native = Math.max(64, native);
  const files: Record<string, string> = {
    textEncoder: spec.paths.textEncoder, unet: spec.paths.unet, vaeDecoder: spec.paths.vaeDecoder,
    ...(spec.paths.textEncoder2 ? { textEncoder2: spec.paths.textEncoder2 } : {}),
    ...(spec.paths.textEncoder3 ? { textEncoder3: spec.paths.textEncoder3 } : {}),
  };
  const out: ModelInfo['components'] = {};
  for (const [k, v] of Object.entries(components) as [ComponentName, { inputs: IoInfo[]; outputs: IoInfo[] }][]) {
    if (k === 'unetProbe') continue;
    out[k] = { file: path.relative(spec.dir, files[k] ?? ''), ...v };
  }
  const sc = spec.schedulerConfig as Record<string, unknown>;
  return {
    dir: spec.dir,
    name: path.basename(spec.dir),
    family: spec.family,
    layout: spec.layout,
    className: spec.className,
    nativeWidth: native,
    nativeHeight: native,
    latentChannels: channels,
    scheduler: { className: typeof sc['_class_name'] === 'string' ? (sc['_class_name'] as string) : 'EulerDiscreteScheduler', config: sc },
    vae: spec.vae,
    ...(spec.paths.vaeEncoder ? { vaeEncoder: path.relative(spec.dir, spec.paths.vaeEncoder) } : {}),
    ...(sd3
      ? {
          textWidth: sd3.textWidth,
          patchSize: spec.patchSize ?? 2,
          textEncoders: ['text_encoder (CLIP-L)', 'text_encoder_2 (CLIP-G)', ...(spec.paths.textEncoder3 ? ['text_encoder_3 (T5)'] : [])],
        }
      : typeof unetDim === 'number' ? { textWidth: unetDim } : {}),
    components: out,
    staticLatentSize: typeof staticH === 'number' && typeof sample.shape[3] === 'number' ? { height: staticH, width: sample.shape[3] } : undefined,
    attentionProbe: 'file' in probe ? { available: true, layers: probe.layers } : { available: false, layers: [], reason: probe.reason },
    attentionFusion,
    notes: [...spec.notes, ...deviceNotes],
  };
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

/** The model files the device workers load. */
interface DeviceFiles {
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

interface StartedDevices {
  workers: DeviceWorker[];
  pool: DevicePool;
  desc: Extract<WorkerResult, { type: 'describe' }>;
}

/**
 * Starts a worker per device and loads the model into them (the UNet everywhere; the text encoders, VAE decoder
 * and probe on the first), then the pool over them. `split`: the CFG split mode decided before (a restart), else
 * decided now. An abort of `signal` ends the workers and rejects with `cancelled()`; any failure ends them too.
 */
async function startDevices(
  files: DeviceFiles, devices: DeviceSpec[], options: PipelineOptions, hooks: PipelineTestHooks,
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
