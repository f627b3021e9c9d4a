/** Images carrying other tools' metadata, built byte by byte, for the dropped-image tests. */
import zlib from 'node:zlib';
import sharp from 'sharp';

export async function plainPng(): Promise<Uint8Array> {
  return new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toBuffer());
}

export async function plainJpeg(): Promise<Uint8Array> {
  return new Uint8Array(await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 30, g: 30, b: 200 } } }).jpeg().toBuffer());
}

function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(Buffer.from(type, 'latin1'), 4);
  out.set(data, 8);
  view.setUint32(8 + data.length, zlib.crc32(out.subarray(4, 8 + data.length)));
  return out;
}

/** A PNG with tEXt chunks (Latin-1), as AUTOMATIC1111, ComfyUI, InvokeAI and Fooocus write them. */
export async function pngWithText(entries: Record<string, string>): Promise<Uint8Array> {
  const png = await plainPng();
  const iend = png.length - 12;
  const chunks = Object.entries(entries).map(([k, v]) => pngChunk('tEXt', Buffer.concat([Buffer.from(k, 'latin1'), Buffer.from([0]), Buffer.from(v, 'latin1')])));
  return new Uint8Array(Buffer.concat([png.subarray(0, iend), ...chunks, png.subarray(iend)]));
}

/** A PNG whose texts are compressed: zTXt (Latin-1) or iTXt with the compression flag (UTF-8), zlib data. */
export async function pngWithCompressedText(entries: Record<string, string>, type: 'zTXt' | 'iTXt'): Promise<Uint8Array> {
  const { deflateSync } = await import('node:zlib');
  const png = await plainPng();
  const iend = png.length - 12;
  const chunks = Object.entries(entries).map(([k, v]) =>
    type === 'zTXt'
      ? pngChunk('zTXt', Buffer.concat([Buffer.from(k, 'latin1'), Buffer.from([0, 0]), deflateSync(Buffer.from(v, 'latin1'))]))
      : pngChunk('iTXt', Buffer.concat([Buffer.from(k, 'utf8'), Buffer.from([0, 1, 0, 0, 0]), deflateSync(Buffer.from(v, 'utf8'))])),
  );
  return new Uint8Array(Buffer.concat([png.subarray(0, iend), ...chunks, png.subarray(iend)]));
}

/** An EXIF block ("Exif\0\0" and a little-endian TIFF) whose Exif IFD holds `text` as the UserComment (UNICODE, big-endian). */
function userCommentExif(text: string): Buffer {
  const comment = Buffer.concat([Buffer.from('UNICODE\0', 'latin1'), Buffer.from(text, 'utf16le').swap16()]);
  // TIFF, little-endian: header (8), IFD0 at 8 with one entry (Exif IFD pointer), Exif IFD with UserComment.
  const ifd0 = 8;
  const exifIfd = ifd0 + 2 + 12 + 4;
  const dataAt = exifIfd + 2 + 12 + 4;
  const tiff = Buffer.alloc(dataAt + comment.length);
  tiff.write('II', 0, 'latin1');
  tiff.writeUInt16LE(42, 2);
  tiff.writeUInt32LE(ifd0, 4);
  tiff.writeUInt16LE(1, ifd0);
  tiff.writeUInt16LE(0x8769, ifd0 + 2);
  tiff.writeUInt16LE(4, ifd0 + 4);
  tiff.writeUInt32LE(1, ifd0 + 6);
  tiff.writeUInt32LE(exifIfd, ifd0 + 10);
  tiff.writeUInt16LE(1, exifIfd);
  tiff.writeUInt16LE(0x9286, exifIfd + 2);
  tiff.writeUInt16LE(7, exifIfd + 4);
  tiff.writeUInt32LE(comment.length, exifIfd + 6);
  tiff.writeUInt32LE(dataAt, exifIfd + 10);
  comment.copy(tiff, dataAt);
  return Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiff]);
}

/** `jpeg` with a segment (marker 0xffXX and its payload) inserted after its SOI. */
function withJpegSegment(jpeg: Uint8Array, marker: number, payload: Buffer): Uint8Array {
  const head = Buffer.alloc(4);
  head.writeUInt16BE(marker, 0);
  head.writeUInt16BE(payload.length + 2, 2);
  return new Uint8Array(Buffer.concat([jpeg.subarray(0, 2), head, payload, jpeg.subarray(2)]));
}

/** A JPEG (`jpeg`, else an 8 x 8 one) whose EXIF UserComment holds `text`, as AUTOMATIC1111 writes JPEG and WebP. */
export async function jpegWithUserComment(text: string, jpeg?: Uint8Array): Promise<Uint8Array> {
  return withJpegSegment(jpeg ?? await plainJpeg(), 0xffe1, userCommentExif(text));
}

/** An 8 x 8 JPEG with a comment segment (COM) holding `text`. */
export async function jpegWithComment(text: string): Promise<Uint8Array> {
  return withJpegSegment(await plainJpeg(), 0xfffe, Buffer.from(text, 'utf8'));
}

/**
 * A WebP of `image` (extended format: a VP8X chunk flagging EXIF, the image, an EXIF chunk) whose EXIF UserComment
 * holds `text`, as AUTOMATIC1111 writes WebP.
 */
export async function webpWithUserComment(text: string, image: { data: Uint8Array; width: number; height: number }): Promise<Uint8Array> {
  const simple = Buffer.from(await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } }).webp({ lossless: true }).toBuffer());
  if (simple.toString('latin1', 12, 16) !== 'VP8L') throw new Error('expected a simple lossless WebP');
  const chunk = (type: string, data: Buffer) => {
    const head = Buffer.alloc(8);
    head.write(type, 0, 'latin1');
    head.writeUInt32LE(data.length, 4);
    return Buffer.concat([head, data, data.length % 2 ? Buffer.alloc(1) : Buffer.alloc(0)]);
  };
  const vp8x = Buffer.alloc(10);
  vp8x[0] = 0x08; // EXIF present
  vp8x.writeUIntLE(image.width - 1, 4, 3);
  vp8x.writeUIntLE(image.height - 1, 7, 3);
  const body = Buffer.concat([Buffer.from('WEBP', 'latin1'), chunk('VP8X', vp8x), simple.subarray(12), chunk('EXIF', userCommentExif(text).subarray(6))]);
  const riff = Buffer.alloc(8);
  riff.write('RIFF', 0, 'latin1');
  riff.writeUInt32LE(body.length, 4);
  return new Uint8Array(Buffer.concat([riff, body]));
}

export const A1111_TEXT = 'a castle on a hill, sunset\nNegative prompt: blurry, low quality\nSteps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 3141592653, Size: 768x512, Model hash: abc123, Model: "sd15, pruned"';

export const COMFY_PROMPT = JSON.stringify({
  '3': { class_type: 'KSampler', inputs: { seed: 8566257, steps: 20, cfg: 8, sampler_name: 'euler_ancestral', scheduler: 'normal', denoise: 1, model: ['4', 0], positive: ['6', 0], negative: ['7', 0], latent_image: ['5', 0] } },
  '4': { class_type: 'CheckpointLoaderSimple', inputs: { ckpt_name: 'v1-5.safetensors' } },
  '5': { class_type: 'EmptyLatentImage', inputs: { width: 640, height: 448, batch_size: 1 } },
  '6': { class_type: 'CLIPTextEncode', inputs: { text: 'a bottle with a galaxy inside', clip: ['4', 1] } },
  '7': { class_type: 'CLIPTextEncode', inputs: { text: 'text, watermark', clip: ['4', 1] } },
});

export const INVOKE_METADATA = JSON.stringify({ positive_prompt: 'a fox in the snow', negative_prompt: 'cartoon', width: 512, height: 704, seed: 424242, steps: 30, cfg_scale: 7, scheduler: 'euler_a', model: { name: 'sd-1.5' } });

export const FOOOCUS_PARAMETERS = JSON.stringify({ prompt: 'a lighthouse at night', negative_prompt: 'people', resolution: '(1152, 896)', guidance_scale: 4, sampler: 'dpmpp_2m_sde_gpu', steps: 30, seed: '1234567890123456789', version: 'Fooocus v2.5' });
