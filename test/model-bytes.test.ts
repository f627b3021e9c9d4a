/**
 * modelBytes (src/graph/model-bytes.ts) writes a model's large initializers by hand, for speed: the bytes must parse
 * to the model toBinary's bytes parse to, run in ONNX Runtime to the same output, and leave the model as it was.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { clone, create, equals, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, TensorProtoSchema } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { modelBytes, modelParts } from '../src/graph/model-bytes.ts';
import { SMALL_VAE_DECODER, buildGroupNormVaeDecoder } from './fixtures/groupnorm-vae.ts';

const decoder = () => buildGroupNormVaeDecoder({ seed: 2, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_DECODER, midAttention: true });

test('the bytes parse to the model toBinary writes, the parts join to the bytes, and the model is left as it was', () => {
  const m = decoder();
  // One initializer whose raw_data needs a 4-byte length (2,000,000 bytes) next to the decoder's smaller ones.
  m.graph!.initializer.push(create(TensorProtoSchema, { name: 'big', dataType: 1, dims: [500000n], rawData: Uint8Array.from({ length: 2_000_000 }, (_, i) => i % 251) }));
  const before = clone(ModelProtoSchema, m);
  const bytes = modelBytes(m);
  assert.ok(equals(ModelProtoSchema, m, before), 'the model is unchanged');
  const reference = toBinary(ModelProtoSchema, m);
  assert.equal(bytes.length, reference.length);
  assert.ok(equals(ModelProtoSchema, fromBinary(ModelProtoSchema, bytes), fromBinary(ModelProtoSchema, reference)));
  assert.notDeepEqual(bytes, reference, 'written in another field order (else this test checks nothing new)');
  const parts = modelParts(m);
  assert.ok(parts.length > 3);
  assert.deepEqual(Buffer.concat(parts), Buffer.from(bytes));
  // Nothing large: the library's bytes as they are.
  const small = create(ModelProtoSchema, { irVersion: 8n, graph: { name: 'g', initializer: [create(TensorProtoSchema, { name: 's', dataType: 1, dims: [2n], rawData: new Uint8Array(8) })] } });
  assert.deepEqual(modelBytes(small), toBinary(ModelProtoSchema, small));
});

test("ONNX Runtime runs the bytes to the output of the library's bytes", async () => {
  const m = decoder();
  const latent = Float32Array.from({ length: 4 * 8 * 8 }, (_, i) => Math.cos(i));
  const run = async (bytes: Uint8Array) => {
    const s = await ort.InferenceSession.create(bytes, { logSeverityLevel: 3 });
    try {
      return (await s.run({ latent_sample: new ort.Tensor('float32', latent, [1, 4, 8, 8]) }))['sample']!.data as Float32Array;
    } finally {
      await s.release();
    }
  };
  assert.deepEqual(await run(modelBytes(m)), await run(toBinary(ModelProtoSchema, m)));
});
