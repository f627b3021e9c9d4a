/**
 * Reads a diffusers/optimum ONNX model folder (or the older flat layout) into a ModelSpec: a plain, serialisable
 * description of where each component lives and what its configs say. Sessions are created later, by path, inside
 * the device workers.
 */
import fs from 'node:fs';
import path from 'node:path';
import { AsgdError } from '../../core/errors.ts';
import type { SchedulerConfig } from '../../core/schedulers/types.ts';
import { MISSING_SCHEDULER_CONFIG, MISSING_SCHEDULER_NOTE } from '../../core/schedulers/config.ts';
import type { TokenizerFiles } from '../../core/text/clip-tokenizer.ts';
import { refuseOtherTransformers, sd3ConfigFacts } from '../../core/sd3-config.ts';

export type { ModelFamily } from '../../core/model-family.ts';
import type { ModelFamily } from '../../core/model-family.ts';
export type ModelLayout = 'optimum' | 'flat';

export interface ComponentPaths {
  textEncoder: string;
  textEncoder2?: string;
  /** SD3's T5 encoder (text_encoder_3), optional. */
  textEncoder3?: string;
  /** The denoising network: unet/model.onnx, or transformer/model.onnx for SD3. */
  unet: string;
  vaeDecoder: string;
  vaeEncoder?: string;
}

export interface ModelSpec {
  dir: string;
  layout: ModelLayout;
  family: ModelFamily;
  className: string;
  paths: ComponentPaths;
  schedulerConfig: SchedulerConfig;
  /** latent = (encoded - shiftFactor) * scalingFactor; shiftFactor is 0 except for SD3's VAE. */
  vae: { scalingFactor: number; forceUpcast: boolean; shiftFactor?: number };
  /** The folder the VAE comes from when it is not the model's own (`--vae`, PipelineOptions.vae). */
  vaeDir?: string;
  /** SDXL: zero the unconditional embeddings when no negative prompt is given (model_index.json, default true). */
  forceZerosForEmptyPrompt: boolean;
  /** Native latent size from unet/config.json sample_size (or the static sample shape), if known. */
  unetSampleSize?: number;
  tokenizer: TokenizerFiles;
  tokenizer2?: TokenizerFiles;
  /** SD3's T5 tokenizer (tokenizer_3/tokenizer.json), present with text_encoder_3. */
  tokenizer3?: TokenizerFiles;
  /** SD3: the transformer's patch size (transformer/config.json patch_size, default 2). */
  patchSize?: number;
  /** SD3: the side of the transformer's position-embedding table in patches (transformer/config.json pos_embed_max_size). */
  posEmbedMaxSize?: number;
  /** Config values the loader fell back on, for `asgd info`. */
  notes: string[];
}

function modelError(message: string, parameter: string, hint: string, cause?: unknown): AsgdError {
  return new AsgdError(message, { kind: 'model', parameter, hint, cause });
}

function readJson(file: string, label: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw modelError(`Cannot read ${label} (${file})`, label, 'Check that the file exists and is readable', err);
  }
  try {
    // Python's json writes Infinity/NaN (diffusers saves lambda_min_clipped: -Infinity); JSON has no such values.
    const value = JSON.parse(text.replace(/:(\s*)(-?Infinity|NaN)\b/g, ':$1null')) as unknown;
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (err) {
    throw modelError(`${label} is not valid JSON (${file})`, label, 'Re-export the model or fix the file', err);
  }
}

function readJsonIfExists(file: string, label: string): Record<string, unknown> | undefined {
  return fs.existsSync(file) ? readJson(file, label) : undefined;
}

/** First existing candidate, relative to dir. */
function findFile(dir: string, candidates: string[]): string | undefined {
  for (const c of candidates) {
    const p = path.join(dir, c);
    if (fs.existsSync(p) && fs.statSync(p).isFile()) return p;
  }
  return undefined;
}

export function readTokenizerFiles(dir: string, label: string): TokenizerFiles {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) {
    throw modelError(`The model has no ${label} folder (${dir})`, label, 'Re-export the model with optimum-cli, which writes it');
  }
  const files: TokenizerFiles = {};
  const vocab = path.join(dir, 'vocab.json');
  const merges = path.join(dir, 'merges.txt');
  const tokJson = path.join(dir, 'tokenizer.json');
  if (fs.existsSync(vocab) && fs.existsSync(merges)) {
    files.vocab = readJson(vocab, `${label}/vocab.json`) as Record<string, number>;
    files.merges = fs.readFileSync(merges, 'utf8');
  } else if (fs.existsSync(tokJson)) {
    files.tokenizerJson = readJson(tokJson, `${label}/tokenizer.json`);
  } else {
    throw modelError(
      `The ${label} folder has neither vocab.json + merges.txt nor tokenizer.json (${dir})`,
      label,
      'Re-export the model with optimum-cli, which writes the tokenizer files',
    );
  }
  files.tokenizerConfig = readJsonIfExists(path.join(dir, 'tokenizer_config.json'), `${label}/tokenizer_config.json`);
  files.specialTokensMap = readJsonIfExists(path.join(dir, 'special_tokens_map.json'), `${label}/special_tokens_map.json`);
  return files;
}

/**
 * A model folder's family, from model_index.json's class name and which files are there (none is parsed): SD3 has
 * a transformer (FLUX, named so, too: refused when read), SDXL a second text encoder or XL in its class name.
 */
export function modelFamilyOf(dir: string, className: string): ModelFamily {
  if (findFile(dir, ['transformer/model.onnx']) || /StableDiffusion3|Flux/i.test(className)) return 'sd3';
  const optimum = findFile(dir, ['unet/model.onnx']) !== undefined;
  const textEncoder2 = findFile(dir, [optimum ? 'text_encoder_2/model.onnx' : 'text_encoder_2.onnx']);
  return /XL/i.test(className) || textEncoder2 ? 'sdxl' : 'sd';
}

/** A folder's family as the loader finds it, reading no more than model_index.json (an unreadable one counts as absent). */
export function folderFamily(dir: string): ModelFamily {
  let className = '';
  try {
    const index: unknown = JSON.parse(fs.readFileSync(path.join(dir, 'model_index.json'), 'utf8'));
    const name = (index as Record<string, unknown> | null)?.['_class_name'];
    if (typeof name === 'string') className = name;
  } catch {
    // No index, or a damaged one: the files decide, as they do when the loader reads the folder.
  }
  return modelFamilyOf(dir, className);
}

/** The text-to-image pipeline classes of the exports this tool reads (diffusers' and optimum's names). */
const KNOWN_PIPELINE = /^(ORT|Onnx)?(StableDiffusion(XL|3)?|LatentConsistencyModel)Pipeline$/;

export function readModelFolder(dir: string): ModelSpec {
  const abs = path.resolve(dir);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(abs);
  } catch (err) {
    throw modelError(
      `Model folder not found: ${abs}`,
      'model',
      'Pass the folder written by `optimum-cli export onnx --model <id> <folder>` (the model shipped with asgdiffusion is its models/shapes-128 folder)',
      err,
    );
  }
  if (!stat.isDirectory()) {
    throw modelError(`The model path is not a folder: ${abs}`, 'model', 'Pass the export folder, not a file inside it');
  }
  try {
    fs.accessSync(abs, fs.constants.R_OK | fs.constants.X_OK);
  } catch (err) {
    throw modelError(`The model folder is not readable: ${abs}`, 'model', 'Check its permissions', err);
  }

  const notes: string[] = [];
  const indexFile = path.join(abs, 'model_index.json');
  const modelIndex = readJsonIfExists(indexFile, 'model_index.json');
  const className = typeof modelIndex?.['_class_name'] === 'string' ? (modelIndex['_class_name'] as string) : '';
  if (!modelIndex) notes.push('no model_index.json: family guessed from the files');
  else if (className !== '' && !KNOWN_PIPELINE.test(className)) {
    notes.push(`model_index.json names ${className}, not a text-to-image pipeline this tool knows: loaded by its files (expected e.g. ORTStableDiffusionPipeline)`);
  }

  const family = modelFamilyOf(abs, className);
  checkClassAgainstFiles(abs, className, family);
  if (family === 'sd3') return readSd3Folder(abs, className, modelIndex, notes);

  const optimumUnet = findFile(abs, ['unet/model.onnx']);
  const flatUnet = findFile(abs, ['unet.onnx']);
  let layout: ModelLayout;
  let paths: ComponentPaths;
  const need = (p: string | undefined, label: string, expected: string): string => {
    if (!p) {
      throw modelError(
        `The model folder has no ${label} (${abs})`,
        label,
        `Expected ${expected}; re-export the model with optimum-cli or point at the right folder`,
      );
    }
    return p;
  };
  const refinerLike = (dirName: string, flat: string) =>
    !fs.existsSync(path.join(abs, dirName)) && !fs.existsSync(path.join(abs, flat)) &&
    (fs.existsSync(path.join(abs, 'text_encoder_2')) || fs.existsSync(path.join(abs, 'text_encoder_2.onnx')));
  if (refinerLike('text_encoder', 'text_encoder.onnx') || /Refiner/i.test(className)) {
    throw modelError(
      `SDXL refiner exports are not supported (${abs})`,
      'model',
      'The folder has only the second text encoder, as refiner exports do; use an SDXL base export (the refiner is an image-to-image stage)',
    );
  }
  if (optimumUnet) {
    layout = 'optimum';
    paths = {
      unet: optimumUnet,
      textEncoder: need(findFile(abs, ['text_encoder/model.onnx']), 'text_encoder', 'text_encoder/model.onnx'),
      vaeDecoder: need(findFile(abs, ['vae_decoder/model.onnx']), 'vae_decoder', 'vae_decoder/model.onnx'),
      vaeEncoder: findFile(abs, ['vae_encoder/model.onnx']),
      textEncoder2: findFile(abs, ['text_encoder_2/model.onnx']),
    };
  } else if (flatUnet) {
    layout = 'flat';
    paths = {
      unet: flatUnet,
      textEncoder: need(findFile(abs, ['text_encoder.onnx']), 'text_encoder', 'text_encoder.onnx'),
      vaeDecoder: need(findFile(abs, ['vae_decoder.onnx']), 'vae_decoder', 'vae_decoder.onnx'),
      vaeEncoder: findFile(abs, ['vae_encoder.onnx']),
      textEncoder2: findFile(abs, ['text_encoder_2.onnx']),
    };
    notes.push('flat layout (unet.onnx at the root)');
  } else if (modelIndex || fs.existsSync(path.join(abs, 'unet'))) {
    throw modelError(
      `The model folder has no UNet (${abs})`,
      'unet',
      'Expected unet/model.onnx (optimum layout) or unet.onnx (flat layout); re-export the model with optimum-cli',
    );
  } else {
    throw modelError(
      `Unknown model layout: ${abs} holds neither model_index.json nor unet/model.onnx nor unet.onnx`,
      'model',
      'Export a Stable Diffusion model with `optimum-cli export onnx --model <id> <folder>` and pass that folder',
    );
  }

  const schedFile = findFile(abs, ['scheduler/scheduler_config.json', 'scheduler_config.json']);
  const schedulerConfig = (schedFile ? readJson(schedFile, 'scheduler/scheduler_config.json') : MISSING_SCHEDULER_CONFIG) as SchedulerConfig;
  if (!schedFile) notes.push(MISSING_SCHEDULER_NOTE);

  const vaeConfig =
    readJsonIfExists(path.join(abs, 'vae_decoder', 'config.json'), 'vae_decoder/config.json') ??
    readJsonIfExists(path.join(abs, 'vae', 'config.json'), 'vae/config.json');
  let scalingFactor = Number(vaeConfig?.['scaling_factor']);
  if (!Number.isFinite(scalingFactor) || scalingFactor <= 0) {
    scalingFactor = family === 'sdxl' ? 0.13025 : 0.18215;
    notes.push(`no VAE scaling_factor: using ${scalingFactor}`);
  }
  const forceUpcast = vaeConfig?.['force_upcast'] === true;

  const unetConfig = readJsonIfExists(path.join(abs, 'unet', 'config.json'), 'unet/config.json');
  const sampleSize = Number(unetConfig?.['sample_size']);

  const tokenizer = readTokenizerFiles(path.join(abs, 'tokenizer'), 'tokenizer');
  const tokenizer2 =
    family === 'sdxl' ? readTokenizerFiles(path.join(abs, 'tokenizer_2'), 'tokenizer_2') : undefined;
  if (family === 'sdxl' && !paths.textEncoder2) {
    throw modelError(
      `The SDXL model has no second text encoder (${abs})`,
      'text_encoder_2',
      'Expected text_encoder_2/model.onnx; re-export the model with optimum-cli',
    );
  }

  return {
    dir: abs,
    layout,
    family,
    className: className || (family === 'sdxl' ? 'ORTStableDiffusionXLPipeline' : 'ORTStableDiffusionPipeline'),
    paths,
    schedulerConfig,
    vae: { scalingFactor, forceUpcast },
    forceZerosForEmptyPrompt: modelIndex?.['force_zeros_for_empty_prompt'] !== false,
    unetSampleSize: Number.isInteger(sampleSize) && sampleSize > 0 ? sampleSize : undefined,
    tokenizer,
    tokenizer2,
    notes,
  };
}

/**
 * A UNet folder whose model_index.json class names SD3 or SDXL but which lacks that family's component: the class
 * is named as the problem (it would otherwise read as an SD3 folder without a transformer, or an SDXL one without
 * its second encoder).
 */
function checkClassAgainstFiles(abs: string, className: string, family: ModelFamily): void {
  const unet = findFile(abs, ['unet/model.onnx', 'unet.onnx']);
  const needed =
    family === 'sd3' ? ['transformer/model.onnx'] : family === 'sdxl' ? ['text_encoder_2/model.onnx', 'text_encoder_2.onnx'] : [];
  // A FLUX class is refused by name where the SD3 folder is read.
  if (!unet || needed.length === 0 || findFile(abs, needed) || /Flux/i.test(className)) return;
  const file = needed[unet.endsWith('unet.onnx') && needed.length > 1 ? 1 : 0]!;
  const name = family === 'sd3' ? 'SD3' : 'SDXL';
  throw new AsgdError(`model_index.json names ${className}, an ${name} pipeline, which the folder's files do not fit (${abs})`, {
    kind: 'model', parameter: 'model_index.json',
    expected: `${file} for the ${name} class it names`,
    received: `no ${file}; the folder has ${path.relative(abs, unet).split(path.sep).join('/')}`,
    hint: `If the folder is the export of another model, fix _class_name in model_index.json (e.g. ORTStableDiffusionPipeline); else re-export the model with optimum-cli`,
  });
}

/**
 * An SD3 / SD3.5 folder (optimum's ORTStableDiffusion3Pipeline layout). FLUX exports share the transformer/ layout
 * but not the contract (packed latents, img_ids / txt_ids, guidance): refused by name.
 */
function readSd3Folder(abs: string, className: string, modelIndex: Record<string, unknown> | undefined, notes: string[]): ModelSpec {
  const transformerConfig = readJsonIfExists(path.join(abs, 'transformer', 'config.json'), 'transformer/config.json');
  refuseOtherTransformers(className, transformerConfig, abs);
  const need = (rel: string, label: string, why: string): string => {
    const p = findFile(abs, [rel]);
    if (!p) throw modelError(`The SD3 model folder has no ${label} (${abs})`, label, `Expected ${rel} (${why}); re-export the model with optimum-cli`);
    return p;
  };
  const paths: ComponentPaths = {
    unet: need('transformer/model.onnx', 'transformer', 'the SD3 transformer'),
    textEncoder: need('text_encoder/model.onnx', 'text_encoder', 'CLIP-L, which SD3 needs'),
    textEncoder2: need('text_encoder_2/model.onnx', 'text_encoder_2', 'CLIP-G, which SD3 needs'),
    textEncoder3: findFile(abs, ['text_encoder_3/model.onnx']),
    vaeDecoder: need('vae_decoder/model.onnx', 'vae_decoder', 'the 16-channel VAE decoder'),
    vaeEncoder: findFile(abs, ['vae_encoder/model.onnx']),
  };
  const schedFile = findFile(abs, ['scheduler/scheduler_config.json']);
  const facts = sd3ConfigFacts({
    transformer: transformerConfig,
    vae: readJsonIfExists(path.join(abs, 'vae_decoder', 'config.json'), 'vae_decoder/config.json'),
    scheduler: schedFile ? readJson(schedFile, 'scheduler/scheduler_config.json') : undefined,
    hasT5: paths.textEncoder3 !== undefined,
  }, notes);
  const tokenizer3 = paths.textEncoder3 ? readTokenizerFiles(path.join(abs, 'tokenizer_3'), 'tokenizer_3') : undefined;
  if (tokenizer3 && !tokenizer3.tokenizerJson) {
    throw modelError(`The tokenizer_3 folder has no tokenizer.json (${abs})`, 'tokenizer_3', 'The T5 tokenizer is read from tokenizer.json; re-export the model with optimum-cli');
  }
  return {
    dir: abs,
    layout: 'optimum',
    family: 'sd3',
    className: className || 'ORTStableDiffusion3Pipeline',
    paths,
    ...facts,
    forceZerosForEmptyPrompt: modelIndex?.['force_zeros_for_empty_prompt'] === true,
    tokenizer: readTokenizerFiles(path.join(abs, 'tokenizer'), 'tokenizer'),
    tokenizer2: readTokenizerFiles(path.join(abs, 'tokenizer_2'), 'tokenizer_2'),
    tokenizer3,
    notes,
  };
}

/**
 * Replaces the model's VAE with a separate VAE folder (`--vae`): an optimum export folder with vae_decoder/ (and
 * optionally vae_encoder/), or a folder holding model.onnx + config.json directly.
 */
export function withVaeFolder(spec: ModelSpec, dir: string): ModelSpec {
  const abs = path.resolve(dir);
  const decoder = findFile(abs, ['vae_decoder/model.onnx', 'model.onnx', 'vae_decoder.onnx']);
  if (!decoder) {
    throw modelError(`The VAE folder has no decoder (${abs})`, 'vae', 'Expected vae_decoder/model.onnx or model.onnx in the folder given to --vae');
  }
  const config =
    readJsonIfExists(path.join(path.dirname(decoder), 'config.json'), 'vae config.json') ??
    readJsonIfExists(path.join(abs, 'config.json'), 'vae config.json');
  const sf = Number(config?.['scaling_factor']);
  return {
    ...spec,
    paths: { ...spec.paths, vaeDecoder: decoder, vaeEncoder: findFile(abs, ['vae_encoder/model.onnx', 'vae_encoder.onnx']) },
    vae: {
      scalingFactor: Number.isFinite(sf) && sf > 0 ? sf : spec.vae.scalingFactor,
      forceUpcast: config?.['force_upcast'] === true,
      ...(spec.vae.shiftFactor !== undefined || config?.['shift_factor'] !== undefined
        ? { shiftFactor: Number.isFinite(Number(config?.['shift_factor'])) ? Number(config?.['shift_factor']) : spec.vae.shiftFactor }
        : {}),
    },
    vaeDir: abs,
    notes: [...spec.notes, `VAE from ${abs}`],
  };
}
