/**
 * `npm run bench:vae-stats-memory`: what keeping the tiles' states between norm layers (`--vae-stats-memory`) saves
 * exact tiled statistics, on a random-weight decoder with SD 1.x/2.x's VAE structure and widths (the fixture of
 * `npm run bench:vae-attention`, its mid-block attention run once for the whole latent, as the pipeline's default
 * 'auto' does up to 2048 px). Each case decodes the same latent in a fresh child process: per-tile statistics ('off',
 * one plain tiled pass: the floor) and 'exact' at each budget. Per case: wall time, peak RSS, the last cut whose tile
 * states were kept (-1: none, every layer recomputed from the latent), and how far the image is from the first
 * exact case's (0: the same bits); in the JSON also the first tile's state at each cut kept (`cutBytes`).
 *
 * On webgpu the states stay on the device between segments (src/onnx/tile-states.ts); `--host-budgets` adds cases
 * whose states come back to the host after every segment instead (ASGD_DEVICE_TILE_STATES=0), to weigh the copies.
 *
 *   npm run bench:vae-stats-memory -- [--size 256] [--tile 16] [--overlap 8] [--threads 2] [--provider cpu|webgpu]
 *     [--budgets 0,16,48,1024] [--host-budgets 1024] [--out JSON]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeTiled } from '../src/core/vae/tiled.ts';
import { DEVICE_TILE_STATES_ENV } from '../src/node/device-tile-states.ts';
import { localAttentionBackend } from '../src/node/vae-attention-local.ts';
import { stepLatent, writeSdWidthDecoder } from './card-vae.ts';
import { absDifference } from './analysis/difference.ts';
import { BenchUsageError, benchCli, intArg } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const USAGE = `
npm run bench:vae-stats-memory [-- options]: exact tiled VAE statistics at several --vae-stats-memory budgets on the
SD-width decoder (attention once for the whole latent), against per-tile statistics; each case in a fresh process.
Prints a Markdown table and writes bench/results/vae-stats-memory.json. Slow: minutes per case at 256 px on 2 cores.

  --size N        image size in px, a multiple of 8 (default 256)
  --tile N        tile size in latent px (default 16)
  --overlap N     tile overlap in latent px (default 8)
  --threads N     ONNX Runtime threads (default 2; the CPU provider's)
  --provider P    cpu (default) or webgpu
  --budgets LIST  statsMemory budgets in MiB, comma-separated (default 0,16,48,1024)
  --host-budgets LIST  webgpu: budgets run again with the states brought back to the host after every segment
                  (ASGD_DEVICE_TILE_STATES=0), comma-separated (default: none)
  --out FILE      the JSON's path (default bench/results/vae-stats-memory.json)
  --help          this text
`;
const args = benchCli(USAGE, {
  options: {
    size: { type: 'string' }, tile: { type: 'string' }, overlap: { type: 'string' }, threads: { type: 'string' }, budgets: { type: 'string' }, out: { type: 'string' },
    provider: { type: 'string' }, 'host-budgets': { type: 'string' },
    child: { type: 'string' }, model: { type: 'string' }, image: { type: 'string' },
  },
}, ({ values }) => {
  const size = values.size === undefined ? 256 : intArg('--size', values.size, 8);
  if (size % 8 !== 0) throw new BenchUsageError(`--size: expected a multiple of 8, received ${size}`);
  const budgets = (values.budgets ?? '0,16,48,1024').split(',').map((b) => intArg('--budgets', b.trim(), 0));
  const provider = values.provider ?? 'cpu';
  if (provider !== 'cpu' && provider !== 'webgpu') throw new BenchUsageError(`--provider: expected cpu or webgpu, received ${provider}`);
  const hostBudgets = values['host-budgets'] === undefined ? [] : values['host-budgets'].split(',').map((b) => intArg('--host-budgets', b.trim(), 0));
  if (hostBudgets.length > 0 && provider !== 'webgpu') throw new BenchUsageError('--host-budgets: only with --provider webgpu (on the CPU the states are on the host anyway)');
  return {
    provider: provider as 'cpu' | 'webgpu',
    hostBudgets,
    size,
    tile: values.tile === undefined ? 16 : intArg('--tile', values.tile, 8),
    overlap: values.overlap === undefined ? 8 : intArg('--overlap', values.overlap, 0),
    threads: values.threads === undefined ? 2 : intArg('--threads', values.threads, 1),
    budgets,
    out: values.out ?? path.join(ROOT, 'bench/results/vae-stats-memory.json'),
    child: values.child,
    model: values.model,
    image: values.image,
  };
});
const h = args.size / 8;

/**
 * One decode in this process: 'off', an exact budget in MiB, or 'host:' and a budget (the states on the host). The
 * image goes to `image` (float32).
 */
async function child(model: string, which: string, image: string): Promise<Record<string, unknown>> {
  const latent = stepLatent(h);
  const host = which.startsWith('host:');
  if (host) process.env[DEVICE_TILE_STATES_ENV] = '0';
  const budget = Number(host ? which.slice(5) : which);
  const be = await localAttentionBackend(model, { provider: args.provider, threads: args.threads });
  // The first tile's state at each cut it was kept at (bytes), read on the tiled part's segments.
  const cutBytes: Record<string, number> = {};
  const split = be.attention;
  if (split && 'tiled' in split && split.tiled.runSegment) {
    const inner = split.tiled.runSegment.bind(split.tiled);
    split.tiled.runSegment = async (...a) => {
      const r = await inner(...a);
      if (r.state && !(String(a[1]) in cutBytes)) cutBytes[String(a[1])] = r.state.bytes;
      return r;
    };
  }
  try {
    const t0 = performance.now();
    const r = await decodeTiled(latent, 4, h, h, be, {
      tileSize: args.tile, overlap: args.overlap, attention: 'global',
      ...(which === 'off' ? { stats: 'off' as const } : { stats: 'exact' as const, statsMemory: budget }),
    });
    const ms = performance.now() - t0;
    fs.writeFileSync(image, r.data);
    const hwm = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
    return { ms, peakMiB: Number(hwm?.[1]) / 1024, tiles: r.tiles, passes: r.passes, resumedFrom: r.resumedFrom ?? null, attention: r.attention, cutBytes, deviceStates: be.tileStates() ?? null };
  } finally {
    await be.close();
  }
}

if (args.child) {
  console.log(JSON.stringify(await child(args.model!, args.child, args.image!)));
} else {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-stats-memory-'));
  try {
    const model = writeSdWidthDecoder(dir);
    const self = fileURLToPath(import.meta.url);
    const run = (which: string) => {
      const image = path.join(dir, `image-${which}.f32`);
      const out = execFileSync(process.execPath, [
        '--import', 'tsx', self, '--size', String(args.size), '--tile', String(args.tile), '--overlap', String(args.overlap), '--threads', String(args.threads),
        '--provider', args.provider, '--child', which, '--model', model, '--image', image,
      ], { encoding: 'utf8', maxBuffer: 1 << 24 });
      const r = JSON.parse(out.trim().split('\n').pop()!) as Record<string, unknown>;
      const b = fs.readFileSync(image);
      return Object.assign(r, { image: new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4) });
    };
    // The first run derives the graphs (cached next to the model for the rest): a warm-up, not reported.
    run('off');
    const rows: Record<string, unknown>[] = [];
    const off = run('off');
    const { image: _offImage, ...offRow } = off;
    rows.push({ case: 'off', ...offRow });
    let first: Float32Array | undefined;
    const onDevice = args.provider === 'webgpu' ? ', states on the device' : '';
    for (const which of [...args.budgets.map(String), ...args.hostBudgets.map((b) => `host:${b}`)]) {
      const r = run(which);
      first ??= r.image;
      const d = absDifference(r.image, first);
      const { image: _image, ...row } = r;
      const b = Number(which.replace('host:', ''));
      const label = which.startsWith('host:') ? `exact, ${b} MiB, states on the host` : `exact, ${b} MiB${onDevice}`;
      rows.push({ case: label, statsMemory: b, ...row, maxDiffFromFirst: d.max, overOff: (r['ms'] as number) / (off['ms'] as number) });
    }
    console.log(`SD-width decoder, ${args.size} px, tiles of ${args.tile} (overlap ${args.overlap}), ${rows[0]!['tiles']} tiles, ${args.provider}${args.provider === 'cpu' ? `, ${args.threads} threads` : ''}\n`);
    console.log('| statistics | kept up to cut | time (s) | / off | peak RSS (MiB) | max diff from the first exact |\n| --- | ---: | ---: | ---: | ---: | ---: |');
    for (const r of rows) {
      console.log(`| ${r['case']} | ${r['resumedFrom'] ?? ''} | ${((r['ms'] as number) / 1000).toFixed(1)} | ${r['overOff'] === undefined ? '' : (r['overOff'] as number).toFixed(2)} | ${(r['peakMiB'] as number).toFixed(0)} | ${r['maxDiffFromFirst'] ?? ''} |`);
    }
    fs.mkdirSync(path.dirname(args.out), { recursive: true });
    fs.writeFileSync(args.out, JSON.stringify({ size: args.size, tile: args.tile, overlap: args.overlap, provider: args.provider, threads: args.threads, machine: `${os.cpus().length} cores, ${os.cpus()[0]?.model ?? ''}`, rows }, null, 2));
    console.log(`\nwrote ${path.relative(process.cwd(), args.out)}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
