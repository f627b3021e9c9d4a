/** Decoded images: the VAE's [-1, 1] CHW floats to 8-bit interleaved RGB, as diffusers does. Portable. */
import { AsgdError } from './errors.ts';

/** An 8-bit RGB image (interleaved, row-major), with an optional alpha plane. */
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

/** What a value is, for an error: its class (Float32Array, Array, ...) or its type. */
function kindOf(v: unknown): string {
  const name = typeof v === 'object' && v !== null ? (v as object).constructor?.name : undefined;
  return name ? `a ${name}` : typeof v;
}

/** Whether a value is given as decoded pixels ({ data, width, height }) rather than a file's bytes or path. */
export function isPixelImage(v: unknown): v is RgbImage {
  return typeof v === 'object' && v !== null && !(v instanceof Uint8Array) && 'data' in v && 'width' in v && 'height' in v;
}

/**
 * Decoded pixels checked against their size: interleaved RGB of width x height x 3 bytes (a canvas' Uint8ClampedArray
 * taken as the same bytes) and an optional alpha plane of one byte per pixel; an AsgdError names what does not fit.
 */
export function checkRgbPixels(input: RgbImage): RgbImage {
  if ((input.data as unknown) instanceof Uint8ClampedArray) {
    const c = input.data as unknown as Uint8ClampedArray;
    input = { ...input, data: new Uint8Array(c.buffer, c.byteOffset, c.byteLength) };
  }
  const { data, width, height, alpha } = input;
  if (!(data instanceof Uint8Array) || !Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || data.length !== width * height * 3) {
    throw new AsgdError('The image pixels do not match their size', {
      kind: 'invalid-argument', parameter: 'image', expected: 'interleaved 8-bit RGB of width x height x 3 bytes',
      received: `${data instanceof Uint8Array ? `${data.length} bytes` : kindOf(data)} for ${String(width)}x${String(height)}`,
    });
  }
  if (alpha !== undefined && (!(alpha instanceof Uint8Array) || alpha.length !== width * height)) {
    throw new AsgdError('The image alpha does not match its size', {
      kind: 'invalid-argument', parameter: 'image.alpha', expected: `one byte per pixel (${width * height})`,
      received: alpha instanceof Uint8Array ? `${alpha.length} bytes` : typeof alpha,
    });
  }
  return input;
}

/** The error for bytes that do not decode as an image; `cause` says why where known. */
export function notAnImage(name: string, cause?: unknown): AsgdError {
  const why = cause instanceof Error ? cause.message.split('\n')[0]!.trim() : '';
  return new AsgdError(`${name} is not a readable image${why ? ` (${why})` : ''}`, {
    kind: 'invalid-argument', parameter: 'image', expected: 'a PNG, JPEG or WebP image', received: name,
    hint: 'Check that the file is a complete image', cause,
  });
}
