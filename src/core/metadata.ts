/**
 * Generation metadata embedded in output files: a text block a person can read, in the style other Stable
 * Diffusion tools use ("parameters"), and a JSON document a program reads back to reproduce the image.
 * Portable.
 */
import type { ResolvedParams, VaeDecodeOptions } from './params.ts';

export const METADATA_VERSION = 1;
export const TEXT_KEY = 'parameters';
export const JSON_KEY = 'asgdiffusion';

export interface GenerationMetadata {
  version: number;
  tool: string;
  /** The model folder's name; `vae`: the name of the separate VAE folder (`--vae`) that replaced the model's, if one did. */
  model: { name: string; family: string; vae?: string };
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  steps: number;
  guidanceScale: number;
  /** Decimal string: seeds go up to 2^64 - 1. */
  seed: string;
  scheduler: string;
  noise: string;
  method: string;
  methodOptions: Record<string, unknown>;
  maskWords?: string[];
  vae: VaeDecodeOptions;
  originalSize?: { width: number; height: number };
  /** Set when the UNet ran with its attention fused (PipelineOptions.fuseAttention: the last bits differ); a re-run turns it on. */
  fusedAttention?: true;
  /** Set when a float32 UNet ran converted to float16 (PipelineOptions.unetPrecision: the images differ by float16 rounding); a re-run converts it too. */
  unetPrecision?: 'float16';
  /** Set when the image is an upscale: of a file (`asgd upscale`), or of the generation in `source.generation`. */
  upscale?: UpscaleRecord;
}

/** How an image was upscaled: its source and the upscale settings (width/height above are the output's). */
export interface UpscaleRecord {
  source: {
    /** SHA-256 (hex) of the source file's bytes (of its RGB pixels when the source was given as pixels). */
    sha256: string;
    width: number;
    height: number;
    /** `asgd generate --upscale`: the first stage, generated at the native size in the same run. */
    generation?: Omit<GenerationMetadata, 'upscale'>;
  };
  /** The scale asked for; null when the output size was given instead. */
  scale: number | null;
  strength: number;
  structureSource: string;
  /** The index of the first of the `steps` scheduler steps that ran. */
  startStep: number;
}

/**
 * The metadata's record of how the UNet ran (Node's and the browser's pipelines), so that a re-run (`--from`) runs it
 * the same way: fused attention, a float32 export converted to float16.
 */
export function unetRecord(info: { attentionFusion: { applied: boolean }; unetFloat16?: { applied: boolean } }): Pick<GenerationMetadata, 'fusedAttention' | 'unetPrecision'> {
  return { ...(info.attentionFusion.applied ? { fusedAttention: true as const } : {}), ...(info.unetFloat16?.applied ? { unetPrecision: 'float16' as const } : {}) };
}

export function buildMetadata(p: ResolvedParams, model: GenerationMetadata['model'], scheduler: string, tool: string): GenerationMetadata {
  return {
    version: METADATA_VERSION,
    tool,
    model,
    prompt: p.prompt,
    negativePrompt: p.negativePrompt,
    width: p.width,
    height: p.height,
    steps: p.steps,
    guidanceScale: p.guidanceScale,
    seed: p.seed.toString(),
    scheduler,
    noise: p.noise,
    method: p.method,
    methodOptions: { ...p.methodOptions },
    ...(p.maskWords ? { maskWords: p.maskWords } : {}),
    vae: { ...p.vae },
    ...(p.originalSize ? { originalSize: p.originalSize } : {}),
  };
}

/** "prompt\nNegative prompt: ...\nSteps: 30, Sampler: euler, CFG scale: 7.5, Seed: 1, Size: 512x512, ..." */
export function formatParametersText(m: GenerationMetadata): string {
  const fields: [string, string][] = [
    ['Steps', String(m.steps)],
    ['Sampler', m.scheduler],
    ['CFG scale', String(m.guidanceScale)],
    ['Seed', m.seed],
    ['Size', `${m.width}x${m.height}`],
    ['Model', m.model.name],
    ['Method', m.method],
  ];
  for (const [k, v] of Object.entries(m.methodOptions)) fields.push([k, JSON.stringify(v)]);
  if (m.maskWords) fields.push(['Mask words', m.maskWords.join(' ')]);
  if (m.upscale) {
    const u = m.upscale;
    fields.push(['Denoising strength', String(u.strength)]);
    fields.push(['Upscale', `${u.scale === null ? '' : `${u.scale}x `}from ${u.source.width}x${u.source.height}${u.source.generation ? ' (generated)' : ` sha256 ${u.source.sha256}`}`]);
    // Only asg takes its structure from the input (the record keeps the setting either way).
    if (m.method === 'asg') fields.push(['Structure source', u.structureSource]);
  }
  fields.push(['Version', m.tool]);
  const lines = [m.prompt];
  if (m.negativePrompt) lines.push(`Negative prompt: ${m.negativePrompt}`);
  lines.push(fields.map(([k, v]) => `${k}: ${v.includes(',') ? JSON.stringify(v) : v}`).join(', '));
  return lines.join('\n');
}

export function parseMetadataJson(text: string): GenerationMetadata {
  const v = JSON.parse(text) as GenerationMetadata;
  if (!v || typeof v !== 'object' || typeof v.prompt !== 'string' || typeof v.seed !== 'string') {
    throw new Error('not asgdiffusion generation metadata');
  }
  return v;
}

/**
 * Prompt and negative prompt from the `parameters` text Stable Diffusion tools write ("prompt lines", then an
 * optional "Negative prompt: ..." section, then a last line of "Key: value, ..." settings starting with "Steps:").
 */
export function promptFromParametersText(text: string): { prompt: string; negativePrompt: string } {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  let end = lines.length;
  while (end > 0 && lines[end - 1]!.trim() === '') end--;
  if (end > 0 && /^Steps: /.test(lines[end - 1]!)) end--;
  const body = lines.slice(0, end);
  const neg = body.findIndex((l) => l.startsWith('Negative prompt:'));
  const prompt = (neg < 0 ? body : body.slice(0, neg)).join('\n').trim();
  const negativePrompt = neg < 0 ? '' : [body[neg]!.slice('Negative prompt:'.length), ...body.slice(neg + 1)].join('\n').trim();
  return { prompt, negativePrompt };
}

/**
 * What an image holds of its generation: this project's record (`metadata`), the `parameters` text other Stable
 * Diffusion tools read too, and, where the record is there but cannot be read (the file was edited), why (`damaged`;
 * `metadata` is then undefined and `parameters` still read).
 */
export interface EmbeddedParameters {
  /** This project's record (its JSON parsed). */
  metadata?: GenerationMetadata;
  /** The `parameters` text (AUTOMATIC1111's layout), which this project writes beside its record too. */
  parameters?: string;
  /** Why a record that is there cannot be read. */
  damaged?: string;
}

/** EmbeddedParameters from the texts an image holds: the metadata JSON (this project's) and the `parameters` text. */
export function embeddedParameters(json: string | undefined, parameters: string | undefined): EmbeddedParameters {
  const out: EmbeddedParameters = parameters === undefined ? {} : { parameters };
  if (json === undefined) return out;
  try {
    return { ...out, metadata: parseMetadataJson(json) };
  } catch (err) {
    return { ...out, damaged: err instanceof Error ? err.message : String(err) };
  }
}

/** What an upscale takes from a source's embedded texts: its metadata and prompts, or another tool's prompts. */
export function embeddedSource(found: EmbeddedParameters): { metadata?: GenerationMetadata; prompt?: string; negativePrompt?: string } | undefined {
  if (found.metadata) return { metadata: found.metadata, prompt: found.metadata.prompt, negativePrompt: found.metadata.negativePrompt };
  if (found.parameters) return promptFromParametersText(found.parameters);
  return undefined;
}
