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
      let key = '';
      let value = '';
      fields(r.bytes(), (f, w, e) => {
        if (w !== WireType.LengthDelimited) return false;
        if (f === ENTRY_KEY) key = e.string();
        else if (f === ENTRY_VALUE) value = e.string();
        else return false;
        return true;
      });
      if (key === 'location') location = value;
      return true;
    }
    return false;
  });
  return external ? (location ?? '') : undefined;
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
    fields(r.bytes(), (f, w, a) => {
      if (w !== WireType.LengthDelimited) return false;
      if (f === ATTRIBUTE_T || f === ATTRIBUTE_TENSORS) tensor(a.bytes(), found);
      else if (f === ATTRIBUTE_G || f === ATTRIBUTE_GRAPHS) graph(a.bytes(), found);
      else if (f === ATTRIBUTE_SPARSE_TENSOR || f === ATTRIBUTE_SPARSE_TENSORS) sparse(a.bytes(), found);
      else return false;
      return true;
    });
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
