/**
 * PNG encoding in the browser: 8-bit RGB (RGBA where the image has an alpha plane: an upscale keeps its input's), each row filtered with the filter (none, sub, up, average, Paeth) whose
 * output has the smallest sum of absolute values, compressed by the platform's CompressionStream('deflate') (zlib),
 * with the generation metadata in iTXt chunks as in Node's files (src/node/image/write.ts).
 */
import type { RgbImage } from '../core/image.ts';
import { JSON_KEY, TEXT_KEY, formatParametersText, type GenerationMetadata } from '../core/metadata.ts';
import { addPngTextChunks, pngChunk } from '../core/png-chunks.ts';

const SIGNATURE = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]);

function paeth(a: number, b: number, c: number): number {
  const p = a + b - c;
  const pa = Math.abs(p - a);
  const pb = Math.abs(p - b);
  const pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/** The filtered scanlines of an RGB image: per row a filter byte then the row's filtered bytes. */
export function filterRows(img: RgbImage): Uint8Array {
  return filterScanlines(img.data, img.width, img.height, 3);
}

/** The filtered scanlines of interleaved 8-bit pixels of `bpp` bytes each. */
function filterScanlines(data: Uint8Array, width: number, height: number, bpp: number): Uint8Array {
  const stride = width * bpp;
  const out = new Uint8Array((stride + 1) * height);
  const trial = Array.from({ length: 5 }, () => new Uint8Array(stride));
  const zero = new Uint8Array(stride);
  for (let y = 0; y < height; y++) {
    const row = data.subarray(y * stride, (y + 1) * stride);
    const prev = y > 0 ? data.subarray((y - 1) * stride, y * stride) : zero;
    let best = 0;
    let bestCost = Infinity;
    for (let f = 0; f < 5; f++) {
      const t = trial[f]!;
      let cost = 0;
      for (let i = 0; i < stride; i++) {
        const a = i >= bpp ? row[i - bpp]! : 0;
        const b = prev[i]!;
        const c = i >= bpp ? prev[i - bpp]! : 0;
        const predictor = f === 0 ? 0 : f === 1 ? a : f === 2 ? b : f === 3 ? (a + b) >> 1 : paeth(a, b, c);
        const v = (row[i]! - predictor) & 0xff;
        t[i] = v;
        cost += v < 128 ? v : 256 - v;
      }
      if (cost < bestCost) {
        bestCost = cost;
        best = f;
      }
    }
    out[y * (stride + 1)] = best;
    out.set(trial[best]!, y * (stride + 1) + 1);
  }
  return out;
}

async function zlib(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes as Uint8Array<ArrayBuffer>]).stream().pipeThrough(new CompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * PNG bytes of an RGB image (RGBA with its alpha plane); with `metadata`, the same `parameters` and `asgdiffusion`
 * chunks as Node writes.
 */
export async function encodePng(img: RgbImage, metadata?: GenerationMetadata): Promise<Uint8Array<ArrayBuffer>> {
  if (img.data.length !== img.width * img.height * 3) {
    throw new Error(`encodePng: ${img.data.length} bytes for a ${img.width}x${img.height} RGB image (expected ${img.width * img.height * 3})`);
  }
  const header = new Uint8Array(13);
  const view = new DataView(header.buffer);
  view.setUint32(0, img.width);
  view.setUint32(4, img.height);
  const alpha = img.alpha;
  if (alpha && alpha.length !== img.width * img.height) throw new Error(`encodePng: ${alpha.length} alpha bytes for a ${img.width}x${img.height} image`);
  // 8 bits, truecolour (6: with alpha), deflate, adaptive filtering, no interlace
  header.set([8, alpha ? 6 : 2, 0, 0, 0], 8);
  let rows: Uint8Array;
  if (alpha) {
    const n = img.width * img.height;
    const rgba = new Uint8Array(n * 4);
    for (let i = 0; i < n; i++) {
      rgba[i * 4] = img.data[i * 3]!;
      rgba[i * 4 + 1] = img.data[i * 3 + 1]!;
      rgba[i * 4 + 2] = img.data[i * 3 + 2]!;
      rgba[i * 4 + 3] = alpha[i]!;
    }
    rows = filterScanlines(rgba, img.width, img.height, 4);
  } else {
    rows = filterRows(img);
  }
  const parts = [SIGNATURE, pngChunk('IHDR', header), pngChunk('IDAT', await zlib(rows)), pngChunk('IEND', new Uint8Array(0))];
  const png = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    png.set(p, at);
    at += p.length;
  }
  return metadata ? addPngTextChunks(png, { [TEXT_KEY]: formatParametersText(metadata), [JSON_KEY]: JSON.stringify(metadata) }) : png;
}
