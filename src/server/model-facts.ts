/**
 * What the server needs to know of a model folder without loading it: its native size (for estimates and size
 * limits), its scheduler config (PNDM runs one step more than asked, so estimates count the scheduler's steps), and
 * its family, latent channels and SD3 patch size (a job's settings are checked against the model before it is
 * queued, as the library's check stage does). Read by the local engine and by fleet workers, which advertise it.
 * No tokenizer is read, no session opened; of an ONNX file only the graph's inputs are read, where the denoiser's
 * config gives no sample_size (node/model/onnx-inputs.ts: a static-shape export's sample size).
 */
import fs from 'node:fs';
import path from 'node:path';
import { AsgdError } from '../core/errors.ts';
import { MISSING_SCHEDULER_CONFIG } from '../core/schedulers/config.ts';
import type { SchedulerConfig } from '../core/schedulers/types.ts';
import { folderFamily, readModelFolder, type ModelFamily } from '../node/model/folder.ts';
import { SD3_SCHEDULER_CONFIG } from '../core/sd3-config.ts';
import { readOnnxInputs } from '../node/model/onnx-inputs.ts';
import { nativeSize } from '../core/model-family.ts';

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
  /** SD3: the side of the transformer's position table in patches (pos_embed_max_size), when its config gives it. */
  posEmbedMaxSize?: number;
}

function readJson(file: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(fs.readFileSync(file, 'utf8'));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The static height of the denoiser's sample input (latent pixels) where its ONNX file fixes it, as the pipeline
 * reads it from the session's inputs (pipeline.ts); undefined for dynamic sizes or a file that cannot be read.
 */
function staticSampleSize(dir: string, sd3: boolean): number | undefined {
  let file: string;
  try {
    file = readModelFolder(dir).paths.unet;
  } catch {
    file = path.join(dir, sd3 ? 'transformer' : 'unet', 'model.onnx');
  }
  try {
    const inputs = readOnnxInputs(file);
    const sample = inputs.find((i) => i.name === 'sample' || i.name === 'hidden_states') ?? inputs[0];
    const h = sample?.dims[2];
    return typeof h === 'number' && h > 0 ? h : undefined;
  } catch {
    return undefined;
  }
}

const square = (px: number) => ({ nativeWidth: px, nativeHeight: px });

/** The facts that can be read; a missing or damaged file leaves its fact out (loading the model names the problem). */
export function readModelFolderFacts(dir: string): ModelFolderFacts {
  const family = folderFamily(dir);
  const sd3 = family === 'sd3';
  const denoiser = readJson(path.join(dir, sd3 ? 'transformer' : 'unet', 'config.json'));
  const positive = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v > 0 ? v : undefined);
  const sampleSize = positive(denoiser?.['sample_size']);
  // The same files, in the same order, as the model loader reads; none means diffusers' Euler defaults there too.
  const schedFile = (sd3 ? ['scheduler/scheduler_config.json'] : ['scheduler/scheduler_config.json', 'scheduler_config.json']).map((f) => path.join(dir, f)).find((f) => fs.existsSync(f));
  const schedulerConfig = schedFile ? readJson(schedFile) : sd3 ? SD3_SCHEDULER_CONFIG : MISSING_SCHEDULER_CONFIG;
  return {
    // Without a sample_size, the size the pipeline takes: a static-shape export's, else the family's default.
    // As the pipelines describe a loaded model (the export read only where the config gives no size).
    ...square(nativeSize(family, sampleSize, sampleSize ? undefined : staticSampleSize(dir, sd3), [])),
    ...(schedulerConfig ? { schedulerConfig: schedulerConfig as SchedulerConfig } : {}),
    family,
    latentChannels: positive(denoiser?.['in_channels']) ?? (sd3 ? 16 : 4),
    ...(sd3 ? { patchSize: positive(denoiser?.['patch_size']) ?? 2 } : {}),
    ...(sd3 && positive(denoiser?.['pos_embed_max_size']) ? { posEmbedMaxSize: positive(denoiser?.['pos_embed_max_size']) } : {}),
  };
}

/**
 * The model folders a server or worker is started with, checked at the start rather than at the first job: each
 * must be one the model loader can load (`loadable`: the library's engine; a test's engine brings its own
 * folders), and no two may share a name, since jobs name a model by its folder's name.
 */
export function checkModelFolders(dirs: string[], loadable: boolean): { name: string; dir: string }[] {
  const entries = dirs.map((d) => ({ name: path.basename(path.resolve(d)), dir: path.resolve(d) }));
  for (const e of entries) {
    if (loadable) {
      try {
        readModelFolder(e.dir);
      } catch (err) {
        if (!(err instanceof AsgdError)) throw err;
        throw new AsgdError(`--model ${e.dir} cannot be served: ${err.summary}`, {
          kind: err.kind, parameter: '--model',
          ...(err.expected !== undefined ? { expected: err.expected } : {}),
          ...(err.received !== undefined ? { received: err.received } : {}),
          ...(err.hint !== undefined ? { hint: err.hint } : {}),
          cause: err,
        });
      }
    } else if (!fs.existsSync(e.dir) || !fs.statSync(e.dir).isDirectory()) {
      throw new AsgdError('Invalid --model', { kind: 'invalid-argument', parameter: '--model', expected: 'a model folder', received: e.dir });
    }
  }
  for (const e of entries) {
    const twin = entries.find((o) => o !== e && o.name === e.name);
    if (twin) {
      throw new AsgdError(`Two --model folders have the same name ${e.name} (${e.dir} and ${twin.dir})`, {
        kind: 'invalid-argument', parameter: '--model', hint: 'Jobs name a model by its folder\'s name: rename one of them',
      });
    }
  }
  return entries;
}
