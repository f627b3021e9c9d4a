import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRandom } from '../src/core/random/index.ts';
import { planGeometry } from '../src/core/methods/geometry.ts';
import {
  cropLatent,
  downscaleLatent,
  extractPatches,
  latentLayout,
  padLatent,
  patchLayout,
  patchesToLatent,
  relocatePatches,
} from '../src/core/methods/polyphase.ts';
import { drawGroupPermutations, drawPermutations, interactionGroups, shuffleToUnits, unshuffleFromUnits } from '../src/core/methods/pixel-interaction.ts';
import { applyEpsGuidance, applyX0Guidance, structureWeightAt } from '../src/core/methods/guidance.ts';
import { buildMask, maskColumns, resizeBilinear } from '../src/core/methods/mask.ts';
import { WindowCanvas, extractWindow, placeWindows, planAxis, planWindows } from '../src/core/methods/windows.ts';

function ramp(n: number, seed = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = Math.sin(i * 0.731 + seed) * 3 + i * 1e-4;
  return a;
}

describe('geometry', () => {
  it('plans SD 1.x at 2048 px: 4 x 4 patches of 64', () => {
    const g = planGeometry({ height: 256, width: 256, nativeHeight: 64, nativeWidth: 64 });
    assert.deepEqual(
      [g.rows, g.cols, g.count, g.patchHeight, g.patchWidth, g.paddedHeight, g.paddedWidth],
      [4, 4, 16, 64, 64, 256, 256],
    );
  });
  it('plans odd and non-square sizes with padding at bottom/right', () => {
    const g = planGeometry({ height: 125, width: 75, nativeHeight: 64, nativeWidth: 64 });
    // n_h = round(125/64) = 2, p_h = ceil(62.5) = 63 -> 64; n_w = 1, p_w = 75 -> 80
    assert.deepEqual([g.rows, g.cols, g.patchHeight, g.patchWidth, g.paddedHeight, g.paddedWidth], [2, 1, 64, 80, 128, 80]);
    const s = planGeometry({ height: 96, width: 200, nativeHeight: 48, nativeWidth: 48, latentMultiple: 4 });
    assert.deepEqual([s.rows, s.cols, s.patchHeight, s.patchWidth, s.paddedHeight, s.paddedWidth], [2, 4, 48, 52, 96, 208]);
    const small = planGeometry({ height: 40, width: 30, nativeHeight: 64, nativeWidth: 64 });
    assert.deepEqual([small.count, small.patchHeight, small.patchWidth], [1, 40, 32]);
  });
  it('rejects bad sizes naming the parameter', () => {
    assert.throws(() => planGeometry({ height: 0, width: 64, nativeHeight: 64, nativeWidth: 64 }), /Invalid height/);
    assert.throws(
      () => planGeometry({ height: 64, width: 64, nativeHeight: 60, nativeWidth: 64 }),
      /nativeHeight\/nativeWidth/,
    );
  });
});

describe('polyphase', () => {
  const geo = planGeometry({ height: 24, width: 36, nativeHeight: 8, nativeWidth: 12, latentMultiple: 4, channels: 3 });
  it('patch a*n_w+b is the sub-lattice X[:, a::n_h, b::n_w]', () => {
    assert.deepEqual([geo.rows, geo.cols, geo.patchHeight, geo.patchWidth], [3, 3, 8, 12]);
    const x = ramp(3 * 24 * 36);
    const p = extractPatches(x, geo);
    const size = 3 * 8 * 12;
    for (const [a, b, c, y, xx] of [
      [0, 0, 0, 0, 0],
      [1, 2, 2, 5, 7],
      [2, 1, 1, 7, 11],
    ]) {
      assert.equal(p[(a * 3 + b) * size + (c * 8 + y) * 12 + xx], x[(c * 24 + 3 * y + a) * 36 + 3 * xx + b]);
    }
  });
  it('relocation is the exact inverse of extraction (and vice versa)', () => {
    const x = ramp(3 * 24 * 36, 2);
    assert.deepEqual(relocatePatches(extractPatches(x, geo), geo), x);
    const patches = ramp(9 * 3 * 8 * 12, 3);
    assert.deepEqual(extractPatches(relocatePatches(patches, geo), geo), patches);
  });
  it('layouts: element e of patch o at base[o] + offset[e] of the latent (latentLayout) or of the patches (patchLayout); shuffling from either is shuffling the extracted patches', () => {
    // 3 x 3 patches of 3 x 8 x 12, and 2 x 3 of 2 x 5 x 4 (rows and columns differ).
    const other = planGeometry({ height: 10, width: 12, nativeHeight: 5, nativeWidth: 4, latentMultiple: 1, channels: 2 });
    assert.deepEqual([other.rows, other.cols, other.paddedHeight, other.paddedWidth], [2, 3, 10, 12]);
    for (const g of [geo, other]) {
      const size = g.channels * g.patchHeight * g.patchWidth;
      const x = ramp(g.channels * g.height * g.width, 5);
      const patches = extractPatches(x, g);
      const inLatent = latentLayout(g);
      const own = patchLayout(g.count, size);
      for (let o = 0; o < g.count; o++) {
        for (let e = 0; e < size; e++) {
          assert.equal(x[inLatent.base[o]! + inLatent.offset[e]!], patches[o * size + e], `patch ${o}, element ${e}`);
          assert.equal(own.base[o]! + own.offset[e]!, o * size + e);
        }
      }
      const perm = drawPermutations(createRandom(2, 'permutation'), size, g.count);
      for (const p of [perm, null]) {
        const expected = shuffleToUnits(patches, p, g.count, size, 0.25);
        assert.deepEqual(shuffleToUnits(x, p, g.count, size, 0.25, undefined, inLatent), expected);
        assert.deepEqual(shuffleToUnits(patches, p, g.count, size, 0.25, undefined, own), expected);
      }
    }
    const padded = planGeometry({ height: 13, width: 7, nativeHeight: 8, nativeWidth: 8, latentMultiple: 4, channels: 2 });
    assert.throws(() => latentLayout(padded), /the geometry pads the latent/);
  });
  it('pads by edge replication and crops back; patchesToLatent crops the padding', () => {
    const g = planGeometry({ height: 13, width: 7, nativeHeight: 8, nativeWidth: 8, latentMultiple: 4, channels: 2 });
    assert.deepEqual([g.paddedHeight, g.paddedWidth], [16, 8]);
    const x = ramp(2 * 13 * 7);
    const padded = padLatent(x, g);
    assert.equal(padded[(1 * 16 + 15) * 8 + 7], x[(1 * 13 + 12) * 7 + 6]);
    assert.deepEqual(cropLatent(padded, 2, 16, 8, 13, 7), x);
    const patches = extractPatches(padded, g);
    assert.deepEqual(patchesToLatent(patches, g), x);
  });
  it('N = 1: patchesToLatent is the identity (initial noise equals plain text-to-image noise)', () => {
    const g = planGeometry({ height: 64, width: 64, nativeHeight: 64, nativeWidth: 64 });
    const noise = createRandom(7, 'noise').randn([1, 4, 64, 64]);
    assert.deepEqual(patchesToLatent(noise, g), noise);
  });
  it('downscales by block averages', () => {
    const g = planGeometry({ height: 4, width: 4, nativeHeight: 2, nativeWidth: 2, latentMultiple: 1, channels: 1 });
    const x = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    assert.deepEqual(Array.from(downscaleLatent(x, g)), [3.5, 5.5, 11.5, 13.5]);
  });
});

describe('pixel interaction', () => {
  it('draws a permutation of N for every element, deterministically per seed', () => {
    const n = 16;
    const e = 4096;
    const perm = drawPermutations(createRandom(3, 'permutation'), e, n);
    for (let k = 0; k < e; k++) {
      const seen = new Set(perm.subarray(k * n, (k + 1) * n));
      assert.equal(seen.size, n);
      for (const v of seen) assert.ok(v < n);
    }
    assert.deepEqual(drawPermutations(createRandom(3, 'permutation'), e, n), perm);
    assert.notDeepEqual(drawPermutations(createRandom(4, 'permutation'), e, n), perm);
    // Uniform: unit 0 receives each patch about e/n = 256 times.
    const counts = new Array(n).fill(0);
    for (let k = 0; k < e; k++) counts[perm[k * n]]++;
    for (const c of counts) assert.ok(c > 190 && c < 330, `count ${c}`);
  });
  it('draws exactly what an element-by-element Fisher-Yates with one randint per group of swaps draws, for any N', () => {
    // Written here from the documented algorithm: per element, identity, then k = N-1 down to 1 swap(k, r_k), the r_k of
    // a group read as mixed-radix digits of one randint(product of the group's k + 1), groups of product <= 2^32.
    function reference(seed: number, elements: number, n: number): number[] {
      const rng = createRandom(seed, 'permutation');
      const groups: number[][] = [];
      for (let k = n - 1, product = Infinity; k > 0; k--) {
        if (product * (k + 1) > 2 ** 32) {
          groups.push([]);
          product = 1;
        }
        groups[groups.length - 1]!.push(k);
        product *= k + 1;
      }
      const out: number[] = [];
      for (let e = 0; e < elements; e++) {
        const row = Array.from({ length: n }, (_, k) => k);
        for (const ks of groups) {
          let r = rng.randint(ks.reduce((p, k) => p * (k + 1), 1));
          for (const k of ks) {
            const j = r % (k + 1);
            r = Math.floor(r / (k + 1));
            [row[k], row[j]] = [row[j]!, row[k]!];
          }
        }
        out.push(...row);
      }
      return out;
    }
    // N up to 7: one table; 8 to 11: two tables composed; 12 and 16 the swaps (16: two groups); 300: a Uint16Array.
    // 9000 elements cross a pass boundary (8192).
    for (const [n, elements] of [[1, 50], [2, 300], [4, 9000], [7, 300], [8, 300], [9, 9000], [11, 300], [12, 300], [16, 9000], [300, 20]] as const) {
      const perm = drawPermutations(createRandom(7, 'permutation'), elements, n);
      assert.equal(perm instanceof Uint16Array, n > 256, `array type for N = ${n}`);
      assert.deepEqual(Array.from(perm), reference(7, elements, n), `N = ${n}`);
    }
    // A source without the one-pass randintsInto is asked one randint at a time, for the same permutations.
    const g = createRandom(7, 'permutation');
    const plain = { randn: (shape: readonly number[]) => g.randn(shape), randint: (k: number) => g.randint(k), uniform: () => g.uniform() };
    assert.deepEqual(Array.from(drawPermutations(plain, 9000, 4)), reference(7, 9000, 4));
    // A reused buffer of another stride's length is not written: a new one is returned.
    const buffer = new Uint8Array(4 * 100);
    assert.equal(drawPermutations(createRandom(7, 'permutation'), 100, 4, buffer), buffer);
    assert.notEqual(drawPermutations(createRandom(7, 'permutation'), 100, 5, buffer), buffer);
  });
  it('un-shuffle inverts shuffle; shuffle moves values between patches', () => {
    const n = 6;
    const size = 500;
    const patches = ramp(n * size);
    const perm = drawPermutations(createRandom(1, 'permutation'), size, n);
    const units = shuffleToUnits(patches, perm, n, size);
    assert.notDeepEqual(units[0], patches.subarray(0, size));
    assert.deepEqual(unshuffleFromUnits(units, perm, n, size), patches);
    for (const u of units) assert.equal(u.byteOffset + u.byteLength, u.buffer.byteLength); // own buffers
    const scaled = shuffleToUnits(patches, perm, n, size, 0.5);
    assert.equal(scaled[2][17], units[2][17] * 0.5);
  });
  it("interaction groups 'lines': a 3 x 3 grid's rows, then its columns; 'all' and one-line grids: one group", () => {
    assert.deepEqual(interactionGroups('lines', 3, 3, 0), [[0, 1, 2], [3, 4, 5], [6, 7, 8]]);
    assert.deepEqual(interactionGroups('lines', 3, 3, 1), [[0, 3, 6], [1, 4, 7], [2, 5, 8]]);
    assert.deepEqual(interactionGroups('lines', 2, 3, 2), [[0, 1, 2], [3, 4, 5]]);
    assert.deepEqual(interactionGroups('lines', 2, 3, 3), [[0, 3], [1, 4], [2, 5]]);
    assert.deepEqual(interactionGroups('all', 2, 2, 1), [[0, 1, 2, 3]]);
    assert.deepEqual(interactionGroups('lines', 1, 4, 1), [[0, 1, 2, 3]]);
  });
  it('permutations within groups: every unit is fed from its own group, uniformly; one group of all draws what drawPermutations draws', () => {
    const e = 3000;
    const groups = interactionGroups('lines', 3, 3, 1);
    const perm = drawGroupPermutations(createRandom(5, 'permutation'), e, 9, groups);
    const counts = new Map<string, number>();
    for (let k = 0; k < e; k++) {
      const row = perm.subarray(k * 9, (k + 1) * 9);
      assert.equal(new Set(row).size, 9, 'a permutation of the 9 patches');
      for (const g of groups) for (const j of g) {
        assert.ok(g.includes(row[j]!), `unit ${j} fed from patch ${row[j]} outside its group ${g}`);
        counts.set(`${j}<${row[j]}`, (counts.get(`${j}<${row[j]}`) ?? 0) + 1);
      }
    }
    // 27 (unit, source) pairs, each about e / 3 = 1000 times.
    assert.equal(counts.size, 27);
    for (const [pair, c] of counts) assert.ok(c > 880 && c < 1120, `${pair}: ${c}`);
    assert.deepEqual(drawGroupPermutations(createRandom(5, 'permutation'), e, 9, [[0, 1, 2, 3, 4, 5, 6, 7, 8]]), drawPermutations(createRandom(5, 'permutation'), e, 9));
    const patches = ramp(9 * e);
    assert.deepEqual(unshuffleFromUnits(shuffleToUnits(patches, perm, 9, e), perm, 9, e), patches);
  });
});

describe('structure guidance', () => {
  it('cosine schedule: w_max at t = 1000, half at 500, 0 at 0; gamma applies', () => {
    assert.equal(structureWeightAt('cosine', 0.8, 1, 1000), 0.8);
    assert.ok(Math.abs(structureWeightAt('cosine', 0.8, 1, 500) - 0.4) < 1e-12);
    assert.ok(Math.abs(structureWeightAt('cosine', 0.8, 2, 500) - 0.2) < 1e-12);
    assert.equal(structureWeightAt('cosine', 0.8, 1, 0), 0);
    assert.equal(structureWeightAt('constant', 0.3, 1, 17), 0.3);
  });
  it('eps space: eps^i + w M (K - eps^i), key patch untouched', () => {
    const eps = Float32Array.from([1, 2, 3, 4, /* patch 1 */ 10, 20, 30, 40]);
    const key = Float32Array.from([0, 0, 1, 1]);
    const mask = Float32Array.from([1, 0.5]); // plane of 2, 2 channels
    applyEpsGuidance(eps, key, mask, 0.5, 2, 2, 2);
    assert.deepEqual(Array.from(eps), [1, 2, 3, 4, 5, 15, 15.5, 30.25]);
  });
  it('x0 space: the guided denoised estimate is x0^i + w M (X - x0^i)', () => {
    const n = 3;
    const size = 8;
    const eps = ramp(n * size, 4);
    const x = ramp(n * size, 5);
    const keyX0 = ramp(size, 6);
    const mask = Float32Array.from([0.2, 1, 0, 0.7]);
    const [alpha, sigma, w] = [0.9, 1.7, 0.6];
    const guided = Float32Array.from(eps);
    applyX0Guidance(guided, x, keyX0, mask, w, alpha, sigma, n, 2, 4);
    for (let i = 1; i < n; i++) {
      for (let e = 0; e < size; e++) {
        const j = i * size + e;
        const x0 = (x[j] - sigma * eps[j]) / alpha;
        const want = x0 + w * mask[e % 4] * (keyX0[e] - x0);
        assert.ok(Math.abs((x[j] - sigma * guided[j]) / alpha - want) < 1e-5);
      }
    }
    assert.deepEqual(guided.subarray(0, size), eps.subarray(0, size));
  });
});

describe('mask', () => {
  it('bilinear resize matches torch (align_corners=False)', () => {
    const out = resizeBilinear(Float32Array.from([0, 1, 2, 3]), 2, 2, 4, 4);
    assert.deepEqual(Array.from(out), [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3]);
  });
  it('averages tokens and layers, min-max normalises, applies gamma and threshold', () => {
    const tokens = 3;
    // Layer A 2x2: token means over tokens [1, 2] are [0, 1, 2, 3]; layer B 1x1 constant 5.
    const a = new Float32Array(4 * tokens);
    [0, 1, 2, 3].forEach((v, q) => {
      a[q * tokens] = 100;
      a[q * tokens + 1] = v - 1;
      a[q * tokens + 2] = v + 1;
    });
    const b = Float32Array.from([9, 5, 5]);
    const maps = [
      { layer: 'up_blocks.1/attn2', height: 2, width: 2, tokens, data: a },
      { layer: 'up_blocks.2/attn2', height: 1, width: 1, tokens, data: b },
    ];
    const m = buildMask(maps, 4, 4, { tokens: [1, 2], layers: [], gamma: 1, threshold: 0 });
    // mean of layers = (resized A + 5) / 2 -> min-max of resized A = resized / 3
    const expected = [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3].map((v) => v / 3);
    assert.ok(m.mask);
    m.mask.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6));
    const g = buildMask(maps, 4, 4, { tokens: [1, 2], layers: ['up_blocks.1'], gamma: 2, threshold: 0.2 });
    assert.ok(g.mask);
    g.mask.forEach((v, i) => {
      const want = expected[i] ** 2;
      assert.ok(Math.abs(v - (want < 0.2 ? 0 : want)) < 1e-6, `${i}: ${v}`);
    });
  });
  it('maps averaged over the mask tokens on the device give the same mask; averaged over other tokens, an error', () => {
    // The maps of the test above, as the probe graph returns them: layer A's token means [0, 1, 2, 3], B's 5.
    const tokens = 3;
    const averaged = (meanOver: number[]) => [
      { layer: 'up_blocks.1/attn2', height: 2, width: 2, tokens, meanOver, data: Float32Array.from([0, 1, 2, 3]) },
      { layer: 'up_blocks.2/attn2', height: 1, width: 1, tokens, meanOver, data: Float32Array.from([5]) },
    ];
    // Token 7 is past the text length, so the mask reads [1, 2] (maskColumns), which the device averaged.
    const m = buildMask(averaged([1, 2]), 4, 4, { tokens: [1, 2, 7], layers: [], gamma: 1, threshold: 0 });
    const expected = [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3].map((v) => v / 3);
    assert.ok(m.mask);
    m.mask.forEach((v, i) => assert.ok(Math.abs(v - expected[i]) < 1e-6, `${i}: ${v}`));
    assert.deepEqual(maskColumns([1, 2, 7, -1, 1.5, 2], 3), [1, 2, 2]);
    assert.throws(
      () => buildMask(averaged([1]), 4, 4, { tokens: [1, 2], layers: [], gamma: 1, threshold: 0 }),
      /attention map up_blocks\.1\/attn2 is averaged over tokens \[1\], the mask reads \[1, 2\]/,
    );
    const wrongSize = [{ ...averaged([1, 2])[0]!, data: new Float32Array(12) }];
    assert.throws(() => buildMask(wrongSize, 4, 4, { tokens: [1, 2], layers: [], gamma: 1, threshold: 0 }), /has 12 values, expected 2x2/);
  });
  it('falls back to M = 1 with a warning when there is nothing to use', () => {
    const none = buildMask(undefined, 4, 4, { tokens: [1], layers: [], gamma: 1, threshold: 0 });
    assert.equal(none.mask, null);
    assert.match(none.warning ?? '', /no cross-attention maps/);
    const map = { layer: 'x', height: 1, width: 1, tokens: 2, data: Float32Array.from([0.5, 0.5]) };
    assert.match(buildMask([map], 2, 2, { tokens: [], layers: [], gamma: 1, threshold: 0 }).warning ?? '', /token/);
    assert.match(buildMask([map], 2, 2, { tokens: [1], layers: ['up'], gamma: 1, threshold: 0 }).warning ?? '', /layer/);
    const flat = buildMask([map], 2, 2, { tokens: [1], layers: [], gamma: 1, threshold: 0 });
    assert.deepEqual([flat.mask, flat.warning], [null, undefined]);
  });
});

describe('windows', () => {
  it('counts windows: SD 1.x 2048 px 7 x 7, SDXL 2048 px 3 x 3, native 1', () => {
    const sd = planWindows(planGeometry({ height: 256, width: 256, nativeHeight: 64, nativeWidth: 64 }));
    assert.deepEqual([sd.count, sd.vertical.bases, sd.vertical.jitter], [49, [0, 32, 64, 96, 128, 160, 192], 8]);
    const xl = planWindows(planGeometry({ height: 256, width: 256, nativeHeight: 128, nativeWidth: 128 }));
    assert.deepEqual([xl.count, xl.horizontal.bases, xl.horizontal.jitter], [9, [0, 64, 128], 16]);
    const native = planWindows(planGeometry({ height: 64, width: 64, nativeHeight: 64, nativeWidth: 64 }));
    assert.deepEqual([native.count, native.vertical.jitter], [1, 0]);
    assert.deepEqual(planAxis(80, 64, 32).bases, [0, 16]); // last aligned to the end
    assert.deepEqual(planAxis(56, 64, 32), { size: 56, window: 56, stride: 32, jitter: 0, bases: [0] });
  });
  it('jitter stays in bounds and every latent position is covered at every step', () => {
    const cases = [
      { height: 256, width: 256, nativeHeight: 64, nativeWidth: 64 },
      { height: 125, width: 75, nativeHeight: 64, nativeWidth: 64 },
      { height: 40, width: 200, nativeHeight: 32, nativeWidth: 32, latentMultiple: 4 },
      { height: 256, width: 192, nativeHeight: 128, nativeWidth: 128 },
    ];
    const rng = createRandom(11, 'jitter');
    for (const input of cases) {
      const geo = planGeometry(input);
      const grid = planWindows(geo);
      const { vertical: v, horizontal: h } = grid;
      const seen = new Set<number>();
      for (let step = 0; step < 30; step++) {
        const placements = placeWindows(grid, rng);
        assert.equal(placements.length, grid.count);
        const canvas = new WindowCanvas(1, geo.height, geo.width);
        for (const p of placements) {
          const r = Math.floor(p.index / h.bases.length);
          const c = p.index % h.bases.length;
          const dy = p.top - v.bases[r];
          const dx = p.left - h.bases[c];
          for (const [d, i, axis] of [
            [dy, r, v],
            [dx, c, h],
          ] as const) {
            const last = axis.bases.length - 1;
            const J = axis.jitter;
            const [lo, hi] = last === 0 ? [0, 0] : i === 0 ? [-J, 0] : i === last ? [0, J] : [-J, J];
            assert.ok(d >= lo && d <= hi, `shift ${d} of window ${i} outside [${lo}, ${hi}]`);
            seen.add(d);
          }
          canvas.add(new Float32Array(v.window * h.window), p.top, p.left, v.window, h.window);
        }
        const cov = canvas.coverageMap();
        for (let q = 0; q < cov.length; q++) assert.ok(cov[q] > 0, `uncovered ${q}`);
      }
      if (v.jitter > 0) assert.ok(seen.size > 3, 'jitter actually moves windows');
    }
  });
  it('extracts windows with zero padding outside and fuses by coverage', () => {
    const src = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9]); // 1 x 3 x 3
    assert.deepEqual(Array.from(extractWindow(src, 1, 3, 3, -1, 1, 2, 3, 2)), [0, 0, 0, 4, 6, 0]);
    const canvas = new WindowCanvas(1, 2, 3);
    canvas.add(Float32Array.from([1, 1, 1, 1]), 0, 0, 2, 2);
    canvas.add(Float32Array.from([3, 3, 3, 3]), 0, 1, 2, 2);
    assert.deepEqual(Array.from(canvas.result()), [1, 2, 3, 1, 2, 3]);
  });
});
