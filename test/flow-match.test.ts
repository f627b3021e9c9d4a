/**
 * FlowMatchEulerDiscreteScheduler (SD3) against diffusers' semantics.
 *
 * Reference numbers: test/reference/flow-match-cases.json, written by
 * scripts/reference/flow_match_reference.py, an independent NumPy re-implementation of diffusers' class
 * (regenerate with `/usr/bin/python3 scripts/reference/flow_match_reference.py`). Each case runs the whole
 * schedule on fixed 48-element inputs; model output at step k = fround(a * fround(cos k) + b * fround(sin k)).
 * The SD3 28-step timesteps are also spelled out below from diffusers' documented output.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { AsgdError } from '../src/core/errors.ts';
import { FlowMatchEulerScheduler, createScheduler } from '../src/core/schedulers/index.ts';
import type { SchedulerConfig, SchedulerState } from '../src/core/schedulers/types.ts';
import { denoisedEstimate } from '../src/core/methods/guidance.ts';
import { outputToX0 } from '../src/core/schedulers/prediction.ts';

interface RefCase {
  name: string;
  config: SchedulerConfig;
  steps: number;
  imageSeqLen: number | null;
  mu: number | null;
  timesteps: number[];
  sigmas: number[];
  samples: number[][];
}

const REF = JSON.parse(readFileSync(new URL('./reference/flow-match-cases.json', import.meta.url), 'utf8')) as {
  inputs: Record<'x' | 'a' | 'b', number[]>;
  cases: RefCase[];
};

function close(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string, rel = 1e-6): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (!(Math.abs(a - e) <= rel * Math.abs(e) + 1e-30)) assert.fail(`${label}[${i}]: ${a} vs reference ${e}`);
  }
}

for (const c of REF.cases) {
  test(`flow-euler reference: ${c.name}`, () => {
    const s = createScheduler(c.config, c.steps, undefined, c.imageSeqLen === null ? undefined : { imageSeqLen: c.imageSeqLen });
    assert.ok(s instanceof FlowMatchEulerScheduler);
    assert.equal(s.name, 'flow-euler');
    assert.equal(s.predictionType, 'flow');
    assert.equal(s.initNoiseSigma, 1);
    assert.equal(s.numSteps, c.steps);
    if (c.mu !== null) assert.ok(Math.abs(s.mu! - c.mu) < 1e-12, `mu ${s.mu} vs ${c.mu}`);
    close(s.timesteps, c.timesteps, 'timesteps');
    close(s.sigmas, c.sigmas, 'sigmas');
    let state: SchedulerState = s.initialState();
    let x: Float32Array = Float32Array.from(REF.inputs.x);
    for (let k = 0; k < s.numSteps; k++) {
      assert.equal(s.inputScale(k), 1);
      const { alpha, sigma } = s.noiseLevel(k);
      assert.equal(alpha + sigma, 1);
      const wc = Math.fround(Math.cos(k));
      const ws = Math.fround(Math.sin(k));
      const v = new Float32Array(x.length);
      for (let i = 0; i < v.length; i++) v[i] = Math.fround(REF.inputs.a[i]! * wc) + Math.fround(REF.inputs.b[i]! * ws);
      const r = s.step(state, v, x);
      state = r.state;
      x = r.prevSample;
      close(x, c.samples[k]!, `${c.name} sample after step ${k}`);
    }
  });
}

test('flow-euler: SD3 timesteps for 28 steps (diffusers: 1000, 987.3806, 974.1077, 960.1293, 945.3875, ...)', () => {
  const s = createScheduler({ _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 3.0 }, 28);
  close(s.timesteps.slice(0, 5), [1000, 987.3806, 974.1077, 960.1293, 945.3875], 'timesteps', 1e-7);
  assert.equal(s.noiseLevel(28).sigma, 0);
});

test('flow-euler: velocity -> x0 = x_t - sigma * v, and the flow step is linear in it', () => {
  const s = createScheduler({ _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 3.0 }, 10);
  const x0 = Float32Array.from([0.5, -1, 2]);
  const n = Float32Array.from([1, 0.25, -0.5]);
  const { alpha, sigma } = s.noiseLevel(3);
  const xt = Float32Array.from(x0, (v, i) => alpha * v + sigma * n[i]!);
  const v = Float32Array.from(x0, (val, i) => n[i]! - val);
  const map = outputToX0(s, 3);
  assert.deepEqual(map, { alpha: 1, sigma });
  const back = denoisedEstimate(xt, v, map.alpha, map.sigma);
  close(back, x0, 'x0', 1e-5);
});

test('flow-euler: bad configs and missing mu are refused with the parameter named', () => {
  const base = { _class_name: 'FlowMatchEulerDiscreteScheduler' };
  assert.throws(() => createScheduler({ ...base, use_dynamic_shifting: true }, 10), (e: unknown) => {
    assert.ok(e instanceof AsgdError);
    assert.match(e.message, /imageSeqLen/);
    return true;
  });
  assert.throws(() => createScheduler({ ...base, shift: -1 }, 10), /shift/);
  assert.throws(() => createScheduler({ ...base, stochastic_sampling: true }, 10), /stochastic_sampling/);
  assert.throws(() => createScheduler({ ...base, invert_sigmas: true }, 10), /invert_sigmas/);
  assert.throws(() => createScheduler({ ...base, shift_terminal: 0.1 }, 10), /shift_terminal/);
  assert.throws(() => createScheduler({ ...base, use_dynamic_shifting: true, time_shift_type: 'cubic' }, 10, undefined, { imageSeqLen: 64 }), /time_shift_type/);
  assert.throws(() => createScheduler(base, 0), /steps/);
});
