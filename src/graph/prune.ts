/** Graph pruning shared by the derived graphs (the VAE's norm-statistics graphs, its attention split). */
import type { GraphProto, NodeProto } from 'onnx-buf';

/**
 * Removes the nodes no graph output needs, and the initializers and value infos no remaining node reads; with
 * `inputs`, also the graph inputs nothing reads. Mutates `graph`.
 */
export function pruneGraph(graph: GraphProto, opts: { inputs?: boolean } = {}): void {
  const needed = new Set(graph.output.map((o) => o.name));
  const keep: NodeProto[] = [];
  for (let i = graph.node.length - 1; i >= 0; i--) {
    const node = graph.node[i]!;
    if (!node.output.some((o) => needed.has(o))) continue;
    keep.push(node);
    for (const t of node.input) if (t) needed.add(t);
    // Subgraph attributes (If/Loop) may read outer tensors: keep everything they name.
    for (const a of node.attribute) for (const sub of [a.g, ...a.graphs]) if (sub) for (const n of sub.node) for (const t of n.input) needed.add(t);
  }
  graph.node = keep.reverse();
  graph.initializer = graph.initializer.filter((t) => needed.has(t.name));
  graph.valueInfo = graph.valueInfo.filter((v) => needed.has(v.name));
  if (opts.inputs) graph.input = graph.input.filter((i) => needed.has(i.name));
}
