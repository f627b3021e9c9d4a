/**
 * The browser entry's PNG encoder (src/browser/png.ts: CompressionStream, which Node has too): the pixels decode
 * back exactly (sharp), every filter type is chosen somewhere, and the metadata chunks are Node's.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import sharp from 'sharp';
import { encodePng, filterRows } from '../src/browser/png.ts';
import { buildMetadata, JSON_KEY, TEXT_KEY, formatParametersText } from '../src/core/metadata.ts';
import { resolveParams } from '../src/core/params.ts';
import { readPngTextChunks } from '../src/core/png-chunks.ts';
import { createRandom } from '../src/core/random/index.ts';
import type { RgbImage } from '../src/core/image.ts';

function image(width: number, height: number): RgbImage {
  // Flat areas, gradients and noise, so that different rows prefer different filters.
  const r = createRandom(3n, 'png-test');
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      const band = Math.floor((y / height) * 4);
      data[i] = band === 0 ? 200 : band === 1 ? x * 3 : band === 2 ? Math.floor(r.uniform() * 256) : (x + y) & 0xff;
      data[i + 1] = band === 1 ? y * 2 : 90;
      data[i + 2] = (x * y) & 0xff;
    }
  }
  return { data, width, height };
}

test('encodePng: the pixels decode back exactly, with the metadata Node writes', async () => {
  const img = image(67, 45);
  const metadata = buildMetadata(resolveParams({ prompt: 'a red circle', width: 128, height: 128, seed: 5 }, { width: 128, height: 128 }), { name: 'shapes-128', family: 'sd' }, 'pndm', 'asgdiffusion 0.1.0');
  const png = await encodePng(img, metadata);
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height, info.channels], [67, 45, 3]);
  assert.ok(Buffer.from(img.data).equals(data), 'identical pixels');
  const chunks = readPngTextChunks(png);
  assert.equal(chunks[TEXT_KEY], formatParametersText(metadata));
  assert.deepEqual(JSON.parse(chunks[JSON_KEY]!), metadata);
  const filters = new Set(Array.from({ length: 45 }, (_, y) => filterRows(img)[y * (67 * 3 + 1)]));
  assert.ok(filters.size >= 2, `rows choose different filters: ${[...filters].join(', ')}`);
});

test('encodePng: without metadata, a plain PNG; a wrong buffer length is refused', async () => {
  const png = await encodePng(image(8, 8));
  assert.deepEqual(readPngTextChunks(png), {});
  await assert.rejects(encodePng({ data: new Uint8Array(10), width: 8, height: 8 }), /expected 192/);
});
