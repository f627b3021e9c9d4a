/** Decoded images: the VAE's [-1, 1] CHW floats to 8-bit interleaved RGB, as diffusers does. Portable. */
export interface RgbImage {
  /** Interleaved RGB, 8 bits per channel, row-major. */
  data: Uint8Array;
  width: number;
  height: number;
  /**
   * Optional opacity, one byte per pixel, row-major: an upscale keeps its input's alpha (resized with the picture;
   * the models draw colour only). PNG and WebP outputs store it; JPEG has none.
   */
  alpha?: Uint8Array;
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

/** 8-bit interleaved RGB to float CHW in [-1, 1] (what the VAE encoder takes; the inverse of chwToRgb8). */
export function rgb8ToChw(img: RgbImage): Float32Array {
  const plane = img.width * img.height;
  const out = new Float32Array(3 * plane);
  for (let c = 0; c < 3; c++) {
    for (let i = 0; i < plane; i++) out[c * plane + i] = (img.data[i * 3 + c]! / 255) * 2 - 1;
  }
  return out;
}

/** Grows an image to width x height (>= its own) at the bottom and right by repeating the last row and column. */
export function padEdgesRgb(img: RgbImage, width: number, height: number): RgbImage {
  if (width === img.width && height === img.height) return img;
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const sy = Math.min(y, img.height - 1);
    for (let x = 0; x < width; x++) {
      const s = (sy * img.width + Math.min(x, img.width - 1)) * 3;
      const d = (y * width + x) * 3;
      out[d] = img.data[s]!;
      out[d + 1] = img.data[s + 1]!;
      out[d + 2] = img.data[s + 2]!;
    }
  }
  return { data: out, width, height };
}

/** The top-left width x height of an image. */
export function cropRgb(img: RgbImage, width: number, height: number): RgbImage {
  if (width === img.width && height === img.height) return img;
  const out = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) out.set(img.data.subarray(y * img.width * 3, (y * img.width + width) * 3), y * width * 3);
  return { data: out, width, height };
}
