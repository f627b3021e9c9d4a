/**
 * Settings read from dropped images (web/src/parameters.ts): this project's PNG/JPEG/WebP metadata, and the
 * formats of AUTOMATIC1111 (PNG text and JPEG EXIF), ComfyUI, InvokeAI and Fooocus; unknown files are told apart.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildMetadata } from '../src/core/metadata.ts';
import { resolveParams } from '../src/core/params.ts';
import { encodeImage } from '../src/node/image/write.ts';
import { readDroppedParameters, UnsupportedImage } from '../web/src/parameters.ts';
import { A1111_TEXT, COMFY_PROMPT, FOOOCUS_PARAMETERS, INVOKE_METADATA, jpegWithUserComment, plainJpeg, plainPng, pngWithText } from './helpers/image-texts.ts';

const img = { data: new Uint8Array(8 * 8 * 3).fill(90), width: 8, height: 8 };

test("this project's metadata from PNG, JPEG and WebP, a seed above 2^53 exact", async () => {
  const p = resolveParams({ prompt: 'a red circle', negativePrompt: 'blur', width: 1024, height: 768, steps: 25, seed: '18446744073709551557', method: 'asg', methodOptions: { structureWeight: 0.4 } }, { width: 512, height: 512 });
  const meta = buildMetadata(p, { name: 'shapes-128', family: 'sd' }, 'euler', 'test');
  for (const format of ['png', 'jpeg', 'webp'] as const) {
    const r = await readDroppedParameters(await encodeImage(img, format, meta));
    assert.equal(r?.format, 'asgdiffusion', format);
    assert.equal(r.settings['seed'], '18446744073709551557');
    assert.equal(r.settings['prompt'], 'a red circle');
    assert.equal(r.settings['negativePrompt'], 'blur');
    assert.equal(r.settings['width'], 1024);
    assert.equal(r.settings['method'], 'asg');
    assert.equal((r.settings['methodOptions'] as { structureWeight: number }).structureWeight, 0.4);
  }
});

test('AUTOMATIC1111 parameters from a PNG text chunk and from JPEG EXIF UserComment', async () => {
  const want = { prompt: 'a castle on a hill, sunset', negativePrompt: 'blurry, low quality', steps: 28, guidanceScale: 6.5, seed: '3141592653', scheduler: 'dpmpp-2m', width: 768, height: 512 };
  const png = await readDroppedParameters(await pngWithText({ parameters: A1111_TEXT }));
  assert.deepEqual(png, { format: 'a1111', settings: want });
  const jpeg = await readDroppedParameters(await jpegWithUserComment(A1111_TEXT));
  assert.deepEqual(jpeg, { format: 'a1111', settings: want });
});

test('ComfyUI, InvokeAI and Fooocus', async () => {
  assert.deepEqual(await readDroppedParameters(await pngWithText({ prompt: COMFY_PROMPT, workflow: '{"nodes":[]}' })), {
    format: 'comfyui',
    settings: { prompt: 'a bottle with a galaxy inside', negativePrompt: 'text, watermark', steps: 20, guidanceScale: 8, seed: '8566257', scheduler: 'euler-ancestral', width: 640, height: 448 },
  });
  assert.deepEqual(await readDroppedParameters(await pngWithText({ invokeai_metadata: INVOKE_METADATA })), {
    format: 'invokeai',
    settings: { prompt: 'a fox in the snow', negativePrompt: 'cartoon', width: 512, height: 704, steps: 30, guidanceScale: 7, seed: '424242', scheduler: 'euler-ancestral' },
  });
  assert.deepEqual(await readDroppedParameters(await pngWithText({ parameters: FOOOCUS_PARAMETERS, fooocus_scheme: 'fooocus' })), {
    format: 'fooocus',
    settings: { prompt: 'a lighthouse at night', negativePrompt: 'people', steps: 30, guidanceScale: 4, seed: '1234567890123456789', width: 1152, height: 896 },
  });
});

test('an image without parameters gives none; a file that is no image is told apart', async () => {
  assert.equal(await readDroppedParameters(await plainPng()), undefined);
  assert.equal(await readDroppedParameters(await plainJpeg()), undefined);
  assert.equal(await readDroppedParameters(await pngWithText({ Software: 'an editor' })), undefined);
  await assert.rejects(readDroppedParameters(new TextEncoder().encode('GIF89a not supported')), UnsupportedImage);
});

test('compressed PNG texts (zTXt, compressed iTXt) are read like plain ones, by the page and by the library', async () => {
  const { pngWithCompressedText } = await import('./helpers/image-texts.ts');
  const { readImageMetadataFromBytes } = await import('../src/node/image/write.ts');
  const plainA1111 = await readDroppedParameters(await pngWithText({ parameters: A1111_TEXT }));
  const z = await pngWithCompressedText({ parameters: A1111_TEXT }, 'zTXt');
  assert.deepEqual(await readDroppedParameters(z), plainA1111);
  assert.equal((await readImageMetadataFromBytes(z)).parameters, A1111_TEXT);
  const comfy = await pngWithCompressedText({ prompt: COMFY_PROMPT, workflow: '{"nodes":[]}' }, 'iTXt');
  assert.deepEqual(await readDroppedParameters(comfy), await readDroppedParameters(await pngWithText({ prompt: COMFY_PROMPT })));
  // A compressed text that is not zlib data is skipped, not fatal.
  const broken = Uint8Array.from(z);
  const at = Buffer.from(broken).indexOf('zTXtparameters') + 'zTXtparameters'.length + 2;
  broken.fill(0xff, at, at + 8);
  assert.equal(await readDroppedParameters(broken), undefined);
  assert.equal((await readImageMetadataFromBytes(broken)).parameters, undefined);
});
