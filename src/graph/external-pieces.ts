/**
 * External-data files cut into pieces that ONNX Runtime Web can read. Its WebAssembly build reads a tensor's offset
 * in its file as a 32-bit number: on the WebGPU provider a tensor past 4 GiB of one file gets the bytes 4 GiB before
 * it, silently; on the WebAssembly provider the session fails to open ("Integer overflow"). An SDXL UNet in float16
 * keeps 5.1 GB in one `model.onnx_data` (measured in Chromium: bench/web-external-offsets.ts, and
 * test/browser-external-data.test.ts). So a file over the limit is handed over as pieces of at most `limit` bytes, each a view of the file's bytes (no
 * copy), cut between tensors, and the model's external entries are rewritten to name the piece that holds their
 * tensor and the offset in it. Portable: no Node APIs.
 */
import { create, fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, StringStringEntryProtoSchema, TensorProto_DataLocation, type GraphProto, type TensorProto } from 'onnx-buf';
import { externalDataEntry } from './float32-upcast.ts';
import { modelBytes } from './model-bytes.ts';

/** One external-data file: its location as the model names it, and its bytes. */
export interface ExternalFileBytes {
  path: string;
  data: Uint8Array;
}

/** Pieces of at most 1 GiB: every offset in them far under the 4 GiB that the runtime's offsets reach. */
export const EXTERNAL_PIECE_BYTES = 2 ** 30;

/** Where each piece lies in its file: the name it is mounted under, the file's location, and its byte range. */
export interface PiecePlan {
  /** The model with its entries naming the pieces (the bytes given, untouched, where no file was cut). */
  model: Uint8Array;
  pieces: { path: string; file: string; start: number; end: number }[];
  /** Files cut, and the pieces they made. */
  cut: { path: string; bytes: number; pieces: number }[];
}

export interface ExternalPieces {
  /** The model with its entries naming the pieces (the bytes given, untouched, where no file was cut). */
  model: Uint8Array;
  /** The files to hand over: the small ones as they were, the large ones as their pieces. */
  files: ExternalFileBytes[];
  /** Files cut, and the pieces they made. */
  cut: PiecePlan['cut'];
}

/** Bytes per element of ONNX's data types (0: not fixed, as strings); 4-bit types are counted in halves below. */
const ELEMENT_BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 14: 8, 15: 16, 16: 2, 17: 1, 18: 1, 19: 1, 20: 1 };
const HALF_BYTE_TYPES = new Set([21, 22, 23]);

/** The name a piece is mounted under: the file's location and the piece's number. */
export function pieceName(path: string, index: number): string {
  return `${path}.asgd-piece${index}`;
}

/**
 * `files` with every file over `limit` bytes cut into pieces (see the module's comment), and `model` rewritten to
 * name them. A tensor larger than `limit` gets a piece of its own. Throws where a tensor lies outside its file, or
 * its size cannot be told (no length entry and a type of no fixed size).
 */
export function externalPieces(model: Uint8Array, files: ExternalFileBytes[], limit = EXTERNAL_PIECE_BYTES): ExternalPieces {
  const plan = planPieces(model, files.map((f) => ({ path: f.path, bytes: f.data.length })), limit);
  if (plan.cut.length === 0) return { model, files, cut: [] };
  const data = new Map(files.map((f) => [f.path, f.data]));
  const cutFiles = new Set(plan.cut.map((c) => c.path));
  return {
    model: plan.model,
    files: [...files.filter((f) => !cutFiles.has(f.path)), ...plan.pieces.map((p) => ({ path: p.path, data: data.get(p.file)!.subarray(p.start, p.end) }))],
    cut: plan.cut,
  };
}

/**
 * The pieces externalPieces cuts, planned from the files' sizes alone (a file need not be in memory to plan it), in
 * file order, each file's pieces in offset order.
 */
export function planPieces(model: Uint8Array, files: { path: string; bytes: number }[], limit = EXTERNAL_PIECE_BYTES): PiecePlan {
  const large = new Map(files.filter((f) => f.bytes > limit).map((f) => [f.path, f.bytes]));
  if (large.size === 0) return { model, pieces: [], cut: [] };
  const proto = fromBinary(ModelProtoSchema, model);
  const byFile = new Map<string, { tensor: TensorProto; offset: number; length: number }[]>();
  for (const tensor of externalTensors(proto.graph)) {
    const entry = externalDataEntry(tensor);
    const path = entry.location ?? '';
    const bytes = large.get(path);
    if (bytes === undefined) continue;
    const offset = entry.offset;
    const length = entry.length ?? tensorBytes(tensor);
    if (!(Number.isSafeInteger(offset) && offset >= 0 && Number.isSafeInteger(length) && length >= 0 && offset + length <= bytes)) {
      throw new Error(`external tensor ${tensor.name} lies outside ${path} (offset ${offset}, length ${length}; the file holds ${bytes} bytes)`);
    }
    const list = byFile.get(path) ?? [];
    list.push({ tensor, offset, length });
    byFile.set(path, list);
  }
  const pieces: PiecePlan['pieces'] = [];
  const cut: PiecePlan['cut'] = [];
  for (const f of files) {
    const tensors = byFile.get(f.path);
    if (!tensors) continue;
    tensors.sort((a, b) => a.offset - b.offset);
    let count = 0;
    let start = 0;
    let end = 0;
    const close = () => pieces.push({ path: pieceName(f.path, count++), file: f.path, start, end });
    for (const [i, t] of tensors.entries()) {
      // A new piece where this tensor would take the current one past the limit (tensors may share bytes).
      if (i === 0 || Math.max(end, t.offset + t.length) - start > limit) {
        if (i > 0) close();
        start = t.offset;
        end = t.offset;
      }
      end = Math.max(end, t.offset + t.length);
      setEntry(t.tensor, 'location', pieceName(f.path, count));
      setEntry(t.tensor, 'offset', String(t.offset - start));
      setEntry(t.tensor, 'length', String(t.length));
    }
    close();
    cut.push({ path: f.path, bytes: f.bytes, pieces: count });
  }
  if (cut.length === 0) return { model, pieces: [], cut };
  return { model: modelBytes(proto), pieces, cut };
}

/** Every tensor of the graph and its subgraphs whose data lies outside the model. */
function* externalTensors(graph: GraphProto | undefined): Generator<TensorProto> {
  if (!graph) return;
  const external = (t: TensorProto | undefined) => t !== undefined && t.dataLocation === TensorProto_DataLocation.EXTERNAL;
  for (const t of graph.initializer) if (external(t)) yield t;
  for (const s of graph.sparseInitializer) for (const t of [s.values, s.indices]) if (external(t)) yield t!;
  for (const node of graph.node) {
    for (const a of node.attribute) {
      for (const t of [a.t, ...a.tensors, a.sparseTensor?.values, a.sparseTensor?.indices, ...a.sparseTensors.flatMap((s) => [s.values, s.indices])]) if (external(t)) yield t!;
      for (const g of [a.g, ...a.graphs]) yield* externalTensors(g);
    }
  }
}

/** A tensor's size in bytes from its shape and type (an external entry may leave its length out). */
function tensorBytes(t: TensorProto): number {
  const count = t.dims.reduce((n, d) => n * Number(d), 1);
  if (HALF_BYTE_TYPES.has(t.dataType)) return Math.ceil(count / 2);
  const size = ELEMENT_BYTES[t.dataType];
  if (!size) throw new Error(`external tensor ${t.name} has no length entry, and its type (${t.dataType}) has no fixed size`);
  return count * size;
}

function setEntry(t: TensorProto, key: string, value: string): void {
  const e = t.externalData.find((x) => x.key === key);
  if (e) e.value = value;
  else t.externalData.push(create(StringStringEntryProtoSchema, { key, value }));
}
