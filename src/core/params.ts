/**
 * Generation settings: the plain option object users pass, its defaults, and validation that names each bad
 * parameter, what was expected and what was received. Portable.
 */
import { invalidArgument } from './errors.ts';
import { resolveMethodOptions, type MethodOptions } from './methods/options.ts';
import { MAX_SIZE, MIN_SIZE, PARAM_OPTIONS, VAE_OPTIONS, optionSpec, type MethodName } from './options/registry.ts';
import { checkOption, refuseUnknownFields, refuseUnknownKeys } from './options/spec.ts';
import { checkOverlapFits } from './vae/tiling.ts';

export { MAX_SIZE, MIN_SIZE };

export interface VaeDecodeOptions {
  /** 'auto' tiles latents larger than the tile size; 'on' always tiles; 'off' never. */
  tiling: 'auto' | 'on' | 'off';
  /** Tile size in latent pixels. */
  tileSize: number;
  /** Tile overlap in latent pixels. */
  overlap: number;
  /**
   * Normalisation statistics of tiled decoding: 'exact' (the whole image's, accumulated over tiles in one pass per norm layer, then the decode),
   * 'estimate' (from a downscaled decode, one pass) or 'off' (each tile its own: colours shift between tiles).
   */
  stats: 'exact' | 'estimate' | 'off';
  /**
   * MiB of tile activations 'exact' statistics may keep between norm layers (all kept: about one pass of the decoder;
   * 0: one pass of its prefix per norm layer).
   */
  statsMemory: number;
  /**
   * Where the decoder's self-attention runs when tiling: 'global' (the decoder up to just after its attention runs
   * once on the whole latent, the rest is tiled), 'tile' (each tile's attention sees only the tile), or 'auto'
   * (global up to a 256x256 latent, tile above: core/vae/tiled.ts attentionModeFor).
   */
  attention: 'auto' | 'global' | 'tile';
}

export interface GenerateParams {
  prompt: string;
  negativePrompt?: string;
  /** Output width in pixels (multiple of 8); default: the model's native width. */
  width?: number;
  height?: number;
  /** Denoising steps (default 30). */
  steps?: number;
  /** Classifier-free guidance scale (default 7.5). */
  guidanceScale?: number;
  /** Seed (0 .. 2^64-1); default: a random one, recorded in the result. */
  seed?: number | bigint | string;
  /** Scheduler name overriding the model's scheduler config (see SCHEDULER_NAMES). */
  scheduler?: string;
  /** Initial-noise generator: 'torch' reproduces torch.randn with a CPU generator. */
  noise?: 'torch';
  /** High-resolution method (default 'asg'). */
  method?: MethodName;
  /** Method options (see MethodOptions); unset ones take their defaults. */
  methodOptions?: Partial<MethodOptions>;
  /** Words of the prompt whose cross-attention forms the mask (default: all content tokens). */
  maskWords?: string[];
  vae?: Partial<VaeDecodeOptions>;
  /** SDXL only: the `original_size` micro-conditioning in pixels (default: the output size). */
  originalSize?: { width: number; height: number };
}

export interface ResolvedParams {
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  steps: number;
  guidanceScale: number;
  seed: bigint;
  scheduler?: string;
  noise: 'torch';
  method: MethodName;
  /** Every method option, defaults filled in and validated. */
  methodOptions: MethodOptions;
  maskWords?: string[];
  vae: VaeDecodeOptions;
  originalSize?: { width: number; height: number };
}

const spec = (key: (typeof PARAM_OPTIONS)[number]['key']) => optionSpec(PARAM_OPTIONS, key);
export const DEFAULT_STEPS = spec('steps').default as number;
export const DEFAULT_GUIDANCE = spec('guidanceScale').default as number;
export const DEFAULT_VAE: Readonly<VaeDecodeOptions> = Object.freeze(
  Object.fromEntries(VAE_OPTIONS.map((o) => [o.key, o.default])) as unknown as VaeDecodeOptions,
);

/** VAE options with the unset ones defaulted, each checked against the registry (named `vae.<key>`). */
export function resolveVaeOptions(v: unknown): VaeDecodeOptions {
  if (v !== undefined && (v === null || typeof v !== 'object')) throw invalidArgument('vae', 'an object of VAE decoding options', v);
  const given = (v ?? {}) as Record<string, unknown>;
  refuseUnknownFields(given, VAE_OPTIONS.map((o) => o.key), 'vae');
  const out = Object.fromEntries(VAE_OPTIONS.map((o) => [o.key, checkOption(o, given[o.key] ?? o.default, `vae.${o.key}`)])) as unknown as VaeDecodeOptions;
  checkOverlapFits(out, 'vae.overlap');
  return out;
}

function checkSize(name: 'width' | 'height', v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v % 8 !== 0 || v < MIN_SIZE || v > MAX_SIZE) {
    throw invalidArgument(name, `a multiple of 8 between ${MIN_SIZE} and ${MAX_SIZE} pixels`, v, typeof v === 'number' && Number.isFinite(v) ? `Try ${Math.max(MIN_SIZE, Math.min(MAX_SIZE, Math.round(v / 8) * 8))}` : undefined);
  }
  return v;
}

export function randomSeed(): bigint {
  const hi = BigInt(Math.floor(Math.random() * 2 ** 31));
  const lo = BigInt(Math.floor(Math.random() * 2 ** 32));
  return (hi << 32n) | lo;
}

export function parseSeed(v: unknown): bigint {
  let s: bigint | undefined;
  if (typeof v === 'bigint') s = v;
  else if (typeof v === 'number' && Number.isSafeInteger(v)) s = BigInt(v);
  else if (typeof v === 'string' && /^\d+$/.test(v.trim())) s = BigInt(v.trim());
  if (s === undefined || s < 0n || s >= 2n ** 64n) throw invalidArgument('seed', 'an integer in [0, 2^64 - 1]', v);
  return s;
}

/** GenerateParams' keys: any other is refused (a misspelt setting would otherwise be ignored without a word). */
export const PARAM_KEYS: readonly string[] = [
  'prompt', 'negativePrompt', 'width', 'height', 'steps', 'guidanceScale', 'seed', 'scheduler', 'noise', 'method', 'methodOptions', 'maskWords', 'vae', 'originalSize',
] satisfies (keyof GenerateParams)[];

export function resolveParams(p: GenerateParams, native: { width: number; height: number }): ResolvedParams {
  if (!p || typeof p !== 'object') throw invalidArgument('params', 'an object with at least a prompt', p);
  refuseUnknownKeys(p, PARAM_KEYS, 'a generation setting');
  if (typeof p.prompt !== 'string') throw invalidArgument('prompt', 'a string', p.prompt);
  if (p.negativePrompt !== undefined && typeof p.negativePrompt !== 'string') throw invalidArgument('negativePrompt', 'a string', p.negativePrompt);
  const width = checkSize('width', p.width ?? native.width);
  const height = checkSize('height', p.height ?? native.height);
  const steps = checkOption<number>(spec('steps'), p.steps ?? DEFAULT_STEPS);
  const guidanceScale = checkOption<number>(spec('guidanceScale'), p.guidanceScale ?? DEFAULT_GUIDANCE);
  const seed = p.seed === undefined ? randomSeed() : parseSeed(p.seed);
  const noise = p.noise ?? 'torch';
  if (noise !== 'torch') throw invalidArgument('noise', '"torch"', noise);
  const method = checkOption<MethodName>(spec('method'), p.method ?? spec('method').default);
  if (p.scheduler !== undefined) checkOption(spec('scheduler'), p.scheduler);
  const methodOptions = resolveMethodOptions(p.methodOptions ?? {});
  const vae = resolveVaeOptions(p.vae);
  if (p.maskWords !== undefined && (!Array.isArray(p.maskWords) || p.maskWords.some((w) => typeof w !== 'string' || !w.trim()))) {
    throw invalidArgument('maskWords', 'a list of words from the prompt', p.maskWords);
  }
  const o = p.originalSize;
  if (o !== undefined && (!o || !Number.isInteger(o.width) || !Number.isInteger(o.height) || o.width < 1 || o.height < 1)) {
    throw invalidArgument('originalSize', 'positive integer width and height in pixels', o);
  }
  // The crop and target parts of SDXL's time ids follow each unit's place in the image: no key sets them.
  for (const [key, value] of Object.entries(o ?? {})) {
    if (key !== 'width' && key !== 'height') throw invalidArgument(`originalSize.${key}`, 'only the keys width, height', value, `Leave ${key} out`);
  }
  return {
    prompt: p.prompt,
    negativePrompt: p.negativePrompt ?? '',
    width,
    height,
    steps,
    guidanceScale,
    seed,
    scheduler: p.scheduler,
    noise,
    method,
    methodOptions,
    maskWords: p.maskWords?.length ? p.maskWords : undefined,
    vae,
    ...(o ? { originalSize: { width: o.width, height: o.height } } : {}),
  };
}

/** Validates settings before any model is loaded (sizes are checked as given; defaults need the model). */
export function validateParams(p: GenerateParams): void {
  resolveParams({ ...p, seed: p.seed ?? 0 }, { width: p.width ?? 512, height: p.height ?? 512 });
}
