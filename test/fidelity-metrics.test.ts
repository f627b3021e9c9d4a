import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  bootstrapMean,
  centreDistance,
  downscaleBox,
  flatEnergy,
  flatInterior,
  maskCentre,
  maskIoU,
  pairedDifference,
  quantile,
  seamContrast,
  wilson,
  type Rgb,
} from '../bench/analysis/fidelity-metrics.ts';
import { layoutAgainst, parseScene, relationHolds, scoreScene } from '../bench/analysis/scenes.ts';
import { PALETTE, type ColourName } from '../bench/analysis/shapes.ts';

function blank(width: number, height: number, colour: ColourName): Rgb {
  const data = new Uint8Array(width * height * 3);
  const rgb = PALETTE[colour].map((v) => Math.round(v * 255));
  for (let i = 0; i < width * height; i++) data.set(rgb, 3 * i);
  return { data, width, height };
}

/** Fills an axis-aligned square [x0, x0 + side) x [y0, y0 + side). */
function square(img: Rgb, colour: ColourName, x0: number, y0: number, side: number): void {
  const rgb = PALETTE[colour].map((v) => Math.round(v * 255));
  for (let y = y0; y < y0 + side; y++) for (let x = x0; x < x0 + side; x++) img.data.set(rgb, 3 * (y * img.width + x));
}

/** Fills the pixels whose centre lies within r of (cx, cy). */
function disc(img: Rgb, colour: ColourName, cx: number, cy: number, r: number): void {
  const rgb = PALETTE[colour].map((v) => Math.round(v * 255));
  for (let y = 0; y < img.height; y++) {
    for (let x = 0; x < img.width; x++) if (Math.hypot(x + 0.5 - cx, y + 0.5 - cy) <= r) img.data.set(rgb, 3 * (y * img.width + x));
  }
}

function grey(width: number, height: number, value: (x: number, y: number) => number): Rgb {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.fill(value(x, y), 3 * (y * width + x), 3 * (y * width + x) + 3);
  return { data, width, height };
}

describe('fidelity metrics', () => {
  it('downscaleBox averages blocks and rounds', () => {
    const img = grey(4, 2, (x, y) => [[0, 10, 20, 21], [2, 4, 30, 30]][y]![x]!);
    const small = downscaleBox(img, 2);
    assert.equal(small.width, 2);
    assert.equal(small.height, 1);
    // (0 + 10 + 2 + 4) / 4 = 4; (20 + 21 + 30 + 30) / 4 = 25.25 -> 25
    assert.deepEqual([...small.data], [4, 4, 4, 25, 25, 25]);
    assert.throws(() => downscaleBox(img, 3));
  });

  it('maskIoU and maskCentre on squares with known overlap', () => {
    const w = 20;
    const a = new Uint8Array(w * w);
    const b = new Uint8Array(w * w);
    for (let y = 0; y < 10; y++) for (let x = 0; x < 10; x++) a[y * w + x] = 1;
    for (let y = 0; y < 10; y++) for (let x = 5; x < 15; x++) b[y * w + x] = 1;
    assert.equal(maskIoU(a, b), 50 / 150);
    assert.equal(maskIoU(a, a), 1);
    assert.equal(maskIoU(new Uint8Array(4), new Uint8Array(4)), null);
    assert.deepEqual(maskCentre(a, w), { x: 5, y: 5 });
    assert.deepEqual(maskCentre(b, w), { x: 10, y: 5 });
    assert.equal(maskCentre(new Uint8Array(4), 2), null);
    assert.equal(centreDistance({ x: 0, y: 0 }, { x: 3, y: 4 }, 10), 0.5);
    assert.equal(centreDistance(null, { x: 3, y: 4 }, 10), null);
  });

  it('flatEnergy is 0 on flat colour and ramps, (8a/255)^2 per channel on a checkerboard', () => {
    const labels = new Int8Array(16 * 16);
    const all = flatInterior(labels, 16, 16, 1);
    assert.equal(all.reduce((s, v) => s + v, 0), 256);
    assert.equal(flatEnergy(grey(16, 16, () => 100), all), 0);
    assert.equal(flatEnergy(grey(16, 16, (x, y) => 10 + 3 * x + 2 * y), all), 0);
    const checker = grey(16, 16, (x, y) => ((x + y) % 2 ? 110 : 90));
    assert.ok(Math.abs(flatEnergy(checker, all)! - 3 * (80 / 255) ** 2) < 1e-12);
    assert.equal(flatEnergy(checker, new Uint8Array(256)), null);
  });

  it('flatInterior keeps only pixels whose neighbourhood has one label', () => {
    const labels = new Int8Array(8 * 8);
    for (let y = 0; y < 8; y++) for (let x = 4; x < 8; x++) labels[y * 8 + x] = 1;
    labels[0] = -1;
    const inner = flatInterior(labels, 8, 8, 1);
    // columns 3 and 4 touch the other label; pixel 0 is unlabelled and its neighbours see it
    const row = (y: number) => [...inner.subarray(y * 8, y * 8 + 8)];
    assert.deepEqual(row(0), [0, 0, 1, 0, 0, 1, 1, 1]);
    assert.deepEqual(row(1), [0, 0, 1, 0, 0, 1, 1, 1]);
    assert.deepEqual(row(4), [1, 1, 1, 0, 0, 1, 1, 1]);
  });

  it('seamContrast compares the step across the border lines with same-phase steps next to them', () => {
    // columns: 100 left of x=12, 105 at x=12, 120 up to x=16, 130 from x=16: a step of 10 on the line x=16,
    // of 5 at x=12 (a reference: phase 4, 4 px from the line), of 15 at x=13 (off phase: ignored)
    const img = grey(32, 32, (x) => (x < 12 ? 100 : x < 13 ? 105 : x < 16 ? 120 : 130));
    const keep = new Uint8Array(32 * 32).fill(1);
    // band 8: references at 8, 12, 20, 24 on both axes (4 per row and column), one step of 5 per row
    const wide = seamContrast(img, 16, keep, 8, 4);
    assert.equal(wide.pairs, 64);
    assert.ok(Math.abs(wide.border - (32 * 3 * (10 / 255) ** 2) / 64) < 1e-15);
    assert.ok(Math.abs(wide.elsewhere - (32 * 3 * (5 / 255) ** 2) / 256) < 1e-15);
    assert.ok(Math.abs(wide.ratio! - 16) < 1e-9);
    // band 4: references at 12 and 20 only
    assert.ok(Math.abs(seamContrast(img, 16, keep, 4, 4).ratio! - 8) < 1e-9);
    // pairs outside `keep` do not count: drop column 12 and the reference steps are all 0
    const noStep = keep.slice();
    for (let y = 0; y < 32; y++) noStep[y * 32 + 12] = 0;
    assert.equal(seamContrast(img, 16, noStep, 8, 4).ratio, null);
    assert.equal(seamContrast(grey(32, 32, () => 7), 16, keep, 8, 4).ratio, null);
    assert.throws(() => seamContrast(img, 16, keep, 8, 3));
    assert.throws(() => seamContrast(img, 16, keep, 2, 4));
    assert.throws(() => seamContrast(img, 16, keep, 16, 4));
  });

  it('wilson intervals', () => {
    const half = wilson(5, 10);
    assert.equal(half.rate, 0.5);
    assert.ok(Math.abs(half.low - 0.2366) < 1e-4 && Math.abs(half.high - 0.7634) < 1e-4);
    const all = wilson(48, 48);
    assert.ok(Math.abs(all.low - 0.9259) < 1e-4);
    assert.equal(all.high, 1);
    assert.equal(wilson(0, 48).low, 0);
    assert.deepEqual(wilson(0, 0), { rate: NaN, low: 0, high: 1 });
  });

  it('bootstrap intervals and paired differences', () => {
    assert.deepEqual(bootstrapMean([2, 2, 2]), { mean: 2, low: 2, high: 2 });
    assert.deepEqual(pairedDifference([3, 4, 5], [2, 3, 4]), { mean: 1, low: 1, high: 1 });
    assert.equal(quantile([0, 10], 0.25), 2.5);
    const b = bootstrapMean([0, 0, 0, 0, 1, 1, 1, 1]);
    assert.equal(b.mean, 0.5);
    assert.ok(b.low > 0.1 && b.low < 0.3 && b.high > 0.7 && b.high < 0.9, JSON.stringify(b));
    assert.deepEqual(bootstrapMean([0, 1, 0, 1], 500, 0.95, 7), bootstrapMean([0, 1, 0, 1], 500, 0.95, 7));
    assert.throws(() => pairedDifference([1], [1, 2]));
  });
});

describe('scene captions and scoring', () => {
  it('parses the three kinds of caption', () => {
    assert.deepEqual(parseScene('a red circle on a blue background'), {
      kind: 'single', objects: [{ colour: 'red', shape: 'circle' }], background: ['blue'], striped: false,
    });
    assert.deepEqual(parseScene('a large green square left of a small red circle on a striped gray and white background'), {
      kind: 'relation',
      objects: [{ colour: 'green', shape: 'square', size: 'large' }, { colour: 'red', shape: 'circle', size: 'small' }],
      relation: 'left of', background: ['gray', 'white'], striped: true,
    });
    const three = parseScene('three blue triangles on a orange background');
    assert.equal(three.kind, 'count');
    assert.equal(three.objects.length, 3);
    assert.deepEqual(three.objects[2], { colour: 'blue', shape: 'triangle' });
    assert.throws(() => parseScene('a red circle left of a red square on a blue background'));
    assert.throws(() => parseScene('four red circles on a blue background'));
    assert.throws(() => parseScene('a purple circle on a blue background'));
  });

  it('relationHolds needs the sign and the dominant axis', () => {
    assert.equal(relationHolds({ x: 10, y: 50 }, { x: 90, y: 60 }, 'left of'), true);
    assert.equal(relationHolds({ x: 10, y: 50 }, { x: 90, y: 60 }, 'right of'), false);
    assert.equal(relationHolds({ x: 10, y: 10 }, { x: 30, y: 90 }, 'left of'), false);
    assert.equal(relationHolds({ x: 10, y: 10 }, { x: 30, y: 90 }, 'above'), true);
    assert.equal(relationHolds({ x: 30, y: 90 }, { x: 10, y: 10 }, 'below'), true);
  });

  it('scores a relation scene: counts, shapes, relation, sizes', () => {
    const img = blank(128, 128, 'gray');
    square(img, 'red', 10, 40, 40); // large, left
    disc(img, 'blue', 95, 60, 14); // small, right
    const ok = scoreScene(img, parseScene('a large red square left of a small blue circle on a gray background'), 128);
    assert.equal(ok.countCorrect, true);
    assert.equal(ok.shapesCorrect, true);
    assert.equal(ok.relationKept, true);
    assert.equal(ok.sizeKept, true);
    assert.equal(ok.correct, true);
    assert.deepEqual([ok.extra, ok.missing], [0, 0]);
    assert.equal(ok.colours[0]!.objects[0]!.area, 1600);
    const flipped = scoreScene(img, parseScene('a small red square right of a large blue circle on a gray background'), 128);
    assert.deepEqual([flipped.relationKept, flipped.sizeKept, flipped.correct, flipped.shapesCorrect], [false, false, false, true]);
    // a second red square: one extra object, the relation still read from the largest ones
    square(img, 'red', 60, 100, 20);
    const extra = scoreScene(img, parseScene('a red square left of a blue circle on a gray background'), 128);
    assert.deepEqual([extra.extra, extra.missing, extra.countCorrect, extra.relationKept, extra.correct], [1, 0, false, true, false]);
  });

  it('scores counts, with missing objects and wrong shapes', () => {
    const img = blank(128, 128, 'yellow');
    square(img, 'blue', 10, 10, 30);
    square(img, 'blue', 80, 80, 30);
    const two = scoreScene(img, parseScene('two blue squares on a yellow background'), 128);
    assert.deepEqual([two.countCorrect, two.shapesCorrect, two.correct, two.relationKept], [true, true, true, null]);
    const three = scoreScene(img, parseScene('three blue squares on a yellow background'), 128);
    assert.deepEqual([three.missing, three.extra, three.correct], [1, 0, false]);
    const circles = scoreScene(img, parseScene('two blue circles on a yellow background'), 128);
    assert.deepEqual([circles.countCorrect, circles.shapesCorrect, circles.correct], [true, false, false]);
  });

  it('layoutAgainst downscales and compares colour masks with the native image', () => {
    const native = blank(64, 64, 'gray');
    square(native, 'red', 8, 8, 16);
    const high = blank(128, 128, 'gray');
    square(high, 'red', 24, 16, 32); // the same square, 4 native px to the right
    const f = layoutAgainst(native, high, ['red', 'blue']);
    assert.equal(f.perColour[0]!.iou, 192 / 320);
    assert.equal(f.perColour[0]!.centreDistance, 4 / 64);
    assert.deepEqual(f.perColour[1], { colour: 'blue', iou: null, centreDistance: null });
    assert.equal(f.meanIoU, 0.6);
    assert.equal(f.meanCentreDistance, 0.0625);
  });
});
