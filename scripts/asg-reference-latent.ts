/**
 * Runs the TypeScript pipeline with the settings of the torch reference (training/asg_reference.py) and writes
 * its final latent (before VAE scaling) as raw little-endian float32, for `asg_reference.py --compare`.
 *
 *   node --import tsx scripts/asg-reference-latent.ts --width 512 --height 512 --out /tmp/ts-512.f32 [--no-mask]
 *   node --import tsx scripts/asg-reference-latent.ts --from test/reference/asg-reference-512x512.json --out ...
 *   ... --set guidanceSync=true --set maskLayers='["up_blocks.1"]'     (any method option, value as JSON)
 *   ... --scheduler ddim                                               (or none: the pipeline's choice)
 *   ... --steps 20 --threads 2
 *
 * `generateReferenceLatent` is also what test/asg-reference.test.ts runs.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { GenerateParams } from '../src/core/params.ts';
import { loadPipeline } from '../src/node/pipeline.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const SHAPES_MODEL = path.join(REPO_ROOT, 'models', 'shapes-128');

/** The settings block of a reference file (what asg_reference.py writes under "settings"). */
export interface ReferenceSettings {
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  seed: number;
  steps: number;
  guidanceScale: number;
  /** null: none named, so the pipeline picks one (euler for patch methods above the native size on PNDM/LMS configs). */
  scheduler: string | null;
  method: 'asg';
  methodOptions: Record<string, unknown>;
}

export const DEFAULT_SETTINGS: ReferenceSettings = {
  prompt: 'a red circle on a blue background',
  negativePrompt: '',
  width: 512,
  height: 512,
  seed: 7,
  steps: 10,
  guidanceScale: 7,
  scheduler: 'ddim',
  method: 'asg',
  // The reading the torch reference implements, pinned so that changing the method's defaults keeps it valid.
  methodOptions: { pixelInteraction: false, windowJitter: false, stageSplit: 0.5, structureSpace: 'eps', structureSchedule: 'cosine', structureGamma: 1 },
};

/** pipe.generate parameters for these settings (the image is not compared: one untiled decode keeps it short). */
export function referenceParams(settings: ReferenceSettings): GenerateParams {
  return {
    prompt: settings.prompt,
    negativePrompt: settings.negativePrompt,
    width: settings.width,
    height: settings.height,
    seed: settings.seed,
    steps: settings.steps,
    guidanceScale: settings.guidanceScale,
    ...(settings.scheduler === null ? {} : { scheduler: settings.scheduler }),
    method: settings.method,
    methodOptions: settings.methodOptions,
    vae: { tiling: 'off' },
  };
}

/** The pipeline's final latent [1, 4, height / 8, width / 8] for these settings, on one CPU worker. */
export async function generateReferenceLatent(
  settings: ReferenceSettings,
  modelDir: string = SHAPES_MODEL,
  threads = 1,
): Promise<Float32Array> {
  const pipe = await loadPipeline(modelDir, { devices: 'cpu', threads });
  try {
    return (await pipe.generate(referenceParams(settings))).latent;
  } finally {
    await pipe.close();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      from: { type: 'string' },
      width: { type: 'string' },
      height: { type: 'string' },
      'no-mask': { type: 'boolean', default: false },
      'structure-weight': { type: 'string' },
      'pixel-interaction': { type: 'boolean', default: false },
      /** A scheduler name, or "none" for none named (the pipeline's choice). */
      scheduler: { type: 'string' },
      /** Any other method option as name=JSON, e.g. --set guidanceSync=true (repeatable). */
      set: { type: 'string', multiple: true },
      model: { type: 'string', default: SHAPES_MODEL },
      steps: { type: 'string' },
      threads: { type: 'string', default: '1' },
      out: { type: 'string' },
    },
  });
  if (!values.out) throw new Error('--out FILE is required');
  const settings: ReferenceSettings = values.from
    ? (JSON.parse(fs.readFileSync(values.from, 'utf8')) as { settings: ReferenceSettings }).settings
    : { ...DEFAULT_SETTINGS, methodOptions: { ...DEFAULT_SETTINGS.methodOptions } };
  if (values.width) settings.width = Number(values.width);
  if (values.height) settings.height = Number(values.height);
  if (values.steps) settings.steps = Number(values.steps);
  if (values['no-mask']) settings.methodOptions.mask = false;
  if (values['structure-weight']) settings.methodOptions.structureWeight = Number(values['structure-weight']);
  if (values['pixel-interaction']) settings.methodOptions.pixelInteraction = true;
  if (values.scheduler) settings.scheduler = values.scheduler === 'none' ? null : values.scheduler;
  for (const pair of values.set ?? []) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new Error(`--set expects name=JSON, got ${pair}`);
    settings.methodOptions[pair.slice(0, eq)] = JSON.parse(pair.slice(eq + 1));
  }
  const t0 = performance.now();
  const latent = await generateReferenceLatent(settings, values.model, Number(values.threads));
  fs.writeFileSync(values.out, new Uint8Array(latent.buffer, latent.byteOffset, latent.byteLength));
  let sum = 0;
  for (const v of latent) sum += v;
  console.log(JSON.stringify({ out: values.out, values: latent.length, sum, ms: Math.round(performance.now() - t0), settings }));
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  await main();
}
