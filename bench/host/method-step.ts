/**
 * Host-side cost of the methods: everything `predict` does outside the UNet (gathers, permutations,
 * guidance, mask, window fusion) at latent 256 x 256 (2048 px for a 512-native model: 16 patches,
 * 49 windows). The evaluator hands back preallocated outputs (and, for the key unit, SD 1.5-sized
 * attention maps), so only host work is timed. Portable: no Node APIs (performance.now is a web global).
 */
import { createRandom } from '../../src/core/random/index.ts';
import { createScheduler } from '../../src/core/schedulers/index.ts';
import { SD_SCHEDULER_CONFIG } from '../../test/helpers/fake-unet.ts';
import { createMethod } from '../../src/core/methods/index.ts';
import type { MethodOptions } from '../../src/core/methods/options.ts';
import type { AttentionMap, MethodContext, UnitResult } from '../../src/core/methods/types.ts';

export interface HostTiming {
  /** Method, or method/stage1 and method/stage2 for the two-stage methods. */
  method: string;
  msPerStep: number;
}

const now = (): number => globalThis.performance?.now() ?? Date.now();

/** SD 1.5 up blocks 1..3 have three attn2 layers each, at 1/4, 1/2 and 1/1 of the 64 x 64 latent. */
function sdAttention(): AttentionMap[] {
  const maps: AttentionMap[] = [];
  for (const [block, size] of [
    [1, 16],
    [2, 32],
    [3, 64],
  ]) {
    for (let a = 0; a < 3; a++) {
      const data = new Float32Array(size * size * 77);
      for (let i = 0; i < data.length; i++) data[i] = ((i * 2654435761) % 1000) / 77000;
      maps.push({ layer: `/up_blocks.${block}/attentions.${a}/transformer_blocks.0/attn2`, height: size, width: size, tokens: 77, data });
    }
  }
  return maps;
}

export interface BenchOptions {
  /** Steps per method (half stage 1, half stage 2 for the two-stage methods). Default 8. */
  steps?: number;
  methods?: string[];
  /** Method options to bench with (e.g. { guidanceSync: true }). */
  extra?: Partial<MethodOptions>;
  /**
   * Milliseconds clock; default performance.now (wall time). On a loaded machine pass a CPU-time clock,
   * e.g. () => process.cpuUsage().user / 1000 under Node, to time the host work alone.
   */
  clock?: () => number;
}

export async function benchHostWork(options: BenchOptions = {}): Promise<HostTiming[]> {
  const clock = options.clock ?? now;
  const steps = options.steps ?? 8;
  const methods = options.methods ?? ['direct', 'multidiffusion', 'cutdiffusion', 'asg'];
  const setup = { height: 256, width: 256, nativeHeight: 64, nativeWidth: 64, numSteps: steps };
  const attention = sdAttention();
  const outputs = new Map<number, Float32Array>();
  const scheduler = createScheduler({ ...SD_SCHEDULER_CONFIG, _class_name: 'EulerDiscreteScheduler' }, steps);
  const latent = createRandom(1, 'noise').randn([1, 4, 256, 256]);
  const timings: HostTiming[] = [];
  for (const name of methods) {
    const method = createMethod(name, options.extra ?? {}, setup);
    const ctx: MethodContext = {
      scheduler,
      evaluate: async (units) =>
        units.map((u): UnitResult => {
          let out = outputs.get(u.sample.length);
          if (!out) {
            out = new Float32Array(u.sample.length).fill(0.25);
            outputs.set(u.sample.length, out);
          }
          return u.wantAttention ? { output: out, attention } : { output: out };
        }),
      random: { permutation: createRandom(1, 'permutation'), jitter: createRandom(1, 'jitter') },
      maskTokens: [1, 2, 3],
    };
    const perStep: number[] = [];
    for (let round = 0; round < 2; round++) {
      // Round 0 warms the JIT up; round 1 is timed.
      for (let k = 0; k < steps; k++) {
        const t0 = clock();
        await method.predict(latent, k, ctx);
        if (round === 1) perStep.push(clock() - t0);
      }
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const s = method.plan.stage1Steps;
    timings.push({ method: name, msPerStep: mean(perStep) });
    if (s > 0 && s < steps) {
      timings.push({ method: `${name}/stage1`, msPerStep: mean(perStep.slice(0, s)) });
      timings.push({ method: `${name}/stage2`, msPerStep: mean(perStep.slice(s)) });
    }
  }
  return timings;
}
