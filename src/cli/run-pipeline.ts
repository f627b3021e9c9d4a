/** What `asgd generate` and `asgd upscale` share once their settings are checked: loading, running and writing. */
import fs from 'node:fs';
import path from 'node:path';
import { AsgdError, invalidArgument } from '../core/errors.ts';
import { EXIT } from './exit-codes.ts';
import { createProgressView } from './progress.ts';
import type { GenerateResult, GenerateRunOptions, Pipeline, PipelineOptions } from '../node/pipeline.ts';

export type CliValues = { model?: string; output: string; overwrite: boolean; preview?: string; previewEvery: number; from?: string; json: boolean; quiet: boolean };

/**
 * What generate and upscale share once their settings are checked: the output path checked before the model loads,
 * Ctrl-C cancelling, the progress bar, warnings, previews, the atomic write and the summary.
 */
export async function runWithPipeline(
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
