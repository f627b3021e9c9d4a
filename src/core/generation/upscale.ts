/**
 * An upscale's steps that do not depend on where the models run, shared by Node's pipeline and the browser's: the
 * settings checked against the source (the output size, the scheduler that can start mid-schedule, the generation at
 * the grid-rounded size), the start of the denoising from the source (resized with the core's Lanczos3, padded to the
 * latent grid, VAE-encoded; asg's structure sources) and the record the metadata keeps. Portable.
 */
import { AsgdError } from '../errors.ts';
import { padEdgesRgb, rgb8ToChw, type RgbImage } from '../image.ts';
import type { GenerationMetadata, UpscaleRecord } from '../metadata.ts';
import type { GenerateParams } from '../params.ts';
import type { GenerationTimings } from './progress.ts';
import { resizeLanczos3 } from '../resize.ts';
import type { ClipTokenizer } from '../text/clip-tokenizer.ts';
import { checkGeneration, type GenerationPlan, type ModelFacts } from './check.ts';
import { checkUpscale, img2imgScheduler, polyphaseTargets, upscaleMethodOptions, type Img2ImgInit, type UpscalePlan, type UpscaleSettings } from './img2img.ts';
import { UPSCALE_OPTIONS } from '../options/registry.ts';
import { refuseUnknownKeys } from '../options/spec.ts';

/** What the source image holds besides its pixels: the prompts of its embedded metadata. */
export interface EmbeddedPrompts {
  prompt?: string;
  negativePrompt?: string;
}

/** An upscale checked: the output plan, the generation at the work size, and what it warns of (in order). */
export interface UpscaleCheck {
  up: UpscalePlan;
  plan: GenerationPlan;
  warnings: string[];
}

/** The error of a model folder without the VAE encoder an upscale needs. */
export function noVaeEncoderError(hint: string): AsgdError {
  return new AsgdError('This model has no VAE encoder, which upscaling needs', {
    kind: 'model', parameter: 'vae_encoder', expected: 'vae_encoder/model.onnx', received: 'none', hint,
  });
}

/**
 * Every check of an upscale before any model call: `settings` against the source's size, the prompt (given, else the
 * source's embedded one, else empty with a warning), the scheduler (img2imgScheduler), the method options with the
 * upscale defaults, and the generation at the output size rounded up to the latent grid.
 */
export function checkUpscaleRun(
  source: { width: number; height: number; embedded?: EmbeddedPrompts },
  params: Omit<GenerateParams, 'prompt' | 'width' | 'height'> & UpscaleSettings & { prompt?: string },
  model: { facts: ModelFacts; tokenizer: ClipTokenizer; schedulerClass: string },
): UpscaleCheck {
  const { prompt: givenPrompt, scale, width, height, strength, structureSource, maxPixels, ...rest } = params;
  const up = checkUpscale({ width: source.width, height: source.height }, { scale, width, height, strength, structureSource, maxPixels });
  const warnings: string[] = [];
  const prompt = givenPrompt ?? source.embedded?.prompt;
  const negativePrompt = rest.negativePrompt ?? (givenPrompt === undefined ? source.embedded?.negativePrompt : undefined);
  if (prompt === undefined) warnings.push('No prompt given and none embedded in the input: upscaling with an empty prompt');
  const chosen = img2imgScheduler(rest.scheduler, model.schedulerClass);
  const methodOptions = upscaleMethodOptions(rest.method, rest.methodOptions);
  const plan = checkGeneration(
    { ...rest, methodOptions, scheduler: chosen.scheduler, prompt: prompt ?? '', negativePrompt, width: up.workWidth, height: up.workHeight },
    model.facts, model.tokenizer,
  );
  warnings.push(...up.notes);
  if (chosen.warning) warnings.push(chosen.warning);
  warnings.push(...plan.warnings);
  return { up, plan, warnings };
}

/**
 * Encodes an RGB image (sides multiples of 8) to the latent x0: `encode` gives the encoder's mean (or its
 * latent_parameters, mean then log-variance); the result is (mean - shift) * scaling factor, checked for shape.
 */
export async function encodeLatent(
  img: RgbImage,
  encode: (chw: Float32Array, height: number, width: number) => Promise<{ data: Float32Array; channels: number; height: number; width: number }>,
  vae: { latentChannels: number; scalingFactor: number; shiftFactor?: number },
): Promise<Float32Array> {
  const r = await encode(rgb8ToChw(img), img.height, img.width);
  const c = vae.latentChannels;
  if ((r.channels !== c && r.channels !== 2 * c) || r.height * 8 !== img.height || r.width * 8 !== img.width) {
    throw new AsgdError('The VAE encoder returned a latent of an unexpected shape', {
      kind: 'model', parameter: 'vae_encoder', expected: `[1, ${c}, ${img.height / 8}, ${img.width / 8}]`, received: `[1, ${r.channels}, ${r.height}, ${r.width}]`,
      hint: 'The model does not match the Stable Diffusion ONNX contract; re-export it with optimum-cli',
    });
  }
  const shift = vae.shiftFactor ?? 0;
  const out = new Float32Array(c * r.height * r.width);
  for (let i = 0; i < out.length; i++) out[i] = (r.data[i]! - shift) * vae.scalingFactor;
  return out;
}

/**
 * Where the denoising of an upscale starts: the source resized (Lanczos3) to the output size, padded to the work size
 * by repeating its edges, encoded; for asg's 'input' sources the same resized image at the patch size too (the
 * native-size view every stage-1 patch is guided toward), for 'polyphase' the encoded input's polyphase patches.
 * `resized` is the output-size image (its alpha goes to the result).
 */
export async function upscaleInit(
  source: RgbImage, check: UpscaleCheck, encodeImage: (img: RgbImage) => Promise<Float32Array>,
): Promise<{ init: Img2ImgInit; resized: RgbImage }> {
  const { up, plan } = check;
  const asg = plan.params.method === 'asg';
  const geo = plan.method.geometry;
  const resized = resizeLanczos3(source, up.targetWidth, up.targetHeight);
  const init: Img2ImgInit = { latent: await encodeImage(padEdgesRgb(resized, up.workWidth, up.workHeight)) };
  if (asg && geo.count > 1 && (up.structureSource === 'input' || up.structureSource === 'input-skip')) {
    const padded = padEdgesRgb(resized, Math.max(up.workWidth, geo.paddedWidth * 8), Math.max(up.workHeight, geo.paddedHeight * 8));
    init.structureTarget = await encodeImage(resizeLanczos3(padded, geo.patchWidth * 8, geo.patchHeight * 8));
  }
  if (asg && geo.count > 1 && up.structureSource === 'polyphase') init.structureTarget = polyphaseTargets(init.latent, geo);
  if (asg && (up.structureSource === 'skip' || up.structureSource === 'input-skip')) init.skipResidual = true;
  return { init, resized };
}

/** The metadata's record of an upscale: its source (and the first stage's record, where one ran) and settings. */
export function upscaleRecord(
  source: { sha256: string; width: number; height: number }, up: UpscalePlan, startStep: number, generation?: GenerationMetadata,
): UpscaleRecord {
  return {
    source: { sha256: source.sha256, width: source.width, height: source.height, ...(generation ? { generation } : {}) },
    scale: up.scale,
    strength: up.strength,
    structureSource: up.structureSource,
    startStep,
  };
}

/** `generateUpscaled`: generate, then upscale the result in the same run (settings as UpscaleSettings). */
export interface GenerateUpscaleSettings extends Omit<UpscaleSettings, 'width' | 'height'> {
  /**
   * The upscale stage's method options. Default: the generation's, plus the upscale default of each one they leave
   * out. (A re-run of such an image passes the upscale stage's recorded ones: the generation's record holds every
   * option filled in, which would override the upscale defaults.)
   */
  methodOptions?: GenerateParams['methodOptions'];
}

/** generateUpscaled's upscale settings checked against the first stage's size (an unknown setting named), before any run. */
export function checkGenerateUpscale(first: { width: number; height: number }, upscale: GenerateUpscaleSettings): void {
  checkUpscale(first, upscale);
  refuseUnknownKeys(upscale, [...UPSCALE_OPTIONS.map((o) => o.key), 'methodOptions'], 'an upscale setting of generateUpscaled');
}

/**
 * generateUpscaled's second stage: the first stage's settings and seed (its scheduler, unless PNDM or LMS, which
 * cannot start mid-schedule: then the upscale's default) with the upscale's.
 */
export function upscaleStageParams(
  params: GenerateParams, upscale: GenerateUpscaleSettings, seed: string,
): Omit<GenerateParams, 'width' | 'height'> & UpscaleSettings {
  const { width: _w, height: _h, scheduler, ...rest } = params;
  const second = scheduler === undefined || scheduler === 'pndm' || scheduler === 'lms' ? undefined : scheduler;
  const { methodOptions = rest.methodOptions, ...settings } = upscale;
  return { ...rest, methodOptions, scheduler: second, seed, ...settings };
}

/** generateUpscaled's result from its two stages': the second's image and metadata, both stages' counts and times. */
export function bothStages<R extends { unetEvaluations: number; warnings: string[]; timings: GenerationTimings }>(first: R, second: R): R {
  const a = first.timings;
  const b = second.timings;
  return {
    ...second,
    unetEvaluations: first.unetEvaluations + second.unetEvaluations,
    warnings: [...first.warnings, ...second.warnings],
    timings: {
      textMs: a.textMs + b.textMs, denoiseMs: a.denoiseMs + b.denoiseMs, unetMs: a.unetMs + b.unetMs,
      hostMs: a.hostMs + b.hostMs, decodeMs: a.decodeMs + b.decodeMs, totalMs: a.totalMs + b.totalMs,
      encodeMs: b.encodeMs,
    },
  };
}
