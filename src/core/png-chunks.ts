/**
 * PNG text chunks: insert iTXt chunks (UTF-8 keyword/value) before IEND, and read tEXt/iTXt/zTXt back. Used to embed
 * the generation parameters. Portable: works on Uint8Array, no Node APIs.
 */
import { ascii } from './bytes.ts';
import { textDecoder, utf8Encode } from './platform.ts';

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];

let crcTable: Uint32Array | undefined;
/** CRC-32 (ISO-HDLC, as PNG and zip use it). */
export function crc32(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c >>> 0;
    }
  }
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = crcTable[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Whether the bytes start with PNG's signature. */
export function isPng(png: Uint8Array): boolean {
  return png.length >= 8 && SIGNATURE.every((b, i) => png[i] === b);
}

/** One PNG chunk: length, type, data and CRC. */
export function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** iTXt: keyword, 0, compression flag 0, method 0, empty language tag, 0, empty translated keyword, 0, UTF-8 text. */
function itxt(keyword: string, text: string): Uint8Array {
  const k = utf8Encode(keyword);
  const t = utf8Encode(text);
  const data = new Uint8Array(k.length + 5 + t.length);
  data.set(k, 0);
  data.set([0, 0, 0, 0, 0], k.length);
  data.set(t, k.length + 5);
  return pngChunk('iTXt', data);
}

export function addPngTextChunks(png: Uint8Array, entries: Record<string, string>): Uint8Array<ArrayBuffer> {
  if (!isPng(png)) throw new Error('addPngTextChunks: not a PNG');
  // IEND is the last 12 bytes of a well-formed PNG.
  const iendAt = png.length - 12;
  const chunks = Object.entries(entries).map(([k, v]) => itxt(k, v));
  const extra = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(png.length + extra);
  out.set(png.subarray(0, iendAt), 0);
  let at = iendAt;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  out.set(png.subarray(iendAt), at);
  return out;
}

/** Inflates zlib data (a compressed zTXt or iTXt text); Node: zlib.inflateSync; browsers: see inflateTextChunks. */
export type Inflate = (compressed: Uint8Array) => Uint8Array;

/** A compressed text chunk: its keyword, its zlib data, and whether the text is UTF-8 (iTXt) or Latin-1 (zTXt). */
export interface CompressedTextChunk {
  keyword: string;
  data: Uint8Array;
  utf8: boolean;
}

/**
 * The text chunks of a PNG: tEXt, iTXt and zTXt. Compressed texts (zTXt, and iTXt with its compression flag, as
 * some tools write long settings or workflows) are inflated with `inflate` when given and skipped otherwise (see
 * readPngTexts for an asynchronous inflater).
 */
export function readPngTextChunks(png: Uint8Array, inflate?: Inflate): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of textChunks(png)) {
    if (c.compressed === undefined) out[c.keyword] = c.text;
    else if (inflate) {
      try {
        out[c.keyword] = compressedText(c.compressed, inflate(c.compressed.data));
      } catch {
        // A damaged compressed text is skipped like an unknown chunk.
      }
    }
  }
  return out;
}

/** Inflates zlib data at once (Node's zlib.inflateSync) or asynchronously (the platform's DecompressionStream). */
export type AnyInflate = (compressed: Uint8Array) => Uint8Array | Promise<Uint8Array>;

/**
 * readPngTextChunks with an inflater that may be asynchronous: every text chunk in the file's order, a later one of
 * a keyword replacing an earlier, a compressed text that does not inflate skipped.
 */
export async function readPngTexts(png: Uint8Array, inflate: AnyInflate): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const c of textChunks(png)) {
    if (c.compressed === undefined) {
      out[c.keyword] = c.text;
      continue;
    }
    try {
      out[c.keyword] = compressedText(c.compressed, await inflate(c.compressed.data));
    } catch {
      // A damaged compressed text is skipped like an unknown chunk.
    }
  }
  return out;
}

/** A compressed text chunk's text from its inflated bytes (UTF-8 for iTXt, Latin-1 for zTXt). */
function compressedText(c: CompressedTextChunk, inflated: Uint8Array): string {
  return textDecoder(c.utf8 ? 'utf-8' : 'latin1').decode(inflated);
}

/** The compressed text chunks of a PNG, for an inflater that is asynchronous (a browser's DecompressionStream). */
export function compressedTextChunks(png: Uint8Array): CompressedTextChunk[] {
  return textChunks(png).flatMap((c) => (c.compressed ? [c.compressed] : []));
}

type TextChunk = { keyword: string; text: string; compressed?: undefined } | { keyword: string; text?: undefined; compressed: CompressedTextChunk };

function textChunks(png: Uint8Array): TextChunk[] {
  if (!isPng(png)) throw new Error('not a PNG file');
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const out: TextChunk[] = [];
  const utf8 = textDecoder('utf-8');
  const latin1 = textDecoder('latin1');
  for (let at = 8; at + 12 <= png.length; ) {
    const len = view.getUint32(at);
    const type = ascii(png, at + 4, 4);
    const data = png.subarray(at + 8, at + 8 + len);
    const z = data.indexOf(0);
    if (type === 'tEXt') {
      if (z > 0) out.push({ keyword: latin1.decode(data.subarray(0, z)), text: latin1.decode(data.subarray(z + 1)) });
    } else if (type === 'zTXt') {
      // keyword, 0, compression method (0: zlib), compressed Latin-1 text.
      if (z > 0 && data[z + 1] === 0) out.push({ keyword: latin1.decode(data.subarray(0, z)), compressed: { keyword: latin1.decode(data.subarray(0, z)), data: data.subarray(z + 2), utf8: false } });
    } else if (type === 'iTXt') {
      const compressed = data[z + 1] === 1;
      let p = z + 3;
      p = data.indexOf(0, p) + 1; // language tag
      p = data.indexOf(0, p) + 1; // translated keyword
      if (z > 0 && p > 0) {
        const keyword = utf8.decode(data.subarray(0, z));
        if (!compressed) out.push({ keyword, text: utf8.decode(data.subarray(p)) });
        else if (data[z + 2] === 0) out.push({ keyword, compressed: { keyword, data: data.subarray(p), utf8: true } });
      }
    } else if (type === 'IEND') {
      break;
    }
    at += 12 + len;
  }
  return out;
}

/** Whether a PNG holds a chunk of `type` (e.g. 'eXIf') before its IEND. */
export function pngHasChunk(png: Uint8Array, type: string): boolean {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  for (let at = 8; at + 8 <= png.length; at += 12 + view.getUint32(at)) {
    const t = ascii(png, at + 4, 4);
    if (t === type) return true;
    if (t === 'IEND') return false;
  }
  return false;
}

/** Whether a PNG's bytes hold its IEND chunk (a cut-off file does not). */
export function hasPngEnd(png: Uint8Array): boolean {
  for (let i = png.length - 8; i >= 8; i--) {
    if (png[i] === 0x49 && png[i + 1] === 0x45 && png[i + 2] === 0x4e && png[i + 3] === 0x44) return true;
  }
  return false;
}
