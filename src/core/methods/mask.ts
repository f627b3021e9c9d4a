/**
 * Cross-attention mask M in [0, 1]^(p_h x p_w) from the key unit's up-block attn2 probabilities
 * (conditional branch, already averaged over heads by the graph):
 *   1. per layer, average the probabilities over the selected token indices (ctx.maskTokens); the probe graph
 *      does this on the device and returns the averaged map (AttentionMap.meanOver);
 *   2. bilinear-resize the layer's map to the patch size (half-pixel centres, as torch's
 *      F.interpolate(mode='bilinear', align_corners=False));
 *   3. average over the layers whose name contains one of `layers` (empty list = all layers);
 *   4. min-max normalise (a constant map gives M = 1: it carries no spatial information);
 *   5. M = M^gamma, then values strictly below `threshold` become 0 (threshold 0 keeps everything).
 * When nothing usable arrives (no maps, no matching layer, no valid token) the result is null, i.e. M = 1,
 * together with a warning the caller surfaces. Portable: no Node APIs.
 */
import type { AttentionMap } from './types.ts';

export interface MaskSettings {
  tokens: readonly number[];
  layers: readonly string[];
  gamma: number;
  threshold: number;
  /** Why the model gives no maps, when the pipeline knows (the probe graph is off or could not be made). */
  noMapsReason?: string;
}

export interface MaskResult {
  /** [height * width]; null means M = 1 (uniform guidance). */
  mask: Float32Array | null;
  warning?: string;
}

/** Bilinear resize of a single-channel map [srcH, srcW] to [dstH, dstW] with half-pixel centres. */
export function resizeBilinear(
  src: Float32Array | Float64Array,
  srcH: number,
  srcW: number,
  dstH: number,
  dstW: number,
): Float64Array {
  const out = new Float64Array(dstH * dstW);
  const sy = srcH / dstH;
  const sx = srcW / dstW;
  const x0s = new Int32Array(dstW);
  const x1s = new Int32Array(dstW);
  const fxs = new Float64Array(dstW);
  for (let x = 0; x < dstW; x++) {
    const fx = Math.max(0, (x + 0.5) * sx - 0.5);
    const x0 = Math.min(Math.floor(fx), srcW - 1);
    x0s[x] = x0;
    x1s[x] = Math.min(x0 + 1, srcW - 1);
    fxs[x] = fx - x0;
  }
  for (let y = 0; y < dstH; y++) {
    const fy = Math.max(0, (y + 0.5) * sy - 0.5);
    const y0 = Math.min(Math.floor(fy), srcH - 1);
    const y1 = Math.min(y0 + 1, srcH - 1);
    const ly = fy - y0;
    const r0 = y0 * srcW;
    const r1 = y1 * srcW;
    for (let x = 0; x < dstW; x++) {
      const lx = fxs[x];
      const top = src[r0 + x0s[x]] * (1 - lx) + src[r0 + x1s[x]] * lx;
      const bottom = src[r1 + x0s[x]] * (1 - lx) + src[r1 + x1s[x]] * lx;
      out[y * dstW + x] = top * (1 - ly) + bottom * ly;
    }
  }
  return out;
}

/** The token columns of `count` that the mask reads from `tokens`: the integers in range, in order, repeats kept. */
export function maskColumns(tokens: readonly number[], count: number): number[] {
  return tokens.filter((t) => Number.isInteger(t) && t >= 0 && t < count);
}

function tokenMean(map: AttentionMap, tokens: readonly number[]): Float64Array {
  const cells = map.height * map.width;
  if (map.meanOver) {
    // Averaged on the device (the probe graph): it must be over the very columns this mask reads.
    if (map.meanOver.length !== tokens.length || map.meanOver.some((t, i) => t !== tokens[i])) {
      throw new Error(`mask: attention map ${map.layer} is averaged over tokens [${map.meanOver.join(', ')}], the mask reads [${tokens.join(', ')}]`);
    }
    if (map.data.length !== cells) {
      throw new Error(`mask: attention map ${map.layer} has ${map.data.length} values, expected ${map.height}x${map.width}`);
    }
    return Float64Array.from(map.data);
  }
  if (map.data.length !== cells * map.tokens) {
    throw new Error(
      `mask: attention map ${map.layer} has ${map.data.length} values, expected ${map.height}x${map.width}x${map.tokens}`,
    );
  }
  const out = new Float64Array(cells);
  const inv = 1 / tokens.length;
  for (let q = 0; q < cells; q++) {
    let sum = 0;
    const row = q * map.tokens;
    for (const t of tokens) sum += map.data[row + t];
    out[q] = sum * inv;
  }
  return out;
}

export function buildMask(
  maps: readonly AttentionMap[] | undefined,
  height: number,
  width: number,
  settings: MaskSettings,
): MaskResult {
  const fallback = (why: string): MaskResult => ({
    mask: null,
    warning: `structure mask disabled (M = 1): ${why}`,
  });
  if (!maps || maps.length === 0) {
    return fallback(settings.noMapsReason ?? 'the model returned no cross-attention maps (no separable attention found in the UNet or transformer)');
  }
  const selected =
    settings.layers.length === 0 ? maps : maps.filter((m) => settings.layers.some((s) => m.layer.includes(s)));
  if (selected.length === 0) {
    return fallback(`no attention layer name contains any of ${JSON.stringify(settings.layers)}`);
  }
  const sum = new Float64Array(height * width);
  let used = 0;
  for (const map of selected) {
    const tokens = maskColumns(settings.tokens, map.tokens);
    if (tokens.length === 0) continue;
    const resized = resizeBilinear(tokenMean(map, tokens), map.height, map.width, height, width);
    for (let q = 0; q < sum.length; q++) sum[q] += resized[q];
    used++;
  }
  if (used === 0) return fallback('no valid mask token index (the prompt has no content tokens?)');
  let lo = Infinity;
  let hi = -Infinity;
  for (let q = 0; q < sum.length; q++) {
    const v = sum[q] / used;
    sum[q] = v;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const range = hi - lo;
  if (!(range > 0) || !Number.isFinite(range)) return { mask: null };
  const mask = new Float32Array(sum.length);
  for (let q = 0; q < sum.length; q++) {
    let m = (sum[q] - lo) / range;
    if (settings.gamma !== 1) m = Math.pow(m, settings.gamma);
    mask[q] = m < settings.threshold ? 0 : m;
  }
  return { mask };
}
