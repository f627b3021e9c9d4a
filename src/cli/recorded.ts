/**
 * Re-runs (`--from FILE`): the settings an image records, read back and fitted to this run (the model, its family,
 * the VAE and the size may differ from the recorded ones; each difference is said).
 */
import path from 'node:path';
import { AsgdError } from '../core/errors.ts';
import type { GenerationMetadata } from '../core/metadata.ts';
import { type GenerateParams } from '../core/params.ts';
import { UPSCALE_OPTIONS, optionSpec } from '../core/options/registry.ts';
import type { PipelineOptions } from '../node/pipeline.ts';
import { folderFamily } from '../node/model/folder.ts';
import { aFamily, schedulerFitsFamily } from '../core/model-family.ts';

export function damagedRecord(file: string, why: string): AsgdError {
  return new AsgdError(`The asgdiffusion parameters in ${file} are damaged (${why})`, {
    kind: 'invalid-argument', parameter: 'image', hint: 'The file was changed after it was written; give the settings as flags (asgd read shows its parameters text, where there is one)',
  });
}

export async function readFrom(file: string): Promise<GenerationMetadata> {
  const { readImageMetadata } = await import('../node/image/write.ts');
  const r = await readImageMetadata(file);
  if (r.damaged) throw damagedRecord(file, r.damaged);
  if (!r.metadata) {
    throw new AsgdError(`No asgdiffusion parameters found in ${file}`, {
      kind: 'invalid-argument', parameter: 'from', hint: 'Pass an image written by `asgd generate` (PNG, JPEG or WebP)',
    });
  }
  return r.metadata;
}

/**
 * The scheduler a re-run takes from the image: the recorded one, except PNDM or LMS at another size, which the
 * model's config chose at the recorded size; at the new one the library chooses again (Euler above the native size
 * for the patch methods, with its warning), as it would for a fresh run.
 */
export function fromScheduler(from: GenerationMetadata | undefined, given: { width?: number; height?: number }): string | undefined {
  if (!from) return undefined;
  const resized = (given.width !== undefined && given.width !== from.width) || (given.height !== undefined && given.height !== from.height);
  return resized && (from.scheduler === 'pndm' || from.scheduler === 'lms') ? undefined : from.scheduler;
}

/**
 * What a re-run (--from) takes from the record besides the settings: the attention fusion the image was made with
 * (it changes the last bits), unless the flag is given. Returns warnings: another model than the recorded one.
 */
export function recordedRun(read: GenerationMetadata | undefined, modelDir: string, flags: PipelineOptions, file: string | undefined): string[] {
  if (!read) return [];
  if (read.fusedAttention && flags.fuseAttention === undefined) flags.fuseAttention = true;
  if (read.unetPrecision === 'float16' && flags.unetPrecision === undefined) flags.unetPrecision = 'float16';
  const name = path.basename(path.resolve(modelDir));
  const notes = recordedVae(read, flags.vae, file);
  if (read.model?.name === undefined || read.model.name === name) return notes;
  return [`${file} was made with the model ${read.model.name}; this run uses ${name} (${path.resolve(modelDir)}), so the image will differ: pass -m with the folder of ${read.model.name} to reproduce it`, ...notes];
}

/** A re-run decoding with another VAE than the recorded one (a separate --vae folder, or the model's own). */
function recordedVae(read: GenerationMetadata, vaeFlag: string | undefined, file: string | undefined): string[] {
  const recorded = read.model?.vae;
  const now = vaeFlag === undefined ? undefined : path.basename(path.resolve(vaeFlag));
  if (recorded === now) return [];
  if (now === undefined) return [`${file} was decoded with the VAE ${recorded} (--vae); this run uses the model's own, so the image may differ: pass --vae with the folder of ${recorded} to reproduce it`];
  // No record is also what every image written before --vae was recorded holds, --vae or not: both are named.
  if (recorded === undefined) {
    return [`${file} records no --vae (it was decoded with the model's own VAE, or written before --vae was recorded); this run uses --vae ${now}, so the image may differ: leave --vae out to reproduce an image made without one`];
  }
  return [`${file} was decoded with the VAE ${recorded} (--vae); this run uses --vae ${now}, so the image may differ: pass --vae with the folder of ${recorded} to reproduce it`];
}

/**
 * A re-run (--from) on a model of another family than the recorded one goes ahead, as on another model of the same
 * family: the recorded settings that only the recorded family takes (SDXL's original size; SD3's flow-matching
 * scheduler, or another family's scheduler on SD3) are left out, with a warning. Flags given stay (the check stage
 * names them).
 */
export function forModelFamily<P extends Pick<GenerateParams, 'originalSize' | 'scheduler'>>(
  params: P, given: { originalSize?: unknown; scheduler?: unknown }, modelDir: string, file: string | undefined,
): { params: P; notes: string[] } {
  if (file === undefined) return { params, notes: [] };
  const family = folderFamily(path.resolve(modelDir));
  const notes: string[] = [];
  const out = { ...params };
  const o = params.originalSize;
  if (given.originalSize === undefined && o !== undefined && family !== 'sdxl') {
    delete out.originalSize;
    notes.push(`${file} records SDXL's original size ${o.width}x${o.height}, which ${aFamily(family)} model does not take: left out`);
  }
  const s = params.scheduler;
  if (given.scheduler === undefined && s !== undefined && !schedulerFitsFamily(s, family)) {
    delete out.scheduler;
    const own = family === 'sd3' ? 'its flow-euler is used' : 'the model\'s own scheduler is used (--scheduler picks another)';
    notes.push(`${file} records the ${s} scheduler, which does not fit ${aFamily(family)} model: ${own}`);
  }
  return { params: out, notes };
}

/**
 * A re-run of a recorded upscale at its recorded size: the pixel limit it needs, where its output is above the
 * default limit (the first run was given a larger one; the record keeps the size, not the flag).
 */
export function recordedLimit(record: GenerationMetadata | undefined): number | undefined {
  if (!record?.upscale) return undefined;
  const pixels = record.width * record.height;
  return pixels > Number(optionSpec(UPSCALE_OPTIONS, 'maxPixels').default) ? pixels : undefined;
}
