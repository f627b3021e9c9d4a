/**
 * Which files a serialized ONNX model keeps its weights in (ONNX external data: a tensor with data_location EXTERNAL
 * and a `location` entry, a path relative to the model file). Read from the protobuf wire format without decoding
 * the model: a model's inline weights are skipped, not copied, so an export of 1.7 GB is scanned in milliseconds.
 * Portable: no Node APIs (the browser fetches what this lists; Node's ONNX Runtime reads the files itself).
 */
import { BinaryReader, WireType } from '@bufbuild/protobuf/wire';

// Field numbers of onnx.proto (checked against onnx-buf's decoding in test/external-data.test.ts).
const MODEL_GRAPH = 7;
const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const GRAPH_SPARSE_INITIALIZER = 15;
const NODE_ATTRIBUTE = 5;
const ATTRIBUTE_T = 5;
const ATTRIBUTE_G = 6;
const ATTRIBUTE_TENSORS = 10;
const ATTRIBUTE_GRAPHS = 11;
const ATTRIBUTE_SPARSE_TENSOR = 22;
const ATTRIBUTE_SPARSE_TENSORS = 23;
const SPARSE_VALUES = 1;
const SPARSE_INDICES = 2;
const TENSOR_EXTERNAL_DATA = 13;
const TENSOR_DATA_LOCATION = 14;
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;
const EXTERNAL = 1;

type Visit = (field: number, wire: WireType, r: BinaryReader) => boolean;

/** Reads each field of the message in `bytes`; `visit` returns true where it consumed the field, else it is skipped. */
function fields(bytes: Uint8Array, visit: Visit): void {
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [field, wire] = r.tag();
    if (!visit(field, wire, r)) r.skip(wire, field);
  }
}

function tensorLocation(bytes: Uint8Array): string | undefined {
  let external = false;
  let location: string | undefined;
  fields(bytes, (field, wire, r) => {
    if (field === TENSOR_DATA_LOCATION && wire === WireType.Varint) {
      external = r.int32() === EXTERNAL;
      return true;
    }
    if (field === TENSOR_EXTERNAL_DATA && wire === WireType.LengthDelimited) {
      location = entryLocation(r.bytes()) ?? location;
      return true;
    }
    return false;
  });
  return external ? (location ?? '') : undefined;
}

/** The value of an external_data entry (StringStringEntryProto) whose key is "location"; undefined for another key. */
function entryLocation(bytes: Uint8Array): string | undefined {
  let key = '';
  let value = '';
  fields(bytes, (f, w, e) => {
    if (w !== WireType.LengthDelimited) return false;
    if (f === ENTRY_KEY) key = e.string();
    else if (f === ENTRY_VALUE) value = e.string();
    else return false;
    return true;
  });
  return key === 'location' ? value : undefined;
}

function sparse(bytes: Uint8Array, found: Set<string>): void {
  fields(bytes, (field, wire, r) => {
    if ((field === SPARSE_VALUES || field === SPARSE_INDICES) && wire === WireType.LengthDelimited) {
      tensor(r.bytes(), found);
      return true;
    }
    return false;
  });
}

function tensor(bytes: Uint8Array, found: Set<string>): void {
  const location = tensorLocation(bytes);
  if (location !== undefined) found.add(location);
}

function graph(bytes: Uint8Array, found: Set<string>): void {
  fields(bytes, (field, wire, r) => {
    if (wire !== WireType.LengthDelimited) return false;
    if (field === GRAPH_INITIALIZER) tensor(r.bytes(), found);
    else if (field === GRAPH_SPARSE_INITIALIZER) sparse(r.bytes(), found);
    else if (field === GRAPH_NODE) node(r.bytes(), found);
    else return false;
    return true;
  });
}

function node(bytes: Uint8Array, found: Set<string>): void {
  fields(bytes, (field, wire, r) => {
    if (field !== NODE_ATTRIBUTE || wire !== WireType.LengthDelimited) return false;
    attribute(r.bytes(), found);
    return true;
  });
}

function attribute(bytes: Uint8Array, found: Set<string>): void {
  fields(bytes, (f, w, a) => {
    if (w !== WireType.LengthDelimited) return false;
    if (f === ATTRIBUTE_T || f === ATTRIBUTE_TENSORS) tensor(a.bytes(), found);
    else if (f === ATTRIBUTE_G || f === ATTRIBUTE_GRAPHS) graph(a.bytes(), found);
    else if (f === ATTRIBUTE_SPARSE_TENSOR || f === ATTRIBUTE_SPARSE_TENSORS) sparse(a.bytes(), found);
    else return false;
    return true;
  });
}

/**
 * The external-data files a serialized model names, in the order its file holds them ('' for an external tensor without a
 * location); none for a model that holds its weights itself. Throws where the bytes are not a readable model.
 */
export function externalDataFiles(model: Uint8Array): string[] {
  const found = new Set<string>();
  fields(model, (field, wire, r) => {
    if (field !== MODEL_GRAPH || wire !== WireType.LengthDelimited) return false;
    graph(r.bytes(), found);
    return true;
  });
  return [...found];
}

/** Random access to a file's bytes (in a page: slices of a stored Blob, whose bytes are not all read). */
export interface ByteSource {
  readonly size: number;
  /** `length` bytes from `offset` (fewer only at the end of the file). */
  read(offset: number, length: number): Promise<Uint8Array>;
}

/** The last bytes read from a ByteSource: fields near each other (a graph's nodes) cost one read between them. */
class ReadWindow {
  private start = 0;
  private bytes: Uint8Array = new Uint8Array(0);
  reads = 0;

  constructor(private readonly source: ByteSource, private readonly chunk: number) {}

  async get(at: number, length: number): Promise<Uint8Array> {
    const from = at - this.start;
    if (from < 0 || from + length > this.bytes.length) {
      const want = Math.min(Math.max(length, this.chunk), this.source.size - at);
      if (at < 0 || want < length) throw new Error(`a field of ${length} bytes at ${at} runs past the end of the file (${this.source.size} bytes)`);
      this.reads++;
      this.bytes = await this.source.read(at, want);
      this.start = at;
      if (this.bytes.length < length) throw new Error(`read ${this.bytes.length} of ${length} bytes at ${at}`);
      return this.bytes.subarray(0, length);
    }
    return this.bytes.subarray(from, from + length);
  }
}

/** Where a message larger than a read window is walked field by field; smaller ones are read whole and scanned. */
type Walk = (w: ReadWindow, start: number, end: number, found: Set<string>) => Promise<void>;

/**
 * Each field of the message at [start, end): `visit` is given a length-delimited field's payload position and length,
 * another field's reader (positioned at its value), and returns true where it consumed the value.
 */
async function fieldsAt(
  w: ReadWindow, start: number, end: number,
  visit: (field: number, wire: WireType, at: number, length: number, r: BinaryReader) => boolean | Promise<boolean>,
): Promise<void> {
  let at = start;
  while (at < end) {
    // A tag and a length are at most 10 bytes each.
    const r = new BinaryReader(await w.get(at, Math.min(20, end - at)));
    const [field, wire] = r.tag();
    if (wire === WireType.LengthDelimited) {
      const length = r.uint32();
      const payload = at + r.pos;
      if (payload + length > end) throw new Error(`field ${field} at ${at} runs past its message`);
      await visit(field, wire, payload, length, r);
      at = payload + length;
    } else {
      if (wire === WireType.StartGroup || wire === WireType.EndGroup) throw new Error(`field ${field} at ${at}: groups are not used by onnx.proto`);
      if (!(await visit(field, wire, at + r.pos, 0, r))) r.skip(wire, field);
      at += r.pos;
    }
  }
}

/** The message at [at, at + length): read whole and scanned where small, else walked. */
async function messageAt(w: ReadWindow, at: number, length: number, found: Set<string>, scan: (bytes: Uint8Array, found: Set<string>) => void, walk: Walk, small: number): Promise<void> {
  if (length <= small) scan(await w.get(at, length), found);
  else await walk(w, at, at + length, found);
}

function walkers(small: number) {
  const tensorAt: Walk = async (w, start, end, found) => {
    let external = false;
    let location: string | undefined;
    await fieldsAt(w, start, end, async (field, wire, at, length, r) => {
      if (field === TENSOR_DATA_LOCATION && wire === WireType.Varint) {
        external = r.int32() === EXTERNAL;
        return true;
      }
      if (field === TENSOR_EXTERNAL_DATA && wire === WireType.LengthDelimited) {
        location = entryLocation(await w.get(at, length)) ?? location;
        return true;
      }
      return false;
    });
    if (external) found.add(location ?? '');
  };
  const sparseAt: Walk = (w, start, end, found) =>
    fieldsAt(w, start, end, async (field, wire, at, length) => {
      if ((field === SPARSE_VALUES || field === SPARSE_INDICES) && wire === WireType.LengthDelimited) await messageAt(w, at, length, found, tensor, tensorAt, small);
      return false;
    });
  const graphAt: Walk = (w, start, end, found) =>
    fieldsAt(w, start, end, async (field, wire, at, length) => {
      if (wire !== WireType.LengthDelimited) return false;
      if (field === GRAPH_INITIALIZER) await messageAt(w, at, length, found, tensor, tensorAt, small);
      else if (field === GRAPH_SPARSE_INITIALIZER) await messageAt(w, at, length, found, sparse, sparseAt, small);
      else if (field === GRAPH_NODE) await messageAt(w, at, length, found, node, nodeAt, small);
      return false;
    });
  const attributeAt: Walk = (w, start, end, found) =>
    fieldsAt(w, start, end, async (f, wire, at, length) => {
      if (wire !== WireType.LengthDelimited) return false;
      if (f === ATTRIBUTE_T || f === ATTRIBUTE_TENSORS) await messageAt(w, at, length, found, tensor, tensorAt, small);
      else if (f === ATTRIBUTE_G || f === ATTRIBUTE_GRAPHS) await messageAt(w, at, length, found, graph, graphAt, small);
      else if (f === ATTRIBUTE_SPARSE_TENSOR || f === ATTRIBUTE_SPARSE_TENSORS) await messageAt(w, at, length, found, sparse, sparseAt, small);
      return false;
    });
  const nodeAt: Walk = (w, start, end, found) =>
    fieldsAt(w, start, end, async (field, wire, at, length) => {
      if (field === NODE_ATTRIBUTE && wire === WireType.LengthDelimited) await messageAt(w, at, length, found, attribute, attributeAt, small);
      return false;
    });
  return { graphAt };
}

/**
 * externalDataFiles of a model read through `source` in windows of `window` bytes: messages up to that size (a graph's
 * nodes, a tensor's header) are read and scanned, larger ones walked field by field, and a tensor's inline values are
 * skipped, never read. So a single-file export of gigabytes kept in a page's storage is scanned reading a small part
 * of it (about one window per weight). `reads` counts the source's reads.
 */
export async function externalDataFilesFrom(source: ByteSource, window = 1 << 16): Promise<{ files: string[]; reads: number }> {
  const w = new ReadWindow(source, window);
  const found = new Set<string>();
  const { graphAt } = walkers(window);
  await fieldsAt(w, 0, source.size, async (field, wire, at, length) => {
    if (field === MODEL_GRAPH && wire === WireType.LengthDelimited) await graphAt(w, at, at + length, found);
    return false;
  });
  return { files: [...found], reads: w.reads };
}

/**
 * Why an external-data location cannot be fetched beside the model, or undefined where it can: it must be a relative
 * path inside the model's folder (as ONNX Runtime requires of the files it opens).
 */
export function unsafeLocation(location: string): string | undefined {
  if (location === '') return 'an external tensor names no file (its location entry is missing)';
  if (/^[a-z][a-z0-9+.-]*:/i.test(location) || location.startsWith('/') || location.startsWith('\\')) return `its location "${location}" is not a path relative to the model`;
  if (location.split(/[\\/]/).some((part) => part === '..')) return `its location "${location}" leaves the model's folder`;
  return undefined;
}
