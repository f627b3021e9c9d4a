/**
 * What the node-fusion rewrites (skip-layer-norm.ts, group-norm.ts, bias-split-gelu.ts, attention-fusion.ts) look up
 * in a graph before they match, and the `com.microsoft` import their fused nodes need. Portable.
 */
import { create } from '@bufbuild/protobuf';
import { OperatorSetIdProtoSchema, type GraphProto, type ModelProto, type NodeProto, type TensorProto } from 'onnx-buf';

export const MS_DOMAIN = 'com.microsoft';

export interface RewriteIndex {
  /** Initializers by name. */
  init: Map<string, TensorProto>;
  /** The node producing each tensor. */
  producer: Map<string, NodeProto>;
  /** The nodes reading each tensor. */
  readers: Map<string, NodeProto[]>;
  /** The graph's output names. */
  outputs: Set<string>;
}

export function rewriteIndex(graph: GraphProto): RewriteIndex {
  const init = new Map(graph.initializer.map((t) => [t.name, t] as const));
  const producer = new Map<string, NodeProto>();
  const readers = new Map<string, NodeProto[]>();
  for (const n of graph.node) {
    for (const o of n.output) producer.set(o, n);
    for (const i of n.input) if (i) (readers.get(i) ?? readers.set(i, []).get(i)!).push(n);
  }
  return { init, producer, readers, outputs: new Set(graph.output.map((o) => o.name)) };
}

/** Adds the `com.microsoft` opset import (version 1) to `model` unless it has one. */
export function importMsDomain(model: ModelProto): void {
  if (!model.opsetImport.some((o) => o.domain === MS_DOMAIN)) {
    model.opsetImport.push(create(OperatorSetIdProtoSchema, { domain: MS_DOMAIN, version: 1n }));
  }
}
