/**
 * `npm run bench:vae-memory`: peak memory (max RSS of a fresh process) of decoding one latent untiled and tiled.
 * Each case runs in its own child process, so the figures do not mix; ONNX Runtime runs with one thread.
 *
 *   npm run bench:vae-memory                          the default cases (below)
 *   npm run bench:vae-memory -- --cases sd:1024,sd:4096@4   pick cases: model:size (untiled and tiled), model:size:untiled,
 *                                                     model:size:tiled, model:size@N (tiled, N tiles run; see below),
 *                                                     model:size:global, model:size@N:global (attention 'global': the
 *                                                     head once, in query chunks; bounded: N chunks and N tiles run)
 *   npm run bench:vae-memory -- --max-tiles 4         the bounded 4096 px SD-width case with N and 2N tiles (default 4)
 *   npm run bench:vae-memory -- --tile 64 --overlap 16 --stats estimate
 *
 * Default cases: the shipped decoder at 4096 px (untiled and tiled); the SD-width fixture (test/fixtures/groupnorm-vae.ts,
 * random weights) at 1024 px untiled and tiled; the SD-width fixture at 4096 px tiled, bounded (below) to N and 2N
 * tiles; and attention 'global' (the head once, in query chunks) at 1024 px and, bounded, at 4096 px. Untiled at 4096 px the SD-width decoder needs more memory than a 24 GiB machine has; tiled it is 121 tiles
 * of 512 px, over an hour on 2 CPU cores.
 *
 * Bounded runs (`@N`): the whole tiled decode runs (input, every tile's crop, the full-size float canvas, blending,
 * the 8-bit image at the end, every session opened as in a full run) but only the first N tiles run the model; each
 * later tile reuses the last model output (no model run). What a tile allocates is freed before the next, so the
 * peak is reached once the canvas exists and one tile has run (the child records the peak after every model tile;
 * the table gives it after N and after 2N tiles, from two separate processes).
 *
 * Single graphs (`--probe plain|tile|stats [--size 512] [--ort JSON] [--runs 1]`): the SD-width fixture's plain
 * decoder or one of its derived graphs run (`--runs` times, the owned region moved between runs) on one latent of that size (for the tile graph: unit affine maps, the middle 75 % of
 * each side as the owned region) in a fresh process, with ONNX Runtime's session options merged from --ort (e.g.
 * '{"graphOptimizationLevel":"extended","enableCpuMemArena":false,"enableMemPattern":false}'): the peak RSS and CPU
 * time of that graph alone, as the settings in docs/vae-tiling.md were chosen.
 *
 * Tiled cases use 'estimate' statistics by default: the tile graph's memory does not depend on the statistics mode
 * ('exact' runs the tile graph's segments, one session at a time; `--stats exact` measures it).
 * Writes bench/results/vae-memory.json.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { chwToRgb8 } from '../src/core/image.ts';
import { decodeTiled, type TiledVaeBackend, type TileStatsMode } from '../src/core/vae/tiled.ts';
import { SD_VAE_DECODER, buildGroupNormVaeDecoder } from '../test/fixtures/groupnorm-vae.ts';
import { openSession } from '../src/onnx/session.ts';
import { VaeDecoderAdapter } from '../src/onnx/vae.ts';
import { localBackend } from '../src/node/vae-local.ts';
import { prepareVaeGraphs } from '../src/node/vae-graphs.ts';
import { localAttentionBackend } from '../src/node/vae-attention-local.ts';
import { prepareVaeAttentionGraphs } from '../src/node/vae-attention-graphs.ts';
import { BenchUsageError, benchCli, choiceArg, intArg } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);
const args = process.argv.slice(2);
const SESSION = { provider: 'cpu', threads: 1 } as const;

function smoothLatent(h: number, w: number): Float32Array {
  const lat = new Float32Array(4 * h * w);
  for (let c = 0; c < 4; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) lat[(c * h + y) * w + x] = Math.sin(0.05 * x + 0.03 * y + c);
  return lat;
}

const rssMiB = () => Math.round(process.resourceUsage().maxRSS / 1024);

/** Runs the model for the first `limit` tiles only; later tiles reuse the last output. Records the peak after each model tile. */
function bounded(be: TiledVaeBackend, limit: number, peaks: number[]): TiledVaeBackend {
  let last: Awaited<ReturnType<TiledVaeBackend['runTile']>> | undefined;
  return {
    ...be,
    runTile: async (input, c, h, w, affine, region) => {
      if (last && peaks.length >= limit && last.height === h * 8 && last.width === w * 8) return last;
      last = await be.runTile(input, c, h, w, affine, region);
      peaks.push(rssMiB());
      return last;
    },
  };
}

if (args[0] === '--child') {
  const [, file, sizeArg, mode, limitArg, tileArg, overlapArg, statsArg] = args;
  const h = Number(sizeArg) / 8;
  const latent = smoothLatent(h, h);
  let image;
  let ms: number;
  const extra: Record<string, unknown> = {};
  if (mode === 'untiled') {
    // Only the plain decoder's session, as the pipeline holds for an untiled decode.
    const s = await openSession(file!, 'vae_decoder', SESSION);
    const t0 = performance.now();
    const r = await new VaeDecoderAdapter(s).decode(latent, 4, h, h);
    image = chwToRgb8(r.data, r.height, r.width);
    ms = performance.now() - t0;
  } else if (mode === 'global') {
    // Attention 'global' (the pipeline's default): the head once on the whole latent (the attention in query chunks
    // of 256 MiB of scores; bounded: the first N chunks run the model), then the tail in tiles (bounded: N tiles).
    const limit = Number(limitArg);
    const ab = await localAttentionBackend(file!, SESSION, limit > 0 ? { modelChunks: limit } : {});
    if (!ab.attention || 'reason' in ab.attention) throw new Error(`no attention split: ${ab.attention && 'reason' in ab.attention ? ab.attention.reason : 'none'}`);
    const peaks: number[] = [];
    const be: TiledVaeBackend = limit > 0 ? { ...ab, attention: { ...ab.attention, tiled: bounded(ab.attention.tiled, limit, peaks) } } : ab;
    const t0 = performance.now();
    const r = await decodeTiled(latent, 4, h, h, be, { tileSize: Number(tileArg), overlap: Number(overlapArg), stats: statsArg as TileStatsMode, attention: 'global' });
    if (r.attention !== 'global') throw new Error('the decode fell back to per-tile attention');
    image = chwToRgb8(r.data, r.height, r.width);
    ms = performance.now() - t0;
    await ab.close();
    Object.assign(extra, { tiles: r.tiles, headChunks: r.headChunks, modelTiles: limit > 0 ? Math.min(limit, r.tiles) : r.tiles, ...(limit > 0 ? { peakAfterTileMiB: peaks } : {}) });
  } else {
    // The derived graphs' sessions, opened on first use, one at a time (as in the worker).
    const be = await localBackend(file!, 'vae_decoder', SESSION);
    const limit = Number(limitArg);
    const peaks: number[] = [];
    const t0 = performance.now();
    const r = await decodeTiled(latent, 4, h, h, limit > 0 ? bounded(be, limit, peaks) : be, {
      tileSize: Number(tileArg), overlap: Number(overlapArg), stats: statsArg as TileStatsMode,
    });
    image = chwToRgb8(r.data, r.height, r.width);
    ms = performance.now() - t0;
    await be.close();
    Object.assign(extra, { tiles: r.tiles, modelTiles: limit > 0 ? Math.min(limit, r.tiles) : r.tiles, ...(limit > 0 ? { peakAfterTileMiB: peaks } : {}) });
  }
  console.log(JSON.stringify({ width: image.width, maxRssMiB: rssMiB(), ms: Math.round(ms), ...extra }));
  process.exit(0);
}

const USAGE = `
npm run bench:vae-memory [-- options]: peak memory (max RSS of a fresh process) of decoding one latent untiled and
tiled, each case in its own child process; prints a Markdown table and writes bench/results/vae-memory.json.
See the header of bench/vae-memory.ts for the cases and the bounded runs.

  --cases LIST       model:size[@N][:untiled|tiled|global], comma-separated; model shipped or sd (the SD-width
                     fixture); @N: tiled, only N tiles run the model (default: ${defaultCases(4)})
  --max-tiles N      N of the default bounded cases (default 4)
  --tile N           tile size in latent px (default 64)
  --overlap N        tile overlap in latent px (default 16)
  --stats MODE       tile statistics: estimate (default), exact, off
  --probe GRAPH      instead: one graph of the SD-width fixture (plain, tile or stats) in a fresh process,
    [--size 512] [--ort JSON] [--runs 1]   ONNX Runtime session options merged from --ort
  --help             this text
`;

function defaultCases(maxTiles: number): string {
  return `shipped:4096,sd:1024,sd:4096@${maxTiles},sd:4096@${2 * maxTiles},sd:1024:global,sd:4096@${maxTiles}:global`;
}

const MODES = ['untiled', 'tiled', 'global'] as const;
const cli = args[0] === '--child' ? undefined : benchCli(USAGE, {
  options: {
    cases: { type: 'string' }, 'max-tiles': { type: 'string' }, tile: { type: 'string' }, overlap: { type: 'string' }, stats: { type: 'string' },
    probe: { type: 'string' }, size: { type: 'string' }, ort: { type: 'string' }, runs: { type: 'string' },
  },
}, ({ values }) => {
  if (values.probe === undefined) {
    const stray = (['size', 'ort', 'runs'] as const).filter((k) => values[k] !== undefined);
    if (stray.length) throw new BenchUsageError(`--${stray.join(', --')}: only with --probe`);
  } else {
    const stray = (['cases', 'max-tiles', 'tile', 'overlap', 'stats'] as const).filter((k) => values[k] !== undefined);
    if (stray.length) throw new BenchUsageError(`--${stray.join(', --')}: not with --probe`);
  }
  let ort: Record<string, unknown> = {};
  if (values.ort !== undefined) {
    try {
      ort = JSON.parse(values.ort) as Record<string, unknown>;
    } catch {
      ort = [] as unknown as Record<string, unknown>;
    }
    if (typeof ort !== 'object' || ort === null || Array.isArray(ort)) throw new BenchUsageError(`--ort: expected a JSON object of ONNX Runtime session options, received ${JSON.stringify(values.ort)}`);
  }
  const maxTiles = values['max-tiles'] === undefined ? 4 : intArg('--max-tiles', values['max-tiles'], 1);
  const cases = (values.cases ?? defaultCases(maxTiles)).split(',').flatMap((c) => {
    const m = /^(shipped|sd):(\d+)(?:@(\d+))?(?::([a-z]+))?$/.exec(c.trim());
    const only = m?.[4];
    if (!m || (only !== undefined && !(MODES as readonly string[]).includes(only)) || (m[3] !== undefined && only === 'untiled')) {
      throw new BenchUsageError(`--cases: expected model:size[@N][:untiled|tiled|global] with model shipped or sd (@N not with untiled), received ${JSON.stringify(c)}`);
    }
    const size = intArg('--cases size', m[2]!, 8);
    if (size % 8 !== 0) throw new BenchUsageError(`--cases: ${JSON.stringify(c)}: the size is not a multiple of 8`);
    const limit = m[3] === undefined ? 0 : intArg('--cases @N', m[3], 1);
    const modes = limit > 0 ? [only ?? 'tiled'] : only ? [only] : ['untiled', 'tiled'];
    return modes.map((mode) => ({ model: m[1]!, size, mode, limit }));
  });
  return {
    probe: values.probe === undefined ? undefined : choiceArg('--probe', values.probe, ['plain', 'tile', 'stats'] as const),
    size: values.size === undefined ? 512 : intArg('--size', values.size, 8),
    ort,
    ortJson: values.ort ?? '{}',
    runs: values.runs === undefined ? 1 : intArg('--runs', values.runs, 1),
    cases,
    tile: values.tile === undefined ? 64 : intArg('--tile', values.tile, 8),
    overlap: values.overlap === undefined ? 16 : intArg('--overlap', values.overlap, 0),
    stats: values.stats === undefined ? 'estimate' : choiceArg('--stats', values.stats, ['estimate', 'exact', 'off'] as const),
  };
});

if (cli?.probe) {
  const which = cli.probe;
  const size = String(cli.size);
  const ortJson = cli.ortJson;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-vae-probe-'));
  try {
    const file = path.join(tmp, 'sd-vae-decoder.onnx');
    fs.writeFileSync(file, toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 11, floatType: 'float32', form: 'instance-norm', ...SD_VAE_DECODER })));
    const graphs = await prepareVaeGraphs(file);
    if ('reason' in graphs) throw new Error(graphs.reason);
    const target = which === 'plain' ? file : which === 'stats' ? graphs.statsFile : graphs.tileFile;
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench/vae-memory-probe.ts'), target, size, ortJson, String(cli.runs)], { encoding: 'utf8', cwd: ROOT });
    if (r.status !== 0) throw new Error(`probe failed: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
    console.log(JSON.stringify({ graph: which, size: Number(size), ort: JSON.parse(ortJson), ...JSON.parse(r.stdout.trim().split('\n').pop()!) }));
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(0);
}

const { tile, overlap, stats, cases } = cli!;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-vae-mem-'));
const files: Record<string, string> = { shipped: path.join(ROOT, 'models/shapes-128/vae_decoder/model.onnx') };
const rows: Record<string, unknown>[] = [];
try {
  for (const c of cases) {
    if (c.model === 'sd' && !files.sd) {
      files.sd = path.join(tmp, 'sd-vae-decoder.onnx');
      fs.writeFileSync(files.sd, toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 11, floatType: 'float32', form: 'instance-norm', ...SD_VAE_DECODER })));
    }
    // Derived graphs prepared here, so that the children find them cached (parsing the model is not their memory).
    await prepareVaeGraphs(files[c.model]!);
    if (c.mode === 'global') await prepareVaeAttentionGraphs(files[c.model]!);
    const childArgs = ['--import', 'tsx', SELF, '--child', files[c.model]!, String(c.size), c.mode, String(c.limit), String(tile), String(overlap), stats];
    const r = spawnSync(process.execPath, childArgs, { encoding: 'utf8', cwd: ROOT });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    const base = { model: c.model, size: c.size, mode: c.mode, ...(c.mode !== 'untiled' ? { tile, overlap, stats } : {}), ...(c.limit ? { limit: c.limit } : {}) };
    const row = r.status === 0 ? { ...base, ...JSON.parse(line) } : { ...base, failed: `exit ${r.status ?? r.signal}: ${r.stderr.trim().split('\n').slice(-2).join(' ')}` };
    rows.push(row);
    console.log(JSON.stringify(row));
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log('\n| decoder | size | decode | tiles run | peak RSS (MiB) | time (ms) |\n|---|---|---|---|---|---|');
for (const r of rows) {
  const decode = r.mode === 'untiled' ? 'untiled' : `tiled (${r.tile}, overlap ${r.overlap}, ${r.stats}${r.mode === 'global' ? `, attention global, head in ${r.headChunks ?? '?'} chunks${r.limit ? `, ${r.limit} run` : ''}` : ''})`;
  const run = r.mode !== 'untiled' ? `${r.modelTiles ?? '?'} of ${r.tiles ?? '?'}` : '';
  console.log(`| ${r.model === 'sd' ? 'SD-width fixture' : 'shapes-128'} | ${r.size} | ${decode} | ${run} | ${r.maxRssMiB ?? r.failed} | ${r.ms ?? ''} |`);
}
fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'bench/results/vae-memory.json'), JSON.stringify({ rows }, null, 2));
