/**
 * An upscale's source image in the page: a file (a Blob, e.g. from an <input type="file"> or a drop, or its bytes),
 * decoded by the browser's own decoders (PNG, JPEG, WebP and what else it reads, EXIF orientation applied; a PNG's
 * translucent colours as stored, decodePngStraight); a canvas' ImageData (RGBA); or 8-bit RGB pixels. As in Node
 * (src/node/image/read.ts): the SHA-256 of the file's bytes (of the pixels when given decoded) for the metadata, the
 * prompts the file holds (PNG text chunks, JPEG/WebP EXIF and XMP: the core's imageTexts), and an alpha plane kept
 * only where some pixel is not opaque.
 */
import { concatBytes } from '../core/bytes.ts';
import { AsgdError } from '../core/errors.ts';
import { checkRgbPixels, isPixelImage, notAnImage, type RgbImage } from '../core/image.ts';
import { embeddedFromTexts, imageTexts } from '../core/image-texts.ts';
import { embeddedSource, type GenerationMetadata } from '../core/metadata.ts';
import { hasPngEnd, isPng, pngHasChunk } from '../core/png-chunks.ts';

/** A canvas' pixels (ImageData or its shape): RGBA, 4 bytes per pixel. */
export interface RgbaPixels {
  /** RGBA, row-major, width x height x 4 bytes. */
  data: Uint8ClampedArray | Uint8Array;
  width: number;
  height: number;
}

/** An upscale's source in the browser: an image file (Blob or bytes), a canvas' RGBA pixels, or 8-bit RGB pixels. */
export type WebImageInput = Blob | Uint8Array | RgbaPixels | RgbImage;

export interface WebSourceImage {
  image: RgbImage;
  /** SHA-256 (hex) of the file's bytes, or of the pixels (RGB, then alpha) when given decoded. */
  sha256: string;
  /** What the file holds (PNG text chunks, JPEG/WebP EXIF or XMP): this project's metadata, or another tool's prompts. */
  embedded?: { metadata?: GenerationMetadata; prompt?: string; negativePrompt?: string };
}

async function sha256Hex(...parts: Uint8Array[]): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', concatBytes(parts) as Uint8Array<ArrayBuffer>);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
}


/** RGBA to RGB and an alpha plane, the plane dropped where every pixel is opaque. */
function fromRgba(rgba: Uint8ClampedArray | Uint8Array, width: number, height: number): RgbImage {
  const n = width * height;
  const data = new Uint8Array(n * 3);
  const alpha = new Uint8Array(n);
  let opaque = true;
  for (let i = 0; i < n; i++) {
    data[i * 3] = rgba[i * 4]!;
    data[i * 3 + 1] = rgba[i * 4 + 1]!;
    data[i * 3 + 2] = rgba[i * 4 + 2]!;
    alpha[i] = rgba[i * 4 + 3]!;
    if (alpha[i] !== 255) opaque = false;
  }
  return opaque ? { data, width, height } : { data, width, height, alpha };
}

/** The prompts an image file holds (this project's record, or another tool's parameters text), if any. */
async function fileEmbedded(bytes: Uint8Array): Promise<WebSourceImage['embedded']> {
  const texts = await imageTexts(bytes);
  return texts === undefined ? undefined : embeddedSource(embeddedFromTexts(texts));
}

/** The frame formats of 8-bit RGB(A) whose bytes decodePngStraight reads (X: no alpha). */
const STRAIGHT_FORMATS = new Set(['RGBA', 'RGBX', 'BGRA', 'BGRX']);

/**
 * A PNG decoded by WebCodecs' ImageDecoder with its alpha not premultiplied: the colours under translucent pixels as
 * the file stores them, as Node's decoder gives them. A canvas keeps premultiplied pixels, so through it a colour
 * under a small alpha comes back coarsely rounded, and under alpha 0 as black. Undefined where this cannot be used
 * (no ImageDecoder, as in some browsers; an EXIF orientation to apply, which ImageDecoder does not; a frame in
 * another format), and the caller decodes through a canvas.
 */
async function decodePngStraight(bytes: Uint8Array): Promise<RgbImage | undefined> {
  const Decoder = (globalThis as { ImageDecoder?: typeof ImageDecoder }).ImageDecoder;
  if (Decoder === undefined || pngHasChunk(bytes, 'eXIf') || !(await Decoder.isTypeSupported('image/png'))) return undefined;
  // premultiplyAlpha is WebCodecs' ImageDecoderInit member, not yet in TypeScript's DOM types.
  const init = { data: bytes, type: 'image/png', colorSpaceConversion: 'none', premultiplyAlpha: 'none' } as ImageDecoderInit;
  const decoder = new Decoder(init);
  try {
    const { image: frame } = await decoder.decode({ frameIndex: 0 });
    try {
      const format = frame.format;
      if (format === null || !STRAIGHT_FORMATS.has(format)) return undefined;
      const width = frame.visibleRect?.width ?? frame.codedWidth;
      const height = frame.visibleRect?.height ?? frame.codedHeight;
      const buffer = new Uint8Array(frame.allocationSize());
      const [plane] = await frame.copyTo(buffer);
      if (plane === undefined) return undefined;
      const rgba = new Uint8Array(width * height * 4);
      const bgr = format.startsWith('BGR');
      const opaque = format.endsWith('X');
      for (let y = 0; y < height; y++) {
        for (let x = 0, s = plane.offset + y * plane.stride, d = y * width * 4; x < width; x++, s += 4, d += 4) {
          rgba[d] = buffer[bgr ? s + 2 : s]!;
          rgba[d + 1] = buffer[s + 1]!;
          rgba[d + 2] = buffer[bgr ? s : s + 2]!;
          rgba[d + 3] = opaque ? 255 : buffer[s + 3]!;
        }
      }
      return fromRgba(rgba, width, height);
    } finally {
      frame.close();
    }
  } finally {
    decoder.close();
  }
}

/**
 * Decodes an image file with the browser's decoders (EXIF orientation applied, colours as stored): a PNG by
 * decodePngStraight where it can, else through a canvas.
 */
async function decodeFile(bytes: Uint8Array, name: string): Promise<RgbImage> {
  // A cut-off PNG decodes to an image with a blank bottom in some browsers: refused, as Node refuses it.
  if (isPng(bytes) && !hasPngEnd(bytes)) throw notAnImage(name, new Error('truncated: no IEND chunk'));
  if (isPng(bytes)) {
    let straight: RgbImage | undefined;
    try {
      straight = await decodePngStraight(bytes);
    } catch (err) {
      throw notAnImage(name, err);
    }
    if (straight) return straight;
  }
  let bitmap: ImageBitmap;
  try {
    bitmap = await createImageBitmap(new Blob([bytes as Uint8Array<ArrayBuffer>]), { imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  } catch (err) {
    throw notAnImage(name, err);
  }
  try {
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    if (!ctx) throw new AsgdError('This browser gives no 2D canvas to read the image\'s pixels', { kind: 'device', parameter: 'image', hint: 'Pass the pixels instead ({ data, width, height })' });
    ctx.drawImage(bitmap, 0, 0);
    const px = ctx.getImageData(0, 0, bitmap.width, bitmap.height);
    return fromRgba(px.data, px.width, px.height);
  } finally {
    bitmap.close();
  }
}

/** Reads an upscale's source in the page; an input that is not an image is an AsgdError naming `image`. */
export async function readWebSourceImage(input: WebImageInput): Promise<WebSourceImage> {
  if (isPixelImage(input)) {
    const px = input as RgbaPixels | RgbImage;
    // Four bytes a pixel: a canvas' RGBA.
    if (Number.isInteger(px.width) && Number.isInteger(px.height) && px.data?.length === px.width * px.height * 4 && !('alpha' in px && px.alpha)) {
      const image = fromRgba(px.data, px.width, px.height);
      return { image, sha256: await sha256Hex(image.data, ...(image.alpha ? [image.alpha] : [])) };
    }
    const image = checkRgbPixels(px as RgbImage);
    return { image, sha256: await sha256Hex(image.data, ...(image.alpha ? [image.alpha] : [])) };
  }
  let bytes: Uint8Array;
  let name = 'the image';
  if (typeof Blob !== 'undefined' && input instanceof Blob) {
    if ('name' in input && typeof input.name === 'string' && input.name) name = input.name;
    bytes = new Uint8Array(await input.arrayBuffer());
  } else if (input instanceof Uint8Array) {
    bytes = input;
  } else {
    throw new AsgdError('Invalid image', {
      kind: 'invalid-argument', parameter: 'image', expected: 'an image file (a Blob or its bytes), a canvas\' ImageData, or { data, width, height } RGB pixels',
      received: input === null ? 'null' : typeof input,
    });
  }
  const image = await decodeFile(bytes, name);
  const embedded = await fileEmbedded(bytes).catch(() => undefined);
  return { image, sha256: await sha256Hex(bytes), ...(embedded ? { embedded } : {}) };
}
