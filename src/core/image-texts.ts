/**
 * The texts an image file carries, where Stable Diffusion tools keep their settings: PNG text chunks (compressed ones
 * inflated), the EXIF UserComment of JPEG and WebP files (AUTOMATIC1111's `parameters` text), their XMP packet (this
 * project's record, `xmp`) and a JPEG comment. One reader for Node's, the page's and the browser build's upscale
 * sources and dropped files. Portable: no Node APIs.
 */
import { ascii } from './bytes.ts';
import { exifTexts } from './exif.ts';
import { embeddedParameters, JSON_KEY, TEXT_KEY, type EmbeddedParameters } from './metadata.ts';
import { inflateZlib, textDecoder } from './platform.ts';
import { isPng, readPngTexts, type AnyInflate } from './png-chunks.ts';

/** The image containers whose texts imageTexts reads. */
export type TextImageFormat = 'png' | 'jpeg' | 'webp';

/** The container of an image file whose texts imageTexts reads, from its first bytes; undefined for others. */
export function textImageFormat(bytes: Uint8Array): TextImageFormat | undefined {
  if (isPng(bytes)) return 'png';
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return 'jpeg';
  if (ascii(bytes, 0, 4) === 'RIFF' && ascii(bytes, 8, 4) === 'WEBP') return 'webp';
  return undefined;
}

/**
 * The texts of a PNG, JPEG or WebP file by key: PNG text chunks under their keywords; from JPEG and WebP, the EXIF
 * `UserComment`, the XMP packet as `xmp`, and a JPEG comment as `parameters`. Undefined for other formats. `inflate`
 * inflates compressed PNG texts (the platform's DecompressionStream unless given).
 */
export async function imageTexts(bytes: Uint8Array, inflate: AnyInflate = inflateZlib): Promise<Record<string, string> | undefined> {
  switch (textImageFormat(bytes)) {
    case 'png':
      return readPngTexts(bytes, inflate);
    case 'jpeg':
      return jpegTexts(bytes);
    case 'webp':
      return webpTexts(bytes);
    default:
      return undefined;
  }
}

/** This project's record and the `parameters` text of another tool, from an image's texts (imageTexts). */
export function embeddedFromTexts(texts: Record<string, string>): EmbeddedParameters {
  const xmp = texts['xmp'];
  const json = texts[JSON_KEY] ?? xmpValue(xmp, `asgd:${JSON_KEY}`);
  // The XMP description holds the parameters text where this project writes JPEG and WebP files.
  const described = xmp === undefined ? undefined : /<dc:description>[\s\S]*?<rdf:li[^>]*>([\s\S]*?)<\/rdf:li>/.exec(xmp)?.[1];
  const parameters = texts[TEXT_KEY] ?? (described === undefined ? undefined : unescapeXml(described)) ?? texts['UserComment'];
  return embeddedParameters(json, parameters);
}

/** The text of element `tag` (with its namespace prefix, e.g. `asgd:asgdiffusion`) in an XMP packet, unescaped. */
export function xmpValue(xmp: string | undefined, tag: string): string | undefined {
  const v = xmp === undefined ? undefined : new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`).exec(xmp)?.[1];
  return v === undefined ? undefined : unescapeXml(v);
}

function unescapeXml(s: string): string {
  return s.replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

const XMP_ID = 'http://ns.adobe.com/xap/1.0/\0';

/** JPEG segments up to the image data: APP1 EXIF and XMP, and COM. */
function jpegTexts(b: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  const utf8 = textDecoder('utf-8');
  for (let at = 2; at + 4 <= b.length; ) {
    if (b[at] !== 0xff) break;
    const marker = b[at + 1]!;
    if (marker === 0xda || marker === 0xd9) break; // the image data follows
    const len = (b[at + 2]! << 8) | b[at + 3]!;
    const seg = b.subarray(at + 4, at + 2 + len);
    if (marker === 0xe1 && ascii(seg, 0, 6) === 'Exif\0\0') Object.assign(out, exifTexts(seg));
    else if (marker === 0xe1 && ascii(seg, 0, XMP_ID.length) === XMP_ID) out['xmp'] = utf8.decode(seg.subarray(XMP_ID.length));
    else if (marker === 0xfe) out[TEXT_KEY] ??= utf8.decode(seg);
    at += 2 + len;
  }
  return out;
}

/** WebP (RIFF) chunks: EXIF and XMP. */
function webpTexts(b: Uint8Array): Record<string, string> {
  const out: Record<string, string> = {};
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  for (let at = 12; at + 8 <= b.length; ) {
    const type = ascii(b, at, 4);
    const len = view.getUint32(at + 4, true);
    const data = b.subarray(at + 8, at + 8 + len);
    if (type === 'EXIF') Object.assign(out, exifTexts(data));
    else if (type === 'XMP ') out['xmp'] = textDecoder('utf-8').decode(data);
    at += 8 + len + (len & 1);
  }
  return out;
}
