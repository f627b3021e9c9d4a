/**
 * Encoding and writing images: PNG (parameters in iTXt chunks), JPEG and WebP (parameters in XMP), chosen by the
 * file extension. Writes are atomic: the bytes go to a temporary file in the same folder, then a rename; a failed
 * or interrupted run leaves no partial file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { AsgdError } from '../../core/errors.ts';
import { notAnImage, type RgbImage } from '../../core/image.ts';
import { JSON_KEY, TEXT_KEY, formatParametersText, type EmbeddedParameters, type GenerationMetadata } from '../../core/metadata.ts';
import { addPngTextChunks, hasPngEnd } from '../../core/png-chunks.ts';
import { embeddedFromTexts, imageTexts, textImageFormat } from '../../core/image-texts.ts';
import { exifTexts } from '../../core/exif.ts';
import { inflateSync } from 'node:zlib';

export type ImageFormat = 'png' | 'jpeg' | 'webp';

export function formatFromPath(file: string, parameter: 'output' | 'preview' = 'output'): ImageFormat {
  const ext = path.extname(file).toLowerCase();
  if (ext === '.png') return 'png';
  if (ext === '.jpg' || ext === '.jpeg') return 'jpeg';
  if (ext === '.webp') return 'webp';
  if (file.endsWith('/') || file.endsWith(path.sep) || isFolder(file)) {
    throw new AsgdError(`The ${parameter} path is a folder`, {
      kind: 'invalid-argument', parameter, expected: 'an image file name (.png, .jpg, .jpeg or .webp)', received: file,
      hint: `Name a file in it, e.g. ${path.join(file, 'out.png')}`,
    });
  }
  throw new AsgdError(`Unsupported ${parameter} file type`, {
    kind: 'invalid-argument', parameter, expected: '.png, .jpg, .jpeg or .webp', received: ext || 'no extension',
    hint: `Name the ${parameter} file with one of these extensions`,
  });
}

function isFolder(file: string): boolean {
  try {
    return fs.statSync(file).isDirectory();
  } catch {
    return false;
  }
}

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

function xmpPacket(meta: GenerationMetadata): string {
  return (
    '<?xpacket begin="\uFEFF" id="W5M0MpCehiHzreSzNTczkc9d"?>' +
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">' +
    '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:asgd="https://asgdiffusion.dev/ns/1.0/">' +
    `<dc:description><rdf:Alt><rdf:li xml:lang="x-default">${escapeXml(formatParametersText(meta))}</rdf:li></rdf:Alt></dc:description>` +
    `<asgd:${JSON_KEY}>${escapeXml(JSON.stringify(meta))}</asgd:${JSON_KEY}>` +
    '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
  );
}

/** sharp (libvips), loaded on first use: importing the package does not load it. */
export async function loadSharp(): Promise<typeof import('sharp').default> {
  return (await import('sharp')).default;
}

export async function encodeImage(img: RgbImage, format: ImageFormat, meta?: GenerationMetadata): Promise<Uint8Array> {
  const sharp = await loadSharp();
  // JPEG holds no alpha: a kept alpha plane goes into PNG and WebP only.
  const alpha = format !== 'jpeg' && img.alpha?.length === img.width * img.height ? img.alpha : undefined;
  let pixels = img.data;
  if (alpha) {
    pixels = new Uint8Array(img.width * img.height * 4);
    for (let i = 0, j = 0; i < alpha.length; i++, j += 3) {
      pixels[4 * i] = img.data[j]!;
      pixels[4 * i + 1] = img.data[j + 1]!;
      pixels[4 * i + 2] = img.data[j + 2]!;
      pixels[4 * i + 3] = alpha[i]!;
    }
  }
  const base = sharp(Buffer.from(pixels.buffer, pixels.byteOffset, pixels.byteLength), {
    raw: { width: img.width, height: img.height, channels: alpha ? 4 : 3 },
    limitInputPixels: false,
  });
  if (format === 'png') {
    const png = new Uint8Array(await base.png({ compressionLevel: 6, adaptiveFiltering: true }).toBuffer());
    if (!meta) return png;
    return addPngTextChunks(png, { [TEXT_KEY]: formatParametersText(meta), [JSON_KEY]: JSON.stringify(meta) });
  }
  const withMeta = meta ? base.withXmp(xmpPacket(meta)) : base;
  const out = format === 'jpeg' ? withMeta.jpeg({ quality: 92, chromaSubsampling: '4:4:4' }) : withMeta.webp({ quality: 92 });
  return new Uint8Array(await out.toBuffer());
}

/** Checks before any work: the folder exists and is writable, the file is absent unless overwrite. */
export function checkOutputPath(file: string, overwrite: boolean, parameter: 'output' | 'preview' = 'output'): void {
  formatFromPath(file, parameter);
  const abs = path.resolve(file);
  const dir = path.dirname(abs);
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new AsgdError(`The ${parameter} folder does not exist: ${dir}`, { kind: 'output', parameter, hint: 'Create the folder first or choose another path' });
  }
  if (!st.isDirectory()) throw new AsgdError(`The ${parameter} folder is not a folder: ${dir}`, { kind: 'output', parameter, hint: 'Choose another path' });
  try {
    fs.accessSync(dir, fs.constants.W_OK);
  } catch {
    throw new AsgdError(`The ${parameter} folder is not writable: ${dir}`, { kind: 'output', parameter, hint: 'Choose a folder you can write to' });
  }
  if (fs.existsSync(abs)) {
    if (fs.statSync(abs).isDirectory()) throw new AsgdError(`The ${parameter} path is a folder: ${abs}`, { kind: 'output', parameter, hint: 'Give a file name such as out.png' });
    if (!overwrite) throw new AsgdError(`The ${parameter} file already exists: ${abs}`, { kind: 'output', parameter, hint: 'Pass --overwrite (API: overwrite: true) to replace it, or choose another name' });
  }
}

/** Atomic write: temp file in the same folder, fsync, rename. Never leaves a partial file behind. */
export function writeFileAtomic(file: string, bytes: Uint8Array, overwrite: boolean): void {
  checkOutputPath(file, overwrite);
  const abs = path.resolve(file);
  const tmp = path.join(path.dirname(abs), `.${path.basename(abs)}.${process.pid}.${Date.now()}.tmp`);
  try {
    const fd = fs.openSync(tmp, 'wx');
    try {
      fs.writeSync(fd, bytes);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    if (!overwrite && fs.existsSync(abs)) {
      throw new AsgdError(`The output file already exists: ${abs}`, { kind: 'output', parameter: 'output', hint: 'Pass --overwrite to replace it' });
    }
    fs.renameSync(tmp, abs);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    if (err instanceof AsgdError) throw err;
    // The system's message names the temporary file, which the user never asked for.
    const why = (err as Error).message.split(tmp).join(abs);
    throw new AsgdError(`Cannot write ${abs}: ${why}`, { kind: 'output', parameter: 'output', hint: 'Check the disk space and permissions', cause: err });
  }
}

export async function saveImage(file: string, img: RgbImage, meta: GenerationMetadata | undefined, overwrite = false): Promise<void> {
  const bytes = await encodeImage(img, formatFromPath(file), meta);
  writeFileAtomic(file, bytes, overwrite);
}

/** Reads the generation metadata embedded by saveImage (PNG text chunks, or XMP in JPEG/WebP). */
export async function readImageMetadata(file: string): Promise<EmbeddedParameters> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(fs.readFileSync(file));
  } catch (err) {
    throw unreadableFile(file, err);
  }
  return readImageMetadataFromBytes(bytes, file);
}

/** readImageMetadata on an image's bytes; `name` names it in errors. A file that is not an image is an AsgdError. */
export async function readImageMetadataFromBytes(bytes: Uint8Array, name = 'the image'): Promise<EmbeddedParameters> {
  const format = textImageFormat(bytes);
  if (format === 'png') {
    let texts: Record<string, string> | undefined;
    try {
      if (!hasPngEnd(bytes)) throw new Error('truncated: no IEND chunk');
      texts = await imageTexts(bytes, (b) => inflateSync(b));
    } catch (err) {
      throw notAnImage(name, err);
    }
    return embeddedFromTexts(texts ?? {});
  }
  let info: import('sharp').Metadata;
  try {
    info = await (await loadSharp())(bytes).metadata();
  } catch (err) {
    throw notAnImage(name, err);
  }
  // JPEG and WebP: their segments read by the core (as the page and the browser build read them); other formats
  // (TIFF, AVIF, ...): the EXIF and XMP sharp finds. AUTOMATIC1111 writes its parameters as the EXIF UserComment.
  const texts = (format ? await imageTexts(bytes) : undefined) ?? {
    ...(info.exif ? exifTexts(new Uint8Array(info.exif)) : {}),
    ...(info.xmp ? { xmp: info.xmp.toString('utf8') } : {}),
  };
  return embeddedFromTexts(texts);
}

/** The error for an image file that cannot be read at all, saying why (missing, a folder, no permission). */
export function unreadableFile(file: string, err: unknown): AsgdError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a folder' : code === 'EACCES' || code === 'EPERM' ? 'permission denied' : (err as Error | undefined)?.message ?? String(err);
  return new AsgdError(`Cannot read image ${file} (${why})`, {
    kind: 'invalid-argument', parameter: 'image', hint: 'Check the path', cause: err,
  });
}

export type { EmbeddedParameters };
