/**
 * The decode stage: latent to image through a VAE decoder given as a callback, whole or in tiles (the plan is
 * vae/tiling.ts; each tile is decoded by the callback and blended here). Latents are divided by the VAE scaling
 * factor first. Portable.
 */
import type { VaeDecodeOptions } from '../params.ts';
import { axisWeights, blendTile, planAxis } from '../vae/tiling.ts';

/** A decoded image, float CHW in [-1, 1]. */
export interface DecodedImage {
  data: Float32Array;
  height: number;
  width: number;
}

/** Decodes one latent [1, channels, height, width]; the callback may take ownership of `latent`. */
export type DecodeTile = (latent: Float32Array, channels: number, height: number, width: number, index: number) => Promise<DecodedImage>;

export interface DecodeInput {
  latent: Float32Array;
  channels: number;
  height: number;
  width: number;
  scalingFactor: number;
  options: VaeDecodeOptions;
}

/** Whether these options tile a latent of this size. */
export function decodesTiled(o: VaeDecodeOptions, height: number, width: number): boolean {
  return o.tiling === 'on' || (o.tiling === 'auto' && (height > o.tileSize || width > o.tileSize));
}

export async function decodeLatent(input: DecodeInput, decode: DecodeTile, onTile?: (done: number, total: number) => void): Promise<DecodedImage> {
  const { channels: c, height: h, width: w, options: opts } = input;
  const inv = 1 / input.scalingFactor;
  const scaled = new Float32Array(input.latent.length);
  for (let i = 0; i < scaled.length; i++) scaled[i] = input.latent[i]! * inv;
  if (!decodesTiled(opts, h, w)) {
    const r = await decode(scaled, c, h, w, 0);
    onTile?.(1, 1);
    return r;
  }
  const ys = planAxis(h, opts.tileSize, opts.overlap);
  const xs = planAxis(w, opts.tileSize, opts.overlap);
  const total = ys.length * xs.length;
  let canvas: Float32Array | undefined;
  let scale = 8;
  let wy: Float32Array[] = [];
  let wx: Float32Array[] = [];
  let done = 0;
  for (const [iy, ty] of ys.entries()) {
    for (const [ix, tx] of xs.entries()) {
      const th = ty.end - ty.start;
      const tw = tx.end - tx.start;
      const part = new Float32Array(c * th * tw);
      for (let ch = 0; ch < c; ch++) {
        for (let y = 0; y < th; y++) {
          const src = (ch * h + ty.start + y) * w + tx.start;
          part.set(scaled.subarray(src, src + tw), (ch * th + y) * tw);
        }
      }
      const r = await decode(part, c, th, tw, done);
      if (!canvas) {
        scale = r.height / th;
        canvas = new Float32Array(3 * h * scale * w * scale);
        wy = axisWeights(ys, h, opts.overlap, scale);
        wx = axisWeights(xs, w, opts.overlap, scale);
      }
      blendTile(canvas, h * scale, w * scale, r.data, { y: ty, x: tx }, wy[iy]!, wx[ix]!, scale);
      onTile?.(++done, total);
    }
  }
  return { data: canvas!, height: h * scale, width: w * scale };
}
