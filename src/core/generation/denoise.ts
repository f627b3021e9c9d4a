/**
 * The denoise stage: a method fuses one model output for the whole latent per step, the scheduler steps it.
 * Initial noise is torch-compatible: randn([N, C, p_h, p_w], seed) relocated into the HR latent, which at N = 1
 * is exactly diffusers' starting latent for the same seed.
 */
import { throwIfAborted } from '../errors.ts';
import { createMethod } from '../methods/index.ts';
import type { MethodOptions } from '../methods/options.ts';
import { patchesToLatent } from '../methods/polyphase.ts';
import type { EvaluateHint, MethodContext, MethodPreview, ProgressEvent, UnetUnit, UnitResult } from '../methods/types.ts';
import type { ResolvedParams } from '../params.ts';
import type { AbortSignalLike } from '../platform.ts';
import { createRandom } from '../random/index.ts';
import { nonFinite } from '../tensor.ts';
import { applySkipResidual, noiseTo, skipWeight, type Img2ImgInit } from './img2img.ts';
import { PartStepper } from '../schedulers/part-stepper.ts';
import type { Scheduler, SchedulerState } from '../schedulers/types.ts';
import type { GenerationPlan } from './check.ts';
import type { GenerationProgress } from './progress.ts';

export interface DenoiseInput {
  params: ResolvedParams;
  scheduler: Scheduler;
  latentHeight: number;
  latentWidth: number;
  nativeHeight: number;
  nativeWidth: number;
  channels: number;
  latentMultiple: number;
  timeIds?: boolean;
  evaluate(units: UnetUnit[], hint?: EvaluateHint): Promise<UnitResult[]>;
  maskTokens: readonly number[];
  /** Why the model gives no attention maps, when known (MethodContext.noMapsReason). */
  noMapsReason?: string;
  signal?: AbortSignalLike;
  onWarning?(message: string): void;
  onProgress?(event: ProgressEvent, unitsTotal: number, unitsDone: number): void;
  previewEvery: number;
  onPreviewLatent?(latent: Float32Array, height: number, width: number, step: number): void;
  /**
   * Image to image: start from this encoded input noised to the scheduler's first step (give a scheduler of the
   * remaining steps, img2img.ts schedulerFrom) instead of from pure noise.
   */
  init?: Img2ImgInit;
  /**
   * Test instrument: never let stage-1 patches or stage-2 windows run ahead (every step a barrier). The result is the
   * same bit for bit; only the order units are handed over differs.
   */
  lockstep?: boolean;
  /** Test instrument: sees every step's fused output and latent. */
  onStep?(step: number, fused: Float32Array, latent: Float32Array, state: SchedulerState): void;
}

/** What a pipeline knows of its model that the denoise stage needs (sizes in pixels). */
export interface DenoiseModel {
  nativeWidth: number;
  nativeHeight: number;
  latentChannels: number;
  /** SDXL's micro-conditioning time ids go with every unit. */
  timeIds: boolean;
}

/** What a pipeline adds to a checked plan for the denoise stage. */
export interface DenoiseParts {
  evaluate(units: UnetUnit[], hint?: EvaluateHint): Promise<UnitResult[]>;
  /** Mask columns other than the plan's (SD3 adds the T5 prompt pieces). */
  maskTokens?: readonly number[];
  /** Why the model gives no attention maps: the attention probe's reason, when it is unavailable. */
  noMapsReason?: string;
  signal?: AbortSignalLike;
  onWarning(message: string): void;
  /** Steps the progress events count to (an upscale's remaining steps, or the plan's steps). */
  totalSteps: number;
  onProgress?(progress: GenerationProgress): void;
  /** Decode a preview latent every `previewEvery` steps (default 5); absent: no previews. */
  onPreviewLatent?(latent: Float32Array, height: number, width: number, step: number): void;
  previewEvery?: number;
  init?: Img2ImgInit;
}

/**
 * The denoise stage's input for a checked plan, as the Node and browser pipelines build it: the plan's sizes, the
 * model's native size in latent pixels, and progress reported as 'denoise' events.
 */
export function planDenoiseInput(plan: GenerationPlan, scheduler: Scheduler, model: DenoiseModel, parts: DenoiseParts): DenoiseInput {
  return {
    params: plan.params,
    scheduler,
    latentHeight: plan.latentHeight,
    latentWidth: plan.latentWidth,
    nativeHeight: model.nativeHeight / 8,
    nativeWidth: model.nativeWidth / 8,
    channels: model.latentChannels,
    latentMultiple: plan.latentMultiple,
    timeIds: model.timeIds,
    evaluate: parts.evaluate,
    maskTokens: parts.maskTokens ?? plan.maskTokens,
    ...(parts.noMapsReason !== undefined ? { noMapsReason: parts.noMapsReason } : {}),
    signal: parts.signal,
    onWarning: parts.onWarning,
    ...(parts.init ? { init: parts.init } : {}),
    onProgress: (e, unitsTotal, unitsDone) =>
      // The method counts steps from 0; a progress event names the step it belongs to from 1 ("step 1/20").
      parts.onProgress?.({ phase: 'denoise', stage: e.stage, step: e.step + 1, totalSteps: parts.totalSteps, unitsDone, unitsTotal }),
    previewEvery: parts.onPreviewLatent ? parts.previewEvery ?? 5 : 0,
    onPreviewLatent: parts.onPreviewLatent,
  };
}

export interface DenoiseResult {
  latent: Float32Array;
  unitEvaluations: number;
  /** The method's options as resolved (defaults filled in), for the metadata. */
  methodOptions: MethodOptions;
}

export async function denoise(input: DenoiseInput): Promise<DenoiseResult> {
  const { params: p, scheduler } = input;
  const method = createMethod(p.method, p.methodOptions, {
    height: input.latentHeight,
    width: input.latentWidth,
    nativeHeight: input.nativeHeight,
    nativeWidth: input.nativeWidth,
    latentMultiple: input.latentMultiple,
    channels: input.channels,
    numSteps: scheduler.numSteps,
    timeIds: input.timeIds,
    originalSize: p.originalSize,
  });
  const geo = method.plan.geometry;
  // As diffusers does, ancestral noise continues the same torch generator after the initial latent.
  const noiseGen = createRandom(p.seed, 'noise');
  const noise = noiseGen.randn([geo.count, geo.channels, geo.patchHeight, geo.patchWidth]);
  const sigma0 = scheduler.initNoiseSigma;
  const init = input.init;
  if (sigma0 !== 1 && !init) for (let i = 0; i < noise.length; i++) noise[i] = noise[i]! * sigma0;
  let latent = patchesToLatent(noise, geo);
  let startNoise: Float32Array | undefined;
  if (init) {
    // The noise as drawn (unit variance), in the latent's layout, noised to the first step's level.
    startNoise = latent;
    const { alpha, sigma } = scheduler.noiseLevel(0);
    latent = noiseTo(init.latent, startNoise, alpha, sigma);
  }
  let state = scheduler.initialState();
  // Part-of-the-latent steps (stage-1 run-ahead, the stage-2 dataflow): where the step treats each position by itself
  // (stateless: the scheduler offers stepPositions; with a history per position, or noise drawn for the whole latent
  // each step: `elementwise`, stepped in parts by PartStepper) and nothing changes the latent between steps (an
  // upscale's skip residual does).
  const stepPositions = scheduler.stepPositions?.bind(scheduler);
  const partSteps = !init?.skipResidual && !input.lockstep;
  const parts = partSteps && stepPositions === undefined && scheduler.elementwise ? new PartStepper(scheduler, latent.length, state, noiseGen) : undefined;
  const advance = !partSteps
    ? undefined
    : stepPositions !== undefined
      ? (step: number, output: Float32Array, sample: Float32Array, into = new Float32Array(sample.length), at?: Int32Array) => {
          stepPositions(step, output, sample, into, at ?? null);
          return into;
        }
      : parts
        ? (step: number, output: Float32Array, sample: Float32Array, into = new Float32Array(sample.length), at?: Int32Array, positions?: Int32Array) => {
            parts.step(step, output, sample, into, at ?? null, positions ?? null);
            return into;
          }
        : undefined;
  const eulerCoefficients = scheduler.eulerCoefficients;
  const ctx: MethodContext = {
    ...(advance ? { advance } : {}),
    ...(advance && eulerCoefficients ? { eulerStep: (k: number) => eulerCoefficients.call(scheduler, k) } : {}),
    ...(parts && scheduler.statefulCoefficients ? { statefulStep: (k: number) => parts.statefulStep(k) } : {}),
    scheduler,
    evaluate: input.evaluate,
    structureTarget: init?.structureTarget,
    random: { permutation: createRandom(p.seed, 'permutation'), jitter: createRandom(p.seed, 'jitter') },
    maskTokens: input.maskTokens,
    ...(input.noMapsReason !== undefined ? { noMapsReason: input.noMapsReason } : {}),
    signal: input.signal,
    onProgress: (e: ProgressEvent) => input.onProgress?.(e, method.unitsTotal, e.unitsDone),
    onWarning: input.onWarning,
    previewEvery: input.previewEvery,
    onPreview: input.onPreviewLatent
      ? (pv: MethodPreview) => {
          const t = pv.denoised ?? pv.latent;
          input.onPreviewLatent!(t.data, t.shape[2]!, t.shape[3]!, pv.step);
        }
      : undefined,
  };
  for (let k = 0; k < scheduler.numSteps; k++) {
    throwIfAborted(input.signal);
    if (init?.skipResidual && k > 0) {
      const { alpha, sigma } = scheduler.noiseLevel(k);
      applySkipResidual(latent, init.latent, startNoise!, alpha, sigma, skipWeight(scheduler.timesteps[k]!));
    }
    const fused = await method.predict(latent, k, ctx);
    // Where the method stepped the whole latent already (with advance), take that latent (and a history kept in parts).
    const stepped = advance ? method.steppedLatent?.(k) : undefined;
    const r = stepped
      ? { prevSample: stepped, state: parts ? parts.stateAfter(k) : { stepIndex: state.stepIndex + 1, history: [] } }
      : parts
        ? parts.stepAll(state, fused, latent)
        : scheduler.step(state, fused, latent, noiseGen);
    parts?.release(k);
    input.onStep?.(k, fused, r.prevSample, r.state);
    latent = r.prevSample;
    state = r.state;
  }
  const broken = nonFinite(latent);
  if (broken > 0) input.onWarning?.(nonFiniteLatentWarning(broken, latent.length));
  return { latent, unitEvaluations: method.unitsTotal, methodOptions: method.options };
}

/** The denoised latent holds NaN or infinity: the image decoded from it is wrong, and what gives that. */
export function nonFiniteLatentWarning(count: number, total: number): string {
  return `The denoised latent holds ${count} of ${total} values that are NaN or infinite, so the image is wrong: the UNet's ` +
    'activations overflowed (a float16 UNet: run a float32 export, or leave out --unet-precision float16), or the export is broken';
}

/** Why a pipeline's model gives no attention maps, for the mask's warning: the probe's reason, or that it was turned off. */
export function noMapsReason(probe: { available: boolean; reason?: string }): string | undefined {
  if (probe.available) return undefined;
  if (probe.reason === undefined || probe.reason === 'disabled') return 'the attention-probe graph was turned off (attentionProbe: false), so the model gives no cross-attention maps';
  return `no cross-attention maps: ${probe.reason}`;
}
