/**
 * Polyphase patches: patch i = a * n_w + b is the strided sub-lattice X[:, a::n_h, b::n_w] of the padded HR
 * latent, so every patch is a complete low-resolution view of the whole image. The latent stays in HR
 * layout all the time; patches are gathered before each UNet step and scattered back after it.
 * Patch buffers are patch-major: [N, C, p_h, p_w]. Portable: no Node APIs.
 */
import type { PatchGeometry } from './geometry.ts';
import { isPadded, latentSize, patchSize } from './geometry.ts';

/**
 * Pads `latent` [C, height, width] to [C, paddedHeight, paddedWidth] by repeating the last row and column
 * (see geometry.ts). Returns `latent` itself when no padding is needed.
 */
export function padLatent(latent: Float32Array, geo: PatchGeometry): Float32Array {
  if (!isPadded(geo)) return latent;
  return padEdges(latent, geo.channels, geo.height, geo.width, geo.paddedHeight, geo.paddedWidth);
}

/** Edge-replication padding of [C, h, w] to [C, outH, outW] (outH >= h, outW >= w) at the bottom/right. */
export function padEdges(
  latent: Float32Array,
  channels: number,
  h: number,
  w: number,
  outH: number,
  outW: number,
): Float32Array {
  if (outH === h && outW === w) return latent;
  const out = new Float32Array(channels * outH * outW);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < outH; y++) {
      const s = (c * h + Math.min(y, h - 1)) * w;
      const d = (c * outH + y) * outW;
      out.set(latent.subarray(s, s + w), d);
      const edge = latent[s + w - 1];
      for (let x = w; x < outW; x++) out[d + x] = edge;
    }
  }
  return out;
}

/** Crops [C, H, W] to its top-left [C, h, w]. Returns `src` itself when the sizes agree. */
export function cropLatent(src: Float32Array, channels: number, H: number, W: number, h: number, w: number): Float32Array {
  if (H === h && W === w) return src;
  const out = new Float32Array(channels * h * w);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < h; y++) {
      const s = (c * H + y) * W;
      out.set(src.subarray(s, s + w), (c * h + y) * w);
    }
  }
  return out;
}

/** Gathers all patches out of the padded latent [C, paddedHeight, paddedWidth] into [N, C, p_h, p_w]. */
export function extractPatches(padded: Float32Array, geo: PatchGeometry, out?: Float32Array): Float32Array {
  const { channels, rows, cols, patchHeight: ph, patchWidth: pw, paddedHeight: H, paddedWidth: W } = geo;
  const size = patchSize(geo);
  const dst = out ?? new Float32Array(geo.count * size);
  let d = 0;
  for (let a = 0; a < rows; a++) {
    for (let b = 0; b < cols; b++) {
      for (let c = 0; c < channels; c++) {
        for (let y = 0; y < ph; y++) {
          let s = (c * H + rows * y + a) * W + b;
          for (let x = 0; x < pw; x++, s += cols) dst[d++] = padded[s];
        }
      }
    }
  }
  return dst;
}

/**
 * Scatters patches [N, C, p_h, p_w] back into a latent [C, outH, outW] with outH <= paddedHeight and
 * outW <= paddedWidth; positions past outH/outW (the padding) are dropped. With the padded size this is the
 * exact inverse of extractPatches.
 */
export function relocatePatches(
  patches: Float32Array,
  geo: PatchGeometry,
  outH: number = geo.paddedHeight,
  outW: number = geo.paddedWidth,
  out?: Float32Array,
): Float32Array {
  const { channels, rows, cols, patchHeight: ph, patchWidth: pw } = geo;
  const dst = out ?? new Float32Array(channels * outH * outW);
  let s = 0;
  for (let a = 0; a < rows; a++) {
    for (let b = 0; b < cols; b++) {
      const xEnd = Math.min(pw, Math.ceil((outW - b) / cols));
      for (let c = 0; c < channels; c++) {
        for (let y = 0; y < ph; y++, s += pw) {
          const hy = rows * y + a;
          if (hy >= outH) continue;
          let d = (c * outH + hy) * outW + b;
          for (let x = 0; x < xEnd; x++, d += cols) dst[d] = patches[s + x];
        }
      }
    }
  }
  return dst;
}

/**
 * Where the patches' elements lie in an array: element e of patch o (e in [C, p_h, p_w] order) at base[o] + offset[e].
 * The patches' own layout [N, C, p_h, p_w] (patchLayout), or the latent [C, H, W] itself where it needs no padding
 * (latentLayout): a stage-1 step can then be taken on the latent, with nothing extracted or relocated.
 */
export interface PatchLayout {
  readonly base: Int32Array;
  readonly offset: Int32Array;
}

/** The patch-major layout [N, C, p_h, p_w] of `n` patches of `size` values. */
export function patchLayout(n: number, size: number): PatchLayout {
  return { base: Int32Array.from({ length: n }, (_, o) => o * size), offset: Int32Array.from({ length: size }, (_, e) => e) };
}

/** The patches as they lie in the latent [C, height, width] (no padding: extractPatches would read it unchanged). */
export function latentLayout(geo: PatchGeometry): PatchLayout {
  if (isPadded(geo)) throw new Error('latentLayout: the geometry pads the latent, so its patches are not all in it');
  const { channels, rows, cols, patchHeight: ph, patchWidth: pw, width: W } = geo;
  const base = new Int32Array(rows * cols);
  for (let a = 0; a < rows; a++) for (let b = 0; b < cols; b++) base[a * cols + b] = a * W + b;
  const offset = new Int32Array(patchSize(geo));
  let e = 0;
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < ph; y++) {
      const row = (c * geo.height + rows * y) * W;
      for (let x = 0; x < pw; x++) offset[e++] = row + cols * x;
    }
  }
  return { base, offset };
}

/**
 * Initial HR latent from per-patch noise [N, C, p_h, p_w] (e.g. torch-compatible randn): relocated and
 * cropped to [C, height, width]. With N = 1 and no padding it is the noise itself.
 */
export function patchesToLatent(patches: Float32Array, geo: PatchGeometry): Float32Array {
  if (patches.length !== geo.count * patchSize(geo)) {
    throw new Error(
      `patchesToLatent: got ${patches.length} values, geometry needs ${geo.count} x ${patchSize(geo)}`,
    );
  }
  const out = relocatePatches(patches, geo, geo.height, geo.width);
  if (out.length !== latentSize(geo)) throw new Error('patchesToLatent: size mismatch');
  return out;
}

/** Box-average of the latent [C, paddedHeight, paddedWidth] over n_h x n_w blocks: [C, p_h, p_w]. */
export function downscaleLatent(padded: Float32Array, geo: PatchGeometry): Float32Array {
  const { channels, rows, cols, patchHeight: ph, patchWidth: pw, paddedHeight: H, paddedWidth: W } = geo;
  const out = new Float32Array(channels * ph * pw);
  const inv = 1 / (rows * cols);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < ph; y++) {
      for (let x = 0; x < pw; x++) {
        let sum = 0;
        for (let a = 0; a < rows; a++) {
          const s = (c * H + rows * y + a) * W + cols * x;
          for (let b = 0; b < cols; b++) sum += padded[s + b];
        }
        out[(c * ph + y) * pw + x] = sum * inv;
      }
    }
  }
  return out;
}
