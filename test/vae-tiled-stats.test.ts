import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import ort from 'onnxruntime-node';
import { float16ToFloat32, float32ToFloat16 } from '../src/core/float16.ts';
import { chwToRgb8, type RgbImage } from '../src/core/image.ts';
import { StatsAccumulator, downscaleArea, ownedSpans, packAffine, unpackStats, type NormLayer } from '../src/core/vae/norm-stats.ts';
import { decodeTiled, encodeTiled } from '../src/core/vae/tiled.ts';
import { planAxis } from '../src/core/vae/tiling.ts';
import { SMALL_VAE_DECODER, buildGroupNormVaeDecoder, type GroupNormForm } from './fixtures/groupnorm-vae.ts';
import { buildTinyVaeDecoder } from './fixtures/tiny-vae.ts';
import { localBackend } from '../src/node/vae-local.ts';
import { prepareVaeGraphs } from '../src/node/vae-graphs.ts';
import { NORM_AFFINE_INPUT, NORM_REGION_INPUT, NORM_STATS_OUTPUT, derivePrefixGraph, deriveStatsGraph, deriveTileGraph, scanNorms } from '../src/graph/vae-norm-graph.ts';
import { tempDir } from './helpers/models.ts';
import { absDifference } from '../bench/analysis/difference.ts';

const SHIPPED_DECODER = path.resolve(import.meta.dirname, '../models/shapes-128/vae_decoder/model.onnx');
const SHIPPED_ENCODER = path.resolve(import.meta.dirname, '../models/shapes-128/vae_encoder/model.onnx');
const FORMS: GroupNormForm[] = ['instance-norm', 'group-normalization-18', 'group-normalization-21'];

function smallDecoder(form: GroupNormForm, floatType: 'float32' | 'float16' = 'float32'): ModelProto {
  return buildGroupNormVaeDecoder({ seed: 7, floatType, form, ...SMALL_VAE_DECODER });
}

function writeModel(model: ModelProto, name = 'model.onnx'): string {
  const file = path.join(tempDir('vae'), name);
  fs.writeFileSync(file, toBinary(ModelProtoSchema, model));
  return file;
}

/** A latent whose statistics differ across the image: a smooth wave plus a step on the right. */
function stepLatent(h: number, w: number): Float32Array {
  const lat = new Float32Array(4 * h * w);
  for (let c = 0; c < 4; c++) {
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) lat[(c * h + y) * w + x] = Math.sin(0.21 * x + 0.13 * y + c) + (x > (w * 5) / 9 ? (c === 1 ? 1.5 : -0.75) : 0);
  }
  return lat;
}

function diff(a: RgbImage, b: RgbImage): { max: number; mean: number } {
  return absDifference(a.data, b.data);
}

describe('norm statistics maths', () => {
  it('accumulating parts gives the mean and variance of the whole (two-pass float64 reference)', () => {
    const layers: NormLayer[] = [{ name: 'a', groups: 2, epsilon: 1e-6 }];
    // Group g holds values v; split into parts of unequal sizes with different means.
    const parts = [
      [1, 2, 3, 4, 5],
      [10, 10.5],
      [-3, 7, 0.25, 100, 2, 2, 2],
    ];
    const acc = new StatsAccumulator(layers);
    for (const p of parts) {
      const m = p.reduce((s, v) => s + v, 0) / p.length;
      const v = p.reduce((s, x) => s + (x - m) ** 2, 0) / p.length;
      // Group 1 holds the values doubled.
      acc.add(unpackStats(layers, Float32Array.from([m, 2 * m, v, 4 * v]), p.length));
    }
    const all = parts.flat();
    const mean = all.reduce((s, v) => s + v, 0) / all.length;
    const variance = all.reduce((s, v) => s + (v - mean) ** 2, 0) / all.length;
    const r = acc.result();
    assert.ok(Math.abs(r.mean[0]![0]! - mean) < 1e-9 && Math.abs(r.mean[0]![1]! - 2 * mean) < 1e-9);
    assert.ok(Math.abs(r.variance[0]![0]! - variance) < 1e-6 * variance, `${r.variance[0]![0]} vs ${variance}`);
    assert.ok(Math.abs(r.variance[0]![1]! - 4 * variance) < 4e-6 * variance);
    assert.equal(r.count, all.length);
  });

  it('packAffine maps the mean to 0 and one standard deviation to 1', () => {
    const layers: NormLayer[] = [{ name: 'a', groups: 1, epsilon: 0.25 }];
    const a = packAffine(layers, { mean: [Float64Array.of(3)], variance: [Float64Array.of(3.75)], count: 1 });
    assert.deepEqual([...a], [0.5, -1.5]);
  });

  it('owned spans partition the axis with boundaries inside the overlaps', () => {
    for (const [size, tile, overlap] of [[64, 32, 16], [100, 24, 8], [40, 16, 8], [16, 32, 16]] as const) {
      const tiles = planAxis(size, tile, overlap);
      const spans = ownedSpans(tiles);
      assert.equal(spans[0]!.start, 0);
      assert.equal(spans.at(-1)!.end, size);
      spans.forEach((s, i) => {
        if (i > 0) assert.equal(s.start, spans[i - 1]!.end);
        assert.ok(s.start >= tiles[i]!.start && s.end <= tiles[i]!.end, `span ${i} inside its tile`);
        if (i > 0) assert.ok(s.start - tiles[i]!.start >= Math.floor(overlap / 2) - 1, 'away from the tile edge');
      });
    }
  });

  it('downscaleArea averages each bin', () => {
    const src = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]); // [1, 3, 4]
    assert.deepEqual([...downscaleArea(src, 1, 3, 4, 1, 2)], [(1 + 2 + 5 + 6 + 9 + 10) / 6, (3 + 4 + 7 + 8 + 11 + 12) / 6]);
  });
});

describe('VAE norm graph surgery', () => {
  it('finds the GroupNorm layers of every export form, and those of the shipped decoder', () => {
    for (const form of FORMS) {
      const scan = scanNorms(smallDecoder(form));
      assert.deepEqual(scan.problems, []);
      // mid block: 2 resnets x 2 norms; 4 up blocks x 1 resnet x 2 norms; conv_norm_out.
      assert.equal(scan.sites.length, 13, form);
      assert.ok(scan.sites.every((s) => s.groups === 8 && Math.abs(s.epsilon - 1e-6) < 1e-12));
      assert.equal(scan.sites[0]!.name, '/decoder/mid_block/resnets.0/norm1');
      assert.equal(scan.sites.at(-1)!.name, '/decoder/conv_norm_out');
    }
    const shipped = scanNorms(fromBinary(ModelProtoSchema, fs.readFileSync(SHIPPED_DECODER)));
    assert.deepEqual(shipped.sites.map((s) => `${s.name}:${s.groups}`), [
      '/block0/norm1:16', '/block0/norm2:16', '/block1/norm1:16', '/block1/norm2:16', '/block2/norm1:16', '/block2/norm2:16', '/norm_out:8',
    ]);
  });

  for (const form of FORMS) {
    for (const floatType of ['float32', 'float16'] as const) {
      it(`${form} ${floatType}: the tile graph fed the statistics graph's statistics reproduces the decoder; region statistics combine to the whole`, async () => {
        const bytes = toBinary(ModelProtoSchema, smallDecoder(form, floatType));
        const statsModel = fromBinary(ModelProtoSchema, bytes);
        const tileModel = fromBinary(ModelProtoSchema, bytes);
        const s = deriveStatsGraph(statsModel);
        const t = deriveTileGraph(tileModel);
        assert.ok('layers' in s && 'layers' in t);
        const [orig, stats, tile] = await Promise.all([bytes, toBinary(ModelProtoSchema, statsModel), toBinary(ModelProtoSchema, tileModel)].map((b) => ort.InferenceSession.create(b)));
        const h = 6;
        const w = 10;
        const lat = stepLatent(h, w);
        const feed = { latent_sample: floatType === 'float32' ? new ort.Tensor('float32', lat, [1, 4, h, w]) : new ort.Tensor('float16', float32ToFloat16(lat), [1, 4, h, w]) };
        const read = (x: ort.Tensor) => (x.type === 'float32' ? (x.data as Float32Array) : float16ToFloat32(x.data as Uint16Array));
        const ref = read((await orig!.run(feed)).sample!);
        const so = await stats!.run(feed);
        assert.deepEqual(read(so.sample!), ref, 'the statistics graph decodes as the original');
        const flat = so[NORM_STATS_OUTPUT]!.data as Float32Array;
        assert.equal(flat.length, 13 * 2 * 8);
        const affine = packAffine(s.layers, unpackStats(s.layers, flat, 1));
        const region = (y0: number, x0: number, y1: number, x1: number) => new ort.Tensor('int64', BigInt64Array.from([y0, x0, y1, x1], BigInt), [4]);
        const run = (r: ort.Tensor) => tile!.run({ ...feed, [NORM_AFFINE_INPUT]: new ort.Tensor('float32', affine, [affine.length]), [NORM_REGION_INPUT]: r });
        const whole = await run(region(0, 0, h, w));
        const out = read(whole.sample!);
        let worst = 0;
        for (let i = 0; i < ref.length; i++) worst = Math.max(worst, Math.abs(out[i]! - ref[i]!));
        assert.ok(worst < (floatType === 'float32' ? 1e-4 : 2e-2), `tile graph vs original: ${worst}`);
        // Statistics over two halves, combined, equal those over the whole.
        const left = await run(region(0, 0, h, 4));
        const right = await run(region(0, 4, h, w));
        const acc = new StatsAccumulator(s.layers);
        acc.add(unpackStats(s.layers, left[NORM_STATS_OUTPUT]!.data as Float32Array, 4));
        acc.add(unpackStats(s.layers, right[NORM_STATS_OUTPUT]!.data as Float32Array, 6));
        const combined = acc.result();
        const direct = unpackStats(s.layers, whole[NORM_STATS_OUTPUT]!.data as Float32Array, 1);
        s.layers.forEach((_, k) => {
          for (let g = 0; g < 8; g++) {
            const sd = Math.sqrt(direct.variance[k]![g]!);
            assert.ok(Math.abs(combined.mean[k]![g]! - direct.mean[k]![g]!) < 1e-3 * sd + 1e-6, `layer ${k} group ${g} mean`);
            assert.ok(Math.abs(combined.variance[k]![g]! / direct.variance[k]![g]! - 1) < 2e-3, `layer ${k} group ${g} variance`);
          }
        });
      });
    }
  }

  it('prefix graphs: layer k\'s statistics alone, from only the nodes before it', async () => {
    const bytes = fs.readFileSync(SHIPPED_DECODER);
    const tileModel = fromBinary(ModelProtoSchema, bytes);
    const t = deriveTileGraph(tileModel);
    assert.ok('layers' in t);
    const tile = await ort.InferenceSession.create(toBinary(ModelProtoSchema, tileModel));
    const h = 8;
    const lat = stepLatent(h, h);
    const affine = new Float32Array(t.layers.reduce((n, l) => n + 2 * l.groups, 0));
    for (let i = 0, at = 0; i < t.layers.length; at += 2 * t.layers[i]!.groups, i++) {
      for (let g = 0; g < t.layers[i]!.groups; g++) {
        affine[at + g] = 0.8 + 0.01 * g; // a != 1, b != 0: the prefix must apply the earlier layers' maps
        affine[at + t.layers[i]!.groups + g] = 0.05 * (g % 3) - 0.05;
      }
    }
    const feeds = {
      latent_sample: new ort.Tensor('float32', lat, [1, 4, h, h]),
      [NORM_AFFINE_INPUT]: new ort.Tensor('float32', affine, [affine.length]),
      [NORM_REGION_INPUT]: new ort.Tensor('int64', BigInt64Array.from([1n, 2n, 7n, 6n]), [4]),
    };
    const all = (await tile.run(feeds))[NORM_STATS_OUTPUT]!.data as Float32Array;
    const conv = (m: ModelProto) => m.graph!.node.filter((n) => n.opType === 'Conv').length;
    let at = 0;
    let lastConvs = 0;
    for (const [k, layer] of t.layers.entries()) {
      const prefix = fromBinary(ModelProtoSchema, bytes);
      derivePrefixGraph(prefix, k);
      assert.deepEqual(prefix.graph!.output.map((o) => o.name), [NORM_STATS_OUTPUT]);
      const convs = conv(prefix);
      assert.ok(convs > lastConvs && convs < conv(tileModel), `prefix ${k} keeps ${convs} of ${conv(tileModel)} convolutions`);
      lastConvs = convs;
      const session = await ort.InferenceSession.create(toBinary(ModelProtoSchema, prefix));
      const got = (await session.run(feeds))[NORM_STATS_OUTPUT]!.data as Float32Array;
      const want = all.subarray(at, at + 2 * layer.groups);
      assert.equal(got.length, want.length);
      for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= 1e-5 * (1 + Math.abs(want[i]!)), `layer ${k} value ${i}: ${got[i]} vs ${want[i]}`);
      at += 2 * layer.groups;
    }
    assert.throws(() => derivePrefixGraph(fromBinary(ModelProtoSchema, bytes), t.layers.length), /no norm layer 7/);
  });

  it('every layer\'s statistics are read by the layer (so ONNX Runtime runs them before it, not after the decoder)', () => {
    // ORT orders nodes by a walk from the outputs: statistics only the statistics output reads ran after the whole
    // decoder and kept every norm layer's input alive to the end (+1 GiB at 512 px on an SD-width decoder).
    for (const derive of [deriveTileGraph, deriveStatsGraph]) {
      for (const form of FORMS) {
        const model = smallDecoder(form);
        assert.ok('layers' in derive(model));
        const graph = model.graph!;
        const producer = new Map(graph.node.flatMap((n) => n.output.map((o) => [o, n] as const)));
        const ancestors = new Set<string>();
        const stack = ['sample'];
        while (stack.length > 0) {
          const node = producer.get(stack.pop()!);
          if (!node || ancestors.has(node.name)) continue;
          ancestors.add(node.name);
          stack.push(...node.input);
        }
        const reductions = graph.node.filter((n) => n.opType === 'ReduceSumSquare');
        assert.equal(reductions.length, SMALL_VAE_DECODER.widths.length * SMALL_VAE_DECODER.resnetsPerBlock * 2 + 5, `${derive.name} ${form}`);
        for (const r of reductions) assert.ok(ancestors.has(r.name), `${derive.name} ${form}: ${r.name} does not feed the image`);
      }
    }
  });

  it('refuses a norm it cannot rewrite, naming the node and why', () => {
    const model = smallDecoder('instance-norm');
    // An InstanceNormalization that reads the conv output directly (per-channel, not a GroupNorm export).
    const node = model.graph!.node.find((n) => n.opType === 'InstanceNormalization')!;
    const reshape = model.graph!.node.find((n) => n.output[0] === node.input[0])!;
    node.input[0] = reshape.input[0]!;
    const r = deriveTileGraph(model);
    assert.ok('reason' in r);
    assert.match(r.reason, /normalisation layers it cannot rewrite: \/decoder\/mid_block\/resnets\.0\/norm1\/InstanceNormalization: InstanceNormalization whose input is not a Reshape/);
    const again = deriveStatsGraph(fromBinary(ModelProtoSchema, toBinary(ModelProtoSchema, model)));
    assert.deepEqual(again, r);
  });

  it('a decoder without norm layers has none to share (the tiny local VAE)', () => {
    assert.deepEqual(deriveTileGraph(buildTinyVaeDecoder({ seed: 1, floatType: 'float32' })), { layers: [] });
  });
});

describe('tiled decoding with shared statistics', () => {
  it('on an image-wide GroupNorm decoder: exact statistics match the untiled decode, per-tile statistics do not', async () => {
    const file = writeModel(smallDecoder('instance-norm'));
    const be = await localBackend(file, 'vae_decoder');
    try {
      const h = 40;
      const w = 56;
      const lat = stepLatent(h, w);
      const full = await be.run(lat.slice(), 4, h, w);
      const fullImg = chwToRgb8(full.data, full.height, full.width);
      const run = async (stats: 'off' | 'exact' | 'estimate') => {
        const r = await decodeTiled(lat, 4, h, w, be, { tileSize: 24, overlap: 12, stats });
        assert.equal(r.stats, stats);
        assert.equal(r.tiles, planAxis(h, 24, 12).length * planAxis(w, 24, 12).length);
        return { d: diff(chwToRgb8(r.data, r.height, r.width), fullImg), passes: r.passes };
      };
      const off = await run('off');
      const exact = await run('exact');
      assert.ok(off.d.max > 40 && off.d.mean > 4, `per-tile statistics shift colours (${JSON.stringify(off.d)})`);
      assert.ok(exact.d.max <= 6 && exact.d.mean <= 0.2, `exact statistics: ${JSON.stringify(exact.d)}`);
      // Layer by layer: the 13 prefixes, then the image.
      assert.equal(exact.passes, 14);
      // Whole passes repeated from the estimate instead of prefixes: the same image up to the convergence tolerance.
      const passes = await decodeTiled(lat, 4, h, w, be, { tileSize: 24, overlap: 12, stats: 'exact', maxPasses: 14 });
      const byPasses = diff(chwToRgb8(passes.data, passes.height, passes.width), fullImg);
      assert.ok(byPasses.max <= 6 && byPasses.mean <= 0.2, `exact by passes: ${JSON.stringify(byPasses)}`);
      // Deterministic.
      const again = await run('exact');
      assert.deepEqual(again, exact);
    } finally {
      await be.close();
    }
  });

  it('on the shipped decoder at 256 px (tiles of 16): exact within 4 levels (the target), per-tile off by tens', async () => {
    const be = await localBackend(SHIPPED_DECODER, 'vae_decoder');
    try {
      const h = 32;
      const lat = stepLatent(h, h);
      const full = await be.run(lat.slice(), 4, h, h);
      const fullImg = chwToRgb8(full.data, full.height, full.width);
      const tiled = async (stats: 'off' | 'exact') => {
        const r = await decodeTiled(lat, 4, h, h, be, { tileSize: 16, overlap: 8, stats });
        return diff(chwToRgb8(r.data, r.height, r.width), fullImg);
      };
      const off = await tiled('off');
      const exact = await tiled('exact');
      assert.ok(off.max > 20, `per-tile statistics: ${JSON.stringify(off)}`);
      assert.ok(exact.max <= 4 && exact.mean < 0.15, `exact: ${JSON.stringify(exact)}`);
    } finally {
      await be.close();
    }
  });

  it('falls back to per-tile statistics with a warning that names why', async () => {
    const model = smallDecoder('instance-norm');
    // One norm made unrecognisable: an InstanceNormalization reading the conv output directly.
    const node = model.graph!.node.find((n) => n.opType === 'InstanceNormalization')!;
    node.input[0] = model.graph!.node.find((n) => n.output[0] === node.input[0])!.input[0]!;
    const file = writeModel(model);
    const graphs = await prepareVaeGraphs(file);
    assert.ok('reason' in graphs);
    const warnings: string[] = [];
    const be = {
      norms: { reason: graphs.reason },
      run: async (input: Float32Array, _c: number, th: number, tw: number) => ({ data: new Float32Array(3 * 64 * th * tw).fill(input[0]!), height: 8 * th, width: 8 * tw }),
      runStats: () => Promise.reject(new Error('not used')),
      runTile: () => Promise.reject(new Error('not used')),
    };
    const r = await decodeTiled(new Float32Array(4 * 20 * 20), 4, 20, 20, be, { tileSize: 16, overlap: 8, stats: 'exact', onWarning: (m) => warnings.push(m) });
    assert.equal(r.stats, 'off');
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^Tiled VAE decoding falls back to per-tile normalisation \(colours may shift between tiles\): normalisation layers it cannot rewrite: .*norm1\/InstanceNormalization: InstanceNormalization whose input is not a Reshape/);
  });

  it('tiled encoding of the shipped encoder: exact statistics match the untiled latent mean, per-tile do not', async () => {
    const be = await localBackend(SHIPPED_ENCODER, 'vae_encoder');
    try {
      const size = 256;
      // A red square and a yellow disc on a purple ramp, in [-1, 1].
      const img = new Float32Array(3 * size * size);
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          let c = [0.5 * (1 + 0.1 * (y / size - 0.5)), 0, 0.5];
          if (x >= 50 && x < 160 && y >= 50 && y < 160) c = [0.9, 0.1, 0.1];
          if ((x - 185) ** 2 + (y - 180) ** 2 < 45 ** 2) c = [0.95, 0.85, 0.1];
          for (let k = 0; k < 3; k++) img[(k * size + y) * size + x] = 2 * c[k]! - 1;
        }
      }
      const full = await be.run(img.slice(), 3, size, size);
      assert.deepEqual([full.height, full.width, full.data.length], [32, 32, 4 * 32 * 32]);
      const err = async (stats: 'off' | 'exact') => {
        const r = await encodeTiled(img, size, size, be, { tileSize: 16, overlap: 8, stats });
        assert.deepEqual([r.channels, r.height, r.width, r.stats], [4, 32, 32, stats]);
        let max = 0;
        for (let i = 0; i < full.data.length; i++) max = Math.max(max, Math.abs(r.data[i]! - full.data[i]!));
        return max;
      };
      const off = await err('off');
      const exact = await err('exact');
      assert.ok(off > 0.3, `per-tile statistics: max latent difference ${off}`);
      assert.ok(exact < 0.05, `exact statistics: max latent difference ${exact}`);
    } finally {
      await be.close();
    }
  });

  it('caches the derived graphs next to the model and reuses them', async () => {
    const file = writeModel(smallDecoder('group-normalization-21'));
    const a = await prepareVaeGraphs(file);
    assert.ok('statsFile' in a);
    assert.equal(path.dirname(a.statsFile), path.dirname(file));
    assert.equal(a.prefixFiles.length, 13);
    assert.equal(a.externalDataFolder, undefined);
    // Weights are referenced, not copied: the derived graphs are much smaller than the model.
    assert.ok(fs.statSync(a.tileFile).size < fs.statSync(file).size / 2, 'tile graph references the weights');
    const mtime = fs.statSync(a.tileFile).mtimeMs;
    const b = await prepareVaeGraphs(file);
    assert.deepEqual(b, a);
    assert.equal(fs.statSync(a.tileFile).mtimeMs, mtime);
  });

  it('stores them under the cache folder on request (weights read from the model\'s folder); a touched model reuses them by content', async () => {
    const file = writeModel(smallDecoder('group-normalization-21'));
    const cacheDir = tempDir('vae-cache');
    const a = await prepareVaeGraphs(file, { placement: 'cache', cacheDir });
    assert.ok('statsFile' in a);
    assert.ok(a.tileFile.startsWith(path.join(cacheDir, 'vae-graphs')), a.tileFile);
    assert.equal(a.externalDataFolder, path.dirname(file));
    const mtime = fs.statSync(a.tileFile).mtimeMs;
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(file, later, later);
    const b = await prepareVaeGraphs(file, { placement: 'cache', cacheDir });
    assert.deepEqual(b, a);
    assert.equal(fs.statSync(a.tileFile).mtimeMs, mtime, 'not derived again');
    const side = JSON.parse(fs.readFileSync(path.join(path.dirname(a.tileFile), 'model.asgd-vae.json'), 'utf8')) as { mtimeMs: number };
    assert.equal(side.mtimeMs, fs.statSync(file).mtimeMs, 'the sidecar records the new stamp');
    const bad = writeModel(smallDecoder('group-normalization-21'), 'broken.onnx');
    fs.writeFileSync(bad, 'not a model');
    assert.deepEqual(await prepareVaeGraphs(bad), { reason: 'the file cannot be parsed as an ONNX model' });
  });
});
