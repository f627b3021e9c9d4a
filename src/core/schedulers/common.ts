/** Checks and small pieces shared by every scheduler implementation. */
import { AsgdError, invalidArgument } from '../errors.ts';
import type { RandomSource } from '../random/types.ts';
import type { LatentPart, Scheduler, SchedulerState, StepResult } from './types.ts';

export function initialState(): SchedulerState {
  return { stepIndex: 0, history: [] };
}

/** Validates one step call; returns the step index. */
export function checkStep(
  name: string,
  numSteps: number,
  state: SchedulerState,
  modelOutput: Float32Array,
  sample: Float32Array,
): number {
  const k = state.stepIndex;
  if (!Number.isInteger(k) || k < 0 || k >= numSteps) {
    throw invalidArgument(
      `${name} scheduler state.stepIndex`,
      `an integer from 0 to ${numSteps - 1}`,
      k,
      'Start from scheduler.initialState() and pass the state each step returns.',
    );
  }
  if (modelOutput.length !== sample.length) {
    throw invalidArgument(
      `${name} scheduler modelOutput`,
      `${sample.length} elements (the sample's length)`,
      `${modelOutput.length} elements`,
    );
  }
  return k;
}

/** Validates an index for inputScale / noiseLevel (0..numSteps; numSteps is the final sample). */
export function checkIndex(name: string, stepIndex: number, max: number): void {
  if (!Number.isInteger(stepIndex) || stepIndex < 0 || stepIndex > max) {
    throw invalidArgument(`${name} scheduler stepIndex`, `an integer from 0 to ${max}`, stepIndex);
  }
}

export function requireRng(name: string, rng: RandomSource | undefined): RandomSource {
  if (!rng) {
    throw new AsgdError(`The ${name} scheduler draws noise every step but no random source was given`, {
      kind: 'internal',
      parameter: 'rng',
      hint: 'Pass the coordinator RandomSource to step().',
    });
  }
  return rng;
}

/** Draws n standard normal values, checking the source returned n. */
export function drawNoise(name: string, rng: RandomSource | undefined, n: number): Float32Array {
  const noise = requireRng(name, rng).randn([n]);
  if (noise.length !== n) {
    throw new AsgdError(`The random source returned ${noise.length} values for ${name}, expected ${n}`, {
      kind: 'internal',
      parameter: 'rng',
    });
  }
  return noise;
}

/** A stateless scheduler's whole-latent step (`step`): its stepPositions on every position, into a new array. */
export function stepAll(s: Required<Pick<Scheduler, 'stepPositions'>>, stepIndex: number, modelOutput: Float32Array, sample: Float32Array): Float32Array {
  const prev = new Float32Array(sample.length);
  s.stepPositions(stepIndex, modelOutput, sample, prev, null);
  return prev;
}

/**
 * A scheduler's whole-latent step (`step`) where it offers `stepPart`: that on every position, into new arrays (the
 * noise, where it draws some, rng.randn of the sample's length).
 */
export function stepWhole(
  s: Pick<Scheduler, 'name'> & Required<Pick<Scheduler, 'stepPart'>>,
  state: SchedulerState,
  modelOutput: Float32Array,
  sample: Float32Array,
  rng?: RandomSource,
): StepResult {
  const n = sample.length;
  const part: LatentPart = {
    modelOutput, sample, into: new Float32Array(n), at: null, positions: null,
    after: (count) => Array.from({ length: count }, () => new Float32Array(n)),
    noise: () => drawNoise(s.name, rng, n),
  };
  const next = s.stepPart(state, part);
  return { prevSample: part.into, state: next };
}

/**
 * How stepPart finds element i of a part: `io` indexes the model output, the sample and `into` (null: i itself), `hx`
 * the history and the noise (null: i itself); `count` elements.
 */
export function partIndex(part: LatentPart): { io: Int32Array | null; hx: Int32Array | null; count: number } {
  const io = part.positions === null ? part.at : null;
  const hx = part.positions ?? part.at;
  return { io, hx, count: hx === null ? part.sample.length : hx.length };
}
