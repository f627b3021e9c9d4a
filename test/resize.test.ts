/**
 * The core's Lanczos3 resize (src/core/resize.ts) against its reference, Pillow's `Image.resize(size, LANCZOS)` run by
 * /usr/bin/python3 (Debian's python3-pil; the test command's setup installs it): byte for byte, enlarging and
 * shrinking, one axis at a time, 1-pixel-wide inputs, and the alpha plane (as Pillow resizes an 'L' image).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { before, test } from 'node:test';
import sharp from 'sharp';
import { AsgdError } from '../src/core/errors.ts';
import type { RgbImage } from '../src/core/image.ts';
import { resizeLanczos3 } from '../src/core/resize.ts';
import { resizeLanczos } from '../src/node/image/read.ts';

const PYTHON = '/usr/bin/python3';

/** Reads width x height raw pixels of `mode` on stdin, writes Pillow's LANCZOS resize of them to stdout. */
const PILLOW_RESIZE = `
import sys
from PIL import Image
mode = sys.argv[1]
w, h, W, H = map(int, sys.argv[2:6])
im = Image.frombytes(mode, (w, h), sys.stdin.buffer.read())
sys.stdout.buffer.write(im.resize((W, H), Image.Resampling.LANCZOS).tobytes())
`;

before(() => {
  const r = spawnSync(PYTHON, ['-c', 'import PIL'], { stdio: 'ignore' });
  assert.equal(r.status, 0, `${PYTHON} cannot import PIL: run \`node scripts/setup-system.mjs\` (as root on Debian it installs python3-pil)`);
});

function pillowResize(data: Uint8Array, mode: 'RGB' | 'L', w: number, h: number, width: number, height: number): Uint8Array {
  const r = spawnSync(PYTHON, ['-c', PILLOW_RESIZE, mode, String(w), String(h), String(width), String(height)], { input: data, maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, `Pillow failed: ${r.stderr?.toString()}`);
  return new Uint8Array(r.stdout.buffer, r.stdout.byteOffset, r.stdout.byteLength);
}

/** A small seeded PRNG (xorshift32) for byte noise. */
function noiseBytes(length: number, seed: number): Uint8Array {
  let s = seed >>> 0 || 1;
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    out[i] = s >>> 24;
  }
  return out;
}

function noise(width: number, height: number, seed: number): RgbImage {
  return { data: noiseBytes(width * height * 3, seed), width, height };
}

/** A smooth colour gradient with a soft ring, so the resize has structure but no hard edges. */
function gradient(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const u = x / Math.max(1, width - 1);
      const v = y / Math.max(1, height - 1);
      const ring = 0.5 + 0.5 * Math.cos(12 * Math.hypot(u - 0.4, v - 0.6));
      const i = (y * width + x) * 3;
      data[i] = Math.round(255 * u);
      data[i + 1] = Math.round(255 * v);
      data[i + 2] = Math.round(255 * ring);
    }
  }
  return { data, width, height };
}

/** Byte equality, with a short message (the first differing byte and the count) rather than a dump of the arrays. */
function assertSameBytes(actual: Uint8Array, expected: Uint8Array, label: string): void {
  assert.equal(actual.length, expected.length, `${label}: length`);
  let first = -1;
  let count = 0;
  for (let i = 0; i < actual.length; i++) {
    if (actual[i] !== expected[i]) {
      if (first < 0) first = i;
      count++;
    }
  }
  assert.equal(count, 0, `${label}: ${count} bytes differ from Pillow's, the first at ${first} (${actual[first]} vs ${expected[first]})`);
}

function checkAgainstPillow(img: RgbImage, width: number, height: number, label: string): RgbImage {
  const out = resizeLanczos3(img, width, height);
  assert.equal(out.width, width);
  assert.equal(out.height, height);
  assertSameBytes(out.data, pillowResize(img.data, 'RGB', img.width, img.height, width, height), `${label} ${img.width}x${img.height} -> ${width}x${height}`);
  return out;
}

test('2x enlargement equals Pillow (noise and a smooth gradient); the difference to sharp is printed', async () => {
  const cases: [string, RgbImage][] = [['noise', noise(40, 32, 1)], ['gradient', gradient(64, 48)]];
  for (const [label, img] of cases) {
    const out = checkAgainstPillow(img, img.width * 2, img.height * 2, label);
    const viaSharp = await sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
      .resize(img.width * 2, img.height * 2, { kernel: 'lanczos3', fit: 'fill' })
      .raw()
      .toBuffer();
    let sum = 0;
    let max = 0;
    for (let i = 0; i < out.data.length; i++) {
      const d = Math.abs(out.data[i]! - viaSharp[i]!);
      sum += d;
      if (d > max) max = d;
    }
    console.log(`# ${label} ${img.width}x${img.height} -> 2x: against sharp's lanczos3, mean |diff| ${(sum / out.data.length).toFixed(3)}, max |diff| ${max}`);
  }
});

test('non-integer enlargements equal Pillow', () => {
  checkAgainstPillow(noise(37, 23, 2), 100, 61, 'noise');
  checkAgainstPillow(gradient(37, 23), 100, 61, 'gradient');
  checkAgainstPillow(noise(30, 20, 3), 90, 60, 'noise'); // 3x: taps land on whole source pixels
  checkAgainstPillow(noise(64, 48, 4), 96, 72, 'noise'); // 1.5x
});

test('shrinking (the filter widens with the scale) equals Pillow', () => {
  checkAgainstPillow(noise(97, 71, 5), 40, 30, 'noise');
  checkAgainstPillow(gradient(97, 71), 40, 30, 'gradient');
  checkAgainstPillow(noise(200, 150, 6), 23, 17, 'noise');
  checkAgainstPillow(noise(45, 80, 7), 90, 31, 'noise'); // wider, shorter
});

test('one axis only (the other pass is skipped, as in Pillow) equals Pillow', () => {
  checkAgainstPillow(noise(50, 20, 8), 83, 20, 'noise, width only');
  checkAgainstPillow(noise(20, 50, 9), 20, 83, 'noise, height only');
  checkAgainstPillow(noise(90, 40, 10), 37, 40, 'noise, width only shrink');
  checkAgainstPillow(noise(40, 90, 11), 40, 13, 'noise, height only shrink');
});

test('1-pixel-wide and 1-pixel inputs equal Pillow', () => {
  checkAgainstPillow(noise(1, 17, 12), 1, 40, 'noise');
  checkAgainstPillow(noise(1, 17, 13), 5, 9, 'noise');
  checkAgainstPillow(noise(17, 1, 14), 40, 3, 'noise');
  checkAgainstPillow(noise(1, 1, 15), 4, 6, 'noise');
  checkAgainstPillow(noise(23, 19, 16), 1, 1, 'noise');
});

test('the alpha plane is resized as Pillow resizes an L image, the colour as its RGB', () => {
  const img: RgbImage = { ...noise(30, 22, 17), alpha: noiseBytes(30 * 22, 18) };
  for (const [width, height] of [[71, 50], [13, 9], [30, 41]] as const) {
    const out = checkAgainstPillow(img, width, height, 'noise with alpha');
    assert.ok(out.alpha, 'the alpha plane is kept');
    assertSameBytes(out.alpha, pillowResize(img.alpha!, 'L', img.width, img.height, width, height), `alpha 30x22 -> ${width}x${height}`);
  }
  assert.equal(resizeLanczos3(noise(30, 22, 19), 60, 44).alpha, undefined, 'no alpha in, none out');
});

test('the same size returns the image itself', async () => {
  const img = noise(16, 12, 20);
  assert.equal(resizeLanczos3(img, 16, 12), img);
  assert.equal(await resizeLanczos(img, 16, 12), img);
  const out = await resizeLanczos(img, 32, 24);
  assert.deepEqual(out, resizeLanczos3(img, 32, 24), 'the Node resize is the core one');
});

test('invalid sizes are refused, naming the parameter', () => {
  const img = noise(8, 8, 21);
  for (const [width, height, parameter] of [[0, 8, 'width'], [-3, 8, 'width'], [1.5, 8, 'width'], [Number.NaN, 8, 'width'], [8, 0, 'height'], [8, 2.25, 'height'], [8, Number.POSITIVE_INFINITY, 'height']] as const) {
    assert.throws(
      () => resizeLanczos3(img, width, height),
      (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && e.parameter === parameter && e.received === String(parameter === 'width' ? width : height),
      `${width}x${height}`,
    );
  }
});
