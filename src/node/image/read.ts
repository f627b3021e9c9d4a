/**
 * Reading an upscale's source image (PNG, JPEG, WebP, or pixels already decoded) and resizing it with sharp's
 * Lanczos (lanczos3) resampler. A file that is not an image, or is truncated, is an AsgdError (invalid-argument).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { OutputInfo } from 'sharp';
import { loadSharp } from './write.ts';
import { AsgdError } from '../../core/errors.ts';
import type { RgbImage } from '../../core/image.ts';
import { promptFromParametersText, type GenerationMetadata } from '../../core/metadata.ts';
import { notAnImage, readImageMetadataFromBytes, unreadableFile } from './write.ts';

/** An upscale's source: a file path, the file's bytes, or decoded 8-bit RGB pixels. */
export type ImageInput = string | Uint8Array | RgbImage;

export interface SourceImage {
  image: RgbImage;
  /** The source had an alpha channel (kept in `image.alpha`, resized with the picture into the output). */
  hadAlpha: boolean;
  /** SHA-256 (hex) of the file's bytes, or of the RGB pixels when given decoded. */
  sha256: string;
  /** What the file holds: this project's metadata, or the prompts of another tool's `parameters` text. */
  embedded?: { metadata?: GenerationMetadata; prompt?: string; negativePrompt?: string };
  name: string;
}

/** What a value is, for an error: its class (Float32Array, Array, ...) or its type. */
function kindOf(v: unknown): string {
  const name = typeof v === 'object' && v !== null ? (v as object).constructor?.name : undefined;
  return name ? `a ${name}` : typeof v;
}

function isRgbImage(v: unknown): v is RgbImage {
  return typeof v === 'object' && v !== null && !(v instanceof Uint8Array) && 'data' in v && 'width' in v && 'height' in v;
}

export async function readSourceImage(input: ImageInput): Promise<SourceImage> {
  if (isRgbImage(input)) {
    // A canvas' pixels come as a Uint8ClampedArray: the same bytes.
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
    const hash = createHash('sha256').update(data);
    if (alpha) hash.update(alpha);
    return { image: input, hadAlpha: alpha !== undefined, sha256: hash.digest('hex'), name: 'the image' };
  }
  let bytes: Uint8Array;
  let name = 'the image';
  if (typeof input === 'string') {
    name = input;
    try {
      bytes = new Uint8Array(fs.readFileSync(input));
    } catch (err) {
      throw unreadableFile(input, err);
    }
  } else if (input instanceof Uint8Array) {
    bytes = input;
  } else {
    throw new AsgdError('Invalid image', { kind: 'invalid-argument', parameter: 'image', expected: 'a file path, the file\'s bytes, or { data, width, height } RGB pixels', received: typeof input });
  }
  let decoded: { data: Buffer; info: OutputInfo };
  let alpha: Buffer | undefined;
  try {
    // failOn 'truncated': a cut-off file is an error, not an image with a grey bottom. sharp's input pixel limit
    // (about 268 Mpx) stays: a larger input is refused as unreadable.
    const sharp = await loadSharp();
    const img = sharp(bytes, { failOn: 'truncated' });
    const meta = await img.metadata();
    decoded = await img.clone().rotate().removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
    if (meta.hasAlpha === true) alpha = await img.clone().rotate().ensureAlpha().extractChannel('alpha').toColourspace('b-w').raw().toBuffer();
  } catch (err) {
    throw notAnImage(name, err);
  }
  if (decoded.info.channels !== 3) throw notAnImage(name, new Error(`${decoded.info.channels} channels after conversion`));
  const image: RgbImage = { data: new Uint8Array(decoded.data.buffer, decoded.data.byteOffset, decoded.data.byteLength), width: decoded.info.width, height: decoded.info.height };
  // An alpha plane that is fully opaque says nothing: the output stays RGB.
  if (alpha && alpha.length === image.width * image.height && alpha.some((a) => a !== 255)) {
    image.alpha = new Uint8Array(alpha.buffer, alpha.byteOffset, alpha.byteLength);
  }
  const hadAlpha = image.alpha !== undefined;
  const found = await readImageMetadataFromBytes(bytes, name).catch(() => ({} as { metadata?: GenerationMetadata; parameters?: string }));
  let embedded: SourceImage['embedded'];
  if (found.metadata) embedded = { metadata: found.metadata, prompt: found.metadata.prompt, negativePrompt: found.metadata.negativePrompt };
  else if (found.parameters) embedded = promptFromParametersText(found.parameters);
  return { image, hadAlpha, sha256: createHash('sha256').update(bytes).digest('hex'), embedded, name };
}

/** Resizes with Lanczos (sharp's lanczos3) to exactly width x height (the alpha plane too, when there is one). */
export async function resizeLanczos(img: RgbImage, width: number, height: number): Promise<RgbImage> {
  if (img.width === width && img.height === height) return img;
  const sharp = await loadSharp();
  const resize = async (data: Uint8Array, channels: 1 | 3) => {
    const resized = sharp(data, { raw: { width: img.width, height: img.height, channels }, limitInputPixels: false })
      .resize(width, height, { kernel: 'lanczos3', fit: 'fill' });
    // One channel stays one channel (sharp writes sRGB otherwise).
    const out = await (channels === 1 ? resized.toColourspace('b-w') : resized).raw().toBuffer();
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  };
  const data = await resize(img.data, 3);
  return img.alpha ? { data, width, height, alpha: await resize(img.alpha, 1) } : { data, width, height };
}

/** SHA-256 (hex) of a file, to check that `--from` is given the same source. */
export function fileSha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/**
 * What an upscale of this file will see, without keeping its pixels: the size with EXIF orientation applied and the
 * prompts it holds (as readSourceImage reads them). Every pixel is decoded, so a damaged file is refused here as the
 * upscale would refuse it.
 */
export async function inspectSourceImage(input: string | Uint8Array): Promise<{ width: number; height: number; embedded?: SourceImage['embedded'] }> {
  const s = await readSourceImage(input);
  return { width: s.image.width, height: s.image.height, ...(s.embedded ? { embedded: s.embedded } : {}) };
}
