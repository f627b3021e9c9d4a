/**
 * Pictures people bring to upscale: an uploaded PNG, JPEG or WebP joins the outputs folder (the gallery) under a
 * name derived from its bytes, so an upscale job can name it like any output, and uploading the same file twice
 * gives the same entry. Written to a hidden temporary file first and linked into place create-only: a reader never
 * sees a half-written file, and two uploads of the same bytes cannot overwrite each other.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';
import { invalidArgument } from '../core/errors.ts';

/** Content types the upload endpoint takes, and the file extension each gets. */
export const UPLOAD_TYPES: Readonly<Record<string, string>> = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/webp': 'webp' };

/** Largest upload in bytes. */
export const UPLOAD_MAX_BYTES = 64 * 1024 * 1024;

/** Largest side of an uploaded picture in pixels (upscaling starts from a picture, not from a poster). */
export const UPLOAD_MAX_SIDE = 8192;

export interface SavedUpload {
  name: string;
  width: number;
  height: number;
  /** False when the same bytes were uploaded before (the existing entry is returned). */
  created: boolean;
}

export async function saveUpload(outputsDir: string, bytes: Uint8Array): Promise<SavedUpload> {
  let meta: { format?: string; width?: number; height?: number; autoOrient?: { width: number; height: number } };
  try {
    meta = await sharp(bytes).metadata();
  } catch {
    throw invalidArgument('body', 'a PNG, JPEG or WebP image', `${bytes.length} bytes that are not an image`);
  }
  const ext = meta.format === 'png' ? 'png' : meta.format === 'jpeg' ? 'jpg' : meta.format === 'webp' ? 'webp' : undefined;
  if (!ext) throw invalidArgument('body', 'a PNG, JPEG or WebP image', `a ${meta.format ?? 'unknown'} image`);
  // The size as shown and upscaled: EXIF orientation applied (a portrait photo stored landscape is portrait).
  const width = meta.autoOrient?.width ?? meta.width ?? 0;
  const height = meta.autoOrient?.height ?? meta.height ?? 0;
  if (width < 8 || height < 8 || width > UPLOAD_MAX_SIDE || height > UPLOAD_MAX_SIDE) {
    throw invalidArgument('body', `a picture with sides from 8 to ${UPLOAD_MAX_SIDE} px`, `${width}x${height}`);
  }
  try {
    // Every pixel, not only the header: a file cut short has a readable header, and would fail only when upscaled.
    // As strict as the upscale's reader (src/node/image/read.ts).
    await sharp(bytes, { failOn: 'truncated' }).stats();
  } catch {
    throw invalidArgument('body', 'a readable PNG, JPEG or WebP image', `a ${meta.format} image whose pixels cannot be decoded (${bytes.length} bytes: truncated or damaged)`);
  }
  const hash = createHash('sha256').update(bytes).digest('hex');
  const name = `upload-${hash.slice(0, 16)}.${ext}`;
  const file = path.join(outputsDir, name);
  const tmp = path.join(outputsDir, `.upload-${hash.slice(0, 16)}-${randomBytes(4).toString('hex')}.tmp`);
  fs.writeFileSync(tmp, bytes, { flag: 'wx' });
  let created = true;
  try {
    fs.linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    created = false;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  return { name, width, height, created };
}
