/** Decoded images: the VAE's [-1, 1] CHW floats to 8-bit interleaved RGB, as diffusers does. Portable. */
export interface RgbImage {
  /** Interleaved RGB, 8 bits per channel, row-major. */
  data: Uint8Array;
  width: number;
  height: number;
}

export function chwToRgb8(chw: Float32Array, height: number, width: number): RgbImage {
  const plane = height * width;
  const out = new Uint8Array(plane * 3);
  for (let c = 0; c < 3; c++) {
    const base = c * plane;
    for (let i = 0; i < plane; i++) {
      // (x / 2 + 0.5) clamped to [0, 1], then * 255 rounded (diffusers' numpy_to_pil).
      let v = chw[base + i]! * 0.5 + 0.5;
      v = v < 0 ? 0 : v > 1 ? 1 : v;
      out[i * 3 + c] = Math.round(v * 255);
    }
  }
  return { data: out, width, height };
}
