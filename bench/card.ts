/**
 * The Node side of the on-the-card measurements (issue 15), run by scripts/device/card.sh. Subcommands, each
 * writing one JSON file:
 *
 *   unet     --unet FILE --provider webgpu|cpu [--latent N] [--warmup W] [--iters N] --out JSON
 *            One UNet call through the project's session module (src/onnx/session.ts): batch 2, 1 and 4, the
 *            median of N after W warm-ups, timing session.run alone on prepared tensors and the UnetAdapter's call
 *            (the host conversions and the CFG combination the pipeline pays). batch1 / batch2 is the cost of a
 *            CFG half relative to a full call; batch4 / batch2 that of two patches in one call. Then (unless
 *            --fused 0) batch 2 and 1 on the UNet with its attention fused (what the pipeline runs on a GPU), with
 *            its ratio to the plain graph and its largest difference from the plain graph's output.
 *            --reference PREFIX (sd_models.py --reference-out): the batch-2 outputs (plain and fused) against
 *            PyTorch's own on the same inputs, float32 and float16 (bench/card-reference.ts).
 *   probe    --unet FILE --provider webgpu|cpu [--latent N] [--warmup W] [--iters N] [--fused 1] --out JSON
 *            The attention-probe graph (built from the export as the pipeline builds it) against the plain UNet,
 *            calls alternating, batch 2 and 1: the key patch's extra cost. --fused 1: both with their attention
 *            fused (the probed layers stay written out), the pair the pipeline runs on a GPU.
 *   profile  --unet FILE --provider webgpu|cpu [--latent N] [--batch 2] [--warmup 1] [--iters 3] [--fused 1]
 *            [--layout nchw|nhwc] --out JSON
 *            ONNX Runtime's profiler over the calls: wall time against the GPU's kernel time, by op and program
 *            (bench/card-profile.ts)
 *   variants --unet FILE [--variants nhwc,nchw,fused,fused-nchw] [--validation MODE] [--latent N] [--batch 2]
 *            [--warmup 2] [--iters 10] [--reference PREFIX] --out JSON
 *            The same call run different ways on WebGPU (layout, fused attention, validation), sessions side by
 *            side and calls alternating: each one's median against the first's, and its output's difference
 *            (bench/card-variants.ts)
 *   dispatch [--provider webgpu] [--kernels 1,64,256,1024] [--size 256] [--type float32|float16] [--warmup 3]
 *            [--iters 20] --out JSON
 *            What one kernel costs whatever its work: chains of K Adds on a tiny tensor, calls alternating; ms a call
 *            per K and the line through them, µs per kernel and ms per call (bench/card-dispatch.ts)
 *   unet-io  --unets FILE,FILE [--cases sd15,sdxl] [--latent N] [--warmup W] [--iters N] --out JSON
 *            bench/unet-io.ts on WebGPU: each UNet (missing files skipped) and fixture case one at a time, the JSON
 *            rewritten after each: host-fed vs device-resident conditioning, the upload alone, CFG on the device.
 *   folder   --dir DIR --unet-dir EXPORT/unet [--text H1,H2,P2] [--vae tiny|sd]
 *            Writes an SDXL-layout model folder from the test fixture writer (tiny tokenizers and VAE, text
 *            encoders of the given widths: SDXL's 768, 1280 and a 1280 pooled projection by default), then puts the
 *            exported UNet (model.onnx, its external data, config.json) in unet/.
 *   schedule --unet-json F [--probe-json F] [--gen-json F] --out JSON
 *            Issue 15's scheduling targets (4 devices at 2048 px, 8 at 3072, shipped defaults) in the latency model
 *            with the unit time, CFG-half and probe costs that `unet` and `probe` measured (bench/card-schedule.ts),
 *            and the model checked against a one-device `generate` run's denoising time.
 *   tune     --model DIR [--devices webgpu:0] [--iters 3] [--warmup 1] --out JSON
 *            What `asgd tune` measures and advises on that model folder (src/node/tune.ts): the UNet plain and
 *            fused, whole units and CFG halves, the probe graph serving a unit that is not probed.
 *   devices  [--out JSON]   the providers of this onnxruntime-node build, WebGPU checked on a one-node model, and
 *            ONNX Runtime's WebGPU flash-attention kernel checked against attention computed here (runner/flash-check.ts)
 *   fusion   --dir DIR [--out JSON]
 *            The attention fusion on a real torch export of one attention processor (scripts/reference/attention_export.py
 *            wrote DIR): how many attentions it fused, the node's heads and scale, and the plain and fused graphs'
 *            largest differences from torch's own output, on the CPU provider.
 *   vae      [--provider webgpu] [--size 2048] [--tile 64] [--overlap 16] [--budgets 4096,1024] [--host-budgets 4096] --out JSON
 *            A tiled decode of an SD-width decoder: per-tile statistics, then exact at each --vae-stats-memory
 *            budget (bench/card-vae.ts): what keeping the tiles' states saves on this provider; on webgpu then the
 *            host budgets (default the first budget) with the states brought back to the host after every segment
 *   vae-dtype [--provider webgpu] [--size 1024] [--iters 3] --out JSON
 *            The SD-width decoder exported in float16, decoded whole as exported and as the float32 graph a
 *            pipeline runs when the VAE config sets force_upcast: the times of each and their difference.
 *   generate --model DIR --devices LIST [--width 2048] [--height 2048] [--steps 50] [--warmup-steps 1]
 *            [--warmup-width W] [--fuse-attention 1] [--latent-out FILE] --out JSON
 *            One whole `asg` generation (other settings at the shipped defaults) after a short warm-up generation
 *            (warmup-steps at warmup-width, default the same size: kernels and shaders get compiled), with the time
 *            split of GenerateResult (text, UNet, host, VAE).
 *
 * It is TypeScript checked with the project; on the device (no tsx, no npm) it runs as JavaScript compiled by
 * `tsc -p tsconfig.card.json` into .device/build (scripts/device/pack.sh does that).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { fuseAttention } from '../src/graph/attention-fusion.ts';
import { identityModelBytes } from '../src/graph/small-model.ts';
import { MASK_WEIGHTS_INPUT, PROBE_OUTPUT_PREFIX, scanCrossAttention } from '../src/graph/attention-probe.ts';
import { float32Tensor, floatTensor, makeTensor, openSession, readFloat, releaseSession, supportedBackends, type OrtTensor } from '../src/onnx/session.ts';
import { UnetAdapter, type TextConditioning } from '../src/onnx/unet.ts';
import type { ProviderName } from '../src/onnx/io.ts';
import { loadPipeline, type GenerationProgress } from '../src/node/pipeline.ts';
import { fusedLoadOptions, prepareFusedAttention } from '../src/node/fused-attention.ts';
import { prepareAttentionProbe, probeLoadOptions } from '../src/node/probe.ts';
import { autoDevices, checkAvailableDevices, checkFlashAttention, cudaGpus } from '../src/node/runner/devices.ts';
import { tuneDevice } from '../src/node/tune.ts';
import { writeTinySdModel } from '../test/fixtures/tiny-sd.ts';
import { SD_VAE_DECODER, buildGroupNormVaeDecoder } from '../test/fixtures/groupnorm-vae.ts';
import { benchUnetIo, unetIoTable, type UnetIoCase } from './unet-io.ts';
import { benchSchedule } from './card-schedule.ts';
import { benchProfile } from './card-profile.ts';
import { timingStats } from './timing.ts';
import { againstTorch, readTorchReference, type TorchReference } from './card-reference.ts';
import { benchVariants, variantsOptions } from './card-variants.ts';
import { benchDispatch, dispatchOptions } from './card-dispatch.ts';
import { benchVaeCard, benchVaeDtype, vaeCardOptions, vaeDtypeOptions } from './card-vae.ts';

type Args = Record<string, string>;

/** The options each subcommand reads (see the header); any other is a misspelling, refused before any work. */
const OPTIONS: Record<string, readonly string[]> = {
  unet: ['unet', 'provider', 'latent', 'warmup', 'iters', 'fused', 'batches', 'adapter', 'reference', 'out'],
  profile: ['unet', 'provider', 'latent', 'batch', 'warmup', 'iters', 'fused', 'layout', 'out'],
  variants: ['unet', 'provider', 'latent', 'batch', 'warmup', 'iters', 'variants', 'validation', 'reference', 'out'],
  dispatch: ['provider', 'kernels', 'size', 'type', 'warmup', 'iters', 'out'],
  probe: ['unet', 'provider', 'latent', 'warmup', 'iters', 'fused', 'out'],
  'unet-io': ['unets', 'cases', 'latent', 'warmup', 'iters', 'out'],
  folder: ['dir', 'unet-dir', 'text', 'vae', 'out'],
  generate: ['model', 'devices', 'width', 'height', 'steps', 'warmup-steps', 'warmup-width', 'fuse-attention', 'latent-out', 'method', 'out'],
  fusion: ['dir', 'out'],
  schedule: ['unet-json', 'probe-json', 'gen-json', 'out'],
  devices: ['out'],
  tune: ['model', 'devices', 'iters', 'warmup', 'out'],
  vae: ['provider', 'size', 'tile', 'overlap', 'budgets', 'host-budgets', 'out'],
  'vae-dtype': ['provider', 'size', 'iters', 'out'],
};
const USAGE = `card: usage: card (${Object.keys(OPTIONS).join(' | ')}) [--options]; see the header of bench/card.ts`;

/** A wrong command line (unknown subcommand or option): one line and exit code 2, no JSON written. */
export class CardUsageError extends Error {}

export function parseArgs(argv: string[]): { command: string; args: Args } {
  const [command = '', ...rest] = argv;
  const known = OPTIONS[command];
  if (!known) throw new CardUsageError(command === '' || command === '--help' || command === '-h' ? USAGE : `card: unknown subcommand ${JSON.stringify(command)}. ${USAGE}`);
  const args: Args = {};
  for (let i = 0; i < rest.length; i++) {
    const key = rest[i]!;
    if (!key.startsWith('--')) throw new CardUsageError(`card: unexpected argument ${key}`);
    if (!known.includes(key.slice(2))) throw new CardUsageError(`card ${command}: unknown option ${key} (options: ${known.map((k) => `--${k}`).join(' ')})`);
    const value = rest[i + 1];
    if (value === undefined || value.startsWith('--')) args[key.slice(2)] = 'true';
    else {
      args[key.slice(2)] = value;
      i++;
    }
  }
  return { command, args };
}

function need(args: Args, key: string): string {
  const v = args[key];
  if (v === undefined) throw new Error(`card: --${key} is required`);
  return v;
}

function num(args: Args, key: string, fallback: number): number {
  const v = args[key];
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`card: --${key} must be a number (got ${v})`);
  return n;
}

function writeJson(file: string, value: unknown): void {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** Deterministic values in [-1, 1] (no RNG state: the same inputs on every run). */
function wave(n: number, k: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.618 + k));
}

export interface CallTiming {
  medianMs: number;
  minMs: number;
  maxMs: number;
  iters: number;
  warmup: number;
  firstMs: number;
}

async function timeIt(fn: () => Promise<unknown>, warmup: number, iters: number): Promise<CallTiming> {
  const times: number[] = [];
  let firstMs = NaN;
  for (let i = 0; i < warmup + iters; i++) {
    const t0 = performance.now();
    await fn();
    const ms = performance.now() - t0;
    if (i === 0) firstMs = ms;
    if (i >= warmup) times.push(ms);
  }
  return { ...timingStats(times), iters, warmup, firstMs };
}

function machine(): Record<string, unknown> {
  return { node: process.version, platform: `${process.platform}-${process.arch}`, cpu: os.cpus()[0]?.model, cores: os.cpus().length, date: new Date().toISOString() };
}

/** The UNet's inputs for one call of `batch` rows at a square latent: deterministic values, timestep 500. */
function unetFeeds(unet: UnetAdapter, batch: number, latent: number, dim: number, pooled: number | undefined): Record<string, OrtTensor> {
  const tokens = 77;
  const f: Record<string, OrtTensor> = {
    [unet.sample.name]: floatTensor(unet.sample.type, wave(batch * 4 * latent * latent, 1), [batch, 4, latent, latent], 'sample'),
    [unet.timestep.name]: makeTensor('int64', new BigInt64Array(batch).fill(500n), [batch]),
    [unet.hidden.name]: floatTensor(unet.hidden.type, wave(batch * tokens * dim, 2), [batch, tokens, dim], 'encoder_hidden_states'),
  };
  if (unet.textEmbeds) f[unet.textEmbeds.name] = floatTensor(unet.textEmbeds.type, wave(batch * (pooled as number), 3), [batch, pooled as number], 'text_embeds');
  if (unet.timeIds) {
    const px = 8 * latent;
    const ids = new Float32Array(6 * batch);
    for (let b = 0; b < batch; b++) ids.set([px, px, 0, 0, px, px], 6 * b);
    f[unet.timeIds.name] = floatTensor(unet.timeIds.type, ids, [batch, 6], 'time_ids');
  }
  return f;
}

/** The latent side a call is timed at: --latent, else config.json's sample_size, else 64. */
function callLatent(file: string, args: Args): number {
  const configured = Number(JSON.parse(fs.readFileSync(path.join(path.dirname(file), 'config.json'), 'utf8')).sample_size);
  return num(args, 'latent', Number.isFinite(configured) ? configured : 64);
}

/** The latent side and text widths of a UNet export (config.json's sample_size unless --latent). */
function unetShape(s: Awaited<ReturnType<typeof openSession>>, unet: UnetAdapter, file: string, args: Args): { latent: number; dim: number; pooled: number | undefined } {
  const latent = callLatent(file, args);
  const dim = s.inputs.find((i) => i.name === 'encoder_hidden_states')?.shape[2];
  const pooled = unet.textEmbeds?.shape[1];
  if (typeof dim !== 'number' || (unet.textEmbeds && typeof pooled !== 'number')) throw new Error('card: the UNet export has no static text widths');
  return { latent, dim, pooled: pooled as number | undefined };
}

/**
 * The attention-probe graph the key patch runs (src/node/probe.ts builds it from the export) against the plain UNet:
 * both sessions open at once, calls at batch 2 (a whole CFG unit) and 1 (its conditional half) alternating between
 * them, medians. probe / plain is the key unit's extra cost (the latency model's probeExtra, assumed 0.15).
 */
export async function benchProbe(args: Args): Promise<Record<string, unknown>> {
  const file = need(args, 'unet');
  const provider = (args['provider'] ?? 'webgpu') as ProviderName;
  const warmup = num(args, 'warmup', 3);
  const iters = num(args, 'iters', 10);
  // --fused 1: the pair the pipeline runs on a GPU with --fuse-attention (every attention fused; the probe keeps its
  // probed layers' scores for the maps beside the fused node, so its noise prediction is the fused UNet's).
  const fusedPair = args['fused'] === '1';
  const result: Record<string, unknown> = { machine: machine(), file, provider, fusedAttention: fusedPair };
  const t0 = performance.now();
  const probe = await prepareAttentionProbe(file);
  result['probeBuildMs'] = performance.now() - t0;
  if ('reason' in probe) return { ...result, reason: probe.reason };
  result['layers'] = probe.layers.length;
  let [unetFile, probeFile] = [file, probe.file];
  if (fusedPair) {
    // As the pipeline writes them for WebGPU devices alone: the GEGLUs as BiasSplitGelu too.
    const geglu = { biasSplitGelu: provider === 'webgpu' };
    const [u, p] = [await prepareFusedAttention(file, geglu), await prepareFusedAttention(probe.file, { weightsFolder: probeLoadOptions(probe.file).externalDataFolder, ...geglu })];
    if ('reason' in u || 'reason' in p) return { ...result, reason: `fusion: ${'reason' in u ? u.reason : (p as { reason: string }).reason}` };
    [unetFile, probeFile] = [u.file, p.file];
    result['fusedLayers'] = { unet: u.fused, probe: p.fused };
  }
  const plain = await openSession(unetFile, 'unet', { provider }, fusedLoadOptions(unetFile));
  try {
    const probed = await openSession(probeFile, 'unet (attention probe)', { provider }, fusedPair ? fusedLoadOptions(probeFile) : probeLoadOptions(probeFile));
    try {
      const unet = new UnetAdapter(plain);
      const { latent, dim, pooled } = unetShape(plain, unet, file, args);
      result['latent'] = latent;
      result['probeOutputs'] = probed.outputs.length;
      // On WebGPU, where the probe's extra time goes: the same two graphs again with every output left on the GPU,
      // each call timed until its noise prediction alone is back on the host. (probe - plain) there is the extra
      // arithmetic; the probe's time with its outputs read minus its time without is their download.
      // (onnxruntime-node 1.30 cannot read a GPU tensor on the host: the noise prediction comes back through a
      // one-node Identity session whose output is on the CPU, as src/onnx/device-upload.ts notes.)
      const onDevice = provider === 'webgpu'
        ? [await openSession(unetFile, 'unet (outputs on the device)', { provider }, { ...fusedLoadOptions(unetFile), outputLocation: 'gpu-buffer' }),
          await openSession(probeFile, 'unet (attention probe, outputs on the device)', { provider }, { ...(fusedPair ? fusedLoadOptions(probeFile) : probeLoadOptions(probeFile)), outputLocation: 'gpu-buffer' }),
          await openSession(identityModelBytes(unet.out.type as 'float32' | 'float16', 4), 'download', { provider })] as const
        : undefined;
      try {
        // The probe's maps averaged over tokens 1-7, as for a seven-word prompt (the pipeline feeds the mask's tokens).
        const weights = new Float32Array(77);
        weights.fill(1 / 7, 1, 8);
        for (const batch of [2, 1]) {
          const plainFeeds = unetFeeds(unet, batch, latent, dim, pooled);
          const probeFeeds = { ...plainFeeds, [MASK_WEIGHTS_INPUT]: makeTensor('float32', weights, [77, 1]) };
          // probeNoise: the probe graph with the noise prediction fetched alone, as every unit that is not probed
          // runs now that the probe graph serves the UNet (pipeline.ts, probeServesUnet): its maps computed, not read.
          type Label = 'plain' | 'probe' | 'probeNoise' | 'plainOnDevice' | 'probeOnDevice';
          const sessions: [Label, typeof plain][] = [['plain', plain], ['probe', probed], ['probeNoise', probed]];
          if (onDevice) sessions.push(['plainOnDevice', onDevice[0]], ['probeOnDevice', onDevice[1]]);
          const times: Record<Label, number[]> = { plain: [], probe: [], probeNoise: [], plainOnDevice: [], probeOnDevice: [] };
          let finite = true;
          let mapBytes = 0;
          // The probe graph's noise prediction against the UNet's on the same feeds, first calls: what one session
          // serving both relies on (pipeline.ts, probeServesUnet; tested bit for bit on the CPU and lavapipe only).
          const firstOut: Partial<Record<'plain' | 'probeNoise', Float32Array>> = {};
          for (let i = 0; i < warmup + iters; i++) {
            for (const [label, s] of sessions) {
              const c0 = performance.now();
              const feeds = label.startsWith('probe') ? probeFeeds : plainFeeds;
              const r = label === 'probeNoise' ? await s.session.run(feeds, [unet.out.name]) : await s.session.run(feeds);
              const out = r[unet.out.name]!;
              if (label.endsWith('OnDevice')) {
                await onDevice![2].session.run({ x: out });
                for (const t of Object.values(r)) t.dispose();
              }
              const ms = performance.now() - c0;
              if (i >= warmup) times[label].push(ms);
              if ((label === 'plain' || label === 'probeNoise') && i === 0) firstOut[label] = readFloat(out, 'out_sample').slice();
              if (label === 'probe' && i === 0) {
                finite = readFloat(out, 'out_sample').every(Number.isFinite);
                // What the maps bring back to the host per call (the probe reduces them in-graph: attention-probe.ts).
                mapBytes = Object.entries(r).reduce((n, [name, t]) => n + (name.startsWith(PROBE_OUTPUT_PREFIX) ? (t.data as Float32Array).byteLength : 0), 0);
              }
            }
          }
          const plainMs = timingStats(times.plain).medianMs;
          const probeMs = timingStats(times.probe).medianMs;
          const probeNoiseMs = timingStats(times.probeNoise).medianMs;
          const [a, b] = [firstOut.plain!, firstOut.probeNoise!];
          let differing = 0;
          let maxAbsDiff = 0;
          for (let k = 0; k < a.length; k++) {
            if (!Object.is(a[k], b[k])) differing++;
            maxAbsDiff = Math.max(maxAbsDiff, Math.abs(a[k]! - b[k]!));
          }
          const noiseVsPlain = { values: a.length, differing, maxAbsDiff };
          const row: Record<string, unknown> = { plainMs, probeMs, probeOverPlain: probeMs / plainMs, probeNoiseMs, probeNoiseOverPlain: probeNoiseMs / plainMs, noiseVsPlain, finite, mapBytes, iters, warmup };
          if (onDevice) {
            const [pd, qd] = [timingStats(times.plainOnDevice).medianMs, timingStats(times.probeOnDevice).medianMs];
            Object.assign(row, { plainOnDeviceMs: pd, probeOnDeviceMs: qd, probeOverPlainOnDevice: qd / pd, probeOutputsDownloadMs: probeMs - qd });
            console.error(`[card] ${provider} outputs on the device at batch ${batch}: probe / plain ${(qd / pd).toFixed(3)} (${qd.toFixed(2)} / ${pd.toFixed(2)} ms); the probe's outputs' download ${(probeMs - qd).toFixed(2)} ms`);
          }
          result[`batch${batch}`] = row;
          console.error(`[card] ${provider} probe / plain at batch ${batch}: ${(probeMs / plainMs).toFixed(3)} (${probeMs.toFixed(2)} / ${plainMs.toFixed(2)} ms, medians of ${iters}); noise alone fetched ${(probeNoiseMs / plainMs).toFixed(3)}`);
        }
      } finally {
        for (const s of onDevice ?? []) await releaseSession(s);
      }
    } finally {
      await releaseSession(probed);
    }
  } finally {
    await releaseSession(plain);
  }
  return result;
}

/** One UNet call at batch 2, 1 and 4: session.run alone and through the adapter. */
export async function benchUnet(args: Args): Promise<Record<string, unknown>> {
  const file = need(args, 'unet');
  const provider = (args['provider'] ?? 'webgpu') as ProviderName;
  const warmup = num(args, 'warmup', 3);
  const iters = num(args, 'iters', 10);
  const t0 = performance.now();
  const s = await openSession(file, 'unet', { provider });
  const sessionMs = performance.now() - t0;
  const result: Record<string, unknown> = { machine: machine(), file, provider, sessionMs, inputs: s.inputs, outputs: s.outputs };
  try {
    const unet = new UnetAdapter(s);
    const { latent, dim, pooled } = unetShape(s, unet, file, args);
    const tokens = 77;
    result['latent'] = latent;
    const feeds = (batch: number) => unetFeeds(unet, batch, latent, dim, pooled);
    // Read first: a reference of another latent is refused before any timing.
    const reference = args['reference'] ? readTorchReference(args['reference'], latent) : undefined;
    const finite: Record<string, boolean> = {};
    const outputs: Record<number, Float32Array> = {};
    // Batch 4: two patches' CFG pairs in one call (what pairing stage-1 patches on a device would cost).
    const batches = (args['batches'] ?? '2,1,4').split(',').map(Number);
    for (const batch of batches) {
      const f = feeds(batch);
      let out: Float32Array = new Float32Array();
      const timing = await timeIt(async () => {
        const r = await s.session.run(f);
        out = readFloat(r[unet.out.name]!, 'out_sample');
      }, warmup, iters);
      finite[`batch${batch}`] = out.length === batch * 4 * latent * latent && out.every(Number.isFinite);
      outputs[batch] = out;
      result[`run_batch${batch}`] = timing;
      console.error(`[card] ${provider} session.run batch ${batch}: ${timing.medianMs.toFixed(2)} ms (median of ${iters}; first ${timing.firstMs.toFixed(0)} ms)`);
    }
    result['finite'] = finite;
    const ratio = (a: number, b: number) => (result[`run_batch${a}`] && result[`run_batch${b}`] ? (result[`run_batch${a}`] as CallTiming).medianMs / (result[`run_batch${b}`] as CallTiming).medianMs : undefined);
    result['run_batch1_over_batch2'] = ratio(1, 2);
    result['run_batch4_over_batch2'] = ratio(4, 2);
    if (reference) result['vsTorch'] = torchComparison(outputs[2], reference, 'plain');
    if (args['adapter'] !== '0') await benchAdapter(unet, latent, dim, pooled, tokens, result, warmup, iters);
    if (args['fused'] !== '0') result['fused'] = await benchFusedUnet(file, provider, (batch) => feeds(batch), unet.out.name, outputs, result, warmup, iters, reference);
  } finally {
    await releaseSession(s);
  }
  return result;
}

/** A batch-2 output against PyTorch's, logged; with PyTorch's own float16 error for scale. */
function torchComparison(out: Float32Array | undefined, reference: TorchReference, label: string): Record<string, unknown> {
  if (!out || out.length === 0) return { error: 'no batch-2 output to compare (--batches without 2)' };
  const ours = againstTorch(out, reference);
  const f32 = ours['float32'];
  const torch16 = reference.torchFloat16VsFloat32;
  if (f32) {
    console.error(`[card] ${label} batch 2 vs PyTorch float32: max ${f32.maxAbs.toExponential(2)}, mean ${f32.meanAbs.toExponential(2)}` +
      (torch16 ? ` (PyTorch's float16: max ${torch16.maxAbs.toExponential(2)}, mean ${torch16.meanAbs.toExponential(2)})` : ''));
  }
  return { ours, ...(torch16 ? { torchFloat16VsFloat32: torch16 } : {}) };
}

/** The adapter's call, as the pipeline makes it: float32 latent in, CFG-combined float32 out (or one half). */
async function benchAdapter(
  unet: UnetAdapter, latent: number, dim: number, pooled: number | undefined, tokens: number, result: Record<string, unknown>, warmup: number, iters: number,
): Promise<void> {
  const cond: TextConditioning = { hidden: wave(2 * tokens * dim, 2), tokens, dim };
  if (unet.textEmbeds) {
    cond.textEmbeds = wave(2 * (pooled as number), 3);
    cond.pooledDim = pooled as number;
  }
  const call = { sample: wave(4 * latent * latent, 1), channels: 4, height: latent, width: latent, timestep: 500, guidanceScale: 7.5,
    timeIds: unet.timeIds ? [8 * latent, 8 * latent, 0, 0, 8 * latent, 8 * latent] : undefined };
  result['adapter_both'] = await timeIt(() => unet.run({ ...call, part: 'both' }, cond), Math.min(warmup, 1), iters);
  result['adapter_half'] = await timeIt(() => unet.run({ ...call, part: 'cond' }, cond), Math.min(warmup, 1), iters);
  result['adapter_half_over_both'] = (result['adapter_half'] as CallTiming).medianMs / (result['adapter_both'] as CallTiming).medianMs;
}

/**
 * The same calls on the UNet with its attention fused (src/node/fused-attention.ts, what the pipeline runs on a
 * GPU): batch 2 and 1, the ratio to the plain graph, and the largest difference from the plain graph's outputs.
 */
async function benchFusedUnet(
  file: string, provider: ProviderName, feeds: (batch: number) => Record<string, OrtTensor>, outName: string,
  plainOut: Record<number, Float32Array>, plain: Record<string, unknown>, warmup: number, iters: number, reference?: TorchReference,
): Promise<Record<string, unknown>> {
  const t0 = performance.now();
  // The padded form (the pipeline's where the flash-attention check fails; `card.js variants` times both), with the
  // GEGLUs as BiasSplitGelu on WebGPU, as the pipeline writes it for WebGPU devices alone.
  const fused = await prepareFusedAttention(file, { biasSplitGelu: provider === 'webgpu' });
  const result: Record<string, unknown> = { deriveMs: performance.now() - t0, form: 'padded' };
  if ('reason' in fused) return { ...result, reason: fused.reason };
  result['layers'] = fused.fused;
  result['skipLayerNorms'] = fused.skipLayerNorms;
  result['biasSplitGelus'] = fused.biasSplitGelus;
  const s1 = performance.now();
  const s = await openSession(fused.file, 'unet (fused attention)', { provider }, fusedLoadOptions(fused.file));
  result['sessionMs'] = performance.now() - s1;
  try {
    for (const batch of [2, 1]) {
      const f = feeds(batch);
      let out: Float32Array = new Float32Array();
      const timing = await timeIt(async () => {
        out = readFloat((await s.session.run(f))[outName]!, 'out_sample');
      }, warmup, iters);
      const ref = plainOut[batch];
      if (!ref) continue;
      let maxDiff = 0;
      let maxRef = 0;
      for (let i = 0; i < ref.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(ref[i]! - out[i]!));
        maxRef = Math.max(maxRef, Math.abs(ref[i]!));
      }
      const plainMs = (plain[`run_batch${batch}`] as CallTiming).medianMs;
      result[`run_batch${batch}`] = { ...timing, overPlain: timing.medianMs / plainMs, maxAbsDiffFromPlain: maxDiff, maxAbsPlain: maxRef, finite: out.every(Number.isFinite) };
      if (batch === 2 && reference) result['vsTorch'] = torchComparison(out, reference, 'fused');
      console.error(`[card] ${provider} fused attention batch ${batch}: ${timing.medianMs.toFixed(2)} ms, ${(timing.medianMs / plainMs).toFixed(3)} of the plain graph (max diff ${maxDiff.toExponential(2)})`);
    }
    if (result['run_batch1'] && result['run_batch2']) result['run_batch1_over_batch2'] = (result['run_batch1'] as CallTiming).medianMs / (result['run_batch2'] as CallTiming).medianMs;
  } finally {
    await releaseSession(s);
  }
  return result;
}

/** bench/unet-io.ts case by case, the JSON (with the markdown table) written after each so a timeout keeps the rest. */
export async function benchUnetIoCard(args: Args): Promise<Record<string, unknown>> {
  const files = (args['unets'] ?? '').split(',').filter((f) => f !== '');
  const cases = (args['cases'] ?? 'sd15,sdxl').split(',').filter((c) => c !== '');
  const base = { provider: 'webgpu' as const, iters: num(args, 'iters', 10), warmup: num(args, 'warmup', 3), latent: num(args, 'latent', 64) };
  const done: UnetIoCase[] = [];
  const missing = files.filter((f) => !fs.existsSync(f));
  let result: Record<string, unknown> = {};
  const steps = [...files.filter((f) => fs.existsSync(f)).map((f) => ({ cases: [], files: [f] })), ...cases.map((c) => ({ cases: [c], files: [] }))];
  for (const step of steps) {
    const r = await benchUnetIo({ ...base, ...step });
    done.push(...r.cases);
    result = { machine: r.machine, options: base, missing, cases: done, table: unetIoTable(done) };
    if (args['out']) writeJson(args['out'], result);
    console.error(`[card] unet-io ${done[done.length - 1]!.name}: device-resident / host-fed ${done[done.length - 1]!.deviceOverHost.toFixed(2)}`);
  }
  return result;
}

/** An SDXL-layout folder: fixture tokenizers, text encoders at the given widths and VAE; the exported UNet in unet/. */
export async function writeFolder(args: Args): Promise<Record<string, unknown>> {
  const dir = need(args, 'dir');
  const unetDir = need(args, 'unet-dir');
  const [hidden = 768, hidden2 = 1280, projection2 = 1280] = (args['text'] ?? '768,1280,1280').split(',').map(Number);
  const t0 = performance.now();
  fs.rmSync(dir, { recursive: true, force: true });
  await writeTinySdModel(dir, { variant: 'sdxl', text: { hidden, hidden2, projection2 } });
  const vae = args['vae'] ?? 'tiny';
  if (vae !== 'tiny' && vae !== 'sd') throw new Error(`card folder: --vae must be tiny or sd, received ${JSON.stringify(vae)}`);
  if (vae === 'sd') {
    // SD's (and SDXL's) VAE decoder at its real widths (about 49 M parameters, random weights, float32 as SDXL's VAE
    // is usually exported), so the generation's decode time is an SDXL-sized decoder's, not the fixture's.
    const decoder = path.join(dir, 'vae_decoder');
    fs.writeFileSync(path.join(decoder, 'model.onnx'), toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 11, floatType: 'float32', form: 'instance-norm', ...SD_VAE_DECODER })));
    const config = JSON.parse(fs.readFileSync(path.join(decoder, 'config.json'), 'utf8')) as Record<string, unknown>;
    Object.assign(config, { block_out_channels: [128, 256, 512, 512], layers_per_block: SD_VAE_DECODER.resnetsPerBlock - 1, norm_num_groups: SD_VAE_DECODER.groups });
    fs.writeFileSync(path.join(decoder, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  }
  const target = path.join(dir, 'unet');
  fs.rmSync(target, { recursive: true, force: true });
  fs.mkdirSync(target, { recursive: true });
  const moved: string[] = [];
  for (const name of fs.readdirSync(unetDir)) {
    if (name.includes('.asgd-')) continue; // derived graphs (probe, fused attention): the folder derives its own
    const from = path.join(unetDir, name);
    const to = path.join(target, name);
    // Same file system: a hard link costs nothing (the SDXL weights are 5 GB); else a copy.
    try {
      fs.linkSync(from, to);
    } catch {
      fs.copyFileSync(from, to);
    }
    moved.push(name);
  }
  return { dir, unetFrom: unetDir, unetFiles: moved, text: { hidden, hidden2, projection2 }, vae, ms: performance.now() - t0 };
}

/** `card.js profile` (bench/card-profile.ts) with this file's UNet inputs. */
export function benchProfileCard(args: Args): Promise<Record<string, unknown>> {
  return benchProfile(args, (unet, s, batch) => {
    const { latent, dim, pooled } = unetShape(s, unet, args['unet']!, args);
    return unetFeeds(unet, batch, latent, dim, pooled);
  });
}

/**
 * The GPU's memory in use (MiB, the whole card: every worker process's), as nvidia-smi reports it; undefined without
 * nvidia-smi (here: lavapipe's buffers are host memory).
 */
function gpuMemoryUsedMiB(): number | undefined {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits'], { encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'] });
    const v = Number(out.trim().split('\n')[0]);
    return Number.isFinite(v) ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One whole generation (after a warm-up generation of warmup-steps at the same size), with the time split, and the
 * GPU memory in use after loading, after the warm-up and after the generation (`gpuMemoryMiB`; the worker holding the
 * probe opens one UNet session since 2026-12-05: docs/benchmarks.md, "One UNet session on every provider").
 */
export async function benchGenerate(args: Args): Promise<Record<string, unknown>> {
  const dir = need(args, 'model');
  const devices = args['devices'] ?? 'webgpu:0';
  const width = num(args, 'width', 2048);
  const height = num(args, 'height', width);
  const steps = num(args, 'steps', 50);
  const warmupSteps = num(args, 'warmup-steps', 1);
  const method = (args['method'] ?? 'asg') as 'asg';
  const fuseAttention = args['fuse-attention'] === '1';
  const result: Record<string, unknown> = { machine: machine(), model: dir, devices, width, height, steps, method, warmupSteps, fuseAttention };
  const t0 = performance.now();
  const pipe = await loadPipeline(dir, { devices, fuseAttention });
  result['loadMs'] = performance.now() - t0;
  const memory: Record<string, number | undefined> = { afterLoad: gpuMemoryUsedMiB() };
  result['gpuMemoryMiB'] = memory;
  result['splitCfg'] = 'auto';
  // Fused or not, and in which form (the flash form where the pipeline's flash-attention check passed here).
  result['attentionFusion'] = pipe.info.attentionFusion;
  if (fuseAttention) console.error(`[card] attention: ${JSON.stringify(pipe.info.attentionFusion)}`);
  try {
    const params = { prompt: 'a lighthouse on a cliff at dusk, detailed', width, height, steps, seed: 1, method };
    if (warmupSteps > 0) {
      const w0 = performance.now();
      const ww = num(args, 'warmup-width', width);
      const w = await pipe.generate({ ...params, width: ww, height: Math.round((ww * height) / width / 8) * 8, steps: warmupSteps });
      result['warmup'] = { ms: performance.now() - w0, size: [w.image.width, w.image.height], unetEvaluations: w.unetEvaluations, timings: w.timings };
      memory['afterWarmup'] = gpuMemoryUsedMiB();
      console.error(`[card] warm-up generation (${warmupSteps} step): ${(performance.now() - w0).toFixed(0)} ms`);
    }
    let units = 0;
    // Each finished step is logged and the JSON rewritten with the progress so far, so a run that its time limit
    // ends (on the card, the part's timeout) still says how far it got and at what rate.
    const g0 = performance.now();
    let lastStep = 0;
    let decodeWritten = 0;
    const onProgress = (p: GenerationProgress): void => {
      if (p.phase === 'decode' && p.tilesTotal && result['partial']) {
        // The VAE's tile runs after the last step, the JSON rewritten at most once a second: a run cut during the
        // decode still says how long the denoising took and how far the decode got.
        const now = performance.now();
        const partial = result['partial'] as { ms: number; decode?: unknown };
        partial.decode = { tilesDone: p.tilesDone ?? 0, tilesTotal: p.tilesTotal, ms: now - g0 - partial.ms };
        if (args['out'] && (now - decodeWritten > 1000 || p.tilesDone === p.tilesTotal)) {
          decodeWritten = now;
          writeJson(args['out'], result);
        }
        return;
      }
      if (p.phase !== 'denoise' || p.step === lastStep || p.unitsDone === 0) return;
      lastStep = p.step;
      const ms = performance.now() - g0;
      result['partial'] = { step: p.step, totalSteps: p.totalSteps, stage: p.stage, unitsDone: p.unitsDone, unitsTotal: p.unitsTotal, ms, msPerUnit: ms / p.unitsDone };
      console.error(`[card] step ${p.step}/${p.totalSteps} (stage ${p.stage}): ${p.unitsDone}/${p.unitsTotal} units in ${(ms / 1000).toFixed(1)} s`);
      if (args['out']) writeJson(args['out'], result);
    };
    const r = await pipe.generate(params, { onUnits: (u) => { units += u.length; }, onProgress });
    memory['afterGeneration'] = gpuMemoryUsedMiB();
    const t = r.timings;
    let finite = true;
    for (const v of r.latent) if (!Number.isFinite(v)) { finite = false; break; }
    result['result'] = {
      size: [r.image.width, r.image.height], unetEvaluations: r.unetEvaluations, unitsDispatched: units, timings: t,
      unetMsPerEvaluation: t.unetMs / Math.max(1, r.unetEvaluations), hostMsPerStep: t.hostMs / steps, latentFinite: finite, warnings: r.warnings,
    };
    // The final latent as raw float32 (little-endian), so two runs (plain and fused attention) can be compared.
    if (args['latent-out']) fs.writeFileSync(args['latent-out'], new Uint8Array(r.latent.buffer, r.latent.byteOffset, r.latent.byteLength));
    console.error(`[card] ${devices} ${method} ${width}x${height} ${steps} steps: total ${t.totalMs.toFixed(0)} ms (UNet ${t.unetMs.toFixed(0)}, host ${t.hostMs.toFixed(0)}, VAE ${t.decodeMs.toFixed(0)}; ${r.unetEvaluations} UNet evaluations)`);
  } finally {
    await pipe.close();
  }
  return result;
}

/** The fusion on a torch export of one attention processor (scripts/reference/attention_export.py). */
export async function benchFusion(args: Args): Promise<Record<string, unknown>> {
  const dir = args['dir'];
  if (!dir) throw new Error('card fusion: --dir DIR (written by scripts/reference/attention_export.py) is required');
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'meta.json'), 'utf8')) as { x: number[]; context: number[]; heads: number; scale: number; unsupported?: string };
  if (meta.unsupported) return { meta };
  const raw = (name: string) => {
    const b = fs.readFileSync(path.join(dir, `${name}.f32`));
    return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  };
  const bytes = new Uint8Array(fs.readFileSync(path.join(dir, 'attention.onnx')));
  // The attention-probe scan on this export (the attention sits at an up-block attn2's module path; its keys' input
  // named as a UNet's text input): whether this exporter's naming (the dynamo one: node metadata) shows the layer.
  const asUnet = fromBinary(ModelProtoSchema, bytes);
  for (const i of asUnet.graph?.input ?? []) if (i.name === 'context') i.name = 'encoder_hidden_states';
  for (const n of asUnet.graph?.node ?? []) n.input = n.input.map((x) => (x === 'context' ? 'encoder_hidden_states' : x));
  const scan = scanCrossAttention(asUnet);
  const probe = { layers: scan.sites.map((x) => x.layer), rejected: scan.rejected };
  const model = fromBinary(ModelProtoSchema, bytes);
  const fusion = fuseAttention(model);
  const mha = model.graph?.node.find((n) => n.opType === 'MultiHeadAttention');
  const result: Record<string, unknown> = {
    meta, fusion, probe, nodes: model.graph?.node.map((n) => n.opType),
    numHeads: mha ? Number(mha.attribute.find((a) => a.name === 'num_heads')?.i) : null,
    scale: mha ? (mha.attribute.find((a) => a.name === 'scale')?.f ?? 'default (1 / sqrt of the head size)') : null,
  };
  const torchY = raw('y');
  for (const [label, file] of [['plain', bytes], ['fused', toBinary(ModelProtoSchema, model)]] as const) {
    const s = await openSession(file, `attention (${label})`, { provider: 'cpu', threads: 1 });
    try {
      const r = await s.session.run({ x: float32Tensor(raw('x'), meta.x), context: float32Tensor(raw('context'), meta.context) });
      const y = readFloat(r['y']!, 'y');
      let d = 0;
      for (let i = 0; i < y.length; i++) d = Math.max(d, Math.abs(y[i]! - torchY[i]!));
      result[`${label}VsTorch`] = y.length === torchY.length ? d : `length ${y.length} against ${torchY.length}`;
    } finally {
      await releaseSession(s);
    }
  }
  console.error(`[card] fusion on ${dir}: ${JSON.stringify(fusion)}, fused vs torch ${String(result['fusedVsTorch'])}, probe layers ${JSON.stringify(probe.layers)}`);
  return result;
}

async function main(): Promise<void> {
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs(process.argv.slice(2));
  } catch (err) {
    if (!(err instanceof CardUsageError)) throw err;
    console.error(err.message);
    process.exit(process.argv[2] === '--help' || process.argv[2] === '-h' ? 0 : 2);
  }
  const { command, args } = parsed;
  let result: Record<string, unknown>;
  try {
    result = await run(command, args);
  } catch (err) {
    // The JSON records the failure too (stderr may be lost on the device), then the exit code says it.
    if (args['out']) writeJson(args['out'], { command, args, error: err instanceof Error ? err.message : String(err) });
    throw err;
  }
  if (args['out']) writeJson(args['out'], result);
  else console.log(JSON.stringify(result, null, 2));
}

async function run(command: string, args: Args): Promise<Record<string, unknown>> {
  let result: Record<string, unknown>;
  switch (command) {
    case 'unet':
      result = await benchUnet(args);
      break;
    case 'probe':
      result = await benchProbe(args);
      break;
    case 'profile':
      result = await benchProfileCard(args);
      break;
    case 'variants':
      result = { machine: machine(), ...(await benchVariants({
        ...variantsOptions(args), ...(args['reference'] ? { reference: readTorchReference(args['reference'], callLatent(need(args, 'unet'), args)) } : {}),
      }, (unet, s, batch) => {
        const { latent, dim, pooled } = unetShape(s, unet, args['unet']!, args);
        return unetFeeds(unet, batch, latent, dim, pooled);
      })) };
      break;
    case 'dispatch':
      result = { machine: machine(), ...(await benchDispatch(dispatchOptions(args))) };
      break;
    case 'vae': {
      const m = machine();
      result = { machine: m, ...(await benchVaeCard(vaeCardOptions(args), (r) => args['out'] && writeJson(args['out'], { machine: m, ...r }))) };
      break;
    }
    case 'vae-dtype':
      result = { machine: machine(), ...(await benchVaeDtype(vaeDtypeOptions(args))) };
      break;
    case 'folder':
      result = await writeFolder(args);
      break;
    case 'generate':
      result = await benchGenerate(args);
      break;
    case 'unet-io':
      result = await benchUnetIoCard(args);
      break;
    case 'fusion':
      result = await benchFusion(args);
      break;
    case 'schedule':
      result = await benchSchedule(args);
      break;
    case 'tune':
      result = { machine: machine(), ...(await tuneDevice(need(args, 'model'), {
        devices: args['devices'] ?? 'webgpu:0', iters: num(args, 'iters', 3), warmup: num(args, 'warmup', 1), onProgress: (line) => console.error(`[card] tune: ${line}`),
      })) };
      break;
    case 'devices':
      // What `asgd devices` says: the providers of this build, WebGPU checked by running a one-node model.
      // And whether ONNX Runtime's WebGPU flash-attention kernel is right here (the fused attention's form follows it).
      // cudaGpus: the GPUs the driver lists, as 'auto' would count them for the CUDA provider (not installed on the card).
      result = { machine: machine(), devices: await checkAvailableDevices(), auto: await autoDevices(), cudaGpus: cudaGpus(), backends: supportedBackends(), flashAttention: await checkFlashAttention() };
      break;
    default:
      throw new Error(USAGE);
  }
  return result;
}

const invoked = process.argv[1] ? path.resolve(process.argv[1]) : '';
if (invoked.endsWith(`${path.sep}card.ts`) || invoked.endsWith(`${path.sep}card.js`)) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    process.exit(1);
  });
}
