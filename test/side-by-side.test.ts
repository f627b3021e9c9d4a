import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AsgdError } from '../src/core/errors.ts';
import type { RgbImage } from '../src/core/image.ts';
import { drawText, GLYPH_HEIGHT, GLYPH_WIDTH, glyphFor, sideBySide, textHeight, textWidth, type Rgb } from '../src/node/image/side-by-side.ts';

function solid(width: number, height: number, colour: Rgb): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < width * height; i++) data.set(colour, i * 3);
  return { data, width, height };
}

function pixel(img: RgbImage, x: number, y: number): number[] {
  const i = (y * img.width + x) * 3;
  return [img.data[i]!, img.data[i + 1]!, img.data[i + 2]!];
}

/** Pixels of one colour inside a rectangle. */
function countColour(img: RgbImage, x0: number, y0: number, x1: number, y1: number, colour: Rgb): number {
  let n = 0;
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) if (pixel(img, x, y).every((v, c) => v === colour[c])) n++;
  return n;
}

test('text is drawn glyph by glyph at integer scales and clipped at the edges', () => {
  assert.equal(textWidth('', 2), 0);
  assert.equal(textWidth('asg', 1), 3 * 6 - 1);
  assert.equal(textWidth('asg', 3), (3 * 6 - 1) * 3);
  assert.equal(textHeight(2), GLYPH_HEIGHT * 2);
  for (const ch of 'abcdefghijklmnopqrstuvwxyz0123456789 .,:;-_+=/()%\'"!?#~') {
    const rows = glyphFor(ch);
    assert.equal(rows.length, GLYPH_HEIGHT, ch);
    assert.ok(rows.every((r) => r.length === GLYPH_WIDTH && /^[.#]+$/.test(r)), ch);
  }
  assert.deepEqual(glyphFor('A'), glyphFor('a'), 'uppercase uses the lowercase glyphs');
  assert.notDeepEqual(glyphFor('~'), glyphFor(' '), 'an unknown character is drawn as a box, not left out');

  const white: Rgb = [255, 255, 255];
  const img = solid(20, 12, [0, 0, 0]);
  drawText(img, 'l', 1, 1, white, 2);
  const rows = glyphFor('l');
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) {
      const gx = Math.floor((x - 1) / 2);
      const gy = Math.floor((y - 1) / 2);
      const ink = x >= 1 && y >= 1 && gx < GLYPH_WIDTH && gy < GLYPH_HEIGHT && rows[gy]![gx] === '#';
      assert.deepEqual(pixel(img, x, y), ink ? [255, 255, 255] : [0, 0, 0], `(${x}, ${y})`);
    }
  }
  const edge = solid(4, 4, [0, 0, 0]);
  assert.doesNotThrow(() => drawText(edge, 'ab', -3, -6, white, 2));
  assert.equal(edge.data.length, 4 * 4 * 3);
  assert.throws(() => textWidth('x', 1.5), (e: unknown) => e instanceof AsgdError && e.parameter === 'textScale');
});

test('sideBySide keeps every image pixel for pixel, labels each one above it and captions below', () => {
  const red: Rgb = [200, 10, 10];
  const blue: Rgb = [10, 10, 200];
  const bg: Rgb = [24, 24, 24];
  const fg: Rgb = [240, 240, 240];
  const left = solid(40, 30, red);
  left.data.set([1, 2, 3], 0); // a marked corner pixel: the copy must be exact, not resampled
  const right = solid(40, 20, blue);
  const gap = 6;
  const out = sideBySide([{ image: left, label: 'direct' }, { image: right, label: 'asg' }], { gap, labelScale: 1, captionScale: 1, caption: ['a red circle', '128x128'] });

  const labelW = textWidth('direct', 1); // 35 px: narrower than the images, so columns are image-wide
  assert.ok(labelW < 40);
  assert.equal(out.width, 40 + gap + 40 + 2 * gap);
  assert.equal(out.data.length, out.width * out.height * 3);
  const imageTop = gap + GLYPH_HEIGHT + Math.ceil(gap / 2);
  assert.equal(out.height, imageTop + 30 + gap + (GLYPH_HEIGHT + 2) + GLYPH_HEIGHT + gap);

  // Images: at (gap, imageTop) and (gap + 40 + gap, imageTop), exact; the shorter one top-aligned on background.
  assert.deepEqual(pixel(out, gap, imageTop), [1, 2, 3]);
  assert.equal(countColour(out, gap, imageTop, gap + 40, imageTop + 30, red), 40 * 30 - 1);
  const rx = gap + 40 + gap;
  assert.equal(countColour(out, rx, imageTop, rx + 40, imageTop + 20, blue), 40 * 20);
  assert.equal(countColour(out, rx, imageTop + 20, rx + 40, imageTop + 30, bg), 40 * 10);

  // Labels: ink only in the centred label boxes above each image, nowhere else in the label band.
  const inkIn = (x0: number, x1: number) => countColour(out, x0, gap, x1, gap + GLYPH_HEIGHT, fg);
  const lx = gap + Math.floor((40 - labelW) / 2);
  const ax = rx + Math.floor((40 - textWidth('asg', 1)) / 2);
  assert.ok(inkIn(lx, lx + labelW) > 20, 'the "direct" label is drawn');
  assert.ok(inkIn(ax, ax + textWidth('asg', 1)) > 10, 'the "asg" label is drawn');
  assert.equal(inkIn(0, out.width), inkIn(lx, lx + labelW) + inkIn(ax, ax + textWidth('asg', 1)));
  // The labels are the glyphs: the "direct" box matches drawText on an empty canvas.
  const expected = solid(labelW, GLYPH_HEIGHT, bg);
  drawText(expected, 'direct', 0, 0, fg, 1);
  for (let y = 0; y < GLYPH_HEIGHT; y++) for (let x = 0; x < labelW; x++) assert.deepEqual(pixel(out, lx + x, gap + y), pixel(expected, x, y));

  // Caption: two lines of ink below the images.
  const captionTop = imageTop + 30 + gap;
  assert.ok(countColour(out, 0, captionTop, out.width, captionTop + GLYPH_HEIGHT, fg) > 20);
  assert.ok(countColour(out, 0, captionTop + GLYPH_HEIGHT + 2, out.width, captionTop + 2 * GLYPH_HEIGHT + 2, fg) > 20);
  assert.equal(countColour(out, 0, imageTop + 30, out.width, captionTop, fg), 0);
});

test('sideBySide widens the canvas for a long caption or label, and refuses bad input', () => {
  const img = solid(8, 8, [9, 9, 9]);
  const caption = 'a caption much wider than two tiny images';
  const out = sideBySide([{ image: img, label: 'a' }, { image: img, label: 'b' }], { caption: [caption], captionScale: 2, gap: 4 });
  assert.equal(out.width, textWidth(caption, 2) + 2 * 4);
  const wide = sideBySide([{ image: img, label: 'multidiffusion' }], { labelScale: 2, gap: 0 });
  assert.equal(wide.width, textWidth('multidiffusion', 2));
  const bad = (f: () => unknown, parameter: string) => assert.throws(f, (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && e.parameter === parameter);
  bad(() => sideBySide([]), 'panels');
  bad(() => sideBySide([{ image: { width: 8, height: 8, data: new Uint8Array(10) }, label: 'x' }]), 'panels[0]');
  bad(() => sideBySide([{ image: img, label: 'x' }], { gap: -1 }), 'gap');
  bad(() => sideBySide([{ image: img, label: 'x' }], { labelScale: 0 }), 'textScale');
});
