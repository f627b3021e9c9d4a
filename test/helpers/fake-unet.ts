/**
 * A deterministic stand-in for the UNet, used by the method tests and by bench.ts, so the methods can be
 * exercised without a model. Portable: no Node APIs.
 */
import { SD15_SCHEDULER_CONFIG } from '../../src/core/schedulers/presets.ts';
import type { AttentionMap, UnetUnit, UnitResult } from '../../src/core/methods/types.ts';

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
    const f = 2 << l; // maps at 1/2 and 1/4 of the unit size
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

/** Stable Diffusion 1.x scheduler config (scaled-linear betas) for tests and benches. */
export const SD_SCHEDULER_CONFIG = SD15_SCHEDULER_CONFIG;
