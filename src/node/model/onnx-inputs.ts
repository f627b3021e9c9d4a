/**
 * A model file's graph inputs (names, element types, dimensions), read without loading the model: the protobuf is
 * walked field by field from the file, and only the graph's `input` entries are read and decoded; everything else
 * (nodes, initializers of gigabytes when the weights are inline) is skipped by its length. For the server's model
 * facts (src/server/model-facts.ts), which must not open an ONNX Runtime session.
 */
import fs from 'node:fs';
import { fromBinary } from '@bufbuild/protobuf';
import { ValueInfoProtoSchema } from 'onnx-buf';

export interface OnnxInput {
  name: string;
  /** ONNX TensorProto data type (1 float32, 10 float16, 7 int64, ...); 0 where not a tensor. */
  elemType: number;
  /** Fixed sizes as numbers, named (symbolic) or unknown ones as strings ('' when unnamed). */
  dims: (number | string)[];
}

const MODEL_GRAPH = 7; // ModelProto.graph
const GRAPH_INPUT = 11; // GraphProto.input

/** Reads varints and skips fields of a file through a small window, so that huge fields are never read. */
class FileFields {
  private buf = Buffer.alloc(0);
  private bufStart = 0;

  constructor(private readonly fd: number, private readonly size: number) {}

  private byteAt(pos: number): number {
    if (pos < this.bufStart || pos >= this.bufStart + this.buf.length) {
      if (pos >= this.size) throw new Error('the file ends inside a field');
      const n = Math.min(1 << 16, this.size - pos);
      const b = Buffer.alloc(n);
      fs.readSync(this.fd, b, 0, n, pos);
      this.buf = b;
      this.bufStart = pos;
    }
    return this.buf[pos - this.bufStart]!;
  }

  /** The varint at `pos` and the position after it. */
  varint(pos: number): [number, number] {
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      const b = this.byteAt(pos++);
      value += (b & 0x7f) * scale;
      if (!(b & 0x80)) return [value, pos];
      scale *= 128;
    }
    throw new Error('a varint longer than 10 bytes');
  }

  bytes(pos: number, length: number): Uint8Array {
    const b = Buffer.alloc(length);
    fs.readSync(this.fd, b, 0, length, pos);
    return b;
  }

  /** Each field in [start, end): its number, wire type, and where its payload starts and ends. */
  *fields(start: number, end: number): Generator<{ field: number; wire: number; from: number; to: number }> {
    let pos = start;
    while (pos < end) {
      const [tag, afterTag] = this.varint(pos);
      const field = Math.floor(tag / 8);
      const wire = tag & 7;
      let from = afterTag;
      let to: number;
      if (wire === 0) to = this.varint(afterTag)[1];
      else if (wire === 1) to = afterTag + 8;
      else if (wire === 5) to = afterTag + 4;
      else if (wire === 2) {
        const [length, afterLength] = this.varint(afterTag);
        from = afterLength;
        to = afterLength + length;
      } else throw new Error(`wire type ${wire} at byte ${pos}`);
      if (to > end) throw new Error(`a field runs past its message (byte ${pos})`);
      yield { field, wire, from, to };
      pos = to;
    }
  }
}

/** The graph inputs of the ONNX model at `file` (initializers listed as inputs by old exporters included). */
export function readOnnxInputs(file: string): OnnxInput[] {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const f = new FileFields(fd, size);
    const inputs: OnnxInput[] = [];
    for (const m of f.fields(0, size)) {
      if (m.field !== MODEL_GRAPH || m.wire !== 2) continue;
      for (const g of f.fields(m.from, m.to)) {
        if (g.field !== GRAPH_INPUT || g.wire !== 2) continue;
        const v = fromBinary(ValueInfoProtoSchema, f.bytes(g.from, g.to - g.from));
        const t = v.type?.value.case === 'tensorType' ? v.type.value.value : undefined;
        inputs.push({
          name: v.name,
          elemType: t?.elemType ?? 0,
          dims: (t?.shape?.dim ?? []).map((d) => (d.value.case === 'dimValue' ? Number(d.value.value) : d.value.case === 'dimParam' ? d.value.value : '')),
        });
      }
    }
    return inputs;
  } finally {
    fs.closeSync(fd);
  }
}
