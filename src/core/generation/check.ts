/**
 * The check stage: every check of a generation's settings against the model, before any model call (sizes,
 * static-shape exports, SDXL-only options, method options and their plan, mask words, scheduler choice), and the
 * plan the later stages follow. checkSettings makes the checks that need no tokenizer, checkPrompt the prompt's.
 * Portable.
 */
import { AsgdError } from '../errors.ts';
import { aFamily, denoiserGrid, schedulerFitsFamily, type ModelFamily } from '../model-family.ts';
import { planMethod, type MethodPlan } from '../methods/plan.ts';
import { resolveParams, type GenerateParams, type ResolvedParams } from '../params.ts';
import { nameForClass } from '../schedulers/config.ts';
import type { ClipTokenizer, TokenizedPrompt } from '../text/clip-tokenizer.ts';

/** What the check stage needs to know of the model. */
export interface ModelFacts {
  family: ModelFamily;
  /** Latent sizes must be multiples of this: 8 for the UNets (default), the patch size for SD3's transformer. */
  latentMultiple?: number;
  nativeWidth: number;
  nativeHeight: number;
  latentChannels: number;
  /** Set when the UNet export fixed its spatial input size. */
  staticLatentSize?: { height: number; width: number };
  /**
   * The largest latent side one model call takes, when the model has a limit: SD3's position-embedding table
   * (pos_embed_max_size patches of the patch size).
   */
  maxUnitLatentSize?: number;
  /** diffusers class name of the model's scheduler config. */
  schedulerClassName: string;
  /** The VAE config asks for float32 decoding, and whether this VAE export is float16. */
  vaeForceUpcast: boolean;
  vaeIsFloat16: boolean;
}

/** What a loaded model's pipeline (Node's or the browser's: the same fields) tells the check stage. */
export function loadedModelFacts(
  spec: { family: ModelFacts['family']; schedulerConfig: { _class_name?: unknown }; vae: { forceUpcast: boolean }; patchSize?: number; posEmbedMaxSize?: number },
  info: Pick<ModelFacts, 'nativeWidth' | 'nativeHeight' | 'latentChannels' | 'staticLatentSize'> & { components: { vaeDecoder?: { inputs: { type: string }[] } } },
): ModelFacts {
  return {
    family: spec.family,
    ...denoiserGrid(spec.family, spec.patchSize, spec.posEmbedMaxSize),
    nativeWidth: info.nativeWidth,
    nativeHeight: info.nativeHeight,
    latentChannels: info.latentChannels,
    staticLatentSize: info.staticLatentSize,
    schedulerClassName: String(spec.schedulerConfig._class_name ?? ''),
    vaeForceUpcast: spec.vae.forceUpcast,
    vaeIsFloat16: info.components.vaeDecoder?.inputs[0]?.type === 'float16',
  };
}

export interface GenerationPlan {
  params: ResolvedParams;
  /** The scheduler to use instead of the model's config (user's choice, or euler for patch methods; see below). */
  scheduler?: string;
  prompt: TokenizedPrompt;
  negative: TokenizedPrompt;
  /** Token positions whose cross-attention forms the mask. */
  maskTokens: number[];
  latentHeight: number;
  latentWidth: number;
  /** Latent sizes must be multiples of this (three downsamplings in SD's UNet; the patch size for SD3). */
  latentMultiple: number;
  /** SD3: image tokens of the whole latent, (h / patch) * (w / patch), for the scheduler's dynamic shift. */
  imageSeqLen?: number;
  method: MethodPlan;
  warnings: string[];
}

const LATENT_MULTIPLE = 8;

/** What checkSettings finds: the plan without the prompt's tokens (those need the model's tokenizer). */
export type SettingsPlan = Omit<GenerationPlan, 'prompt' | 'negative' | 'maskTokens'>;

/**
 * Every check of checkGeneration that needs no tokenizer: the settings resolved, the static input size, the
 * SDXL-only options, the scheduler's family and choice, and the method's plan. A server checks a job with it before
 * queueing, knowing the model only from its folder.
 */
export function checkSettings(input: GenerateParams, model: ModelFacts): SettingsPlan {
  const p = resolveParams(input, { width: model.nativeWidth, height: model.nativeHeight });
  const warnings: string[] = [];
  checkStaticSize(p, model);
  if (p.originalSize && model.family !== 'sdxl') {
    throw new AsgdError('originalSize is an SDXL option', {
      kind: 'invalid-argument', parameter: 'originalSize', expected: 'an SDXL model',
      received: `${aFamily(model.family)} model`,
      hint: 'Leave --original-size out for this model',
    });
  }
  checkSchedulerFamily(p.scheduler, model);
  const scheduler = p.scheduler ?? patchScheduler(p, model, warnings);
  const latentHeight = p.height / 8;
  const latentWidth = p.width / 8;
  const latentMultiple = model.latentMultiple ?? LATENT_MULTIPLE;
  const method = planMethod(p.method, p.methodOptions, {
    height: latentHeight,
    width: latentWidth,
    nativeHeight: model.nativeHeight / 8,
    nativeWidth: model.nativeWidth / 8,
    latentMultiple,
    channels: model.latentChannels,
    numSteps: p.steps,
    timeIds: model.family === 'sdxl',
    originalSize: p.originalSize,
  });
  checkUnitSize(p, model, method);
  if (model.vaeForceUpcast && model.vaeIsFloat16) {
    // The VAE config asks for float32 decoding (SDXL's VAE overflows in float16), but this export is float16.
    warnings.push('The VAE config sets force_upcast but vae_decoder is a float16 export: decoding may overflow to NaN or black; pass --vae with a float32 VAE export');
  }
  const imageSeqLen =
    model.family === 'sd3' ? Math.ceil(latentHeight / latentMultiple) * Math.ceil(latentWidth / latentMultiple) : undefined;
  return { params: p, scheduler, latentHeight, latentWidth, latentMultiple, imageSeqLen, method, warnings };
}

export function checkGeneration(input: GenerateParams, model: ModelFacts, tokenizer: ClipTokenizer): GenerationPlan {
  const settings = checkSettings(input, model);
  const p = settings.params;
  const { prompt, negative, maskTokens, warnings } = checkPrompt(p, tokenizer);
  return { ...settings, prompt, negative, maskTokens, warnings: [...warnings, ...settings.warnings] };
}

/**
 * The prompt's part of the check: its tokens (with a warning when cut to the model's length) and the mask words,
 * each of which must be in the prompt. Throws naming maskWords otherwise.
 */
export function checkPrompt(
  p: Pick<ResolvedParams, 'prompt' | 'negativePrompt' | 'maskWords'>, tokenizer: ClipTokenizer,
): { prompt: TokenizedPrompt; negative: TokenizedPrompt; maskTokens: number[]; warnings: string[] } {
  const warnings: string[] = [];
  const prompt = tokenizer.encode(p.prompt);
  const negative = tokenizer.encode(p.negativePrompt);
  if (prompt.truncated > 0) warnings.push(`The prompt is too long: ${prompt.truncated} token(s) beyond the model's ${tokenizer.maxLength - 2} were dropped`);
  if (negative.truncated > 0) warnings.push(`The negative prompt is too long: ${negative.truncated} token(s) were dropped`);
  return { prompt, negative, maskTokens: pickMaskTokens(p, prompt, tokenizer), warnings };
}

/** SD3 predicts flow-matching velocity: only flow-euler fits it, and flow-euler fits no other family. */
function checkSchedulerFamily(chosen: string | undefined, model: ModelFacts): void {
  const configured = nameForClass(model.schedulerClassName);
  if (model.family === 'sd3') {
    if (chosen !== undefined && chosen !== 'flow-euler') {
      throw new AsgdError('SD3 models need the flow-matching scheduler', {
        kind: 'invalid-argument', parameter: 'scheduler', expected: 'flow-euler (or none: the model\'s)', received: chosen,
        hint: 'SD3 predicts a flow-matching velocity; leave --scheduler out',
      });
    }
    if (chosen === undefined && configured !== 'flow-euler') {
      throw new AsgdError('The SD3 model\'s scheduler config is not a flow-matching scheduler', {
        kind: 'model', parameter: 'scheduler', expected: 'FlowMatchEulerDiscreteScheduler', received: model.schedulerClassName || 'none',
        hint: 'Fix scheduler/scheduler_config.json or pass --scheduler flow-euler',
      });
    }
  } else if (!schedulerFitsFamily(chosen ?? configured, model.family)) {
    throw new AsgdError('The flow-matching scheduler is for SD3 models only', {
      kind: 'invalid-argument', parameter: 'scheduler', expected: 'a noise-prediction scheduler (euler, ddim, ...)', received: 'flow-euler',
      hint: 'Pick another --scheduler for Stable Diffusion 1.x/2.x and SDXL models',
    });
  }
}

/**
 * A model call's latent must fit the model's limit (SD3's position table, centre-cropped to the unit): direct
 * denoises the whole latent in one call; the patch methods' patches and windows are about the native size.
 */
function checkUnitSize(p: ResolvedParams, model: ModelFacts, method: MethodPlan): void {
  const max = model.maxUnitLatentSize;
  if (max === undefined) return;
  const g = method.geometry;
  const direct = p.method === 'direct';
  const [h, w] = (direct ? [g.height, g.width] : [Math.max(g.patchHeight, g.nativeHeight), Math.max(g.patchWidth, g.nativeWidth)])
    .map((v) => Math.ceil(v / g.latentMultiple) * g.latentMultiple);
  if (h! <= max && w! <= max) return;
  throw new AsgdError('The image is larger than one model call of this SD3 transformer covers', {
    kind: 'invalid-argument',
    parameter: w! > max ? 'width' : 'height',
    expected: `at most ${max * 8} px a side with method ${p.method} (the transformer's position table: pos_embed_max_size ${max / g.latentMultiple} patches)`,
    received: `${p.width}x${p.height}`,
    hint: direct ? 'Use a patch method (--method asg), whose model calls are native-size, or a smaller size' : 'Use a smaller size',
  });
}

/** Static-shape UNets accept one latent size: every unit must be exactly native-sized. */
function checkStaticSize(p: ResolvedParams, model: ModelFacts): void {
  const fixed = model.staticLatentSize;
  if (!fixed) return;
  const nh = fixed.height * 8;
  const nw = fixed.width * 8;
  const multiple = p.width % nw === 0 && p.height % nh === 0;
  if (!multiple || (p.method === 'direct' && (p.width !== nw || p.height !== nh))) {
    throw new AsgdError('This UNet export has a static input size', {
      kind: 'invalid-argument',
      parameter: 'width/height',
      expected: p.method === 'direct' ? `${nw}x${nh} with method direct, or multiples of it with a patch method` : `multiples of ${nw}x${nh}`,
      received: `${p.width}x${p.height}`,
      hint: 'Re-export the model with dynamic axes (optimum-cli does by default) to use other sizes',
    });
  }
}

/**
 * Linear multistep schedulers (PNDM's PLMS, LMS) extrapolate from the last few model outputs of each latent
 * element. Above the native size the patch methods redraw pixel-interaction permutations and window jitter every
 * step, so consecutive outputs of one element come from different UNet views, and the extrapolation amplifies
 * their differences into speckle (measured on the shipped model: docs/benchmarks.md). So patch methods above the
 * native size use Euler unless the user names a scheduler; the choice is recorded in the metadata.
 */
function patchScheduler(p: ResolvedParams, model: ModelFacts, warnings: string[]): string | undefined {
  const chosen = generationScheduler({ ...p, scheduler: undefined }, model);
  if (chosen === undefined) return undefined;
  const configured = nameForClass(model.schedulerClassName);
  warnings.push(`Using the euler scheduler instead of the model's ${configured} for ${p.method} above the native size (multistep extrapolation across re-drawn patches adds noise); set the scheduler to ${configured} (--scheduler ${configured}) to keep it`);
  return 'euler';
}

/**
 * The scheduler a generation runs with, by name: the one asked for, else euler in place of the model's PNDM or
 * LMS for a patch method above the native size (see patchScheduler), else undefined (the model's own).
 */
export function generationScheduler(
  p: Pick<ResolvedParams, 'method' | 'width' | 'height' | 'scheduler'>,
  model: Pick<ModelFacts, 'nativeWidth' | 'nativeHeight' | 'schedulerClassName'>,
): string | undefined {
  if (p.scheduler !== undefined) return p.scheduler;
  const patched = p.method !== 'direct' && (p.width > model.nativeWidth || p.height > model.nativeHeight);
  const configured = nameForClass(model.schedulerClassName);
  return patched && (configured === 'pndm' || configured === 'lms') ? 'euler' : undefined;
}

/** Token positions whose cross-attention forms the mask: content tokens, or the words the user named. */
function pickMaskTokens(p: Pick<ResolvedParams, 'maskWords'>, prompt: TokenizedPrompt, tokenizer: ClipTokenizer): number[] {
  const content = prompt.tokens.map((_, i) => i + 1);
  if (!p.maskWords) return content;
  const norm = (t: string) => t.replace(/<\/w>$/, '').toLowerCase();
  const picked: number[] = [];
  for (const word of p.maskWords) {
    const pieces = tokenizer.encode(word).tokens.map(norm);
    let found = false;
    for (let i = 0; i + pieces.length <= prompt.tokens.length; i++) {
      if (pieces.every((piece, k) => norm(prompt.tokens[i + k]!) === piece)) {
        for (let k = 0; k < pieces.length; k++) picked.push(i + k + 1);
        found = true;
      }
    }
    if (!found) {
      throw new AsgdError(`The mask word ${JSON.stringify(word)} is not in the prompt`, {
        kind: 'invalid-argument', parameter: 'maskWords', expected: 'words that appear in the prompt', received: JSON.stringify(word),
        hint: `Prompt words: ${promptWords(prompt.tokens).join(' ')}`,
      });
    }
  }
  return [...new Set(picked)].sort((a, b) => a - b);
}

/** The prompt's words as typed, each once: BPE pieces joined up to the one that ends a word (`</w>`). */
function promptWords(tokens: readonly string[]): string[] {
  const words: string[] = [];
  let word = '';
  for (const t of tokens) {
    word += t.replace(/<\/w>$/, '');
    if (t.endsWith('</w>')) {
      words.push(word.toLowerCase());
      word = '';
    }
  }
  if (word) words.push(word.toLowerCase());
  return [...new Set(words)];
}
