/**
 * `npm run bench:vae-attention`: what the decoder's self-attention block costs tiled decoding, and what computing it
 * once for the whole latent (attention 'global': the decoder split after its attention, src/graph/vae-attention-split.ts)
 * recovers. Measured on a random-weight decoder with SD 1.x/2.x's VAE structure and widths (up blocks of
 * 512/512/256/128 channels, 3 resnets each, GroupNorm 32, the mid-block attention; about 49 M parameters), with and
 * without its attention block (same weights otherwise), tiled against untiled:
 *   - attention 'tile' (each tile's attention sees the tile) or 'global' (the head once on the whole latent, the tail
 *     tiled);
 *   - statistics: per tile (off), the untiled decode's own statistics given to every tile (oracle: what exact
 *     statistics converge to), exact (layer by layer through the tile graph's segments), as the pipeline runs by default.
 * Then the head's attention run in query chunks (a tiny chunk budget) against the unchunked head graph.
 *
 *   npm run bench:vae-attention -- [--size 256] [--tile 16] [--overlap 8] [--threads 1] [--quick] [--encoder]
 *   npm run bench:vae-attention -- --head-memory [--size 1024] [--unchunked]   (one process per run: peak RSS)
 * (--quick: only the default modes, tile/exact and global/exact, with attention. --encoder: the SD-width encoder
 * instead, attention tile/exact and global/exact, differences of the latent mean in latent units.) Writes
 * bench/results/vae-attention.json (vae-attention-encoder.json; --head-memory: vae-attention-head-<size>[-unchunked].json).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { chwToRgb8 } from '../src/core/image.ts';
import { decodeTiled, encodeTiled, type TiledDecodeOptions } from '../src/core/vae/tiled.ts';
import { SD_VAE_DECODER, SD_VAE_ENCODER, buildGroupNormVaeDecoder, buildGroupNormVaeEncoder } from '../test/fixtures/groupnorm-vae.ts';
import { localAttentionBackend } from '../src/node/vae-attention-local.ts';
import { prepareVaeAttentionGraphs } from '../src/node/vae-attention-graphs.ts';
import { runAttentionHead } from '../src/onnx/vae-attention.ts';
import { levelDiff, seamMeasure } from './vae-tiling.ts';
import { absDifference } from './analysis/difference.ts';
import { BenchUsageError, benchCli, intArg } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const USAGE = `
npm run bench:vae-attention [-- options]: the SD-width decoder's self-attention block and tiled decoding (attention
per tile or once for the whole latent); prints a Markdown table and writes bench/results/vae-attention.json
(--encoder: vae-attention-encoder.json, --head-memory: vae-attention-head-<size>[-unchunked].json). Slow: minutes per row at 256 px on 2 cores.

  --size N        image size in px, a multiple of 8 (default 256; --head-memory: the head's latent is N/8)
  --tile N        tile size in latent px (default 16)
  --overlap N     tile overlap in latent px (default 8)
  --threads N     ONNX Runtime threads (default 1)
  --quick         only the default modes: attention tile/exact and global/exact, with attention
  --encoder       the SD-width encoder instead (attention tile/exact and global/exact)
  --head-memory   the decoder's head alone: time and peak RSS of this process (one process per run)
  --unchunked     with --head-memory: the unchunked head graph
  --help          this text
`;
const { size, tile, overlap, threads, quick, mode, unchunked } = benchCli(USAGE, {
  options: {
    size: { type: 'string' }, tile: { type: 'string' }, overlap: { type: 'string' }, threads: { type: 'string' },
    quick: { type: 'boolean' }, encoder: { type: 'boolean' }, 'head-memory': { type: 'boolean' }, unchunked: { type: 'boolean' },
  },
}, ({ values }) => {
  if (values.encoder && values['head-memory']) throw new BenchUsageError('--encoder and --head-memory: give one');
  if (values.unchunked && !values['head-memory']) throw new BenchUsageError('--unchunked: only with --head-memory');
  const size = values.size === undefined ? 256 : intArg('--size', values.size, 8);
  if (size % 8 !== 0) throw new BenchUsageError(`--size: expected a multiple of 8, received ${size}`);
  return {
    size,
    tile: values.tile === undefined ? 16 : intArg('--tile', values.tile, 8),
    overlap: values.overlap === undefined ? 8 : intArg('--overlap', values.overlap, 0),
    threads: values.threads === undefined ? 1 : intArg('--threads', values.threads, 0),
    quick: values.quick === true,
    mode: values.encoder ? 'encoder' : values['head-memory'] ? 'head-memory' : 'decoder',
    unchunked: values.unchunked === true,
  };
});
const h = size / 8;
const session = { provider: 'cpu' as const, threads };

const latent = new Float32Array(4 * h * h);
for (let c = 0; c < 4; c++) {
  for (let y = 0; y < h; y++) for (let x = 0; x < h; x++) latent[(c * h + y) * h + x] = Math.sin(0.21 * x + 0.13 * y + c) + (x > (h * 5) / 9 ? (c === 1 ? 1.5 : -0.75) : 0);
}

if (mode === 'encoder') {
  await benchEncoder();
  process.exit(0);
}
if (mode === 'head-memory') {
  await benchHeadMemory();
  process.exit(0);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-sd-vae-'));
const rows: Record<string, unknown>[] = [];
let chunkCheck: Record<string, unknown> | undefined;
try {
  for (const midAttention of quick ? [true] : [true, false]) {
    const file = path.join(dir, `decoder-${midAttention ? 'attn' : 'noattn'}.onnx`);
    fs.writeFileSync(file, toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 11, floatType: 'float32', form: 'instance-norm', ...SD_VAE_DECODER, midAttention })));
    const be = await localAttentionBackend(file, session);
    try {
      let t0 = performance.now();
      const full = await be.run(latent.slice(), 4, h, h);
      const untiledMs = performance.now() - t0;
      const fullImg = chwToRgb8(full.data, full.height, full.width);
      const cases: [string, string, Partial<TiledDecodeOptions>][] = midAttention
        ? [
            ...(quick ? [] : [['tile', 'off', { stats: 'off' }] as [string, string, Partial<TiledDecodeOptions>]]),
            ['tile', 'exact', { stats: 'exact' }],
            ...(quick ? [] : ([['global', 'off', { stats: 'off' }], ['global', 'oracle (untiled statistics)', { stats: 'estimate', estimateMaxSize: h }]] as [string, string, Partial<TiledDecodeOptions>][])),
            ['global', 'exact', { stats: 'exact' }],
          ]
        : [['tile', 'exact', { stats: 'exact' }]];
      for (const [attention, label, o] of cases) {
        const warnings: string[] = [];
        t0 = performance.now();
        const r = await decodeTiled(latent, 4, h, h, be, { tileSize: tile, overlap, stats: 'off', attention: attention as 'global' | 'tile', onWarning: (m) => warnings.push(m), ...o });
        const ms = performance.now() - t0;
        const img = chwToRgb8(r.data, r.height, r.width);
        const d = levelDiff(img, fullImg);
        const row = {
          midAttention, attention, ran: r.attention, statistics: label, passes: r.passes, maxDiff: d.max, meanDiff: Number(d.mean.toFixed(3)),
          seam: Number(seamMeasure(img, fullImg, h, h, tile, overlap).toFixed(4)), ms: Math.round(ms), untiledMs: Math.round(untiledMs), warnings,
        };
        rows.push(row);
        console.log(JSON.stringify(row));
      }
    } finally {
      await be.close();
    }
    if (midAttention) {
      // The head's attention in query chunks against the unchunked head graph.
      const budget = 64 * 1024;
      const chunked = await localAttentionBackend(file, session, { chunkBytes: budget });
      const whole = await localAttentionBackend(file, session, { unchunked: true });
      try {
        const run = async (b: typeof chunked) => {
          if (!b.attention || 'reason' in b.attention) throw new Error('no attention split');
          const t = performance.now();
          const r = await b.attention.runGlobal(latent.slice(), 4, h, h);
          return { ...r, ms: performance.now() - t };
        };
        const a = await run(chunked);
        const b = await run(whole);
        let maxAbs = 0;
        let maxRef = 0;
        for (let i = 0; i < a.data.length; i++) {
          maxAbs = Math.max(maxAbs, Math.abs(a.data[i]! - b.data[i]!));
          maxRef = Math.max(maxRef, Math.abs(b.data[i]!));
        }
        chunkCheck = { budgetBytes: budget, chunks: a.chunks, maxAbsDiff: maxAbs, maxAbs: maxRef, chunkedMs: Math.round(a.ms), unchunkedMs: Math.round(b.ms), shape: [a.channels, a.height, a.width] };
        console.log(JSON.stringify(chunkCheck));
      } finally {
        await chunked.close();
        await whole.close();
      }
    }
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
console.log(`\nSD-width random-weight VAE decoder, ${size} px, tiles of ${tile} latent px, overlap ${overlap}, ${threads} thread(s)\n`);
console.log('| mid attention | attention | statistics | passes | max diff | mean diff | seam | time (ms) |\n|---|---|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.midAttention ? 'yes' : 'no'} | ${r.attention}${r.ran !== r.attention ? ` (ran ${r.ran})` : ''} | ${r.statistics} | ${r.passes} | ${r.maxDiff} | ${r.meanDiff} | ${((r.seam as number) * 100).toFixed(1)} % | ${r.ms} |`);
}
if (chunkCheck) {
  console.log(`\nHead in ${chunkCheck.chunks} query chunks (scores budget ${chunkCheck.budgetBytes} bytes) vs the unchunked head: max abs diff ${chunkCheck.maxAbsDiff} (values up to ${(chunkCheck.maxAbs as number).toFixed(2)}); ${chunkCheck.chunkedMs} ms vs ${chunkCheck.unchunkedMs} ms`);
}
fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'bench/results/vae-attention.json'), JSON.stringify({ size, tile, overlap, threads, rows, chunkCheck }, null, 2));

/** The mirrored split on an SD-width random-weight encoder (down blocks of 128/256/512/512, 2 resnets each, mid attention). */
async function benchEncoder(): Promise<void> {
  const S = size;
  const image = new Float32Array(3 * S * S);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) image[(c * S + y) * S + x] = 0.6 * Math.sin(0.03 * x + 0.05 * y + c) + ((x - S * 0.6) ** 2 + (y - S * 0.4) ** 2 < (S / 5) ** 2 ? 0.4 : -0.1);
  }
  const edir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-sd-vae-enc-'));
  const erows: Record<string, unknown>[] = [];
  let check: Record<string, unknown> | undefined;
  try {
    const file = path.join(edir, 'encoder.onnx');
    fs.writeFileSync(file, toBinary(ModelProtoSchema, buildGroupNormVaeEncoder({ seed: 12, floatType: 'float32', form: 'instance-norm', ...SD_VAE_ENCODER })));
    const be = await localAttentionBackend(file, session, { half: 'encoder' });
    try {
      let t0 = performance.now();
      const full = await be.run(image.slice(), 3, S, S);
      const untiledMs = performance.now() - t0;
      let rms = 0;
      for (const v of full.data) rms += v * v;
      rms = Math.sqrt(rms / full.data.length);
      for (const attention of ['tile', 'global'] as const) {
        const warnings: string[] = [];
        t0 = performance.now();
        const r = await encodeTiled(image, S, S, be, { tileSize: tile, overlap, stats: 'exact', attention, onWarning: (m) => warnings.push(m) });
        const ms = performance.now() - t0;
        const d = absDifference(r.data, full.data);
        const row = { attention, ran: r.attention, statistics: 'exact', passes: r.passes, maxDiff: Number(d.max.toFixed(4)), meanDiff: Number(d.mean.toFixed(4)), ms: Math.round(ms), untiledMs: Math.round(untiledMs), rms: Number(rms.toFixed(3)), warnings };
        erows.push(row);
        console.log(JSON.stringify(row));
      }
      // The global part's attention in query chunks against the unchunked graph, on the whole image's cut tensor.
      const split = be.attention;
      if (split && !('reason' in split)) {
        const cut = await split.tiled.run(image.slice(), 3, S, S);
        const channels = cut.data.length / (cut.height * cut.width);
        const chunked = await localAttentionBackend(file, session, { half: 'encoder', chunkBytes: 64 * 1024 });
        const whole = await localAttentionBackend(file, session, { half: 'encoder', unchunked: true });
        try {
          const a = await (chunked.attention as typeof split).runGlobal(cut.data.slice(), channels, cut.height, cut.width);
          const b = await (whole.attention as typeof split).runGlobal(cut.data.slice(), channels, cut.height, cut.width);
          let maxAbs = 0;
          for (let i = 0; i < a.data.length; i++) maxAbs = Math.max(maxAbs, Math.abs(a.data[i]! - b.data[i]!));
          check = { budgetBytes: 64 * 1024, chunks: a.chunks, maxAbsDiff: maxAbs };
          console.log(JSON.stringify(check));
        } finally {
          await chunked.close();
          await whole.close();
        }
      }
    } finally {
      await be.close();
    }
  } finally {
    fs.rmSync(edir, { recursive: true, force: true });
  }
  console.log(`\nSD-width random-weight VAE encoder, ${S} px, tiles of ${tile} latent px, overlap ${overlap}, ${threads} thread(s); latent mean rms ${erows[0]?.rms}\n`);
  console.log('| attention | statistics | passes | max diff | mean diff | time (ms) |\n|---|---|---|---|---|---|');
  for (const r of erows) console.log(`| ${r.attention}${r.ran !== r.attention ? ` (ran ${r.ran})` : ''} | ${r.statistics} | ${r.passes} | ${r.maxDiff} | ${r.meanDiff} | ${r.ms} |`);
  if (check) console.log(`\nGlobal part in ${check.chunks} query chunks vs unchunked: max abs diff ${check.maxAbsDiff}`);
  fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
  fs.writeFileSync(path.join(ROOT, 'bench/results/vae-attention-encoder.json'), JSON.stringify({ size: S, tile, overlap, threads, rows: erows, chunkCheck: check }, null, 2));
}

/** The decoder's head alone on a large latent, chunked (256 MiB of scores per chunk) or not: time and peak RSS of this process. */
async function benchHeadMemory(): Promise<void> {
  const hdir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-sd-vae-head-'));
  try {
    const file = path.join(hdir, 'decoder.onnx');
    fs.writeFileSync(file, toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 11, floatType: 'float32', form: 'instance-norm', ...SD_VAE_DECODER })));
    const graphs = await prepareVaeAttentionGraphs(file);
    if ('reason' in graphs) throw new Error(graphs.reason);
    const rssBefore = process.resourceUsage().maxRSS / 1024;
    const t0 = performance.now();
    const r = await runAttentionHead({ global: graphs.global, ...(unchunked ? {} : { chunked: graphs.chunked }) }, session, {}, latent, 4, h, h, 256 * 2 ** 20);
    const ms = performance.now() - t0;
    const row = { latent: `${h}x${h}`, tokens: h * h, unchunked, chunks: r.chunks, ms: Math.round(ms), peakRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), rssBeforeMiB: Math.round(rssBefore) };
    console.log(JSON.stringify(row));
    console.log(`\nThe SD-width decoder's head alone, ${size} px, ${threads} thread(s)\n`);
    console.log('| image | latent (tokens) | attention | chunks | peak RSS (MiB) | time (ms) |\n|---|---|---|---|---|---|');
    console.log(`| ${size} | ${row.latent} (${row.tokens.toLocaleString('en')}) | ${unchunked ? 'unchunked head graph' : 'chunked, 256 MiB of scores per chunk'} | ${unchunked ? '-' : row.chunks} | ${row.peakRssMiB} | ${row.ms} |`);
    fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
    fs.writeFileSync(path.join(ROOT, `bench/results/vae-attention-head-${size}${unchunked ? '-unchunked' : ''}.json`), JSON.stringify({ size, threads, ...row }, null, 2));
  } finally {
    fs.rmSync(hdir, { recursive: true, force: true });
  }
}
