/**
 * `npm run bench:vae`: tiled VAE decoding against the untiled decode of the same latent, for each statistics mode
 * (off: per-tile statistics, as before; estimate; exact), on a model's decoder. Prints a Markdown table and writes
 * bench/results/vae-tiling.json.
 *
 *   npm run bench:vae                          the shipped model, 512 and 1024 px, tiles of 32 and 64 latent px
 *   npm run bench:vae -- --model DIR --sizes 512 --tiles 32 --pass-limits 2,3   (also 'exact' capped at 2 and 3 passes; 'none')
 *   npm run bench:vae -- --latent FILE.f32 --latent-size 64x64   decode a saved latent (float32 [4, h, w], scaled)
 *   npm run bench:vae -- --encoder --sizes 256 --tiles 16           the encoder: tiled vs untiled latent mean
 *   npm run bench:vae -- --generate --sizes 512 --tiles 32          decode the final latent of an asg generation
 *     (prompt "a red square on a blue background", seed 1, default steps) instead of the synthetic picture's
 *
 * The latent is the encoder's mean of a synthetic picture in the training data's style (a coloured square and a
 * circle on a ramped background), multiplied by the scaling factor as a generated latent would be. Metrics, on the
 * 8-bit images: max and mean absolute difference in levels; the seam measure: gradient energy on the tile overlaps
 * against elsewhere, tiled relative to untiled (0 = no seam, 0.05 = 5 % more energy on the borders).
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chwToRgb8, type RgbImage } from '../src/core/image.ts';
import { decodeTiled, encodeTiled, type TileStatsMode } from '../src/core/vae/tiled.ts';
import { planAxis } from '../src/core/vae/tiling.ts';
import { defaultModelDir } from '../src/cli/model-dir.ts';
import { readModelFolder } from '../src/node/model/folder.ts';
import { localBackend } from '../src/node/vae-local.ts';
import { absDifference } from './analysis/difference.ts';
import { BenchUsageError, benchCli, intArg, intList } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface TilingRow {
  size: number;
  tile: number;
  overlap: number;
  stats: TileStatsMode;
  /** The pass limit of 'exact' (undefined: until converged, at most one more than the norm layers). */
  maxPasses?: number;
  maxDiff: number;
  meanDiff: number;
  seam: number;
  passes: number;
  ms: number;
}

/** A picture in the style of the shipped model's training data, [3, size, size] in [-1, 1]. */
export function syntheticPicture(size: number): Float32Array {
  const img = new Float32Array(3 * size * size);
  const bg = [0.5, 0.0, 0.5];
  const square = [0.9, 0.1, 0.1];
  const circle = [0.95, 0.85, 0.1];
  const s0 = size * 0.2;
  const s1 = size * 0.62;
  const cx = size * 0.72;
  const cy = size * 0.7;
  const r = size * 0.18;
  for (let y = 0; y < size; y++) {
    const ramp = 1 + 0.12 * (y / size - 0.5);
    for (let x = 0; x < size; x++) {
      let c = bg.map((v) => v * ramp);
      if (x >= s0 && x < s1 && y >= s0 && y < s1) c = square;
      if ((x - cx) ** 2 + (y - cy) ** 2 < r * r) c = circle;
      for (let k = 0; k < 3; k++) img[(k * size + y) * size + x] = c[k]! * 2 - 1;
    }
  }
  return img;
}

export function levelDiff(a: RgbImage, b: RgbImage): { max: number; mean: number } {
  return absDifference(a.data, b.data);
}

/** Whether each output position along an axis lies in an overlap of two tiles. */
function borderMask(size: number, tileSize: number, overlap: number, scale: number): Uint8Array {
  const tiles = planAxis(size, tileSize, overlap);
  const m = new Uint8Array(size * scale);
  for (let i = 1; i < tiles.length; i++) for (let p = tiles[i]!.start * scale; p < tiles[i - 1]!.end * scale; p++) m[p] = 1;
  return m;
}

/** Gradient energy on tile overlaps over that elsewhere, of `img`. */
function borderRatio(img: RgbImage, my: Uint8Array, mx: Uint8Array): number {
  let onB = 0;
  let nB = 0;
  let off = 0;
  let nO = 0;
  const { width: W, height: H, data } = img;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      for (let c = 0; c < 3; c++) {
        const v = data[(y * W + x) * 3 + c]!;
        if (x + 1 < W) {
          const g = (data[(y * W + x + 1) * 3 + c]! - v) ** 2;
          if (mx[x] || mx[x + 1]) (onB += g), nB++;
          else (off += g), nO++;
        }
        if (y + 1 < H) {
          const g = (data[((y + 1) * W + x) * 3 + c]! - v) ** 2;
          if (my[y] || my[y + 1]) (onB += g), nB++;
          else (off += g), nO++;
        }
      }
    }
  }
  return onB / Math.max(1, nB) / Math.max(1e-9, off / Math.max(1, nO));
}

export function seamMeasure(tiled: RgbImage, full: RgbImage, latentH: number, latentW: number, tileSize: number, overlap: number): number {
  const scale = full.height / latentH;
  const my = borderMask(latentH, tileSize, overlap, scale);
  const mx = borderMask(latentW, tileSize, overlap, scale);
  return borderRatio(tiled, my, mx) / borderRatio(full, my, mx) - 1;
}

/** Encodes the synthetic picture to a scaled latent [4, size/8, size/8] divided back by the scaling factor (what the decoder takes). */
export async function syntheticLatent(modelDir: string, size: number): Promise<Float32Array> {
  const spec = readModelFolder(modelDir);
  if (!spec.paths.vaeEncoder) throw new Error(`${modelDir} has no vae_encoder`);
  const enc = await localBackend(spec.paths.vaeEncoder, 'vae_encoder');
  try {
    const r = await enc.run(syntheticPicture(size), 3, size, size);
    // latent_parameters: the mean channels first.
    return r.data.slice(0, 4 * (size / 8) * (size / 8));
  } finally {
    await enc.close();
  }
}

/** The final latent of an asg generation at `size` px, divided by the scaling factor (what the decoder takes). */
export async function generatedLatent(modelDir: string, size: number): Promise<Float32Array> {
  const { loadPipeline } = await import('../src/node/pipeline.ts');
  const pipe = await loadPipeline(modelDir);
  try {
    const r = await pipe.generate({ prompt: 'a red square on a blue background', width: size, height: size, seed: 1, method: 'asg', vae: { tiling: 'off' } });
    const inv = 1 / pipe.spec.vae.scalingFactor;
    return Float32Array.from(r.latent, (v) => v * inv);
  } finally {
    await pipe.close();
  }
}

export async function benchVaeTiling(opts: {
  modelDir: string; sizes: number[]; tiles: number[]; overlap?: number; modes?: TileStatsMode[]; passLimits?: number[]; latent?: { data: Float32Array; size: number };
  generate?: boolean;
}): Promise<TilingRow[]> {
  const spec = readModelFolder(opts.modelDir);
  const dec = await localBackend(spec.paths.vaeDecoder, 'vae_decoder');
  const rows: TilingRow[] = [];
  try {
    for (const size of opts.latent ? [opts.latent.size] : opts.sizes) {
      const h = size / 8;
      const latent = opts.latent?.data ?? (opts.generate ? await generatedLatent(opts.modelDir, size) : await syntheticLatent(opts.modelDir, size));
      const full = await dec.run(latent.slice(), 4, h, h);
      const fullImg = chwToRgb8(full.data, full.height, full.width);
      for (const tile of opts.tiles.filter((t) => t < h)) {
        const overlap = opts.overlap ?? Math.min(16, tile / 2);
        const runs: [TileStatsMode, number | undefined][] = (opts.modes ?? (['off', 'estimate', 'exact'] as TileStatsMode[])).flatMap((m) =>
          m === 'exact' ? [...(opts.passLimits ?? []).map((n): [TileStatsMode, number] => [m, n]), [m, undefined] as [TileStatsMode, undefined]] : [[m, undefined] as [TileStatsMode, undefined]],
        );
        for (const [stats, maxPasses] of runs) {
          const t0 = performance.now();
          const r = await decodeTiled(latent, 4, h, h, dec, { tileSize: tile, overlap, stats, maxPasses });
          const ms = performance.now() - t0;
          const img = chwToRgb8(r.data, r.height, r.width);
          const d = levelDiff(img, fullImg);
          rows.push({ size, tile, overlap, stats: r.stats, maxPasses, maxDiff: d.max, meanDiff: d.mean, seam: seamMeasure(img, fullImg, h, h, tile, overlap), passes: r.passes, ms });
        }
      }
    }
  } finally {
    await dec.close();
  }
  return rows;
}

/** The encoder: max and mean absolute difference of the tiled latent mean from the untiled one (and the latent's rms). */
export async function benchEncoderTiling(opts: { modelDir: string; sizes: number[]; tiles: number[]; overlap?: number }) {
  const spec = readModelFolder(opts.modelDir);
  if (!spec.paths.vaeEncoder) throw new Error(`${opts.modelDir} has no vae_encoder`);
  const enc = await localBackend(spec.paths.vaeEncoder, 'vae_encoder');
  const rows: { size: number; tile: number; overlap: number; stats: TileStatsMode; passes: number; maxDiff: number; meanDiff: number; rms: number }[] = [];
  try {
    for (const size of opts.sizes) {
      const img = syntheticPicture(size);
      const full = await enc.run(img.slice(), 3, size, size);
      const rms = Math.sqrt(full.data.reduce((a, v) => a + v * v, 0) / full.data.length);
      for (const tile of opts.tiles.filter((t) => t < size / 8)) {
        const overlap = opts.overlap ?? Math.min(16, tile / 2);
        for (const stats of ['off', 'estimate', 'exact'] as TileStatsMode[]) {
          const r = await encodeTiled(img, size, size, enc, { tileSize: tile, overlap, stats });
          const d = absDifference(r.data, full.data);
          rows.push({ size, tile, overlap, stats, passes: r.passes, maxDiff: d.max, meanDiff: d.mean, rms });
        }
      }
    }
  } finally {
    await enc.close();
  }
  return rows;
}

export function tilingTable(rows: TilingRow[]): string {
  const lines = ['| size | tile (latent px) | overlap | statistics | passes | max diff (levels) | mean diff | seam | time (ms) |', '|---|---|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    lines.push(`| ${r.size} | ${r.tile} | ${r.overlap} | ${r.stats}${r.maxPasses ? ` (≤ ${r.maxPasses} passes)` : ''} | ${r.passes} | ${r.maxDiff} | ${r.meanDiff.toFixed(3)} | ${(r.seam * 100).toFixed(1)} % | ${r.ms.toFixed(0)} |`);
  }
  return lines.join('\n');
}

const USAGE = `
npm run bench:vae [-- options]: tiled against untiled VAE decoding of the same latent, for each statistics mode;
prints a Markdown table and writes bench/results/vae-tiling.json (the encoder: vae-tiling-encoder.json).

  --model DIR          model folder (default: the shipped model)
  --sizes LIST         image sizes in px, comma-separated (default 512,1024; the encoder 256,512)
  --tiles LIST         tile sizes in latent px (default 32,64; the encoder 16,32)
  --overlap N          tile overlap in latent px (default: the smaller of 16 and half the tile)
  --pass-limits LIST   also 'exact' capped at these pass counts (default 2,3; 'none' for no such rows)
  --generate           decode the final latent of an asg generation instead of the synthetic picture's
  --latent FILE        decode a saved latent (raw float32 [4, h, w], scaled), with --latent-size
  --latent-size HxW    the saved latent's size in latent px (square), e.g. 64x64
  --encoder            the encoder: tiled vs untiled latent mean of the synthetic picture
  --help               this text
`;

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const o = benchCli(USAGE, {
    options: {
      model: { type: 'string' }, sizes: { type: 'string' }, tiles: { type: 'string' }, overlap: { type: 'string' }, 'pass-limits': { type: 'string' },
      generate: { type: 'boolean' }, latent: { type: 'string' }, 'latent-size': { type: 'string' }, encoder: { type: 'boolean' },
    },
  }, ({ values }) => {
    const list = (name: string, v: string | undefined, d: number[], min: number) => (v === undefined ? d : v === 'none' ? [] : intList(name, v, min));
    const encoder = values.encoder === true;
    if (encoder && (values.generate || values.latent !== undefined || values['pass-limits'] !== undefined)) {
      throw new BenchUsageError('--encoder: not with --generate, --latent or --pass-limits');
    }
    if (values.generate && values.latent !== undefined) throw new BenchUsageError('--generate and --latent: give one latent source');
    if ((values.latent === undefined) !== (values['latent-size'] === undefined)) throw new BenchUsageError('--latent and --latent-size go together');
    let latent: { data: Float32Array; size: number } | undefined;
    if (values.latent !== undefined) {
      const m = /^(\d+)x(\d+)$/.exec(values['latent-size']!);
      if (!m || m[1] !== m[2] || Number(m[1]) < 1) throw new BenchUsageError(`--latent-size: expected a square size in latent px such as 64x64, received ${JSON.stringify(values['latent-size'])}`);
      const side = Number(m[1]);
      if (!fs.existsSync(values.latent)) throw new BenchUsageError(`--latent: no file ${values.latent}`);
      const bytes = fs.readFileSync(values.latent);
      if (bytes.length !== 4 * side * side * 4) throw new BenchUsageError(`--latent: ${values.latent} has ${bytes.length} bytes, a float32 [4, ${side}, ${side}] latent has ${4 * side * side * 4}`);
      latent = { data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)), size: side * 8 };
    }
    return {
      encoder,
      modelDir: values.model ?? defaultModelDir(),
      sizes: list('--sizes', values.sizes, encoder ? [256, 512] : [512, 1024], 8),
      tiles: list('--tiles', values.tiles, encoder ? [16, 32] : [32, 64], 8),
      overlap: values.overlap === undefined ? undefined : intArg('--overlap', values.overlap, 0),
      passLimits: list('--pass-limits', values['pass-limits'], [2, 3], 1),
      generate: values.generate === true,
      latent,
    };
  });
  const { modelDir } = o;
  fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
  if (o.encoder) {
    const rows = await benchEncoderTiling({ modelDir, sizes: o.sizes, tiles: o.tiles, overlap: o.overlap });
    console.log(`VAE encoder tiling on ${path.basename(modelDir)} (tiled vs untiled latent mean of a synthetic picture)\n`);
    console.log('| size | tile (latent px) | overlap | statistics | passes | max diff | mean diff | latent rms |\n|---|---|---|---|---|---|---|---|');
    for (const r of rows) console.log(`| ${r.size} | ${r.tile} | ${r.overlap} | ${r.stats} | ${r.passes} | ${r.maxDiff.toFixed(4)} | ${r.meanDiff.toFixed(4)} | ${r.rms.toFixed(3)} |`);
    fs.writeFileSync(path.join(ROOT, 'bench/results/vae-tiling-encoder.json'), JSON.stringify({ model: modelDir, rows }, null, 2));
    process.exit(0);
  }
  const rows = await benchVaeTiling({ modelDir, sizes: o.sizes, tiles: o.tiles, overlap: o.overlap, passLimits: o.passLimits, latent: o.latent, generate: o.generate });
  console.log(`VAE tiling on ${path.basename(modelDir)} (tiled vs untiled decode of the same latent)\n`);
  console.log(tilingTable(rows));
  fs.writeFileSync(path.join(ROOT, 'bench/results/vae-tiling.json'), JSON.stringify({ model: modelDir, rows }, null, 2));
}
