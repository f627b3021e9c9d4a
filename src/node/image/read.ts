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
import { notAnImage, readImageMetadataFromBytes } from './write.ts';

/** An upscale's source: a file path, the file's bytes, or decoded 8-bit RGB pixels. */
export type ImageInput = string | Uint8Array | RgbImage;

export interface SourceImage {
  image: RgbImage;
  /** The source had an alpha channel (dropped: the output is RGB). */
  hadAlpha: boolean;
  /** SHA-256 (hex) of the file's bytes, or of the RGB pixels when given decoded. */
  sha256: string;
  /** What the file holds: this project's metadata, or the prompts of another tool's `parameters` text. */
  embedded?: { metadata?: GenerationMetadata; prompt?: string; negativePrompt?: string };
  name: string;
}

function isRgbImage(v: unknown): v is RgbImage {
  return typeof v === 'object' && v !== null && !(v instanceof Uint8Array) && 'data' in v && 'width' in v && 'height' in v;
}

export async function readSourceImage(input: ImageInput): Promise<SourceImage> {
  if (isRgbImage(input)) {
    const { data, width, height } = input;
    if (!(data instanceof Uint8Array) || !Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || data.length !== width * height * 3) {
      throw new AsgdError('The image pixels do not match their size', {
        kind: 'invalid-argument', parameter: 'image', expected: 'interleaved 8-bit RGB of width x height x 3 bytes',
        received: `${data instanceof Uint8Array ? data.length : typeof data} bytes for ${String(width)}x${String(height)}`,
      });
    }
    return { image: input, hadAlpha: false, sha256: createHash('sha256').update(data).digest('hex'), name: 'the image' };
  }
  let bytes: Uint8Array;
  let name = 'the image';
  if (typeof input === 'string') {
    name = input;
    try {
      bytes = new Uint8Array(fs.readFileSync(input));
    } catch (err) {
      throw new AsgdError(`Cannot read image ${input}`, { kind: 'invalid-argument', parameter: 'image', hint: 'Check the path', cause: err });
    }
  } else if (input instanceof Uint8Array) {
    bytes = input;
  } else {
    throw new AsgdError('Invalid image', { kind: 'invalid-argument', parameter: 'image', expected: 'a file path, the file\'s bytes, or { data, width, height } RGB pixels', received: typeof input });
  }
  let decoded: { data: Buffer; info: OutputInfo };
  let hadAlpha: boolean;
  try {
    // failOn 'truncated': a cut-off file is an error, not an image with a grey bottom. sharp's input pixel limit
    // (about 268 Mpx) stays: a larger input is refused as unreadable.
    const img = (await loadSharp())(bytes, { failOn: 'truncated' });
    const meta = await img.metadata();
    hadAlpha = meta.hasAlpha === true;
    decoded = await img.rotate().removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw notAnImage(name, err);
  }
  if (decoded.info.channels !== 3) throw notAnImage(name, new Error(`${decoded.info.channels} channels after conversion`));
  const image: RgbImage = { data: new Uint8Array(decoded.data.buffer, decoded.data.byteOffset, decoded.data.byteLength), width: decoded.info.width, height: decoded.info.height };
  const found = await readImageMetadataFromBytes(bytes, name).catch(() => ({} as { metadata?: GenerationMetadata; parameters?: string }));
  let embedded: SourceImage['embedded'];
  if (found.metadata) embedded = { metadata: found.metadata, prompt: found.metadata.prompt, negativePrompt: found.metadata.negativePrompt };
  else if (found.parameters) embedded = promptFromParametersText(found.parameters);
  return { image, hadAlpha, sha256: createHash('sha256').update(bytes).digest('hex'), embedded, name };
}

/** Resizes with Lanczos (sharp's lanczos3) to exactly width x height. */
export async function resizeLanczos(img: RgbImage, width: number, height: number): Promise<RgbImage> {
  if (img.width === width && img.height === height) return img;
  const out = await (await loadSharp())(img.data, { raw: { width: img.width, height: img.height, channels: 3 }, limitInputPixels: false })
    .resize(width, height, { kernel: 'lanczos3', fit: 'fill' })
    .raw()
    .toBuffer();
  return { data: new Uint8Array(out.buffer, out.byteOffset, out.byteLength), width, height };
}

/** SHA-256 (hex) of a file, to check that `--from` is given the same source. */
export function fileSha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}
