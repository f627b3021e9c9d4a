/**
 * External-data files cut into pieces for ONNX Runtime Web (src/graph/external-pieces.ts), which reads no offset past
 * 4 GiB of one file. Checked by ONNX Runtime itself: the shipped UNet with its weights in one file, cut at a small
 * limit into many pieces written as files, computes what the uncut model computes, bit for bit; and on the rewritten
 * entries, against the file's own bytes. And a model file's inline weights read in place as external data of the file's
 * own bytes (src/graph/inline-weights.ts), checked the same way.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, StringStringEntryProtoSchema, type ModelProto, type TensorProto } from 'onnx-buf';
import ort from 'onnxruntime-node';
import { externalPieces, pieceName } from '../src/graph/external-pieces.ts';
import { INLINE_WEIGHTS_FILE, inlineWeightsAsExternal } from '../src/graph/inline-weights.ts';
import { moveToExternalData } from './fixtures/onnx-graph.ts';
import { unetFeeds } from './fixtures/graph-run.ts';
import { ROOT } from './helpers/demo-site.ts';
import { tempDir } from './helpers/models.ts';

const UNET = path.join(ROOT, 'models', 'shapes-128', 'unet', 'model.onnx');

/** The shipped UNet with its weights of 1 KiB and more in `model.onnx_data`: the model's bytes and the file's. */
function externalUnet(): { model: ModelProto; bytes: Uint8Array; data: Uint8Array } {
  const model = fromBinary(ModelProtoSchema, fs.readFileSync(UNET));
  const data = moveToExternalData(model, 'model.onnx_data');
  return { model, bytes: toBinary(ModelProtoSchema, model), data };
}

function entries(t: TensorProto): Record<string, string> {
  return Object.fromEntries(t.externalData.map((e) => [e.key, e.value]));
}

/** Runs the model file in `dir` (its external files beside it) once, on the CPU with one thread. */
async function runFile(dir: string, model: Uint8Array, files: { path: string; data: Uint8Array }[], feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'model.onnx'), model);
  for (const f of files) fs.writeFileSync(path.join(dir, f.path), f.data);
  const s = await ort.InferenceSession.create(path.join(dir, 'model.onnx'), { executionProviders: ['cpu'], intraOpNumThreads: 1, interOpNumThreads: 1, logSeverityLevel: 4 });
  try {
    const r = await s.run(feeds);
    return r[s.outputNames[0]!]!.data as Float32Array;
  } finally {
    await s.release();
  }
}

test('a weights file over the limit is cut between tensors into views of it, and ONNX Runtime computes the same bits from the pieces', async () => {
  const { model, bytes, data } = externalUnet();
  const limit = 256 * 1024;
  const r = externalPieces(bytes, [{ path: 'model.onnx_data', data }], limit);
  const count = r.files.length;
  assert.ok(count >= 5, `the ${data.length} bytes make several pieces (${count})`);
  assert.deepEqual(r.cut, [{ path: 'model.onnx_data', bytes: data.length, pieces: count }]);
  assert.deepEqual(r.files.map((f) => f.path), Array.from({ length: count }, (_, i) => pieceName('model.onnx_data', i)));
  for (const f of r.files) {
    assert.equal(f.data.buffer, data.buffer, `${f.path} is a view of the file, not a copy`);
  }
  // Every rewritten entry names a piece whose bytes at its offset are the tensor's bytes in the file.
  const before = new Map(model.graph!.initializer.map((t) => [t.name, entries(t)]));
  const after = fromBinary(ModelProtoSchema, r.model);
  let external = 0;
  for (const t of after.graph!.initializer) {
    const was = before.get(t.name)!;
    if (was['location'] === undefined) {
      assert.equal(t.externalData.length, 0, `${t.name} stays inside the model`);
      continue;
    }
    external++;
    const e = entries(t);
    const piece = r.files.find((f) => f.path === e['location']);
    assert.ok(piece, `${t.name} names a piece (${e['location']})`);
    const [offset, length] = [Number(e['offset']), Number(e['length'])];
    assert.equal(length, Number(was['length']));
    assert.ok(offset + length <= piece.data.length, `${t.name} lies inside its piece`);
    const at = Number(was['offset']);
    assert.deepEqual(piece.data.subarray(offset, offset + length), data.subarray(at, at + length), `${t.name}'s bytes`);
  }
  assert.equal(external, [...before.values()].filter((e) => e['location'] !== undefined).length);
  // No piece over the limit unless one tensor alone is larger.
  const largest = Math.max(...[...before.values()].map((e) => Number(e['length'] ?? 0)));
  for (const f of r.files) assert.ok(f.data.length <= Math.max(limit, largest), `${f.path}: ${f.data.length} bytes`);

  const feeds = unetFeeds(model, 16, 64);
  const dir = tempDir('external-pieces');
  const whole = await runFile(path.join(dir, 'whole'), bytes, [{ path: 'model.onnx_data', data }], feeds);
  const cut = await runFile(path.join(dir, 'cut'), r.model, r.files, feeds);
  assert.deepEqual(cut, whole, 'the pieces compute the uncut model bit for bit');
  // The check can fail: the entries left at their offsets in the file read other bytes from the pieces.
  const wrong = fromBinary(ModelProtoSchema, r.model);
  for (const t of wrong.graph!.initializer) {
    const was = before.get(t.name)!;
    for (const e of t.externalData) if (e.key === 'offset') e.value = was['offset']!;
  }
  await assert.rejects(runFile(path.join(dir, 'wrong'), toBinary(ModelProtoSchema, wrong), r.files, feeds), /offset|length|out of bounds|external/i);
});

test('files within the limit are handed over as they are; a tensor larger than the limit gets a piece of its own', () => {
  const { bytes, data } = externalUnet();
  const same = externalPieces(bytes, [{ path: 'model.onnx_data', data }]);
  assert.equal(same.model, bytes, 'the model bytes are untouched');
  assert.deepEqual(same.cut, []);
  // At a limit below every tensor's size, each tensor is a piece.
  const { model } = externalUnet();
  const tensors = model.graph!.initializer.filter((t) => t.externalData.length > 0);
  const r = externalPieces(bytes, [{ path: 'model.onnx_data', data }], 1);
  assert.equal(r.files.length, tensors.length);
  for (const [i, t] of tensors.entries()) assert.equal(r.files[i]!.data.length, Number(entries(t)['length']));
});

test('an entry without a length is sized by its shape and type; a tensor outside its file is named', () => {
  const { model, data } = externalUnet();
  for (const t of model.graph!.initializer) t.externalData = t.externalData.filter((e) => e.key !== 'length');
  const r = externalPieces(toBinary(ModelProtoSchema, model), [{ path: 'model.onnx_data', data }], 64 * 1024);
  for (const t of fromBinary(ModelProtoSchema, r.model).graph!.initializer) {
    if (t.externalData.length === 0) continue;
    const n = t.dims.reduce((a, d) => a * Number(d), 1);
    assert.equal(Number(entries(t)['length']), n * 4, `${t.name}: float32 x ${n}`);
  }
  const big = model.graph!.initializer.find((t) => t.externalData.length > 0)!;
  big.externalData.push(create(StringStringEntryProtoSchema, { key: 'length', value: String(data.length + 4) }));
  assert.throws(() => externalPieces(toBinary(ModelProtoSchema, model), [{ path: 'model.onnx_data', data }], 64 * 1024), new RegExp(`external tensor ${big.name} lies outside model.onnx_data`));
});

test("a model file's inline weights read in place as external data (src/graph/inline-weights.ts): views of the file's bytes, and ONNX Runtime computes the same bits", async () => {
  const bytes = new Uint8Array(fs.readFileSync(UNET));
  const r = inlineWeightsAsExternal(bytes);
  assert.ok(r);
  assert.equal(r.file.path, INLINE_WEIGHTS_FILE);
  assert.equal(r.file.data, bytes, "the model file's own bytes, not a copy");
  // Decoded independently (onnx-buf, a copy of the bytes): every tensor of 1 KiB or more points at its raw_data.
  const original = fromBinary(ModelProtoSchema, bytes.slice());
  const after = fromBinary(ModelProtoSchema, r.model);
  const byName = new Map(original.graph!.initializer.map((t) => [t.name, t]));
  let moved = 0;
  let movedBytes = 0;
  for (const t of after.graph!.initializer) {
    const was = byName.get(t.name)!;
    if (was.rawData.length < 1024) {
      assert.deepEqual(t.rawData, was.rawData, `${t.name} stays inside the model`);
      assert.equal(t.externalData.length, 0);
      continue;
    }
    const e = entries(t);
    assert.equal(e['location'], INLINE_WEIGHTS_FILE);
    assert.equal(t.rawData.length, 0);
    const [offset, length] = [Number(e['offset']), Number(e['length'])];
    assert.deepEqual(bytes.subarray(offset, offset + length), was.rawData, `${t.name}'s bytes at ${offset}`);
    moved++;
    movedBytes += length;
  }
  assert.deepEqual([r.tensors, r.bytes], [moved, movedBytes]);
  assert.ok(moved > 100 && movedBytes > bytes.length * 0.9, `${moved} tensors, ${movedBytes} of ${bytes.length} bytes`);
  assert.ok(r.model.length < bytes.length / 10, `the model without them: ${r.model.length} bytes`);

  const feeds = unetFeeds(original, 16, 64);
  const dir = tempDir('inline-weights');
  const whole = await runFile(path.join(dir, 'whole'), bytes, [], feeds);
  const inPlace = await runFile(path.join(dir, 'in-place'), r.model, [r.file], feeds);
  assert.deepEqual(inPlace, whole, 'read in place, the weights compute what the file computes, bit for bit');
  // The check can fail: every offset one float further on reads other values.
  const shifted = fromBinary(ModelProtoSchema, r.model);
  for (const t of shifted.graph!.initializer) for (const e of t.externalData) if (e.key === 'offset') e.value = String(Number(e.value) + 4);
  const wrong = await runFile(path.join(dir, 'shifted'), toBinary(ModelProtoSchema, shifted), [r.file], feeds).catch((err: unknown) => err);
  assert.ok(!(wrong instanceof Float32Array) || wrong.some((v, i) => v !== whole[i]), 'shifted offsets change the result');

  // A model that keeps its weights outside already is left as it is.
  assert.equal(inlineWeightsAsExternal(externalUnet().bytes), undefined);
});
