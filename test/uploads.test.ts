/**
 * POST /api/v1/uploads: a picture people bring joins the gallery under a name from its bytes and can be upscaled
 * like an output (fake engine); bad bodies get a clear 4xx and leave nothing behind.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import sharp from 'sharp';
import { readImageMetadata } from '../src/node/image/write.ts';
import { createServer } from '../src/server/app.ts';
import { LocalJobQueue } from '../src/server/local-queue.ts';
import type { JobRecord } from '../src/server/queue.ts';
import { FakeEngine } from './helpers/fake-engine.ts';
import { tempDir } from './helpers/models.ts';

const outputsDir = tempDir('uploads');
const queue = new LocalJobQueue({ dir: tempDir('uploads-state') });
const app = await createServer({ queue, engine: new FakeEngine({ stepMs: 1 }), outputsDir });
after(async () => {
  await app.close();
  await queue.close();
});

const picture = (w: number, h: number, format: 'png' | 'jpeg' = 'png') =>
  sharp({ create: { width: w, height: h, channels: 3, background: { r: 200, g: 30, b: 40 } } })[format]().toBuffer();
const upload = (body: Buffer, type = 'image/png') =>
  app.inject({ method: 'POST', url: '/api/v1/uploads', payload: body, headers: { 'content-type': type } });
const listed = () => fs.readdirSync(outputsDir).filter((f) => !f.startsWith('.'));
const hidden = () => fs.readdirSync(outputsDir).filter((f) => f.startsWith('.upload-'));

test('an upload joins the gallery under a name from its bytes; the same bytes again give the same entry', async () => {
  const png = await picture(64, 48);
  const first = await upload(png);
  assert.equal(first.statusCode, 201, first.body);
  const name = `upload-${createHash('sha256').update(png).digest('hex').slice(0, 16)}.png`;
  assert.deepEqual(first.json(), { name, width: 64, height: 48, created: true });
  assert.deepEqual(fs.readFileSync(path.join(outputsDir, name)), png);
  const again = await upload(png);
  assert.equal(again.statusCode, 200, again.body);
  assert.deepEqual(again.json(), { name, width: 64, height: 48, created: false });
  const jpeg = await upload(await picture(40, 40, 'jpeg'), 'image/jpeg');
  assert.equal(jpeg.statusCode, 201, jpeg.body);
  assert.match(jpeg.json().name, /^upload-[0-9a-f]{16}\.jpg$/);
  const gallery = (await app.inject({ url: '/api/v1/outputs' })).json() as { outputs: { name: string }[] };
  assert.ok(gallery.outputs.some((o) => o.name === name), JSON.stringify(gallery));
  assert.deepEqual(hidden(), []);
});

test('bad uploads: 415 for another type, 400 naming the body for non-images and bad sizes, 413 above the limit; nothing written', async () => {
  const before = listed();
  const text = await upload(Buffer.from('hello'), 'text/plain');
  assert.equal(text.statusCode, 415, text.body);
  const notImage = await upload(Buffer.from('not a png at all'), 'image/png');
  assert.equal(notImage.statusCode, 400, notImage.body);
  assert.equal(notImage.json().field, 'body');
  assert.match(notImage.json().message, /PNG, JPEG or WebP/);
  const tiny = await upload(await picture(4, 64));
  assert.equal(tiny.statusCode, 400, tiny.body);
  assert.match(tiny.json().message, /4x64/);
  const huge = await upload(Buffer.alloc(64 * 1024 * 1024 + 1));
  assert.equal(huge.statusCode, 413, huge.body.slice(0, 200));
  assert.deepEqual(listed(), before);
  assert.deepEqual(hidden(), []);
});

test('a picture cut short (a readable header, pixels missing) is refused naming the body; such a file already in the folder gets a clear thumbnail error', async () => {
  const noise = Buffer.from(Array.from({ length: 64 * 64 * 3 }, (_, i) => (i * 7919) % 251));
  const png = await sharp(noise, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
  const cut = png.subarray(0, 200);
  assert.equal((await sharp(cut).metadata()).width, 64, 'the header alone reads');
  const before = listed();
  const r = await upload(cut);
  assert.equal(r.statusCode, 400, r.body);
  assert.equal(r.json().field, 'body');
  assert.match(r.json().message, /Invalid body; expected a readable PNG, JPEG or WebP image; received .*cannot be decoded/);
  assert.deepEqual(listed(), before, 'nothing joins the gallery');
  assert.deepEqual(hidden(), []);

  fs.writeFileSync(path.join(outputsDir, 'damaged.png'), cut);
  const thumb = await app.inject({ url: '/api/v1/outputs/damaged.png/thumbnail' });
  assert.equal(thumb.statusCode, 422, thumb.body);
  assert.equal(thumb.json().error, 'unreadable-image');
  assert.equal(thumb.json().field, 'name');
  assert.match(thumb.json().message, /damaged\.png.*cannot be decoded/);
  assert.doesNotMatch(thumb.body, /vips|libpng/);
  fs.rmSync(path.join(outputsDir, 'damaged.png'));
  // A file whose header does not read either: its upscale and estimate answer the same (before: a 500).
  fs.writeFileSync(path.join(outputsDir, 'garbage.png'), 'not a picture at all');
  for (const url of ['/api/v1/outputs/garbage.png/upscale', '/api/v1/outputs/garbage.png/upscale/estimate']) {
    const up = await app.inject({ method: 'POST', url, payload: { steps: 2 } });
    assert.equal(up.statusCode, 422, `${url}: ${up.body}`);
    assert.equal(up.json().error, 'unreadable-image');
  }
  fs.rmSync(path.join(outputsDir, 'garbage.png'));
});

test('another content type is refused (415 naming content-type) before its body is read: a large JSON body is not parsed', async () => {
  const big = Buffer.from(`{"x": "${'a'.repeat(1.1 * 1024 * 1024)}`);
  for (const type of ['application/json', 'text/plain', 'application/octet-stream']) {
    const r = await upload(big, type);
    assert.equal(r.statusCode, 415, `${type}: ${r.body.slice(0, 200)}`);
    assert.equal(r.json().field, 'content-type');
    assert.equal(r.json().message, `Invalid content-type; expected image/png, image/jpeg, image/webp; received ${type}`);
  }
  const none = await app.inject({ method: 'POST', url: '/api/v1/uploads', payload: Buffer.from('x') });
  assert.equal(none.statusCode, 415, none.body);
  assert.equal(none.json().field, 'content-type');
});

test('an uploaded picture is upscaled like an output', async () => {
  const up = await upload(await picture(32, 32));
  const name = (up.json() as { name: string }).name;
  const r = await app.inject({ method: 'POST', url: `/api/v1/outputs/${name}/upscale`, payload: { scale: 2, strength: 0.5, steps: 2, seed: '3' } });
  assert.equal(r.statusCode, 202, r.body);
  const id = (r.json() as { id: string }).id;
  let job: JobRecord | undefined;
  for (let i = 0; i < 2000 && !['completed', 'failed', 'cancelled'].includes(job?.state ?? ''); i++) {
    await new Promise((res) => setTimeout(res, 10));
    job = (await app.inject({ url: `/api/v1/jobs/${id}` })).json() as JobRecord;
  }
  assert.equal(job?.state, 'completed', JSON.stringify(job));
  const meta = await readImageMetadata(path.join(outputsDir, job!.output!));
  assert.equal(meta.metadata?.width, 64);
  assert.equal(meta.metadata?.height, 64);
});

test('the OpenAPI document describes the upload body', async () => {
  const doc = (await app.inject({ url: '/api/v1/openapi.json' })).json() as { paths: Record<string, { post?: { requestBody?: { content: Record<string, unknown> } } }> };
  assert.deepEqual(Object.keys(doc.paths['/api/v1/uploads']?.post?.requestBody?.content ?? {}), ['image/png', 'image/jpeg', 'image/webp']);
});
