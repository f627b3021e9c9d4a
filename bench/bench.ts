/**
 * `npm run bench`: where the time of a generation goes, and the host-side costs that run every step at high
 * resolution. Prints Markdown tables and writes bench/results/bench.json. Absolute times belong to this machine
 * (recorded in the JSON with the CPU model); compare ratios within one run.
 *
 *   npm run bench                 all sections
 *   npm run bench -- --only host  one section: generation | host | methods | runner | repetition | vae | vae-memory
 * The runner (multi-device), repetition and VAE tiling benchmarks are their own scripts (npm run bench:runner,
 * npm run bench:repetition, npm run bench:vae); `npm run bench` runs them too (repetition in its --quick form).
 *   npm run bench -- --model DIR  use another model folder (default: the model the repository ships)
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randn } from '../src/core/random/index.ts';
import { benchSchedulerStep } from './host/scheduler-step.ts';
import { defaultModelDir } from '../src/cli/model-dir.ts';
import { saveImage } from '../src/node/image/write.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { writeTinySdModel } from '../test/fixtures/index.ts';
import { benchCli, choiceArg } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SECTIONS = ['generation', 'host', 'methods', 'runner', 'repetition', 'vae', 'vae-memory'] as const;
const USAGE = `
npm run bench [-- options]: where the time of a generation goes; prints Markdown tables, writes bench/results/bench.json.

  --only SECTION   one section: ${SECTIONS.join(' | ')} (default: all, a long run)
  --model DIR      another model folder (default: the model the repository ships)
  --help           this text
`;
const { only, modelArg } = benchCli(USAGE, { options: { only: { type: 'string' }, model: { type: 'string' } } }, ({ values }) => ({
  only: values.only === undefined ? undefined : choiceArg('--only', values.only, SECTIONS),
  modelArg: values.model,
}));
const results: Record<string, unknown> = {
  machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, date: new Date().toISOString() },
};

function table(title: string, header: string[], rows: (string | number)[][]): void {
  const fmt = (v: string | number) => (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v);
  console.log(`\n### ${title}\n`);
  console.log(`| ${header.join(' | ')} |`);
  console.log(`| ${header.map(() => '---').join(' | ')} |`);
  for (const r of rows) console.log(`| ${r.map(fmt).join(' | ')} |`);
}

async function tinyModelDir(): Promise<string> {
  const dir = path.join(ROOT, '.cache', 'models', 'tiny-sd');
  if (!fs.existsSync(path.join(dir, 'model_index.json'))) await writeTinySdModel(dir, { variant: 'standard' });
  return dir;
}

async function generationSplit(): Promise<void> {
  const rows: (string | number)[][] = [];
  const out: unknown[] = [];
  const models = modelArg ? [modelArg] : [...new Set([defaultModelDir(), await tinyModelDir()])].filter((d) => fs.existsSync(d));
  for (const dir of models) {
    const pipe = await loadPipeline(dir, { threads: 2 });
    try {
      const params = { prompt: 'a red circle on a blue background', steps: 20, seed: 1, method: 'direct' as const };
      await pipe.generate({ ...params, steps: 1 }); // warm-up
      const r = await pipe.generate(params);
      const file = path.join(os.tmpdir(), `asgd-bench-${process.pid}.png`);
      const t0 = performance.now();
      await saveImage(file, r.image, r.metadata, true);
      const writeMs = performance.now() - t0;
      fs.rmSync(file, { force: true });
      const t = r.timings;
      const name = path.basename(dir);
      rows.push([name, `${r.image.width}x${r.image.height}`, r.unetEvaluations, t.textMs, t.unetMs, t.hostMs, t.decodeMs, writeMs, t.totalMs + writeMs]);
      out.push({ model: name, size: [r.image.width, r.image.height], steps: params.steps, unetEvaluations: r.unetEvaluations, ...t, writeMs });
    } finally {
      await pipe.close();
    }
  }
  table('One generation at native size (direct, 20 steps, 1 CPU worker x 2 threads), ms', ['model', 'size', 'UNet calls', 'text', 'UNet', 'host', 'VAE', 'write', 'total'], rows);
  results['generation'] = out;
}

function hostCosts(): void {
  const reps = 10;
  randn([1, 4, 256, 256], 0); // warm-up
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    randn([1, 4, 256, 256], i);
    best = Math.min(best, performance.now() - t0);
  }
  const steps = benchSchedulerStep();
  table('Host work on a 1x4x256x256 latent (best of runs), ms', ['operation', 'ms'], [
    ['randn (torch-compatible)', best],
    ...steps.map((s) => [`${s.name} step`, s.msPerStep] as (string | number)[]),
  ]);
  results['host'] = { randn1x4x256x256Ms: best, schedulerStepMs: steps };
}

async function methodsHost(): Promise<void> {
  const mod = (await import('./host/method-step.ts')) as { benchHostWork?: () => Promise<{ method: string; msPerStep: number }[]> };
  if (!mod.benchHostWork) return;
  const rows = await mod.benchHostWork();
  table('Method host work per step at latent 256x256 (16 patches / 49 windows, 512-native model), ms', ['method', 'ms per step'], rows.map((r) => [r.method, r.msPerStep]));
  results['methodsHost'] = rows;
}

async function methodsReal(): Promise<void> {
  const dir = modelArg ?? defaultModelDir();
  const pipe = await loadPipeline(dir, { threads: 2 });
  const rows: (string | number)[][] = [];
  const out: unknown[] = [];
  try {
    const n = pipe.nativeSize.width;
    const steps = 10;
    for (const factor of [2, 4]) {
      for (const method of ['direct', 'multidiffusion', 'cutdiffusion', 'asg'] as const) {
        const size = n * factor;
        const r = await pipe.generate({ prompt: 'a red circle on a blue background', width: size, height: size, steps, seed: 1, method });
        const t = r.timings;
        rows.push([method, `${size}x${size} (${factor * factor}x area)`, r.unetEvaluations, t.denoiseMs / steps, t.hostMs / steps, t.totalMs]);
        out.push({ method, size, areaFactor: factor * factor, steps, unetEvaluations: r.unetEvaluations, wallPerStepMs: t.denoiseMs / steps, hostPerStepMs: t.hostMs / steps, totalMs: t.totalMs });
      }
    }
  } finally {
    await pipe.close();
  }
  table(`Methods on ${path.basename(dir)} (10 steps, 1 CPU worker x 2 threads)`, ['method', 'size', 'UNet evaluations', 'wall ms/step', 'host ms/step', 'total ms'], rows);
  results['methods'] = out;
}

function script(file: string, extra: string[]): () => void {
  return () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'bench', file), ...extra], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error(`bench/${file} failed with exit code ${r.status}`);
  };
}

const sections: Record<(typeof SECTIONS)[number], () => Promise<void> | void> = {
  generation: generationSplit,
  host: hostCosts,
  methods: async () => {
    await methodsHost();
    await methodsReal();
  },
  runner: script('runner.ts', []),
  repetition: script('repetition.ts', ['--quick']),
  vae: script('vae-tiling.ts', [...(modelArg ? ['--model', modelArg] : []), '--pass-limits', 'none']),
  // Peak memory on the shipped decoder at 4096 px (the SD-width cases, 1024 px and a bounded 4096 px run:
  // npm run bench:vae-memory, about 30 minutes on 2 cores).
  'vae-memory': script('vae-memory.ts', ['--cases', 'shipped:4096']),
};
for (const [name, fn] of Object.entries(sections)) {
  if (only && only !== name) continue;
  await fn();
}
const outDir = path.join(ROOT, 'bench', 'results');
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'bench.json'), JSON.stringify(results, null, 2) + '\n');
console.log(`\nWrote ${path.relative(process.cwd(), path.join(outDir, 'bench.json'))}`);
