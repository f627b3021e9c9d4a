/**
 * Schedulers against diffusers' semantics.
 *
 * Reference numbers: test/reference/schedulers-cases.json, written by
 * scripts/reference/schedulers_reference.py, an independent NumPy re-implementation of diffusers'
 * schedulers with diffusers' float32/float64 dtypes (regenerate with
 * `/usr/bin/python3 scripts/reference/schedulers_reference.py`). Each case runs a scheduler over its
 * whole schedule on fixed 64-element inputs: model output at step k = fround(a * w1_k + b * w2_k),
 * ancestral noise = fround(c * v1_k + d * v2_k), weights stored in the JSON.
 *
 * Tolerance: 1e-6 relative, element by element. Both implementations round every element operation
 * to float32 in diffusers' order (as torch does), so samples agree bit for bit; the slack covers the
 * fractional Karras timesteps, where NumPy's float32 log and Math.log can differ by an ulp.
 * The SD 1.5 timesteps are also hard-coded below from diffusers' documented behaviour.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { AsgdError } from '../src/core/errors.ts';
import type { RandomSource } from '../src/core/random/types.ts';
import { benchSchedulerStep } from '../bench/host/scheduler-step.ts';
import { SCHEDULER_NAMES, createScheduler } from '../src/core/schedulers/index.ts';
import { createRandom } from '../src/core/random/index.ts';
import { PartStepper } from '../src/core/schedulers/part-stepper.ts';
import type { Scheduler, SchedulerConfig, SchedulerState } from '../src/core/schedulers/types.ts';

interface RefCase {
  name: string;
  config: SchedulerConfig;
  scheduler: string | null;
  resolvedName: string;
  steps: number;
  numSteps: number;
  timesteps: number[];
  sigmas?: number[];
  initNoiseSigma: number;
  inputScales: number[];
  noiseLevels: [number, number][];
  initialSample: number[];
  outputWeights: [number, number][];
  noiseWeights: [number, number][];
  samples: Record<string, number[]>;
}

const REF = JSON.parse(readFileSync(new URL('./reference/schedulers-cases.json', import.meta.url), 'utf8')) as {
  inputs: Record<'x' | 'a' | 'b' | 'c' | 'd', number[]>;
  cases: RefCase[];
};

const SD15: SchedulerConfig = {
  _class_name: 'PNDMScheduler',
  beta_start: 0.00085,
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
  clip_sample: false,
};

const REL = 1e-6;

/** Every element within REL of the reference, relative to the reference element itself. */
function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (!(Math.abs(a - e) <= REL * Math.abs(e))) {
      assert.fail(`${label}[${i}]: ${a} vs reference ${e} (relative difference ${Math.abs(a - e) / Math.abs(e)})`);
    }
  }
}

function mix(p: number[], q: number[], w: [number, number]): Float32Array {
  const out = new Float32Array(p.length);
  for (let i = 0; i < p.length; i++) out[i] = p[i]! * w[0] + q[i]! * w[1];
  return out;
}

/** A RandomSource that hands out the reference's ancestral noise, one array per randn call. */
function scriptedNoise(arrays: Float32Array[]): RandomSource & { calls: number } {
  const source = {
    calls: 0,
    randn(shape: readonly number[]): Float32Array {
      const next = arrays[source.calls++];
      assert.ok(next, 'more noise draws than steps');
      assert.deepEqual([...shape], [next.length]);
      return next;
    },
    randint: () => 0,
    uniform: () => 0,
  };
  return source;
}

function runCase(c: RefCase, scheduler: Scheduler): Map<number, Float32Array> {
  const noise = c.noiseWeights.map((w) => mix(REF.inputs.c, REF.inputs.d, w));
  const rng = scriptedNoise(noise);
  let state: SchedulerState = scheduler.initialState();
  let x: Float32Array = Float32Array.from(c.initialSample);
  const kept = new Map<number, Float32Array>();
  for (let k = 0; k < scheduler.numSteps; k++) {
    const out = mix(REF.inputs.a, REF.inputs.b, c.outputWeights[k]!);
    const r = scheduler.step(state, out, x, rng);
    assert.equal(r.state.stepIndex, k + 1);
    state = r.state;
    x = r.prevSample;
    if (c.samples[String(k)]) kept.set(k, x);
  }
  assert.equal(rng.calls, c.resolvedName === 'euler-ancestral' ? scheduler.numSteps : 0, 'noise draws');
  return kept;
}

for (const c of REF.cases) {
  test(`reference: ${c.name}`, () => {
    const s = createScheduler(c.config, c.steps, c.scheduler ?? undefined);
    assert.equal(s.name, c.resolvedName);
    assert.equal(s.numSteps, c.numSteps);
    assert.equal(s.timesteps.length, c.numSteps);
    assertClose(s.timesteps, c.timesteps, 'timesteps');
    const sigmas = (s as unknown as { sigmas?: Float64Array }).sigmas;
    if (c.sigmas) assertClose(sigmas!, c.sigmas, 'sigmas');
    assertClose([s.initNoiseSigma], [c.initNoiseSigma], 'initNoiseSigma');
    assertClose(
      c.inputScales.map((_, k) => s.inputScale(k)),
      c.inputScales,
      'inputScale',
    );
    const levels = c.noiseLevels.map((_, k) => s.noiseLevel(k));
    assertClose(
      levels.map((l) => l.alpha),
      c.noiseLevels.map((l) => l[0]),
      'noiseLevel.alpha',
    );
    assertClose(
      levels.map((l) => l.sigma),
      c.noiseLevels.map((l) => l[1]),
      'noiseLevel.sigma',
    );
    const kept = runCase(c, s);
    for (const [k, expected] of Object.entries(c.samples)) {
      assertClose(kept.get(Number(k))!, expected, `sample after step ${k}`);
    }
  });
}

test('SD 1.5 config with Euler at 50 steps: timesteps 981, 961, ..., 1 (leading spacing kept from PNDM)', () => {
  const s = createScheduler(SD15, 50, 'euler');
  assert.deepEqual(
    [...s.timesteps],
    Array.from({ length: 50 }, (_, i) => 981 - 20 * i),
  );
  // init noise sigma for leading spacing is sqrt(sigma_max^2 + 1); sigma at t = 981 is about 13.12.
  assert.ok(Math.abs(s.initNoiseSigma - 13.158) < 1e-3, String(s.initNoiseSigma));
});

test('SD 1.5 config with PNDM (PLMS) at 50 steps: 51 evaluations, the second timestep repeated', () => {
  const s = createScheduler(SD15, 50);
  assert.equal(s.name, 'pndm');
  const expected = [981, 961, 961, ...Array.from({ length: 48 }, (_, i) => 941 - 20 * i)];
  assert.deepEqual([...s.timesteps], expected);
  assert.equal(s.numSteps, 51);
  assert.equal(s.timesteps.at(-1), 1);
});

test('every name in SCHEDULER_NAMES builds from the SD 1.5 config', () => {
  assert.deepEqual([...SCHEDULER_NAMES], ['euler', 'euler-ancestral', 'ddim', 'pndm', 'dpmpp-2m', 'lms', 'flow-euler']);
  for (const name of SCHEDULER_NAMES) assert.equal(createScheduler(SD15, 20, name).name, name);
});

test('stepPositions: offered by the stateless schedulers only; on listed positions it writes those of the whole step, bit for bit, and nothing else', () => {
  const offering = SCHEDULER_NAMES.filter((name) => createScheduler(SD15, 20, name).stepPositions !== undefined);
  assert.deepEqual(offering, ['euler', 'ddim', 'flow-euler']);
  const n = 1000;
  const noise = (seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * 2);
  const output = noise(1);
  const sample = noise(2);
  const at = Int32Array.from({ length: 300 }, (_, i) => (i * 7919) % n);
  for (const name of offering) {
    for (const prediction of ['epsilon', 'v_prediction', 'sample']) {
      const s = createScheduler({ ...SD15, prediction_type: prediction, clip_sample: true, clip_sample_range: 1.5 }, 20, name);
      for (const k of [0, 7, 19]) {
        const whole = s.step({ stepIndex: k, history: [] }, output, sample).prevSample;
        const into = new Float32Array(n).fill(42);
        s.stepPositions!(k, output, sample, into, at);
        const listed = new Set(at);
        for (let e = 0; e < n; e++) {
          if (listed.has(e)) assert.ok(Object.is(into[e], whole[e]), `${name} ${prediction} step ${k} position ${e}`);
          else assert.equal(into[e], 42, `${name}: position ${e} is not listed`);
        }
      }
    }
  }
});

test('PartStepper: the multistep solvers and Euler ancestral (elementwise) stepped in parts, parts running steps ahead of each other, give the whole steps bit for bit', () => {
  const offering = SCHEDULER_NAMES.filter((name) => createScheduler(SD15, 20, name).elementwise === true);
  assert.deepEqual(offering, ['euler-ancestral', 'pndm', 'dpmpp-2m', 'lms']);
  const n = 600;
  // The model output at a position depends on that position's sample and the step only (as a UNet's does not, but a
  // part's output reaching the scheduler is all the stepper sees).
  const model = (k: number, x: number, e: number) => Math.fround(Math.sin(x * 1.7 + k * 0.31 + e * 0.013) * 0.9);
  const configs: [string, SchedulerConfig][] = [
    ['pndm', SD15], ['pndm', { ...SD15, skip_prk_steps: false }], ['pndm', { ...SD15, prediction_type: 'v_prediction' }],
    ['dpmpp-2m', SD15], ['dpmpp-2m', { ...SD15, solver_type: 'heun', lower_order_final: false }], ['dpmpp-2m', { ...SD15, solver_order: 1, prediction_type: 'sample' }],
    ['lms', SD15], ['lms', { ...SD15, prediction_type: 'v_prediction' }],
    ['euler-ancestral', SD15], ['euler-ancestral', { ...SD15, prediction_type: 'v_prediction' }],
  ];
  for (const [name, config] of configs) {
    const s = createScheduler(config, 9, name);
    const label = `${name} ${JSON.stringify(config).length}`;
    const start = Float32Array.from({ length: n }, (_, e) => Math.fround(Math.cos(e * 0.37) * 1.3));
    // The whole-latent reference and its states.
    const states: SchedulerState[] = [s.initialState()];
    let whole: Float32Array = start;
    const noise = createRandom(5, 'noise');
    for (let k = 0; k < s.numSteps; k++) {
      const out = whole.map((x, e) => model(k, x, e));
      const r = s.step(states[k]!, out, whole, noise);
      states.push(r.state);
      whole = r.prevSample;
    }
    for (const seed of [1, 2, 3]) {
      let rand = seed * 7919;
      const next = (m: number) => (rand = (rand * 48271) % 2147483647) % m;
      // Three parts of random positions; each part is stepped as one list (`at`, whole arrays) or compactly (`positions`).
      const group = Int32Array.from({ length: n }, () => next(3));
      const parts = [0, 1, 2].map((g) => Int32Array.from([...group.keys()].filter((e) => group[e] === g)));
      // The same stream as the whole steps': each step's noise drawn whole when its first part comes.
      const stepper = new PartStepper(s, n, states[0]!, createRandom(5, 'noise'));
      const latent = Float32Array.from(start);
      const at = [0, 0, 0];
      let released = 0;
      while (at.some((k) => k < s.numSteps)) {
        // A part at most two steps ahead of the slowest (stage-1 run-ahead, tiles of two steps).
        const g = next(3);
        const k = at[g]!;
        if (k >= s.numSteps || k > Math.min(...at) + 2) continue;
        const where = parts[g]!;
        if (next(2) === 0) {
          const out = latent.map((x, e) => model(k, x, e));
          stepper.step(k, out, Float32Array.from(latent), latent, where, null);
        } else {
          const sample = Float32Array.from(where, (e) => latent[e]!);
          const out = sample.map((x, i) => model(k, x, where[i]!));
          const into = new Float32Array(where.length);
          stepper.step(k, out, sample, into, null, where);
          where.forEach((e, i) => (latent[e] = into[i]!));
        }
        at[g] = k + 1;
        while (released < Math.min(...at)) {
          const state = stepper.stateAfter(released);
          const expected = states[released + 1]!;
          assert.deepEqual(state.extra, expected.extra, `${label}: extra after step ${released}`);
          assert.equal(state.history.length, expected.history.length, `${label}: history after step ${released}`);
          state.history.forEach((h, j) => assert.ok(h.every((v, e) => Object.is(v, expected.history[j]![e])), `${label}: history ${j} after step ${released}`));
          stepper.release(released++);
        }
      }
      assert.ok(latent.every((v, e) => Object.is(v, whole[e])), `${label}, order ${seed}: the latent`);
    }
  }
  // Taking a state some positions have not stepped to, or stepping a part past a step no part has begun, is a bug.
  const s = createScheduler(SD15, 9, 'dpmpp-2m');
  const stepper = new PartStepper(s, 4, s.initialState());
  const four = new Float32Array(4);
  const two = new Float32Array(2);
  stepper.step(0, two, two, new Float32Array(2), null, Int32Array.from([0, 1]));
  assert.throws(() => stepper.stateAfter(0), /after step 0 .*2 of 4 positions/);
  assert.throws(() => stepper.step(2, four, four, new Float32Array(4), Int32Array.from([0]), null), /step 2 before/);
  // A scheduler whose state depends on the part it was given is not elementwise: the second part says so.
  const bad: Scheduler = { ...s, name: 'bad', step: (state, out) => ({ prevSample: Float32Array.from(out), state: { stepIndex: state.stepIndex + 1, history: [], extra: { n: out.length } } }) };
  const badStepper = new PartStepper(bad, 4, s.initialState());
  badStepper.step(0, four, four, four, Int32Array.from([0]), null);
  assert.throws(() => badStepper.step(0, four, four, four, Int32Array.from([1, 2, 3]), null), /bad scheduler's state after step 0 differs .* not elementwise/);
  // Noise: one normal value per position of the part, from a stream the stepper was given.
  const ancestral = createScheduler(SD15, 9, 'euler-ancestral');
  assert.throws(() => new PartStepper(ancestral, 4, ancestral.initialState()).step(0, four, four, four, Int32Array.from([0]), null), /draws noise but the part stepper was given no random source/);
  const dice: Scheduler = { ...s, name: 'dice', step: (state, out, _x, rng) => ({ prevSample: out.map(() => rng!.randint(3)), state: { stepIndex: state.stepIndex + 1, history: [] } }) };
  assert.throws(() => new PartStepper(dice, 4, s.initialState(), createRandom(1, 'noise')).step(0, four, four, four, Int32Array.from([0]), null), /dice scheduler drew other than one normal value per position/);
});

test('stepPart: DPM-Solver++, LMS and Euler ancestral step listed positions and compact parts in place, bit for bit the whole step, history and noise read and written at the positions', () => {
  const offering = SCHEDULER_NAMES.filter((name) => createScheduler(SD15, 20, name).stepPart !== undefined);
  assert.deepEqual(offering, ['euler-ancestral', 'dpmpp-2m', 'lms']);
  const n = 257;
  const configs: [string, SchedulerConfig][] = [
    ['dpmpp-2m', SD15], ['dpmpp-2m', { ...SD15, solver_type: 'heun', prediction_type: 'v_prediction' }], ['dpmpp-2m', { ...SD15, solver_order: 1, prediction_type: 'sample' }],
    ['dpmpp-2m', { ...SD15, use_karras_sigmas: true, euler_at_final: true }],
    ['lms', SD15], ['lms', { ...SD15, prediction_type: 'v_prediction' }], ['lms', { ...SD15, prediction_type: 'sample' }],
    ['euler-ancestral', SD15], ['euler-ancestral', { ...SD15, prediction_type: 'v_prediction' }],
  ];
  const values = (seed: number) => Float32Array.from({ length: n }, (_, e) => Math.fround(Math.sin(e * 0.61 + seed) * 1.7));
  for (const [name, config] of configs) {
    const s = createScheduler(config, 7, name);
    const label = `${name} ${JSON.stringify(config).length}`;
    let state = s.initialState();
    let sample = values(0);
    for (let k = 0; k < s.numSteps; k++) {
      const out = values(k + 1);
      // The whole step, its noise scripted so that the parts can be given the same.
      const noise = values(100 + k);
      const rng: RandomSource = { randn: () => Float32Array.from(noise), randint: () => 0, uniform: () => 0 };
      const whole = s.step(state, out, sample, rng);
      // Listed positions of whole-latent arrays, then the rest as one compact part (positions), into the same arrays.
      const at = Int32Array.from({ length: n }, (_, e) => e).filter((e) => (e * 7919) % 3 === 0);
      const rest = Int32Array.from({ length: n }, (_, e) => e).filter((e) => (e * 7919) % 3 !== 0).reverse();
      const into = new Float32Array(n).fill(Number.NaN);
      let arrays: Float32Array[] | undefined;
      const after = (count: number) => (arrays ??= Array.from({ length: count }, () => new Float32Array(n).fill(Number.NaN)));
      const first = s.stepPart!(state, { modelOutput: out, sample, into, at, positions: null, after, noise: () => noise });
      assert.ok(into.every((v, e) => Number.isNaN(v) === !at.includes(e)), `${label}: step ${k}: only the listed positions written`);
      const part = new Float32Array(rest.length);
      const second = s.stepPart!(state, {
        modelOutput: Float32Array.from(rest, (e) => out[e]!), sample: Float32Array.from(rest, (e) => sample[e]!), into: part,
        at: Int32Array.of(0), positions: rest, after, noise: () => noise,
      });
      rest.forEach((e, i) => (into[e] = part[i]!));
      assert.ok(into.every((v, e) => Object.is(v, whole.prevSample[e])), `${label}: step ${k}: the latent`);
      for (const next of [first, second]) {
        assert.equal(next.stepIndex, whole.state.stepIndex);
        assert.deepEqual(next.extra, whole.state.extra, `${label}: step ${k}: extra`);
        assert.equal(next.history, arrays ?? next.history, `${label}: step ${k}: the history is the arrays given`);
        assert.equal(next.history.length, whole.state.history.length, `${label}: step ${k}: history length`);
        next.history.forEach((h, j) => assert.ok(h.every((v, e) => Object.is(v, whole.state.history[j]![e])), `${label}: step ${k}: history ${j}`));
      }
      state = whole.state;
      sample = Float32Array.from(whole.prevSample);
    }
  }
});

test('PartStepper with stepPart: a history not the arrays given, or a state after that differs between parts, is a bug it names', () => {
  const s = createScheduler(SD15, 9, 'dpmpp-2m');
  const four = new Float32Array(4);
  const own: Scheduler = { ...s, name: 'own', stepPart: (state) => ({ stepIndex: state.stepIndex + 1, history: [new Float32Array(4)] }) };
  assert.throws(() => new PartStepper(own, 4, s.initialState()).step(0, four, four, four, Int32Array.from([0]), null), /own scheduler's stepPart returned a history other than the arrays it was given/);
  // The count of history arrays, or the scalars, differing between two parts of one step.
  let calls = 0;
  const fickle: Scheduler = { ...s, name: 'fickle', stepPart: (state, part) => ({ stepIndex: state.stepIndex + 1, history: part.after(calls++ === 0 ? 1 : 2) }) };
  const a = new PartStepper(fickle, 4, s.initialState());
  a.step(0, four, four, four, Int32Array.from([0]), null);
  assert.throws(() => a.step(0, four, four, four, Int32Array.from([1]), null), /fickle scheduler's state after step 0 differs between parts of the latent/);
  const moody: Scheduler = { ...s, name: 'moody', stepPart: (state, part) => ({ stepIndex: state.stepIndex + 1, history: part.after(1), extra: { n: calls++ } }) };
  const b = new PartStepper(moody, 4, s.initialState());
  b.step(0, four, four, four, Int32Array.from([0]), null);
  assert.throws(() => b.step(0, four, four, four, Int32Array.from([1, 2]), null), /moody scheduler's state after step 0 differs between parts of the latent/);
  // Positions counted: two of four stepped leave the state after unfinished.
  const c = new PartStepper(s, 4, s.initialState());
  c.step(0, four, four, new Float32Array(4), Int32Array.from([0, 3]), null);
  assert.throws(() => c.stateAfter(0), /2 of 4 positions not stepped once/);
  c.step(0, new Float32Array(2), new Float32Array(2), new Float32Array(2), null, Int32Array.from([1, 2]));
  assert.equal(c.stateAfter(0).history.length, 1);
  // A step taken in the kernels (statefulStep): its history committed once, for a step no part has taken.
  const k = new PartStepper(s, 4, s.initialState());
  const first = k.statefulStep(0)!;
  assert.equal(first.input, null, 'the first step reads no history');
  assert.deepEqual((first.coefficients as { extra?: unknown }).extra, { lowerOrderNums: 1 });
  assert.throws(() => first.commit(null), /history after step 0 from the kernels is not what the dpmpp-2m scheduler keeps/);
  assert.throws(() => first.commit(new Float32Array(3)), /not what the dpmpp-2m scheduler keeps/);
  const after = Float32Array.of(1, 2, 3, 4);
  first.commit(after);
  assert.throws(() => first.commit(after), /Step 0 of the latent was taken in the kernels after parts of it had been taken, or twice/);
  assert.deepEqual(k.stateAfter(0), { stepIndex: 1, history: [after], extra: { lowerOrderNums: 1 } });
  assert.equal(k.statefulStep(1)!.input, after, 'the next step reads it');
  assert.throws(() => k.statefulStep(3), /stepped at step 3 before the step ahead of it had begun/);
  const p = new PartStepper(s, 4, s.initialState());
  p.step(0, new Float32Array(2), new Float32Array(2), new Float32Array(2), null, Int32Array.from([0, 1]));
  assert.throws(() => p.statefulStep(0)!.commit(after), /after parts of it had been taken/);
  // Euler ancestral: the step's noise, drawn from the stream when asked for (as its first part would draw it), the
  // same array a part then reads; nothing kept after.
  const ancestral = createScheduler(SD15, 9, 'euler-ancestral');
  const drawn = new PartStepper(ancestral, 4, ancestral.initialState(), createRandom(8, 'noise'));
  const noiseStep = drawn.statefulStep(0)!;
  assert.deepEqual(noiseStep.input, createRandom(8, 'noise').randn([4]), 'the stream\'s first four values');
  assert.throws(() => noiseStep.commit(after), /not what the euler-ancestral scheduler keeps/);
  noiseStep.commit(null);
  assert.deepEqual(drawn.stateAfter(0), { stepIndex: 1, history: [] });
  // Schedulers without a kernel form: none.
  const lms = createScheduler(SD15, 9, 'lms');
  assert.equal(new PartStepper(lms, 4, lms.initialState()).statefulStep(0), null);
});

test('step is pure: inputs untouched, same state gives the same result, interleaved states do not interfere', () => {
  for (const name of ['pndm', 'dpmpp-2m', 'lms'] as const) {
    const s = createScheduler(SD15, 12, name);
    const n = 64;
    const x0 = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
    const out = (k: number) => Float32Array.from({ length: n }, (_, i) => Math.cos(i * 0.3 + k));
    // Run A alone.
    let a = s.initialState();
    let xa: Float32Array = x0;
    const trajectory: Float32Array[] = [];
    for (let k = 0; k < 5; k++) {
      const o = out(k);
      const oCopy = o.slice();
      const xCopy = xa.slice();
      const r = s.step(a, o, xa);
      assert.deepEqual(o, oCopy, `${name}: modelOutput modified`);
      assert.deepEqual(xa, xCopy, `${name}: sample modified`);
      const again = s.step(a, o, xa);
      assert.deepEqual(again.prevSample, r.prevSample, `${name}: step not deterministic`);
      a = r.state;
      xa = r.prevSample;
      trajectory.push(xa);
    }
    // Two patches interleaved on the same scheduler object, each with its own state.
    let p = s.initialState();
    let q = s.initialState();
    let xp: Float32Array = x0;
    let xq: Float32Array = x0.map((v) => -v);
    for (let k = 0; k < 5; k++) {
      const rp = s.step(p, out(k), xp);
      const rq = s.step(q, out(k + 7), xq);
      p = rp.state;
      q = rq.state;
      xp = rp.prevSample;
      xq = rq.prevSample;
      assert.deepEqual(xp, trajectory[k], `${name}: interleaving changed the result at step ${k}`);
    }
  }
});

function assertAsgdError(fn: () => unknown, parts: (string | RegExp)[]): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof AsgdError, `expected AsgdError, got ${String(err)}`);
    assert.equal(err.kind, 'invalid-argument');
    for (const p of parts) {
      if (typeof p === 'string') assert.ok(err.message.includes(p), `message lacks ${JSON.stringify(p)}: ${err.message}`);
      else assert.match(err.message, p);
    }
    return true;
  });
}

test('errors name the parameter, what is supported, and what was received', () => {
  assertAsgdError(() => createScheduler(SD15, 20, 'heun'), [
    'Invalid scheduler',
    'euler, euler-ancestral, ddim, pndm, dpmpp-2m, lms',
    'received "heun"',
  ]);
  assertAsgdError(() => createScheduler({ ...SD15, _class_name: 'UniPCMultistepScheduler' }, 20), [
    'scheduler config _class_name',
    'EulerDiscreteScheduler',
    'received "UniPCMultistepScheduler"',
    '--scheduler',
  ]);
  assertAsgdError(() => createScheduler({ ...SD15, beta_schedule: 'foo' }, 20, 'euler'), [
    'scheduler config beta_schedule',
    '"linear", "scaled_linear", "squaredcos_cap_v2"',
    'received "foo"',
  ]);
  assertAsgdError(() => createScheduler({ ...SD15, prediction_type: 'sample' }, 20), [
    'scheduler config prediction_type',
    '"epsilon", "v_prediction" (for pndm)',
    'received "sample"',
  ]);
  assertAsgdError(() => createScheduler({ ...SD15, prediction_type: 'sample' }, 20, 'euler-ancestral'), [
    '(for euler-ancestral)',
  ]);
  assertAsgdError(() => createScheduler({ ...SD15, timestep_spacing: 'bar' }, 20, 'ddim'), [
    'scheduler config timestep_spacing',
    '"linspace", "leading", "trailing"',
    'received "bar"',
  ]);
  for (const steps of [0, 2.5, 1001, Number.NaN]) {
    assertAsgdError(() => createScheduler(SD15, steps, 'euler'), ['Invalid steps', 'an integer from 1 to 1000']);
  }
  assertAsgdError(() => createScheduler({ ...SD15, algorithm_type: 'dpmsolver' }, 20, 'dpmpp-2m'), [
    'scheduler config algorithm_type',
    '"dpmsolver++"',
    'received "dpmsolver"',
  ]);
  assertAsgdError(() => createScheduler({ ...SD15, solver_order: 3 }, 20, 'dpmpp-2m'), ['solver_order', '1 or 2']);
  assertAsgdError(() => createScheduler({ ...SD15, thresholding: true }, 20, 'ddim'), [
    'scheduler config thresholding',
    'not implemented',
    'received true',
  ]);
  assertAsgdError(() => createScheduler({ ...SD15, num_train_timesteps: 0 }, 20, 'euler'), ['num_train_timesteps']);
  assertAsgdError(() => createScheduler({ ...SD15, skip_prk_steps: false }, 3), ['at least 4']);
  // leading spacing with steps_offset 1 at 1000 steps would index timestep 1000.
  assertAsgdError(() => createScheduler(SD15, 1000, 'ddim'), ['timesteps stay within 0..999']);
});

test('step checks its arguments', () => {
  const s = createScheduler(SD15, 10, 'euler');
  const x = new Float32Array(8);
  assertAsgdError(() => s.step(s.initialState(), new Float32Array(4), x), ['modelOutput', '8 elements']);
  assertAsgdError(() => s.step({ stepIndex: 10, history: [] }, x, x), ['stepIndex', 'from 0 to 9']);
  assertAsgdError(() => s.inputScale(11), ['stepIndex']);
  const ancestral = createScheduler(SD15, 10, 'euler-ancestral');
  assert.throws(() => ancestral.step(ancestral.initialState(), x, x), /no random source/);
});

test('euler-ancestral on a cosine-schedule model at 4 steps: the first step stays finite (diffusers gives NaN there); the others are unchanged', () => {
  const s = createScheduler({ _class_name: 'EulerAncestralDiscreteScheduler', beta_schedule: 'squaredcos_cap_v2' }, 4) as Scheduler & { ancestralSigmas(k: number): { up: number; down: number }; sigmas: Float32Array };
  const first = s.ancestralSigmas(0);
  // float32 makes up (1.7507232) exceed sigma_1 (1.7507231): to² - up² < 0, whose square root is diffusers' NaN.
  assert.ok(first.up > s.sigmas[1]!, `up ${first.up} vs sigma ${s.sigmas[1]}`);
  assert.equal(first.down, 0);
  // Elsewhere the diffusers expression, unclamped.
  const f = Math.fround;
  for (let k = 1; k < 3; k++) {
    const from2 = f(s.sigmas[k]! * s.sigmas[k]!);
    const to2 = f(s.sigmas[k + 1]! * s.sigmas[k + 1]!);
    const up = f(Math.sqrt(f(f(to2 * f(from2 - to2)) / from2)));
    assert.deepEqual(s.ancestralSigmas(k), { up, down: f(Math.sqrt(f(to2 - f(up * up)))) }, `step ${k}`);
  }
  const x = Float32Array.from({ length: 8 }, (_, i) => Math.sin(i) * s.sigmas[0]!);
  const rng: RandomSource = { randn: (n: number) => Float32Array.from({ length: n }, (_, i) => Math.cos(i)) } as unknown as RandomSource;
  const out = s.step(s.initialState(), Float32Array.from({ length: 8 }, (_, i) => Math.cos(i)), x, rng);
  assert.ok(out.prevSample.every(Number.isFinite));
});

test('benchSchedulerStep times one step of every scheduler on a 1x4x256x256 latent', () => {
  const results = benchSchedulerStep({ repeats: 1 });
  assert.deepEqual(
    results.map((r) => r.name),
    [...SCHEDULER_NAMES],
  );
  for (const r of results) assert.ok(r.msPerStep > 0 && Number.isFinite(r.msPerStep), `${r.name}: ${r.msPerStep}`);
});
