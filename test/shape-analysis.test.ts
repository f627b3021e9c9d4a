import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AsgdError } from '../src/core/errors.ts';
import {
  analyseImage,
  classifyFill,
  cleanMask,
  COLOURS,
  labelColours,
  minObjectArea,
  NATIVE_MIN_OBJECT_AREA,
  PALETTE,
  parsePrompt,
  type ColourName,
  type ShapeName,
} from '../bench/analysis/shapes.ts';

interface Shape {
  shape: ShapeName;
  colour: ColourName;
  cx: number;
  cy: number;
  /** Side or diameter in px. */
  extent: number;
  /** Rotation in degrees (squares and triangles). */
  angle?: number;
}

/** Signed distance to a shape, drawn as training/data.py draws it (triangle: equilateral, apex up, box-centred). */
function distance(s: Shape, x: number, y: number): number {
  const px = x - s.cx;
  const py = y - s.cy;
  const t = ((s.angle ?? 0) * Math.PI) / 180;
  const ux = Math.cos(t) * px + Math.sin(t) * py;
  const uy = -Math.sin(t) * px + Math.cos(t) * py;
  const r = s.extent / 2;
  if (s.shape === 'circle') return Math.hypot(px, py) - r;
  if (s.shape === 'square') return Math.max(Math.abs(ux), Math.abs(uy)) - r;
  const h = (s.extent * Math.sqrt(3)) / 2;
  const k = Math.sqrt(3) / 2;
  return Math.max(uy - h / 2, -k * ux - uy / 2 - h / 4, k * ux - uy / 2 - h / 4);
}

/** Shapes on a background with a vertical brightness gradient and a colour offset (the data's jitter), 1 px soft edges. */
function draw(size: number, background: ColourName, shapes: Shape[], jitter = 0.03, gradient = 0.1): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  const bg = PALETTE[background].map((v) => v + jitter);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const ramp = 1 + gradient * 2 * ((y + 0.5) / size - 0.5);
      let rgb = bg.map((v) => Math.min(1, Math.max(0, v * ramp)));
      for (const s of shapes) {
        const cover = Math.min(1, Math.max(0, 0.5 - distance(s, x + 0.5, y + 0.5)));
        const obj = PALETTE[s.colour].map((v) => Math.min(1, Math.max(0, v - jitter)));
        rgb = rgb.map((v, c) => v * (1 - cover) + obj[c]! * cover);
      }
      for (let c = 0; c < 3; c++) out[3 * (y * size + x) + c] = Math.round(rgb[c]! * 255);
    }
  }
  return out;
}

/** Separable box blur of radius r (edge width about 2r + 1 px), clamped at the borders. */
function blur(rgb: Uint8Array, size: number, r: number): Uint8Array {
  let src = Float32Array.from(rgb);
  for (const [dx, dy] of [[1, 0], [0, 1]] as const) {
    const dst = new Float32Array(src.length);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        for (let c = 0; c < 3; c++) {
          let sum = 0;
          for (let k = -r; k <= r; k++) {
            const xx = Math.min(size - 1, Math.max(0, x + k * dx));
            const yy = Math.min(size - 1, Math.max(0, y + k * dy));
            sum += src[3 * (yy * size + xx) + c]!;
          }
          dst[3 * (y * size + x) + c] = sum / (2 * r + 1);
        }
      }
    }
    src = dst;
  }
  return Uint8Array.from(src, (v) => Math.round(v));
}

describe('parsePrompt', () => {
  it('reads the training captions', () => {
    assert.deepEqual(parsePrompt('a red circle on a blue background'), { colour: 'red', shape: 'circle', background: 'blue' });
    assert.deepEqual(parsePrompt('A Black triangle on a purple background'), { colour: 'black', shape: 'triangle', background: 'purple' });
    assert.deepEqual(parsePrompt('a white square'), { colour: 'white', shape: 'square' });
  });
  it('names the prompt and the expected form when it cannot', () => {
    for (const bad of ['a cat on a sofa', 'a purple circle on a red background', 'a red hexagon on a blue background']) {
      assert.throws(() => parsePrompt(bad), (e: unknown) => e instanceof AsgdError && e.parameter === 'prompt' &&
        e.message.includes(JSON.stringify(bad)) && e.message.includes('a <colour> <shape>'));
    }
  });
});

describe('colour labels and minimum area', () => {
  it('takes the nearest palette colour despite jitter and gradient, none when far from all', () => {
    const px = (r: number, g: number, b: number) => labelColours(Uint8Array.from([r, g, b]), 1, 1)[0];
    assert.equal(COLOURS[px(224, 26, 26)!], 'red');
    assert.equal(COLOURS[px(214, 214, 214)!], 'white'); // white darkened by 10 %
    assert.equal(COLOURS[px(126, 50, 178)!], 'purple');
    assert.equal(px(128, 255, 255), -1); // cyan is in no palette
  });
  it('scales with the linear image size from 20 % of the smallest native object', () => {
    assert.ok(Math.abs(NATIVE_MIN_OBJECT_AREA - 869.1) < 0.1);
    assert.ok(Math.abs(minObjectArea(128, 128) - 173.8) < 0.1);
    assert.ok(Math.abs(minObjectArea(512, 512) - 4 * 173.8) < 0.5);
    assert.ok(minObjectArea(512, 512) < NATIVE_MIN_OBJECT_AREA); // a native-size repeat still counts at 16x area
  });
  it('classifies fill ratios between the ideal values', () => {
    assert.equal(classifyFill(0.5), 'triangle');
    assert.equal(classifyFill(0.63), 'triangle');
    assert.equal(classifyFill(0.785), 'circle');
    assert.equal(classifyFill(0.88), 'circle');
    assert.equal(classifyFill(0.97), 'square');
  });
});

/** Deterministic speckle: replaces a fraction of the pixels by a given colour (a small LCG picks them). */
function speckle(rgb: Uint8Array, fraction: number, colour: readonly number[], seed = 7): Uint8Array {
  const out = rgb.slice();
  let state = seed >>> 0;
  for (let i = 0; i < out.length / 3; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    if (state / 2 ** 32 < fraction) for (let c = 0; c < 3; c++) out[3 * i + c] = Math.round(colour[c]! * 255);
  }
  return out;
}

describe('cleanMask', () => {
  it('fills holes, joins speckles and keeps separate objects apart', () => {
    const w = 40;
    const h = 20;
    const mask = new Uint8Array(w * h);
    const set = (x: number, y: number) => (mask[y * w + x] = 1);
    for (let y = 2; y < 12; y++) for (let x = 2; x < 12; x++) if (x === 2 || x === 11 || y === 2 || y === 11) set(x, y); // ring
    for (let y = 2; y < 12; y += 2) for (let x = 20; x < 30; x += 2) set(x, y); // dots 1 px apart
    set(36, 15); // a lone pixel 6 px away from the dots
    const out = cleanMask(mask, w, h);
    const at = (x: number, y: number) => out[y * w + x];
    assert.equal(at(6, 6), 1); // ring interior filled
    assert.equal(at(21, 3), 1); // gaps between dots joined
    assert.equal(at(15, 6), 0); // the 8 px gap between ring and dots stays open
    assert.equal(at(36, 15), 1);
    assert.equal(at(33, 15), 0);
    let n = 0;
    for (const v of out) n += v;
    assert.equal(n, 100 + 9 * 9 + 1); // filled ring, the dots' 9x9 hull, the lone pixel
  });
});

describe('analyseImage', () => {
  const N = 128;
  it('finds one object of each shape, also rotated, with the expected fill ratios', () => {
    const cases: [Shape, number, number][] = [
      // shape, expected oriented fill, tolerance
      [{ shape: 'circle', colour: 'red', cx: 60, cy: 70, extent: 50 }, Math.PI / 4, 0.03],
      [{ shape: 'square', colour: 'green', cx: 64, cy: 64, extent: 48, angle: 8 }, 1, 0.06],
      [{ shape: 'triangle', colour: 'yellow', cx: 70, cy: 60, extent: 60, angle: -6 }, 0.5, 0.04],
      [{ shape: 'square', colour: 'black', cx: 50, cy: 50, extent: 45 }, 1, 0.03],
    ];
    for (const [s, fill, tol] of cases) {
      const img = draw(N, s.colour === 'black' ? 'white' : 'blue', [s]);
      const a = analyseImage(img, N, N, { colour: s.colour, shape: s.shape });
      assert.equal(a.count, 1, `${s.shape}`);
      assert.equal(a.components[0]!.shape, s.shape);
      assert.equal(a.correct, true);
      assert.ok(Math.abs(a.components[0]!.orientedFill - fill) < tol, `${s.shape}: fill ${a.components[0]!.orientedFill}`);
      const c = a.components[0]!;
      assert.ok(Math.abs(c.centre.x - s.cx) < 2 && (s.shape === 'triangle' || Math.abs(c.centre.y - s.cy) < 2));
      assert.equal(a.background, s.colour === 'black' ? 'white' : 'blue');
      assert.ok(c.solidity > 0.93, `${s.shape}: solidity ${c.solidity}`);
      assert.ok(Math.abs(c.aspect - (s.shape === 'triangle' ? 2 / Math.sqrt(3) : 1)) < 0.06, `${s.shape}: aspect ${c.aspect}`);
    }
  });

  it('reads a square with bites out of its outline as a square from its convex hull', () => {
    const bites: Shape[] = [[40, 30], [64, 88], [88, 60], [40, 75]].map(([cx, cy]) => ({ shape: 'circle', colour: 'orange', cx: cx!, cy: cy!, extent: 14 }));
    const img = draw(N, 'orange', [{ shape: 'square', colour: 'green', cx: 64, cy: 60, extent: 56 }, ...bites], 0);
    const a = analyseImage(img, N, N, { colour: 'green', shape: 'square' });
    const c = a.components[0]!;
    assert.equal(a.count, 1);
    assert.ok(c.orientedFill < 0.89, `area fill ${c.orientedFill} would read as a disc`);
    assert.ok(c.hullFill > 0.97, `hull fill ${c.hullFill}`);
    assert.ok(c.solidity > 0.85 && c.solidity < 0.95, `solidity ${c.solidity}`);
    assert.equal(a.correct, true);
  });

  it('calls two merged objects one irregular object, not a correct one', () => {
    const img = draw(N, 'blue', [
      { shape: 'circle', colour: 'red', cx: 40, cy: 64, extent: 44 },
      { shape: 'circle', colour: 'red', cx: 88, cy: 64, extent: 44 },
      { shape: 'square', colour: 'red', cx: 64, cy: 64, extent: 8 }, // a thin bridge between them
    ]);
    const a = analyseImage(img, N, N, { colour: 'red', shape: 'circle' });
    assert.equal(a.count, 1);
    assert.ok(Math.abs(a.components[0]!.orientedFill - 0.76) < 0.03, `fill ${a.components[0]!.orientedFill}`); // like a disc
    assert.ok(Math.abs(a.components[0]!.aspect - 92 / 44) < 0.1, `aspect ${a.components[0]!.aspect}`);
    assert.equal(a.components[0]!.shape, 'irregular');
    assert.equal(a.correct, false);
  });

  it('reports a rotated square as a square although its axis-aligned fill looks like a disc', () => {
    const img = draw(N, 'gray', [{ shape: 'square', colour: 'blue', cx: 64, cy: 64, extent: 56, angle: 10 }]);
    const a = analyseImage(img, N, N, { colour: 'blue', shape: 'square' });
    assert.ok(Math.abs(a.components[0]!.fill - 0.745) < 0.03, `axis-aligned fill ${a.components[0]!.fill}`);
    assert.equal(a.components[0]!.angle, 10);
    assert.equal(a.correct, true);
  });

  it('counts two and three objects, largest first, and is then not correct', () => {
    const two = draw(N, 'purple', [
      { shape: 'circle', colour: 'white', cx: 32, cy: 32, extent: 40 },
      { shape: 'circle', colour: 'white', cx: 92, cy: 90, extent: 48 },
    ]);
    const a = analyseImage(two, N, N, { colour: 'white', shape: 'circle' });
    assert.equal(a.count, 2);
    assert.equal(a.correct, false);
    assert.ok(a.components[0]!.area > a.components[1]!.area);
    assert.deepEqual(a.components.map((c) => c.shape), ['circle', 'circle']);

    const size = 256;
    const three = draw(size, 'orange', [
      { shape: 'triangle', colour: 'blue', cx: 50, cy: 60, extent: 60 },
      { shape: 'triangle', colour: 'blue', cx: 180, cy: 70, extent: 70, angle: 5 },
      { shape: 'square', colour: 'blue', cx: 120, cy: 190, extent: 60 },
    ]);
    const b = analyseImage(three, size, size, { colour: 'blue', shape: 'triangle' });
    assert.equal(b.count, 3);
    assert.deepEqual(b.components.map((c) => c.shape).sort(), ['square', 'triangle', 'triangle']);
    assert.equal(b.correct, false);
  });

  it('ignores other colours and specks below the minimum area', () => {
    const img = draw(N, 'blue', [
      { shape: 'circle', colour: 'red', cx: 64, cy: 64, extent: 50 },
      { shape: 'circle', colour: 'green', cx: 20, cy: 20, extent: 30 },
      { shape: 'square', colour: 'red', cx: 115, cy: 115, extent: 10 }, // 100 px < 174 px
    ]);
    const a = analyseImage(img, N, N, { colour: 'red', shape: 'circle' });
    assert.equal(a.count, 1);
    assert.equal(a.correct, true);
    assert.equal(analyseImage(img, N, N, { colour: 'red', shape: 'circle', minArea: 50 }).count, 2);
    assert.equal(analyseImage(img, N, N, { colour: 'red', shape: 'square' }).correct, false); // right count, wrong shape
  });

  it('finds nothing in an image without the asked colour', () => {
    const img = draw(N, 'gray', [{ shape: 'circle', colour: 'red', cx: 64, cy: 64, extent: 50 }]);
    const a = analyseImage(img, N, N, { colour: 'yellow', shape: 'circle' });
    assert.equal(a.count, 0);
    assert.equal(a.correct, false);
    assert.equal(a.sharpness, null);
  });

  it('measures sharpness near 1 for a hard edge, whatever the colours, and lower when blurred', () => {
    const pairs: [ColourName, ColourName][] = [['red', 'blue'], ['white', 'gray'], ['black', 'yellow']];
    const values: number[] = [];
    for (const [colour, bg] of pairs) {
      const img = draw(N, bg, [{ shape: 'circle', colour, cx: 64, cy: 64, extent: 60 }]);
      const sharp = analyseImage(img, N, N, { colour, shape: 'circle' }).sharpness!;
      const b1 = analyseImage(blur(img, N, 1), N, N, { colour, shape: 'circle' });
      const b3 = analyseImage(blur(img, N, 3), N, N, { colour, shape: 'circle' });
      assert.ok(sharp > 0.75 && sharp < 1.1, `${colour} on ${bg}: ${sharp}`);
      assert.equal(b3.count, 1); // blur changes the edge, not the count
      assert.ok(b1.sharpness! < 0.8 * sharp, `radius 1: ${b1.sharpness} vs ${sharp}`);
      assert.ok(b3.sharpness! < 0.6 * b1.sharpness!, `radius 3: ${b3.sharpness} vs ${b1.sharpness}`);
      assert.ok(b3.sharpness! > 0.08 && b3.sharpness! < 0.25, `radius 3 (7 px ramp): ${b3.sharpness}`);
      values.push(sharp);
    }
    // Normalised by contrast: the three colour pairs (contrasts from 0.45 to 1.5) agree.
    assert.ok(Math.max(...values) - Math.min(...values) < 0.15, `${values}`);
  });

  it('sees a speckled object as one object of its shape, with more texture noise than a clean one', () => {
    const clean = draw(N, 'yellow', [{ shape: 'square', colour: 'blue', cx: 64, cy: 64, extent: 60, angle: 4 }]);
    const noisy = speckle(speckle(clean, 0.15, PALETTE.yellow, 3), 0.05, [0.3, 0.9, 0.9], 11);
    const a = analyseImage(clean, N, N, { colour: 'blue', shape: 'square' });
    const b = analyseImage(noisy, N, N, { colour: 'blue', shape: 'square' });
    assert.equal(b.count, 1);
    assert.equal(b.correct, true);
    assert.ok(Math.abs(b.components[0]!.area - a.components[0]!.area) < 0.03 * a.components[0]!.area, `${b.components[0]!.area} vs ${a.components[0]!.area}`);
    assert.ok(a.noise < 0.01, `clean: ${a.noise}`);
    assert.ok(b.noise > 0.1, `speckled: ${b.noise}`);
  });

  it('is deterministic and rejects bad input naming the parameter', () => {
    const img = draw(64, 'blue', [{ shape: 'square', colour: 'red', cx: 32, cy: 32, extent: 24 }]);
    assert.deepEqual(analyseImage(img, 64, 64, { colour: 'red', shape: 'square' }), analyseImage(img, 64, 64, { colour: 'red', shape: 'square' }));
    const check = (fn: () => unknown, parameter: string) =>
      assert.throws(fn, (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && e.parameter === parameter);
    check(() => analyseImage(img, 64, 63, { colour: 'red', shape: 'square' }), 'rgb');
    check(() => analyseImage(img, 64, 64, { colour: 'purple', shape: 'square' }), 'colour');
    check(() => analyseImage(img, 64, 64, { colour: 'red', shape: 'star' }), 'shape');
  });
});
