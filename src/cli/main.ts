/**
 * `asgd`: the command-line tool. generate | info | devices | read. Every failure prints one clear message on
 * stderr and exits with a code from exit-codes.ts; outputs are written atomically.
 */
import { Command, CommanderError, Option } from 'commander';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { AsgdError, invalidArgument } from '../core/errors.ts';
import type { GenerationMetadata } from '../core/metadata.ts';
import { validateParams, type GenerateParams } from '../core/params.ts';
import { EXIT, exitCodeFor } from './exit-codes.ts';
import { createProgressView } from './progress.ts';
import { addOptions, givenValues, helpText } from './options.ts';
import { ALL_OPTIONS, CLI_OPTIONS, METHOD_OPTIONS, PARAM_OPTIONS, PIPELINE_OPTIONS, UPSCALE_COMMAND_OPTIONS, UPSCALE_OPTIONS, VAE_OPTIONS, optionSpec } from '../core/options/registry.ts';
import { RUNTIME_LOG_ENV } from '../onnx/runtime-log.ts';
import type { UpscaleSettings } from '../core/generation/img2img.ts';
import type { OptionSpec } from '../core/options/spec.ts';
import type { GenerateResult, GenerateRunOptions, GenerateUpscaleSettings, Pipeline, PipelineOptions } from '../node/pipeline.ts';

function defaults(specs: readonly OptionSpec[]): Record<string, unknown> {
  return Object.fromEntries(specs.filter((s) => s.default !== undefined).map((s) => [s.key, s.default]));
}
import { PACKAGE_VERSION } from '../node/version.ts';
import { folderFamily } from '../node/model/folder.ts';
import { FAMILY_NAMES, aFamily, schedulerFitsFamily } from '../core/model-family.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The model the repository ships (trained), else the built-in test model built by `npm run fixtures`. */
export function defaultModelDir(): string {
  const trained = path.join(ROOT, 'models', 'shapes-128');
  if (fs.existsSync(path.join(trained, 'model_index.json'))) return trained;
  return path.join(ROOT, '.cache', 'models', 'tiny-sd');
}

function parseSize(flag: string, v: string): { width: number; height: number } {
  const m = /^(\d+)x(\d+)$/i.exec(v.trim());
  if (!m) throw invalidArgument(flag, 'WIDTHxHEIGHT in pixels, e.g. 1024x1024', v);
  return { width: Number(m[1]), height: Number(m[2]) };
}

function damagedRecord(file: string, why: string): AsgdError {
  return new AsgdError(`The asgdiffusion parameters in ${file} are damaged (${why})`, {
    kind: 'invalid-argument', parameter: 'image', hint: 'The file was changed after it was written; give the settings as flags (asgd read shows its parameters text, where there is one)',
  });
}

async function readFrom(file: string): Promise<GenerationMetadata> {
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
function fromScheduler(from: GenerationMetadata | undefined, given: { width?: number; height?: number }): string | undefined {
  if (!from) return undefined;
  const resized = (given.width !== undefined && given.width !== from.width) || (given.height !== undefined && given.height !== from.height);
  return resized && (from.scheduler === 'pndm' || from.scheduler === 'lms') ? undefined : from.scheduler;
}

/**
 * What a re-run (--from) takes from the record besides the settings: the attention fusion the image was made with
 * (it changes the last bits), unless the flag is given. Returns warnings: another model than the recorded one.
 */
function recordedRun(read: GenerationMetadata | undefined, modelDir: string, flags: PipelineOptions, file: string | undefined): string[] {
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
function forModelFamily<P extends Pick<GenerateParams, 'originalSize' | 'scheduler'>>(
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
function recordedLimit(record: GenerationMetadata | undefined): number | undefined {
  if (!record?.upscale) return undefined;
  const pixels = record.width * record.height;
  return pixels > Number(optionSpec(UPSCALE_OPTIONS, 'maxPixels').default) ? pixels : undefined;
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

async function runGenerate(cmd: Command): Promise<number> {
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

type CliValues = { model?: string; output: string; overwrite: boolean; preview?: string; previewEvery: number; from?: string; json: boolean; quiet: boolean };

/**
 * What generate and upscale share once their settings are checked: the output path checked before the model loads,
 * Ctrl-C cancelling, the progress bar, warnings, previews, the atomic write and the summary.
 */
async function runWithPipeline(
  cli: CliValues, modelDir: string, pipelineFlags: PipelineOptions,
  job: (pipeline: Pipeline, run: GenerateRunOptions) => Promise<GenerateResult>,
  notes: string[] = [],
): Promise<number> {
  const quiet = cli.quiet || cli.json;
  const { checkOutputPath, saveImage } = await import('../node/image/write.ts');
  // Fail on a bad output path before loading anything.
  checkOutputPath(cli.output, cli.overwrite);
  if (cli.preview) {
    // Previews replace each other during the run, not a file that was there before it, nor the output.
    if (path.resolve(cli.preview) === path.resolve(cli.output)) throw invalidArgument('--preview', 'a file other than the output', cli.preview, 'Choose another name, e.g. preview.png');
    checkOutputPath(cli.preview, cli.overwrite, 'preview');
  }
  const { loadPipeline } = await import('../node/pipeline.ts');
  const controller = new AbortController();
  const onSigint = () => {
    if (!quiet) process.stderr.write('\nCancelling...\n');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  const progress = createProgressView(!quiet);
  let pipeline: Pipeline;
  try {
    // Ctrl-C while the model loads ends the load at once (exit 130), not after it.
    pipeline = await loadPipeline(modelDir, { ...pipelineFlags, signal: controller.signal });
  } catch (err) {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    // A cancelled load leaves a worker thread creating its session (that cannot be interrupted): the process may
    // exit only once it has ended, or ONNX Runtime aborts it. A second Ctrl-C ends it at once (no handler now).
    const { deviceWorkersExited } = await import('../node/runner/device-worker.ts');
    await deviceWorkersExited();
    throw err;
  }
  try {
    // Warnings stay under -q (they say why the image differs from what was asked); --json carries them instead.
    const warn = (m: string) => {
      if (!cli.json) process.stderr.write(`warning: ${m}\n`);
    };
    notes.forEach(warn);
    // What --devices auto chose (info, not a warning: -q leaves it out).
    const { isAutoDevicesNote } = await import('../node/runner/devices.ts');
    const auto = pipeline.info.notes.find(isAutoDevicesNote);
    if (auto && !quiet) process.stderr.write(`${auto}\n`);
    const ran = await job(pipeline, {
      signal: controller.signal,
      onProgress: (p) => progress.update(p),
      onWarning: warn,
      previewEvery: cli.previewEvery,
      onPreview: cli.preview ? (img) => void saveImage(cli.preview!, img, undefined, true).catch(() => undefined) : undefined,
    });
    const result = { ...ran, warnings: [...notes, ...ran.warnings] };
    progress.stop();
    // Ctrl-C after the last model call (while decoding ended, or while the file is written): still a cancel.
    if (controller.signal.aborted) throw new AsgdError('Generation cancelled', { kind: 'cancelled' });
    await saveImage(cli.output, result.image, result.metadata, cli.overwrite);
    if (controller.signal.aborted) {
      fs.rmSync(cli.output, { force: true });
      throw new AsgdError('Generation cancelled', { kind: 'cancelled' });
    }
    report(cli, result);
    return EXIT.ok;
  } finally {
    progress.stop();
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    await pipeline.close();
  }
}

/** The summary line, or the JSON result. */
function report(cli: { output: string; json: boolean; quiet: boolean }, result: GenerateResult): void {
  const out = path.resolve(cli.output);
  if (cli.json) {
    process.stdout.write(
      JSON.stringify({ output: out, width: result.image.width, height: result.image.height, unetEvaluations: result.unetEvaluations, timings: result.timings, warnings: result.warnings, metadata: result.metadata }, null, 2) + '\n',
    );
  } else if (!cli.quiet) {
    const t = result.timings;
    process.stderr.write(
      `Wrote ${out} (${result.image.width}x${result.image.height}, seed ${result.metadata.seed}, ${result.unetEvaluations} UNet evaluations, ${(t.totalMs / 1000).toFixed(1)} s)\n`,
    );
  }
}

async function runUpscale(input: string | undefined, cmd: Command): Promise<number> {
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

/** The pipeline options `asgd info` takes: what it notes and reports depends on them. */
const INFO_PIPELINE_OPTIONS = [optionSpec(PIPELINE_OPTIONS, 'devices'), optionSpec(PIPELINE_OPTIONS, 'fuseAttention'), optionSpec(PIPELINE_OPTIONS, 'unetPrecision')];

async function runInfo(dir: string, opts: { json?: boolean; probe?: boolean }, pipeline: PipelineOptions): Promise<number> {
  const { loadPipeline } = await import('../node/pipeline.ts');
  const p = await loadPipeline(dir, { ...pipeline, threads: 1, attentionProbe: opts.probe !== false });
  try {
    const i = p.info;
    if (opts.json) {
      process.stdout.write(JSON.stringify(i, null, 2) + '\n');
      return EXIT.ok;
    }
    const lines = [
      `Model:        ${i.dir}`,
      `Family:       ${FAMILY_NAMES[i.family]} (${i.className}, ${i.layout} layout)`,
      `Native size:  ${i.nativeWidth}x${i.nativeHeight} px (latent ${i.nativeWidth / 8}x${i.nativeHeight / 8}, ${i.latentChannels} channels)`,
      `Scheduler:    ${i.scheduler.className} (${(i.family === 'sd3' ? ['shift', 'use_dynamic_shifting'] : ['beta_schedule', 'prediction_type', 'timestep_spacing']).map((k) => `${k}=${String(i.scheduler.config[k] ?? 'default')}`).join(', ')})`,
      `VAE:          scaling factor ${i.vae.scalingFactor}${i.vae.shiftFactor ? `, shift factor ${i.vae.shiftFactor}` : ''}${i.vae.forceUpcast ? ', force_upcast' : ''}`,
      `Upscaling:    ${i.vaeEncoder ? `VAE encoder ${i.vaeEncoder} (opened when an upscale runs)` : 'no VAE encoder: `asgd upscale` needs one (pass --vae with a folder holding vae_encoder)'}`,
      `Mask probe:   ${i.attentionProbe.available ? `${i.attentionProbe.layers.length} ${i.family === 'sd3' ? 'joint-attention blocks' : 'up-block attn2 layers'}` : `unavailable (${i.attentionProbe.reason})`}`,
      `Attention:    ${i.attentionFusion.applied ? `fused (${i.attentionFusion.layers} layers as MultiHeadAttention, ${i.attentionFusion.form === 'flash' ? 'flash form' : 'q and k padded'}${i.attentionFusion.formReason ? `: ${i.attentionFusion.formReason}` : ''}${i.attentionFusion.biasSplitGelus ? `; ${i.attentionFusion.biasSplitGelus} GEGLUs as BiasSplitGelu` : ''}${i.attentionFusion.groupNorms ? `; ${i.attentionFusion.groupNorms} group norms as GroupNorm` : ''})` : `as exported (${i.attentionFusion.reason})`}`,
    ];
    if (i.unetFloat16) {
      const f = i.unetFloat16;
      lines.push(`Precision:    ${f.applied ? `UNet converted to float16 (${f.tensors} tensors; ${f.float32Nodes} nodes kept in float32${f.attentionScoresFloat32 ? ', attention scores among them (upcast_attention)' : ''}; ${f.casts} Casts)` : `UNet as exported (${f.reason})`}`);
    }
    if (i.family === 'sd3') {
      lines.splice(3, 0, `Transformer:  patch size ${i.patchSize}, text width ${i.textWidth}`, `Encoders:     ${(i.textEncoders ?? []).join(', ')}`);
    }
    for (const [name, c] of Object.entries(i.components)) {
      lines.push(`${i.family === 'sd3' && name === 'unet' ? 'transformer' : name} (${c!.file}):`);
      for (const io of c!.inputs) lines.push(`  in   ${io.name}: ${io.type} [${io.shape.join(', ')}]`);
      for (const io of c!.outputs) lines.push(`  out  ${io.name}: ${io.type} [${io.shape.join(', ')}]`);
    }
    for (const n of i.notes) lines.push(`note: ${n}`);
    process.stdout.write(lines.join('\n') + '\n');
    return EXIT.ok;
  } finally {
    await p.close();
  }
}

async function runDevices(opts: { json?: boolean }): Promise<number> {
  const { autoDevices, checkAvailableDevices, checkFlashAttention } = await import('../node/runner/devices.ts');
  const list = await checkAvailableDevices();
  const webgpu = list.find((d) => d.name === 'webgpu');
  if (webgpu?.available) {
    // What --fuse-attention does on this adapter (attention-files.ts attentionForm).
    const f = await checkFlashAttention();
    const worst = 'cases' in f ? Math.max(...f.cases.filter((c) => c.unsupported === undefined).map((c) => c.maxError)).toExponential(1) : '';
    webgpu.note += 'reason' in f
      ? `; ONNX Runtime's flash-attention kernel could not be checked (${f.reason})`
      : f.ok
        ? `; ONNX Runtime's flash-attention kernel checked right here (largest error ${worst}): --fuse-attention uses it`
        : `; ONNX Runtime's flash-attention kernel is wrong here (largest error ${worst}): --fuse-attention pads q and k to avoid it`;
  }
  // What --devices auto picks here (the same checks, run once).
  const auto = await autoDevices();
  const rows = [...list, { name: 'auto', available: true, note: `picks ${auto.devices}: ${auto.reason}` }];
  if (opts.json) process.stdout.write(JSON.stringify(rows, null, 2) + '\n');
  else for (const d of rows) process.stdout.write(`${d.name.padEnd(8)} ${d.available ? 'available ' : 'missing   '} ${d.note}\n`);
  return EXIT.ok;
}

/** The pipeline options `asgd tune` takes: the device list its advice is for. */
const TUNE_PIPELINE_OPTIONS = [optionSpec(PIPELINE_OPTIONS, 'devices'), optionSpec(PIPELINE_OPTIONS, 'threads')];

type TuneFlags = { json?: boolean; iters?: number; warmup?: number; latent?: number; workers?: number[] | false };

/** `--workers 1,2,4` or `--workers none`. */
function workersFlag(v: string): number[] | false {
  if (v.trim().toLowerCase() === 'none') return false;
  const list = v.split(',').map((x) => Number(x.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1 || n > 64)) throw invalidArgument('--workers', 'worker counts from 1 to 64, comma-separated (e.g. 1,2,4), or none', v);
  return list;
}

async function runTune(dir: string, opts: TuneFlags, pipeline: PipelineOptions): Promise<number> {
  const { tuneDevice } = await import('../node/tune.ts');
  const progress = (line: string) => process.stderr.write(`${line}\n`);
  const r = await tuneDevice(dir, {
    ...(typeof pipeline.devices === 'string' ? { devices: pipeline.devices } : {}), ...(pipeline.threads !== undefined ? { threads: pipeline.threads } : {}),
    ...(opts.iters !== undefined ? { iters: opts.iters } : {}), ...(opts.warmup !== undefined ? { warmup: opts.warmup } : {}),
    ...(opts.latent !== undefined ? { latent: opts.latent } : {}), ...(opts.workers !== undefined ? { workers: opts.workers } : {}), ...(opts.json ? {} : { onProgress: progress }),
  });
  if (opts.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return EXIT.ok;
  }
  const list = typeof pipeline.devices === 'string' ? pipeline.devices : r.device;
  const lines = [
    `Measured on ${r.device} (onnxruntime-node ${r.onnxruntime}), latent ${r.latent}x${r.latent}, medians of ${r.iters} calls after ${r.warmup}`,
    `Advice for --devices ${list}:`,
    ...r.advice.reasons.map((x) => `  ${x}`),
    r.advice.flags.length > 0 ? `Flags: ${r.advice.flags.join(' ')}` : 'Flags: none (the defaults are fastest here)',
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return EXIT.ok;
}

/** A whole number of at least `min` for `flag`. */
const wholeFlag = (flag: string, min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw invalidArgument(flag, `an integer >= ${min}`, v);
  return n;
};

async function runRead(file: string, opts: { json?: boolean }): Promise<number> {
  const { readImageMetadata } = await import('../node/image/write.ts');
  const r = await readImageMetadata(file);
  if (r.damaged && (opts.json || !r.parameters)) throw damagedRecord(file, r.damaged);
  if (r.damaged) process.stderr.write(`warning: the asgdiffusion parameters in ${file} are damaged (${r.damaged}); its parameters text follows\n`);
  if (!r.metadata && !r.parameters) {
    throw new AsgdError(`No generation parameters found in ${file}`, { kind: 'invalid-argument', parameter: 'image', hint: 'Pass an image written by `asgd generate`' });
  }
  if (opts.json && !r.metadata) {
    throw new AsgdError(`No asgdiffusion parameters in ${file}, only another tool's parameters text`, {
      kind: 'invalid-argument', parameter: 'image', hint: 'asgd read without --json prints that text',
    });
  }
  if (opts.json) process.stdout.write(JSON.stringify(r.metadata, null, 2) + '\n');
  else {
    // The text block, or the same text made from the record where the text block is missing.
    const { formatParametersText } = await import('../core/metadata.ts');
    process.stdout.write(`${r.parameters ?? formatParametersText(r.metadata!)}\n`);
  }
  return EXIT.ok;
}

/**
 * The pipeline flags of a server or worker, with --devices auto resolved once here (and said), so that the jobs
 * record the devices that ran them rather than "auto".
 */
async function serverPipelineFlags(cmd: Command): Promise<PipelineOptions> {
  const flags = givenValues(cmd, PIPELINE_OPTIONS) as PipelineOptions;
  const { autoDevices, autoDevicesNote, isAutoDevices } = await import('../node/runner/devices.ts');
  if (!isAutoDevices(flags.devices)) return flags;
  const auto = await autoDevices();
  process.stderr.write(`${autoDevicesNote(auto)}\n`);
  return { ...flags, devices: auto.devices };
}

async function runServe(cmd: Command): Promise<number> {
  const opts = cmd.opts<{ port: number; host: string; outputs: string; model?: string[]; token?: string; queue?: string; prefix: string }>();
  const { serve } = await import('../server/serve.ts');
  const server = await serve({
    port: opts.port, host: opts.host, outputsDir: opts.outputs, modelDirs: opts.model ?? [defaultModelDir()],
    pipeline: await serverPipelineFlags(cmd), token: opts.token,
    webDir: path.join(ROOT, 'dist', 'web'), queue: opts.queue, prefix: opts.prefix,
  });
  process.stderr.write(`asgd serve: ${server.url}\n`);
  process.stderr.write(opts.queue
    ? `(jobs run on the fleet's workers: asgd worker --queue ${opts.queue} --outputs ${path.resolve(opts.outputs)}; Ctrl-C stops this server only)\n`
    : '(Ctrl-C stops; a running job is queued again for the next start)\n');
  await untilStopped(() => server.close());
  return EXIT.ok;
}

/** Waits for Ctrl-C or SIGTERM, then for `close`; a second Ctrl-C ends the process at once. */
function untilStopped(close: () => Promise<unknown>): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = () => {
      process.stderr.write('\nStopping...\n');
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.once('SIGINT', () => process.exit(EXIT.cancelled));
      void close().then(() => resolve(), () => resolve());
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
}

/** `--max-pixels 16777216` (every method) or `--max-pixels direct=1048576,asg=16777216` (per method). */
function parseMaxPixels(v: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of v.split(',')) {
    const m = /^(?:([a-z-]+)=)?(\d+)$/.exec(part.trim());
    if (!m || Number(m[2]) < 1) throw invalidArgument('--max-pixels', 'a pixel count, or METHOD=PIXELS pairs separated by commas (e.g. direct=1048576,asg=16777216)', v);
    const methods = m[1] ? [m[1]] : (PARAM_OPTIONS.find((s) => s.key === 'method')?.choices ?? []);
    for (const method of methods) out[method] = Number(m[2]);
  }
  return out;
}

async function runWorker(cmd: Command): Promise<number> {
  const opts = cmd.opts<{ queue: string; outputs: string; model?: string[]; prefix: string; maxPixels?: Record<string, number> }>();
  const { startWorker } = await import('../server/fleet/worker.ts');
  const worker = await startWorker({
    queue: opts.queue, prefix: opts.prefix, outputsDir: opts.outputs, modelDirs: opts.model ?? [defaultModelDir()],
    pipeline: await serverPipelineFlags(cmd), ...(opts.maxPixels ? { maxPixels: opts.maxPixels } : {}),
  });
  process.stderr.write(`asgd worker ${worker.id}: taking jobs (Ctrl-C stops; a running job goes back to the queue)\n`);
  await untilStopped(() => worker.close());
  return EXIT.ok;
}

export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('asgd')
    .description('High-resolution images from Stable Diffusion ONNX models with ASGDiffusion, on one or several devices')
    .version(PACKAGE_VERSION)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  const generate = program
    .command('generate')
    .description('Generate an image (default method: asg, the high-resolution method)');
  addOptions(generate, ALL_OPTIONS);
  generate.action(async (_flags: unknown, cmd: Command) => setExit(await runGenerate(cmd)));

  const upscale = program
    .command('upscale')
    .description('Upscale an image: resize, re-noise to --strength and denoise at the new size (default method: asg, structure from the input)')
    .argument('[image]', 'the image to upscale (PNG, JPEG or WebP)');
  addOptions(upscale, UPSCALE_COMMAND_OPTIONS);
  upscale.action(async (image: string | undefined, _flags: unknown, cmd: Command) => setExit(await runUpscale(image, cmd)));

  const serveCmd = program
    .command('serve')
    .description('Start the web app and its HTTP API (http://127.0.0.1:7860 by default)')
    .addOption(new Option('--port <n>', 'port').default(7860).argParser((v: string) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 0 || n > 65535) throw invalidArgument('--port', 'an integer in [0, 65535]', v);
      return n;
    }))
    .option('--host <address>', 'address to listen on (other than loopback requires a token)', '127.0.0.1')
    .option('--outputs <dir>', 'the gallery: outputs and the queue state are kept here', 'outputs')
    .addOption(new Option(`-m, --model <dir...>`, helpText(CLI_OPTIONS.find((s) => s.key === 'model')!)))
    .option('--token <token>', 'require this token on API requests (generated and printed for a non-loopback host)')
    .option('--queue <address>', 'a Redis address (redis://HOST:PORT, unix:///PATH): jobs run on `asgd worker`s (see docs/fleet.md)')
    .option('--prefix <name>', 'key prefix in Redis, to keep several fleets apart', 'asgd');
  addOptions(serveCmd, [...PIPELINE_OPTIONS, optionSpec(CLI_OPTIONS, 'verbose')]);
  serveCmd.action(async (_flags: unknown, cmd: Command) => setExit(await runServe(cmd)));

  const workerCmd = program
    .command('worker')
    .description("Take jobs from a fleet's queue (started by `asgd serve --queue`) and run them; any number on any machines")
    .requiredOption('--queue <address>', 'the Redis address the server uses (redis://HOST:PORT, rediss://, unix:///PATH)')
    .option('--outputs <dir>', "the server's outputs folder, shared with this machine (outputs are written there)", 'outputs')
    .addOption(new Option(`-m, --model <dir...>`, helpText(CLI_OPTIONS.find((s) => s.key === 'model')!)))
    .option('--prefix <name>', 'key prefix in Redis (as the server\'s)', 'asgd')
    .addOption(new Option('--max-pixels <n>', 'the largest width x height this worker takes: a number, or METHOD=N pairs (e.g. direct=1048576,asg=16777216)').argParser(parseMaxPixels));
  addOptions(workerCmd, [...PIPELINE_OPTIONS, optionSpec(CLI_OPTIONS, 'verbose')]);
  workerCmd.action(async (_flags: unknown, cmd: Command) => setExit(await runWorker(cmd)));

  const infoCmd = program
    .command('info')
    .description('Show what the loader finds in a model folder (on --devices: what it notes for those devices)')
    .argument('[model]', 'model folder', undefined)
    .option('--json', 'machine-readable output')
    .option('--no-probe', 'skip building the attention probe');
  addOptions(infoCmd, INFO_PIPELINE_OPTIONS);
  infoCmd.action(async (dir: string | undefined, opts: { json?: boolean; probe?: boolean }, cmd: Command) =>
    setExit(await runInfo(dir ?? defaultModelDir(), opts, givenValues(cmd, INFO_PIPELINE_OPTIONS) as PipelineOptions)));

  const tuneCmd = program
    .command('tune')
    .description('Time the UNet on a device and say which loading settings are fastest there (--fuse-attention, --split-cfg, --probe-session, and how many workers)')
    .argument('[model]', 'model folder', undefined)
    .option('--json', 'machine-readable output')
    .addOption(new Option('--iters <n>', 'timed calls of each kind').default(10).argParser(wholeFlag('--iters', 1)))
    .addOption(new Option('--warmup <n>', 'untimed calls before them').default(2).argParser(wholeFlag('--warmup', 0)))
    .addOption(new Option('--latent <n>', "latent side of the calls (default: the model's native one)").argParser(wholeFlag('--latent', 8)))
    .addOption(new Option('--workers <list>', 'worker counts to time a short generation with, e.g. 1,2,4 (CPU lists: by default 1, 2, 4, ... up to the cores, at most 8, or none; a GPU list: its first device repeated, only when given)').argParser(workersFlag));
  addOptions(tuneCmd, [...TUNE_PIPELINE_OPTIONS, optionSpec(CLI_OPTIONS, 'verbose')]);
  tuneCmd.action(async (dir: string | undefined, opts: TuneFlags, cmd: Command) =>
    setExit(await runTune(dir ?? defaultModelDir(), opts, givenValues(cmd, TUNE_PIPELINE_OPTIONS) as PipelineOptions)));

  program
    .command('devices')
    .description('List the execution providers this machine offers')
    .option('--json', 'machine-readable output')
    .option('--verbose', optionSpec(CLI_OPTIONS, 'verbose').help)
    .action(async (opts: { json?: boolean }) => setExit(await runDevices(opts)));

  // Device workers read the runtime's log level from the environment (src/onnx/runtime-log.ts).
  program.hook('preAction', (_program, action) => {
    if (action.opts()['verbose'] === true) process.env[RUNTIME_LOG_ENV] ||= 'warning';
  });

  program
    .command('read')
    .description('Print the generation parameters embedded in an image')
    .argument('<image>', 'an image written by asgd generate')
    .option('--json', 'print the JSON metadata')
    .action(async (file: string, opts: { json?: boolean }) => setExit(await runRead(file, opts)));

  return program;
}

export async function main(argv: string[]): Promise<number> {
  let code = EXIT.ok;
  const program = buildProgram((c) => (code = c));
  try {
    await program.parseAsync(argv, { from: 'user' });
    return code;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help asked for (--help, asgd help) is a success; help shown because the command is missing is not.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || (err.code === 'commander.help' && err.exitCode === 0)) return EXIT.ok;
      return EXIT['invalid-argument'];
    }
    err = withFlagName(err);
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`asgd: ${msg}\n`);
    if (!(err instanceof AsgdError) && err instanceof Error && process.env['ASGD_DEBUG']) process.stderr.write(`${err.stack}\n`);
    return exitCodeFor(err);
  }
}

/**
 * A library error about a setting ("Invalid seed", "Invalid vae.overlap"), named by the flag the user gave instead
 * (--seed, --vae-tile-overlap): same expected, received and hint.
 */
function withFlagName(err: unknown): unknown {
  if (!(err instanceof AsgdError) || err.kind !== 'invalid-argument' || !err.parameter) return err;
  const [prefix, key] = err.parameter.includes('.') ? err.parameter.split('.', 2) : [undefined, err.parameter];
  const scope = prefix === 'vae' ? 'vae' : prefix === 'methodOptions' ? 'method' : undefined;
  if (prefix !== undefined && scope === undefined) return err;
  const spec = ALL_OPTIONS.find((s) => s.cli && s.key === key && (scope === undefined || s.scope === scope));
  const named = `Invalid ${err.parameter}`;
  if (!spec?.cli || !err.summary.startsWith(named)) return err;
  return new AsgdError(`Invalid ${spec.cli.flag}${err.summary.slice(named.length)}`, {
    kind: err.kind, parameter: spec.cli.flag, expected: err.expected, received: err.received, hint: err.hint, cause: err.cause,
  });
}

const invokedDirectly = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
