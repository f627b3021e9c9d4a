/**
 * `direct`: one UNet pass over the whole HR latent per step (the baseline that repeats objects). A latent
 * whose size is not a multiple of latentMultiple is edge-padded to one for the pass and the output cropped.
 * Portable: no Node APIs.
 */
import { roundUp } from './geometry.ts';
import { MethodBase } from './method-base.ts';
import { unitTimeIds } from './plan.ts';
import { cropLatent, downscaleLatent, padEdges, padLatent } from './polyphase.ts';
import type { MethodContext, UnetUnit } from './types.ts';

export class DirectMethod extends MethodBase {
  protected async predictStep(latent: Float32Array, step: number, ctx: MethodContext): Promise<Float32Array> {
    const geo = this.plan.geometry;
    const { channels, height: h, width: w, latentMultiple: m } = geo;
    const H = roundUp(h, m);
    const W = roundUp(w, m);
    const padded = padEdges(latent, channels, h, w, H, W);
    const scale = ctx.scheduler.inputScale(step);
    const sample = new Float32Array(padded.length);
    for (let i = 0; i < sample.length; i++) sample[i] = padded[i] * scale;
    const unit: UnetUnit = {
      id: `full/k${step}`,
      kind: 'full',
      step,
      index: 0,
      sample,
      height: H,
      width: W,
      timestep: ctx.scheduler.timesteps[step],
      wantAttention: false,
      timeIds: unitTimeIds(this.plan, 0, 0),
    };
    const [result] = await this.evaluate(ctx, [unit], step, 0);
    const out = cropLatent(result.output, channels, H, W, h, w);
    const fused = out === result.output ? Float32Array.from(out) : out;
    if (this.wantsPreview(step, ctx)) {
      const g = geo;
      this.emitPreview(
        ctx,
        step,
        'downscaled',
        downscaleLatent(padLatent(latent, g), g),
        downscaleLatent(padLatent(fused, g), g),
        g.patchHeight,
        g.patchWidth,
      );
    }
    return fused;
  }
}
