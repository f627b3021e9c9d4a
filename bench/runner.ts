/**
 * Benchmark of the multi-device runner (not a test). Prints Markdown tables and writes bench/results/runner.json.
 *
 *   node --import tsx bench/runner.ts                 both parts
 *   node --import tsx bench/runner.ts --model-only    only the latency-model part (a few minutes)
 *   node --import tsx bench/runner.ts --scheduling-only   only the scheduling settings at the shipped defaults
 *   node --import tsx bench/runner.ts --host-only [--runs 7]   only the coordinator's host work (median and min)
 *   node --import tsx bench/runner.ts --real-only [--configs cpu:2,cpu*2:1]
 *
 * Real part: the built-in tiny model at 16x its native area (2048x2048 px, asg, 4 steps) on CPU workers; each
 * config is "cpu*<workers>:<threads per worker>". Default: 1 worker x 2 threads vs 2 workers x 1 thread.
 *
 * Latency-model part: the real methods, scheduler and dispatcher driving latency-model devices (a benchmark
 * instrument, see latency-model.ts) at the paper's SDXL geometries, 50 steps, K = 1, 2, 4, 8.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { SplitMode } from '../src/core/dispatch/tasks.ts';
import { writeTinySdModel } from '../test/fixtures/index.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { SD3_GEOMETRY, SDXL_GEOMETRIES, simulateGeneration, type Geometry, type LatencyParams, type SimResult } from './latency-model.ts';
import { BenchUsageError, benchCli, intArg } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const USAGE = `
node --import tsx bench/runner.ts [options] (npm run bench:runner -- [options]): the multi-device runner; prints
Markdown tables and writes bench/results/runner.json (a run of one part keeps the other parts' last results).

  (no option)         both parts: real CPU workers, then the latency model (long)
  --real-only         only the real part: the tiny model at 2048x2048 px, asg, 4 steps, on CPU workers
  --configs LIST      the real part's configs, cpu*<workers>:<threads> comma-separated (default cpu*1:2,cpu*2:1)
  --model-only        only the latency-model part (a few minutes)
  --scheduling-only   only the scheduling settings and CFG splitting at the shipped defaults
  --host-only         only the coordinator's host work
  --runs N            runs per row of --host-only (default 7; median and min)
  --help              this text
`;
const { flag, configs, runs } = benchCli(USAGE, {
  options: {
    'real-only': { type: 'boolean' }, 'model-only': { type: 'boolean' }, 'scheduling-only': { type: 'boolean' }, 'host-only': { type: 'boolean' },
    configs: { type: 'string' }, runs: { type: 'string' },
  },
}, ({ values }) => {
  const parts = (['real-only', 'model-only', 'scheduling-only', 'host-only'] as const).filter((p) => values[p]);
  if (parts.length > 1) throw new BenchUsageError(`--${parts.join(' and --')}: give at most one part`);
  if (values.runs !== undefined && !values['host-only']) throw new BenchUsageError('--runs: only with --host-only');
  if (values.configs !== undefined && parts.length > 0 && !values['real-only']) throw new BenchUsageError(`--configs: only for the real part, not with --${parts[0]}`);
  const configs = (values.configs ?? 'cpu*1:2,cpu*2:1').split(',').map((c) => {
    const m = /^cpu(?:\*(\d+))?:(\d+)$/.exec(c.trim());
    if (!m || Number(m[1] ?? 1) < 1 || Number(m[2]) < 1) throw new BenchUsageError(`--configs: bad config ${JSON.stringify(c)}: use cpu*<workers>:<threads>`);
    return { workers: Number(m[1] ?? 1), threads: Number(m[2]) };
  });
  return {
    flag: (name: '--real-only' | '--model-only' | '--scheduling-only' | '--host-only') => values[name.slice(2) as 'real-only'] === true,
    configs,
    runs: values.runs === undefined ? 7 : intArg('--runs', values.runs, 1),
  };
});

// ------------------------------------------------------------------------------------------------ real part

interface RealRow {
  config: string;
  workers: number;
  threads: number;
  denoiseMs: number;
  totalMs: number;
  unetEvaluations: number;
  unitsPerSecond: number;
  speedup: number;
  identical: boolean;
}

async function realPart(): Promise<RealRow[]> {
  const dir = path.join(os.tmpdir(), 'asgd-bench-tiny');
  if (!fs.existsSync(path.join(dir, 'model_index.json'))) await writeTinySdModel(dir, { variant: 'standard' });
  const params = { prompt: 'a red circle on a blue background', steps: 4, seed: 3, width: 2048, height: 2048 };
  const rows: RealRow[] = [];
  let reference: Float32Array | undefined;
  for (const c of configs) {
    const devices = Array.from({ length: c.workers }, () => 'cpu').join(',');
    const p = await loadPipeline(dir, { devices, threads: c.threads });
    try {
      await p.generate({ ...params, steps: 1, width: 1024, height: 1024 }); // warm-up: first-run allocations
      let best: Awaited<ReturnType<typeof p.generate>> | undefined;
      for (let rep = 0; rep < 2; rep++) {
        const r = await p.generate(params);
        if (!best || r.timings.denoiseMs < best.timings.denoiseMs) best = r;
      }
      reference ??= best!.latent;
      const identical = best!.latent.length === reference.length && best!.latent.every((v, i) => Object.is(v, reference![i]));
      rows.push({
        config: `${c.workers} worker${c.workers > 1 ? 's' : ''} x ${c.threads} thread${c.threads > 1 ? 's' : ''}`,
        workers: c.workers,
        threads: c.threads,
        denoiseMs: best!.timings.denoiseMs,
        totalMs: best!.timings.totalMs,
        unetEvaluations: best!.unetEvaluations,
        unitsPerSecond: best!.unetEvaluations / (best!.timings.denoiseMs / 1000),
        speedup: 0,
        identical,
      });
    } finally {
      await p.close();
    }
  }
  for (const r of rows) r.speedup = rows[0]!.denoiseMs / r.denoiseMs;
  console.log(`\n### Real: tiny model, 2048x2048 px (16x native area), asg, ${params.steps} steps, ${os.availableParallelism()} cores\n`);
  console.log('| config | denoise s | total s | UNet units | units/s | throughput vs first | same latent bits |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.config} | ${(r.denoiseMs / 1000).toFixed(2)} | ${(r.totalMs / 1000).toFixed(2)} | ${r.unetEvaluations} | ${r.unitsPerSecond.toFixed(1)} | ${r.speedup.toFixed(2)}x | ${r.identical ? 'yes' : 'NO'} |`);
  }
  return rows;
}

// ------------------------------------------------------------------------------------------------ model part

const GEOMETRIES = SDXL_GEOMETRIES;
/** One SDXL UNet CFG call at 1024 px takes about 100 ms on the paper's GPUs (34 s for 325 calls at 2048 px). */
const LATENCY: LatencyParams = { unitMs: 100, nativeArea: 128 * 128, halfCost: 0.5, probeExtra: 0.15, callOverheadMs: 1 };
const KS = [1, 2, 4, 8];
const STEPS = 50;

interface ModelRow {
  geometry: string;
  mode: string;
  split: SplitMode | 'n/a';
  latency: LatencyParams;
  chargeHost: boolean;
  devices: number;
  seconds: number;
  speedup: number;
  idle: number[];
  unitsSplit: number;
  hostMsPerStep: number;
}

const MODES = [
  { mode: 'async, pixel interaction', pixelInteraction: true, guidanceSync: false },
  { mode: 'sync, pixel interaction', pixelInteraction: true, guidanceSync: true },
  { mode: 'async, no pixel interaction', pixelInteraction: false, guidanceSync: false },
  { mode: 'sync, no pixel interaction', pixelInteraction: false, guidanceSync: true },
];

function row(geometry: Geometry, mode: string, split: ModelRow['split'], latency: LatencyParams, chargeHost: boolean, k: number, r: SimResult, base: number): ModelRow {
  return {
    geometry: geometry.name, mode, split, latency, chargeHost, devices: k, seconds: r.makespanMs / 1000, speedup: base / r.makespanMs,
    idle: r.idle, unitsSplit: r.unitsSplit, hostMsPerStep: r.hostMsPerStep,
  };
}

const baselines = new Map<string, number>();

async function sweep(
  geometry: Geometry, mode: (typeof MODES)[number], split: SplitMode, latency: LatencyParams, chargeHost = false, ks = KS,
): Promise<ModelRow[]> {
  const run = (k: number, s: SplitMode) => simulateGeneration({ geometry, devices: k, steps: STEPS, pixelInteraction: mode.pixelInteraction, guidanceSync: mode.guidanceSync, split: s, latency, chargeHost });
  // Baseline: one device, whole units (what a single GPU runs).
  const key = JSON.stringify([geometry.name, mode.mode, latency, chargeHost]);
  if (!baselines.has(key)) baselines.set(key, (await run(1, 'never')).makespanMs);
  const base = baselines.get(key)!;
  const rows: ModelRow[] = [];
  for (const k of ks) rows.push(row(geometry, mode.mode, split, latency, chargeHost, k, await run(k, split), base));
  return rows;
}

function printModel(title: string, rows: ModelRow[], columns: ('mode' | 'split' | 'latency')[]): void {
  console.log(`\n### ${title}\n`);
  const head = ['geometry', ...columns, 'K', 'time s', 'speed-up', 'idle per device', 'units split'];
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => '---').join('|')}|`);
  for (const r of rows) {
    const cells = [r.geometry.split(' (')[0]!];
    for (const c of columns) {
      if (c === 'mode') cells.push(r.mode);
      if (c === 'split') cells.push(r.split);
      if (c === 'latency') cells.push(`half ${r.latency.halfCost}, probe +${Math.round(r.latency.probeExtra * 100)}%${r.chargeHost ? `, host ${r.hostMsPerStep.toFixed(0)} ms/step` : ''}`);
    }
    cells.push(String(r.devices), r.seconds.toFixed(2), `${r.speedup.toFixed(2)}x`, r.idle.map((x) => `${Math.round(x * 100)}%`).join(' '), String(r.unitsSplit));
    console.log(`| ${cells.join(' | ')} |`);
  }
}

let hostWork: unknown;

async function modelPart(): Promise<ModelRow[]> {
  const t0 = performance.now();
  const all: ModelRow[] = [];
  // 1. Every guidance mode with load balancing ('balance': what CPU device lists get by default).
  const byMode: ModelRow[] = [];
  for (const g of GEOMETRIES) for (const m of MODES) byMode.push(...(await sweep(g, m, 'balance', LATENCY)));
  printModel(`Latency model: speed-up over 1 device, CFG halves as needed (split balance), ${STEPS} steps, unit ${LATENCY.unitMs} ms`, byMode, ['mode']);
  all.push(...byMode);

  // 2. The split policies, default mode.
  const bySplit: ModelRow[] = [];
  for (const g of GEOMETRIES) for (const s of ['never', 'always'] as SplitMode[]) bySplit.push(...(await sweep(g, MODES[0]!, s, LATENCY)));
  printModel('Latency model: split policies (async guidance, pixel interaction on)', bySplit, ['split']);
  all.push(...bySplit);

  // 3. Sensitivity: dearer batch-1 halves, a dearer mask, and the coordinator's own host time (measured here).
  const sens: ModelRow[] = [];
  for (const g of GEOMETRIES) {
    for (const [lat, host] of [
      [{ ...LATENCY, halfCost: 0.55 }, false],
      // Measured on an H200 with an SDXL-sized PyTorch UNet proxy at a 128x128 latent: fp32 0.57, fp16 (eager) 1.04.
      [{ ...LATENCY, halfCost: 0.57 }, false],
      [{ ...LATENCY, halfCost: 1.04 }, false],
      [{ ...LATENCY, probeExtra: 0.3 }, false],
      [LATENCY, true],
    ] as [LatencyParams, boolean][]) {
      sens.push(...(await sweep(g, MODES[0]!, 'balance', lat, host, [4, 8])));
    }
  }
  printModel('Latency model: sensitivity (async, pixel interaction on, split balance)', sens, ['latency']);
  all.push(...sens);

  // 4. The coordinator's host work at the shipped defaults.
  hostWork = await hostPart(3);

  // 5. The scheduling settings of issue 15 (stage2Windows, interactionEvery with stage-1 run-ahead): the real
  // methods, at the shipped defaults (stage split 0.8, a CFG half 1.04 of a whole call, async guidance).
  all.push(...(await schedulingPart()));
  console.log(`\n(latency-model part: ${((performance.now() - t0) / 1000).toFixed(0)} s wall)`);
  return all;
}

interface HostRow { geometry: string; devices: number; scheduler: string; stage2: string; runs: number; hostMsPerStep: number; exposedMsPerStep: number; exposedMin: number; exposedAll: number[] }

/**
 * The coordinator's host work at the shipped defaults (stage split 0.8, a CFG half as dear as a whole call): all of it
 * (wall time between events) and the part the devices wait for (makespan with host time charged minus makespan
 * without). Work that overlaps the devices' (the next step's permutations, the units guided and stepped as they come
 * in but the last) is not exposed. Stage 2 as a dataflow (the default) and with a barrier every step (lockstep, which
 * also takes every stage-1 step's results as a batch after the loop), measured alternately; `runs` per row, median
 * (and the minimum: host work only grows under interference from other processes).
 */
async function hostPart(runs: number): Promise<HostRow[]> {
  const hostRows: HostRow[] = [];
  const shipped = { ...LATENCY, halfCost: 1.04 };
  // One device too: every unit of a step queues on it, so host work on a result can delay the next unit.
  // And DPM-Solver++ (a multistep solver: its history kept per position, stepped in parts; lockstep is how it ran before)
  // and Euler ancestral (the step's noise drawn for the whole latent), dataflow only.
  const cases: [Geometry, number, boolean, string?][] = [
    [GEOMETRIES[0]!, 1, false], [GEOMETRIES[0]!, 4, true], [GEOMETRIES[0]!, 4, false], [GEOMETRIES[1]!, 8, true], [GEOMETRIES[1]!, 8, false], [SD3_GEOMETRY, 4, false],
    [GEOMETRIES[0]!, 4, true, 'dpmpp-2m'], [GEOMETRIES[0]!, 4, false, 'dpmpp-2m'], [GEOMETRIES[1]!, 8, true, 'dpmpp-2m'], [GEOMETRIES[1]!, 8, false, 'dpmpp-2m'],
    [GEOMETRIES[0]!, 4, false, 'euler-ancestral'], [GEOMETRIES[1]!, 8, false, 'euler-ancestral'],
  ];
  for (const [g, k, lockstep, scheduler] of cases) {
    const settings = { geometry: g, devices: k, steps: STEPS, pixelInteraction: true, guidanceSync: false, split: 'balance' as SplitMode, latency: shipped, stageSplit: 0.8, lockstep, ...(scheduler ? { scheduler } : {}) };
    const free = await simulateGeneration(settings);
    const host: number[] = [];
    const exposed: number[] = [];
    for (let i = 0; i < runs; i++) {
      const r = await simulateGeneration({ ...settings, chargeHost: true });
      host.push(r.hostMsPerStep);
      exposed.push((r.makespanMs - free.makespanMs) / STEPS);
    }
    const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
    hostRows.push({ geometry: g.name, devices: k, scheduler: scheduler ?? (g.sd3 ? 'flow-euler' : 'euler'), stage2: lockstep ? 'barrier' : 'dataflow', runs, hostMsPerStep: median(host), exposedMsPerStep: median(exposed), exposedMin: Math.min(...exposed), exposedAll: exposed });
  }
  console.log(`\n### Coordinator host work per step at the shipped defaults (median of ${runs}; min)\n`);
  console.log('| geometry | K | scheduler | stage 2 | host ms/step | exposed ms/step (devices wait) | exposed min |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of hostRows) console.log(`| ${r.geometry} | ${r.devices} | ${r.scheduler} | ${r.stage2} | ${r.hostMsPerStep.toFixed(1)} | ${r.exposedMsPerStep.toFixed(1)} | ${r.exposedMin.toFixed(1)} |`);
  return hostRows;
}

interface SchedulingRow {
  geometry: string;
  devices: number;
  settings: string;
  methodOptions: Record<string, unknown>;
  units: number;
  seconds: number;
  /** Over one device running the same settings. */
  speedup: number;
  /** Over one device running today's defaults (the time a user waits, relative). */
  speedupVsDefaults: number;
  idle: number[];
}

/** Scheduling settings at the shipped defaults, 4 devices at 2048 px and 8 at 3072 px (the issue's targets). */
async function schedulingPart(): Promise<ModelRow[]> {
  const shipped = { ...LATENCY, halfCost: 1.04 };
  const rows: SchedulingRow[] = [];
  for (const [g, k] of [[GEOMETRIES[0]!, 4], [GEOMETRIES[1]!, 8]] as const) {
    const settings: [string, Record<string, unknown>, boolean?][] = [
      ['defaults, every step a barrier (before the stage-2 dataflow)', {}, true],
      ['defaults', {}],
      [`stage2Windows ${k}`, { stage2Windows: k }],
      ['interactionEvery 2', { interactionEvery: 2 }],
      ['interactionEvery 3', { interactionEvery: 3 }],
      ['interactionEvery 4', { interactionEvery: 4 }],
      ['interactionEvery 8', { interactionEvery: 8 }],
      ['interactionEvery 8, interactionTail 0.25', { interactionEvery: 8, interactionTail: 0.25 }],
      ['interactionEvery 16, interactionTail 0.25', { interactionEvery: 16, interactionTail: 0.25 }],
      [`interactionEvery 4, stage2Windows ${k}`, { interactionEvery: 4, stage2Windows: k }],
      [`interactionEvery 8, stage2Windows ${k}`, { interactionEvery: 8, stage2Windows: k }],
      [`no pixel interaction, stage2Windows ${k}`, { pixelInteraction: false, stage2Windows: k }],
      ['interactionGroups lines, linesPeriod 1', { interactionGroups: 'lines', linesPeriod: 1 }],
      ['interactionGroups lines (linesPeriod 2)', { interactionGroups: 'lines' }],
      ['interactionGroups lines, linesPeriod 4', { interactionGroups: 'lines', linesPeriod: 4 }],
    ];
    const sim = (devices: number, methodOptions: Record<string, unknown>, split: SplitMode, lockstep = false) =>
      simulateGeneration({ geometry: g, devices, steps: STEPS, pixelInteraction: true, guidanceSync: false, split, latency: shipped, stageSplit: 0.8, methodOptions, lockstep });
    const today = (await sim(1, {}, 'never')).makespanMs;
    for (const [label, methodOptions, lockstep] of settings) {
      const one = Object.keys(methodOptions).length === 0 ? today : (await sim(1, methodOptions, 'never')).makespanMs;
      const r = await sim(k, methodOptions, 'balance', lockstep);
      rows.push({
        geometry: g.name, devices: k, settings: label, methodOptions, units: r.units, seconds: r.makespanMs / 1000,
        speedup: one / r.makespanMs, speedupVsDefaults: today / r.makespanMs, idle: r.idle,
      });
    }
  }
  console.log('\n### Scheduling settings at the shipped defaults (stage split 0.8, CFG half 1.04, async guidance, split balance)\n');
  console.log('| geometry | K | settings | units | time s | speed-up (same settings on 1 device) | vs defaults on 1 device | idle per device |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.geometry.split(' (')[0]} | ${r.devices} | ${r.settings} | ${r.units} | ${r.seconds.toFixed(2)} | ${r.speedup.toFixed(2)}x | ${r.speedupVsDefaults.toFixed(2)}x | ${r.idle.map((x) => `${Math.round(x * 100)}%`).join(' ')} |`);
  }
  scheduling = rows;

  // CFG splitting ('balance', the default on CPU device lists; opt-in on GPUs) against none, at the defaults, as the
  // cost of a CFG half varies (1.04 measured with PyTorch fp16 on the H200, 0.57 in fp32, 0.54-0.60 on the CPU
  // provider here).
  const splitRows: { geometry: string; devices: number; halfCost: number; balance: number; never: number; unitsSplit: number }[] = [];
  for (const [g, k] of [[GEOMETRIES[0]!, 4], [GEOMETRIES[1]!, 8]] as const) {
    for (const halfCost of [1.04, 0.9, 0.8, 0.7, 0.6, 0.5]) {
      const latency = { ...LATENCY, halfCost };
      const sim = (devices: number, split: SplitMode) =>
        simulateGeneration({ geometry: g, devices, steps: STEPS, pixelInteraction: true, guidanceSync: false, split, latency, stageSplit: 0.8 });
      const one = (await sim(1, 'never')).makespanMs;
      const b = await sim(k, 'balance');
      const n = await sim(k, 'never');
      splitRows.push({ geometry: g.name, devices: k, halfCost, balance: one / b.makespanMs, never: one / n.makespanMs, unitsSplit: b.unitsSplit });
    }
  }
  // Every scheduler: with a barrier every step (lockstep: how the multistep solvers ran before their history was kept
  // per position) and at the defaults (run-ahead where pixel interaction allows it, the stage-2 dataflow).
  const schedulerRows: { geometry: string; devices: number; scheduler: string; units: number; barrier: number; defaults: number }[] = [];
  for (const [g, k] of [[GEOMETRIES[0]!, 4], [GEOMETRIES[1]!, 8]] as const) {
    for (const scheduler of ['euler', 'ddim', 'dpmpp-2m', 'lms', 'pndm', 'euler-ancestral']) {
      const sim = (devices: number, lockstep: boolean) =>
        simulateGeneration({ geometry: g, devices, steps: STEPS, pixelInteraction: true, guidanceSync: false, split: 'balance', latency: shipped, stageSplit: 0.8, lockstep, scheduler });
      const one = (await sim(1, false)).makespanMs;
      const barrier = await sim(k, true);
      const now = await sim(k, false);
      schedulerRows.push({ geometry: g.name, devices: k, scheduler, units: now.units, barrier: one / barrier.makespanMs, defaults: one / now.makespanMs });
    }
  }
  // An upscale (strength 0.5, the default: the last 25 of 50 steps; asg's stage 1 guided toward the input), with a
  // barrier every step (lockstep: how it ran before schedulerFrom kept the part-of-the-latent steps) and as run today.
  for (const [g, k] of [[GEOMETRIES[0]!, 4], [GEOMETRIES[1]!, 8]] as const) {
    const sim = (devices: number, lockstep: boolean) =>
      simulateGeneration({ geometry: g, devices, steps: STEPS, pixelInteraction: true, guidanceSync: false, split: 'balance', latency: shipped, stageSplit: 0.8, lockstep, upscaleStrength: 0.5 });
    const one = (await sim(1, false)).makespanMs;
    const barrier = await sim(k, true);
    const now = await sim(k, false);
    schedulerRows.push({ geometry: g.name, devices: k, scheduler: 'euler, an upscale to this size at strength 0.5', units: now.units, barrier: one / barrier.makespanMs, defaults: one / now.makespanMs });
  }
  console.log('\n### Schedulers at the shipped defaults: speed-up over 1 device, every step a barrier and as run today\n');
  console.log('| geometry | K | scheduler | units | every step a barrier | defaults |');
  console.log('|---|---|---|---|---|---|');
  for (const r of schedulerRows) console.log(`| ${r.geometry.split(' (')[0]} | ${r.devices} | ${r.scheduler} | ${r.units} | ${r.barrier.toFixed(2)}x | ${r.defaults.toFixed(2)}x |`);
  schedulers = schedulerRows;

  console.log('\n### CFG splitting at the shipped defaults: speed-up over 1 device with split balance and never\n');
  console.log('| geometry | K | CFG half / whole | balance | never | units split (balance) |');
  console.log('|---|---|---|---|---|---|');
  for (const r of splitRows) console.log(`| ${r.geometry.split(' (')[0]} | ${r.devices} | ${r.halfCost} | ${r.balance.toFixed(2)}x | ${r.never.toFixed(2)}x | ${r.unitsSplit} |`);
  splitting = splitRows;
  return [];
}

let splitting: unknown;

let schedulers: unknown;

let scheduling: SchedulingRow[] | undefined;

async function main(): Promise<void> {
  const file = path.join(ROOT, 'bench', 'results', 'runner.json');
  // A run of one part keeps the other part's last results.
  let out: Record<string, unknown> = {};
  try {
    out = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch {
    out = {};
  }
  Object.assign(out, { date: new Date().toISOString(), node: process.version, cores: os.availableParallelism() });
  if (!flag('--model-only') && !flag('--scheduling-only') && !flag('--host-only')) out['real'] = await realPart();
  if (flag('--host-only')) {
    const lm = (out['latencyModel'] ?? {}) as Record<string, unknown>;
    out['latencyModel'] = { ...lm, hostWork: await hostPart(runs) };
  } else if (flag('--scheduling-only')) {
    await schedulingPart();
    const lm = (out['latencyModel'] ?? {}) as Record<string, unknown>;
    out['latencyModel'] = { ...lm, scheduling, schedulers, splitting };
  } else if (!flag('--real-only')) out['latencyModel'] = { params: LATENCY, steps: STEPS, rows: await modelPart(), hostWork, scheduling, schedulers, splitting };
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  console.log(`\nWrote ${path.relative(process.cwd(), file)}`);
}

await main();
