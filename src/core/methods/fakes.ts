/**
 * Deterministic stand-ins for the UNet and the scheduler, used by the method tests and by bench.ts, so the
 * methods can be exercised without a model. Portable: no Node APIs.
 */
import type { Scheduler, SchedulerState, StepResult } from '../schedulers/types.ts';
import type { AttentionMap, UnetUnit, UnitResult } from './types.ts';

/**
 * Euler-like plan: timesteps linspace(999, 0, T), sigma_k from the scaled-linear SD schedule at those
 * timesteps, input scale 1 / sqrt(sigma^2 + 1), step x + (sigma_{k+1} - sigma_k) * eps. Good enough for
 * exercising methods; not a reference scheduler.
 */
export function fakeEulerScheduler(numSteps: number): Scheduler {
  const timesteps: number[] = [];
  const sigmas: number[] = [];
  for (let k = 0; k < numSteps; k++) {
    const t = numSteps === 1 ? 999 : 999 - (999 * k) / (numSteps - 1);
    timesteps.push(t);
    const beta = (Math.sqrt(0.00085) + (t / 999) * (Math.sqrt(0.012) - Math.sqrt(0.00085))) ** 2;
    // Rough cumulative product of (1 - beta) along a linear beta ramp, enough for a monotone sigma.
    const abar = Math.exp(-(t + 1) * (0.00085 + beta) * 0.5);
    sigmas.push(Math.sqrt((1 - abar) / abar));
  }
  sigmas.push(0);
  return {
    name: 'fake-euler',
    predictionType: 'epsilon',
    timesteps,
    numSteps,
    initNoiseSigma: sigmas[0],
    initialState: (): SchedulerState => ({ stepIndex: 0, history: [] }),
    inputScale: (k: number) => 1 / Math.sqrt(sigmas[k] * sigmas[k] + 1),
    noiseLevel: (k: number) => ({ alpha: 1, sigma: sigmas[k] }),
    step(state: SchedulerState, modelOutput: Float32Array, sample: Float32Array): StepResult {
      const k = state.stepIndex;
      const dt = sigmas[k + 1] - sigmas[k];
      const prevSample = new Float32Array(sample.length);
      for (let i = 0; i < sample.length; i++) prevSample[i] = sample[i] + dt * modelOutput[i];
      return { prevSample, state: { stepIndex: k + 1, history: [] } };
    },
  };
}

/** Layer names the fake attention uses (two up-block layers at 1/2 and 1/4 of the unit size). */
export const FAKE_LAYERS = ['/up_blocks.1/attentions.0/transformer_blocks.0/attn2', '/up_blocks.2/attentions.1/transformer_blocks.0/attn2'];

/**
 * Fake UNet: out = tanh(0.7 * s) * (1 + t / 1000) + 0.01 * (y - 2x) / size + 0.05 * (c - 1.5), elementwise
 * in the unit's sample s at (c, y, x), plus fake attention maps derived from the sample when asked.
 */
export function fakeUnet(unit: UnetUnit, withAttention = true): UnitResult {
  const { sample, height: h, width: w, timestep: t } = unit;
  const channels = sample.length / (h * w);
  const out = new Float32Array(sample.length);
  const gain = 1 + t / 1000;
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const i = (c * h + y) * w + x;
        out[i] = Math.tanh(0.7 * sample[i]) * gain + (0.01 * (y - 2 * x)) / (h + w) + 0.05 * (c - 1.5);
      }
    }
  }
  if (!unit.wantAttention || !withAttention) return { output: out };
  const attention: AttentionMap[] = FAKE_LAYERS.map((layer, l) => {
    const f = 2 << l;
    const lh = Math.max(1, Math.floor(h / f));
    const lw = Math.max(1, Math.floor(w / f));
    const tokens = 77;
    const data = new Float32Array(lh * lw * tokens);
    for (let y = 0; y < lh; y++) {
      for (let x = 0; x < lw; x++) {
        const v = sample[Math.min(h - 1, y * f) * w + Math.min(w - 1, x * f)];
        for (let k = 0; k < tokens; k++) {
          data[(y * lw + x) * tokens + k] = (1 + Math.sin(v * (k + 1) + 0.3 * l)) / (2 * tokens);
        }
      }
    }
    return { layer, height: lh, width: lw, tokens, data };
  });
  return { output: out, attention };
}
