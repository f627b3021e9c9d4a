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
import { pngWithText } from './helpers/image-texts.ts';
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
async function finishedJob(id: string): Promise<JobRecord> {
  let job: JobRecord | undefined;
  for (let i = 0; i < 2000 && !['completed', 'failed', 'cancelled'].includes(job?.state ?? ''); i++) {
    await new Promise((res) => setTimeout(res, 10));
    job = (await app.inject({ url: `/api/v1/jobs/${id}` })).json() as JobRecord;
  }
  return job!;
}
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
  // Its upscale and estimate too: the pixels are read before queueing, as the upscale reads them (before: queued,
  // then the job failed).
  for (const url of ['/api/v1/outputs/damaged.png/upscale', '/api/v1/outputs/damaged.png/upscale/estimate']) {
    const up = await app.inject({ method: 'POST', url, payload: { steps: 2 } });
    assert.equal(up.statusCode, 422, `${url}: ${up.body}`);
    assert.equal(up.json().error, 'unreadable-image');
  }
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
  const job = await finishedJob((r.json() as { id: string }).id);
  assert.equal(job.state, 'completed', JSON.stringify(job));
  const meta = await readImageMetadata(path.join(outputsDir, job!.output!));
  assert.equal(meta.metadata?.width, 64);
  assert.equal(meta.metadata?.height, 64);
});

test('the OpenAPI document describes the upload body', async () => {
  const doc = (await app.inject({ url: '/api/v1/openapi.json' })).json() as { paths: Record<string, { post?: { requestBody?: { content: Record<string, unknown> } } }> };
  assert.deepEqual(Object.keys(doc.paths['/api/v1/uploads']?.post?.requestBody?.content ?? {}), ['image/png', 'image/jpeg', 'image/webp']);
});

test('a photo with an EXIF orientation is sized, checked, estimated and thumbnailed turned, as the upscale reads it', async () => {
  // Stored 64x96 (portrait), orientation 6: shown 96x64 (landscape).
  const stored = await sharp({ create: { width: 64, height: 96, channels: 3, background: { r: 20, g: 120, b: 200 } } }).jpeg().withMetadata({ orientation: 6 }).toBuffer();
  assert.deepEqual([(await sharp(stored).metadata()).width, (await sharp(stored).metadata()).orientation], [64, 6]);
  const up = await upload(stored, 'image/jpeg');
  assert.equal(up.statusCode, 201, up.body);
  const { name, width, height } = up.json() as { name: string; width: number; height: number };
  assert.deepEqual([width, height], [96, 64]);
  const estimate = async (body: object) => app.inject({ method: 'POST', url: `/api/v1/outputs/${name}/upscale/estimate`, payload: { steps: 2, ...body } });
  const twice = await estimate({ scale: 2 });
  assert.equal(twice.statusCode, 200, twice.body);
  assert.deepEqual([twice.json().width, twice.json().height], [192, 128]);
  // A height of 70 keeps the aspect ratio of the turned picture: 105x70, not refused as narrower than 64x96.
  const tall = await estimate({ height: 70 });
  assert.equal(tall.statusCode, 200, tall.body);
  assert.deepEqual([tall.json().width, tall.json().height], [105, 70]);
  const thumb = await app.inject({ url: `/api/v1/outputs/${name}/thumbnail` });
  assert.equal(thumb.statusCode, 200);
  const t = await sharp(thumb.rawPayload).metadata();
  assert.deepEqual([t.width, t.height], [96, 64]);
  // The job's output is the turned picture upscaled (the fake engine reads it as the library does).
  const r = await app.inject({ method: 'POST', url: `/api/v1/outputs/${name}/upscale`, payload: { scale: 2, steps: 1, seed: '1' } });
  assert.equal(r.statusCode, 202, r.body);
  const job = await finishedJob((r.json() as { id: string }).id);
  assert.equal(job.state, 'completed', JSON.stringify(job));
  assert.deepEqual(job.spec.size, { width: 192, height: 128 });
  const out = await sharp(path.join(outputsDir, job.output!)).metadata();
  assert.deepEqual([out.width, out.height], [192, 128]);
});

test('an upscale takes any output size at least the input\'s (a 200x20 strip to 200x40); a conflict of settings is named as the API names them', async () => {
  const up = await upload(await picture(200, 20));
  const name = (up.json() as { name: string }).name;
  const r = await app.inject({ method: 'POST', url: `/api/v1/outputs/${name}/upscale/estimate`, payload: { width: 200, height: 40, steps: 2 } });
  assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual([r.json().width, r.json().height], [200, 40]);
  const both = await app.inject({ method: 'POST', url: `/api/v1/outputs/${name}/upscale`, payload: { scale: 2, width: 400 } });
  assert.equal(both.statusCode, 400, both.body);
  assert.match(both.json().message, /Drop scale or width\/height/);
  assert.doesNotMatch(both.json().message, /--scale|-W/);
});

test("mask words of an upscale are checked against the prompt the upload holds, another tool's parameters text included", async () => {
  const { LibraryEngine } = await import('../src/server/library-engine.ts');
  const dir = tempDir('uploads-a1111');
  const q = new LocalJobQueue({ dir: tempDir('uploads-a1111-state') });
  const real = await createServer({ queue: q, engine: new LibraryEngine([path.join(import.meta.dirname, '..', 'models', 'shapes-128')]), outputsDir: dir });
  try {
    const text = 'a green square on a yellow background\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64';
    const bytes = Buffer.from(await pngWithText({ parameters: text }));
    const added = await real.inject({ method: 'POST', url: '/api/v1/uploads', payload: bytes, headers: { 'content-type': 'image/png' } });
    assert.equal(added.statusCode, 201, added.body);
    const name = (added.json() as { name: string }).name;
    const estimate = (maskWords: string[]) => real.inject({ method: 'POST', url: `/api/v1/outputs/${name}/upscale/estimate`, payload: { maskWords, steps: 2 } });
    const fine = await estimate(['square']);
    assert.equal(fine.statusCode, 200, fine.body);
    const wrong = await estimate(['giraffe']);
    assert.equal(wrong.statusCode, 400, wrong.body);
    assert.equal(wrong.json().field, 'maskWords');
    assert.match(wrong.json().message, /The mask word "giraffe" is not in the prompt/);
  } finally {
    await real.close();
    await q.close();
  }
});
