/**
 * Graph surgery that splits a VAE decoder at its (last) self-attention block, so that tiled decoding can compute the
 * attention once over the whole latent (src/core/vae/tiled.ts, attention 'global'):
 *
 * - the head: everything up to the cut, a single tensor after the attention (in SD decoders the mid block's
 *   attention output, at latent resolution), run once on the whole latent;
 * - the tail: the rest, whose only input is the cut tensor; it is tiled like the decoder (with the GroupNorm
 *   statistics surgery of src/graph/vae-norm-graph.ts applied to it).
 *
 * The cut is found structurally: walking the topological order from the attention's Softmax, the first point where
 * exactly one non-constant tensor is live (produced before, consumed after). Tensors computed from shapes (Shape,
 * ConstantOfShape ...) count as non-constant, so no shape of the whole image crosses into the tail; pure constants
 * (initializers and what is computed from them alone) are recomputed in the tail.
 *
 * For latents whose attention scores do not fit in memory, the head is split further at the attention core:
 * - pre: the head up to the core; outputs the q·kᵀ MatMul's operands, V, and every other tensor crossing the core;
 * - core: the scores MatMul, its scalar scale, the Softmax over the last axis, Casts, and the probabilities·V MatMul:
 *   rows (queries) are independent, so it can run over chunks of queries against all keys and values;
 * - post: from the core's output (and the crossing tensors) to the cut.
 *
 * Works on the ModelProto alone (no Node APIs, no ONNX Runtime); mutates the model it is given.
 */
import { create } from '@bufbuild/protobuf';
import { elementTypes } from './element-types.ts';
import {
  AttributeProto_AttributeType,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
} from 'onnx-buf';
import { NO_ATTENTION_REASON } from '../core/vae/attention-chunks.ts';
import { FUSED_ATTENTION_OPS, defaultOpset, indexGraph, isInferenceDropout, scoresMatMul, softmaxAxisProblem } from './attention-probe.ts';
import { pruneGraph } from './prune.ts';

/** Where a decoder is cut after its attention, or why it cannot be. */
export interface AttentionCut {
  /** The tensor the head outputs and the tail reads. */
  cut: string;
  /** Index (in graph.node) of the node after which the cut lies. */
  index: number;
  /** The attention node (Softmax or fused attention operator) the cut follows. */
  attention: string;
}

/** The attention core of the head: the q·kᵀ MatMul's operands, V and the core's output. */
export interface AttentionCore {
  q: string;
  k: string;
  v: string;
  out: string;
  /** Tensors from before the core to after it, other than q, k, v (e.g. the residual). */
  crossing: string[];
}

export type Reason = { reason: string };

const FLOAT32 = 1;

/** Operators that change the spatial resolution: the head must not contain any (its output is on the latent grid). */
const RESAMPLING_OPS = new Set(['Resize', 'Upsample', 'ConvTranspose', 'DepthToSpace', 'SpaceToDepth', 'MaxPool', 'AveragePool', 'LpPool']);

/** Tensors fixed at load time: initializers and what is computed from them alone (not shapes: those depend on the input). */
export function constantTensors(graph: GraphProto): Set<string> {
  const known = new Set<string>(['']);
  for (const t of graph.initializer) known.add(t.name);
  for (const node of graph.node) if (node.input.every((i) => known.has(i))) for (const o of node.output) known.add(o);
  return known;
}

function isDefaultDomain(node: NodeProto): boolean {
  return node.domain === '' || node.domain === 'ai.onnx';
}

function nodeLabel(node: NodeProto): string {
  return node.name || node.output[0] || node.opType;
}

/** The attention nodes: Softmax (ONNX domain) and fused attention operators, in graph order. */
function attentionNodes(graph: GraphProto): NodeProto[] {
  return graph.node.filter((n) => (n.opType === 'Softmax' && isDefaultDomain(n)) || FUSED_ATTENTION_OPS.has(n.opType));
}

/** A decoder is cut after its last attention, an encoder before its first. */
export type VaeHalf = 'decoder' | 'encoder';

/**
 * Finds the single-tensor cut: for a decoder, the first point after its last attention where one non-constant tensor
 * is live (the part before runs once on the whole latent, the part after in tiles); for an encoder, the last point
 * before its first attention (the part before runs in tiles, the part after once on the whole latent grid).
 */
export function findAttentionCut(model: ModelProto, half: VaeHalf = 'decoder'): AttentionCut | Reason {
  const graph = model.graph;
  if (!graph || graph.node.length === 0) return { reason: 'the graph is empty' };
  const attn = attentionNodes(graph);
  if (attn.length === 0) return { reason: NO_ATTENTION_REASON };
  const anchor = half === 'decoder' ? attn[attn.length - 1]! : attn[0]!;
  const at = graph.node.indexOf(anchor);
  const constant = constantTensors(graph);
  const outputs = new Set(graph.output.map((o) => o.name));
  // Liveness of every non-constant tensor: produced at p (graph inputs: -1), last read at u (outputs: infinity).
  const produced = new Map<string, number>();
  for (const i of graph.input) if (!constant.has(i.name)) produced.set(i.name, -1);
  graph.node.forEach((n, j) => {
    for (const o of n.output) if (o && !constant.has(o)) produced.set(o, j);
  });
  const lastUse = new Map<string, number>();
  graph.node.forEach((n, j) => {
    for (const i of n.input) if (produced.has(i)) lastUse.set(i, j);
    // Subgraphs (If/Loop) may read outer tensors.
    for (const a of n.attribute) for (const sub of [a.g, ...a.graphs]) if (sub) for (const sn of sub.node) for (const i of sn.input) if (produced.has(i)) lastUse.set(i, j);
  });
  for (const o of outputs) lastUse.set(o, Infinity);
  // live[i] = #{t : produced(t) <= i < lastUse(t)}, swept over the nodes.
  const n = graph.node.length;
  const add = new Int32Array(n);
  const drop = new Int32Array(n);
  let count = 0;
  for (const [t, p] of produced) {
    const u = lastUse.get(t);
    if (u === undefined) continue; // never read
    if (p < 0) count++;
    else add[p]! += 1;
    if (u !== Infinity) drop[u]! += 1;
  }
  const live = new Int32Array(n);
  for (let i = 0; i < n; i++) live[i] = count += add[i]! - drop[i]!;
  const single = (i: number) => {
    if (live[i] !== 1) return undefined;
    const crossing = [...produced].filter(([t, p]) => p <= i && (lastUse.get(t) ?? -1) > i).map(([t]) => t);
    return crossing.length === 1 && !outputs.has(crossing[0]!) ? crossing[0]! : undefined;
  };
  const label = nodeLabel(anchor);
  if (half === 'decoder') {
    for (let i = at; i < n; i++) {
      const cut = single(i);
      if (cut === undefined) continue;
      for (let j = 0; j <= i; j++) {
        const node = graph.node[j]!;
        if (RESAMPLING_OPS.has(node.opType) || (node.opType === 'Conv' && stridedConv(node))) {
          return { reason: `its attention ${label} is not at latent resolution (${nodeLabel(node)}, a ${node.opType}, comes before it)` };
        }
      }
      return { cut, index: i, attention: label };
    }
    return { reason: `no single tensor carries everything after the attention ${label} to the rest of the decoder` };
  }
  if (graph.output.length !== 1) return { reason: `the encoder has ${graph.output.length} outputs` };
  for (let i = at - 1; i >= 0; i--) {
    const cut = single(i);
    if (cut === undefined) continue;
    for (let j = i + 1; j < n; j++) {
      const node = graph.node[j]!;
      if (RESAMPLING_OPS.has(node.opType) || (node.opType === 'Conv' && stridedConv(node))) {
        return { reason: `its attention ${label} is not at latent resolution (${nodeLabel(node)}, a ${node.opType}, comes after it)` };
      }
    }
    return { cut, index: i, attention: label };
  }
  return { reason: `no single tensor carries everything before the attention ${label} into it` };
}

function stridedConv(node: NodeProto): boolean {
  const s = node.attribute.find((a) => a.name === 'strides');
  return !!s && s.type === AttributeProto_AttributeType.INTS && s.ints.some((v) => v !== 1n);
}

function valueInfo(name: string, elemType: number) {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, { value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType }) } }),
  });
}


/**
 * Rewrites `model` into the part made of `nodes` (plus the pure-constant nodes it needs), reading `inputs` and
 * writing `outputs`; checks that every tensor it reads is available. `types`: element types of tensors the graph
 * does not say (default: propagated through the graph, elementTypes).
 */
export function extract(
  model: ModelProto, nodes: ReadonlySet<NodeProto>, inputs: readonly string[], outputs: readonly string[], what: string, types = elementTypes(model.graph!),
): Reason | undefined {
  const graph = model.graph!;
  const constant = constantTensors(graph);
  const inits = new Set(graph.initializer.map((t) => t.name));
  const fallback = graph.input[0]?.type?.value.case === 'tensorType' ? graph.input[0].type.value.value.elemType : FLOAT32;
  const typeOf = (t: string) => types.get(t) ?? fallback;
  graph.node = graph.node.filter((n) => nodes.has(n) || (n.output.every((o) => constant.has(o)) && !inputs.some((i) => n.output.includes(i))));
  // Old exports list initializers as inputs too: keep those (they are weights).
  const weightInputs = graph.input.filter((i) => inits.has(i.name));
  graph.input = [...inputs.map((i) => graph.input.find((x) => x.name === i) ?? valueInfo(i, typeOf(i))), ...weightInputs];
  graph.output = outputs.map((o) => graph.output.find((x) => x.name === o) ?? valueInfo(o, typeOf(o)));
  pruneGraph(graph, { inputs: true });
  const available = new Set<string>(['', ...inputs, ...graph.initializer.map((t) => t.name)]);
  for (const node of graph.node) {
    for (const i of node.input) if (!available.has(i)) return { reason: `the ${what} reads ${i}, which it does not compute` };
    for (const o of node.output) available.add(o);
  }
  for (const o of outputs) if (!available.has(o)) return { reason: `the ${what} does not compute ${o}` };
  return undefined;
}

function prepareCut(model: ModelProto, half: VaeHalf): AttentionCut | Reason {
  if (!model.graph) return { reason: 'the model has no graph' };
  if (defaultOpset(model) < 11) return { reason: `it uses ONNX opset ${defaultOpset(model)}; the surgery needs opset 11 or later` };
  return findAttentionCut(model, half);
}

/** The nodes, inputs and output of the part of `half` that runs on the whole latent. */
function globalRange(graph: GraphProto, cut: AttentionCut, half: VaeHalf): { nodes: NodeProto[]; inputs: string[]; output: string } {
  return half === 'decoder'
    ? { nodes: graph.node.slice(0, cut.index + 1), inputs: dataInputNames(graph), output: cut.cut }
    : { nodes: graph.node.slice(cut.index + 1), inputs: [cut.cut], output: graph.output[0]!.name };
}

/** The nodes, inputs and outputs of the part of `half` that runs over tiles. */
function tiledRange(graph: GraphProto, cut: AttentionCut, half: VaeHalf): { nodes: NodeProto[]; inputs: string[]; outputs: string[] } {
  return half === 'decoder'
    ? { nodes: graph.node.slice(cut.index + 1), inputs: [cut.cut], outputs: graph.output.map((o) => o.name) }
    : { nodes: graph.node.slice(0, cut.index + 1), inputs: dataInputNames(graph), outputs: [cut.cut] };
}

/**
 * The part run once on the whole latent: a decoder's head (latent in, the cut out) or an encoder's tail (the cut in,
 * the encoder's output out). Mutates `model`.
 */
export function deriveAttentionGlobal(model: ModelProto, half: VaeHalf = 'decoder'): AttentionCut | Reason {
  const cut = prepareCut(model, half);
  if ('reason' in cut) return cut;
  const r = globalRange(model.graph!, cut, half);
  return extract(model, new Set(r.nodes), r.inputs, [r.output], half === 'decoder' ? 'head' : 'tail') ?? cut;
}

/**
 * The part run over tiles: a decoder's tail (the cut in, its first input) or an encoder's head (the image in, the
 * cut out). Mutates `model`.
 */
export function deriveAttentionTiled(model: ModelProto, half: VaeHalf = 'decoder'): AttentionCut | Reason {
  const cut = prepareCut(model, half);
  if ('reason' in cut) return cut;
  const r = tiledRange(model.graph!, cut, half);
  return extract(model, new Set(r.nodes), r.inputs, r.outputs, half === 'decoder' ? 'tail' : 'head') ?? cut;
}

/** The decoder's head (see deriveAttentionGlobal). */
export function deriveAttentionHead(model: ModelProto): AttentionCut | Reason {
  return deriveAttentionGlobal(model, 'decoder');
}

/** The decoder's tail (see deriveAttentionTiled). */
export function deriveAttentionTail(model: ModelProto): AttentionCut | Reason {
  return deriveAttentionTiled(model, 'decoder');
}

function dataInputNames(graph: GraphProto): string[] {
  const inits = new Set(graph.initializer.map((t) => t.name));
  return graph.input.filter((i) => !inits.has(i.name)).map((i) => i.name);
}

/** Element count of a constant tensor (initializer or Constant node), if it is one. */
function constantSize(graph: GraphProto, producer: Map<string, NodeProto>, name: string): number | undefined {
  let t: TensorProto | undefined = graph.initializer.find((i) => i.name === name);
  if (!t) {
    const p = producer.get(name);
    // A constant cast to the graph's float type (float16 exports) keeps its size.
    if ((p?.opType === 'Cast' || p?.opType === 'Identity') && p.input[0]) return constantSize(graph, producer, p.input[0]);
    if (p?.opType !== 'Constant') return undefined;
    const a = p.attribute.find((x) => x.name.startsWith('value'));
    if (a?.name === 'value_float' || a?.name === 'value_int') return 1;
    t = a?.t;
  }
  return t ? t.dims.reduce((s, d) => s * Number(d), 1) : undefined;
}

/**
 * The attention core of the global part (its attention: the decoder's last, the encoder's first) and the node sets of
 * pre, core and post, or why the core is not row-independent.
 */
function planCore(
  model: ModelProto, range: { nodes: NodeProto[]; inputs: string[]; output: string }, half: VaeHalf,
): (AttentionCore & { pre: Set<NodeProto>; core: Set<NodeProto>; post: Set<NodeProto> }) | Reason {
  const graph = model.graph!;
  const head = range.nodes;
  const isAttention = (n: NodeProto) => (n.opType === 'Softmax' && isDefaultDomain(n)) || FUSED_ATTENTION_OPS.has(n.opType);
  const softmax = (half === 'decoder' ? [...head].reverse() : head).find(isAttention)!;
  if (softmax.opType !== 'Softmax') return { reason: `the attention is a fused ${softmax.opType} operator` };
  const axis = softmaxAxisProblem(softmax, graph, defaultOpset(model));
  if (axis) return { reason: axis };
  const index = indexGraph(graph);
  const constant = constantTensors(graph);
  const scores = scoresMatMul(softmax, index);
  if (!scores) return { reason: `no q·kᵀ MatMul found before ${nodeLabel(softmax)}` };
  if (scores.opType !== 'MatMul') return { reason: `the scores come from a ${scores.opType}, not a MatMul` };
  const core = new Set<NodeProto>([scores, softmax]);
  // Between the scores MatMul and the Softmax: scalar scales and casts only (a per-position bias or mask would tie rows to keys).
  for (let t = softmax.input[0]!; t !== scores.output[0];) {
    const p = index.producer.get(t)!;
    core.add(p);
    const data = p.input.filter((i) => !constant.has(i));
    if (data.length !== 1) return { reason: `${nodeLabel(p)} (${p.opType}) between the scores and the Softmax reads ${data.length} data tensors` };
    if (p.opType !== 'Cast' && p.opType !== 'Identity') {
      if (!['Mul', 'Div'].includes(p.opType)) return { reason: `${nodeLabel(p)} (${p.opType}) between the scores and the Softmax is not a scalar scale` };
      const other = p.input.find((i) => i !== data[0])!;
      if (!constant.has(other) || constantSize(graph, index.producer, other) !== 1) return { reason: `${nodeLabel(p)} scales the scores by a tensor that is not a constant scalar` };
    }
    t = data[0]!;
  }
  // After the Softmax: casts (and a Dropout that does nothing), then the probabilities·V MatMul.
  const consumers = (t: string) => head.filter((n) => n.input.includes(t));
  const constantValue = (name: string) =>
    graph.initializer.find((i) => i.name === name) ?? index.producer.get(name)?.attribute.find((a) => a.name === 'value' && index.producer.get(name)!.opType === 'Constant')?.t;
  const read = (t: string) => consumers(t).length > 0 || graph.output.some((o) => o.name === t);
  let t = softmax.output[0]!;
  let out: NodeProto | undefined;
  for (let step = 0; step < 8 && !out; step++) {
    const c = consumers(t);
    if (c.length !== 1) return { reason: `the attention probabilities ${t} are read by ${c.length} nodes` };
    const n = c[0]!;
    core.add(n);
    if (n.opType === 'MatMul' && n.input[0] === t) out = n;
    else if (n.opType === 'Cast' || n.opType === 'Identity' || isInferenceDropout(n, constantValue, read)) t = n.output[0]!;
    else return { reason: `${nodeLabel(n)} (${n.opType}) after the Softmax is not row-independent` };
  }
  if (!out) return { reason: 'no probabilities·V MatMul after the Softmax' };
  const q = scores.input[0]!;
  const k = scores.input[1]!;
  const v = out.input[1]!;
  if (q === k || q === v) return { reason: 'the queries are also the keys or values (one tensor)' };
  // Every core tensor but the output stays inside the core.
  const coreOut = new Set([...core].flatMap((n) => n.output));
  const post = new Set<NodeProto>();
  const postOut = new Set<string>();
  for (const n of head) {
    if (core.has(n)) continue;
    if (n.input.some((i) => coreOut.has(i) || postOut.has(i))) {
      post.add(n);
      for (const o of n.output) postOut.add(o);
      for (const i of n.input) if (coreOut.has(i) && i !== out.output[0]) return { reason: `${i} inside the attention core is also read after it` };
    }
  }
  if (!postOut.has(range.output)) return { reason: `${range.output} does not follow the attention core` };
  const pre = new Set(head.filter((n) => !core.has(n) && !post.has(n)));
  const preOut = new Set([...range.inputs, ...[...pre].flatMap((n) => n.output)]);
  for (const n of core) for (const i of n.input) if (!constant.has(i) && !coreOut.has(i) && ![q, k, v].includes(i)) return { reason: `the attention core reads ${i} besides q, k and v` };
  for (const x of [q, k, v]) if (!preOut.has(x)) return { reason: `${x} is not computed before the attention core` };
  const crossing = [...new Set([...post].flatMap((n) => n.input).filter((i) => preOut.has(i) && !constant.has(i)))];
  return { q, k, v, out: out.output[0]!, crossing, pre, core, post };
}

/**
 * One part of the global part split at its attention core (mutates `model`):
 * - 'pre': the global part's inputs -> [q, k, v, ...crossing];
 * - 'core': (q rows, k, v) -> the attention output for those rows;
 * - 'post': (the core's output, ...crossing) -> the global part's output.
 */
export function deriveAttentionCorePart(model: ModelProto, part: 'pre' | 'core' | 'post', half: VaeHalf = 'decoder'): (AttentionCut & AttentionCore) | Reason {
  const cut = prepareCut(model, half);
  if ('reason' in cut) return cut;
  const range = globalRange(model.graph!, cut, half);
  const plan = planCore(model, range, half);
  if ('reason' in plan) return plan;
  const r = part === 'pre'
    ? extract(model, plan.pre, range.inputs, [...new Set([plan.q, plan.k, plan.v, ...plan.crossing])], 'pre-attention graph')
    : part === 'core'
      ? extract(model, plan.core, [plan.q, plan.k, plan.v], [plan.out], 'attention core')
      : extract(model, plan.post, [plan.out, ...plan.crossing.filter((c) => c !== plan.out)], [range.output], 'post-attention graph');
  return r ?? { ...cut, q: plan.q, k: plan.k, v: plan.v, out: plan.out, crossing: plan.crossing };
}
