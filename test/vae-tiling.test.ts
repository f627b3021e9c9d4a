import assert from 'node:assert/strict';
import { test } from 'node:test';
import { axisWeights, planAxis, planTiles } from '../src/core/vae/tiling.ts';

test('tile plans cover the axis with the last tile aligned to the end', () => {
  assert.deepEqual(planAxis(64, 64, 16), [{ start: 0, end: 64 }]);
  assert.deepEqual(planAxis(40, 64, 16), [{ start: 0, end: 40 }]);
  assert.deepEqual(planAxis(128, 64, 16), [{ start: 0, end: 64 }, { start: 48, end: 112 }, { start: 64, end: 128 }]);
  assert.deepEqual(planAxis(100, 64, 16), [{ start: 0, end: 64 }, { start: 36, end: 100 }]);
  assert.equal(planTiles(128, 100, { tileSize: 64, overlap: 16 }).length, 6);
  assert.throws(() => planTiles(10, 10, { tileSize: 64, overlap: 40 }), /Invalid vaeTileOverlap/);
});

test('blend weights sum to exactly 1 at every pixel, even where three tiles overlap', () => {
  for (const [size, tile, overlap] of [[128, 64, 16], [114, 64, 16], [300, 32, 8], [70, 64, 16]] as const) {
    const tiles = planAxis(size, tile, overlap);
    const scale = 8;
    const w = axisWeights(tiles, size, overlap, scale);
    const sum = new Float64Array(size * scale);
    tiles.forEach((t, i) => w[i]!.forEach((v, k) => (sum[t.start * scale + k] += v)));
    for (let p = 0; p < sum.length; p++) assert.ok(Math.abs(sum[p]! - 1) < 1e-6, `size ${size} pixel ${p}: ${sum[p]}`);
    // At a tile's inner edge its weight is 0 over the margin (overlap / 4 latent px), where padding corrupts it.
    tiles.forEach((t, i) => {
      if (t.start > 0) for (let k = 0; k < Math.floor(overlap / 4) * scale; k++) assert.equal(w[i]![k], 0);
    });
  }
});
