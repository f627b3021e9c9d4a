/**
 * An ONNX graph indexed for pattern matching: who produces and who reads each tensor, the initializers, and the
 * shape arithmetic exporters write (Shape slices, Concat, Gather, Unsqueeze...) read back as entries of known or
 * run-time sizes. Used by the attention fusion. Portable: no Node APIs.
 */
import type { GraphProto, NodeProto, TensorProto } from 'onnx-buf';
import { int64Constant, intAttr } from './attention-probe.ts';
import { tensorScalar } from './tensor-values.ts';

/** One dimension of a tensor: `axis` counted from the end (negative) where the tensor's rank is not known. */
interface Dim {
  of: string;
  axis: number;
}

/** An entry of a shape: a constant (value), or computed at run time (null), and then what it is where known. */
export interface Entry {
  value: number | null;
  source?: string;
  dim?: Dim;
}

/** No tensor of these graphs has more axes; a larger count read from a Shape slice is not a list of dimensions. */
const MAX_RANK = 64;

const normalAxis = (axis: number, rank: number | undefined): number => (axis < 0 && rank !== undefined ? axis + rank : axis);

/**
 * The dimensions [start, end) of `of` as entries (end undefined: to the last), as Shape's start / end count them;
 * undefined where their count is not known (one bound from each end of a tensor of unknown rank).
 */
function dimRange(of: string, start: number, end: number | undefined, rank: number | undefined): Entry[] | undefined {
  let a: number;
  let b: number;
  if (rank !== undefined) {
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + rank : v, 0), rank);
    [a, b] = [clamp(start), end === undefined ? rank : clamp(end)];
  } else if (start >= 0 && end !== undefined && end >= 0) [a, b] = [start, end];
  // From the end, where the start counts from the end too (Slice's INT64_MIN, "from the first", needs the rank).
  else if (start < 0 && start > -MAX_RANK && (end === undefined || end < 0)) [a, b] = [start, end ?? 0];
  else return undefined;
  if (b - a > MAX_RANK) return undefined;
  return Array.from({ length: Math.max(b - a, 0) }, (_, i) => ({ value: null, dim: { of, axis: a + i } }));
}

export class Graph {
  readonly producer = new Map<string, NodeProto>();
  readonly consumers = new Map<string, NodeProto[]>();
  readonly initializer = new Map<string, TensorProto>();
  readonly outputs: Set<string>;

  constructor(readonly g: GraphProto) {
    for (const t of g.initializer) this.initializer.set(t.name, t);
    for (const n of g.node) {
      for (const o of n.output) this.producer.set(o, n);
      for (const i of n.input) if (i) (this.consumers.get(i) ?? this.consumers.set(i, []).get(i)!).push(n);
    }
    this.outputs = new Set(g.output.map((o) => o.name));
    // Tensors read inside subgraphs (If / Loop bodies) count as read from outside: never fused away.
    const readInside = (sub: GraphProto): void => {
      for (const n of sub.node) {
        for (const i of n.input) this.outputs.add(i);
        for (const a of n.attribute) for (const inner of [a.g, ...a.graphs]) if (inner) readInside(inner);
      }
    };
    for (const n of g.node) for (const a of n.attribute) for (const sub of [a.g, ...a.graphs]) if (sub) readInside(sub);
  }

  /** The node producing `name` if it is `op` (default domain). */
  op(name: string | undefined, op: string): NodeProto | undefined {
    const p = name === undefined ? undefined : this.producer.get(name);
    return p && p.opType === op && (p.domain === '' || p.domain === 'ai.onnx') ? p : undefined;
  }

  /**
   * The tensor whose whole shape `name` is: a Shape node without start / end, or with start 0 and no end (the dynamo
   * exporter writes that); undefined for anything else.
   */
  wholeShapeOf(name: string | undefined): string | undefined {
    const p = this.op(name, 'Shape');
    if (!p) return undefined;
    const start = intAttr(p, 'start');
    return (start === undefined || start === 0n) && intAttr(p, 'end') === undefined && p.attribute.length === (start === undefined ? 0 : 1)
      ? p.input[0]
      : undefined;
  }

  constantTensor(name: string): TensorProto | undefined {
    const init = this.initializer.get(name);
    if (init) return init;
    const p = this.producer.get(name);
    if (p?.opType !== 'Constant') return undefined;
    return p.attribute.find((a) => a.name === 'value')?.t;
  }

  ints(name: string): number[] | undefined {
    return int64Constant(this.g, this.producer, name, this.initializer);
  }

  /** A float constant holding one value (any shape of one element), float32 or float16. */
  scalar(name: string): number | undefined {
    const p = this.producer.get(name);
    // A constant cast to the compute type (float16 exports) keeps its value up to that type's rounding, which the
    // unfused graph applies too; MultiHeadAttention takes the scale as a float attribute.
    if ((p?.opType === 'Cast' || p?.opType === 'CastLike' || p?.opType === 'Identity') && p.input[0]) return this.scalar(p.input[0]);
    const vf = p?.opType === 'Constant' ? p.attribute.find((a) => a.name === 'value_float') : undefined;
    if (vf) return vf.f;
    const t = this.constantTensor(name);
    return t ? tensorScalar(t) : undefined;
  }

  /**
   * The entries of a Reshape's target: a constant's values, or a Concat of constants and parts computed at run time
   * (value null; `dim` where the entry is known to be one dimension of a tensor, `source` where it is an Unsqueezed or
   * Reshaped scalar). Undefined when it is neither. `ranks`: tensors whose rank the caller knows, for Shape slices that
   * count from both ends.
   */
  shapeEntries(name: string, ranks?: ReadonlyMap<string, number>): Entry[] | undefined {
    const whole = this.ints(name);
    if (whole) return whole.map((value) => ({ value }));
    const concat = this.op(name, 'Concat');
    const axis = concat ? intAttr(concat, 'axis') : undefined;
    if (!concat || (axis !== 0n && axis !== -1n)) return undefined;
    const out: Entry[] = [];
    for (const part of concat.input) {
      const values = this.ints(part);
      const computed = values ? values.map((value) => ({ value })) : this.computedEntries(part, ranks);
      if (!computed) return undefined;
      out.push(...computed);
    }
    return out;
  }

  /**
   * A 1-D part of a shape computed at run time, entry by entry: an Unsqueezed scalar, a scalar Reshaped to one element
   * (how the dynamo exporter writes a symbolic size into a list), a slice of a Shape (Shape's start / end, or Slice or
   * Gather of it: each entry one dimension of that tensor).
   */
  private computedEntries(name: string, ranks?: ReadonlyMap<string, number>): Entry[] | undefined {
    const p = this.producer.get(name);
    if (!p || (p.domain !== '' && p.domain !== 'ai.onnx')) return undefined;
    switch (p.opType) {
      case 'Cast':
      case 'Identity':
        return this.computedEntries(p.input[0] ?? '', ranks);
      case 'Unsqueeze':
        return [{ value: null, source: p.input[0]!, ...this.scalarDim(p.input[0]!, ranks) }];
      case 'Reshape': {
        const to = this.ints(p.input[1] ?? '');
        const one = to?.length === 1 && (to[0] === 1 || (to[0] === -1 && this.isScalar(p.input[0]!)));
        return one ? [{ value: null, source: p.input[0]!, ...this.scalarDim(p.input[0]!, ranks) }] : undefined;
      }
      case 'Shape': {
        const rank = ranks?.get(p.input[0]!);
        const start = Number(intAttr(p, 'start') ?? 0n);
        const end = intAttr(p, 'end');
        return dimRange(p.input[0]!, start, end === undefined ? undefined : Number(end), rank);
      }
      case 'Slice':
      case 'Gather': {
        const of = this.wholeShapeOf(p.input[0]);
        if (of === undefined) return undefined;
        const rank = ranks?.get(of);
        if (p.opType === 'Gather') {
          const index = this.ints(p.input[1] ?? '');
          if (!index || (intAttr(p, 'axis') ?? 0n) !== 0n || this.rankOf(p.input[1]!) !== 1) return undefined;
          return index.map((axis) => ({ value: null, dim: { of, axis: normalAxis(axis, rank) } }));
        }
        const [starts, ends] = [this.ints(p.input[1] ?? ''), this.ints(p.input[2] ?? '')];
        const plain = (i: number, v: number) => p.input[i] === undefined || p.input[i] === '' || this.ints(p.input[i]!)?.join() === String(v);
        if (starts?.length !== 1 || ends?.length !== 1 || !plain(3, 0) || !plain(4, 1)) return undefined;
        return dimRange(of, starts[0]!, ends[0]! >= 2 ** 31 ? undefined : ends[0]!, rank);
      }
      default:
        return undefined;
    }
  }

  /** A scalar read from a shape: Gather of a Shape with a scalar index, or Squeeze of a one-entry Shape slice. */
  private scalarDim(name: string, ranks?: ReadonlyMap<string, number>): { dim?: Dim } {
    const p = this.producer.get(name);
    if (p?.opType === 'Gather' && this.rankOf(p.input[1] ?? '') === 0 && (intAttr(p, 'axis') ?? 0n) === 0n) {
      const of = this.wholeShapeOf(p.input[0]);
      const index = this.ints(p.input[1]!);
      if (of !== undefined && index?.length === 1) return { dim: { of, axis: normalAxis(index[0]!, ranks?.get(of)) } };
    }
    if (p?.opType === 'Squeeze') {
      const inner = this.computedEntries(p.input[0] ?? '', ranks);
      if (inner?.length === 1 && inner[0]!.dim) return { dim: inner[0]!.dim };
    }
    return {};
  }

  /** Whether `name` is a scalar: a Gather with a scalar index, a Squeeze, or arithmetic of scalars. */
  private isScalar(name: string, depth = 0): boolean {
    const p = this.producer.get(name);
    if (!p || depth > 6) return false;
    if (p.opType === 'Gather') return this.rankOf(p.input[1] ?? '') === 0;
    if (p.opType === 'Squeeze') return true;
    if (p.opType === 'Cast' || p.opType === 'Identity') return this.isScalar(p.input[0] ?? '', depth + 1);
    if (['Mul', 'Div', 'Add', 'Sub'].includes(p.opType)) {
      return p.input.every((i) => this.isScalar(i, depth + 1) || (this.ints(i)?.length === 1 && this.rankOf(i) === 0));
    }
    return false;
  }

  /** The rank of a constant (its dims' count); undefined for anything else. */
  private rankOf(name: string): number | undefined {
    const t = this.constantTensor(name);
    if (t) return t.dims.length;
    const p = this.producer.get(name);
    return p?.opType === 'Constant' && p.attribute.some((a) => a.name === 'value_ints') ? 1 : undefined;
  }

  perm(node: NodeProto | undefined): string {
    const a = node?.attribute.find((x) => x.name === 'perm');
    return a ? a.ints.join(' ') : '';
  }
}
