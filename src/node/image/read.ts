/**
 * Reading an upscale's source image (PNG, JPEG, WebP, or pixels already decoded) and resizing it with the core's
 * Lanczos3 (equal to Pillow's LANCZOS; the same resize as in the browser). A file that is not an image, or is
 * truncated, is an AsgdError (invalid-argument).
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import type { OutputInfo } from 'sharp';
import { loadSharp } from './write.ts';
import { AsgdError } from '../../core/errors.ts';
import { checkRgbPixels, isPixelImage, notAnImage, type RgbImage } from '../../core/image.ts';
import { resizeLanczos3 } from '../../core/resize.ts';
import { embeddedSource, type EmbeddedParameters, type GenerationMetadata } from '../../core/metadata.ts';
import { readImageMetadataFromBytes, unreadableFile } from './write.ts';

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

export async function readSourceImage(input: ImageInput): Promise<SourceImage> {
  if (isPixelImage(input)) {
    input = checkRgbPixels(input);
    const { data, alpha } = input;
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
  const found = await readImageMetadataFromBytes(bytes, name).catch((): EmbeddedParameters => ({}));
  const embedded = embeddedSource(found);
  return { image, hadAlpha, sha256: createHash('sha256').update(bytes).digest('hex'), embedded, name };
}

/**
 * Resizes with Lanczos3 to exactly width x height (the alpha plane too, when there is one): the core's
 * resizeLanczos3, equal byte for byte to Pillow's LANCZOS resize and the same in the browser. The same size returns
 * the image itself.
 */
export async function resizeLanczos(img: RgbImage, width: number, height: number): Promise<RgbImage> {
  if (img.width === width && img.height === height) return img;
  return resizeLanczos3(img, width, height);
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
