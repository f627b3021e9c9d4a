/**
 * A model serialized with its weights inline, fast. The protobuf library's writer copies a large bytes field
 * slowly (about 10-20 ms per MB here: 2.2-4.3 s for an SD VAE decoder in float32, 198 MB), and graph surgery in the browser, and
 * the float32 conversion of a VAE, write models whose weights are hundreds of megabytes. So the top graph's large
 * initializers are written here: each tensor's other fields by the library, its raw_data appended by hand, the
 * graph's and the model's other fields by the library too, the parts joined in one allocation. Protobuf readers
 * take fields in any order, so the bytes parse to the same model. Portable: no Node APIs.
 */
import { clearField, toBinary } from '@bufbuild/protobuf';
import { GraphProtoSchema, ModelProtoSchema, TensorProtoSchema, type ModelProto } from 'onnx-buf';
import { concatBytes } from '../core/bytes.ts';

/** raw_data this large or larger is written by hand; smaller tensors are left to the library. */
const HAND_WRITTEN_BYTES = 4096;
const LEN = 2; // wire type of length-delimited fields
const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const TENSOR_RAW_DATA = 9;

/** The serialized model, as toBinary(ModelProtoSchema, model) would parse (its fields in another order). */
export function modelBytes(model: ModelProto): Uint8Array {
  return concatBytes(modelParts(model));
}

/**
 * modelBytes' bytes as parts to write one after another (a file written from them needs no allocation of the
 * whole: a new buffer of hundreds of megabytes costs about 5 ms per MB of page faults on this project's machines).
 */
export function modelParts(model: ModelProto): Uint8Array[] {
  const graph = model.graph;
  if (!graph || !graph.initializer.some((t) => t.rawData.length >= HAND_WRITTEN_BYTES)) return [toBinary(ModelProtoSchema, model)];
  // Each initializer: [its fields but raw_data] [raw_data's tag and length] [raw_data].
  const tensors = graph.initializer.map((t) => {
    const raw = t.rawData;
    if (raw.length < HAND_WRITTEN_BYTES) return { head: toBinary(TensorProtoSchema, t), raw: undefined };
    clearField(t, TensorProtoSchema.field.rawData);
    try {
      return { head: concatBytes([toBinary(TensorProtoSchema, t), fieldHeader(TENSOR_RAW_DATA, raw.length)]), raw };
    } finally {
      t.rawData = raw;
    }
  });
  const initializers = graph.initializer;
  graph.initializer = [];
  let graphRest: Uint8Array;
  try {
    graphRest = toBinary(GraphProtoSchema, graph);
  } finally {
    graph.initializer = initializers;
  }
  const parts: Uint8Array[] = [graphRest];
  for (const t of tensors) {
    parts.push(fieldHeader(GRAPH_INITIALIZER, t.head.length + (t.raw?.length ?? 0)), t.head);
    if (t.raw) parts.push(t.raw);
  }
  const graphLength = parts.reduce((n, p) => n + p.length, 0);
  clearField(model, ModelProtoSchema.field.graph);
  let modelRest: Uint8Array;
  try {
    modelRest = toBinary(ModelProtoSchema, model);
  } finally {
    model.graph = graph;
  }
  return [modelRest, fieldHeader(MODEL_GRAPH, graphLength), ...parts];
}

/** A length-delimited field's tag and length. */
function fieldHeader(field: number, length: number): Uint8Array {
  return Uint8Array.from([...varint((field << 3) | LEN), ...varint(length)]);
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return out;
}

