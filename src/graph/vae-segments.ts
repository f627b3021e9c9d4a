/**
 * The tile graph of src/graph/vae-norm-graph.ts cut at its norm layers into segments, so that 'exact' statistics can
 * resume every tile where the previous layer left off instead of recomputing the model from its input for each
 * layer (src/core/vae/tiled.ts). Cut k lies after what norm layer k's statistics need and before the layer applies
 * its map (which needs the statistics of the whole image).
 *
 * Segment (from, to): the nodes that layers 0..to's statistics need, less those that layers 0..from's need (from -1:
 * none); (from, 'end'): all the rest. Its inputs: the tile graph's own where read (the model's input, the affine maps,
 * the region) and every tensor live at cut `from` (computed before it, read after it) under STATE_PREFIX + its name.
 * Its outputs: layer `to`'s statistics over the region (NORM_STATS_OUTPUT) and every tensor live at cut `to` under its
 * own name (one live at both cuts passes through an Identity); for 'end', the model's outputs. So the outputs of a
 * segment ending at a cut feed any segment starting there.
 *
 * Works on the ModelProto alone (no Node APIs, no ONNX Runtime); mutates the model it is given.
 */
import { create } from '@bufbuild/protobuf';
import { NodeProtoSchema, type ModelProto, type NodeProto } from 'onnx-buf';
import { elementTypes } from './element-types.ts';
import { constantTensors, extract, type Reason } from './vae-attention-split.ts';
import { NORM_STATS_OUTPUT } from './vae-norm-graph.ts';

/** Prefix of a segment's inputs that carry a tile's state (the tensors live at its first cut). */
export const STATE_PREFIX = 'asgd_state/';

const FLOAT32 = 1;

/** Where a segment ends: before norm layer k applies its map, or the model's end. */
export type SegmentEnd = number | 'end';

/** The norm layers' statistics tensors of a tile graph, in layer order, and the Concat that gathers them. */
function statsParts(model: ModelProto): { parts: string[]; concat: NodeProto } | Reason {
  const concat = model.graph?.node.find((n) => n.output[0] === NORM_STATS_OUTPUT && n.opType === 'Concat');
  if (!concat) return { reason: `the model is not a tile graph (no ${NORM_STATS_OUTPUT} gathered by a Concat)` };
  return { parts: [...concat.input], concat };
}

/**
 * Segment (from, to) of a tile graph (see the module comment); mutates `model`. Returns the number of norm layers, or
 * why the segment cannot be cut.
 */
export function deriveSegmentGraph(model: ModelProto, from: number, to: SegmentEnd): { layers: number } | Reason {
  const found = statsParts(model);
  if ('reason' in found) return found;
  const { parts, concat } = found;
  const L = parts.length;
  const end = to === 'end' ? L : to;
  if (!(Number.isInteger(from) && from >= -1 && Number.isInteger(end) && from < end && (to === 'end' || end < L))) {
    throw new RangeError(`deriveSegmentGraph: no segment from cut ${from} to ${to} of ${L} norm layers`);
  }
  const graph = model.graph!;
  graph.node = graph.node.filter((n) => n !== concat);
  graph.output = graph.output.filter((o) => o.name !== NORM_STATS_OUTPUT);
  const constant = constantTensors(graph);
  const producer = new Map<string, NodeProto>();
  for (const n of graph.node) for (const o of n.output) producer.set(o, n);

  // rank(node): the first layer whose statistics need it; L for the rest of the model.
  const rank = new Map<NodeProto, number>();
  parts.forEach((part, k) => {
    const stack = [part];
    while (stack.length > 0) {
      const node = producer.get(stack.pop()!);
      if (!node || rank.has(node) || node.output.every((o) => constant.has(o))) continue;
      rank.set(node, k);
      stack.push(...node.input);
    }
  });
  const rankOf = (n: NodeProto) => rank.get(n) ?? L;
  // Tensors live at cut c: produced at rank <= c, read at rank > c (or a model output).
  const lastRead = new Map<string, number>();
  for (const n of graph.node) for (const i of n.input) if (producer.has(i) && !constant.has(i)) lastRead.set(i, Math.max(lastRead.get(i) ?? -1, rankOf(n)));
  for (const o of graph.output) lastRead.set(o.name, L + 1);
  const liveAt = (c: number): string[] => {
    if (c < 0) return [];
    return [...lastRead].filter(([t, r]) => rankOf(producer.get(t)!) <= c && r > c).map(([t]) => t);
  };
  const before = new Set(liveAt(from));
  const after = to === 'end' ? [] : liveAt(to);
  const types = elementTypes(graph);
  const nodes = new Set(graph.node.filter((n) => !n.output.every((o) => constant.has(o)) && rankOf(n) > from && rankOf(n) <= end));
  // The state read from cut `from`, under its prefixed name.
  for (const n of nodes) n.input = n.input.map((i) => (before.has(i) ? STATE_PREFIX + i : i));
  for (const t of before) types.set(STATE_PREFIX + t, types.get(t)!);
  const added: NodeProto[] = [];
  const identity = (input: string, output: string) => added.push(create(NodeProtoSchema, { name: `/asgd_vae/segment/${output}`, opType: 'Identity', input: [input], output: [output] }));
  const outputs = to === 'end' ? graph.output.map((o) => o.name) : [NORM_STATS_OUTPUT, ...after];
  // A tensor live at both cuts (or a model output computed before `from`) passes through.
  for (const t of outputs) if (before.has(t)) identity(STATE_PREFIX + t, t);
  if (to !== 'end') identity(parts[to]!, NORM_STATS_OUTPUT);
  types.set(NORM_STATS_OUTPUT, FLOAT32);
  graph.node.push(...added);
  for (const n of added) nodes.add(n);
  const inits = new Set(graph.initializer.map((t) => t.name));
  const own = graph.input.filter((i) => !inits.has(i.name)).map((i) => i.name);
  const problem = extract(model, nodes, [...own, ...[...before].map((t) => STATE_PREFIX + t)], outputs, `segment ${from} to ${to}`, types);
  return problem ?? { layers: L };
}
