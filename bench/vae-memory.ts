/**
 * `npm run bench:vae-memory`: peak memory (max RSS of a fresh process) of decoding one latent untiled and tiled.
 * Each case runs in its own child process, so the figures do not mix.
 *
 *   npm run bench:vae-memory                                   the shipped decoder at 4096 px; the SD-width fixture at 1024 px
 *   npm run bench:vae-memory -- --cases shipped:4096,sd:1024     pick cases (model:size)
 * Tiled cases use tiles of 64 latent px (overlap 16) and 'estimate' statistics: the tile graph's memory does not
 * depend on the statistics mode ('exact' runs the same graph more often, plus an accumulator of a few KiB).
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
import { decodeTiled } from '../src/core/vae/tiled.ts';
import { SD_VAE_DECODER, buildGroupNormVaeDecoder } from '../test/fixtures/groupnorm-vae.ts';
import { openSession } from '../src/onnx/session.ts';
import { VaeDecoderAdapter } from '../src/onnx/vae.ts';
import { localBackend } from '../src/node/vae-local.ts';
import { prepareVaeGraphs } from '../src/node/vae-graphs.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SELF = fileURLToPath(import.meta.url);
const args = process.argv.slice(2);

function smoothLatent(h: number, w: number): Float32Array {
  const lat = new Float32Array(4 * h * w);
  for (let c = 0; c < 4; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) lat[(c * h + y) * w + x] = Math.sin(0.05 * x + 0.03 * y + c);
  return lat;
}

if (args[0] === '--child') {
  const [, file, sizeArg, mode] = args;
  const h = Number(sizeArg) / 8;
  const latent = smoothLatent(h, h);
  let image;
  let ms: number;
  if (mode === 'untiled') {
    // Only the plain decoder's session, as the pipeline holds for an untiled decode.
    const s = await openSession(file!, 'vae_decoder', { provider: 'cpu' });
    const t0 = performance.now();
    const r = await new VaeDecoderAdapter(s).decode(latent, 4, h, h);
    image = chwToRgb8(r.data, r.height, r.width);
    ms = performance.now() - t0;
  } else {
    // The plain decoder's session and, opened on first use, the statistics and tile graphs' (as in the worker).
    const be = await localBackend(file!, 'vae_decoder');
    const t0 = performance.now();
    const r = await decodeTiled(latent, 4, h, h, be, { tileSize: 64, overlap: 16, stats: 'estimate' });
    image = chwToRgb8(r.data, r.height, r.width);
    ms = performance.now() - t0;
    await be.close();
  }
  console.log(JSON.stringify({ width: image.width, maxRssMiB: Math.round(process.resourceUsage().maxRSS / 1024), ms: Math.round(ms) }));
  process.exit(0);
}

const cases = (args.includes('--cases') ? args[args.indexOf('--cases') + 1]! : 'shipped:4096,sd:1024').split(',').map((c) => {
  const [model, size] = c.split(':');
  return { model: model!, size: Number(size) };
});
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
    for (const mode of ['untiled', 'tiled']) {
      const r = spawnSync(process.execPath, ['--import', 'tsx', SELF, '--child', files[c.model]!, String(c.size), mode], { encoding: 'utf8', cwd: ROOT });
      const line = r.stdout.trim().split('\n').pop() ?? '';
      const row = r.status === 0 ? { model: c.model, size: c.size, mode, ...JSON.parse(line) } : { model: c.model, size: c.size, mode, failed: `exit ${r.status ?? r.signal}: ${r.stderr.trim().split('\n').slice(-2).join(' ')}` };
      rows.push(row);
      console.log(JSON.stringify(row));
    }
  }
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
console.log('\n| decoder | size | decode | peak RSS (MiB) | time (ms) |\n|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.model === 'sd' ? 'SD-width fixture' : 'shapes-128'} | ${r.size} | ${r.mode}${r.mode === 'tiled' ? ' (64, overlap 16)' : ''} | ${r.maxRssMiB ?? r.failed} | ${r.ms ?? ''} |`);
fs.mkdirSync(path.join(ROOT, 'bench/results'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'bench/results/vae-memory.json'), JSON.stringify({ rows }, null, 2));
