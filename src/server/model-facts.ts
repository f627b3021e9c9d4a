/**
 * What the server needs to know of a model folder without loading it: its native size (for estimates and size
 * limits), its scheduler config (PNDM runs one step more than asked, so estimates count the scheduler's steps), and
 * its family, latent channels and SD3 patch size (a job's settings are checked against the model before it is
 * queued, as the library's check stage does). Read by the local engine and by fleet workers, which advertise it.
 * No ONNX file and no tokenizer is read.
 */
import fs from 'node:fs';
import path from 'node:path';
import { MISSING_SCHEDULER_CONFIG } from '../core/schedulers/config.ts';
import type { SchedulerConfig } from '../core/schedulers/types.ts';
import { modelFamilyOf, SD3_SCHEDULER_CONFIG, type ModelFamily } from '../node/model/folder.ts';

export interface ModelFolderFacts {
  nativeWidth?: number;
  nativeHeight?: number;
  schedulerConfig?: SchedulerConfig;
  /** As the model loader determines it (node/model/folder.ts modelFamilyOf). */
  family?: ModelFamily;
  /** Channels of the latent: the UNet's (the transformer's for SD3) in_channels; default 4, 16 for SD3. */
  latentChannels?: number;
  /** SD3: the transformer's patch size (default 2). */
  patchSize?: number;
}

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/** The facts that can be read; a missing or damaged file leaves its fact out (loading the model names the problem). */
export function readModelFolderFacts(dir: string): ModelFolderFacts {
  const index = readJson(path.join(dir, 'model_index.json'));
  const family = modelFamilyOf(dir, typeof index?.['_class_name'] === 'string' ? index['_class_name'] : '');
  const sd3 = family === 'sd3';
  const denoiser = readJson(path.join(dir, sd3 ? 'transformer' : 'unet', 'config.json'));
  const positive = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : undefined);
  const sampleSize = positive(denoiser?.['sample_size']);
  // The same files, in the same order, as the model loader reads; none means diffusers' Euler defaults there too.
  const schedFile = (sd3 ? ['scheduler/scheduler_config.json'] : ['scheduler/scheduler_config.json', 'scheduler_config.json']).map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
  const schedulerConfig = schedFile ? readJson(schedFile) : sd3 ? SD3_SCHEDULER_CONFIG : MISSING_SCHEDULER_CONFIG;
  return {
    ...(sampleSize ? { nativeWidth: sampleSize * 8, nativeHeight: sampleSize * 8 } : {}),
    ...(schedulerConfig ? { schedulerConfig: schedulerConfig as SchedulerConfig } : {}),
    family,
    latentChannels: positive(denoiser?.['in_channels']) ?? (sd3 ? 16 : 4),
    ...(sd3 ? { patchSize: positive(denoiser?.['patch_size']) ?? 2 } : {}),
  };
}
