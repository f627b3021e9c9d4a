/**
 * Tiled VAE decoding with the decoder's self-attention computed once for the whole latent (attention 'global',
 * src/graph/vae-attention-split.ts): on a small decoder with SD's structure (GroupNorm everywhere, the mid-block
 * attention), the tiled decode matches the untiled one where per-tile attention does not; the chunked attention core
 * equals the unchunked head; decoders that cannot be split fall back with a warning naming why.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, NodeProtoSchema, TensorProtoSchema, type ModelProto } from 'onnx-buf';
import { chwToRgb8, type RgbImage } from '../src/core/image.ts';
import { attentionChunkRows, headSizeProblem, placeRows, sliceRows } from '../src/core/vae/attention-chunks.ts';
import { AUTO_GLOBAL_MAX_LATENT_AREA, attentionModeFor, decodeTiled, encodeTiled, type GlobalAttentionBackend, type TiledDecodeOptions } from '../src/core/vae/tiled.ts';
import { deriveAttentionHead, deriveAttentionTail, findAttentionCut } from '../src/graph/vae-attention-split.ts';
import { localAttentionBackend } from '../src/node/vae-attention-local.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { SMALL_VAE_DECODER, SMALL_VAE_ENCODER, buildGroupNormVaeDecoder, buildGroupNormVaeEncoder } from './fixtures/groupnorm-vae.ts';
import { tempDir, tinyModel } from './helpers/models.ts';
import { absDifference } from '../bench/analysis/difference.ts';

const SESSION = { provider: 'cpu' as const, threads: 1 };
/** 256 px: a 32x32 latent in tiles of 16 (overlap 8), so a tile sees a quarter of the image. */
const H = 32;
const TILES: Pick<TiledDecodeOptions, 'tileSize' | 'overlap'> = { tileSize: 16, overlap: 8 };

function attnDecoder(): ModelProto {
  return buildGroupNormVaeDecoder({ seed: 5, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_DECODER, midAttention: true });
}

function latentOf(h: number, w: number): Float32Array {
  const latent = new Float32Array(4 * h * w);
  for (let c = 0; c < 4; c++) {
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) latent[(c * h + y) * w + x] = Math.sin(0.21 * x + 0.13 * y + c) + (x > (w * 5) / 9 ? (c === 1 ? 1.5 : -0.75) : 0);
  }
  return latent;
}

function levels(a: { data: Float32Array; height: number; width: number }, b: { data: Float32Array; height: number; width: number }) {
  return absDifference(chwToRgb8(a.data, a.height, a.width).data, chwToRgb8(b.data, b.height, b.width).data);
}

function writeModel(model: ModelProto, name: string): string {
  const file = path.join(tempDir(name), 'model.onnx');
  fs.writeFileSync(file, toBinary(ModelProtoSchema, model));
  return file;
}

let dir: string;
before(() => {
  dir = tempDir('vae-attention');
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

test('query chunks: rows are sliced and placed back per leading block; the chunk size keeps the scores in budget', () => {
  const dims = [2, 5, 3];
  const data = Float32Array.from({ length: 30 }, (_, i) => i);
  const part = sliceRows(data, dims, 1, 3);
  assert.deepEqual([...part], [3, 4, 5, 6, 7, 8, 18, 19, 20, 21, 22, 23]);
  const back = new Float32Array(30);
  for (const [r0, r1] of [[0, 2], [2, 5]] as const) placeRows(back, dims, sliceRows(data, dims, r0, r1), r0, r1);
  assert.deepEqual([...back], [...data]);
  assert.equal(attentionChunkRows(1, 4096, 4096, 256 * 2 ** 20), 4096);
  assert.equal(attentionChunkRows(1, 65536, 65536, 256 * 2 ** 20), 1024);
  assert.equal(attentionChunkRows(8, 100, 1e9, 1), 1);
  assert.equal(headSizeProblem(undefined, 512, 512), undefined);
  assert.match(headSizeProblem('a mask', 128, 128)!, /cannot run in query chunks \(a mask\) and its scores for a 128x128 latent take at least 1024 MiB, over the 256 MiB budget/);
});

test('attention auto: global up to a 256x256 latent (2048 px), per tile above; global and tile as asked', () => {
  assert.equal(AUTO_GLOBAL_MAX_LATENT_AREA, 65536);
  assert.equal(attentionModeFor('auto', 256, 256), 'global');
  assert.equal(attentionModeFor('auto', 128, 512), 'global');
  assert.equal(attentionModeFor('auto', 256, 264), 'tile');
  assert.equal(attentionModeFor('auto', 512, 512), 'tile');
  assert.equal(attentionModeFor('global', 512, 512), 'global');
  assert.equal(attentionModeFor('tile', 8, 8), 'tile');
  assert.equal(attentionModeFor(undefined, 8, 8), 'tile');
});

test('the cut: the tensor after the mid-block attention; the tail reads only it, not the whole image\'s shapes', () => {
  const model = attnDecoder();
  const cut = findAttentionCut(model);
  assert.ok(!('reason' in cut), JSON.stringify(cut));
  // The attention block reshapes back with Shape(x) of the whole image: that shape stays in the head.
  assert.equal(cut.cut, '/decoder/mid_block/attentions.0/Add_output_0');
  const bytes = toBinary(ModelProtoSchema, model);
  const head = fromBinary(ModelProtoSchema, bytes);
  const tail = fromBinary(ModelProtoSchema, bytes);
  deriveAttentionHead(head);
  deriveAttentionTail(tail);
  assert.deepEqual(head.graph!.output.map((o) => o.name), [cut.cut]);
  assert.deepEqual(tail.graph!.input.map((i) => i.name), [cut.cut]);
  const headTensors = new Set(head.graph!.node.flatMap((n) => n.output));
  const inits = new Set(tail.graph!.initializer.map((t) => t.name));
  for (const n of tail.graph!.node) for (const i of n.input) assert.ok(!headTensors.has(i) || i === cut.cut || inits.has(i), `${n.name} reads ${i} from the head`);
  assert.ok(head.graph!.node.some((n) => n.opType === 'Shape' && n.name.includes('attentions.0')));
});

test('global attention: the tiled decode matches the untiled one (exact statistics) where per-tile attention does not', async () => {
  const file = writeModel(attnDecoder(), 'attn-decoder');
  const be = await localAttentionBackend(file, SESSION);
  try {
    assert.ok(be.attention && !('reason' in be.attention), JSON.stringify(be.attentionGraphs));
    const latent = latentOf(H, H);
    const full = await be.run(latent.slice(), 4, H, H);
    const warnings: string[] = [];
    const global = await decodeTiled(latent, 4, H, H, be, { ...TILES, stats: 'exact', attention: 'global', onWarning: (m) => warnings.push(m) });
    const perTile = await decodeTiled(latent, 4, H, H, be, { ...TILES, stats: 'exact', attention: 'tile', onWarning: (m) => warnings.push(m) });
    assert.deepEqual(warnings, []);
    assert.equal(global.attention, 'global');
    assert.equal(perTile.attention, 'tile');
    assert.equal(global.tiles, 9);
    const g = levels(global, full);
    const t = levels(perTile, full);
    // Measured: global max 6, mean 0.19 levels; per-tile attention max 112, mean 23.
    assert.ok(g.max <= 8 && g.mean <= 0.3, `global attention: ${JSON.stringify(g)}`);
    assert.ok(t.max >= 40 && t.mean >= 5, `per-tile attention: ${JSON.stringify(t)}`);
  } finally {
    await be.close();
  }
});

/**
 * The head of `model` run on a 24x20 latent in query chunks (16 KiB of scores each) and whole: both results, after
 * checking the chunked one equals the whole one within 1e-5.
 */
async function chunkedAndWhole(model: ModelProto, name: string) {
  const file = writeModel(model, name);
  const chunked = await localAttentionBackend(file, SESSION, { chunkBytes: 16 * 1024 });
  const whole = await localAttentionBackend(file, SESSION, { unchunked: true });
  try {
    assert.ok(!('reason' in chunked.attentionGraphs) && chunked.attentionGraphs.chunked, JSON.stringify(chunked.attentionGraphs));
    const latent = latentOf(24, 20);
    const a = chunked.attention && !('reason' in chunked.attention) ? await chunked.attention.runGlobal(latent.slice(), 4, 24, 20) : undefined;
    const b = whole.attention && !('reason' in whole.attention) ? await whole.attention.runGlobal(latent.slice(), 4, 24, 20) : undefined;
    assert.ok(a && b);
    let max = 0;
    for (let i = 0; i < a.data.length; i++) max = Math.max(max, Math.abs(a.data[i]! - b.data[i]!));
    assert.ok(max <= 1e-5, `chunked vs unchunked: ${max}`);
    return { a, b };
  } finally {
    await chunked.close();
    await whole.close();
  }
}

test('the attention core in query chunks equals the unchunked head', async () => {
  const { a, b } = await chunkedAndWhole(attnDecoder(), 'attn-chunks');
  // 480 tokens, 16 KiB of scores per chunk: 8 rows per chunk.
  assert.equal(a.chunks, 60);
  assert.equal(b.chunks, 0);
  assert.deepEqual([a.channels, a.height, a.width], [32, 24, 20]);
});

test("a Dropout after the Softmax (the dynamo exporter's scaled-dot-product attention): in inference mode the core still runs in chunks, equal to the unchunked head; in training mode it is named", async () => {
  const withDropout = (training: boolean): ModelProto => {
    const m = attnDecoder();
    const g = m.graph!;
    const softmax = g.node.find((n) => n.opType === 'Softmax')!;
    const reader = g.node.find((n) => n.input.includes(softmax.output[0]!))!;
    g.initializer.push(create(TensorProtoSchema, { name: '/test/ratio', dataType: 1, dims: [], floatData: [0] }));
    if (training) g.initializer.push(create(TensorProtoSchema, { name: '/test/training', dataType: 9, dims: [], rawData: new Uint8Array([1]) }));
    g.node.splice(g.node.indexOf(softmax) + 1, 0, create(NodeProtoSchema, {
      name: '/test/Dropout', opType: 'Dropout', input: [softmax.output[0]!, '/test/ratio', ...(training ? ['/test/training'] : [])], output: ['/test/dropped'],
    }));
    reader.input = reader.input.map((i) => (i === softmax.output[0] ? '/test/dropped' : i));
    return m;
  };
  const { a } = await chunkedAndWhole(withDropout(false), 'attn-dropout');
  assert.equal(a.chunks, 60);
  const training = await localAttentionBackend(writeModel(withDropout(true), 'attn-dropout-training'), SESSION, { chunkBytes: 16 * 1024 });
  try {
    assert.equal((training.attentionGraphs as { coreReason?: string }).coreReason, '/test/Dropout (Dropout) after the Softmax is not row-independent');
  } finally {
    await training.close();
  }
});

test('float16 decoders (GroupNormalization, opset 18): the scale is a cast constant; the chunked core equals the unchunked head', async () => {
  const file = writeModel(buildGroupNormVaeDecoder({ seed: 5, floatType: 'float16', form: 'group-normalization-18', ...SMALL_VAE_DECODER, midAttention: true }), 'attn-f16');
  const chunked = await localAttentionBackend(file, SESSION, { chunkBytes: 16 * 1024 });
  const whole = await localAttentionBackend(file, SESSION, { unchunked: true });
  try {
    assert.ok(!('reason' in chunked.attentionGraphs) && chunked.attentionGraphs.chunked, JSON.stringify(chunked.attentionGraphs));
    const latent = latentOf(16, 16);
    const a = await (chunked.attention as GlobalAttentionBackend).runGlobal(latent.slice(), 4, 16, 16);
    const b = await (whole.attention as GlobalAttentionBackend).runGlobal(latent.slice(), 4, 16, 16);
    assert.equal(a.chunks, 16);
    let max = 0;
    for (let i = 0; i < a.data.length; i++) max = Math.max(max, Math.abs(a.data[i]! - b.data[i]!));
    assert.ok(max <= 1e-2, `chunked vs unchunked (float16): ${max}`);
  } finally {
    await chunked.close();
    await whole.close();
  }
});

test('a shape of the whole image used after the attention moves the cut past its use: tiles smaller than the image still decode', async () => {
  // The mid block's output gets zeros shaped like the attention's input (the whole image, computed before the
  // attention): that shape must not reach a tile.
  const model = attnDecoder();
  const g = model.graph!;
  const attnIn = '/decoder/mid_block/resnets.0/Add_output_0';
  const midAdd = g.node.find((n) => n.name === '/decoder/mid_block/resnets.1/Add')!;
  const midOut = midAdd.output[0]!;
  const zero = create(TensorProtoSchema, { name: '/test/zero', dataType: 1, dims: [1n], floatData: [0] });
  const nodes = [
    create(NodeProtoSchema, { name: '/test/Shape', opType: 'Shape', input: [attnIn], output: ['/test/shape'] }),
    create(NodeProtoSchema, { name: '/test/ConstantOfShape', opType: 'ConstantOfShape', input: ['/test/shape'], output: ['/test/zeros'], attribute: [{ name: 'value', type: 4, t: zero } as never] }),
  ];
  g.node.splice(g.node.findIndex((n) => n.output.includes(attnIn)) + 1, 0, ...nodes);
  const add = create(NodeProtoSchema, { name: '/test/Add', opType: 'Add', input: [midOut, '/test/zeros'], output: ['/test/mid_out'] });
  for (const n of g.node) n.input = n.input.map((i) => (i === midOut ? '/test/mid_out' : i));
  g.node.splice(g.node.indexOf(midAdd) + 1, 0, add);
  const cut = findAttentionCut(model);
  assert.ok(!('reason' in cut) && cut.cut === '/test/mid_out', JSON.stringify(cut));
  const be = await localAttentionBackend(writeModel(model, 'attn-shape'), SESSION);
  try {
    const latent = latentOf(H, H);
    const full = await be.run(latent.slice(), 4, H, H);
    const global = await decodeTiled(latent, 4, H, H, be, { ...TILES, stats: 'exact', attention: 'global' });
    assert.equal(global.attention, 'global');
    const d = levels(global, full);
    assert.ok(d.max <= 8 && d.mean <= 0.3, JSON.stringify(d));
  } finally {
    await be.close();
  }
});

test('decoders that cannot be split fall back to per-tile attention with a warning naming why; one without attention tiles silently', async () => {
  // No single tensor after the attention: an early tensor is also a graph output.
  const model = attnDecoder();
  model.graph!.output.push({ ...model.graph!.output[0]!, name: '/decoder/conv_in/Conv_output_0' });
  const noCut = await localAttentionBackend(writeModel(model, 'attn-nocut'), SESSION);
  try {
    const warnings: string[] = [];
    const r = await decodeTiled(latentOf(20, 20), 4, 20, 20, noCut, { tileSize: 12, overlap: 6, stats: 'exact', attention: 'global', onWarning: (m) => warnings.push(m) });
    assert.equal(r.attention, 'tile');
    assert.deepEqual(warnings, [
      "Tiled VAE decoding falls back to per-tile attention (each tile's attention sees only the tile): no single tensor carries everything after the attention /decoder/mid_block/attentions.0/attn/Softmax to the rest of the decoder",
    ]);
  } finally {
    await noCut.close();
  }

  // Scores with a bias (not a scalar scale) are not row-independent: no chunks; over the budget the decode falls back.
  const biased = attnDecoder();
  const bg = biased.graph!;
  const softmax = bg.node.find((n) => n.opType === 'Softmax')!;
  bg.initializer.push(create(TensorProtoSchema, { name: '/test/bias', dataType: 1, dims: [], floatData: [0] }));
  bg.node.splice(bg.node.indexOf(softmax), 0, create(NodeProtoSchema, { name: '/test/AddBias', opType: 'Add', input: [softmax.input[0]!, '/test/bias'], output: ['/test/biased'] }));
  softmax.input[0] = '/test/biased';
  const be = await localAttentionBackend(writeModel(biased, 'attn-bias'), SESSION, { chunkBytes: 1024 * 1024 });
  try {
    assert.ok(!('reason' in be.attentionGraphs) && !be.attentionGraphs.chunked);
    assert.equal((be.attentionGraphs as { coreReason?: string }).coreReason, '/test/AddBias (Add) between the scores and the Softmax is not a scalar scale');
    const warnings: string[] = [];
    // 16x16 latent: 256 KiB of scores, within budget: the head runs whole.
    const small = await decodeTiled(latentOf(16, 16), 4, 16, 16, be, { tileSize: 8, overlap: 4, stats: 'off', attention: 'global', onWarning: (m) => warnings.push(m) });
    assert.equal(small.attention, 'global');
    // 32x32 latent: 4 MiB, over the 1 MiB budget.
    const big = await decodeTiled(latentOf(H, H), 4, H, H, be, { ...TILES, stats: 'off', attention: 'global', onWarning: (m) => warnings.push(m) });
    assert.equal(big.attention, 'tile');
    assert.deepEqual(warnings, [
      "Tiled VAE decoding falls back to per-tile attention (each tile's attention sees only the tile): its attention cannot run in query chunks (/test/AddBias (Add) between the scores and the Softmax is not a scalar scale) and its scores for a 32x32 latent take at least 4 MiB, over the 1 MiB budget",
    ]);
  } finally {
    await be.close();
  }

  // Without attention: nothing to compute globally, no warning.
  const plain = await localAttentionBackend(writeModel(buildGroupNormVaeDecoder({ seed: 5, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_DECODER }), 'no-attn'), SESSION);
  try {
    const warnings: string[] = [];
    const r = await decodeTiled(latentOf(20, 20), 4, 20, 20, plain, { tileSize: 12, overlap: 6, stats: 'exact', attention: 'global', onWarning: (m) => warnings.push(m) });
    assert.equal(r.attention, 'tile');
    assert.deepEqual(warnings, []);
    assert.match((plain.attentionGraphs as { reason: string }).reason, /no self-attention/);
  } finally {
    await plain.close();
  }
});

test('the pipeline decodes and encodes with global attention on its workers (the default), matching the untiled results', async () => {
  const vaeDir = tempDir('attn-vae');
  fs.mkdirSync(path.join(vaeDir, 'vae_decoder'));
  fs.mkdirSync(path.join(vaeDir, 'vae_encoder'));
  fs.writeFileSync(path.join(vaeDir, 'vae_decoder', 'model.onnx'), toBinary(ModelProtoSchema, attnDecoder()));
  fs.writeFileSync(path.join(vaeDir, 'vae_decoder', 'config.json'), JSON.stringify({ scaling_factor: 0.5 }));
  fs.writeFileSync(path.join(vaeDir, 'vae_encoder', 'model.onnx'), toBinary(ModelProtoSchema, buildGroupNormVaeEncoder({ seed: 7, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_ENCODER })));
  const p = await loadPipeline(await tinyModel('standard'), { threads: 1, vae: vaeDir, attentionProbe: false });
  try {
    const latent = latentOf(H, H);
    const vae = { tileSize: 16, overlap: 8, stats: 'exact' as const };
    const full = await p.decodeLatent(latent.slice(), H, H, { ...vae, tiling: 'off', attention: 'global' });
    const warnings: string[] = [];
    const global = await p.decodeLatent(latent.slice(), H, H, { ...vae, tiling: 'on', attention: 'global' }, undefined, (m) => warnings.push(m));
    const perTile = await p.decodeLatent(latent.slice(), H, H, { ...vae, tiling: 'on', attention: 'tile' }, undefined, (m) => warnings.push(m));
    assert.deepEqual(warnings, []);
    const diff = (a: typeof full) => absDifference(full.data, a.data);
    const g = diff(global);
    const t = diff(perTile);
    assert.ok(g.max <= 8 && g.mean <= 0.3, `global: ${JSON.stringify(g)}`);
    assert.ok(t.mean >= 5, `per tile: ${JSON.stringify(t)}`);
    // The encoder (the upscaler's path), through its worker: a private method, the pipeline's only entry short of a whole upscale.
    const internals = p as unknown as { pool: { ensure(...c: string[]): Promise<void> }; encodeImage(img: RgbImage, vae: object, warn: (m: string) => void): Promise<Float32Array> };
    await internals.pool.ensure('vaeEncoder', 'vaeDecoder');
    const encWarnings: string[] = [];
    const encFull = await internals.encodeImage(full, { ...vae, tiling: 'off', attention: 'global' }, (m) => encWarnings.push(m));
    const encGlobal = await internals.encodeImage(full, { ...vae, tiling: 'on', attention: 'global' }, (m) => encWarnings.push(m));
    // Estimated statistics run the tiled part's whole tile graph, whose output is the tensor before the attention.
    const encEstimated = await internals.encodeImage(full, { ...vae, stats: 'estimate', tiling: 'on', attention: 'global' }, (m) => encWarnings.push(m));
    assert.deepEqual(encWarnings, []);
    const maxDiff = (a: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - encFull[i]!)), 0);
    assert.equal(encFull.length, 4 * H * H);
    const encMax = maxDiff(encGlobal);
    const estMax = maxDiff(encEstimated);
    console.log(`# encoder, global attention, tiled: max ${encMax.toFixed(4)} from the untiled latent (exact statistics), ${estMax.toFixed(4)} (estimated)`);
    assert.ok(encMax <= 0.06, `encoder, global attention: max ${encMax}`);
    assert.ok(estMax <= 0.2, `encoder, global attention, estimated statistics: max ${estMax}`);
  } finally {
    await p.close();
  }
});

test('the encoder, mirrored: tiled up to its attention, the rest once on the whole latent; matches the untiled latent where per-tile attention does not', async () => {
  const file = writeModel(buildGroupNormVaeEncoder({ seed: 7, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_ENCODER }), 'attn-encoder');
  const be = await localAttentionBackend(file, SESSION, { half: 'encoder' });
  const chunked = await localAttentionBackend(file, SESSION, { half: 'encoder', chunkBytes: 8 * 1024 });
  try {
    assert.ok(!('reason' in be.attentionGraphs), JSON.stringify(be.attentionGraphs));
    // Cut before the attention block: its input, the mid block's first resnet's output.
    assert.equal(be.attentionGraphs.cut, '/encoder/mid_block/resnets.0/Add_output_0');
    const S = 192;
    const image = new Float32Array(3 * S * S);
    for (let c = 0; c < 3; c++) {
      for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) image[(c * S + y) * S + x] = 0.6 * Math.sin(0.03 * x + 0.05 * y + c) + ((x - 120) ** 2 + (y - 70) ** 2 < 2000 ? 0.4 : -0.1);
    }
    const full = await be.run(image.slice(), 3, S, S);
    const diff = (a: Float32Array) => absDifference(a, full.data);
    const warnings: string[] = [];
    const opts = { ...TILES, stats: 'exact' as const, onWarning: (m: string) => warnings.push(m) };
    const global = await encodeTiled(image, S, S, be, { ...opts, attention: 'global' });
    const perTile = await encodeTiled(image, S, S, be, { ...opts, attention: 'tile' });
    const inChunks = await encodeTiled(image, S, S, chunked, { ...opts, attention: 'global' });
    // Estimated statistics: the tiled part's whole tile graph (its output, the tensor before the attention, is the result).
    const estimated = await encodeTiled(image, S, S, be, { ...opts, stats: 'estimate', attention: 'global' });
    assert.deepEqual(warnings, []);
    assert.equal(global.attention, 'global');
    assert.equal(estimated.attention, 'global');
    assert.deepEqual([estimated.channels, estimated.height, estimated.width], [4, 24, 24]);
    assert.deepEqual([global.channels, global.height, global.width], [4, 24, 24]);
    assert.ok(inChunks.headChunks! > 1);
    const g = diff(global.data);
    const t = diff(perTile.data);
    // Latent units (rms about 1). Measured at 256 px: global max 0.035, mean 0.003; per-tile attention max 0.20, mean 0.026.
    assert.ok(g.max <= 0.06 && g.mean <= 0.006, `global: ${JSON.stringify(g)}`);
    assert.ok(t.max >= 0.1 && t.mean >= 0.012, `per tile: ${JSON.stringify(t)}`);
    let chunkDiff = 0;
    for (let i = 0; i < global.data.length; i++) chunkDiff = Math.max(chunkDiff, Math.abs(global.data[i]! - inChunks.data[i]!));
    assert.ok(chunkDiff <= 1e-5, `chunked vs unchunked: ${chunkDiff}`);
  } finally {
    await be.close();
    await chunked.close();
  }
});
