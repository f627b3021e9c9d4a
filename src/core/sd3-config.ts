/**
 * What an SD3 folder's config files say (docs/sd3.md), read the same way from disk (src/node/model/folder.ts) and over
 * HTTP (src/browser/model/web-model.ts): FLUX and other transformer classes refused by name, the transformer's patch
 * size and position table, the VAE's scaling and shift with SD3's values where the config lacks them, the scheduler
 * a folder without its config gets, and the note for a folder without T5. Portable.
 */
import { AsgdError } from './errors.ts';
import type { SchedulerConfig } from './schedulers/types.ts';

/** SD3's scheduler where the folder has no scheduler config. */
export const SD3_SCHEDULER_CONFIG: Readonly<SchedulerConfig> = Object.freeze({ _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 3.0 });

export const NO_T5_NOTE = 'no text_encoder_3 (T5): its part of the text conditioning is zeros, as diffusers does without it (prompt adherence is weaker)';

type Json = Record<string, unknown> | undefined;

function modelError(message: string, parameter: string, hint: string): AsgdError {
  return new AsgdError(message, { kind: 'model', parameter, hint });
}

/** The class transformer/config.json names ('' where it names none). */
const transformerClassOf = (config: Json): string => (typeof config?.['_class_name'] === 'string' ? (config['_class_name'] as string) : '');

/**
 * Refuses a transformer folder that is not SD3's: FLUX shares the transformer/ layout but not the contract (packed
 * latents, img_ids / txt_ids, guidance); another class is named. `where`: the folder (a path or a URL).
 */
export function refuseOtherTransformers(className: string, transformerConfig: Json, where: string): void {
  const transformerClass = transformerClassOf(transformerConfig);
  if (/Flux/i.test(className) || /Flux/i.test(transformerClass)) {
    throw modelError(
      `FLUX exports are not supported (${where})`,
      'model',
      'FLUX has a different contract (packed latents, img_ids/txt_ids, distilled guidance); use a Stable Diffusion 1.x/2.x, SDXL or SD3 export',
    );
  }
  if (transformerClass && transformerClass !== 'SD3Transformer2DModel') {
    throw modelError(`Unsupported transformer class ${transformerClass} (${where})`, 'transformer', 'Only SD3Transformer2DModel (Stable Diffusion 3 / 3.5) transformers are supported');
  }
}

export interface Sd3ConfigFacts {
  schedulerConfig: SchedulerConfig;
  vae: { scalingFactor: number; forceUpcast: boolean; shiftFactor: number };
  /** transformer/config.json's sample_size (latent pixels), where it gives a valid one. */
  unetSampleSize?: number;
  patchSize: number;
  posEmbedMaxSize?: number;
}

/**
 * The facts of an SD3 folder's configs (each absent where the folder has none); what is assumed goes to `notes`,
 * as does a folder without T5 (`hasT5` false).
 */
export function sd3ConfigFacts(configs: { transformer: Json; vae: Json; scheduler: Json; hasT5: boolean }, notes: string[]): Sd3ConfigFacts {
  if (!configs.hasT5) notes.push(NO_T5_NOTE);
  if (!configs.scheduler) notes.push('no scheduler config: FlowMatchEulerDiscreteScheduler with shift 3 (SD3\'s)');
  let scalingFactor = Number(configs.vae?.['scaling_factor']);
  if (!Number.isFinite(scalingFactor) || scalingFactor <= 0) {
    scalingFactor = 1.5305;
    notes.push(`no VAE scaling_factor: using SD3's ${scalingFactor}`);
  }
  let shiftFactor = Number(configs.vae?.['shift_factor']);
  if (!Number.isFinite(shiftFactor)) {
    shiftFactor = 0.0609;
    notes.push(`no VAE shift_factor: using SD3's ${shiftFactor}`);
  }
  const t = configs.transformer;
  const sampleSize = Number(t?.['sample_size']);
  const patch = Number(t?.['patch_size'] ?? 2);
  if (!Number.isInteger(patch) || patch < 1) {
    throw modelError(`transformer/config.json has an invalid patch_size (${String(t?.['patch_size'])})`, 'transformer', 'Expected a positive integer (2 for SD3)');
  }
  const posEmbed = Number(t?.['pos_embed_max_size']);
  return {
    schedulerConfig: (configs.scheduler ?? SD3_SCHEDULER_CONFIG) as SchedulerConfig,
    vae: { scalingFactor, forceUpcast: configs.vae?.['force_upcast'] === true, shiftFactor },
    ...(Number.isInteger(sampleSize) && sampleSize > 0 ? { unetSampleSize: sampleSize } : {}),
    patchSize: patch,
    ...(Number.isInteger(posEmbed) && posEmbed > 0 ? { posEmbedMaxSize: posEmbed } : {}),
  };
}
