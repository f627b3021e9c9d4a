/** `asgd serve` and `asgd worker`: the web app's server and a fleet worker, each until Ctrl-C. */
import type { Command } from 'commander';
import path from 'node:path';
import { invalidArgument } from '../core/errors.ts';
import { EXIT } from './exit-codes.ts';
import { givenValues } from './options.ts';
import { PARAM_OPTIONS, PIPELINE_OPTIONS } from '../core/options/registry.ts';
import type { PipelineOptions } from '../node/pipeline.ts';
import { defaultModelDir, ROOT } from './model-dir.ts';

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

export async function runServe(cmd: Command): Promise<number> {
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
export function parseMaxPixels(v: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const part of v.split(',')) {
    const m = /^(?:([a-z-]+)=)?(\d+)$/.exec(part.trim());
    if (!m || Number(m[2]) < 1) throw invalidArgument('--max-pixels', 'a pixel count, or METHOD=PIXELS pairs separated by commas (e.g. direct=1048576,asg=16777216)', v);
    const methods = m[1] ? [m[1]] : (PARAM_OPTIONS.find((s) => s.key === 'method')?.choices ?? []);
    for (const method of methods) out[method] = Number(m[2]);
  }
  return out;
}

export async function runWorker(cmd: Command): Promise<number> {
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
