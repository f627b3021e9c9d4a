import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildMetadata, formatParametersText, parseMetadataJson } from '../src/core/metadata.ts';
import { resolveParams } from '../src/core/params.ts';
import { addPngTextChunks, readPngTextChunks } from '../src/core/png-chunks.ts';
import { AsgdError } from '../src/core/errors.ts';
import sharp from 'sharp';

const native = { width: 512, height: 512 };

test('resolveParams fills defaults and keeps seeds exact up to 2^64-1', () => {
  const p = resolveParams({ prompt: 'a cat', seed: '18446744073709551615' }, native);
  assert.equal(p.width, 512);
  assert.equal(p.steps, 30);
  assert.equal(p.guidanceScale, 7.5);
  assert.equal(p.method, 'asg');
  assert.equal(p.seed, 2n ** 64n - 1n);
});

test('resolveParams rejects bad values naming the parameter', () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ width: 100 }, /Invalid width; expected a multiple of 8 between 64 and 8192 pixels; received 100\. Try 104/],
    [{ height: 9000 }, /Invalid height.*received 9000/],
    [{ steps: 0 }, /Invalid steps.*received 0/],
    [{ guidanceScale: Number.NaN }, /Invalid guidanceScale; expected a number in \[0, 100\]; received NaN/],
    [{ widht: 256 }, /Invalid widht; expected a generation setting: prompt, negativePrompt, width, .*; received 256. Check the spelling/],
    [{ guidanceScale: Infinity }, /Invalid guidanceScale/],
    [{ seed: -1 }, /Invalid seed/],
    [{ seed: 2n ** 64n }, /Invalid seed/],
    [{ method: 'nope' }, /Invalid method; expected one of asg, cutdiffusion, multidiffusion, direct; received "nope"/],
  ];
  for (const [extra, re] of bad) {
    assert.throws(() => resolveParams({ prompt: 'x', ...extra } as never, native), (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && re.test(e.message));
  }
});

test('metadata text and JSON', () => {
  const p = resolveParams({ prompt: 'a red circle, big', negativePrompt: 'blur', seed: 42, steps: 20, width: 1024, height: 768 }, native);
  const m = buildMetadata(p, { name: 'tiny', family: 'sd' }, 'euler', 'asgdiffusion 0.1.0');
  const text = formatParametersText(m);
  assert.equal(
    text.split('\n').slice(0, 2).join('\n'),
    'a red circle, big\nNegative prompt: blur',
  );
  assert.match(text, /Steps: 20, Sampler: euler, CFG scale: 7\.5, Seed: 42, Size: 1024x768, Model: tiny, Method: asg/);
  const back = parseMetadataJson(JSON.stringify(m));
  assert.deepEqual(back, m);
  assert.throws(() => parseMetadataJson('{"x":1}'), /not asgdiffusion generation metadata/);
});

test('PNG text chunks survive a round trip and keep the PNG decodable', async () => {
  const png = new Uint8Array(await sharp({ create: { width: 4, height: 3, channels: 3, background: '#f00' } }).png().toBuffer());
  const withText = addPngTextChunks(png, { parameters: 'héllo ✓\nline 2', asgdiffusion: '{"a":1}' });
  assert.deepEqual(readPngTextChunks(withText), { parameters: 'héllo ✓\nline 2', asgdiffusion: '{"a":1}' });
  const meta = await sharp(withText).metadata();
  assert.equal(meta.width, 4);
  assert.equal(meta.height, 3);
  const raw = await sharp(withText).raw().toBuffer();
  assert.deepEqual([...raw.subarray(0, 3)], [255, 0, 0]);
});

test('the parameters text other tools write as EXIF UserComment in JPEG (AUTOMATIC1111) is read, and asgd read prints it', async () => {
  const { readImageMetadataFromBytes } = await import('../src/node/image/write.ts');
  const { A1111_TEXT, jpegWithUserComment } = await import('./helpers/image-texts.ts');
  const jpeg = await jpegWithUserComment(A1111_TEXT);
  const r = await readImageMetadataFromBytes(jpeg);
  assert.equal(r.parameters, A1111_TEXT);
  assert.equal(r.metadata, undefined);
  const { promptFromParametersText } = await import('../src/core/metadata.ts');
  assert.deepEqual(promptFromParametersText(r.parameters!), { prompt: 'a castle on a hill, sunset', negativePrompt: 'blurry, low quality' });
  const { main } = await import('../src/cli/main.ts');
  const fs = await import('node:fs');
  const path = await import('node:path');
  const { tempDir } = await import('./helpers/models.ts');
  const file = path.join(tempDir('exif'), 'a1111.jpg');
  fs.writeFileSync(file, jpeg);
  const out: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string) => (out.push(String(chunk)), true)) as typeof process.stdout.write;
  let code: number;
  try {
    code = await main(['read', file]);
  } finally {
    process.stdout.write = write;
  }
  assert.equal(code, 0);
  assert.equal(out.join(''), `${A1111_TEXT}\n`);
});
