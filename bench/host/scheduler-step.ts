/**
 * Benchmark hook: milliseconds per scheduler step on a 1x4x256x256 latent (an SDXL 2048^2 image), for
 * every scheduler, with SD 1.5's scheduler config. Steps are timed in the middle of a 50-step plan so
 * the multistep schedulers run their full-order update. Portable: performance.now() only.
 */
import type { RandomSource } from '../../src/core/random/types.ts';
import { SCHEDULER_NAMES, createScheduler } from '../../src/core/schedulers/index.ts';
import { SD15_SCHEDULER_CONFIG } from '../../src/core/schedulers/presets.ts';
import type { SchedulerState } from '../../src/core/schedulers/types.ts';


/** Deterministic stand-in noise: the benchmark times the scheduler, not a generator. */
function fixedRandom(n: number): RandomSource {
  const noise = new Float32Array(n).map((_, i) => Math.sin(i * 0.37));
  return { randn: () => noise, randint: () => 0, uniform: () => 0.5 };
}

export function benchSchedulerStep(options: { repeats?: number } = {}): { name: string; msPerStep: number }[] {
  const repeats = options.repeats ?? 5;
  const n = 4 * 256 * 256;
  const sample = new Float32Array(n).map((_, i) => Math.sin(i * 0.011));
  const output = new Float32Array(n).map((_, i) => Math.cos(i * 0.007));
  const rng = fixedRandom(n);
  const results: { name: string; msPerStep: number }[] = [];
  for (const name of SCHEDULER_NAMES) {
    const scheduler = createScheduler(SD15_SCHEDULER_CONFIG, 50, name);
    // Warm up into the middle of the schedule so multistep histories are full.
    let state: SchedulerState = scheduler.initialState();
    let x: Float32Array = sample;
    for (let k = 0; k < 5; k++) {
      const r = scheduler.step(state, output, x, rng);
      state = r.state;
      x = r.prevSample;
    }
    const start = performance.now();
    for (let r = 0; r < repeats; r++) scheduler.step(state, output, x, rng);
    results.push({ name, msPerStep: (performance.now() - start) / repeats });
  }
  return results;
}
