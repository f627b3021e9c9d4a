/**
 * A model folder read over HTTP: the optimum ONNX export layout (model_index.json, scheduler/, tokenizer/,
 * text_encoder/, unet/, vae_decoder/, vae_encoder/ where there is one; SDXL's text_encoder_2/; SD3's transformer/
 * with its three text encoders, docs/sd3.md), as src/node/model/folder.ts reads it from disk for Node.
 */
import { AsgdError } from '../../core/errors.ts';
import { textDecoder } from '../../core/platform.ts';
import type { SchedulerConfig } from '../../core/schedulers/types.ts';
import { MISSING_SCHEDULER_CONFIG, MISSING_SCHEDULER_NOTE } from '../../core/schedulers/config.ts';
import type { TokenizerFiles } from '../../core/text/clip-tokenizer.ts';
import type { ModelFamily } from '../../core/model-family.ts';
import { refuseOtherTransformers, sd3ConfigFacts } from '../../core/sd3-config.ts';
import { readFileWith, type FileSource } from './file-source.ts';
import type { WebComponent } from '../device/protocol.ts';

export interface WebModelSpec {
  url: string;
  /** The folder's last path segment, e.g. "shapes-128" (the metadata's model name). */
  name: string;
  family: ModelFamily;
  className: string;
  files: Partial<Record<WebComponent, string>>;
  /** The VAE encoder an upscale needs, where the folder has one (vae_encoder/config.json answered); opened on first use. */
  vaeEncoder?: string;
  schedulerConfig: SchedulerConfig;
  /** shiftFactor: SD3's (latent / scaling_factor + shift_factor is what the decoder takes); 0 or absent elsewhere. */
  vae: { scalingFactor: number; forceUpcast: boolean; shiftFactor?: number };
  forceZerosForEmptyPrompt: boolean;
  unetSampleSize?: number;
  /** The UNet's config sets diffusers' `upcast_attention` (SD 2.1): a float16 conversion keeps the scores float32. */
  unetUpcastAttention: boolean;
  tokenizer: TokenizerFiles;
  tokenizer2?: TokenizerFiles;
  /** SD3's T5 tokenizer (tokenizer_3/tokenizer.json), where the folder has T5 (text_encoder_3). */
  tokenizer3?: TokenizerFiles;
  /** SD3: the transformer's patch size (transformer/config.json patch_size). */
  patchSize?: number;
  /** SD3: the side of the transformer's position table in patches (transformer/config.json pos_embed_max_size). */
  posEmbedMaxSize?: number;
  notes: string[];
}

function parseJson(bytes: Uint8Array, file: string): Record<string, unknown> {
  try {
    // Python's json writes Infinity/NaN, which JSON lacks.
    const value = JSON.parse(textDecoder('utf-8').decode(bytes).replace(/:(\s*)(-?Infinity|NaN)\b/g, ':$1null')) as unknown;
    if (!value || typeof value !== 'object' || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (err) {
    throw new AsgdError(`${file} is not valid JSON`, { kind: 'model', parameter: file, expected: 'a JSON object', received: err instanceof Error ? err.message : String(err), hint: 'Re-export the model or fix the file' });
  }
}

function json(src: FileSource, file: string, optional: boolean): Promise<Record<string, unknown> | undefined> {
  return readFileWith(src, file, optional, (bytes) => parseJson(bytes, file));
}

/**
 * A tokenizer folder's files: CLIP's BPE (vocab.json and merges.txt, else tokenizer.json); T5's tokenizer.json
 * (`t5`: undefined where the folder has none).
 */
async function tokenizerFiles(src: FileSource, dir: string): Promise<TokenizerFiles>;
async function tokenizerFiles(src: FileSource, dir: string, kind: 't5'): Promise<TokenizerFiles | undefined>;
async function tokenizerFiles(src: FileSource, dir: string, kind: 'clip' | 't5' = 'clip'): Promise<TokenizerFiles | undefined> {
  const [vocab, merges, config, special] = await Promise.all([
    kind === 'clip' ? json(src, `${dir}/vocab.json`, true) : undefined,
    kind === 'clip' ? src.get(`${dir}/merges.txt`, true) : undefined,
    json(src, `${dir}/tokenizer_config.json`, true),
    json(src, `${dir}/special_tokens_map.json`, true),
  ]);
  const tokJson = vocab && merges ? undefined : await json(src, `${dir}/tokenizer.json`, true);
  const files: TokenizerFiles = {};
  if (vocab && merges) {
    files.vocab = vocab as Record<string, number>;
    files.merges = textDecoder('utf-8').decode(merges);
  } else if (tokJson) {
    files.tokenizerJson = tokJson;
  } else if (kind === 't5') {
    return undefined;
  } else {
    throw new AsgdError(`The model has no ${dir} files`, { kind: 'model', parameter: dir, expected: 'vocab.json + merges.txt or tokenizer.json', received: 'none', hint: 'Serve the whole optimum export folder' });
  }
  if (config) files.tokenizerConfig = config;
  if (special) files.specialTokensMap = special;
  return files;
}

/** The folder's name, the last segment of its URL (e.g. "shapes-128"; the metadata's model name). */
const folderName = (url: string) => decodeURIComponent(new URL(url).pathname.split('/').filter(Boolean).pop() ?? 'model');

/**
 * An SD3 / SD3.5 folder (optimum's ORTStableDiffusion3Pipeline layout): the transformer, CLIP-L, CLIP-G, T5 where
 * model_index.json lists text_encoder_3 (or, without that entry, where tokenizer_3/tokenizer.json answers), the
 * 16-channel VAE. FLUX and other transformer classes are refused by name, as in Node.
 */
async function readWebSd3(url: string, src: FileSource, index: Record<string, unknown> | undefined, className: string, notes: string[]): Promise<WebModelSpec> {
  const transformer = await json(src, 'transformer/config.json', true);
  refuseOtherTransformers(className, transformer, url);
  const listed = index?.['text_encoder_3'];
  const t5Listed = !(Array.isArray(listed) && listed[0] === null);
  const [scheduler, vae, encoderConfig, tokenizer, tokenizer2, tokenizer3] = await Promise.all([
    json(src, 'scheduler/scheduler_config.json', true),
    json(src, 'vae_decoder/config.json', true),
    json(src, 'vae_encoder/config.json', true),
    tokenizerFiles(src, 'tokenizer'),
    tokenizerFiles(src, 'tokenizer_2'),
    t5Listed ? tokenizerFiles(src, 'tokenizer_3', 't5') : undefined,
  ]);
  if (t5Listed && listed !== undefined && !tokenizer3) {
    throw new AsgdError(`The model lists text_encoder_3 (T5) but has no tokenizer_3/tokenizer.json (${url})`, {
      kind: 'model', parameter: 'tokenizer_3', expected: 'tokenizer_3/tokenizer.json', received: 'none',
      hint: 'Serve the whole optimum export folder (or set text_encoder_3 to [null, null] in model_index.json to run without T5)',
    });
  }
  const facts = sd3ConfigFacts({ transformer, vae, scheduler, hasT5: tokenizer3 !== undefined }, notes);
  return {
    url,
    name: folderName(url),
    family: 'sd3',
    className: className || 'ORTStableDiffusion3Pipeline',
    files: {
      textEncoder: 'text_encoder/model.onnx',
      textEncoder2: 'text_encoder_2/model.onnx',
      ...(tokenizer3 ? { textEncoder3: 'text_encoder_3/model.onnx' } : {}),
      unet: 'transformer/model.onnx',
      vaeDecoder: 'vae_decoder/model.onnx',
    },
    ...(encoderConfig ? { vaeEncoder: 'vae_encoder/model.onnx' } : {}),
    schedulerConfig: facts.schedulerConfig,
    vae: facts.vae,
    forceZerosForEmptyPrompt: index?.['force_zeros_for_empty_prompt'] === true,
    ...(facts.unetSampleSize ? { unetSampleSize: facts.unetSampleSize } : {}),
    unetUpcastAttention: false,
    tokenizer,
    tokenizer2,
    ...(tokenizer3 ? { tokenizer3 } : {}),
    patchSize: facts.patchSize,
    ...(facts.posEmbedMaxSize ? { posEmbedMaxSize: facts.posEmbedMaxSize } : {}),
    notes,
  };
}

export async function readWebModel(url: string, src: FileSource): Promise<WebModelSpec> {
  const notes: string[] = [];
  const index = await json(src, 'model_index.json', false);
  const className = typeof index?.['_class_name'] === 'string' ? (index['_class_name'] as string) : '';
  if (/StableDiffusion3|Flux/i.test(className) || (index && 'transformer' in index)) return readWebSd3(url, src, index, className, notes);
  const family = /XL/i.test(className) || (index && 'text_encoder_2' in index) ? 'sdxl' : 'sd';
  if (/Refiner/i.test(className)) {
    throw new AsgdError('SDXL refiner exports are not supported', { kind: 'model', parameter: 'model', expected: 'an SD 1.x/2.x, SDXL base or SD3 export', received: className });
  }
  const [sched, vaeConfig, encoderConfig, unetConfig, tokenizer, tokenizer2] = await Promise.all([
    json(src, 'scheduler/scheduler_config.json', true),
    json(src, 'vae_decoder/config.json', true),
    json(src, 'vae_encoder/config.json', true),
    json(src, 'unet/config.json', true),
    tokenizerFiles(src, 'tokenizer'),
    family === 'sdxl' ? tokenizerFiles(src, 'tokenizer_2') : Promise.resolve(undefined),
  ]);
  if (!sched) notes.push(MISSING_SCHEDULER_NOTE);
  let scalingFactor = Number(vaeConfig?.['scaling_factor']);
  if (!Number.isFinite(scalingFactor) || scalingFactor <= 0) {
    scalingFactor = family === 'sdxl' ? 0.13025 : 0.18215;
    notes.push(`no VAE scaling_factor: using ${scalingFactor}`);
  }
  const sampleSize = Number(unetConfig?.['sample_size']);
  const files: Partial<Record<WebComponent, string>> = {
    textEncoder: 'text_encoder/model.onnx',
    unet: 'unet/model.onnx',
    vaeDecoder: 'vae_decoder/model.onnx',
    ...(family === 'sdxl' ? { textEncoder2: 'text_encoder_2/model.onnx' } : {}),
  };
  return {
    url,
    name: folderName(url),
    family,
    className: className || (family === 'sdxl' ? 'ORTStableDiffusionXLPipeline' : 'ORTStableDiffusionPipeline'),
    files,
    ...(encoderConfig ? { vaeEncoder: 'vae_encoder/model.onnx' } : {}),
    schedulerConfig: (sched ?? MISSING_SCHEDULER_CONFIG) as SchedulerConfig,
    vae: { scalingFactor, forceUpcast: vaeConfig?.['force_upcast'] === true },
    forceZerosForEmptyPrompt: index?.['force_zeros_for_empty_prompt'] !== false,
    unetSampleSize: Number.isInteger(sampleSize) && sampleSize > 0 ? sampleSize : undefined,
    unetUpcastAttention: unetConfig?.['upcast_attention'] === true,
    tokenizer,
    ...(tokenizer2 ? { tokenizer2 } : {}),
    notes,
  };
}
