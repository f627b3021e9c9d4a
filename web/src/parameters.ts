/**
 * Generation settings from a dropped image: this project's metadata (PNG iTXt `asgdiffusion`, XMP in JPEG/WebP),
 * AUTOMATIC1111 (`parameters` text, or EXIF UserComment in JPEG/WebP), ComfyUI (`prompt` graph), InvokeAI
 * (`invokeai_metadata`, older `sd-metadata`) and Fooocus (`parameters` JSON), mapped to the library's names as far
 * as they map. No DOM or Node APIs: the page and the tests use it alike.
 */
import { imageTexts as fileTexts, xmpValue } from '../../src/core/image-texts.ts';

export type ParameterFormat = 'asgdiffusion' | 'a1111' | 'comfyui' | 'invokeai' | 'fooocus';

export interface DroppedParameters {
  format: ParameterFormat;
  /** Settings under the library's names (seed as a decimal string). */
  settings: Record<string, unknown>;
}

export class UnsupportedImage extends Error {}

/**
 * Texts an image carries (the core's imageTexts): PNG text chunks (compressed ones inflated), JPEG/WebP XMP (`xmp`)
 * and EXIF UserComment (`UserComment`).
 */
export async function imageTexts(bytes: Uint8Array): Promise<Record<string, string>> {
  const texts = await fileTexts(bytes);
  if (texts === undefined) throw new UnsupportedImage('not a PNG, JPEG or WebP image');
  return texts;
}

/** The settings in an image, or undefined when it carries none this page knows. */
export async function readDroppedParameters(bytes: Uint8Array): Promise<DroppedParameters | undefined> {
  return parametersFromTexts(await imageTexts(bytes));
}

export function parametersFromTexts(t: Record<string, string>): DroppedParameters | undefined {
  const ours = t['asgdiffusion'] ?? xmpValue(t['xmp'], 'asgd:asgdiffusion');
  if (ours) return { format: 'asgdiffusion', settings: fromOurs(JSON.parse(ours) as Record<string, unknown>) };
  if (t['invokeai_metadata']) return { format: 'invokeai', settings: fromInvoke(JSON.parse(t['invokeai_metadata']) as Record<string, unknown>) };
  if (t['sd-metadata']) return { format: 'invokeai', settings: fromOldInvoke(JSON.parse(t['sd-metadata']) as Record<string, unknown>) };
  if (t['prompt'] && t['prompt'].trimStart().startsWith('{')) {
    const s = fromComfy(JSON.parse(t['prompt']) as Record<string, { class_type?: string; inputs?: Record<string, unknown> }>);
    if (s) return { format: 'comfyui', settings: s };
  }
  const params = t['parameters'] ?? t['UserComment'];
  if (params && params.trimStart().startsWith('{')) return { format: 'fooocus', settings: fromFooocus(JSON.parse(params) as Record<string, unknown>) };
  if (params && /(^|\n)Steps: /.test(params)) return { format: 'a1111', settings: fromA1111(params) };
  return undefined;
}

// ---------- mapping ----------

/** Sampler names of other tools to this project's schedulers (those without an equal are left out). */
function scheduler(name: unknown): string | undefined {
  if (typeof name !== 'string') return undefined;
  const n = name.toLowerCase().replace(/[\s_+-]+/g, '');
  const map: Record<string, string> = {
    euler: 'euler', eulera: 'euler-ancestral', eulerancestral: 'euler-ancestral', ddim: 'ddim', pndm: 'pndm', plms: 'pndm',
    lms: 'lms', dpm2m: 'dpmpp-2m', dpmpp2m: 'dpmpp-2m', dpmpp2mkarras: 'dpmpp-2m', dpm2mkarras: 'dpmpp-2m', kdpmpp2m: 'dpmpp-2m',
  };
  return map[n];
}

function seedText(v: unknown): string | undefined {
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return String(v);
  if (typeof v === 'string' && /^\d{1,20}$/.test(v.trim())) return v.trim();
  return undefined;
}

function num(v: unknown): number | undefined {
  const n = typeof v === 'string' ? Number(v) : v;
  return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
}

function clean(s: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(s).filter(([, v]) => v !== undefined && v !== ''));
}

function fromOurs(m: Record<string, unknown>): Record<string, unknown> {
  const keys = ['prompt', 'negativePrompt', 'width', 'height', 'steps', 'guidanceScale', 'seed', 'scheduler', 'method', 'methodOptions', 'maskWords', 'vae'];
  return clean(Object.fromEntries(keys.map((k) => [k, m[k]])));
}

function fromA1111(text: string): Record<string, unknown> {
  const lines = text.replace(/\r/g, '').split('\n');
  let paramsAt = lines.length - 1;
  while (paramsAt > 0 && !/^Steps: /.test(lines[paramsAt]!)) paramsAt -= 1;
  const before = lines.slice(0, paramsAt);
  const negAt = before.findIndex((l) => l.startsWith('Negative prompt:'));
  const prompt = (negAt < 0 ? before : before.slice(0, negAt)).join('\n').trim();
  const negative = negAt < 0 ? '' : before.slice(negAt).join('\n').replace(/^Negative prompt:\s*/, '').trim();
  const fields: Record<string, string> = {};
  for (const m of lines.slice(paramsAt).join(', ').matchAll(/\s*([\w \-/]+):\s*("(?:\\.|[^\\"])*"|[^,]*)(?:,|$)/g)) fields[m[1]!.trim()] = m[2]!.trim();
  const size = /^(\d+)x(\d+)$/.exec(fields['Size'] ?? '');
  return clean({
    prompt, negativePrompt: negative,
    steps: num(fields['Steps']), guidanceScale: num(fields['CFG scale']), seed: seedText(fields['Seed']),
    scheduler: scheduler(fields['Sampler']),
    width: size ? Number(size[1]) : undefined, height: size ? Number(size[2]) : undefined,
  });
}

function fromComfy(graph: Record<string, { class_type?: string; inputs?: Record<string, unknown> }>): Record<string, unknown> | undefined {
  const nodes = Object.values(graph);
  const sampler = nodes.find((n) => /KSampler/.test(n.class_type ?? ''));
  if (!sampler?.inputs) return undefined;
  const i = sampler.inputs;
  const linked = (v: unknown) => (Array.isArray(v) ? graph[String(v[0])] : undefined);
  const text = (v: unknown): string | undefined => {
    const n = linked(v);
    const t = n?.inputs?.['text'] ?? n?.inputs?.['text_g'];
    return typeof t === 'string' ? t : undefined;
  };
  const latent = linked(i['latent_image'])?.inputs;
  return clean({
    prompt: text(i['positive']), negativePrompt: text(i['negative']),
    steps: num(i['steps']), guidanceScale: num(i['cfg']), seed: seedText(i['seed'] ?? i['noise_seed']),
    scheduler: scheduler(i['sampler_name']),
    width: num(latent?.['width']), height: num(latent?.['height']),
  });
}

function fromInvoke(m: Record<string, unknown>): Record<string, unknown> {
  return clean({
    prompt: m['positive_prompt'], negativePrompt: m['negative_prompt'], width: num(m['width']), height: num(m['height']),
    steps: num(m['steps']), guidanceScale: num(m['cfg_scale']), seed: seedText(m['seed']), scheduler: scheduler(m['scheduler']),
  });
}

function fromOldInvoke(m: Record<string, unknown>): Record<string, unknown> {
  const img = (m['image'] ?? {}) as Record<string, unknown>;
  const p = img['prompt'];
  const prompt = Array.isArray(p) ? (p[0] as { prompt?: string } | undefined)?.prompt : p;
  return clean({
    prompt, width: num(img['width']), height: num(img['height']), steps: num(img['steps']), guidanceScale: num(img['cfg_scale']),
    seed: seedText(img['seed']), scheduler: scheduler(img['sampler']),
  });
}

function fromFooocus(raw: Record<string, unknown>): Record<string, unknown> {
  const m = Object.fromEntries(Object.entries(raw).map(([k, v]) => [k.toLowerCase().replace(/\s+/g, '_'), v]));
  const res = /\(?\s*(\d+)\s*[,x*]\s*(\d+)/.exec(String(m['resolution'] ?? ''));
  return clean({
    prompt: m['prompt'], negativePrompt: m['negative_prompt'], steps: num(m['steps']), guidanceScale: num(m['guidance_scale']),
    seed: seedText(m['seed']), scheduler: scheduler(m['sampler']),
    width: res ? Number(res[1]) : undefined, height: res ? Number(res[2]) : undefined,
  });
}
