/**
 * The image-to-image (upscale) stage pieces: the checks of an upscale's settings against its source image (before
 * any model call), the step a strength starts from, a scheduler that runs only the last steps, noising the encoded
 * input to the first of them, and the structure sources of `asg` taken from the input itself. Portable.
 *
 * Strength s runs the last max(1, floor(T * s)) of the T scheduler steps (diffusers' img2img, except that any
 * s > 0 runs at least one step): the encoded input x0 is noised to the level of the first step run,
 * x = alpha * x0 + sigma * n (Scheduler.noiseLevel), and denoised from there. n is the initial noise generate
 * would draw for the same seed and size.
 */
import { AsgdError, invalidArgument } from '../errors.ts';
import { DEFAULT_METHOD, MAX_SIZE, METHOD_OPTIONS, MIN_SIZE, UPSCALE_OPTIONS, optionSpec, type StructureSource } from '../options/registry.ts';
import type { MethodOptions } from '../methods/options.ts';
import { checkOption } from '../options/spec.ts';
import type { PatchGeometry } from '../methods/geometry.ts';
import { extractPatches, padLatent } from '../methods/polyphase.ts';
import type { RandomSource } from '../random/types.ts';
import { nameForClass } from '../schedulers/config.ts';
import type { LatentPart, Scheduler, SchedulerState, StepResult } from '../schedulers/types.ts';

export type { StructureSource };

/** The smallest source image side, in pixels. */
export const MIN_SOURCE_SIZE = 8;

const spec = (key: (typeof UPSCALE_OPTIONS)[number]['key']) => optionSpec(UPSCALE_OPTIONS, key);
export const DEFAULT_STRENGTH = spec('strength').default as number;
export const DEFAULT_STRUCTURE_SOURCE = spec('structureSource').default as StructureSource;
export const DEFAULT_MAX_PIXELS = spec('maxPixels').default as number;
export const DEFAULT_SCALE = spec('scale').default as number;

/**
 * The method options an upscale runs with: the given ones, plus the upscale default (OptionSpec.upscaleDefault) of
 * every option the method reads that the caller left out. (asg's structure guidance follows the input itself when
 * upscaling, a target that does not drift, so it is held at full weight: measured in docs/upscale.md.)
 */
export function upscaleMethodOptions(method: string | undefined, given: Partial<MethodOptions> | undefined): Partial<MethodOptions> | undefined {
  const m = method ?? DEFAULT_METHOD;
  let out = given;
  for (const s of METHOD_OPTIONS as readonly { key: string; methods?: readonly string[]; upscaleDefault?: unknown }[]) {
    if (s.upscaleDefault === undefined || (s.methods && !s.methods.includes(m)) || (given && s.key in given)) continue;
    out = { ...out, [s.key]: s.upscaleDefault };
  }
  return out;
}

/** What an upscale asks for: a scale or an output size (not both), and how far to re-noise. */
export interface UpscaleSettings {
  /** Output size = source size x scale (>= 1). Default 2 when neither scale nor width/height is given. */
  scale?: number;
  /** Output width in pixels (the height follows the source's aspect ratio when only one is given). */
  width?: number;
  height?: number;
  /** Fraction of the steps re-run, in (0, 1]: near 0 keeps the input, 1 redraws it from noise. */
  strength?: number;
  /** asg: where the structure the patches follow comes from (see StructureSource). */
  structureSource?: StructureSource;
  /** Refuse outputs above this many pixels (width x height). */
  maxPixels?: number;
}

export interface UpscalePlan {
  /** Scale when one was given (or the default), null when the size was. */
  scale: number | null;
  strength: number;
  structureSource: StructureSource;
  maxPixels: number;
  /** The output image. */
  targetWidth: number;
  targetHeight: number;
  /** The size denoised: the target rounded up to the latent grid (multiples of 8, at least 64); cropped after. */
  workWidth: number;
  workHeight: number;
  notes: string[];
}

const roundUp8 = (v: number) => Math.ceil(v / 8) * 8;

/** Every check of an upscale against its source size; throws AsgdError before any model call. */
export function checkUpscale(source: { width: number; height: number }, s: UpscaleSettings): UpscalePlan {
  if (!s || typeof s !== 'object') throw invalidArgument('upscale', 'an object of upscale settings', s);
  const { width: sw, height: sh } = source;
  if (sw < MIN_SOURCE_SIZE || sh < MIN_SOURCE_SIZE) {
    throw new AsgdError('The input image is too small to upscale', {
      kind: 'invalid-argument', parameter: 'image', expected: `at least ${MIN_SOURCE_SIZE}x${MIN_SOURCE_SIZE} pixels`, received: `${sw}x${sh}`,
      hint: 'Use a larger image',
    });
  }
  const strength = checkOption<number>(spec('strength'), s.strength ?? DEFAULT_STRENGTH);
  const structureSource = checkOption<StructureSource>(spec('structureSource'), s.structureSource ?? DEFAULT_STRUCTURE_SOURCE);
  const maxPixels = checkOption<number>(spec('maxPixels'), s.maxPixels ?? DEFAULT_MAX_PIXELS);
  const sized = s.width !== undefined || s.height !== undefined;
  if (sized && s.scale !== undefined) {
    throw new AsgdError('Give either a scale or an output size, not both', {
      kind: 'invalid-argument', parameter: 'scale', expected: 'scale, or width/height', received: `scale ${String(s.scale)} and size ${String(s.width ?? '-')}x${String(s.height ?? '-')}`,
      hint: 'Drop --scale or -W/-H',
    });
  }
  let scale: number | null = null;
  let tw: number;
  let th: number;
  if (sized) {
    for (const [name, v] of [['width', s.width], ['height', s.height]] as const) {
      if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 1)) throw invalidArgument(name, 'a positive integer number of pixels', v);
    }
    tw = s.width ?? Math.round((s.height! * sw) / sh);
    th = s.height ?? Math.round((s.width! * sh) / sw);
    // An upscale keeps or enlarges each side, as a scale of at least 1 does.
    for (const [name, v, min] of [['width', tw, sw], ['height', th, sh]] as const) {
      if (v < min) {
        throw new AsgdError(`The output ${name} is smaller than the input's`, {
          kind: 'invalid-argument', parameter: name, expected: `at least the input's ${name} (${sw}x${sh} input)`, received: `${tw}x${th}`,
          hint: 'Upscaling keeps or enlarges each side: give a larger size, or --scale 1 to keep it',
        });
      }
    }
  } else {
    scale = checkOption<number>(spec('scale'), s.scale ?? DEFAULT_SCALE);
    tw = Math.round(sw * scale);
    th = Math.round(sh * scale);
  }
  if (tw * th > maxPixels) {
    throw new AsgdError('The upscaled image would exceed the pixel limit', {
      kind: 'invalid-argument', parameter: 'maxPixels', expected: `at most ${maxPixels} pixels (width x height)`,
      received: `${tw}x${th} = ${tw * th} pixels`,
      hint: `Use a smaller scale or size, or raise the limit with --max-pixels ${tw * th} (API: maxPixels)`,
    });
  }
  const notes: string[] = [];
  const workWidth = Math.max(MIN_SIZE, roundUp8(tw));
  const workHeight = Math.max(MIN_SIZE, roundUp8(th));
  if (workWidth > MAX_SIZE || workHeight > MAX_SIZE) {
    throw new AsgdError('The upscaled image would be larger than the largest side supported', {
      kind: 'invalid-argument', parameter: 'scale', expected: `sides of at most ${MAX_SIZE} pixels`, received: `${tw}x${th}`,
      hint: 'Use a smaller scale or size',
    });
  }
  if (workWidth !== tw || workHeight !== th) {
    notes.push(`The output ${tw}x${th} is denoised at ${workWidth}x${workHeight} (the latent grid: multiples of 8, at least ${MIN_SIZE}) with edge-replicated padding, then cropped`);
  }
  return { scale, strength, structureSource, maxPixels, targetWidth: tw, targetHeight: th, workWidth, workHeight, notes };
}

/** Index of the first of `steps` scheduler steps that an img2img run at `strength` takes. */
export function startStep(steps: number, strength: number): number {
  const run = Math.min(steps, Math.max(1, Math.floor(steps * strength + 1e-9)));
  return steps - run;
}

/**
 * The steps start..T-1 of `full` as a scheduler of their own (indices shifted so that its step 0 is full's step
 * `start`), starting from a fresh state as diffusers' img2img does. Methods plan their stages over these steps. What
 * lets a method step parts of the latent (stepPositions, eulerCoefficients, elementwise, stepPart, statefulCoefficients) comes along, shifted, so an
 * upscale's stage 2 flows and its units are stepped in the kernels as a generation's are.
 */
export function schedulerFrom(full: Scheduler, start: number): Scheduler {
  if (!Number.isInteger(start) || start < 0 || start >= full.numSteps) {
    throw invalidArgument('start step', `an integer from 0 to ${full.numSteps - 1}`, start);
  }
  if (start === 0) return full;
  const shift = (s: SchedulerState): SchedulerState => ({ ...s, stepIndex: s.stepIndex + start });
  const stepPositions = full.stepPositions?.bind(full);
  const eulerCoefficients = full.eulerCoefficients?.bind(full);
  const stepPart = full.stepPart?.bind(full);
  const statefulCoefficients = full.statefulCoefficients?.bind(full);
  return {
    ...(stepPositions ? { stepPositions: (k: number, out: Float32Array, sample: Float32Array, into: Float32Array, at: Int32Array | null) => stepPositions(k + start, out, sample, into, at) } : {}),
    ...(eulerCoefficients ? { eulerCoefficients: (k: number) => eulerCoefficients(k + start) } : {}),
    ...(full.elementwise ? { elementwise: true } : {}),
    ...(stepPart
      ? {
          stepPart: (state: SchedulerState, part: LatentPart) => {
            const next = stepPart(shift(state), part);
            return { ...next, stepIndex: next.stepIndex - start };
          },
        }
      : {}),
    ...(statefulCoefficients ? { statefulCoefficients: (state: SchedulerState) => statefulCoefficients(shift(state)) } : {}),
    name: full.name,
    predictionType: full.predictionType,
    timesteps: full.timesteps.slice(start),
    numSteps: full.numSteps - start,
    initNoiseSigma: full.initNoiseSigma,
    initialState: () => full.initialState(),
    inputScale: (k: number) => full.inputScale(k + start),
    noiseLevel: (k: number) => full.noiseLevel(k + start),
    step(state: SchedulerState, out: Float32Array, sample: Float32Array, rng?: RandomSource): StepResult {
      const r = full.step(shift(state), out, sample, rng);
      return { prevSample: r.prevSample, state: { ...r.state, stepIndex: r.state.stepIndex - start } };
    },
  };
}

/** Schedulers whose state is tied to the first step (PNDM's warm-up, LMS's order ramp): they cannot start later. */
const FROM_START_ONLY = ['pndm', 'lms'];

/**
 * The scheduler an img2img run uses: the one given, else the model's, except PNDM and LMS, which cannot start
 * mid-schedule (euler replaces the model's with a warning; naming one is an error).
 */
export function img2imgScheduler(given: string | undefined, modelClassName: string): { scheduler?: string; warning?: string } {
  if (given !== undefined) {
    if (FROM_START_ONLY.includes(given)) {
      throw invalidArgument('scheduler', 'a scheduler that can start from a partly noised image: euler, euler-ancestral, ddim or dpmpp-2m', given, 'Leave --scheduler out (euler is used) or choose one of these');
    }
    return { scheduler: given };
  }
  const configured = nameForClass(modelClassName);
  if (configured !== undefined && FROM_START_ONLY.includes(configured)) {
    return { scheduler: 'euler', warning: `Using the euler scheduler instead of the model's ${configured}, which cannot start from a partly noised image; choose another scheduler (--scheduler) to change it` };
  }
  return {};
}

/** x = alpha * x0 + sigma * noise, elementwise (noise has the latent's layout). */
export function noiseTo(x0: Float32Array, noise: Float32Array, alpha: number, sigma: number, out?: Float32Array): Float32Array {
  if (x0.length !== noise.length) throw invalidArgument('noise', `${x0.length} values (the latent's)`, `${noise.length} values`);
  const dst = out ?? new Float32Array(x0.length);
  for (let i = 0; i < x0.length; i++) dst[i] = alpha * x0[i]! + sigma * noise[i]!;
  return dst;
}

/** Model timesteps run over [0, 1000). */
const TRAIN_TIMESTEPS = 1000;

/**
 * DemoFusion's skip-residual weight c(t) = ((1 + cos(pi * (1000 - t) / 1000)) / 2)^power: 1 at t = 1000, 0 at
 * t = 0. Before a step at timestep t the latent becomes c * (the input noised to that step) + (1 - c) * latent.
 */
export function skipWeight(timestep: number, power = 3): number {
  const c = (1 + Math.cos((Math.PI * (TRAIN_TIMESTEPS - timestep)) / TRAIN_TIMESTEPS)) / 2;
  return Math.pow(Math.min(1, Math.max(0, c)), power);
}

/** In place: latent = c * (alpha * x0 + sigma * noise) + (1 - c) * latent. */
export function applySkipResidual(
  latent: Float32Array, x0: Float32Array, noise: Float32Array, alpha: number, sigma: number, c: number,
): void {
  if (!(c > 0)) return;
  for (let i = 0; i < latent.length; i++) latent[i] = c * (alpha * x0[i]! + sigma * noise[i]!) + (1 - c) * latent[i]!;
}

/** The image-to-image start the denoise stage takes (see DenoiseInput.init). */
export interface Img2ImgInit {
  /** The encoded input [1, C, h, w], multiplied by the VAE scaling factor: the x0 the run starts from. */
  latent: Float32Array;
  /** DemoFusion skip residual toward the noised input before each step (weight skipWeight(t)). */
  skipResidual?: boolean;
  /**
   * asg: the x0 the stage-1 patches are guided toward: [C, p_h, p_w] for all (the input encoded at the patch size)
   * or [N, C, p_h, p_w], one per patch (polyphaseTargets).
   */
  structureTarget?: Float32Array;
}

/** Each patch's own x0 target: the polyphase patches [N, C, p_h, p_w] of the encoded input at the output size. */
export function polyphaseTargets(latent: Float32Array, geo: PatchGeometry): Float32Array {
  return extractPatches(padLatent(latent, geo), geo);
}
