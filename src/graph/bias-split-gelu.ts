/**
 * GEGLU fusion: the feed-forward of diffusers' transformer block starts with GEGLU, which projects to 2F channels,
 * adds the bias, cuts the result in halves along the last axis and multiplies the first half by GELU of the second.
 * Written out that is the bias Add, two Slices (or a Split), the GELU (one Gelu node, or Div, Erf, Add, Mul, Mul as
 * opset 17 exports write it) and the Mul: 5 to 9 nodes, which ONNX Runtime runs as 5 kernels (its optimiser folds the
 * Erf form into one Gelu), each reading and writing the block's largest activation.
 * ONNX Runtime's `com.microsoft` BiasSplitGelu(X, bias) computes it in one. Its WebGPU provider has a kernel (so has
 * ONNX Runtime Web's); its CPU provider has none in 1.30 or 1.31.1 (checked by opening a one-node graph), so a graph with it
 * serves WebGPU devices only, and the callers ask for it only then (FuseUnetOptions.biasSplitGelu).
 *
 * Matched, in the graph as exported:
 *   A = Add(MatMul(..), bias)     bias: a 1-D initializer (or Identity of one) of even length D
 *   first, second = the halves of A on its last axis: Slice(A, 0, D/2) and Slice(A, D/2, D or beyond), their bounds
 *                   constants or computed from Shape(A) (torch's export of `chunk`), or the two outputs of Split(A)
 *   Y = Mul(first, gelu(second))
 * where gelu is a Gelu node (exact, not the tanh approximation) or elementwise Add / Sub / Mul / Div / Erf of
 * `second` and scalar constants that gives GELU's values at sample points (so any order an exporter writes the Erf
 * form in is recognised, and the tanh form, which has no Erf, is not). It becomes BiasSplitGelu(MatMul output, bias)
 * -> Y, placed where Y was computed; the Add, the Slices and the GELU go where nothing else reads them (pruning).
 * BiasSplitGelu takes a 3-D input, as the block's [B, S, C] activations are; a declared other rank is left alone.
 *
 * What ONNX Runtime 1.30's WebGPU kernel accepts (checked on one-node graphs on lavapipe; 1.31.1 fails on float16 alike): float32, with D a multiple
 * of 8 (elsewhere it fails: "Cannot reduce shape {2,5,3} by component=2", its vectorised reads); in float16 it failed
 * on every input tried ("raw_hash_map<>::at", D 8 to 10240). So a float16 GEGLU runs as Cast to float32,
 * BiasSplitGelu, Cast back (the bias's Cast is folded by ONNX Runtime when the session opens): 3 kernels instead of 5,
 * the GELU computed in float32. SD's D (8 x the block's width) is always a multiple of 8.
 * Portable: no Node APIs, no ONNX Runtime.
 */
import { create } from '@bufbuild/protobuf';
import { AttributeProtoSchema, AttributeProto_AttributeType, NodeProtoSchema, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from 'onnx-buf';
import { MS_DOMAIN } from './attention-fusion.ts';
import { tensorScalar } from './tensor-values.ts';
import { importMsDomain } from './rewrite-index.ts';
import { declaredDims, initializerThroughIdentity, int64Constant, intAttr, isDefaultDomain as isDefault } from './attention-probe.ts';
import { pruneGraph } from './prune.ts';

const SCOPE = '/asgd_bias_split_gelu';
/** ONNX element types a shape computation may Cast to without changing its values. */
const INT_TYPES = new Set([6, 7]);
/** Points GELU is compared at; its exact values come from `erf` below. */
const SAMPLES = [-3, -1.7, -0.9, -0.3, 0, 0.4, 1.1, 2.2, 3];
/** Allowed difference from GELU: a float16 export's constants are rounded (sqrt 2 to 1.4140625: about 1e-4 here). */
const GELU_TOLERANCE = 1e-3;
/** Largest written-out GELU followed (torch writes 5 nodes). */
const MAX_GELU_NODES = 12;

/** erf by its Maclaurin series: within 1e-12 for |x| <= 3 in float64, far enough for the samples above. */
function erf(x: number): number | undefined {
  if (!(Math.abs(x) <= 4)) return undefined;
  let term = x;
  let sum = x;
  for (let n = 1; n < 80; n++) {
    term *= (-x * x) / n;
    sum += term / (2 * n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

const gelu = (x: number) => 0.5 * x * (1 + erf(x / Math.SQRT2)!);

class GeluGraph {
  readonly producer = new Map<string, NodeProto>();
  readonly init: Map<string, TensorProto>;

  constructor(readonly graph: GraphProto) {
    this.init = new Map(graph.initializer.map((t) => [t.name, t] as const));
    for (const n of graph.node) for (const o of n.output) this.producer.set(o, n);
  }

  /** The default-domain node producing `name`. */
  node(name: string | undefined): NodeProto | undefined {
    const p = name ? this.producer.get(name) : undefined;
    return p && isDefault(p) ? p : undefined;
  }

  /** An initializer, or one behind Identity nodes. */
  initializer(name: string): TensorProto | undefined {
    return initializerThroughIdentity(name, this.init, this.producer);
  }

  /** A float constant of one element (initializer or Constant, behind Cast / Identity), or undefined. */
  scalar(name: string): number | undefined {
    const t = this.init.get(name);
    if (t) return tensorScalar(t);
    const p = this.node(name);
    if (p?.opType === 'Cast' || p?.opType === 'Identity') return this.scalar(p.input[0] ?? '');
    if (p?.opType !== 'Constant') return undefined;
    const a = p.attribute.find((x) => x.name === 'value' || x.name === 'value_float');
    return a?.name === 'value_float' ? a.f : a?.t ? tensorScalar(a.t) : undefined;
  }

  /**
   * The integer values a shape computation gives, where they follow from `a`'s last dimension being `d`: constants,
   * `Shape(a)[-1]` (Gather of the whole shape, or Shape with start -1), and their arithmetic, Concat, Cast to an
   * integer type and reshaping. Undefined for anything else.
   */
  ints(name: string, a: string, d: number, depth = 0): number[] | undefined {
    const c = int64Constant(this.graph, this.producer, name, this.init);
    if (c) return c;
    const p = this.node(name);
    if (!p || depth > 16) return undefined;
    const arg = (i: number) => this.ints(p.input[i] ?? '', a, d, depth + 1);
    switch (p.opType) {
      case 'Cast':
        return INT_TYPES.has(Number(intAttr(p, 'to'))) ? arg(0) : undefined;
      case 'Identity':
      case 'Unsqueeze':
      case 'Squeeze':
      case 'Reshape':
        return arg(0);
      case 'Shape':
        return p.input[0] === a && intAttr(p, 'start') === -1n && intAttr(p, 'end') === undefined ? [d] : undefined;
      case 'Gather': {
        const shape = this.node(p.input[0]);
        const whole = shape?.opType === 'Shape' && shape.input[0] === a && (intAttr(shape, 'start') ?? 0n) === 0n && intAttr(shape, 'end') === undefined;
        const index = arg(1);
        return whole && (intAttr(p, 'axis') ?? 0n) === 0n && index?.length === 1 && index[0] === -1 ? [d] : undefined;
      }
      case 'Concat': {
        const parts = p.input.map((_, i) => arg(i));
        return parts.every((x) => x !== undefined) ? parts.flat() : undefined;
      }
      case 'Add':
      case 'Sub':
      case 'Mul':
      case 'Div': {
        const [x, y] = [arg(0), arg(1)];
        if (!x || !y || (x.length !== y.length && x.length !== 1 && y.length !== 1)) return undefined;
        const n = Math.max(x.length, y.length);
        const out: number[] = [];
        for (let i = 0; i < n; i++) {
          const [u, v] = [x[x.length === 1 ? 0 : i]!, y[y.length === 1 ? 0 : i]!];
          if (p.opType === 'Div' && v === 0) return undefined;
          out.push(p.opType === 'Add' ? u + v : p.opType === 'Sub' ? u - v : p.opType === 'Mul' ? u * v : Math.trunc(u / v));
        }
        return out;
      }
      default:
        return undefined;
    }
  }

  /** Which half of `a` (last axis, length `d`) the tensor `name` is: 0 the first, 1 the second; undefined: neither. */
  half(name: string, a: string, d: number): 0 | 1 | undefined {
    const p = this.node(name);
    const h = d / 2;
    const lastAxis = (axis: number | undefined) => axis === -1 || axis === 2;
    if (p?.opType === 'Slice' && p.input[0] === a) {
      const [starts, ends] = [this.ints(p.input[1] ?? '', a, d), this.ints(p.input[2] ?? '', a, d)];
      const axes = p.input[3] ? this.ints(p.input[3], a, d) : undefined;
      const steps = p.input[4] ? this.ints(p.input[4], a, d) : [1];
      if (starts?.length !== 1 || ends?.length !== 1 || axes?.length !== 1 || !lastAxis(axes[0]) || steps?.join() !== '1') return undefined;
      const at = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
      const [start, end] = [at(starts[0]!), at(ends[0]!)];
      return start === 0 && end === h ? 0 : start === h && end === d ? 1 : undefined;
    }
    if (p?.opType === 'Split' && p.input[0] === a && p.output.length === 2 && lastAxis(Number(intAttr(p, 'axis') ?? 0n))) {
      const attr = p.attribute.find((x) => x.name === 'split');
      const sizes = p.input[1] ? this.ints(p.input[1], a, d) : attr ? attr.ints.map(Number) : [h, h];
      if (sizes?.join() !== `${h},${h}`) return undefined;
      const i = p.output.indexOf(name);
      return i === 0 || i === 1 ? i : undefined;
    }
    return undefined;
  }

  /** Whether `name` is GELU (exact) of `x`, elementwise. */
  isGelu(name: string, x: string): boolean {
    const p = this.producer.get(name);
    if (p?.opType === 'Gelu' && p.input[0] === x) {
      const approximate = p.attribute.find((a) => a.name === 'approximate');
      const exact = !approximate || String.fromCharCode(...approximate.s) === 'none';
      return (isDefault(p) && exact) || p.domain === MS_DOMAIN;
    }
    let nodes = 0;
    let erfs = 0;
    const walk = (t: string): ((v: number) => number | undefined) | undefined => {
      if (t === x) return (v) => v;
      const c = this.scalar(t);
      if (c !== undefined) return () => c;
      const n = this.node(t);
      if (!n || ++nodes > MAX_GELU_NODES) return undefined;
      if (n.opType === 'Erf') {
        erfs++;
        const f = walk(n.input[0] ?? '');
        return f && ((v) => { const u = f(v); return u === undefined ? undefined : erf(u); });
      }
      if (!['Add', 'Sub', 'Mul', 'Div'].includes(n.opType) || n.input.length !== 2) return undefined;
      const [f, g] = [walk(n.input[0]!), walk(n.input[1]!)];
      if (!f || !g) return undefined;
      const op = n.opType;
      return (v) => {
        const [u, w] = [f(v), g(v)];
        if (u === undefined || w === undefined) return undefined;
        return op === 'Add' ? u + w : op === 'Sub' ? u - w : op === 'Mul' ? u * w : u / w;
      };
    };
    const f = walk(name);
    return f !== undefined && erfs > 0 && SAMPLES.every((v) => {
      const y = f(v);
      return y !== undefined && Math.abs(y - gelu(v)) <= GELU_TOLERANCE;
    });
  }
}

interface Match {
  mul: NodeProto;
  input: string;
  bias: string;
  /** The bias's element type: 1 float32 (the node as it is), 10 float16 (in float32 between Casts). */
  type: number;
}

const FLOAT = 1;
const FLOAT16 = 10;
/** D must be a multiple of this for ONNX Runtime 1.30's WebGPU kernel (see above). */
const CHANNEL_MULTIPLE = 8;

/**
 * Rewrites every matched GEGLU of `model` (mutated in place) into one BiasSplitGelu node. Returns how many. The
 * result runs on ONNX Runtime's WebGPU provider (and ONNX Runtime Web's), not on its CPU provider.
 */
export function fuseBiasSplitGelu(model: ModelProto): number {
  const graph = model.graph;
  if (!graph) return 0;
  const g = new GeluGraph(graph);
  const matches: Match[] = [];
  for (const mul of graph.node) {
    if (mul.opType !== 'Mul' || !isDefault(mul) || mul.input.length !== 2) continue;
    for (const [firstSide, first] of mul.input.entries()) {
      const slice = g.node(first);
      const a = slice?.input[0] ?? '';
      const add = g.node(a);
      if (add?.opType !== 'Add' || add.input.length !== 2) continue;
      const b = add.input.findIndex((i) => g.initializer(i));
      const bias = b < 0 ? undefined : g.initializer(add.input[b]!)!;
      const input = add.input[1 - b] ?? '';
      if (!bias || bias.dims.length !== 1 || Number(bias.dims[0]) % CHANNEL_MULTIPLE !== 0 || g.node(input)?.opType !== 'MatMul') continue;
      if (bias.dataType !== FLOAT && bias.dataType !== FLOAT16) continue;
      const d = Number(bias.dims[0]);
      const rank = declaredDims(graph, a)?.length;
      if (rank !== undefined && rank !== 3) continue;
      const gate = mul.input[1 - firstSide]!;
      if (g.half(first, a, d) !== 0) continue;
      if (secondHalfUnder(g, gate, a, d) === undefined) continue;
      matches.push({ mul, input, bias: bias.name, type: bias.dataType });
      break;
    }
  }
  if (matches.length === 0) return 0;
  const replace = new Map<NodeProto, NodeProto[]>();
  for (const [i, m] of matches.entries()) {
    const name = `${SCOPE}/BiasSplitGelu_${i}`;
    const y = m.mul.output[0]!;
    const fused = (input: string[], output: string) => create(NodeProtoSchema, { name, opType: 'BiasSplitGelu', domain: MS_DOMAIN, input, output: [output] });
    const cast = (part: string, input: string, to: number) => create(NodeProtoSchema, {
      name: `${name}/Cast_${part}`, opType: 'Cast', input: [input], output: [part === 'output' ? y : `${name}/${part}_float32`],
      attribute: [create(AttributeProtoSchema, { name: 'to', type: AttributeProto_AttributeType.INT, i: BigInt(to) })],
    });
    if (m.type === FLOAT) replace.set(m.mul, [fused([m.input, m.bias], y)]);
    else {
      const [x32, b32] = [cast('input', m.input, FLOAT), cast('bias', m.bias, FLOAT)];
      const y32 = `${name}/output_float32`;
      replace.set(m.mul, [x32, b32, fused([x32.output[0]!, b32.output[0]!], y32), cast('output', y32, FLOAT16)]);
    }
  }
  graph.node = graph.node.flatMap((n) => replace.get(n) ?? [n]);
  importMsDomain(model);
  pruneGraph(graph);
  return matches.length;
}

/** The second half of `a` that `gate` is GELU of, or undefined when `gate` is not that. */
function secondHalfUnder(g: GeluGraph, gate: string, a: string, d: number): string | undefined {
  // Back from the gate through what it reads (its GELU's nodes) to the Slice or Split output; the GELU is then checked
  // as a function of that tensor.
  const seen = new Set<string>();
  const stack = [gate];
  while (stack.length > 0 && seen.size < 4 * MAX_GELU_NODES) {
    const t = stack.pop()!;
    if (seen.has(t)) continue;
    seen.add(t);
    if (g.half(t, a, d) === 1) return g.isGelu(gate, t) ? t : undefined;
    const p = g.producer.get(t);
    if (p && p.opType !== 'Slice' && p.opType !== 'Split') stack.push(...p.input.filter((i) => i && g.scalar(i) === undefined));
  }
  return undefined;
}
