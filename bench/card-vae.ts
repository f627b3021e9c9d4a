/**
 * `card.js vae`: a tiled decode of an SD-width decoder (SD's and SDXL's VAE structure and widths, about 49 M
 * parameters of random weights, float32: test/fixtures/groupnorm-vae.ts) on a provider, at the pipeline's defaults
 * (tiles of 64 latent px, overlap 16, attention 'auto'), with per-tile statistics ('off': one plain tiled pass, the
 * floor) and then 'exact' at each `--vae-stats-memory` budget. Per case: wall time, the last cut whose tile states
 * were kept, and the image's largest difference from the first exact case's. The JSON is rewritten after each case
 * and, during one, at most once a second with its tile runs so far, so a case cut by the time limit still gives its
 * rate.
 *
 * Why: `exact` used to run the decoder's prefix from the latent for every norm layer (12x a plain tiled pass on the
 * CPU at 0 MiB); kept states make it 1.3-1.8x there (docs/vae-tiling.md). On webgpu the states stay on the device
 * (src/onnx/tile-states.ts); the `--host-budgets` cases bring them back to the host after every segment instead
 * (ASGD_DEVICE_TILE_STATES=0, what the first version did), so the card weighs those copies.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { decodeTiled } from '../src/core/vae/tiled.ts';
import { float32Model, float32ModelBytes } from '../src/graph/float32-upcast.ts';
import { fuseGroupNorm } from '../src/graph/group-norm.ts';
import { openSession, releaseSession } from '../src/onnx/session.ts';
import { VaeDecoderAdapter } from '../src/onnx/vae.ts';
import { timingStats } from './timing.ts';
import type { ProviderName } from '../src/onnx/io.ts';
import { DEVICE_TILE_STATES_ENV } from '../src/node/device-tile-states.ts';
import { localAttentionBackend } from '../src/node/vae-attention-local.ts';
import { SD_VAE_DECODER, buildGroupNormVaeDecoder } from '../test/fixtures/groupnorm-vae.ts';

export interface VaeCardOptions {
  provider: ProviderName;
  /** Image side in px (a multiple of 8). */
  size: number;
  tile: number;
  overlap: number;
  /** statsMemory budgets (MiB) for 'exact', in the order run. */
  budgets: number[];
  /** Budgets run after those with the states brought back to the host (webgpu only; default the first budget there). */
  hostBudgets: number[];
}

/** The command line's values, checked: each wrong one named with what is accepted. */
export function vaeCardOptions(args: Record<string, string>): VaeCardOptions {
  const int = (key: string, fallback: number, min: number) => {
    const raw = args[key];
    const n = raw === undefined ? fallback : Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`card vae: --${key} must be an integer of at least ${min} (got ${raw})`);
    return n;
  };
  const size = int('size', 2048, 8);
  if (size % 8 !== 0) throw new Error(`card vae: --size must be a multiple of 8 (got ${size})`);
  const list = (key: string, fallback: string) => {
    const values = (args[key] ?? fallback).split(',').filter((b) => b !== '').map(Number);
    if (values.some((b) => !Number.isInteger(b) || b < 0)) throw new Error(`card vae: --${key} must list whole numbers of MiB, 0 or more (got ${JSON.stringify(args[key])})`);
    return values;
  };
  const budgets = list('budgets', '4096,1024');
  const provider = (args['provider'] ?? 'webgpu') as ProviderName;
  const hostBudgets = list('host-budgets', provider === 'webgpu' ? String(budgets[0] ?? '') : '');
  if (hostBudgets.length > 0 && provider !== 'webgpu') throw new Error('card vae: --host-budgets needs --provider webgpu (elsewhere the states are on the host anyway)');
  return { provider, size, tile: int('tile', 64, 8), overlap: int('overlap', 16, 0), budgets, hostBudgets };
}

/** An h x h latent whose statistics differ across the image: a smooth wave plus a step on the right. */
export function stepLatent(h: number): Float32Array {
  const latent = new Float32Array(4 * h * h);
  for (let c = 0; c < 4; c++) {
    for (let y = 0; y < h; y++) for (let x = 0; x < h; x++) latent[(c * h + y) * h + x] = Math.sin(0.21 * x + 0.13 * y + c) + (x > (h * 5) / 9 ? (c === 1 ? 1.5 : -0.75) : 0);
  }
  return latent;
}

/** Writes the SD-width decoder (seed 11, float32) to `dir`/decoder.onnx; its path. */
export function writeSdWidthDecoder(dir: string): string {
  const model = path.join(dir, 'decoder.onnx');
  fs.writeFileSync(model, toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 11, floatType: 'float32', form: 'instance-norm', ...SD_VAE_DECODER })));
  return model;
}

/** Runs the cases; `write` gets the result so far after each case and, during one, at most once a second. */
export async function benchVaeCard(o: VaeCardOptions, write: (result: Record<string, unknown>) => void): Promise<Record<string, unknown>> {
  const h = o.size / 8;
  const latent = stepLatent(h);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-card-vae-'));
  const model = writeSdWidthDecoder(dir);
  const cases: Record<string, unknown>[] = [];
  const result: Record<string, unknown> = { ...o, decoder: 'SD-width (random weights, float32)', cases };
  const t0 = performance.now();
  let be = await localAttentionBackend(model, { provider: o.provider });
  result['openMs'] = performance.now() - t0;
  let first: Float32Array | undefined;
  const onDevice = o.provider === 'webgpu' ? ', states on the device' : '';
  const plan = [
    { c: 'off' as const, host: false }, ...o.budgets.map((c) => ({ c, host: false })), ...o.hostBudgets.map((c) => ({ c, host: true })),
  ];
  const envBefore = process.env[DEVICE_TILE_STATES_ENV];
  let onHost = false;
  try {
    for (const { c, host } of plan) {
      if (host && !onHost) {
        onHost = true;
        // The states on the host: a backend opened with ASGD_DEVICE_TILE_STATES=0 (read when it opens).
        await be.close();
        process.env[DEVICE_TILE_STATES_ENV] = '0';
        be = await localAttentionBackend(model, { provider: o.provider });
      }
      const label = c === 'off' ? 'off' : `exact, ${c} MiB${host ? ', states on the host' : onDevice}`;
      const row: Record<string, unknown> = { case: label, ...(c === 'off' ? {} : { statsMemory: c, statesOnHost: host || o.provider !== 'webgpu' }) };
      cases.push(row);
      let last = 0;
      const c0 = performance.now();
      const r = await decodeTiled(latent, 4, h, h, be, {
        tileSize: o.tile, overlap: o.overlap, attention: 'auto',
        ...(c === 'off' ? { stats: 'off' as const } : { stats: 'exact' as const, statsMemory: c }),
        onTile: (done, total) => {
          row['partial'] = { done, total, ms: performance.now() - c0 };
          if (performance.now() - last > 1000) {
            last = performance.now();
            write(result);
          }
        },
      });
      Object.assign(row, { ms: performance.now() - c0, tiles: r.tiles, passes: r.passes, resumedFrom: r.resumedFrom ?? null, attention: r.attention, deviceStates: be.tileStates() ?? null });
      delete row['partial'];
      if (c !== 'off') {
        first ??= r.data;
        let max = 0;
        for (let i = 0; i < r.data.length; i++) max = Math.max(max, Math.abs(r.data[i]! - first[i]!));
        row['maxDiffFromFirst'] = max;
      }
      const off = cases[0]!['ms'] as number;
      if (c !== 'off') row['overOff'] = (row['ms'] as number) / off;
      console.error(`[card] vae ${row['case']}: ${((row['ms'] as number) / 1000).toFixed(1)} s${c === 'off' ? '' : `, ${(row['overOff'] as number).toFixed(2)}x off, kept up to cut ${String(row['resumedFrom'])}`}`);
      write(result);
    }
  } finally {
    if (envBefore === undefined) delete process.env[DEVICE_TILE_STATES_ENV];
    else process.env[DEVICE_TILE_STATES_ENV] = envBefore;
    await be.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return result;
}

export interface VaeDtypeOptions {
  provider: ProviderName;
  /** Image side in px (a multiple of 8): one untiled decode. */
  size: number;
  iters: number;
}

/** `card.js vae-dtype`'s command line, checked. */
export function vaeDtypeOptions(args: Record<string, string>): VaeDtypeOptions {
  const int = (key: string, fallback: number, min: number) => {
    const n = args[key] === undefined ? fallback : Number(args[key]);
    if (!Number.isInteger(n) || n < min) throw new Error(`card vae-dtype: --${key} must be an integer of at least ${min} (got ${args[key]})`);
    return n;
  };
  const size = int('size', 1024, 8);
  if (size % 8 !== 0) throw new Error(`card vae-dtype: --size must be a multiple of 8 (got ${size})`);
  return { provider: (args['provider'] ?? 'webgpu') as ProviderName, size, iters: int('iters', 3, 1) };
}

/**
 * What following a VAE config's force_upcast costs on a provider: the SD-width decoder exported in float16 (its
 * activations within float16's range: it does not overflow) decoded whole at `size` px as exported and as the float32
 * graph a pipeline makes of it (src/graph/float32-upcast.ts), the sessions open side by side and the calls
 * alternating after a warm-up of each; the median of each, and how far the two images are apart.
 */
export async function benchVaeDtype(o: VaeDtypeOptions): Promise<Record<string, unknown>> {
  const h = o.size / 8;
  const latent = stepLatent(h);
  const half = toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 11, floatType: 'float16', form: 'instance-norm', ...SD_VAE_DECODER }));
  const t0 = performance.now();
  const converted = float32ModelBytes(half);
  if ('reason' in converted) throw new Error(`card vae-dtype: ${converted.reason}`);
  const convertMs = performance.now() - t0;
  const opts = { provider: o.provider, threads: 0 };
  // On WebGPU also the float32 graph with its group norms as GroupNorm nodes (src/graph/group-norm.ts), which the
  // UNet gets for WebGPU-only device lists and the VAE decoder does not yet: what it would gain there.
  let groupNorms = 0;
  let groupNormBytes: Uint8Array | undefined;
  if (o.provider === 'webgpu') {
    const m = float32Model(half);
    if ('model' in m && (groupNorms = fuseGroupNorm(m.model)) > 0) groupNormBytes = toBinary(ModelProtoSchema, m.model);
  }
  type Kind = 'float16' | 'float32' | 'float32GroupNorm';
  const decoders: Partial<Record<Kind, VaeDecoderAdapter>> = {
    float16: new VaeDecoderAdapter(await openSession(half, 'vae_decoder (float16)', opts)),
    float32: new VaeDecoderAdapter(await openSession(converted.bytes, 'vae_decoder (float32)', opts)),
    ...(groupNormBytes ? { float32GroupNorm: new VaeDecoderAdapter(await openSession(groupNormBytes, 'vae_decoder (float32, GroupNorm)', opts)) } : {}),
  };
  const kinds = Object.keys(decoders) as Kind[];
  const times: Record<Kind, number[]> = { float16: [], float32: [], float32GroupNorm: [] };
  const images: Partial<Record<Kind, Float32Array>> = {};
  try {
    for (let i = -1; i < o.iters; i++) {
      for (const k of kinds) {
        const c0 = performance.now();
        images[k] = (await decoders[k]!.decode(latent, 4, h, h)).data;
        if (i >= 0) times[k].push(performance.now() - c0);
      }
    }
  } finally {
    await Promise.all(Object.values(decoders).map((d) => releaseSession(d.s)));
  }
  const median = (xs: number[]) => timingStats(xs).medianMs;
  const maxAbsDiff = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
  const a = images.float16!;
  const b = images.float32!;
  const maxDiff = maxAbsDiff(a, b);
  const nonFinite = (x: Float32Array) => x.reduce((n, v) => n + (Number.isFinite(v) ? 0 : 1), 0);
  const result: Record<string, unknown> & { float16Ms: number; float32Ms: number; float32OverFloat16: number } = {
    ...o, decoder: 'SD-width (random weights), exported in float16', convertMs,
    float16Ms: median(times.float16), float32Ms: median(times.float32), float32OverFloat16: median(times.float32) / median(times.float16),
    maxDiff, nonFinite: { float16: nonFinite(a), float32: nonFinite(b) }, runs: times,
  };
  if (images.float32GroupNorm) {
    Object.assign(result, {
      groupNorms, groupNormMs: median(times.float32GroupNorm), groupNormOverFloat32: median(times.float32GroupNorm) / result.float32Ms,
      groupNormMaxDiff: maxAbsDiff(images.float32GroupNorm, b),
    });
  }
  console.error(`[card] vae-dtype ${o.size} px: float16 ${result.float16Ms.toFixed(0)} ms, float32 ${result.float32Ms.toFixed(0)} ms (${result.float32OverFloat16.toFixed(2)}x), max diff ${maxDiff.toFixed(4)}` +
    (images.float32GroupNorm ? `; float32 with ${groupNorms} GroupNorm nodes ${(result['groupNormOverFloat32'] as number).toFixed(2)} of it, max diff ${(result['groupNormMaxDiff'] as number).toExponential(1)}` : ''));
  return result;
}
