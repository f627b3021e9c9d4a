/**
 * Lanczos3 resizing of 8-bit images, portable (no Node APIs): the same resize in Node and in the browser, so an
 * upscale's resized source is the same in both. Byte for byte equal to Pillow's `Image.resize(size, LANCZOS)` on
 * 8-bit RGB and L images: Pillow's separable resampling (its Resample.c) with its 22-bit fixed-point weights.
 */
import { invalidArgument } from './errors.ts';
import type { RgbImage } from './image.ts';

/** Fractional bits of the fixed-point weights (Pillow's PRECISION_BITS for 8-bit images: 32 - 8 - 2). */
const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);
const SUPPORT = 3;

function sinc(x: number): number {
  if (x === 0) return 1;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

function lanczos3(x: number): number {
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

/**
 * The weights of one axis: for output index i, the input window starts at `start[i]`, has `count[i]` taps, and its
 * fixed-point weights are `weights[i * taps ...]`.
 */
interface AxisWeights {
  taps: number;
  start: Int32Array;
  count: Int32Array;
  weights: Int32Array;
}

function axisWeights(inSize: number, outSize: number): AxisWeights {
  // Pillow computes the box extent in float (in1 - in0), then divides in double; float holds sizes below 2^24 exactly.
  const scale = Math.fround(inSize) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = SUPPORT * filterscale;
  const taps = Math.ceil(support) * 2 + 1;
  const ss = 1 / filterscale;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Int32Array(outSize * taps);
  const k = new Float64Array(taps);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    // C's (int) casts truncate toward zero.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = lanczos3((x + xmin - center + 0.5) * ss);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      let w = k[x]!;
      if (ww !== 0) w /= ww;
      // Rounded half away from zero, as Pillow's normalize_coeffs_8bpc.
      weights[xx * taps + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    start[xx] = xmin;
    count[xx] = xmax;
  }
  return { taps, start, count, weights };
}

/** Fixed-point sum (from the half unit) to a byte: the integer part, clipped to 0..255 (Pillow's clip8). */
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** Rows `first .. first + rows` of a width x ? image of `channels` interleaved bytes, resampled to `axis` columns. */
function horizontal(src: Uint8Array, width: number, channels: number, first: number, rows: number, outWidth: number, axis: AxisWeights): Uint8Array {
  const { taps, start, count, weights } = axis;
  const out = new Uint8Array(outWidth * rows * channels);
  const inRow = width * channels;
  const outRow = outWidth * channels;
  for (let y = 0; y < rows; y++) {
    const rowBase = (first + y) * inRow;
    const outBase = y * outRow;
    if (channels === 3) {
      for (let xx = 0; xx < outWidth; xx++) {
        const n = count[xx]!;
        const kBase = xx * taps;
        let p = rowBase + start[xx]! * 3;
        let s0 = HALF;
        let s1 = HALF;
        let s2 = HALF;
        for (let x = 0; x < n; x++, p += 3) {
          const w = weights[kBase + x]!;
          s0 += src[p]! * w;
          s1 += src[p + 1]! * w;
          s2 += src[p + 2]! * w;
        }
        const o = outBase + xx * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      }
    } else {
      for (let xx = 0; xx < outWidth; xx++) {
        const n = count[xx]!;
        const kBase = xx * taps;
        for (let c = 0; c < channels; c++) {
          let p = rowBase + start[xx]! * channels + c;
          let s = HALF;
          for (let x = 0; x < n; x++, p += channels) s += src[p]! * weights[kBase + x]!;
          out[outBase + xx * channels + c] = clip8(s);
        }
      }
    }
  }
  return out;
}

/** Rows of `rowLength` bytes resampled along the columns to `axis` rows; `offset` is the source's first row. */
function vertical(src: Uint8Array, rowLength: number, offset: number, outHeight: number, axis: AxisWeights): Uint8Array {
  const { taps, start, count, weights } = axis;
  const out = new Uint8Array(rowLength * outHeight);
  // Whole rows at a time (exact integer sums, so the order of the additions does not matter).
  const acc = new Float64Array(rowLength);
  for (let yy = 0; yy < outHeight; yy++) {
    acc.fill(HALF);
    const n = count[yy]!;
    const kBase = yy * taps;
    const first = start[yy]! - offset;
    for (let y = 0; y < n; y++) {
      const w = weights[kBase + y]!;
      const base = (first + y) * rowLength;
      for (let i = 0; i < rowLength; i++) acc[i] += src[base + i]! * w;
    }
    const o = yy * rowLength;
    for (let i = 0; i < rowLength; i++) out[o + i] = clip8(acc[i]!);
  }
  return out;
}

function resizePlane(src: Uint8Array, width: number, height: number, channels: number, outWidth: number, outHeight: number, h: AxisWeights, v: AxisWeights): Uint8Array {
  let data = src;
  let offset = 0;
  if (outWidth !== width) {
    // Only the rows the vertical pass reads (all of them when the height stays).
    const first = v.start[0]!;
    const last = v.start[outHeight - 1]! + v.count[outHeight - 1]!;
    data = horizontal(src, width, channels, first, last - first, outWidth, h);
    offset = first;
  }
  if (outHeight !== height) data = vertical(data, outWidth * channels, offset, outHeight, v);
  return data;
}

function checkSize(name: string, value: number): void {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) throw invalidArgument(name, 'an integer >= 1', value);
}

/**
 * Resizes an 8-bit RGB image (and its alpha plane, when it has one) to exactly width x height with Lanczos3, equal
 * to Pillow's `Image.resize((width, height), Image.LANCZOS)` byte for byte (alpha as Pillow resizes an 'L' image).
 * The same size returns the image itself.
 */
export function resizeLanczos3(img: RgbImage, width: number, height: number): RgbImage {
  checkSize('width', width);
  checkSize('height', height);
  if (img.width === width && img.height === height) return img;
  const h = axisWeights(img.width, width);
  const v = axisWeights(img.height, height);
  const data = resizePlane(img.data, img.width, img.height, 3, width, height, h, v);
  if (!img.alpha) return { data, width, height };
  return { data, width, height, alpha: resizePlane(img.alpha, img.width, img.height, 1, width, height, h, v) };
}
