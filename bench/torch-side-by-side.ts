/**
 * The same `asg` generation on the shipped model by the independent torch reference (training/asg_reference.py,
 * Debian's python3-torch, weights read from the shipped ONNX files) and by this project, same settings and seed,
 * in one run: wall time of each (process start, model load and sampling), their ratio, and the final-latent
 * difference. Prints a table and writes bench/results/torch-side-by-side.json.
 *
 *   node --import tsx bench/torch-side-by-side.ts [--sizes 256x256,512x512] [--steps 10] [--threads 2]
 *
 * Needs /usr/bin/python3 with torch and onnx (Debian: python3-torch python3-onnx python3-numpy).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchUsageError, benchCli, intArg } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const USAGE = `
node --import tsx bench/torch-side-by-side.ts [options]: the same asg generation by the torch reference
(training/asg_reference.py, needs python3 with torch) and by this project; prints a Markdown table and writes
bench/results/torch-side-by-side.json.

  --sizes LIST     WxH sizes, comma-separated (default 256x256,512x512)
  --steps N        steps (default 10)
  --threads N      threads of each (default 2)
  --help           this text
`;
const values = benchCli(USAGE, {
  options: { sizes: { type: 'string', default: '256x256,512x512' }, steps: { type: 'string', default: '10' }, threads: { type: 'string', default: '2' } },
}, ({ values: v }) => {
  for (const s of v.sizes!.split(',')) if (!/^\d+x\d+$/.test(s.trim())) throw new BenchUsageError(`--sizes: expected WxH sizes such as 256x256, received ${JSON.stringify(s)}`);
  intArg('--steps', v.steps!, 1);
  intArg('--threads', v.threads!, 1);
  return v;
});
const threads = values.threads!;
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-torch-'));

function timed(cmd: string, args: string[], env: Record<string, string> = {}): { ms: number; stdout: string } {
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stderr}`);
  return { ms, stdout: r.stdout };
}

function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

const rows: { size: string; steps: number; torchMs: number; oursMs: number; ratio: number; maxAbsDiff: number; maxAbs: number }[] = [];
for (const size of values.sizes!.split(',')) {
  const [w, h] = size.split('x');
  const torchOut = path.join(work, `torch-${size}.f32`);
  const oursOut = path.join(work, `ours-${size}.f32`);
  const torch = timed('/usr/bin/python3', ['training/asg_reference.py', '--width', w!, '--height', h!, '--steps', values.steps!, '--raw', torchOut], {
    OMP_NUM_THREADS: threads, OPENBLAS_NUM_THREADS: threads, MKL_NUM_THREADS: threads,
  });
  const ours = timed(process.execPath, ['--import', 'tsx', 'scripts/asg-reference-latent.ts', '--from', 'test/reference/asg-default-512x512.json', '--width', w!, '--height', h!, '--scheduler', 'none', '--threads', threads, '--steps', values.steps!, '--out', oursOut]);
  const a = readF32(torchOut);
  const b = readF32(oursOut);
  let maxAbsDiff = 0;
  let maxAbs = 0;
  for (let i = 0; i < a.length; i++) {
    maxAbsDiff = Math.max(maxAbsDiff, Math.abs(a[i]! - b[i]!));
    maxAbs = Math.max(maxAbs, Math.abs(a[i]!));
  }
  rows.push({ size, steps: Number(values.steps), torchMs: torch.ms, oursMs: ours.ms, ratio: ours.ms / torch.ms, maxAbsDiff, maxAbs });
}

console.log(`\n### asg on the shipped model: torch reference vs this project (${threads} threads each, wall time incl. start and load)\n`);
console.log('| size | steps | torch (s) | asgdiffusion (s) | ours / torch | max abs latent diff | max abs latent |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  console.log(`| ${r.size} | ${r.steps} | ${(r.torchMs / 1000).toFixed(1)} | ${(r.oursMs / 1000).toFixed(1)} | ${r.ratio.toFixed(2)} | ${r.maxAbsDiff.toExponential(1)} | ${r.maxAbs.toFixed(2)} |`);
}
fs.mkdirSync(path.join(ROOT, 'bench', 'results'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'bench', 'results', 'torch-side-by-side.json'), JSON.stringify({ command: `node --import tsx bench/torch-side-by-side.ts ${process.argv.slice(2).join(' ')}`.trim(), threads: Number(threads), cpus: os.cpus().length, rows }, null, 2));
