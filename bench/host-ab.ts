/**
 * The coordinator's hottest host kernels in two checkouts of this project, timed in one process, rounds alternating:
 * a stage-1 pixel-interaction step taken unit by unit (BarrierStep: each unit's output guided and stepped as it comes
 * in; SDXL patches of 4 x 128 x 128, x0-space guidance with a mask, Euler and DPM-Solver++; in WebAssembly where the checkout has the
 * kernels, src/core/kernels), the stateless schedulers' whole-latent steps on a 1 x 4 x 256 x 256 latent, DPM-Solver++'s
 * and LMS's with a history, whole and in parts (PartStepper), and the
 * coordinator's host work per step in the latency-model generation at the shipped defaults and with every step in
 * stage 1 or in stage 2, and with DPM-Solver++ (bench/latency-model.ts, SDXL at 2048 and 3072 px and SD3 at 2048 px, each checkout's own: the wall time of all
 * its host work on the discrete-event clock, SimResult.hostMsPerStep). On this project's shared machine separate
 * processes of the same code differ by up to 1.5x (V8's compiled code and the machine's state vary from process to
 * process), which hides changes of a few tens of percent; alternating in one process does not. Each case also checks
 * that both checkouts give the same bits.
 *
 *   node --import tsx bench/host-ab.ts --before /tmp/before [--after .] [--rounds 20]
 *
 * (`git worktree add /tmp/before <commit>` and a node_modules link make a "before" checkout.) Prints a table and
 * writes bench/results/host-ab.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchUsageError, benchCli, intArg } from './args.ts';
import { shippedDefaultsSettings } from './latency-model.ts';

const USAGE = `
node --import tsx bench/host-ab.ts --before DIR [--after DIR] [--rounds N]: the unit-by-unit stage-1 step, the
stateless scheduler steps and the latency-model generation's host work per step of two checkouts, alternating in one
process; median ms and the ratio after / before.

  --before DIR  a checkout of this project to compare with (e.g. a git worktree of an earlier commit)
  --after DIR   the other checkout (default: this one)
  --rounds N    timed rounds per case and checkout, 5 calls each (default 20; half as many, at least 3, of one
                whole generation each)
  --help        this text
`;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const { before, after, rounds } = benchCli(USAGE, {
  options: { before: { type: 'string' }, after: { type: 'string', default: path.join(HERE, '..') }, rounds: { type: 'string', default: '20' } },
}, ({ values: v }) => {
  if (v.before === undefined) throw new BenchUsageError('--before: required, a checkout of this project to compare with');
  return { before: path.resolve(v.before), after: path.resolve(v.after!), rounds: intArg('--rounds', v.rounds!, 3) };
});
for (const dir of [before, after]) {
  if (!fs.existsSync(path.join(dir, 'src', 'core', 'methods', 'barrier-step.ts'))) {
    process.stderr.write(`host-ab.ts: ${dir} is not a checkout of this project (no src/core/methods/barrier-step.ts)\n`);
    process.exit(2);
  }
}

interface Case {
  run(): void | Promise<void>;
  /** A digest of the last result's bits. */
  digest(): number;
  /** The last call's own measure, in place of its wall time (the generation's host work per step). */
  measured?(): number;
  /** Calls per timed round (default 5). */
  runs?: number;
}
/** A scheduler state as both checkouts take it. */
type SchedulerState = { stepIndex: number; history: Float32Array[]; extra?: Record<string, number> };
type Scheduler = {
  step(state: SchedulerState, m: Float32Array, s: Float32Array): { prevSample: Float32Array };
  stepPositions?(k: number, m: Float32Array, s: Float32Array, into: Float32Array, at: Int32Array | null): void;
  eulerCoefficients?(k: number): unknown;
  noiseLevel(k: number): { alpha: number; sigma: number };
};

function digest(a: Float32Array): number {
  const bits = new Int32Array(a.buffer, a.byteOffset, a.length);
  let h = 0;
  for (let i = 0; i < bits.length; i++) h = (Math.imul(h, 31) + bits[i]!) | 0;
  return h;
}

/** The cases of one checkout, built from its own modules (so each checkout runs its own code). */
async function casesOf(root: string): Promise<Record<string, Case>> {
  const load = (file: string) => import(path.join(root, 'src', 'core', file));
  const { BarrierStep } = await load('methods/barrier-step.ts');
  // Since 2026-12-07 a BarrierStep takes the patches' layout; the kernels are compared patch-major.
  const { patchLayout } = await load('methods/polyphase.ts');
  const { drawPermutations } = await load('methods/pixel-interaction.ts');
  const { weightedMask } = await load('methods/guidance.ts');
  const { createRandom } = await load('random/index.ts');
  const { createScheduler } = await load('schedulers/index.ts');
  const { SD15_SCHEDULER_CONFIG } = await load('schedulers/presets.ts');
  // Since 2026-12-07 a BarrierStep may take its step in WebAssembly (the kernels' memory and the Euler step's scalars).
  const kernels = fs.existsSync(path.join(root, 'src', 'core', 'kernels', 'memory.ts')) ? await load('kernels/memory.ts') : null;
  const rng = createRandom(5, 'bench');
  const noise = (n: number) => Float32Array.from(rng.randn([n]) as ArrayLike<number>);
  const cases: Record<string, Case> = {};
  const plane = 128 * 128;
  const size = 4 * plane;
  for (const n of [4, 9]) {
    const sched = createScheduler(SD15_SCHEDULER_CONFIG, 50, 'euler') as Scheduler;
    // Either checkout's MethodContext.advance: with stepPositions (positions listed) or the whole-array step.
    const advance = sched.stepPositions
      ? (k: number, m: Float32Array, x: Float32Array, into = new Float32Array(x.length), at?: Int32Array) => {
          sched.stepPositions!(k, m, x, into, at ?? null);
          return into;
        }
      : (k: number, m: Float32Array, x: Float32Array) => sched.step({ stepIndex: k, history: [] }, m, x).prevSample;
    const patches = noise(n * size);
    const outputs = Array.from({ length: n }, () => noise(size));
    const perm = drawPermutations(createRandom(1, 'permutation'), size, n);
    const key = noise(size);
    const mask = Float32Array.from({ length: plane }, (_, i) => (i % 7) / 7);
    const eps = new Float32Array(n * size);
    const next = new Float32Array(n * size);
    const layout = patchLayout?.(n, size);
    const memory = kernels?.KernelMemory.create() ?? null;
    let k = 0;
    let results: Float32Array[] = [];
    cases[`stage-1 step unit by unit, ${n} patches of 4x128x128 (x0 guidance, Euler)`] = {
      run: () => {
        const step = (k++ % 40) + 1;
        const { alpha, sigma } = sched.noiseLevel(step);
        const g = { space: 'x0', key, weights: weightedMask(mask, (0.7 * alpha) / sigma, plane), alpha, sigma };
        const euler = memory ? sched.eulerCoefficients!(step) : null;
        // Both forms of the kernel's step: `euler` before 2026-12-07 (sixth session), `step` since.
        const kernel = memory && euler ? { kernel: { memory, euler, step: { euler } } } : {};
        const b = new BarrierStep({ step, patches, layout, perm, n, size, advance, guidance: () => g, eps, next, ...kernel });
        for (let j = 0; j < n; j++) b.take(j, { output: outputs[j]! });
        // Read through the step: since 2026-12-07 (later) the kernel's results are copied out when first read.
        results = [b.eps, b.next];
      },
      digest: () => digest(results[1]!) ^ digest(results[0]!),
    };
    // DPM-Solver++ at second order: each checkout's path (PartStepper's part steps in TypeScript; since 2026-12-07,
    // sixth session, the unit kernel with the history in its memory, PartStepper.statefulStep).
    const { PartStepper } = await load('schedulers/part-stepper.ts');
    const dpm = createScheduler(SD15_SCHEDULER_CONFIG, 50, 'dpmpp-2m') as Scheduler;
    const before = noise(n * size);
    let d = 0;
    let dpmResults: Float32Array[] = [];
    cases[`stage-1 step unit by unit, ${n} patches of 4x128x128 (x0 guidance, DPM-Solver++ 2M)`] = {
      run: () => {
        const step = (d++ % 40) + 4;
        const { alpha, sigma } = dpm.noiseLevel(step);
        const g = { space: 'x0', key, weights: weightedMask(mask, (0.7 * alpha) / sigma, plane), alpha, sigma };
        const parts = new PartStepper(dpm, n * size, { stepIndex: step, history: [before], extra: { lowerOrderNums: 2 } });
        const stateful = memory && parts.statefulStep ? parts.statefulStep(step) : null;
        const stepParts = (k: number, m: Float32Array, x: Float32Array, into = new Float32Array(x.length), at?: Int32Array) => (parts.step(k, m, x, into, at ?? null, null), into);
        const kernel = stateful ? { kernel: { memory, step: { stateful } } } : {};
        const b = new BarrierStep({ step, patches, layout, perm, n, size, advance: stepParts, guidance: () => g, eps, next, ...kernel });
        for (let j = 0; j < n; j++) b.take(j, { output: outputs[j]! });
        dpmResults = [b.eps, b.next, parts.stateAfter(step).history[0]];
      },
      digest: () => digest(dpmResults[1]!) ^ digest(dpmResults[0]!) ^ digest(dpmResults[2]!),
    };
  }
  const latent = 4 * 256 * 256;
  const output = noise(latent);
  const sample = noise(latent);
  const schedulers: [string, Record<string, unknown>][] = [
    ['euler', { _class_name: 'EulerDiscreteScheduler' }],
    ['euler, v-prediction', { _class_name: 'EulerDiscreteScheduler', prediction_type: 'v_prediction' }],
    ['ddim', { _class_name: 'DDIMScheduler' }],
  ];
  const flow = createScheduler({ _class_name: 'FlowMatchEulerDiscreteScheduler', num_train_timesteps: 1000, shift: 3 }, 50) as Scheduler;
  for (const [label, config] of schedulers) addStep(`${label} step, 1x4x256x256`, createScheduler({ ...SD15_SCHEDULER_CONFIG, ...config }, 50) as Scheduler);
  addStep('flow-euler step, 1x4x256x256', flow);
  // The multistep solvers with a history (DPM-Solver++ at second order, LMS at fourth), whole and in parts
  // (PartStepper, as a stage-1 unit's positions come: blocks of 4096 of a list spread over the latent).
  const history = [noise(latent), noise(latent), noise(latent)];
  const dpm = createScheduler(SD15_SCHEDULER_CONFIG, 50, 'dpmpp-2m') as Scheduler;
  const lms = createScheduler(SD15_SCHEDULER_CONFIG, 50, 'lms') as Scheduler;
  const dpmState = (k: number) => ({ stepIndex: k, history: history.slice(0, 1), extra: { lowerOrderNums: 2 } });
  const lmsState = (k: number) => ({ stepIndex: k, history });
  addStep('dpmpp-2m step (second order), 1x4x256x256', dpm, dpmState);
  addStep('lms step (fourth order), 1x4x256x256', lms, lmsState);
  const { PartStepper } = await load('schedulers/part-stepper.ts');
  const spread = Int32Array.from({ length: latent }, (_, i) => ((i % 4) * (latent / 4)) + (i >> 2));
  for (const [label, s, state] of [['dpmpp-2m', dpm, dpmState], ['lms', lms, lmsState]] as const) {
    let k = 0;
    const into = new Float32Array(latent);
    cases[`${label} in parts (PartStepper, blocks of 4096 positions), 1x4x256x256`] = {
      run: () => {
        const step = (k++ % 40) + 4;
        const parts = new PartStepper(s, latent, state(step));
        for (let from = 0; from < latent; from += 4096) parts.step(step, output, sample, into, spread.subarray(from, from + 4096), null);
      },
      digest: () => digest(into),
    };
  }
  // The whole latency-model generation at the shipped defaults (bench/latency-model.ts of the checkout): all the
  // coordinator's host CPU per step (process CPU time over the run, over 50 steps), one run per call.
  const { simulateGeneration } = await import(path.join(root, 'bench', 'latency-model.ts'));
  // Also with every step in one stage (stage split 1: stage 1 only; 0: stage 2 only), which the shipped split mixes.
  // And with DPM-Solver++ and Euler ancestral (`scheduler`, since 2026-12-07).
  for (const [size, stage, model, scheduler] of [[2048, null, 'sdxl'], [3072, null, 'sdxl'], [2048, 1, 'sdxl'], [2048, 2, 'sdxl'], [3072, 1, 'sdxl'], [3072, 2, 'sdxl'], [2048, null, 'sd3'], [2048, 1, 'sd3'], [2048, 2, 'sd3'], [2048, null, 'sdxl', 'dpmpp-2m'], [3072, null, 'sdxl', 'dpmpp-2m'], [2048, null, 'sdxl', 'euler-ancestral']] as const) {
    const shipped = shippedDefaultsSettings(size, model);
    const settings = { ...(stage === null ? shipped : { ...shipped, stageSplit: stage === 1 ? 1 : 0 }), ...(scheduler === undefined ? {} : { scheduler }) };
    const only = (stage === null ? '' : `, every step in stage ${stage}`) + (scheduler === undefined ? '' : `, ${scheduler}`);
    let latent: Float32Array | undefined;
    let hostMs = 0;
    cases[`whole generation ${settings.geometry.name}, ${settings.devices} latency-model devices${only}: host ms per step`] = {
      runs: 1,
      run: async () => {
        const r = await simulateGeneration(settings);
        latent = r.latent;
        hostMs = r.hostMsPerStep;
      },
      measured: () => hostMs,
      // A checkout whose simulateGeneration does not return the latent (before 2026-12-07): not compared.
      digest: () => (latent ? digest(latent) : Number.NaN),
    };
  }
  function addStep(label: string, s: Scheduler, state = (k: number): SchedulerState => ({ stepIndex: k, history: [] })) {
    let k = 0;
    let last: Float32Array = sample;
    cases[label] = { run: () => { last = s.step(state((k++ % 40) + 4), output, sample).prevSample; }, digest: () => digest(last) };
  }
  return cases;
}

const A = await casesOf(before);
const B = await casesOf(after);
/** Rounds of the whole-generation cases, one generation each. */
const wholeRounds = Math.max(3, Math.round(rounds / 2));
const median = (t: number[]) => [...t].sort((a, b) => a - b)[t.length >> 1]!;
const rows: { case: string; beforeMs: number; afterMs: number; ratio: number; sameBits: boolean | null }[] = [];
for (const label of Object.keys(B)) {
  const a = A[label];
  const b = B[label]!;
  if (!a) continue;
  const calls = b.runs ?? 5;
  for (let i = 0; i < (b.runs === undefined ? 20 : 2); i++) {
    await a.run();
    await b.run();
  }
  const ta: number[] = [];
  const tb: number[] = [];
  for (let r = 0; r < (b.runs === undefined ? rounds : wholeRounds); r++) {
    for (const [c, t] of [[a, ta], [b, tb]] as const) {
      const t0 = performance.now();
      for (let i = 0; i < calls; i++) await c.run();
      t.push(c.measured ? c.measured() : (performance.now() - t0) / calls);
    }
  }
  const ma = median(ta);
  const mb = median(tb);
  const [da, db] = [a.digest(), b.digest()];
  // The median of each round's ratio: the two checkouts of a round ran back to back, so a machine that speeds up or
  // slows down over the run moves both.
  const ratio = median(tb.map((t, r) => t / ta[r]!));
  rows.push({ case: label, beforeMs: +ma.toFixed(3), afterMs: +mb.toFixed(3), ratio: +ratio.toFixed(3), sameBits: Number.isNaN(da) || Number.isNaN(db) ? null : da === db });
}
console.log(`\n### Host kernels, ${path.basename(before)} (before) and ${path.basename(after)} (after), alternating in one process; median of ${rounds} rounds of 5 calls (whole generations: ${wholeRounds} rounds of one)\n`);
console.log('| case | before ms | after ms | after / before (median of the rounds) | same bits |');
console.log('| --- | --- | --- | --- | --- |');
for (const r of rows) console.log(`| ${r.case} | ${r.beforeMs} | ${r.afterMs} | ${r.ratio} | ${r.sameBits === null ? 'not compared' : r.sameBits ? 'yes' : '**no**'} |`);
const out = path.join(HERE, 'results', 'host-ab.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), before, after, rounds, rows }, null, 2)}\n`);
console.log(`\nWrote ${path.relative(process.cwd(), out)}`);
