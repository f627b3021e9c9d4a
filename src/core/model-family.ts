/** The model families this project runs, their names as messages write them, and what a folder may leave unsaid. */
export type ModelFamily = 'sd' | 'sdxl' | 'sd3';

export const FAMILY_NAMES: Readonly<Record<ModelFamily, string>> = Object.freeze({ sd: 'Stable Diffusion 1.x/2.x', sdxl: 'SDXL', sd3: 'Stable Diffusion 3' });

/**
 * The native size in pixels when the denoiser's config.json has no sample_size (and the export fixes no input size):
 * SD 1.x's 512 (2.x 768-px models record theirs), SDXL's and SD3's 1024.
 */
export const DEFAULT_NATIVE_SIZE: Readonly<Record<ModelFamily, number>> = Object.freeze({ sd: 512, sdxl: 1024, sd3: 1024 });

/** The denoiser's config file, whose sample_size gives the native size. */
export const denoiserConfigFile = (family: ModelFamily): string => (family === 'sd3' ? 'transformer/config.json' : 'unet/config.json');

/**
 * A loaded model's native size in pixels: its denoiser config's sample_size, else the size its export fixes
 * (`staticLatentHeight`), else the family's default, which `notes` then says is assumed; at least 64.
 */
export function nativeSize(family: ModelFamily, sampleSize: number | undefined, staticLatentHeight: unknown, notes: string[]): number {
  const fallback = DEFAULT_NATIVE_SIZE[family];
  if (!sampleSize && typeof staticLatentHeight !== 'number') notes.push(`no ${denoiserConfigFile(family)} sample_size: assuming a native size of ${fallback} px`);
  const px = sampleSize ? sampleSize * 8 : typeof staticLatentHeight === 'number' && staticLatentHeight > 0 ? staticLatentHeight * 8 : fallback;
  return Math.max(64, px);
}

/** The family's name with its article, as a sentence says it ("an SDXL model"). */
export const aFamily = (family: ModelFamily): string => `${family === 'sdxl' ? 'an' : 'a'} ${FAMILY_NAMES[family]}`;

/**
 * The latent grid of a family's denoiser and the largest latent side one call takes: SD3's transformer works in
 * patches (patch_size, default 2) and holds a position table of pos_embed_max_size patches a side; the UNets take
 * multiples of 8 at any size (nothing set).
 */
export function denoiserGrid(family: ModelFamily, patchSize?: number, posEmbedMaxSize?: number): { latentMultiple?: number; maxUnitLatentSize?: number } {
  if (family !== 'sd3') return {};
  const patch = patchSize ?? 2;
  return { latentMultiple: patch, ...(posEmbedMaxSize ? { maxUnitLatentSize: posEmbedMaxSize * patch } : {}) };
}

/** SD3 predicts a flow-matching velocity: only flow-euler fits it, and flow-euler fits no other family (no name: nothing to refuse). */
export const schedulerFitsFamily = (scheduler: string | undefined, family: ModelFamily): boolean =>
  scheduler === undefined || (scheduler === 'flow-euler') === (family === 'sd3');
