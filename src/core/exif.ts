/**
 * The text other Stable Diffusion tools put in EXIF (AUTOMATIC1111 writes its `parameters` text as the UserComment
 * of JPEG and WebP files). Portable: the page and the Node reader use it alike.
 */

import { ascii } from './bytes.ts';
import { textDecoder } from './platform.ts';

/**
 * EXIF (a TIFF structure, with or without the "Exif\\0\\0" header of its JPEG segment): the UserComment tag, in IFD0
 * or the Exif IFD.
 */
export function exifTexts(exif: Uint8Array): Record<string, string> {
  const tiff = ascii(exif, 0, 6) === 'Exif\0\0' ? exif.subarray(6) : exif;
  if (tiff.length < 8) return {};
  const view = new DataView(tiff.buffer, tiff.byteOffset, tiff.byteLength);
  const le = ascii(tiff, 0, 2) === 'II';
  const u16 = (o: number) => view.getUint16(o, le);
  const u32 = (o: number) => view.getUint32(o, le);
  const readIfd = (offset: number, depth: number): string | undefined => {
    if (offset + 2 > tiff.length || depth > 2) return undefined;
    const n = u16(offset);
    for (let k = 0; k < n; k++) {
      const e = offset + 2 + k * 12;
      if (e + 12 > tiff.length) return undefined;
      const tag = u16(e);
      if (tag === 0x8769) {
        const r = readIfd(u32(e + 8), depth + 1);
        if (r !== undefined) return r;
      } else if (tag === 0x9286) {
        const count = u32(e + 4);
        const data = count <= 4 ? tiff.subarray(e + 8, e + 8 + count) : tiff.subarray(u32(e + 8), u32(e + 8) + count);
        return userComment(data);
      }
    }
    return undefined;
  };
  const c = readIfd(u32(4), 0);
  return c ? { UserComment: c } : {};
}

function userComment(data: Uint8Array): string {
  const charset = ascii(data, 0, 8);
  const body = data.subarray(8);
  if (charset.startsWith('UNICODE')) {
    // Writers differ in byte order: take the one that reads as more plain text.
    const be = textDecoder('utf-16be').decode(body);
    const le = textDecoder('utf-16le').decode(body);
    const plain = (s: string) => [...s].filter((ch) => ch.charCodeAt(0) < 128).length;
    return (plain(be) >= plain(le) ? be : le).replace(/\0+$/, '');
  }
  return textDecoder('utf-8').decode(charset.startsWith('ASCII') ? body : data).replace(/\0+$/, '');
}
