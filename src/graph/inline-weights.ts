/**
 * A model file's inline weights handed to ONNX Runtime Web as external data read in place. ONNX Runtime Web copies a
 * model's bytes into its WebAssembly memory and parses them there, so a file with its weights inline is held at least
 * twice in that memory (4 GB at most): an SD 1.5 UNet in float16, one file of 1.72 GB, failed to open on the
 * WebAssembly provider ("std::bad_alloc", bench/web-large-unet.ts), where the same weights as external data open.
 * Here the graph's large initializers become external tensors of one file, the model file's own bytes (no copy: each
 * tensor's offset is where its raw_data lies in them), and the model is written again without them (small).
 * Portable: no Node APIs.
 */
import { create, fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, StringStringEntryProtoSchema, TensorProto_DataLocation } from 'onnx-buf';
import type { ExternalFileBytes } from './external-pieces.ts';
import { modelBytes } from './model-bytes.ts';

/** The name the model file's bytes are mounted under as the weights' external-data file. */
export const INLINE_WEIGHTS_FILE = 'asgd-inline-weights';

/** Initializers with this many bytes of raw_data or more are read in place; smaller ones stay in the model. */
const IN_PLACE_BYTES = 1024;

export interface InlineWeights {
  /** The model without those tensors' bytes, naming INLINE_WEIGHTS_FILE for them. */
  model: Uint8Array;
  /** The model file's bytes as that external-data file. */
  file: ExternalFileBytes;
  /** Tensors read in place, and their bytes. */
  tensors: number;
  bytes: number;
}

/**
 * `bytes` with the top graph's initializers of IN_PLACE_BYTES or more read in place from `bytes` itself; undefined
 * where there are none, or where the model already keeps weights outside (external data: handed over as it is).
 */
export function inlineWeightsAsExternal(bytes: Uint8Array): InlineWeights | undefined {
  const model = fromBinary(ModelProtoSchema, bytes);
  const inits = model.graph?.initializer ?? [];
  if (inits.some((t) => t.dataLocation === TensorProto_DataLocation.EXTERNAL)) return undefined;
  let tensors = 0;
  let moved = 0;
  for (const t of inits) {
    const raw = t.rawData;
    // The parser gives views of the bytes it read: a tensor's offset is where its values lie in the file.
    if (raw.length < IN_PLACE_BYTES || raw.buffer !== bytes.buffer) continue;
    const offset = raw.byteOffset - bytes.byteOffset;
    if (offset < 0 || offset + raw.length > bytes.length) continue;
    t.dataLocation = TensorProto_DataLocation.EXTERNAL;
    t.externalData = [
      create(StringStringEntryProtoSchema, { key: 'location', value: INLINE_WEIGHTS_FILE }),
      create(StringStringEntryProtoSchema, { key: 'offset', value: String(offset) }),
      create(StringStringEntryProtoSchema, { key: 'length', value: String(raw.length) }),
    ];
    t.rawData = new Uint8Array(0);
    tensors++;
    moved += raw.length;
  }
  if (tensors === 0) return undefined;
  return { model: modelBytes(model), file: { path: INLINE_WEIGHTS_FILE, data: bytes }, tensors, bytes: moved };
}
