/**
 * `npm run bench:vae-attention`: what the decoder's self-attention block costs tiled decoding. A tile's attention
 * sees only the tile, so even with the whole image's GroupNorm statistics a tiled decode differs from the untiled
 * one. Measured on a random-weight decoder with SD 1.x/2.x's VAE structure and widths (up blocks of 512/512/256/128
 * channels, 3 resnets each, GroupNorm 32, the mid-block attention; about 49 M parameters), with and without its
 * attention block (same weights otherwise), tiled against untiled:
 *   - per-tile statistics (off),
 *   - the untiled decode's own statistics given to every tile (oracle: what exact statistics converge to, so the
 *     difference left is the attention's and the tile borders'),
 *   - exact statistics (layer by layer through the prefix graphs), as the pipeline runs by default.
 *
 *   npm run bench:vae-attention -- [--size 256] [--tile 16] [--overlap 8]
 * Writes bench/results/vae-attention.json.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { chwToRgb8 } from '../src/core/image.ts';
import { decodeTiled, type TiledDecodeOptions } from '../src/core/vae/tiled.ts';
import { SD_VAE_DECODER, buildGroupNormVaeDecoder } from '../test/fixtures/groupnorm-vae.ts';
import { localBackend } from '../src/node/vae-local.ts';
import { levelDiff, seamMeasure } from './vae-tiling.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const arg = (k: string, d: number) => (args.includes(k) ? Number(args[args.indexOf(k) + 1]) : d);
const size = arg('--size', 256);
const tile = arg('--tile', 16);
const overlap = arg('--overlap', 8);
const h = size / 8;

const latent = new Float32Array(4 * h * h);
for (let c = 0; c < 4; c++) {
  for (let y = 0; y < h; y++) for (let x = 0; x < h; x++) latent[(c * h + y) * h + x] = Math.sin(0.21 * x + 0.13 * y + c) + (x > (h * 5) / 9 ? (c === 1 ? 1.5 : -0.75) : 0);
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-sd-vae-'));
const rows: Record<string, unknown>[] = [];
try {
  for (const midAttention of [true, false]) {
    const file = path.join(dir, `decoder-${midAttention ? 'attn' : 'noattn'}.onnx`);
    fs.writeFileSync(file, toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 11, floatType: 'float32', form: 'instance-norm', ...SD_VAE_DECODER, midAttention })));
    const be = await localBackend(file, 'vae_decoder');
    try {
      let t0 = performance.now();
      const full = await be.run(latent.slice(), 4, h, h);
      const untiledMs = performance.now() - t0;
      const fullImg = chwToRgb8(full.data, full.height, full.width);
      const cases: [string, Partial<TiledDecodeOptions>][] = [
        ['off', { stats: 'off' }],
        ['oracle (untiled statistics)', { stats: 'estimate', estimateMaxSize: h }],
        ['exact', { stats: 'exact' }],
      ];
      for (const [label, o] of cases) {
        t0 = performance.now();
        const r = await decodeTiled(latent, 4, h, h, be, { tileSize: tile, overlap, stats: 'off', ...o });
        const ms = performance.now() - t0;
        const img = chwToRgb8(r.data, r.height, r.width);
        const d = levelDiff(img, fullImg);
        const row = { midAttention, statistics: label, passes: r.passes, maxDiff: d.max, meanDiff: Number(d.mean.toFixed(3)), seam: Number(seamMeasure(img, fullImg, h, h, tile, overlap).toFixed(4)), ms: Math.round(ms), untiledMs: Math.round(untiledMs) };
        rows.push(row);
        console.log(JSON.stringify(row));
      }
    } finally {
      await be.close();
    }
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}
console.log(`\nSD-width random-weight VAE decoder, ${size} px, tiles of ${tile} latent px, overlap ${overlap}\n`);
console.log('| mid attention | statistics | passes | max diff | mean diff | seam | time (ms) |\n|---|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.midAttention ? 'yes' : 'no'} | ${r.statistics} | ${r.passes} | ${r.maxDiff} | ${r.meanDiff} | ${((r.seam as number) * 100).toFixed(1)} % | ${r.ms} |`);
fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'bench/results/vae-attention.json'), JSON.stringify({ size, tile, overlap, rows }, null, 2));
