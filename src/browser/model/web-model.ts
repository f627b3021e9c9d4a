/**
 * A model folder read over HTTP: the optimum ONNX export layout (model_index.json, scheduler/, tokenizer/,
 * text_encoder/, unet/, vae_decoder/, vae_encoder/ where there is one), as src/node/model/folder.ts reads it from disk for Node.
 */
import { AsgdError } from '../../core/errors.ts';
import { textDecoder } from '../../core/platform.ts';
import type { SchedulerConfig } from '../../core/schedulers/types.ts';
import { MISSING_SCHEDULER_CONFIG, MISSING_SCHEDULER_NOTE } from '../../core/schedulers/config.ts';
import type { TokenizerFiles } from '../../core/text/clip-tokenizer.ts';
import { readFileWith, type FileSource } from './model-files.ts';
import type { WebComponent } from '../device/protocol.ts';

export interface WebModelSpec {
  url: string;
  /** The folder's last path segment, e.g. "shapes-128" (the metadata's model name). */
  name: string;
  family: 'sd' | 'sdxl';
  className: string;
  files: Partial<Record<WebComponent, string>>;
  /** The VAE encoder an upscale needs, where the folder has one (vae_encoder/config.json answered); opened on first use. */
  vaeEncoder?: string;
  schedulerConfig: SchedulerConfig;
  vae: { scalingFactor: number; forceUpcast: boolean };
  forceZerosForEmptyPrompt: boolean;
  unetSampleSize?: number;
  /** The UNet's config sets diffusers' `upcast_attention` (SD 2.1): a float16 conversion keeps the scores float32. */
  unetUpcastAttention: boolean;
  tokenizer: TokenizerFiles;
  tokenizer2?: TokenizerFiles;
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

async function tokenizerFiles(src: FileSource, dir: string): Promise<TokenizerFiles> {
  const [vocab, merges, config, special] = await Promise.all([
    json(src, `${dir}/vocab.json`, true),
    src.get(`${dir}/merges.txt`, true),
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
  } else {
    throw new AsgdError(`The model has no ${dir} files`, { kind: 'model', parameter: dir, expected: 'vocab.json + merges.txt or tokenizer.json', received: 'none', hint: 'Serve the whole optimum export folder' });
  }
  if (config) files.tokenizerConfig = config;
  if (special) files.specialTokensMap = special;
  return files;
}

export async function readWebModel(url: string, src: FileSource): Promise<WebModelSpec> {
  const notes: string[] = [];
  const index = await json(src, 'model_index.json', false);
  const className = typeof index?.['_class_name'] === 'string' ? (index['_class_name'] as string) : '';
  const family = /XL/i.test(className) || (index && 'text_encoder_2' in index) ? 'sdxl' : 'sd';
  if (/StableDiffusion3|Flux/i.test(className) || (index && 'transformer' in index)) {
    throw new AsgdError('Transformer models (SD3, FLUX) do not run in the browser yet', { kind: 'model', parameter: 'model', expected: 'an SD 1.x/2.x or SDXL export (a unet folder)', received: className || 'a transformer folder', hint: 'Use the Node API for SD3' });
  }
  if (/Refiner/i.test(className)) {
    throw new AsgdError('SDXL refiner exports are not supported', { kind: 'model', parameter: 'model', expected: 'an SD 1.x/2.x or SDXL base export', received: className });
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
  const name = decodeURIComponent(new URL(url).pathname.split('/').filter(Boolean).pop() ?? 'model');
  return {
    url,
    name,
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
