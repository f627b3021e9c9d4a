/**
 * Options shared by the high-resolution methods, their defaults, and validation (AsgdError naming the
 * option). Options a method does not use are accepted and ignored (e.g. structureWeight for `direct`).
 * Portable: no Node APIs.
 */
import { invalidArgument } from '../errors.ts';
import type { StructureSchedule, StructureSpace } from './guidance.ts';
import type { MethodName } from './types.ts';

export const METHOD_NAMES: readonly MethodName[] = ['direct', 'multidiffusion', 'cutdiffusion', 'asg'];
export const DEFAULT_METHOD: MethodName = 'asg';

export interface MethodOptions {
  /**
   * Fraction of the steps spent in stage 1: S = round(T * stageSplit), in [0, 1]. Default 0.8, measured
   * (docs/repetition.md): with 0.5 the stage-2 windows still invent objects at 16x area.
   */
  stageSplit: number;
  /** Shuffle every latent element across the N patches each stage-1 step (CutDiffusion). */
  pixelInteraction: boolean;
  /**
   * w_max of the structure guidance, in [0, 1] (0 = no guidance, i.e. cutdiffusion; 1 = patches take the
   * key's output wherever M = 1). The paper gives no value; 1 with x0-space guidance, measured
   * (docs/repetition.md).
   */
  structureWeight: number;
  /** w_t schedule: 'cosine' (w_max * c(t)^gamma, strong early, 0 at t = 0) or 'constant'. */
  structureSchedule: StructureSchedule;
  /** gamma of the cosine schedule (> 0). */
  structureGamma: number;
  /**
   * 'x0' (default: align denoised estimates; see guidance.ts and method.md's caveat) or 'eps' (the paper's Eq. 3,
   * which also pulls the noise across patches and blurred the shipped model's images: docs/repetition.md).
   */
  structureSpace: StructureSpace;
  /**
   * false (default, the paper's contribution): step k is guided by the key output and mask of step k-1, so
   * all N patch units of a step go to one evaluate call. true: the key unit is evaluated first, then the
   * others, guided by step k's key. Neither mode guides step 0 (nothing stale exists at k = 0 for the
   * asynchronous mode; the synchronous mode follows so that the two differ only by staleness).
   */
  guidanceSync: boolean;
  /** Weight the guidance by the cross-attention mask (else M = 1). */
  mask: boolean;
  /** Recompute the mask at every n-th guided step and reuse it in between (>= 1). */
  maskEvery: number;
  /** Use only attention layers whose name contains one of these substrings ([] = all up-block attn2). */
  maskLayers: string[];
  /** M = M^maskGamma after min-max normalisation (> 0). */
  maskGamma: number;
  /** Mask values below this become 0, in [0, 1] (0 keeps everything). */
  maskThreshold: number;
  /** Stage-2 window stride in latent px for both axes, 1..native size; null = half the native size. */
  windowStride: number | null;
  /** Redraw the stage-2 window jitter every step (off: windows sit at their base positions, e.g. for references). */
  windowJitter: boolean;
  /** Call ctx.onPreview every n steps (after steps n-1, 2n-1, ...); 0 = never. */
  previewEvery: number;
}

export const DEFAULT_METHOD_OPTIONS: Readonly<MethodOptions> = Object.freeze({
  stageSplit: 0.8,
  pixelInteraction: true,
  structureWeight: 1,
  structureSchedule: 'cosine',
  structureGamma: 1,
  structureSpace: 'x0',
  guidanceSync: false,
  mask: true,
  maskEvery: 1,
  maskLayers: [],
  maskGamma: 1,
  maskThreshold: 0,
  windowStride: null,
  windowJitter: true,
  previewEvery: 0,
} as MethodOptions);

const KEYS = Object.keys(DEFAULT_METHOD_OPTIONS) as (keyof MethodOptions)[];

function numberIn(name: string, value: unknown, lo: number, hi: number, hint: string, open = false): number {
  const ok =
    typeof value === 'number' && Number.isFinite(value) && (open ? value > lo : value >= lo) && value <= hi;
  if (!ok) {
    const range = hi === Infinity ? `${open ? '>' : '>='} ${lo}` : `in ${open ? '(' : '['}${lo}, ${hi}]`;
    throw invalidArgument(name, `a number ${range}`, value, hint);
  }
  return value as number;
}

function integerAtLeast(name: string, value: unknown, lo: number, hint: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < lo) {
    throw invalidArgument(name, `an integer >= ${lo}`, value, hint);
  }
  return value;
}

function bool(name: string, value: unknown): boolean {
  if (typeof value !== 'boolean') throw invalidArgument(name, 'true or false', value);
  return value;
}

function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalidArgument(name, `one of ${allowed.join(', ')}`, value);
  }
  return value as T;
}

export function validateMethodName(name: unknown): MethodName {
  if (typeof name !== 'string' || !(METHOD_NAMES as readonly string[]).includes(name)) {
    throw invalidArgument('method', `one of ${METHOD_NAMES.join(', ')}`, name, `Use ${DEFAULT_METHOD} (the default).`);
  }
  return name as MethodName;
}

/** Fills defaults and validates every option; unknown option names are rejected (likely typos). */
export function resolveMethodOptions(options: Partial<MethodOptions> = {}): MethodOptions {
  for (const key of Object.keys(options)) {
    if (!(KEYS as string[]).includes(key)) {
      throw invalidArgument('method option', `one of ${KEYS.join(', ')}`, key);
    }
  }
  // An option given as undefined takes its default (callers often forward unset CLI flags).
  const given = Object.fromEntries(Object.entries(options).filter(([, v]) => v !== undefined));
  const o = { ...DEFAULT_METHOD_OPTIONS, ...given } as Record<keyof MethodOptions, unknown>;
  const windowStride = o.windowStride;
  if (windowStride !== null) integerAtLeast('windowStride', windowStride, 1, 'Use a stride of at most the native latent size, or omit it for half of it.');
  if (!Array.isArray(o.maskLayers) || o.maskLayers.some((s) => typeof s !== 'string')) {
    throw invalidArgument('maskLayers', 'an array of layer-name substrings', o.maskLayers, 'Use [] for all up-block layers.');
  }
  return {
    stageSplit: numberIn('stageSplit', o.stageSplit, 0, 1, 'It is the fraction of steps spent in stage 1, e.g. 0.5.'),
    pixelInteraction: bool('pixelInteraction', o.pixelInteraction),
    structureWeight: numberIn('structureWeight', o.structureWeight, 0, 1, 'Use 0 to turn guidance off, at most 1.'),
    structureSchedule: oneOf('structureSchedule', o.structureSchedule, ['constant', 'cosine'] as const),
    structureGamma: numberIn('structureGamma', o.structureGamma, 0, Infinity, 'Use 1 for the plain cosine decay.', true),
    structureSpace: oneOf('structureSpace', o.structureSpace, ['eps', 'x0'] as const),
    guidanceSync: bool('guidanceSync', o.guidanceSync),
    mask: bool('mask', o.mask),
    windowJitter: bool('windowJitter', o.windowJitter),
    maskEvery: integerAtLeast('maskEvery', o.maskEvery, 1, 'Use 1 to recompute the mask every step.'),
    maskLayers: [...(o.maskLayers as string[])],
    maskGamma: numberIn('maskGamma', o.maskGamma, 0, Infinity, 'Use 1 for the plain normalised map.', true),
    maskThreshold: numberIn('maskThreshold', o.maskThreshold, 0, 1, 'Use 0 to keep the whole mask.'),
    windowStride: windowStride as number | null,
    previewEvery: integerAtLeast('previewEvery', o.previewEvery, 0, 'Use 0 to turn previews off.'),
  };
}
