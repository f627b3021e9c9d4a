/** `asgd info`, `asgd devices`, `asgd tune` and `asgd read`: what a model, this machine or an image holds. */
import { AsgdError, invalidArgument } from '../core/errors.ts';
import { EXIT } from './exit-codes.ts';
import { PIPELINE_OPTIONS, optionSpec } from '../core/options/registry.ts';
import type { PipelineOptions } from '../node/pipeline.ts';
import { FAMILY_NAMES } from '../core/model-family.ts';
import { damagedRecord } from './recorded.ts';

/** The pipeline options `asgd info` takes: what it notes and reports depends on them. */
export const INFO_PIPELINE_OPTIONS = [optionSpec(PIPELINE_OPTIONS, 'devices'), optionSpec(PIPELINE_OPTIONS, 'fuseAttention'), optionSpec(PIPELINE_OPTIONS, 'unetPrecision')];

export async function runInfo(dir: string, opts: { json?: boolean; probe?: boolean }, pipeline: PipelineOptions): Promise<number> {
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

export async function runDevices(opts: { json?: boolean }): Promise<number> {
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
export const TUNE_PIPELINE_OPTIONS = [optionSpec(PIPELINE_OPTIONS, 'devices'), optionSpec(PIPELINE_OPTIONS, 'threads')];

export type TuneFlags = { json?: boolean; iters?: number; warmup?: number; latent?: number; workers?: number[] | false };

/** `--workers 1,2,4` or `--workers none`. */
export function workersFlag(v: string): number[] | false {
  if (v.trim().toLowerCase() === 'none') return false;
  const list = v.split(',').map((x) => Number(x.trim()));
  if (list.length === 0 || list.some((n) => !Number.isInteger(n) || n < 1 || n > 64)) throw invalidArgument('--workers', 'worker counts from 1 to 64, comma-separated (e.g. 1,2,4), or none', v);
  return list;
}

export async function runTune(dir: string, opts: TuneFlags, pipeline: PipelineOptions): Promise<number> {
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
export const wholeFlag = (flag: string, min: number) => (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw invalidArgument(flag, `an integer >= ${min}`, v);
  return n;
};

export async function runRead(file: string, opts: { json?: boolean }): Promise<number> {
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
