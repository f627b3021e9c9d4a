/**
 * Attention fusion: rewrites the written-out attention of a UNet export (q·kᵀ MatMul, scale, Softmax, ·v MatMul, and
 * the Reshape / Transpose pairs that split and merge the heads) into one `com.microsoft` MultiHeadAttention node,
 * which ONNX Runtime's GPU providers run as one kernel (flash attention where the device allows) instead of writing
 * the [batch·heads, queries, keys] scores to memory and reading them back twice. By default q and k are padded per
 * head (PAD_CHANNELS), which keeps ONNX Runtime's WebGPU provider (1.30, 1.31.1) off its flash-attention kernel (wrong on
 * lavapipe; see PAD_CHANNELS): it then runs the scores, Softmax and ·v as three kernels. Where the scores are the cost (SD's
 * first attention level: 4096 queries at a 64x64 latent, SDXL's at 128x128), that is most of the attention's time.
 *
 * Recognised layouts (what exporters write for diffusers' attention processors):
 * - heads folded into the batch (diffusers' classic processor, the TorchScript exporter): flat [B, S, H·d] →
 *   Reshape [B, S, H, d] → Transpose (0 2 1 3) → Reshape [B·H, S, d]; kᵀ as Transpose (0 2 1) of that; the output
 *   Reshape [B, H, S, d] → Transpose (0 2 1 3) → Reshape [B, S, H·d] (its sizes may be read from the output's own
 *   shape, as diffusers' batch_to_head_dim does);
 * - heads as their own axis (scaled-dot-product attention written out): Reshape [B, S, H, d] → Transpose (0 2 1 3),
 *   kᵀ as Transpose (0 1 3 2) of that or Transpose (0 2 3 1) of the Reshape, or (torch's dynamo exporter) as
 *   Reshape [-1, S, d] → Transpose (0 2 1) → Reshape [B, H, d, S] of it, with an inference Dropout after the Softmax;
 *   output Transpose (0 2 1 3) → Reshape. Target sizes may be constants or read from shapes at run time;
 * - heads computed after their split (SD3's joint attention, diffusers' JointAttnProcessor2_0): q, k and v each the
 *   image's heads and the text's concatenated on the sequence axis, each part split as above and perhaps normalised over
 *   each head's channels (SD3.5's RMS norms of q and k: a keepdims mean over the last axis, scalars, a per-channel
 *   weight); also one attention's normalised heads alone (SD3.5 medium's second attention). The fused node reads them
 *   flattened (Transpose 0 2 1 3, Reshape [0, 0, -1]), so the parts must agree on the head count and size.
 * torch's dynamo exporter (checked on real torch 2.13 exports, test/fixtures/dynamo-attention) writes both with its own
 * size arithmetic: targets as Concats of Shape slices (Shape's start / end, or Slice of `Shape(start=0)`) and of
 * symbolic sizes Reshaped to one entry; baddbmm's `empty` as Expand(0, shape); the default scale of
 * scaled-dot-product attention folded into one initializer, sqrt(1 / sqrt(d)), on q and on kᵀ. Exported at fixed
 * sizes, its targets are constants (the split inferring the length) and baddbmm's zeros one constant tensor.
 * Scalar Mul / Div on the scores or on q and kᵀ become the node's `scale` (and zeros added to the scores, as torch's
 * export of baddbmm with beta 0 writes them, are dropped); so does the default scale that torch's
 * export of scaled-dot-product attention computes from the query's shape (sqrt(1 / sqrt(d)) on q and on kᵀ). The head
 * count must be a constant in the split Reshape's target (it is in every export seen); the head size may be computed.
 * Where other nodes read the probabilities too (the attention-probe graph's probed layers, src/graph/attention-probe.ts),
 * the attention is fused all the same and the written-out scores and Softmax stay for those readers: the fused probe
 * graph then computes its noise prediction as the fused UNet does, so one session can serve both (pipeline.ts,
 * probeServesUnet). Anything else the patterns do not match exactly is left as it is: among them a float16 export's
 * attention upcast to float32 (Casts around the scores, SD 2.x's upcast_attention), which stays in float32 as exported
 * rather than going to a float16 kernel. An ONNX Attention node (opset 23) on split heads becomes the same node
 * (matchOnnxAttention). The result equals the unfused graph
 * up to float rounding. Portable: no Node APIs, no ONNX Runtime.
 */
import { create } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType,
  NodeProtoSchema,
  type GraphProto,
  type ModelProto,
  type NodeProto,
} from 'onnx-buf';
import { defaultOpset, intAttr, isDefaultDomain, isInferenceDropout } from './attention-probe.ts';
import { int64Tensor } from './small-model.ts';
import { pruneGraph } from './prune.ts';
import { MS_DOMAIN, importMsDomain } from './rewrite-index.ts';
import { peelScale, times, type Zeros } from './attention-scale.ts';
import { Graph, type Entry } from './shape-graph.ts';

export { MS_DOMAIN };
export const FUSED_SCOPE = '/asgd_fused_attention';

export type AttentionFusion = { fused: number; left: number } | { reason: string };

interface Heads {
  /** Where the fused node reads them: the flat [B, S, H·d] tensor they were split from, or heads joined (below). */
  source: HeadsSource;
  heads: number;
  folded: boolean;
  /** The split Reshape's target [B, S, H, d] (joined heads: the first part's, its S unknown). */
  split: Entry[];
}

/**
 * The fused node's q, k or v: `flat`, the [B, S, H·d] tensor the heads were split from; or `joined`, [B, H, S, d]
 * heads computed after the split (SD3's joint attention: the image's and the text's heads concatenated on the
 * sequence axis; SD3.5's q and k normalised per head), which the fusion flattens (Transpose 0 2 1 3, Reshape [0, 0, -1]).
 */
type HeadsSource = { flat: string } | { joined: string };

const splitHeads = (split: { flat: string; heads: number; split: Entry[] }, folded: boolean): Heads => ({ source: { flat: split.flat }, heads: split.heads, split: split.split, folded });


/** Reshape [B, S, H, d] of a flat tensor, H constant: the flat tensor, H and the target. */
function headSplit(g: Graph, name: string): { flat: string; heads: number; split: Entry[] } | undefined {
  const r = g.op(name, 'Reshape');
  const target = r ? g.shapeEntries(r.input[1]!) : undefined;
  const heads = target?.[2]?.value;
  if (!r || target?.length !== 4 || heads === null || heads === undefined || heads <= 0) return undefined;
  return { flat: r.input[0]!, heads, split: target };
}

/** [B, H, S, d] (Transpose 0 2 1 3 of the split) or folded [B·H, S, d] (a Reshape of that): the flat tensor. */
function headsOf(g: Graph, name: string): Heads | undefined {
  const fold = g.op(name, 'Reshape');
  if (fold) {
    const target = g.shapeEntries(fold.input[1]!);
    const t = g.op(fold.input[0], 'Transpose');
    const split = t && g.perm(t) === '0 2 1 3' ? headSplit(g, t.input[0]!) : undefined;
    if (!split || target?.length !== 3 || !foldsHeads(g, target[0]!, split.heads)) return undefined;
    return splitHeads(split, true);
  }
  const t = g.op(name, 'Transpose');
  const split = t && g.perm(t) === '0 2 1 3' ? headSplit(g, t.input[0]!) : undefined;
  if (split) return splitHeads(split, false);
  // Normalised per head after the split (SD3.5's q and k norms), or joined on the sequence axis (SD3).
  const normed = perHead(g, name);
  return normed ? { source: { joined: name }, heads: normed.heads, split: normed.split, folded: false } : joinedHeads(g, name);
}

/**
 * Heads [B, H, S, d] concatenated on the sequence axis from parts that are each split from a flat tensor, as they are
 * or normalised over each head's channels (perHead): SD3's joint attention (diffusers' JointAttnProcessor2_0), whose
 * q, k and v are the image's heads followed by the text's. The parts must agree on the head count and size.
 */
function joinedHeads(g: Graph, name: string): Heads | undefined {
  const c = g.op(name, 'Concat');
  const axis = c ? intAttr(c, 'axis') : undefined;
  if (!c || (axis !== 2n && axis !== -2n) || c.input.length < 2) return undefined;
  const parts = c.input.map((i) => perHead(g, i));
  const first = parts[0];
  if (!first || parts.some((p) => !p || p.heads !== first.heads || constantSize(p.split) !== constantSize(first.split))) return undefined;
  return { source: { joined: name }, heads: first.heads, folded: false, split: [first.split[0]!, { value: null }, first.split[2]!, first.split[3]!] };
}

/** Heads [B, H, S, d] split from a flat tensor (Reshape, Transpose 0 2 1 3), as they are or normalised per head. */
function perHead(g: Graph, name: string, depth = 0): { heads: number; split: Entry[] } | undefined {
  const t = g.op(name, 'Transpose');
  const split = t && g.perm(t) === '0 2 1 3' ? headSplit(g, t.input[0]!) : undefined;
  if (split) return split;
  const x = depth < 6 ? normalisedFrom(g, name) : undefined;
  return x ? perHead(g, x, depth + 1) : undefined;
}

/** A constant of at most one axis (a per-channel weight or a scalar), as it is or cast. */
function smallConstant(g: Graph, name: string): boolean {
  const cast = g.op(name, 'Cast') ?? g.op(name, 'CastLike');
  if (cast) return smallConstant(g, cast.input[0]!);
  const t = g.constantTensor(name);
  return t !== undefined && t.dims.length <= 1;
}

/** The last axis as a reduction names it: [-1], or [3] of a rank-4 tensor; kept as an axis of 1. */
function reducesLastAxis(g: Graph, node: NodeProto): boolean {
  if ((intAttr(node, 'keepdims') ?? 1n) !== 1n) return false;
  const attr = node.attribute.find((a) => a.name === 'axes')?.ints.map(Number);
  const axes = attr ?? (node.input[1] ? g.ints(node.input[1]) : undefined);
  return axes?.length === 1 && (axes[0] === -1 || axes[0] === 3);
}

/**
 * A statistic of each row of `x` over its last axis, kept as an axis of 1 (so it broadcasts over x's shape): a
 * ReduceMean over the last axis with keepdims of x, x squared or x cast, then Add, Mul or Div with a scalar, Sqrt,
 * Reciprocal or Cast (an RMS or variance denominator).
 */
function rowStatistic(g: Graph, name: string, x: string, depth = 0): boolean {
  const p = g.producer.get(name);
  if (!p || depth > 6 || !isDefaultDomain(p)) return false;
  if (p.opType === 'ReduceMean') {
    if (!reducesLastAxis(g, p)) return false;
    const ofX = (t: string | undefined) => t === x || g.op(t, 'Cast')?.input[0] === x;
    if (ofX(p.input[0])) return true;
    const inner = g.producer.get(p.input[0]!);
    if (inner?.opType === 'Pow') return ofX(inner.input[0]) && g.scalar(inner.input[1]!) === 2;
    return inner?.opType === 'Mul' && ofX(inner.input[0]) && ofX(inner.input[1]);
  }
  if (p.opType === 'Sqrt' || p.opType === 'Reciprocal' || p.opType === 'Cast') return rowStatistic(g, p.input[0]!, x, depth + 1);
  if (p.opType === 'Add' || p.opType === 'Mul' || p.opType === 'Div') {
    const [a, b] = p.input as [string, string];
    if (g.scalar(b) !== undefined) return rowStatistic(g, a, x, depth + 1);
    return p.opType !== 'Div' && g.scalar(a) !== undefined && rowStatistic(g, b, x, depth + 1);
  }
  return false;
}

/**
 * The tensor `name` normalises without changing its shape (RMS or layer norms over each head's channels, as SD3.5
 * writes its q and k norms): a Cast of it, it times a small constant (the norm's weight), it times or over a row
 * statistic of itself (rowStatistic), or a LayerNormalization of its last axis. Undefined for anything else.
 */
function normalisedFrom(g: Graph, name: string): string | undefined {
  const p = g.producer.get(name);
  if (!p || !isDefaultDomain(p)) return undefined;
  if (p.opType === 'Cast') return p.input[0];
  if (p.opType === 'LayerNormalization') return (intAttr(p, 'axis') ?? -1n) === -1n && p.output.length === 1 ? p.input[0] : undefined;
  if (p.opType !== 'Mul' && p.opType !== 'Div' && p.opType !== 'Add') return undefined;
  const [a, b] = p.input as [string, string];
  const keeps = (x: string, other: string) => smallConstant(g, other) || (p.opType !== 'Add' && rowStatistic(g, other, x));
  if (keeps(a, b)) return a;
  return p.opType !== 'Div' && keeps(b, a) ? b : undefined;
}

/** The first entry of a fold's target is B·H: a constant, or B times the constant H. */
function foldsHeads(g: Graph, entry: { value: number | null; source?: string }, heads: number): boolean {
  if (entry.value !== null) return true; // a fixed batch: the Reshape's own arithmetic holds it
  const mul = entry.source ? g.op(entry.source, 'Mul') : undefined;
  return !!mul && mul.input.some((i) => g.ints(i)?.length === 1 && g.ints(i)![0] === heads);
}

/**
 * kᵀ: Transpose (0 2 1) of folded heads, Transpose (0 1 3 2) of [B, H, S, d], Transpose (0 2 3 1) of the split, or
 * the swap the dynamo exporter writes for scaled-dot-product attention (a Transpose of rank 3 between two Reshapes).
 */
function keysTransposed(g: Graph, name: string): Heads | undefined {
  const sandwich = g.op(name, 'Reshape');
  if (sandwich) return keysSwappedByReshapes(g, sandwich);
  const t = g.op(name, 'Transpose');
  if (!t) return undefined;
  const perm = g.perm(t);
  if (perm === '0 2 1') {
    const h = headsOf(g, t.input[0]!);
    return h?.folded ? h : undefined;
  }
  if (perm === '0 1 3 2') {
    const h = headsOf(g, t.input[0]!);
    return h && !h.folded ? h : undefined;
  }
  if (perm === '0 2 3 1') {
    const split = headSplit(g, t.input[0]!);
    return split ? splitHeads(split, false) : undefined;
  }
  return undefined;
}

/**
 * kᵀ of k = [B, H, S, d] written as Reshape [-1, S, d] → Transpose (0 2 1) → Reshape [B, H, d, S] (torch's dynamo
 * exporter, which transposes with a static permutation whatever k's rank): both targets' S and d must be k's own,
 * read from k's shape at run time (a real export slices them from `Shape(k, start=0)`) or constants equal to the head
 * split's (S also a constant that the outer target pins, where the split infers it), and the outer target's leading
 * two B and H.
 */
function keysSwappedByReshapes(g: Graph, outer: NodeProto): Heads | undefined {
  const t = g.op(outer.input[0], 'Transpose');
  const inner = t && g.perm(t) === '0 2 1' ? g.op(t.input[0], 'Reshape') : undefined;
  const key = inner?.input[0];
  const h = key ? headsOf(g, key) : undefined;
  if (!inner || !key || !h || h.folded) return undefined;
  const ranks = new Map([[key, 4]]);
  const [a, b] = [g.shapeEntries(inner.input[1]!, ranks), g.shapeEntries(outer.input[1]!, ranks)];
  if (a?.length !== 3 || b?.length !== 4) return undefined;
  // k's axes [B, H, S, d] are the split's entries 0, 2, 1, 3.
  const splitIndex = [0, 2, 1, 3];
  const isKeyAxis = (e: Entry, axis: number): boolean => {
    if (e.dim) return e.dim.of === key && e.dim.axis === axis;
    const fromSplit = h.split[splitIndex[axis]!]!.value;
    return e.value !== null && e.value > 0 && (fromSplit === e.value || (axis === 1 && e.value === h.heads));
  };
  const same = (x: Entry, y: Entry): boolean =>
    x.dim && y.dim ? x.dim.of === y.dim.of && x.dim.axis === y.dim.axis : x.value !== null && x.value === y.value;
  const batch = b[0]!.value === null ? isKeyAxis(b[0]!, 0) : b[0]!.value > 0 && isKeyAxis(b[0]!, 0);
  // k's keys S: its own (read from its shape, or the split's constant), or, where the split infers it (-1, a static
  // export), a positive constant s that the outer Reshape pins: with B, H and d k's own there, it holds B·H·d·s of k's
  // B·H·S·d elements, so S = s, and the inner [-1, s, d] is [B·H, S, d].
  const keys = isKeyAxis(a[1]!, 2) || (batch && a[1]!.value !== null && a[1]!.value > 0);
  const ok = keys && isKeyAxis(a[2]!, 3) && same(b[2]!, a[2]!) && same(b[3]!, a[1]!) && (b[0]!.value === -1 || batch) && isKeyAxis(b[1]!, 1);
  return ok ? h : undefined;
}

/** The only consumer of `name`, if it has exactly one and is not a graph output. */
function soleConsumer(g: Graph, name: string): NodeProto | undefined {
  const c = g.consumers.get(name);
  return c?.length === 1 && !g.outputs.has(name) ? c[0] : undefined;
}

/**
 * The only consumer of `name` but Shape nodes, if it has one and `name` is not a graph output. diffusers' classic
 * processor merges the heads with sizes read from the tensor itself (`batch_to_head_dim`), so the exporter adds Shape
 * nodes reading it; they feed the merge's own target shapes and go with the rest once the merge is replaced.
 */
function soleUse(g: Graph, name: string): NodeProto | undefined {
  const c = g.consumers.get(name)?.filter((n) => !(n.opType === 'Shape' && (n.domain === '' || n.domain === 'ai.onnx')));
  return c?.length === 1 && !g.outputs.has(name) ? c[0] : undefined;
}

/** From the ·v MatMul's output to the Reshape that merges the heads back to [B, S, H·d]. */
function headMerge(g: Graph, pv: NodeProto, heads: number, folded: boolean): NodeProto | undefined {
  let t = soleUse(g, pv.output[0]!);
  if (folded) {
    if (t?.opType !== 'Reshape') return undefined;
    const target = g.shapeEntries(t.input[1]!);
    if (target?.length !== 4 || target[1]!.value !== heads) return undefined;
    t = soleUse(g, t.output[0]!);
  }
  if (t?.opType !== 'Transpose' || g.perm(t) !== '0 2 1 3') return undefined;
  const merge = soleUse(g, t.output[0]!);
  if (merge?.opType !== 'Reshape') return undefined;
  const target = g.shapeEntries(merge.input[1]!);
  return target?.length === 3 ? merge : undefined;
}

interface Site {
  merge: NodeProto;
  q: HeadsSource;
  k: HeadsSource;
  v: HeadsSource;
  heads: number;
  /** undefined: the head size's 1 / sqrt (the node's default). */
  scale: number | undefined;
  /** The head size where the split's target holds it as a constant. */
  headSize: number | undefined;
}

const constantSize = (split: Entry[]): number | undefined => {
  const d = split[3]?.value;
  return d !== null && d !== undefined && d > 0 ? d : undefined;
};

/**
 * What is known of the dimensions of `name`: a Reshape's target entries that are sizes (a positive constant, or one
 * computed at run time; not -1, nor a 0 that copies), or those of a Transpose of such a Reshape, permuted. Unknown
 * dimensions are undefined; undefined for any other producer.
 */
function knownDims(g: Graph, name: string, depth = 0): (Entry | undefined)[] | undefined {
  const r = g.op(name, 'Reshape');
  if (r) return g.shapeEntries(r.input[1]!)?.map((e) => (e.value === null ? (e.dim || e.source ? e : undefined) : e.value > 0 ? e : undefined));
  const t = g.op(name, 'Transpose');
  const perm = t?.attribute.find((a) => a.name === 'perm')?.ints.map(Number);
  if (!t || !perm || depth > 2) return undefined;
  const inner = knownDims(g, t.input[0]!, depth + 1);
  return inner?.length === perm.length ? perm.map((p) => inner[p]) : undefined;
}

/** Two shape entries that are the same size: one positive constant, one dimension of one tensor, or one scalar. */
function sameEntry(a: Entry, b: Entry): boolean {
  if (a.value !== null || b.value !== null) return a.value !== null && a.value > 0 && a.value === b.value;
  if (a.dim && b.dim && a.dim.of === b.dim.of && a.dim.axis === b.dim.axis) return true;
  return a.source !== undefined && a.source === b.source;
}

/**
 * Whether the zeros' shape (a shape tensor, or a constant's dimensions) is the scores' own shape (rank `rank`), so that
 * adding them changes nothing: Shape of the q·kᵀ MatMul, or entries each equal to the scores' dimension: read from the shapes of its
 * operands (the leading ones and the queries from q, the keys from kᵀ or from the keys before their Transpose), as
 * torch's TorchScript export of baddbmm computes it, or the same sizes as the Reshape targets that made q (leading
 * ones and queries) and kᵀ (keys) hold, as torch's dynamo export of baddbmm writes it. A leading entry of q's may be 1
 * where MatMul broadcast k's batch over it; zeros of that shape still broadcast to the scores' shape.
 */
function scoresShape(g: Graph, zeros: Zeros, qk: NodeProto, q: string, kt: string, rank: number): boolean {
  const shape = zeros.shape;
  if (shape !== undefined && g.op(shape, 'Shape')) return g.wholeShapeOf(shape) === qk.output[0];
  const entries = zeros.dims ? zeros.dims.map((value): Entry => ({ value })) : shape === undefined ? undefined : g.shapeEntries(shape);
  if (entries?.length !== rank) return false;
  const transpose = g.op(kt, 'Transpose');
  const perm = transpose?.attribute.find((a) => a.name === 'perm')?.ints.map(Number);
  const readFromOperands = (e: Entry, i: number): boolean => {
    const gather = e.source ? g.op(e.source, 'Gather') : undefined;
    const of = gather ? g.wholeShapeOf(gather.input[0]) : undefined;
    const index = gather ? g.ints(gather.input[1]!) : undefined;
    if (of === undefined || index?.length !== 1 || (intAttr(gather!, 'axis') ?? 0n) !== 0n) return false;
    const at = index[0]! < 0 ? index[0]! + rank : index[0]!;
    if (of === qk.output[0] || (i < rank - 1 && of === q)) return at === i;
    return i === rank - 1 && ((of === kt && at === i) || (of === transpose?.input[0] && perm?.length === rank && at === perm[i]));
  };
  const [qDims, kDims] = [knownDims(g, q), knownDims(g, kt)];
  const expected = (i: number): Entry | undefined => (i < rank - 1 ? (qDims?.length === rank ? qDims[i] : undefined) : kDims?.length === rank ? kDims[i] : undefined);
  return entries.every((e, i) => readFromOperands(e, i) || (expected(i) !== undefined && sameEntry(e, expected(i)!)));
}

/**
 * The probabilities as the ·v MatMul reads them: the Softmax's output, or that of a Dropout after it that does nothing
 * (no training_mode, or a constant false; its mask unread), as the dynamo exporter writes scaled-dot-product attention.
 */
function probabilities(g: Graph, softmax: NodeProto): { name: string; reader: NodeProto } | undefined {
  const out = softmax.output[0]!;
  const readers = g.consumers.get(out) ?? [];
  // Other readers of the probabilities (the probe's map nodes) keep the written-out scores alive beside the fused node.
  const next = readers.length === 1 ? readers[0] : readers.find((n) => (n.opType === 'MatMul' && n.input[0] === out) || n.opType === 'Dropout');
  if (next?.opType !== 'Dropout') return next ? { name: out, reader: next } : undefined;
  if (!isInferenceDropout(next, (t) => g.constantTensor(t), (t) => g.consumers.has(t) || g.outputs.has(t))) return undefined;
  const reader = soleConsumer(g, next.output[0]!);
  return reader ? { name: next.output[0]!, reader } : undefined;
}

function matchSite(g: Graph, softmax: NodeProto, opset: number): Site | undefined {
  const probs = probabilities(g, softmax);
  const pv = probs?.reader;
  if (!pv || pv.opType !== 'MatMul' || pv.input[0] !== probs.name) return undefined;
  const scores = peelScale(g, softmax.input[0]!);
  const qk = g.op(scores.name, 'MatMul');
  if (!qk || soleConsumer(g, qk.output[0]!) === undefined) return undefined;
  const qs = peelScale(g, qk.input[0]!);
  const ks = peelScale(g, qk.input[1]!);
  const q = headsOf(g, qs.name);
  const k = keysTransposed(g, ks.name);
  const v = headsOf(g, pv.input[1]!);
  if (!q || !k || !v || q.heads !== k.heads || q.heads !== v.heads || q.folded !== k.folded || q.folded !== v.folded) return undefined;
  if (qs.zeroShapes.length > 0 || ks.zeroShapes.length > 0) return undefined;
  if (!scores.zeroShapes.every((z) => (z.shape === undefined && z.dims === undefined) || scoresShape(g, z, qk, qs.name, ks.name, q.folded ? 3 : 4))) return undefined;
  // The Softmax must run over the keys: the last axis of [B·H, S, L] or [B, H, S, L].
  const axis = intAttr(softmax, 'axis') ?? (opset >= 13 ? -1n : 1n);
  if (axis !== -1n && axis !== (q.folded ? 2n : 3n)) return undefined;
  const merge = headMerge(g, pv, q.heads, q.folded);
  if (!merge) return undefined;
  const total = times(times(scores.scale, qs.scale), ks.scale);
  let scale: number | undefined;
  if (total.p === 0) {
    scale = total.c;
    if (!Number.isFinite(scale) || scale === 0) return undefined;
  } else {
    // c · d^-1/2 with c = 1 and d the head size (the shapes are q's or k's heads): MultiHeadAttention's default scale.
    const heads = new Set([qs.name, g.producer.get(ks.name)?.input[0]]);
    if (total.p !== -0.5 || Math.abs(total.c - 1) > 1e-6 || !total.shapes.every((t) => heads.has(t))) return undefined;
  }
  return { merge, q: q.source, k: k.source, v: v.source, heads: q.heads, scale, headSize: constantSize(q.split) };
}

/**
 * An ONNX Attention node (opset 23) on heads as their own axis, as torch's dynamo exporter writes scaled-dot-product
 * attention at that opset: q, k, v split from flat tensors, its output merged back, no mask, no past keys and values,
 * not causal, no softcap, its other outputs unread (the attention-probe graph reads the fourth). ONNX Runtime 1.30's
 * WebGPU provider has no kernel for it (the node falls back to the CPU); MultiHeadAttention has one.
 */
function matchOnnxAttention(g: Graph, node: NodeProto): Site | undefined {
  const attribute = (name: string) => node.attribute.find((a) => a.name === name);
  if (node.input.slice(3).some((x) => x !== '')) return undefined;
  if (node.output.slice(1).some((o) => o !== '' && (g.consumers.has(o) || g.outputs.has(o)))) return undefined;
  if ((attribute('is_causal')?.i ?? 0n) !== 0n || (attribute('softcap')?.f ?? 0) !== 0) return undefined;
  if (attribute('q_num_heads') || attribute('kv_num_heads')) return undefined; // 3-D inputs: another layout
  const [q, k, v] = [0, 1, 2].map((i) => headsOf(g, node.input[i] ?? ''));
  if (!q || !k || !v || q.folded || k.folded || v.folded || q.heads !== k.heads || q.heads !== v.heads) return undefined;
  const merge = headMerge(g, node, q.heads, false);
  if (!merge) return undefined;
  const scale = attribute('scale');
  return { merge, q: q.source, k: k.source, v: v.source, heads: q.heads, scale: scale ? scale.f : undefined, headSize: constantSize(q.split) };
}

/** The model's ONNX `Attention` nodes (the standard operator exists from opset 23; torch's dynamo exporter writes it there). */
function onnxAttentionNodes(model: ModelProto, opset = defaultOpset(model)): NodeProto[] {
  return opset >= 23 ? (model.graph?.node ?? []).filter((n) => n.opType === 'Attention' && isDefaultDomain(n)) : [];
}

/** How many ONNX `Attention` nodes the model has (0 below opset 23). */
export function countOnnxAttention(model: ModelProto): number {
  return onnxAttentionNodes(model).length;
}

/**
 * Why fuseAttention fused nothing in `model`: its export runs the attention fused already (MultiHeadAttention nodes
 * of its own), or no attention is written out in a layout the fusion recognises.
 */
export function unfusedReason(model: ModelProto): string {
  const own = model.graph?.node.filter((n) => n.opType === 'MultiHeadAttention' && n.domain === MS_DOMAIN).length ?? 0;
  if (own > 0) return `the export runs its attention fused already (${own} MultiHeadAttention node${own === 1 ? '' : 's'})`;
  return 'no attention written out in a layout the fusion recognises';
}

/** What the fusion writes. */
export interface FuseAttentionOptions {
  /**
   * Write q and k as they are (same head size as v), so that ONNX Runtime's WebGPU provider may run its
   * flash-attention kernel. Default false: q and k get PAD_CHANNELS zero channels per head (see padQueryKey).
   */
  flashForm?: boolean;
}

/**
 * Zero channels appended to each head of q and k. A zero channel adds nothing to q·kᵀ, so the attention is the same
 * (its scale written out, as the node's default would count the padding); but q's head size then differs from v's,
 * and ONNX Runtime 1.30's WebGPU MultiHeadAttention takes its flash-attention kernel only where they are equal (and
 * the head size is a multiple of 4): without it, it computes the scores, Softmax and ·v as three kernels. Its
 * flash-attention kernel was measured wrong on lavapipe (Mesa's CPU Vulkan driver) wherever the keys outnumber the
 * subgroup size (8 there; 4 and 16 with LP_NATIVE_VECTOR_WIDTH 128 and 512), off by 0.1 to 0.5 at inputs up to 2;
 * the three kernels are within float rounding (docs/benchmarks.md, "Fused attention"). 4 keeps the head size a
 * multiple of 4, which the three kernels read four at a time.
 */
export const PAD_CHANNELS = 4;

/**
 * Fuses every recognised attention of `model` (mutated in place) into MultiHeadAttention nodes and prunes what they
 * replace. Returns how many were fused and how many Softmax nodes are left, or why nothing can be done. An attention
 * whose head size is not a constant and whose scale is the default (1 / sqrt of the head size) is written in the
 * flash form, whose scale the padding would change.
 */
export function fuseAttention(model: ModelProto, options: FuseAttentionOptions = {}): AttentionFusion {
  const graph = model.graph;
  if (!graph) return { reason: 'the model has no graph' };
  const opset = defaultOpset(model);
  if (opset < 11) return { reason: `the model uses ONNX opset ${opset}; attention fusion needs 11 or later` };
  const g = new Graph(graph);
  const softmaxes = graph.node.filter((n) => n.opType === 'Softmax' && isDefaultDomain(n));
  const attentions = onnxAttentionNodes(model, opset);
  const replace = new Map<NodeProto, NodeProto[]>();
  for (const [i, node] of [...softmaxes, ...attentions].entries()) {
    const site = node.opType === 'Softmax' ? matchSite(g, node, opset) : matchOnnxAttention(g, node);
    if (!site) continue;
    const name = `${FUSED_SCOPE}/MultiHeadAttention_${i}`;
    const pad = !options.flashForm && (site.scale !== undefined || site.headSize !== undefined);
    const scale = site.scale ?? (pad ? 1 / Math.sqrt(site.headSize!) : undefined);
    const joins: NodeProto[] = [];
    const [fq, fk, fv] = (['q', 'k', 'v'] as const).map((side) => flatInput(graph, name, side, site[side], joins)) as [string, string, string];
    const [q, k, padding] = pad ? padQueryKey(graph, name, fq, fk, site.heads) : [fq, fk, []];
    replace.set(site.merge, [...joins, ...padding, create(NodeProtoSchema, {
      name,
      opType: 'MultiHeadAttention',
      domain: MS_DOMAIN,
      input: [q, k, fv],
      output: [site.merge.output[0]!],
      attribute: [
        create(AttributeProtoSchema, { name: 'num_heads', type: AttributeProto_AttributeType.INT, i: BigInt(site.heads) }),
        ...(scale === undefined ? [] : [create(AttributeProtoSchema, { name: 'scale', type: AttributeProto_AttributeType.FLOAT, f: scale })]),
      ],
    })]);
  }
  if (replace.size === 0) return { fused: 0, left: softmaxes.length + attentions.length };
  // The fused node (after the padding of q and k) takes the merge Reshape's place: its inputs (the flat q, k, v) come
  // earlier in topological order.
  graph.node = graph.node.flatMap((n) => replace.get(n) ?? [n]);
  importMsDomain(model);
  pruneGraph(graph);
  const left = graph.node.filter((n) => n.opType === 'Softmax' && isDefaultDomain(n)).length + onnxAttentionNodes(model, opset).length;
  return { fused: replace.size, left };
}

function int64Initializer(graph: GraphProto, name: string, values: number[]): string {
  graph.initializer.push(int64Tensor(name, values));
  return name;
}

/**
 * The fused node's input for q, k or v: the flat tensor, or joined heads [B, H, S, d] flattened to [B, S, H·d]
 * (Transpose 0 2 1 3, Reshape [0, 0, -1]; the nodes go to `nodes`).
 */
function flatInput(graph: GraphProto, name: string, side: string, source: HeadsSource, nodes: NodeProto[]): string {
  if ('flat' in source) return source.flat;
  const step = (opType: string, inputs: string[], what: string, attribute: ReturnType<typeof create<typeof AttributeProtoSchema>>[] = []) => {
    const output = `${name}/${side}_${what}_output`;
    nodes.push(create(NodeProtoSchema, { name: `${name}/${side}_${what}`, opType, input: inputs, output: [output], attribute }));
    return output;
  };
  const perm = create(AttributeProtoSchema, { name: 'perm', type: AttributeProto_AttributeType.INTS, ints: [0n, 2n, 1n, 3n] });
  const target = int64Initializer(graph, `${name}/${side}_flat_shape`, [0, 0, -1]);
  return step('Reshape', [step('Transpose', [source.joined], 'unjoin', [perm]), target], 'flat');
}

/**
 * q and k, flat [B, S, H·d], as [B, S, H·(d + PAD_CHANNELS)]: each head followed by PAD_CHANNELS zeros (Reshape to
 * [B, S, H, d], Pad of the last axis, Reshape back). Returns the padded names and the nodes that compute them.
 */
function padQueryKey(graph: GraphProto, name: string, q: string, k: string, heads: number): [string, string, NodeProto[]] {
  const split = int64Initializer(graph, `${name}/split_heads`, [0, 0, heads, -1]);
  const pads = int64Initializer(graph, `${name}/pads`, [0, 0, 0, 0, 0, 0, 0, PAD_CHANNELS]);
  const merge = int64Initializer(graph, `${name}/merge_heads`, [0, 0, -1]);
  const nodes: NodeProto[] = [];
  const padded = (input: string, side: string): string => {
    const node = (opType: string, inputs: string[], step: string) => {
      nodes.push(create(NodeProtoSchema, { name: `${name}/${side}_${step}`, opType, input: inputs, output: [`${name}/${side}_${step}_output`] }));
      return `${name}/${side}_${step}_output`;
    };
    return node('Reshape', [node('Pad', [node('Reshape', [input, split], 'split'), pads], 'pad'), merge], 'merge');
  };
  return [padded(q, 'q'), padded(k, 'k'), nodes];
}
