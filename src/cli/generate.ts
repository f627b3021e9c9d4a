/** `asgd generate` and `asgd upscale`: the flags (and a recorded image's settings) as the library's settings. */
import type { Command } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { AsgdError, invalidArgument } from '../core/errors.ts';
import { validateParams, type GenerateParams } from '../core/params.ts';
import { givenValues } from './options.ts';
import { CLI_OPTIONS, METHOD_OPTIONS, PARAM_OPTIONS, PIPELINE_OPTIONS, UPSCALE_OPTIONS, VAE_OPTIONS, optionSpec } from '../core/options/registry.ts';
import type { UpscaleSettings } from '../core/generation/img2img.ts';
import type { OptionSpec } from '../core/options/spec.ts';
import type { GenerateUpscaleSettings, PipelineOptions } from '../node/pipeline.ts';
import { forModelFamily, fromScheduler, readFrom, recordedLimit, recordedRun } from './recorded.ts';
import { runWithPipeline, type CliValues } from './run-pipeline.ts';
import { defaultModelDir } from './model-dir.ts';

function defaults(specs: readonly OptionSpec[]): Record<string, unknown> {
  return Object.fromEntries(specs.filter((s) => s.default !== undefined).map((s) => [s.key, s.default]));
}

function parseSize(flag: string, v: string): { width: number; height: number } {
  const m = /^(\d+)x(\d+)$/i.exec(v.trim());
  if (!m) throw invalidArgument(flag, 'WIDTHxHEIGHT in pixels, e.g. 1024x1024', v);
  return { width: Number(m[1]), height: Number(m[2]) };
}

/**
 * Flags given that this run does not read: a method's options under another method (kept in the record, as
 * --from's are, but without effect), --preview-every without --preview. Warnings, not errors: a re-run of an asg
 * image with --method direct carries asg's options along.
 */
function unusedFlags(cmd: Command, method: string | undefined, vaeTiling: string | undefined): string[] {
  const chosen = String(method ?? optionSpec(PARAM_OPTIONS, 'method').default);
  const notes: string[] = [];
  for (const s of [...PARAM_OPTIONS, ...METHOD_OPTIONS, ...UPSCALE_OPTIONS] as OptionSpec[]) {
    if (s.cli && s.methods && !s.methods.includes(chosen) && s.key in givenValues(cmd, [s])) {
      notes.push(`${s.cli.flag} is an option of ${s.methods.join('/')}; --method ${chosen} does not use it`);
    }
  }
  if (vaeTiling === 'off') {
    const tiling = optionSpec(VAE_OPTIONS, 'tiling');
    for (const s of VAE_OPTIONS as readonly OptionSpec[]) {
      if (s !== tiling && s.key in givenValues(cmd, [s])) notes.push(`${s.cli!.flag} has no effect with ${tiling.cli!.flag} off`);
    }
  }
  const cli = givenValues(cmd, CLI_OPTIONS);
  if ('previewEvery' in cli && !('preview' in cli)) notes.push('--preview-every has no effect without --preview FILE');
  return notes;
}

export async function runGenerate(cmd: Command): Promise<number> {
  const cli = { ...defaults(CLI_OPTIONS), ...givenValues(cmd, CLI_OPTIONS) } as CliValues;
  const given = givenValues(cmd, PARAM_OPTIONS) as Partial<Record<(typeof PARAM_OPTIONS)[number]['key'], string & string[] & number>>;
  const pipelineFlags = givenValues(cmd, PIPELINE_OPTIONS) as PipelineOptions;
  const read = cli.from ? await readFrom(cli.from) : undefined;
  if (read?.upscale && !read.upscale.source.generation) {
    const src = read.upscale.source;
    throw new AsgdError(`${cli.from} is an upscale of another image file (${src.width}x${src.height}, sha256 ${src.sha256})`, {
      kind: 'invalid-argument', parameter: 'from', hint: `Re-run it with: asgd upscale SOURCE --from ${cli.from}`,
    });
  }
  // An image of `generate --upscale`: the first stage's settings, then the upscale's.
  const from = read?.upscale?.source.generation ?? read;
  const upscaleFlags = givenValues(cmd, UPSCALE_OPTIONS) as UpscaleSettings;
  const scale = (cli as { upscale?: number }).upscale ?? read?.upscale?.scale ?? undefined;
  if (scale === undefined && Object.keys(upscaleFlags).length > 0) {
    throw invalidArgument('--upscale', 'a factor with the upscale options (--strength, --structure-source, --max-pixels)', undefined, 'Pass --upscale 2, or leave the upscale options out');
  }
  const upscale: GenerateUpscaleSettings | undefined = scale === undefined ? undefined : {
    scale,
    strength: upscaleFlags.strength ?? read?.upscale?.strength,
    structureSource: upscaleFlags.structureSource ?? (read?.upscale?.structureSource as UpscaleSettings['structureSource']),
    maxPixels: upscaleFlags.maxPixels ?? ((cli as { upscale?: number }).upscale === undefined ? recordedLimit(read) : undefined),
    // A re-run: the upscale stage's own recorded options (the first stage's record would override its defaults).
    ...(read?.upscale ? { methodOptions: { ...read.methodOptions, ...givenValues(cmd, METHOD_OPTIONS) } } : {}),
  };

  const prompt = given.prompt ?? from?.prompt;
  if (prompt === undefined) {
    throw invalidArgument('--prompt', 'a text prompt', undefined, 'Pass --prompt "a red circle on a blue background" (or --from image.png)');
  }
  const params: GenerateParams = {
    prompt,
    negativePrompt: given.negativePrompt ?? from?.negativePrompt,
    width: given.width ?? from?.width,
    height: given.height ?? from?.height,
    steps: given.steps ?? from?.steps,
    guidanceScale: given.guidanceScale ?? from?.guidanceScale,
    seed: given.seed ?? from?.seed,
    scheduler: given.scheduler ?? fromScheduler(from, given),
    method: (given.method ?? from?.method) as GenerateParams['method'],
    methodOptions: { ...(from?.methodOptions ?? {}), ...givenValues(cmd, METHOD_OPTIONS) },
    maskWords: given.maskWords ?? from?.maskWords,
    vae: { ...(from?.vae as GenerateParams['vae']), ...givenValues(cmd, VAE_OPTIONS) },
    originalSize: given.originalSize !== undefined ? parseSize('--original-size', given.originalSize) : from?.originalSize,
  };
  validateParams(params);
  if (upscale) {
    const { checkUpscale } = await import('../core/generation/img2img.ts');
    checkUpscale({ width: params.width ?? 64, height: params.height ?? 64 }, upscale);
  }
  const modelDir = cli.model ?? defaultModelDir();
  const fitted = forModelFamily(params, given, modelDir, cli.from);
  const notes = [...unusedFlags(cmd, params.method, params.vae?.tiling), ...recordedRun(read, modelDir, pipelineFlags, cli.from), ...fitted.notes];
  return runWithPipeline(cli, modelDir, pipelineFlags, (pipeline, run) =>
    upscale ? pipeline.generateUpscaled(fitted.params, upscale, run) : pipeline.generate(fitted.params, run),
  notes);
}

export async function runUpscale(input: string | undefined, cmd: Command): Promise<number> {
  const cli = { ...defaults(CLI_OPTIONS), ...givenValues(cmd, CLI_OPTIONS) } as CliValues;
  const given = givenValues(cmd, PARAM_OPTIONS) as Partial<Record<(typeof PARAM_OPTIONS)[number]['key'], string & string[] & number>>;
  const upscaleFlags = givenValues(cmd, UPSCALE_OPTIONS) as UpscaleSettings;
  const pipelineFlags = givenValues(cmd, PIPELINE_OPTIONS) as PipelineOptions;
  const from = cli.from ? await readFrom(cli.from) : undefined;
  if (from && !from.upscale) {
    throw new AsgdError(`${cli.from} is not an upscale`, { kind: 'invalid-argument', parameter: 'from', hint: `Re-run it with: asgd generate --from ${cli.from}` });
  }
  const record = from?.upscale;
  if (record?.source.generation) {
    throw new AsgdError(`${cli.from} was generated and upscaled in one run`, { kind: 'invalid-argument', parameter: 'from', hint: `Re-run it with: asgd generate --from ${cli.from}` });
  }
  if (input === undefined) {
    const hint = record
      ? `Pass the source image it was upscaled from (${record.source.width}x${record.source.height}, sha256 ${record.source.sha256}): asgd upscale SOURCE --from ${cli.from}`
      : 'Pass the image to upscale: asgd upscale IN.png -o OUT.png --scale 2';
    throw new AsgdError(record ? 'Re-running an upscale needs its source image' : 'No input image given', { kind: 'invalid-argument', parameter: 'image', hint });
  }
  const { fileSha256, readSourceImage } = await import('../node/image/read.ts');
  const source = await readSourceImage(input);
  if (record && fileSha256(input) !== record.source.sha256) {
    throw new AsgdError(`${input} is not the source of ${cli.from}`, {
      kind: 'invalid-argument', parameter: 'image', expected: `sha256 ${record.source.sha256} (${record.source.width}x${record.source.height})`, received: `sha256 ${source.sha256} (${source.image.width}x${source.image.height})`,
      hint: 'Pass the file it was upscaled from',
    });
  }
  const sized = given.width !== undefined || given.height !== undefined;
  const settings: UpscaleSettings = {
    scale: upscaleFlags.scale ?? (sized ? undefined : record ? record.scale ?? undefined : undefined),
    width: sized ? given.width : upscaleFlags.scale === undefined && record && record.scale === null ? from!.width : undefined,
    height: sized ? given.height : upscaleFlags.scale === undefined && record && record.scale === null ? from!.height : undefined,
    strength: upscaleFlags.strength ?? record?.strength,
    structureSource: upscaleFlags.structureSource ?? (record?.structureSource as UpscaleSettings['structureSource']),
    maxPixels: upscaleFlags.maxPixels ?? (!sized && upscaleFlags.scale === undefined ? recordedLimit(from) : undefined),
  };
  const params = {
    prompt: given.prompt ?? from?.prompt,
    negativePrompt: given.negativePrompt ?? from?.negativePrompt,
    steps: given.steps ?? from?.steps,
    guidanceScale: given.guidanceScale ?? from?.guidanceScale,
    seed: given.seed ?? from?.seed,
    scheduler: given.scheduler ?? (from && from.scheduler !== 'pndm' && from.scheduler !== 'lms' ? from.scheduler : undefined),
    method: (given.method ?? from?.method) as GenerateParams['method'],
    methodOptions: { ...(from?.methodOptions ?? {}), ...givenValues(cmd, METHOD_OPTIONS) },
    maskWords: given.maskWords ?? from?.maskWords,
    vae: { ...(from?.vae as GenerateParams['vae']), ...givenValues(cmd, VAE_OPTIONS) },
    originalSize: given.originalSize !== undefined ? parseSize('--original-size', given.originalSize) : from?.originalSize,
  };
  // Every check that needs no model, before loading it: the settings, the size against the input, the output path.
  validateParams({ ...params, prompt: params.prompt ?? '', width: undefined, height: undefined });
  const { checkUpscale } = await import('../core/generation/img2img.ts');
  checkUpscale({ width: source.image.width, height: source.image.height }, settings);
  // Even with --overwrite: the source would be gone, and the output's record names it as the file to re-run from.
  for (const [flag, file] of [['--output', cli.output], ['--preview', cli.preview]] as const) {
    if (file !== undefined && sameFile(file, input)) throw invalidArgument(flag, 'a file other than the input image', file, 'Choose another name: the input would be replaced');
  }
  const modelDir = cli.model ?? defaultModelDir();
  const fitted = forModelFamily(params, given, modelDir, cli.from);
  const notes = [...unusedFlags(cmd, params.method, params.vae.tiling), ...recordedRun(from, modelDir, pipelineFlags, cli.from), ...fitted.notes];
  const { formatFromPath } = await import('../node/image/write.ts');
  if (source.hadAlpha && formatFromPath(cli.output) === 'jpeg') notes.push(`${input} has transparency, which a JPEG cannot hold: it is dropped (write .png or .webp to keep it)`);
  return runWithPipeline(cli, modelDir, pipelineFlags, (pipeline, run) =>
    pipeline.upscale({ ...fitted.params, ...settings, image: new Uint8Array(fs.readFileSync(input)) }, run),
  notes);
}

/** Whether two paths name one file (a link or another spelling of the path included). */
function sameFile(a: string, b: string): boolean {
  try {
    const [x, y] = [fs.statSync(a), fs.statSync(b)];
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return path.resolve(a) === path.resolve(b);
  }
}
