/**
 * The scale and the added zeros around an attention's scores, as exporters write them: scalar Mul / Div on the scores
 * or on q and kᵀ (torch's default scale computed from the head size included) and baddbmm's zeros, peeled off so that
 * the fusion can give the fused node one `scale`. Portable: no Node APIs.
 */
import type { NodeProto } from 'onnx-buf';
import { intAttr, isDefaultDomain } from './attention-probe.ts';
import type { Graph } from './shape-graph.ts';
import { isZeroTensor, tensorScalar } from './tensor-values.ts';

/**
 * A scale factor c · d^p, d being the last dimension of the tensors in `shapes` (the head size): torch's export of
 * scaled-dot-product attention computes its default scale from the query's shape, 1 / sqrt(d), and multiplies q and
 * kᵀ by its square root each.
 */
export interface Factor {
  c: number;
  p: number;
  shapes: string[];
}

const ONE: Factor = { c: 1, p: 0, shapes: [] };
export const times = (a: Factor, b: Factor): Factor => ({ c: a.c * b.c, p: a.p + b.p, shapes: [...a.shapes, ...b.shapes] });
const inverse = (a: Factor): Factor => ({ c: 1 / a.c, p: -a.p, shapes: a.shapes });

/** `name` as a Factor: constants, and Shape(t)[-1] through Cast, Sqrt, Reciprocal, Mul and Div; else undefined. */
function factorOf(g: Graph, name: string, depth = 0): Factor | undefined {
  const s = g.scalar(name);
  if (s !== undefined) return { c: s, p: 0, shapes: [] };
  const n = g.producer.get(name);
  if (!n || depth > 12 || (n.domain !== '' && n.domain !== 'ai.onnx')) return undefined;
  const arg = (i: number) => factorOf(g, n.input[i] ?? '', depth + 1);
  switch (n.opType) {
    case 'Cast':
    case 'CastLike':
    case 'Identity':
      return arg(0);
    case 'Sqrt': {
      const f = arg(0);
      return f && f.c > 0 ? { c: Math.sqrt(f.c), p: f.p / 2, shapes: f.shapes } : undefined;
    }
    case 'Reciprocal': {
      const f = arg(0);
      return f && f.c !== 0 ? inverse(f) : undefined;
    }
    case 'Mul':
    case 'Div': {
      const [a, b] = [arg(0), arg(1)];
      if (!a || !b || (n.opType === 'Div' && b.c === 0)) return undefined;
      return times(a, n.opType === 'Mul' ? b : inverse(b));
    }
    case 'Slice':
    case 'Gather': {
      const of = g.wholeShapeOf(n.input[0]);
      if (of === undefined) return undefined;
      const last = n.opType === 'Gather'
        ? (intAttr(n, 'axis') ?? 0n) === 0n && g.ints(n.input[1]!)?.length === 1 && g.ints(n.input[1]!)![0] === -1
        : g.ints(n.input[1]!)?.join() === '-1' && (g.ints(n.input[2]!)?.[0] ?? 0) >= 2 ** 31 &&
          (n.input[3] === undefined || n.input[3] === '' || g.ints(n.input[3])?.join() === '0') &&
          (n.input[4] === undefined || n.input[4] === '' || g.ints(n.input[4])?.join() === '1');
      return last ? { c: 1, p: 1, shapes: [of] } : undefined;
    }
    default:
      return undefined;
  }
}

/**
 * Zeros added to the scores: the shape tensor they have (`shape`; undefined for a scalar), or their dimensions where
 * they are a constant (`dims`), for the caller to check against the scores' shape.
 */
export interface Zeros {
  shape: string | undefined;
  dims?: number[];
}

/**
 * A tensor of zeros: a constant of zeros (the dynamo exporter's static export folds baddbmm's beta · empty into one),
 * ConstantOfShape of 0, Expand of a zero scalar, or a zero scalar times a finite ConstantOfShape,
 * Expand of a finite scalar, or constant. torch's export of baddbmm(empty, q, kᵀ, beta=0, alpha=scale) (diffusers'
 * classic processor since 0.8, when it has no mask) adds beta · empty: the TorchScript exporter writes it as
 * ConstantOfShape(shape of the scores) · 0, the dynamo exporter as Expand(0, shape of the scores) · 0. The shape, which
 * the Add could broadcast the scores to, is returned for the caller to check.
 */
function zeroTerm(g: Graph, name: string, depth = 0): Zeros | undefined {
  const s = g.scalar(name);
  if (s !== undefined) return s === 0 ? { shape: undefined } : undefined;
  const t = g.constantTensor(name);
  if (t) return isZeroTensor(t) ? { shape: undefined, dims: t.dims.map(Number) } : undefined;
  const p = g.producer.get(name);
  if (!p || depth > 4 || (p.domain !== '' && p.domain !== 'ai.onnx')) return undefined;
  if (p.opType === 'Cast' || p.opType === 'Identity') return zeroTerm(g, p.input[0] ?? '', depth + 1);
  if (p.opType === 'ConstantOfShape') return constantOfShape(g, p) === 0 ? { shape: p.input[0] } : undefined;
  if (p.opType === 'Expand') return expandedScalar(g, p) === 0 ? { shape: p.input[1] } : undefined;
  if (p.opType !== 'Mul' || p.input.length !== 2) return undefined;
  const finite = (x: string): Zeros | undefined => {
    const v = g.scalar(x);
    if (v !== undefined) return Number.isFinite(v) ? { shape: undefined } : undefined;
    const c = g.producer.get(x);
    if (c?.opType === 'Expand' && isDefaultDomain(c)) return Number.isFinite(expandedScalar(g, c)) ? { shape: c.input[1] } : undefined;
    return c?.opType === 'ConstantOfShape' && Number.isFinite(constantOfShape(g, c)) ? { shape: c.input[0] } : undefined;
  };
  const [a, b] = [p.input[0]!, p.input[1]!];
  if (g.scalar(b) === 0) return finite(a);
  if (g.scalar(a) === 0) return finite(b);
  return undefined;
}

/**
 * The value an Expand fills its target shape with: its input, a float constant of one element and rank 0 or 1 (so that
 * the output's shape is the target's); NaN for anything else.
 */
function expandedScalar(g: Graph, n: NodeProto): number {
  const input = n.input[0] ?? '';
  const t = g.constantTensor(input);
  const rank = t ? t.dims.length : g.producer.get(input)?.attribute.some((a) => a.name === 'value_float') ? 0 : undefined;
  return rank !== undefined && rank <= 1 && n.input[1] ? g.scalar(input) ?? Number.NaN : Number.NaN;
}

/** The value a ConstantOfShape fills with (0 when it has no `value`); NaN when it is not a float scalar. */
function constantOfShape(g: Graph, n: NodeProto): number {
  const t = n.attribute.find((a) => a.name === 'value')?.t;
  return t ? tensorScalar(t) ?? Number.NaN : 0;
}

/**
 * Peels scale factors (Mul / Div by a Factor) and added zeros (zeroTerm) off `name`: the tensor under them, the factor
 * they apply, and the shapes of the zeros (each to be checked against the scores' shape).
 */
export function peelScale(g: Graph, name: string): { name: string; scale: Factor; zeroShapes: Zeros[] } {
  let scale = ONE;
  const zeroShapes: Zeros[] = [];
  for (;;) {
    const p = g.producer.get(name);
    if (p?.opType === 'Add' && p.input.length === 2 && (p.domain === '' || p.domain === 'ai.onnx')) {
      const zb = zeroTerm(g, p.input[1]!);
      const za = zb ? undefined : zeroTerm(g, p.input[0]!);
      if (!zb && !za) return { name, scale, zeroShapes };
      zeroShapes.push((zb ?? za)!);
      name = p.input[zb ? 0 : 1]!;
      continue;
    }
    if (!p || (p.opType !== 'Mul' && p.opType !== 'Div') || p.input.length !== 2) return { name, scale, zeroShapes };
    const b = factorOf(g, p.input[1]!);
    const a = p.opType === 'Mul' ? factorOf(g, p.input[0]!) : undefined;
    if (b !== undefined) {
      scale = times(scale, p.opType === 'Mul' ? b : inverse(b));
      name = p.input[0]!;
    } else if (a !== undefined) {
      scale = times(scale, a);
      name = p.input[1]!;
    } else return { name, scale, zeroShapes };
  }
}
