/**
 * The external-data scan (src/graph/external-data.ts): which files a serialized model keeps weights in, read from
 * the wire format without decoding the model, checked against onnx-buf's full decoding; which locations a page
 * may fetch; and how the browser's device worker names running out of memory with such a model.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema, AttributeProto_AttributeType, GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, SparseTensorProtoSchema, StringStringEntryProtoSchema, TensorProtoSchema,
  type GraphProto, type ModelProto, type TensorProto,
} from 'onnx-buf';
import { externalDataFiles, unsafeLocation } from '../src/graph/external-data.ts';
import { outOfMemory } from '../src/browser/device/wire-error.ts';
import { AsgdError } from '../src/core/errors.ts';
import { moveToExternalData } from './fixtures/onnx-graph.ts';
import { ROOT } from './helpers/demo-site.ts';

const UNET = path.join(ROOT, 'models', 'shapes-128', 'unet', 'model.onnx');

function external(name: string, location: string, offset = 0, length = 16): TensorProto {
  return create(TensorProtoSchema, {
    name, dims: [4n], dataType: 1, dataLocation: 1,
    externalData: [
      create(StringStringEntryProtoSchema, { key: 'location', value: location }),
      create(StringStringEntryProtoSchema, { key: 'offset', value: String(offset) }),
      create(StringStringEntryProtoSchema, { key: 'length', value: String(length) }),
    ],
  });
}

/** The same question answered by decoding the whole model with onnx-buf: the independent reference. */
function decodedLocations(bytes: Uint8Array): string[] {
  const found = new Set<string>();
  const tensor = (t: TensorProto | undefined) => {
    if (t?.dataLocation === 1) found.add(t.externalData.find((e) => e.key === 'location')?.value ?? '');
  };
  const graph = (g: GraphProto | undefined) => {
    if (!g) return;
    for (const n of g.node) {
      for (const a of n.attribute) {
        tensor(a.t);
        a.tensors.forEach(tensor);
        graph(a.g);
        a.graphs.forEach(graph);
        tensor(a.sparseTensor?.values);
        tensor(a.sparseTensor?.indices);
      }
    }
    g.initializer.forEach(tensor);
    for (const s of g.sparseInitializer) {
      tensor(s.values);
      tensor(s.indices);
    }
  };
  graph(fromBinary(ModelProtoSchema, bytes).graph);
  return [...found].sort();
}

test('the shipped UNet keeps its weights itself; moved to model.onnx_data, that file is named', () => {
  const bytes = fs.readFileSync(UNET);
  assert.deepEqual(externalDataFiles(bytes), []);
  const model = fromBinary(ModelProtoSchema, bytes);
  const blob = moveToExternalData(model, 'model.onnx_data');
  assert.ok(blob.length > 5_000_000, `the UNet's weights moved out (${blob.length} bytes)`);
  const moved = toBinary(ModelProtoSchema, model);
  assert.deepEqual(externalDataFiles(moved), ['model.onnx_data']);
  assert.deepEqual(decodedLocations(moved), ['model.onnx_data']);
});

test('external tensors are found wherever a model holds tensors: initializers, Constant attributes, sparse tensors, subgraphs', () => {
  const inner = create(GraphProtoSchema, { name: 'branch', initializer: [external('w_branch', 'branch.bin')] });
  const model: ModelProto = create(ModelProtoSchema, {
    irVersion: 8n,
    graph: create(GraphProtoSchema, {
      name: 'g',
      initializer: [external('w0', 'a.bin'), external('w1', 'a.bin', 16), create(TensorProtoSchema, { name: 'inline', dims: [1n], dataType: 1, rawData: new Uint8Array(4) })],
      sparseInitializer: [create(SparseTensorProtoSchema, { values: external('sv', 'sparse.bin'), indices: create(TensorProtoSchema, { name: 'si', dims: [1n], dataType: 7, rawData: new Uint8Array(8) }), dims: [4n] })],
      node: [
        create(NodeProtoSchema, { opType: 'Constant', output: ['c'], attribute: [create(AttributeProtoSchema, { name: 'value', type: AttributeProto_AttributeType.TENSOR, t: external('c', 'const.bin') })] }),
        create(NodeProtoSchema, { opType: 'If', input: ['cond'], output: ['y'], attribute: [create(AttributeProtoSchema, { name: 'then_branch', type: AttributeProto_AttributeType.GRAPH, g: inner })] }),
      ],
    }),
  });
  const bytes = toBinary(ModelProtoSchema, model);
  assert.deepEqual([...externalDataFiles(bytes)].sort(), decodedLocations(bytes));
  // In the order the file holds them: onnx.proto writes a graph's nodes before its initializers.
  assert.deepEqual(externalDataFiles(bytes), ['const.bin', 'branch.bin', 'a.bin', 'sparse.bin']);
});

test('an external tensor with no location is reported as "", which no page may fetch', () => {
  const t = external('w', 'x.bin');
  t.externalData = t.externalData.filter((e) => e.key !== 'location');
  const bytes = toBinary(ModelProtoSchema, create(ModelProtoSchema, { graph: create(GraphProtoSchema, { initializer: [t] }) }));
  assert.deepEqual(externalDataFiles(bytes), ['']);
  assert.match(unsafeLocation('')!, /names no file/);
});

test('locations a page may fetch: relative paths inside the model folder only', () => {
  for (const ok of ['model.onnx_data', 'weights/part-1.bin', 'a..b.bin']) assert.equal(unsafeLocation(ok), undefined, ok);
  for (const [bad, why] of [['../secret.bin', /leaves the model's folder/], ['weights/../../x', /leaves the model's folder/], ['..\\x.bin', /leaves/], ['/etc/passwd', /not a path relative/], ['https://example.org/w.bin', /not a path relative/], ['C:\\w.bin', /not a path relative/]] as const) {
    assert.match(unsafeLocation(bad) ?? '', why, bad);
  }
});

test("ONNX Runtime Web's allocation failure becomes an error naming the memory and the way out; other errors pass unchanged", () => {
  const bad = new Error('failed to call OrtRun(). ERROR_CODE: 6, ERROR_MESSAGE: std::bad_alloc');
  const wasm = outOfMemory(bad, 'wasm', 'unet') as AsgdError;
  assert.ok(wasm instanceof AsgdError);
  assert.equal(wasm.kind, 'device');
  assert.equal(wasm.parameter, 'provider');
  assert.match(wasm.message, /^ONNX Runtime Web ran out of memory \(unet\): failed to call OrtRun\(\)/);
  assert.match(wasm.hint!, /WebAssembly holds at most 4 GB: use provider 'webgpu'/);
  assert.equal(wasm.cause, bad);
  assert.match((outOfMemory(bad, 'webgpu', 'unet') as AsgdError).hint!, /^Use a smaller size/);
  const other = new Error('Invalid input shape');
  assert.equal(outOfMemory(other, 'wasm', 'unet'), other);
  const named = new AsgdError('ONNX Runtime Web cannot load unet: std::bad_alloc', { kind: 'model' });
  assert.equal(outOfMemory(named, 'wasm', 'loading unet'), named);
});
