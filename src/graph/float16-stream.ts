/**
 * The external float32 weights of a float16 plan (float16-downcast.ts) converted as their file streams by, chunk by
 * chunk, for a caller that never holds the file (the browser's conversion: an SD 1.5 UNet's float32 weights are
 * 3.4 GB). Each chunk's bytes are converted or copied into their place in the plan's weights file at once; a weight's
 * bytes are never staged whole, and a float32 value split between two chunks is carried over. The bytes written are
 * float16WeightBytes's, whatever the chunk sizes. Portable: no Node APIs.
 */
import { AsgdError } from '../core/errors.ts';
import { float16Into, type Float16Weight } from './float16-downcast.ts';
import { externalDataEntry } from './float32-upcast.ts';

/** A planned weight whose source is external: where its float32 (or copied) bytes lie in the file being streamed. */
export interface StreamedWeight {
  w: Float16Weight;
  /** Where its source bytes begin in the file, and how many there are. */
  offset: number;
  length: number;
}

/**
 * The weights of a plan whose source is external, by the file that holds them (its location, relative to `file`, the
 * model read). A tensor whose recorded length is not what its shape needs is refused.
 */
export function streamedWeights(file: string, weights: readonly Float16Weight[]): Map<string, StreamedWeight[]> {
  const byFile = new Map<string, StreamedWeight[]>();
  for (const w of weights) {
    if (w.source.dataLocation !== 1) continue;
    const e = externalDataEntry(w.source);
    // A float32 source holds two bytes for each float16 byte written; a copied one, as many.
    const length = w.mode === 'float16' ? w.length * 2 : w.length;
    if (e.length !== undefined && e.length !== length) {
      throw new AsgdError(`${file} gives tensor ${w.name} ${e.length} bytes in ${e.location} where its shape needs ${length}`, {
        kind: 'model', parameter: file, expected: `${length} bytes`, received: `${e.length} bytes`, hint: 'The export is damaged: export the model again',
      });
    }
    const location = e.location ?? '';
    if (!byFile.has(location)) byFile.set(location, []);
    byFile.get(location)!.push({ w, offset: e.offset, length });
  }
  return byFile;
}

/**
 * The plan's weights file written front to back, for a caller that holds no buffer of its size (the browser's
 * conversion streamed into its storage): each weight is held in a buffer of its own until it is complete, and the
 * file's bytes go to `emit` in order as soon as every weight before them is complete (the gaps between weights as
 * zeros). Where the source file holds its tensors in the plan's order (as exporters write them), little is held at
 * once; in another order, up to the whole file.
 */
export class Float16FileWriter {
  private readonly order: Float16Weight[];
  private readonly held = new Map<Float16Weight, Uint8Array>();
  private readonly complete = new Set<Float16Weight>();
  private next = 0;
  private written = 0;

  constructor(weights: readonly Float16Weight[], private readonly dataBytes: number, private readonly emit: (bytes: Uint8Array) => void) {
    this.order = [...weights].sort((a, b) => a.offset - b.offset);
  }

  /** Bytes emitted so far. */
  get emitted(): number {
    return this.written;
  }

  /** The buffer `w`'s bytes are written into (its own, `w.length` bytes). */
  buffer(w: Float16Weight): Uint8Array {
    let b = this.held.get(w);
    if (!b) this.held.set(w, (b = new Uint8Array(w.length)));
    return b;
  }

  /** `w`'s bytes are all written (into `bytes`, where given, else into its buffer): emits what is now in order. */
  done(w: Float16Weight, bytes?: Uint8Array): void {
    if (bytes) this.held.set(w, bytes);
    this.complete.add(w);
    for (let x = this.order[this.next]; x && this.complete.has(x); x = this.order[++this.next]) {
      if (x.offset > this.written) this.emit(new Uint8Array(x.offset - this.written));
      this.emit(this.held.get(x) ?? new Uint8Array(0));
      this.held.delete(x);
      this.complete.delete(x);
      this.written = x.offset + x.length;
    }
    if (this.next === this.order.length && this.written < this.dataBytes) {
      this.emit(new Uint8Array(this.dataBytes - this.written));
      this.written = this.dataBytes;
    }
  }
}

interface Progress extends StreamedWeight {
  filled: number;
  /** The bytes of a float32 value that a chunk boundary split. */
  tail: Uint8Array;
}

export class Float16WeightStream {
  private readonly weights: Progress[];
  private next = 0;
  private at = 0;

  /**
   * `data`: the plan's weights file (Float16Plan.dataBytes), written at each weight's offset; or a Float16FileWriter,
   * given each weight's bytes and told when they are complete.
   */
  constructor(weights: readonly StreamedWeight[], private readonly data: Uint8Array | Float16FileWriter) {
    this.weights = weights.map((w) => ({ ...w, filled: 0, tail: new Uint8Array(4) })).sort((a, b) => a.offset - b.offset);
    // An empty weight has no bytes to wait for.
    if (data instanceof Float16FileWriter) for (const p of this.weights) if (p.length === 0) data.done(p.w);
  }

  /** Bytes of the file seen so far. */
  get received(): number {
    return this.at;
  }

  /** The next bytes of the file. */
  push(chunk: Uint8Array): void {
    const start = this.at;
    const end = start + chunk.length;
    this.at = end;
    for (let j = this.next; j < this.weights.length && this.weights[j]!.offset < end; j++) {
      const p = this.weights[j]!;
      const from = Math.max(p.offset, start);
      const to = Math.min(p.offset + p.length, end);
      if (to > from) {
        this.absorb(p, chunk.subarray(from - start, to - start));
        if (p.filled === p.length && this.data instanceof Float16FileWriter) this.data.done(p.w);
      }
    }
    while (this.next < this.weights.length && this.weights[this.next]!.filled === this.weights[this.next]!.length) this.next++;
  }

  /** The first weight whose bytes have not all come (the file ended early), if any. */
  incomplete(): StreamedWeight | undefined {
    return this.weights.find((p) => p.filled !== p.length);
  }

  /** Converts (or copies) the next `bytes` of `p`'s source into its place. */
  private absorb(p: Progress, bytes: Uint8Array): void {
    const w = p.w;
    const [data, at] = this.data instanceof Float16FileWriter ? [this.data.buffer(w), 0] : [this.data, w.offset];
    if (w.mode === 'copy') {
      data.set(bytes, at + p.filled);
      p.filled += bytes.length;
      return;
    }
    const out = new Uint16Array(data.buffer, data.byteOffset + at, w.length / 2);
    let i = 0;
    const split = p.filled % 4;
    if (split > 0) {
      i = Math.min(4 - split, bytes.length);
      p.tail.set(bytes.subarray(0, i), split);
      p.filled += i;
      if (p.filled % 4 === 0) float16Into(new Float32Array(p.tail.buffer, 0, 1), out, p.filled / 4 - 1);
    }
    const whole = (bytes.length - i) & ~3;
    if (whole > 0) {
      const src = bytes.subarray(i, i + whole);
      const values = src.byteOffset % 4 === 0 ? new Float32Array(src.buffer, src.byteOffset, whole / 4) : new Float32Array(src.slice().buffer);
      float16Into(values, out, p.filled / 4);
      i += whole;
      p.filled += whole;
    }
    if (i < bytes.length) {
      p.tail.set(bytes.subarray(i), 0);
      p.filled += bytes.length - i;
    }
  }
}
