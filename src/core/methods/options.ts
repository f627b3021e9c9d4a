/**
 * Options shared by the high-resolution methods, their defaults, and validation (AsgdError naming the
 * option). Options a method does not use are accepted and ignored (e.g. structureWeight for `direct`).
 * Portable: no Node APIs.
 */
import { invalidArgument } from '../errors.ts';
import { DEFAULT_METHOD, METHOD_NAMES, METHOD_OPTIONS, type MethodName } from '../options/registry.ts';
import { checkOption, refuseUnknownFields } from '../options/spec.ts';
import type { StructureSchedule, StructureSpace } from './guidance.ts';

export { DEFAULT_METHOD, METHOD_NAMES };

export interface MethodOptions {
  /**
   * Fraction of the steps spent in stage 1: S = round(T * stageSplit), in [0, 1]. Default 0.8, measured
   * (docs/repetition.md): with 0.5 the stage-2 windows still invent objects at 16x area.
   */
  stageSplit: number;
  /** Shuffle every latent element across the N patches each stage-1 step (CutDiffusion). */
  pixelInteraction: boolean;
  /**
   * Pixel interaction at stage-1 steps k with k % interactionEvery == 0 only (1, the default: every step). Between
   * those steps no patch depends on another's output but the key patch's, so on several devices the patches run
   * ahead of each other (staged.ts); the result depends on the setting, never on the devices.
   */
  interactionEvery: number;
  /**
   * The last round(S * interactionTail) stage-1 steps interact at every step whatever interactionEvery says, in
   * [0, 1] (0, the default: none). Late in stage 1 the structure guidance has decayed, and pixel interaction is what
   * keeps the patches' details consistent (docs/fidelity.md).
   */
  interactionTail: number;
  /**
   * Which patches a pixel-interaction step shuffles together: 'all' (default, CutDiffusion's) or 'lines' (one phase
   * row of the polyphase grid at even steps, one phase column at odd ones: pixel-interaction.ts interactionGroups).
   */
  interactionGroups: 'all' | 'lines';
  /** With 'lines': interacting steps the rows (then the columns) hold before they swap (>= 1). */
  linesPeriod: number;
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
  /**
   * Stage-2 grids with a multiple of K windows per step (windows.ts planWindowsFor), e.g. K = the device count so
   * that every round fills every device; 0 (default): one grid of stride windowStride.
   */
  stage2Windows: number;
}

/** The defaults, from the option registry (options/registry.ts), where each default is stated once. */
export const DEFAULT_METHOD_OPTIONS: Readonly<MethodOptions> = Object.freeze(
  Object.fromEntries(METHOD_OPTIONS.map((o) => [o.key, o.default])) as unknown as MethodOptions,
);

const KEYS = METHOD_OPTIONS.map((o) => o.key) as readonly string[];

export function validateMethodName(name: unknown): MethodName {
  if (typeof name !== 'string' || !(METHOD_NAMES as readonly string[]).includes(name)) {
    throw invalidArgument('method', `one of ${METHOD_NAMES.join(', ')}`, name, `Use ${DEFAULT_METHOD} (the default).`);
  }
  return name as MethodName;
}

/** Fills defaults and validates every option; unknown option names are rejected (likely typos). */
export function resolveMethodOptions(options: Partial<MethodOptions> = {}): MethodOptions {
  if (!options || typeof options !== 'object') throw invalidArgument('methodOptions', 'an object of method options', options);
  refuseUnknownFields(options, KEYS, 'methodOptions');
  const out: Record<string, unknown> = {};
  for (const spec of METHOD_OPTIONS) {
    // An option given as undefined takes its default (callers often forward unset CLI flags).
    const given = (options as Record<string, unknown>)[spec.key];
    const value = checkOption(spec, given === undefined ? spec.default : given);
    out[spec.key] = Array.isArray(value) ? [...value] : value;
  }
  return out as unknown as MethodOptions;
}
