/**
 * The core's reader of the texts images carry (src/core/image-texts.ts), which Node's metadata reader, the browser
 * build's upscale source and the web app's dropped files share: this project's record in PNG, JPEG and WebP files,
 * AUTOMATIC1111's EXIF UserComment, XMP descriptions, JPEG comments, PNG texts in file order with either inflater,
 * and other formats through sharp in Node.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { inflateSync, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { embeddedFromTexts, imageTexts, textImageFormat, xmpValue } from '../src/core/image-texts.ts';
import { buildMetadata, formatParametersText } from '../src/core/metadata.ts';
import { pngChunk, pngHasChunk } from '../src/core/png-chunks.ts';
import { resolveParams } from '../src/core/params.ts';
import { encodeImage, readImageMetadataFromBytes } from '../src/node/image/write.ts';
import { A1111_TEXT, jpegWithComment, jpegWithUserComment, plainPng, webpWithUserComment } from './helpers/image-texts.ts';

const img = { data: new Uint8Array(16 * 16 * 3).map((_, i) => (i * 37) % 256), width: 16, height: 16 };

async function coreRead(bytes: Uint8Array) {
  const texts = await imageTexts(bytes);
  assert.ok(texts, 'a PNG, JPEG or WebP gives texts');
  return embeddedFromTexts(texts);
}

test("this project's record in PNG, JPEG and WebP: the core reader and Node's give the record and the parameters text", async () => {
  const p = resolveParams({ prompt: "it's a red circle & a <blue> square", negativePrompt: 'blur', width: 1024, height: 768, steps: 25, seed: '18446744073709551557', method: 'asg' }, { width: 512, height: 512 });
  const meta = buildMetadata(p, { name: 'shapes-128', family: 'sd' }, 'euler', 'test');
  for (const format of ['png', 'jpeg', 'webp'] as const) {
    const bytes = await encodeImage(img, format, meta);
    assert.equal(textImageFormat(bytes), format);
    const core = await coreRead(bytes);
    assert.deepEqual(core.metadata, JSON.parse(JSON.stringify(meta)), format);
    assert.equal(core.parameters, formatParametersText(meta), format);
    assert.equal(core.damaged, undefined);
    assert.deepEqual(await readImageMetadataFromBytes(bytes), core, format);
  }
});

test("AUTOMATIC1111's parameters as the EXIF UserComment of a JPEG and of a WebP", async () => {
  const jpeg = await jpegWithUserComment(A1111_TEXT);
  const webp = await webpWithUserComment(A1111_TEXT, img);
  assert.equal((await sharp(webp).metadata()).format, 'webp', 'a WebP sharp decodes');
  for (const bytes of [jpeg, webp]) {
    assert.deepEqual(await coreRead(bytes), { parameters: A1111_TEXT });
    assert.deepEqual(await readImageMetadataFromBytes(bytes), { parameters: A1111_TEXT });
  }
});

test("an XMP packet: the description's text (not another list's first item), its entities unescaped; a JPEG comment", async () => {
  const xmp =
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">' +
    '<dc:creator><rdf:Seq><rdf:li>an editor</rdf:li></rdf:Seq></dc:creator>' +
    '<dc:description><rdf:Alt><rdf:li xml:lang="x-default">it&apos;s a &quot;tree&quot; &amp; &lt;sky&gt;\nSteps: 20</rdf:li></rdf:Alt></dc:description>' +
    '</rdf:Description></rdf:RDF></x:xmpmeta>';
  const jpeg = new Uint8Array(await sharp(img.data, { raw: { width: 16, height: 16, channels: 3 } }).jpeg().withXmp(xmp).toBuffer());
  const want = { parameters: 'it\'s a "tree" & <sky>\nSteps: 20' };
  assert.deepEqual(await coreRead(jpeg), want);
  assert.deepEqual(await readImageMetadataFromBytes(jpeg), want);
  assert.equal(xmpValue(xmp, 'dc:creator'), '<rdf:Seq><rdf:li>an editor</rdf:li></rdf:Seq>');
  assert.equal(xmpValue(xmp, 'asgd:asgdiffusion'), undefined);
  assert.deepEqual(await coreRead(await jpegWithComment('a lamp\nSteps: 9')), { parameters: 'a lamp\nSteps: 9' });
});

test('PNG texts in file order, plain and compressed alike, with an inflater that is synchronous or asynchronous', async () => {
  const png = await plainPng();
  const iend = png.length - 12;
  const text = (k: string, v: string) => pngChunk('tEXt', Buffer.concat([Buffer.from(k, 'latin1'), Buffer.from([0]), Buffer.from(v, 'latin1')]));
  const itxt = (k: string, data: Uint8Array) => pngChunk('iTXt', Buffer.concat([Buffer.from(k, 'utf8'), Buffer.from([0, 1, 0, 0, 0]), data]));
  const file = (...chunks: Uint8Array[]) => new Uint8Array(Buffer.concat([png.subarray(0, iend), ...chunks, png.subarray(iend)]));
  // A later chunk of a keyword replaces an earlier one, whichever is compressed.
  const bytes = file(text('parameters', 'first'), itxt('parameters', deflateSync(Buffer.from('second ✓', 'utf8'))), itxt('other', deflateSync(Buffer.from('x'))), text('other', 'plain last'));
  const want = { parameters: 'second ✓', other: 'plain last' };
  assert.deepEqual(await imageTexts(bytes), want);
  assert.deepEqual(await imageTexts(bytes, (b) => inflateSync(b)), want);
  // A compressed text that is not zlib data is skipped, and the earlier plain one stays.
  const broken = file(text('parameters', 'kept'), itxt('parameters', new Uint8Array([0xff, 0xfe, 1, 2, 3])));
  assert.deepEqual(await imageTexts(broken), { parameters: 'kept' });
  assert.deepEqual(await imageTexts(broken, (b) => inflateSync(b)), { parameters: 'kept' });
  // pngHasChunk (the page decodes a PNG with an EXIF orientation through a canvas, which applies it).
  assert.equal(pngHasChunk(bytes, 'iTXt'), true);
  assert.equal(pngHasChunk(bytes, 'eXIf'), false);
  assert.equal(pngHasChunk(file(pngChunk('eXIf', new Uint8Array(8))), 'eXIf'), true);
});

test("other formats: no texts from the core; Node reads a TIFF's XMP through sharp; files that are no image are refused by name", async () => {
  const p = resolveParams({ prompt: 'a tiff', seed: '3' }, { width: 128, height: 128 });
  const meta = buildMetadata(p, { name: 'shapes-128', family: 'sd' }, 'euler', 'test');
  const viaJpeg = await encodeImage(img, 'jpeg', meta);
  const xmp = (await imageTexts(viaJpeg))!['xmp']!;
  const tiff = new Uint8Array(await sharp(img.data, { raw: { width: 16, height: 16, channels: 3 } }).tiff().withXmp(xmp).toBuffer());
  assert.equal(textImageFormat(tiff), undefined);
  assert.equal(await imageTexts(tiff), undefined);
  const read = await readImageMetadataFromBytes(tiff);
  assert.equal(read.metadata?.prompt, 'a tiff');
  assert.equal(read.parameters, formatParametersText(meta));
  await assert.rejects(readImageMetadataFromBytes(new TextEncoder().encode('not an image at all'), 'x.bin'), /x\.bin is not a readable image/);
  const png = await encodeImage(img, 'png', meta);
  await assert.rejects(readImageMetadataFromBytes(png.subarray(0, png.length - 20), 'cut.png'), /cut\.png is not a readable image \(truncated: no IEND chunk\)/);
});
