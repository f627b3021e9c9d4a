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
import { externalDataFiles, externalDataFilesFrom, unsafeLocation, type ByteSource } from '../src/graph/external-data.ts';
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

/** `bytes` as a ByteSource that counts what is read. */
function counted(bytes: Uint8Array): ByteSource & { read: ByteSource['read']; bytesRead: number } {
  const source = {
    size: bytes.length,
    bytesRead: 0,
    async read(offset: number, length: number) {
      const part = bytes.slice(offset, Math.min(bytes.length, offset + length));
      source.bytesRead += part.length;
      return part;
    },
  };
  return source;
}

test('read through windows (a stored Blob in a page), a model names the same files as when scanned whole, reading little of its weights', async () => {
  const unet = new Uint8Array(fs.readFileSync(UNET));
  const model = fromBinary(ModelProtoSchema, unet);
  // A large inline tensor first among the initializers, then the UNet's weights moved out but for one kept inline.
  const moved = fromBinary(ModelProtoSchema, unet);
  moveToExternalData(moved, 'model.onnx_data');
  const big = create(TensorProtoSchema, { name: 'unused_big', dims: [1n << 20n], dataType: 1, rawData: new Uint8Array(4 << 20).fill(7) });
  moved.graph!.initializer.unshift(big);
  const cases: [string, Uint8Array][] = [
    ['the shipped UNet (weights inline)', unet],
    ['its weights in model.onnx_data, a 4 MiB tensor inline', toBinary(ModelProtoSchema, moved)],
  ];
  // The model of the test above: every place a tensor can be.
  const inner = create(GraphProtoSchema, { name: 'branch', initializer: [external('w_branch', 'branch.bin')] });
  cases.push(['tensors in attributes, sparse tensors and subgraphs', toBinary(ModelProtoSchema, create(ModelProtoSchema, {
    graph: create(GraphProtoSchema, {
      initializer: [external('w0', 'a.bin'), create(TensorProtoSchema, { name: 'inline', dims: [1n], dataType: 1, rawData: new Uint8Array(4) })],
      sparseInitializer: [create(SparseTensorProtoSchema, { values: external('sv', 'sparse.bin'), indices: create(TensorProtoSchema, { name: 'si', dims: [1n], dataType: 7, rawData: new Uint8Array(8) }), dims: [4n] })],
      node: [
        create(NodeProtoSchema, { opType: 'Constant', output: ['c'], attribute: [create(AttributeProtoSchema, { name: 'value', type: AttributeProto_AttributeType.TENSOR, t: external('c', 'const.bin') })] }),
        create(NodeProtoSchema, { opType: 'If', input: ['cond'], output: ['y'], attribute: [create(AttributeProtoSchema, { name: 'then_branch', type: AttributeProto_AttributeType.GRAPH, g: inner })] }),
      ],
    }),
  }))]);
  const noLocation = external('w', 'x.bin');
  noLocation.externalData = noLocation.externalData.filter((e) => e.key !== 'location');
  cases.push(['an external tensor with no location', toBinary(ModelProtoSchema, create(ModelProtoSchema, { graph: create(GraphProtoSchema, { initializer: [noLocation] }) }))]);
  for (const [what, bytes] of cases) {
    const whole = externalDataFiles(bytes);
    // Windows of 64 KiB (the default), and of 32 bytes, where every message but the smallest is walked field by field.
    for (const window of [undefined, 32]) {
      const r = await externalDataFilesFrom(counted(bytes), window);
      assert.deepEqual(r.files, whole, `${what}, window ${window ?? 'default'}`);
    }
  }
  assert.deepEqual(externalDataFiles(cases[1]![1]), ['model.onnx_data']);
  assert.deepEqual(externalDataFiles(cases[2]![1]), ['const.bin', 'branch.bin', 'a.bin', 'sparse.bin']);
  assert.deepEqual(externalDataFiles(cases[3]![1]), ['']);
  // The inline weights are skipped: of the shipped UNet (all inline) and of the 4 MiB tensor little is read.
  for (const [what, bytes] of cases.slice(0, 2)) {
    const source = counted(bytes);
    const r = await externalDataFilesFrom(source);
    const tensors = model.graph!.initializer.length;
    console.log(`# ${what}: ${bytes.length} bytes, ${source.bytesRead} read in ${r.reads} reads`);
    assert.ok(source.bytesRead < bytes.length / 2, `${what}: read ${source.bytesRead} of ${bytes.length}`);
    assert.ok(r.reads <= tensors + 10, `${what}: ${r.reads} reads for ${tensors} weights`);
  }
  const hugeInline = toBinary(ModelProtoSchema, create(ModelProtoSchema, { graph: create(GraphProtoSchema, { initializer: [big] }) }));
  const source = counted(hugeInline);
  assert.deepEqual((await externalDataFilesFrom(source)).files, []);
  assert.ok(source.bytesRead <= 2 * 65536, `a 4 MiB tensor: ${source.bytesRead} bytes read`);
});

test('a model cut short is no readable model through windows either', async () => {
  const bytes = toBinary(ModelProtoSchema, create(ModelProtoSchema, { graph: create(GraphProtoSchema, { initializer: [external('w0', 'a.bin'), create(TensorProtoSchema, { name: 'inline', dims: [1n], dataType: 1, rawData: new Uint8Array(4096) })] }) }));
  const cut = bytes.subarray(0, bytes.length - 100);
  assert.throws(() => externalDataFiles(cut));
  for (const window of [undefined, 32]) await assert.rejects(externalDataFilesFrom(counted(cut), window), /runs past/);
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
