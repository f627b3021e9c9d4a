/**
 * How cost grows with the image: wall time and peak resident memory of one generation at 1x, 4x, 16x and 64x the
 * native area, for every method, on the shipped model. Each case runs in its own process (so peak RSS is that
 * case's), one after the other. Prints a Markdown table and writes bench/results/cost-growth.json.
 *
 *   node --import tsx bench/cost-growth.ts [--steps 10] [--threads 2] [--areas 1,4,16,64] [--methods asg,direct]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchUsageError, benchCli, choiceList, intArg, intList } from './args.ts';
import { METHOD_NAMES } from '../src/core/options/registry.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(ROOT, 'models', 'shapes-128');
const NATIVE = 128;

// Child: one generation, then its own timing and peak RSS as JSON on stdout.
if (process.argv[2] === '--child') {
  const [, , , method, size, steps, threads] = process.argv;
  const { loadPipeline } = await import('../src/node/pipeline.ts');
  const t0 = performance.now();
  const pipe = await loadPipeline(MODEL, { threads: Number(threads) });
  const tLoad = performance.now();
  const r = await pipe.generate({ prompt: 'a red circle on a blue background', seed: 1, steps: Number(steps), width: Number(size), height: Number(size), method: method as 'asg' });
  const tGen = performance.now();
  await pipe.close();
  // maxRSS covers this process (the coordinator); the device worker is a thread of it, so its sessions count too.
  process.stdout.write(JSON.stringify({ loadMs: tLoad - t0, generateMs: tGen - tLoad, unetEvaluations: r.unetEvaluations, peakRssMiB: process.resourceUsage().maxRSS / 1024 }));
  process.exit(0);
}

const USAGE = `
node --import tsx bench/cost-growth.ts [options]: one generation per process on the shipped model at growing areas;
time of generate and peak RSS. Prints a Markdown table and writes bench/results/cost-growth.json.

  --steps N        steps (default 10)
  --threads N      CPU threads of the one worker (default 2)
  --areas LIST     areas as multiples of the native 128x128, perfect squares (default 1,4,16,64)
  --methods LIST   comma-separated subset of ${METHOD_NAMES.join(', ')} (default all)
  --help           this text
`;
const values = benchCli(USAGE, {
  options: { steps: { type: 'string', default: '10' }, threads: { type: 'string', default: '2' }, areas: { type: 'string', default: '1,4,16,64' }, methods: { type: 'string' } },
}, ({ values: v }) => {
  const areas = intList('--areas', v.areas!, 1);
  for (const a of areas) if (!Number.isInteger(Math.sqrt(a))) throw new BenchUsageError(`--areas: expected perfect squares (the side grows by the root), received ${a}`);
  intArg('--steps', v.steps!, 1);
  intArg('--threads', v.threads!, 0);
  return { steps: v.steps!, threads: v.threads!, areas, methods: v.methods === undefined ? [...METHOD_NAMES] : choiceList('--methods', v.methods, METHOD_NAMES) };
});
const rows: { method: string; area: number; size: number; units?: number; generateS?: number; peakRssMiB?: number; failed?: string }[] = [];
for (const area of values.areas) {
  const size = NATIVE * Math.sqrt(area);
  for (const method of values.methods) {
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', method, String(size), values.steps, values.threads], { cwd: ROOT, encoding: 'utf8', maxBuffer: 16 << 20 });
    if (r.status !== 0) {
      // Recorded, not thrown: a whole-image UNet call at a large size can exhaust memory (the point of the table).
      const failed = r.signal ? `killed (${r.signal})` : `exit ${r.status}: ${r.stderr.trim().split('\n').pop() ?? ''}`;
      rows.push({ method, area, size, failed });
      process.stderr.write(`${method} ${size} px: ${failed}\n`);
      continue;
    }
    const j = JSON.parse(r.stdout.slice(r.stdout.lastIndexOf('{'))) as { generateMs: number; unetEvaluations: number; peakRssMiB: number };
    rows.push({ method, area, size, units: j.unetEvaluations, generateS: j.generateMs / 1000, peakRssMiB: j.peakRssMiB });
    process.stderr.write(`${method} ${size} px: ${(j.generateMs / 1000).toFixed(1)} s, ${j.peakRssMiB.toFixed(0)} MiB\n`);
  }
}
console.log(`\n### Cost growth on the shipped model (${values.steps} steps, 1 CPU worker, ${values.threads} threads; generate only, model load excluded)\n`);
console.log('| method | area | size (px) | UNet evaluations | time (s) | peak RSS (MiB) |');
console.log('| --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  console.log(r.failed ? `| ${r.method} | ${r.area}x | ${r.size} | | ${r.failed} | |` : `| ${r.method} | ${r.area}x | ${r.size} | ${r.units} | ${r.generateS!.toFixed(1)} | ${r.peakRssMiB!.toFixed(0)} |`);
}
fs.mkdirSync(path.join(ROOT, 'bench', 'results'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'bench', 'results', 'cost-growth.json'), JSON.stringify({ command: `node --import tsx bench/cost-growth.ts ${process.argv.slice(2).join(' ')}`.trim(), cpus: os.cpus().length, rows }, null, 2));
