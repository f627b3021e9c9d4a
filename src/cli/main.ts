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

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The model the repository ships (trained), else the built-in test model built by `npm run fixtures`. */
export function defaultModelDir(): string {
  const trained = path.join(ROOT, 'models', 'shapes-128');
  if (fs.existsSync(path.join(trained, 'model_index.json'))) return trained;
  return path.join(ROOT, '.cache', 'models', 'tiny-sd');
}

function num(flag: string, integer: boolean, min?: number, max?: number) {
  return (value: string): number => {
    const v = Number(value);
    const okInt = !integer || Number.isInteger(v);
    if (value.trim() === '' || !Number.isFinite(v) || !okInt || (min !== undefined && v < min) || (max !== undefined && v > max)) {
      const range = min !== undefined && max !== undefined ? ` between ${min} and ${max}` : min !== undefined ? ` >= ${min}` : '';
      throw invalidArgument(flag, `${integer ? 'an integer' : 'a finite number'}${range}`, value);
    }
    return v;
  };
}

interface GenerateFlags {
  model?: string;
  prompt?: string;
  negativePrompt?: string;
  width?: number;
  height?: number;
  steps?: number;
  guidanceScale?: number;
  seed?: string;
  output: string;
  overwrite?: boolean;
  scheduler?: string;
  method?: string;
  structureWeight?: number;
  structureSchedule?: string;
  structureGamma?: number;
  structureSpace?: string;
  guidanceSync?: boolean;
  pixelInteraction?: boolean;
  mask?: boolean;
  maskWords?: string;
  maskEvery?: number;
  maskGamma?: number;
  maskThreshold?: number;
  maskLayers?: string;
  stageSplit?: number;
  windowStride?: number;
  windowJitter?: boolean;
  devices?: string;
  threads?: number;
  retry?: boolean;
  splitCfg?: string;
  vaeTiling?: string;
  vaeTileSize?: number;
  vaeTileOverlap?: number;
  vaeTileStats?: string;
  preview?: string;
  previewEvery?: number;
  from?: string;
  vae?: string;
  originalSize?: string;
  json?: boolean;
  quiet?: boolean;
}

function methodOptionsFrom(f: GenerateFlags, base: Record<string, unknown>): Record<string, unknown> {
  const o: Record<string, unknown> = { ...base };
  const set = (k: string, v: unknown) => {
    if (v !== undefined) o[k] = v;
  };
  set('structureWeight', f.structureWeight);
  set('structureSchedule', f.structureSchedule);
  set('structureGamma', f.structureGamma);
  set('structureSpace', f.structureSpace);
  if (f.guidanceSync) o['guidanceSync'] = true;
  if (f.pixelInteraction === false) o['pixelInteraction'] = false;
  if (f.mask === false) o['mask'] = false;
  set('maskEvery', f.maskEvery);
  set('maskGamma', f.maskGamma);
  set('maskThreshold', f.maskThreshold);
  if (f.maskLayers !== undefined) o['maskLayers'] = f.maskLayers.split(',').map((s) => s.trim()).filter(Boolean);
  set('stageSplit', f.stageSplit);
  set('windowStride', f.windowStride);
  if (f.windowJitter === false) o['windowJitter'] = false;
  return o;
}

function parseSize(flag: string, v: string): { width: number; height: number } {
  const m = /^(\d+)x(\d+)$/i.exec(v.trim());
  if (!m) throw invalidArgument(flag, 'WIDTHxHEIGHT in pixels, e.g. 1024x1024', v);
  return { width: Number(m[1]), height: Number(m[2]) };
}

async function readFrom(file: string): Promise<GenerationMetadata> {
  const { readImageMetadata } = await import('../node/image/write.ts');
  const r = await readImageMetadata(file);
  if (!r.metadata) {
    throw new AsgdError(`No asgdiffusion parameters found in ${file}`, {
      kind: 'invalid-argument', parameter: 'from', hint: 'Pass an image written by `asgd generate` (PNG, JPEG or WebP)',
    });
  }
  return r.metadata;
}

async function runGenerate(f: GenerateFlags, cmd: Command): Promise<number> {
  const quiet = !!f.quiet || !!f.json;
  const src = (name: string) => cmd.getOptionValueSource(name);
  const explicit = (name: string) => src(name) === 'cli' || src(name) === 'env';
  const from = f.from ? await readFrom(f.from) : undefined;

  const prompt = f.prompt ?? from?.prompt;
  if (prompt === undefined) {
    throw invalidArgument('--prompt', 'a text prompt', undefined, 'Pass --prompt "a red circle on a blue background" (or --from image.png)');
  }
  const params: GenerateParams = {
    prompt: explicit('prompt') || !from ? prompt : from.prompt,
    negativePrompt: f.negativePrompt ?? from?.negativePrompt,
    width: f.width ?? from?.width,
    height: f.height ?? from?.height,
    steps: f.steps ?? from?.steps,
    guidanceScale: f.guidanceScale ?? from?.guidanceScale,
    seed: f.seed ?? from?.seed,
    scheduler: f.scheduler ?? from?.scheduler,
    method: (f.method ?? from?.method) as GenerateParams['method'],
    methodOptions: methodOptionsFrom(f, from?.methodOptions ?? {}),
    maskWords: f.maskWords !== undefined ? f.maskWords.split(/[,\s]+/).filter(Boolean) : from?.maskWords,
    vae: {
      ...(from?.vae as GenerateParams['vae']),
      ...(f.vaeTiling !== undefined ? { tiling: f.vaeTiling as 'auto' } : {}),
      ...(f.vaeTileSize !== undefined ? { tileSize: f.vaeTileSize } : {}),
      ...(f.vaeTileOverlap !== undefined ? { overlap: f.vaeTileOverlap } : {}),
      ...(f.vaeTileStats !== undefined ? { stats: f.vaeTileStats as 'exact' } : {}),
    },
    originalSize: f.originalSize !== undefined ? parseSize('--original-size', f.originalSize) : from?.originalSize,
  };
  validateParams(params);
  const { checkOutputPath, saveImage } = await import('../node/image/write.ts');
  // Fail on a bad output path before loading anything.
  checkOutputPath(f.output, !!f.overwrite);
  if (f.preview) checkOutputPath(f.preview, true);

  const { loadPipeline } = await import('../node/pipeline.ts');
  const modelDir = f.model ?? defaultModelDir();
  const controller = new AbortController();
  const onSigint = () => {
    if (!quiet) process.stderr.write('\nCancelling...\n');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  const progress = createProgressView(!quiet);
  const pipeline = await loadPipeline(modelDir, {
    devices: f.devices, threads: f.threads, vae: f.vae,
    retryOnOtherDevice: f.retry, splitCfg: f.splitCfg as 'auto' | undefined,
  });
  try {
    const result = await pipeline.generate(params, {
      signal: controller.signal,
      onProgress: (p) => progress.update(p),
      onWarning: (m) => {
        if (!f.quiet) process.stderr.write(`warning: ${m}\n`);
      },
      previewEvery: f.previewEvery,
      onPreview: f.preview
        ? (img) => void saveImage(f.preview!, img, undefined, true).catch(() => undefined)
        : undefined,
    });
    progress.stop();
    await saveImage(f.output, result.image, result.metadata, !!f.overwrite);
    const out = path.resolve(f.output);
    if (f.json) {
      process.stdout.write(
        JSON.stringify({ output: out, width: result.image.width, height: result.image.height, unetEvaluations: result.unetEvaluations, timings: result.timings, warnings: result.warnings, metadata: result.metadata }, null, 2) + '\n',
      );
    } else if (!quiet) {
      const t = result.timings;
      process.stderr.write(
        `Wrote ${out} (${result.image.width}x${result.image.height}, seed ${result.metadata.seed}, ${result.unetEvaluations} UNet evaluations, ${(t.totalMs / 1000).toFixed(1)} s)\n`,
      );
    }
    return EXIT.ok;
  } finally {
    progress.stop();
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    await pipeline.close();
  }
}

async function runInfo(dir: string, opts: { json?: boolean; probe?: boolean }): Promise<number> {
  const { loadPipeline } = await import('../node/pipeline.ts');
  const p = await loadPipeline(dir, { attentionProbe: opts.probe !== false });
  try {
    const i = p.info;
    if (opts.json) {
      process.stdout.write(JSON.stringify(i, null, 2) + '\n');
      return EXIT.ok;
    }
    const lines = [
      `Model:        ${i.dir}`,
      `Family:       ${i.family === 'sd' ? 'Stable Diffusion 1.x/2.x' : 'SDXL'} (${i.className}, ${i.layout} layout)`,
      `Native size:  ${i.nativeWidth}x${i.nativeHeight} px (latent ${i.nativeWidth / 8}x${i.nativeHeight / 8}, ${i.latentChannels} channels)`,
      `Scheduler:    ${i.scheduler.className} (${['beta_schedule', 'prediction_type', 'timestep_spacing'].map((k) => `${k}=${String(i.scheduler.config[k] ?? 'default')}`).join(', ')})`,
      `VAE:          scaling factor ${i.vae.scalingFactor}${i.vae.forceUpcast ? ', force_upcast' : ''}`,
      `Mask probe:   ${i.attentionProbe.available ? `${i.attentionProbe.layers.length} up-block attn2 layers` : `unavailable (${i.attentionProbe.reason})`}`,
    ];
    for (const [name, c] of Object.entries(i.components)) {
      lines.push(`${name} (${c!.file}):`);
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
  const { checkAvailableDevices } = await import('../node/runner/devices.ts');
  const list = await checkAvailableDevices();
  if (opts.json) process.stdout.write(JSON.stringify(list, null, 2) + '\n');
  else for (const d of list) process.stdout.write(`${d.name.padEnd(8)} ${d.available ? 'available ' : 'missing   '} ${d.note}\n`);
  return EXIT.ok;
}

async function runRead(file: string, opts: { json?: boolean }): Promise<number> {
  const { readImageMetadata } = await import('../node/image/write.ts');
  const r = await readImageMetadata(file);
  if (!r.metadata && !r.parameters) {
    throw new AsgdError(`No generation parameters found in ${file}`, { kind: 'invalid-argument', parameter: 'image', hint: 'Pass an image written by `asgd generate`' });
  }
  process.stdout.write(opts.json ? JSON.stringify(r.metadata ?? null, null, 2) + '\n' : `${r.parameters ?? ''}\n`);
  return EXIT.ok;
}

export function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command('asgd')
    .description('High-resolution images from Stable Diffusion ONNX models with ASGDiffusion, on one or several devices')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  program
    .command('generate')
    .description('Generate an image (default method: asg, the high-resolution method)')
    .option('-m, --model <dir>', 'model folder (optimum ONNX export); default: the model shipped in the repository')
    .option('-p, --prompt <text>', 'what to draw')
    .option('-n, --negative-prompt <text>', 'what to avoid')
    .option('-W, --width <px>', 'image width, multiple of 8 (default: the native width)', num('--width', true))
    .option('-H, --height <px>', 'image height, multiple of 8 (default: the native height)', num('--height', true))
    .option('-s, --steps <n>', 'denoising steps (default 30)', num('--steps', true))
    .option('-g, --guidance-scale <x>', 'classifier-free guidance scale (default 7.5)', num('--guidance-scale', false))
    .option('--seed <n>', 'seed, 0 .. 2^64-1 (default: random, printed and embedded)')
    .option('-o, --output <file>', 'output image (.png, .jpg, .webp)', 'out.png')
    .option('--overwrite', 'replace an existing output file')
    .option('--scheduler <name>', 'euler, euler-ancestral, ddim, pndm, dpmpp-2m, lms (default: the model\'s)')
    .addOption(new Option('--method <name>', 'high-resolution method').choices(['asg', 'cutdiffusion', 'multidiffusion', 'direct']))
    .option('--structure-weight <w>', 'asg: structure guidance weight w_max in [0, 1]', num('--structure-weight', false))
    .option('--structure-schedule <s>', 'asg: constant | cosine')
    .option('--structure-gamma <g>', 'asg: exponent of the cosine schedule', num('--structure-gamma', false))
    .option('--structure-space <s>', 'asg: eps | x0')
    .option('--guidance-sync', 'asg: synchronous structure guidance (default asynchronous, one step stale)')
    .option('--no-pixel-interaction', 'asg/cutdiffusion: do not shuffle pixels between patches')
    .option('--no-mask', 'asg: uniform structure guidance, no cross-attention mask')
    .option('--mask-words <words>', 'asg: prompt words whose attention forms the mask (comma/space separated)')
    .option('--mask-every <n>', 'asg: recompute the mask every n steps', num('--mask-every', true, 1))
    .option('--mask-gamma <g>', 'asg: mask exponent', num('--mask-gamma', false))
    .option('--mask-threshold <t>', 'asg: mask values below t become 0', num('--mask-threshold', false))
    .option('--mask-layers <list>', 'asg: attention layers to use (name substrings, comma separated)')
    .option('--stage-split <f>', 'asg/cutdiffusion: fraction of steps in stage 1, [0, 1]', num('--stage-split', false))
    .option('--window-stride <n>', 'stage-2 window stride in latent pixels', num('--window-stride', true))
    .option('--no-window-jitter', 'stage-2 windows at fixed positions (no per-step jitter)')
    .option('--devices <list>', 'devices, e.g. cpu | cpu,cpu | webgpu:0 | cuda:0,cuda:1', 'cpu')
    .option('--threads <n>', 'threads per CPU worker (0: ONNX Runtime default; the cores divided among several CPU workers)', num('--threads', true, 0))
    .option('--retry', 'if a device fails, re-run its units on the other devices instead of stopping')
    .addOption(new Option('--split-cfg <mode>', 'run units as two CFG halves to balance devices: auto (CPU only) | balance | always | never').choices(['auto', 'balance', 'always', 'never']))
    .addOption(new Option('--vae-tiling <mode>', 'VAE tiled decoding').choices(['auto', 'on', 'off']))
    .option('--vae-tile-size <n>', 'VAE tile size in latent pixels', num('--vae-tile-size', true))
    .option('--vae-tile-overlap <n>', 'VAE tile overlap in latent pixels', num('--vae-tile-overlap', true))
    .addOption(new Option('--vae-tile-stats <mode>', 'GroupNorm statistics of VAE tiles: exact (the whole image\'s, a few passes; default) | estimate (from a downscaled decode, one pass) | off (per tile)').choices(['exact', 'estimate', 'off']))
    .option('--vae <dir>', 'a separate VAE folder replacing the model\'s (optimum export or a folder with model.onnx)')
    .option('--original-size <WxH>', 'SDXL: original_size micro-conditioning (default: the output size)')
    .option('--preview <file>', 'write a low-resolution preview image every --preview-every steps')
    .option('--preview-every <n>', 'preview interval in steps (default 5)', num('--preview-every', true, 1))
    .option('--from <image>', 're-run the generation embedded in an image (flags given override it)')
    .option('--json', 'print a machine-readable result on stdout (implies --quiet)')
    .option('-q, --quiet', 'no progress bar or summary')
    .action(async (flags: GenerateFlags, cmd: Command) => setExit(await runGenerate(flags, cmd)));

  program
    .command('info')
    .description('Show what the loader finds in a model folder')
    .argument('[model]', 'model folder', undefined)
    .option('--json', 'machine-readable output')
    .option('--no-probe', 'skip building the attention probe')
    .action(async (dir: string | undefined, opts: { json?: boolean; probe?: boolean }) => setExit(await runInfo(dir ?? defaultModelDir(), opts)));

  program
    .command('devices')
    .description('List the execution providers this machine offers')
    .option('--json', 'machine-readable output')
    .action(async (opts: { json?: boolean }) => setExit(await runDevices(opts)));

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
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.ok;
      return EXIT['invalid-argument'];
    }
    const msg = err instanceof Error ? err.message : String(err);
    process.stderr.write(`asgd: ${msg}\n`);
    if (!(err instanceof AsgdError) && err instanceof Error && process.env['ASGD_DEBUG']) process.stderr.write(`${err.stack}\n`);
    return exitCodeFor(err);
  }
}

const invokedDirectly = process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (invokedDirectly) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
