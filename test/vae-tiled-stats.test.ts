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
import { decodeTiled, encodeTiled, type TiledVaeBackend, type TileState } from '../src/core/vae/tiled.ts';
import { planAxis } from '../src/core/vae/tiling.ts';
import { SMALL_VAE_DECODER, buildGroupNormVaeDecoder, type GroupNormForm } from './fixtures/groupnorm-vae.ts';
import { buildTinyVaeDecoder } from './fixtures/tiny-vae.ts';
import { localBackend } from '../src/node/vae-local.ts';
import { prepareVaeGraphs } from '../src/node/vae-graphs.ts';
import { NORM_AFFINE_INPUT, NORM_REGION_INPUT, NORM_STATS_OUTPUT, deriveStatsGraph, deriveTileGraph, scanNorms } from '../src/graph/vae-norm-graph.ts';
import { STATE_PREFIX, deriveSegmentGraph } from '../src/graph/vae-segments.ts';
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
/** A host state's copy (runs may detach the buffers of a state they are given). */
function cloneHost(state: TileState): TileState {
  return { ...state, tensors: Object.fromEntries(Object.entries(state.tensors).map(([n, t]) => [n, { ...t, data: t.data.slice() }])) };
}

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

  /** A tile graph's inputs for an h x h latent, with affine maps a != 1, b != 0 (a segment must apply the earlier layers' maps). */
  function tileFeeds(layers: readonly NormLayer[], h: number, region: number[], floatType: 'float32' | 'float16' = 'float32'): Record<string, ort.Tensor> {
    const lat = stepLatent(h, h);
    const affine = new Float32Array(layers.reduce((n, l) => n + 2 * l.groups, 0));
    for (let i = 0, at = 0; i < layers.length; at += 2 * layers[i]!.groups, i++) {
      for (let g = 0; g < layers[i]!.groups; g++) {
        affine[at + g] = 0.8 + 0.01 * g;
        affine[at + layers[i]!.groups + g] = 0.05 * (g % 3) - 0.05;
      }
    }
    return {
      latent_sample: floatType === 'float32' ? new ort.Tensor('float32', lat, [1, 4, h, h]) : new ort.Tensor('float16', float32ToFloat16(lat), [1, 4, h, h]),
      [NORM_AFFINE_INPUT]: new ort.Tensor('float32', affine, [affine.length]),
      [NORM_REGION_INPUT]: new ort.Tensor('int64', BigInt64Array.from(region, BigInt), [4]),
    };
  }

  /** Runs segment (from, to) of a tile graph's bytes on the feeds and a state; its outputs, and the segment's model. */
  async function runSegment(tileBytes: Uint8Array, from: number, to: number | 'end', feeds: Record<string, ort.Tensor>, state: Record<string, ort.Tensor>) {
    const model = fromBinary(ModelProtoSchema, tileBytes);
    const r = deriveSegmentGraph(model, from, to);
    assert.ok('layers' in r, JSON.stringify(r));
    const session = await ort.InferenceSession.create(toBinary(ModelProtoSchema, model));
    const given: Record<string, ort.Tensor> = {};
    for (const name of session.inputNames) given[name] = name.startsWith(STATE_PREFIX) ? state[name.slice(STATE_PREFIX.length)]! : feeds[name]!;
    const out = await session.run(given);
    return { out, model, state: Object.fromEntries(Object.entries(out).filter(([n]) => n !== NORM_STATS_OUTPUT)) };
  }

  const sources: [string, () => Uint8Array][] = [
    ['the shipped decoder', () => fs.readFileSync(SHIPPED_DECODER)],
    ...FORMS.flatMap((form) => (['float32', 'float16'] as const).map((f): [string, () => Uint8Array] => [`${form} ${f}`, () => toBinary(ModelProtoSchema, smallDecoder(form, f))])),
  ];
  /**
   * Bit for bit in float32. In float16 a segment's state is float16 as the graph says, where ONNX Runtime's CPU
   * provider may run a chain of float16 ops across the cut in float32 inside one graph: within float16 rounding.
   */
  const same = (got: ort.Tensor['data'], want: ort.Tensor['data'], float16: boolean, what: string) => {
    if (!float16) return assert.deepEqual(got, want, what);
    const a = got instanceof Uint16Array ? float16ToFloat32(got) : (got as Float32Array);
    const b = want instanceof Uint16Array ? float16ToFloat32(want) : (want as Float32Array);
    assert.equal(a.length, b.length, what);
    for (let i = 0; i < a.length; i++) assert.ok(Math.abs(a[i]! - b[i]!) <= 2e-3 * (1 + Math.abs(b[i]!)), `${what} value ${i}: ${a[i]} vs ${b[i]}`);
  };
  for (const [name, source] of sources) {
    it(`segments of ${name}'s tile graph, chained cut by cut or skipping cuts, give its statistics and image${name.includes('float16') ? ' (within float16 rounding)' : ' bit for bit'}`, async () => {
      const tileModel = fromBinary(ModelProtoSchema, source());
      const t = deriveTileGraph(tileModel);
      assert.ok('layers' in t);
      const tileBytes = toBinary(ModelProtoSchema, tileModel);
      const floatType = name.includes('float16') ? 'float16' : 'float32';
      const feeds = tileFeeds(t.layers, 8, [1, 2, 7, 6], floatType);
      const whole = await (await ort.InferenceSession.create(tileBytes)).run(feeds);
      const all = whole[NORM_STATS_OUTPUT]!.data as Float32Array;
      const L = t.layers.length;
      // Cut by cut: each layer's statistics as the tile graph's, and the image.
      let state: Record<string, ort.Tensor> = {};
      let at = 0;
      for (let k = 0; k < L; k++) {
        const r = await runSegment(tileBytes, k - 1, k, feeds, state);
        const want = all.subarray(at, at + 2 * t.layers[k]!.groups);
        same(r.out[NORM_STATS_OUTPUT]!.data, want, floatType === 'float16', `layer ${k}`);
        at += want.length;
        assert.ok(Object.keys(r.state).length > 0, `segment ${k} hands over a state`);
        state = r.state;
      }
      const end = await runSegment(tileBytes, L - 1, 'end', feeds, state);
      assert.deepEqual(Object.keys(end.out), ['sample']);
      same(end.out.sample!.data, whole.sample!.data, floatType === 'float16', 'image');
      // From the input to layer k directly (what keeping no state runs), then from k to the end.
      const k = 3;
      const direct = await runSegment(tileBytes, -1, k, feeds, {});
      const at3 = t.layers.slice(0, k).reduce((n, l) => n + 2 * l.groups, 0);
      same(direct.out[NORM_STATS_OUTPUT]!.data, all.subarray(at3, at3 + 2 * t.layers[k]!.groups), floatType === 'float16', `layer ${k} from the input`);
      const rest = await runSegment(tileBytes, k, 'end', feeds, direct.state);
      same(rest.out.sample!.data, whole.sample!.data, floatType === 'float16', `image from layer ${k}`);
    });
  }

  it('a segment holds only its part of the model: from the input to layer k, a growing prefix; between two cuts, what lies between', () => {
    const bytes = toBinary(ModelProtoSchema, smallDecoder('instance-norm'));
    const tileModel = fromBinary(ModelProtoSchema, bytes);
    const t = deriveTileGraph(tileModel);
    assert.ok('layers' in t);
    const tileBytes = toBinary(ModelProtoSchema, tileModel);
    const convs = (from: number, to: number | 'end') => {
      const m = fromBinary(ModelProtoSchema, tileBytes);
      assert.ok('layers' in deriveSegmentGraph(m, from, to));
      return m.graph!.node.filter((n) => n.opType === 'Conv').length;
    };
    const total = tileModel.graph!.node.filter((n) => n.opType === 'Conv').length;
    let last = 0;
    let between = 0;
    for (let k = 0; k < t.layers.length; k++) {
      const prefix = convs(-1, k);
      assert.ok(prefix > last || k === 0, `prefix ${k}: ${prefix} convolutions`);
      // The convolutions between cut k - 1 and cut k are the prefix's growth.
      if (k > 0) assert.equal(convs(k - 1, k), prefix - last, `segment ${k - 1} to ${k}`);
      between += k > 0 ? prefix - last : prefix;
      last = prefix;
    }
    assert.equal(between + convs(t.layers.length - 1, 'end'), total, 'the segments partition the convolutions');
    assert.throws(() => deriveSegmentGraph(fromBinary(ModelProtoSchema, tileBytes), 3, 3), /no segment from cut 3 to 3 of 13 norm layers/);
    assert.throws(() => deriveSegmentGraph(fromBinary(ModelProtoSchema, tileBytes), -1, 13), /no segment from cut -1 to 13/);
    assert.deepEqual(deriveSegmentGraph(fromBinary(ModelProtoSchema, bytes), -1, 2), { reason: 'the model is not a tile graph (no asgd_norm_stats gathered by a Concat)' });
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
      // Layer by layer: a segment per norm layer (13), then the rest of the model.
      assert.equal(exact.passes, 14);
      // Whole passes repeated from the estimate instead of segments: the same image up to the convergence tolerance.
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

  it('exact keeps the tiles\' states within statsMemory: the same image at every budget, each layer resumed from the last cut kept', async () => {
    const file = writeModel(smallDecoder('group-normalization-21'));
    const be = await localBackend(file, 'vae_decoder');
    try {
      const h = 40;
      const lat = stepLatent(h, h);
      const L = 13;
      const run = async (statsMemory: number) => {
        const spans: string[] = [];
        const kept: number[] = [];
        const counting = {
          ...be,
          runSegment: async (...args: Parameters<NonNullable<typeof be.runSegment>>) => {
            spans.push(`${args[0]}>${args[1]}`);
            const r = await be.runSegment!(...args);
            if (r.state) kept.push(r.state.bytes);
            return r;
          },
        };
        const r = await decodeTiled(lat, 4, h, h, counting, { tileSize: 24, overlap: 12, stats: 'exact', statsMemory });
        return { r, spans: [...new Set(spans)], kept };
      };
      const all = await run(1024);
      const none = await run(0);
      const n = all.r.tiles;
      assert.equal(n, 9);
      // All kept: one segment per layer from the cut before it, then the rest of the model from the last cut.
      assert.deepEqual(all.spans, [...Array.from({ length: L }, (_, k) => `${k - 1}>${k}`), `${L - 1}>end`]);
      assert.equal(all.r.resumedFrom, L - 1);
      // None kept: every layer from the input (the model's prefix), then the whole model; no state is fetched.
      assert.deepEqual(none.spans, [...Array.from({ length: L }, (_, k) => `-1>${k}`), '-1>end']);
      assert.equal(none.r.resumedFrom, -1);
      assert.equal(none.kept.length, 0);
      assert.deepEqual(none.r.data, all.r.data, 'the same image bit for bit');
      // A budget between: the cuts whose states fit are kept; each layer starts at the last of them.
      const sizes = all.kept.filter((_, i) => i % n === 0); // the first tile's state at each cut
      assert.equal(sizes.length, L);
      const budget = Math.ceil((Math.min(...sizes) * n) / 2 ** 20);
      const fit = sizes.map((b) => b * n <= budget * 2 ** 20);
      assert.ok(fit.some((x) => x) && fit.some((x) => !x), `${budget} MiB keeps some cuts and not others: ${sizes.join(', ')} B a tile`);
      const mid = await run(budget);
      let from = -1;
      const want: string[] = [];
      fit.forEach((ok, k) => {
        want.push(`${from}>${k}`);
        if (ok) from = k;
      });
      want.push(`${from}>end`);
      assert.deepEqual(mid.spans, want);
      assert.deepEqual(mid.r.data, all.r.data, 'the same image bit for bit');
    } finally {
      await be.close();
    }
  });

  it('states a backend holds (TileState.held) are released once each: when replaced, when not kept, after the image\'s pass, and all of them when a run fails', async () => {
    const file = writeModel(smallDecoder('group-normalization-21'));
    const be = await localBackend(file, 'vae_decoder');
    try {
      const h = 40;
      const lat = stepLatent(h, h);
      const plain = await decodeTiled(lat, 4, h, h, be, { tileSize: 24, overlap: 12, stats: 'exact', statsMemory: 1024 });
      // The CPU backend's host states held behind handles, as a GPU backend holds its buffers; a freed handle is gone.
      const holding = (failAt?: number) => {
        const live = new Map<number, TileState>();
        let next = 1;
        let calls = 0;
        const log = { held: 0, released: [] as number[], live };
        const backend: TiledVaeBackend = {
          ...be,
          runSegment: async (from, to, input, c, hh, ww, affine, region, state, keep) => {
            if (++calls === failAt) throw new Error('injected failure');
            let given: TileState | undefined;
            if (state) {
              assert.notEqual(state.held, undefined, 'the tiling passes the held state itself');
              given = live.get(state.held!);
              assert.ok(given, `state ${state.held} used after its release`);
            }
            // The host state may be detached by the run: the handle keeps a copy.
            const r = await be.runSegment!(from, to, input, c, hh, ww, affine, region, given && cloneHost(given), keep);
            if (!r.state) return r;
            const id = next++;
            live.set(id, r.state);
            log.held++;
            return { ...r, state: { tensors: {}, held: id, bytes: r.state.bytes } };
          },
          releaseStates: async (states) => {
            for (const st of states) {
              assert.ok(live.delete(st.held!), `state ${st.held} released twice or never held`);
              log.released.push(st.held!);
            }
          },
        };
        return { backend, log };
      };
      for (const statsMemory of [1024, 1]) {
        const { backend, log } = holding();
        const r = await decodeTiled(lat, 4, h, h, backend, { tileSize: 24, overlap: 12, stats: 'exact', statsMemory });
        assert.deepEqual(r.data, plain.data, `${statsMemory} MiB: the image of host states, bit for bit`);
        assert.ok(log.held > 0, `${statsMemory} MiB: states were held`);
        assert.equal(log.live.size, 0, `${statsMemory} MiB: every held state released (${log.held} held)`);
        assert.equal(log.released.length, log.held);
        if (statsMemory === 1) assert.ok(r.resumedFrom! < 12, `1 MiB keeps not every cut (resumed from ${r.resumedFrom})`);
      }
      // A run that fails midway: the error comes through, and every state still held is released.
      const { backend, log } = holding(30);
      await assert.rejects(decodeTiled(lat, 4, h, h, backend, { tileSize: 24, overlap: 12, stats: 'exact', statsMemory: 1024 }), /injected failure/);
      assert.ok(log.held >= 9, `${log.held} held before the failure`);
      assert.equal(log.live.size, 0, 'all released after the failure');
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
    assert.deepEqual(a.layers.length, 13);
    assert.deepEqual(fs.readdirSync(path.dirname(file)).filter((f) => f.includes('asgd-vae')).sort(), ['model.asgd-vae-stats.onnx', 'model.asgd-vae-tile.onnx', 'model.asgd-vae.json']);
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
