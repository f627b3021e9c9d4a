import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeTiled, encodeTiled, type TiledDecodeOptions, type TiledVaeBackend } from '../src/core/vae/tiled.ts';
import { axisWeights, planAxis, planTiles } from '../src/core/vae/tiling.ts';

test('tile plans cover the axis with the last tile aligned to the end', () => {
  assert.deepEqual(planAxis(64, 64, 16), [{ start: 0, end: 64 }]);
  assert.deepEqual(planAxis(40, 64, 16), [{ start: 0, end: 40 }]);
  assert.deepEqual(planAxis(128, 64, 16), [{ start: 0, end: 64 }, { start: 48, end: 112 }, { start: 64, end: 128 }]);
  assert.deepEqual(planAxis(100, 64, 16), [{ start: 0, end: 64 }, { start: 36, end: 100 }]);
  assert.equal(planTiles(128, 100, { tileSize: 64, overlap: 16 }).length, 6);
  assert.throws(() => planTiles(10, 10, { tileSize: 64, overlap: 40 }), /^AsgdError: Invalid overlap; expected an integer in \[0, 32\] \(at most half the tile size, 64\); received 40\. Use an overlap of at most 32, or a tile size of at least 80$/);
  assert.throws(() => planTiles(10, 10, { tileSize: 0, overlap: 0 }), /^AsgdError: Invalid tileSize; expected an integer >= 8; received 0\. Use a tile size/);
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

/** A local "decoder" (x8 nearest, 3 channels) or "encoder" (/8, 8 channels) without norm layers. */
function plainBackend(scale: number, outChannels: number): TiledVaeBackend {
  const run = async (_x: Float32Array, _c: number, h: number, w: number) => ({ data: new Float32Array(outChannels * h * scale * w * scale), height: h * scale, width: w * scale });
  return { norms: { layers: [] }, run, runStats: async () => ({ stats: new Float32Array() }), runTile: async (x, c, h, w) => ({ ...(await run(x, c, h, w)), stats: new Float32Array() }) };
}

test('decodeTiled and encodeTiled refuse bad options and inputs, naming them, instead of running another mode or reading past the input', async () => {
  const ok: TiledDecodeOptions = { tileSize: 16, overlap: 4, stats: 'exact' };
  const latent = new Float32Array(4 * 32 * 32);
  const decode = (o: Partial<TiledDecodeOptions>, input = latent) => decodeTiled(input, 4, 32, 32, plainBackend(8, 3), { ...ok, ...o } as TiledDecodeOptions);
  await assert.rejects(decode({ tileSize: 0 }), /^AsgdError: Invalid tileSize; expected an integer >= 8; received 0\. Use a tile size/);
  await assert.rejects(decode({ overlap: 9 }), /^AsgdError: Invalid overlap; expected an integer in \[0, 8\] \(at most half the tile size, 16\); received 9\./);
  await assert.rejects(decode({ stats: 'exactly' as never }), /^AsgdError: Invalid stats; expected one of exact, estimate, off; received "exactly"$/);
  await assert.rejects(decode({ attention: 'everywhere' as never }), /^AsgdError: Invalid attention; expected one of auto, global, tile; received "everywhere"$/);
  await assert.rejects(decode({}, latent.subarray(0, 100)), /^AsgdError: Invalid latent; expected 4096 values \(4 channels x 32 x 32\); received 100 values\. /);
  assert.equal((await decode({})).width, 256);
  const image = new Float32Array(3 * 100 * 96);
  await assert.rejects(encodeTiled(image, 100, 96, plainBackend(1 / 8, 8), ok), /^AsgdError: Invalid height; expected a multiple of 8 \(image pixels\); received 100\. /);
  await assert.rejects(encodeTiled(image, 96, 96, plainBackend(1 / 8, 8), ok), /^AsgdError: Invalid image; expected 27648 values \(3 channels x 96 x 96\); received 28800 values\. /);
  await assert.rejects(encodeTiled(image.subarray(0, 3 * 96 * 96), 96, 96, plainBackend(1 / 8, 8), { ...ok, stats: 'none' as never }), /^AsgdError: Invalid stats;/);
});

test('decodeTiled refuses pass limits that would run no pass (it returned an image without data) or make no sense', async () => {
  const layers = [{ name: 'n', groups: 1, epsilon: 1e-6 }];
  const run = async (_x: Float32Array, _c: number, h: number, w: number) => ({ data: new Float32Array(3 * 64 * h * w), height: 8 * h, width: 8 * w });
  const backend: TiledVaeBackend = {
    norms: { layers }, run, runStats: async () => ({ stats: new Float32Array([0, 1]) }), runTile: async (x, c, h, w) => ({ ...(await run(x, c, h, w)), stats: new Float32Array([0, 1]) }),
  };
  const decode = (o: Partial<TiledDecodeOptions>) => decodeTiled(new Float32Array(4 * 32 * 32), 4, 32, 32, backend, { tileSize: 16, overlap: 4, stats: 'exact', ...o });
  await assert.rejects(decode({ maxPasses: 0 }), /^AsgdError: Invalid maxPasses; expected an integer >= 1; received 0\. /);
  await assert.rejects(decode({ maxPasses: 1.5 }), /^AsgdError: Invalid maxPasses; expected an integer >= 1; received 1\.5\. /);
  await assert.rejects(decode({ estimateMaxSize: 0 }), /^AsgdError: Invalid estimateMaxSize; expected an integer >= 1; received 0\. /);
  await assert.rejects(decode({ tolerance: Number.NaN }), /^AsgdError: Invalid tolerance; expected a number >= 0; received NaN\. /);
  const r = await decode({ maxPasses: 1 });
  assert.equal(r.passes, 1);
  assert.equal(r.data.length, 3 * 256 * 256);
});
