/**
 * A model file's graph inputs read without loading it (src/node/model/onnx-inputs.ts), and the server's model facts
 * that use it: a static-shape export without a sample_size in its config.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, ValueInfoProtoSchema } from 'onnx-buf';
import { smallValueInfo } from '../src/graph/small-model.ts';
import { readOnnxInputs } from '../src/node/model/onnx-inputs.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { openSession, releaseSession } from '../src/onnx/session.ts';
import { readModelFolderFacts } from '../src/server/model-facts.ts';
import { TINY_TEXT } from './fixtures/index.ts';
import { writeTinySdModel } from './fixtures/tiny-sd.ts';
import { buildTinyUnet } from './fixtures/tiny-unet.ts';
import { tempDir } from './helpers/models.ts';

const SHIPPED_UNET = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128', 'unet', 'model.onnx');

test("the shipped UNet's inputs as ONNX Runtime reports them", async () => {
  const s = await openSession(SHIPPED_UNET, 'unet', { provider: 'cpu', threads: 1 });
  try {
    const types: Record<string, number> = { float32: 1, float16: 10, int64: 7 };
    assert.deepEqual(readOnnxInputs(SHIPPED_UNET), s.inputs.map((i) => ({ name: i.name, elemType: types[i.type], dims: [...i.shape] })));
  } finally {
    await releaseSession(s);
  }
});

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 128) {
    out.push((n % 128) | 128);
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

test('inline weights are skipped, not read: inputs after a 3 GiB initializer (a sparse file) come back at once', () => {
  const input = toBinary(ValueInfoProtoSchema, smallValueInfo({ name: 'sample', type: 'float16', dims: [2, 4, 'height', 96] }));
  const weights = 3 * 2 ** 30;
  const initField = [0x2a, ...varint(weights)]; // GraphProto.initializer (5), length-delimited; its bytes a hole
  const inputField = [0x5a, ...varint(input.length), ...input]; // GraphProto.input (11)
  const graphLength = initField.length + weights + inputField.length;
  const head = Buffer.from([0x08, 0x08, 0x3a, ...varint(graphLength), ...initField]); // ir_version 8, then ModelProto.graph (7)
  const file = path.join(tempDir('onnx-inputs'), 'big.onnx');
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, head, 0, head.length, 0);
    fs.writeSync(fd, Buffer.from(inputField), 0, inputField.length, head.length + weights);
  } finally {
    fs.closeSync(fd);
  }
  const t0 = performance.now();
  assert.deepEqual(readOnnxInputs(file), [{ name: 'sample', elemType: 10, dims: [2, 4, 'height', 96] }]);
  assert.ok(performance.now() - t0 < 5000, 'read by offsets, not through the weights');
  fs.rmSync(file);
  // A file cut inside a field is an error, not a silent empty list.
  const cut = path.join(tempDir('onnx-inputs'), 'cut.onnx');
  fs.writeFileSync(cut, Buffer.from([0x3a, 0x10, 0x5a])); // a graph of 16 bytes declared, 1 present
  assert.throws(() => readOnnxInputs(cut), /runs past|ends inside/);
});

test("the server's facts of a static-shape export without sample_size: its size, as the pipeline finds it", async () => {
  const dir = tempDir('static-facts');
  await writeTinySdModel(dir, { variant: 'static-shape' });
  // A static size other than the family's default (512 px), and no sample_size to read it from.
  const unet = buildTinyUnet({ seed: 7, floatType: 'float32', crossAttentionDim: TINY_TEXT.hidden, timestep: 'int64', staticShape: { batch: 2, height: 48, width: 48 } });
  fs.writeFileSync(path.join(dir, 'unet', 'model.onnx'), toBinary(ModelProtoSchema, unet));
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'unet', 'config.json'), 'utf8')) as Record<string, unknown>;
  delete config['sample_size'];
  fs.writeFileSync(path.join(dir, 'unet', 'config.json'), JSON.stringify(config));
  const facts = readModelFolderFacts(dir);
  assert.deepEqual([facts.nativeWidth, facts.nativeHeight], [384, 384]);
  const p = await loadPipeline(dir, { threads: 1, attentionProbe: false });
  try {
    assert.deepEqual([p.info.nativeWidth, p.info.nativeHeight], [facts.nativeWidth, facts.nativeHeight]);
  } finally {
    await p.close();
  }
  // A dynamic export without sample_size: the family's default, as before.
  const dyn = tempDir('dynamic-facts');
  await writeTinySdModel(dyn);
  const c = JSON.parse(fs.readFileSync(path.join(dyn, 'unet', 'config.json'), 'utf8')) as Record<string, unknown>;
  delete c['sample_size'];
  fs.writeFileSync(path.join(dyn, 'unet', 'config.json'), JSON.stringify(c));
  assert.equal(readModelFolderFacts(dyn).nativeWidth, 512);
});
