/**
 * Residual-and-norm fusion: in a transformer block, each attention's output projection adds its bias, the residual is
 * added, and the sum is normalised (diffusers' BasicTransformerBlock: `h = attn(norm(h)) + h; norm_next(h)`). Written
 * out that is three kernels (Add, Add, LayerNormalization) whose [B, S, D] tensors go to memory and back. ONNX
 * Runtime's `com.microsoft` SkipLayerNormalization computes `LayerNorm(input + skip + bias)` and can also output the
 * sum, which the next residual reads: one kernel on its CPU and WebGPU providers (checked in 1.30). Its own graph
 * optimiser left these unfused (its SkipLayerNormFusion changed nothing on the shipped UNet, verbose log), so the
 * rewrite is done here.
 *
 * Matched, in the graph as exported:
 *   P = Add(MatMul(..), bias)      bias: a 1-D initializer of length D (or Identity of one, as every initializer
 *                                  here); P read by the residual Add only
 *   X = Add(P, R)                  R: also read by a LayerNormalization over D (the previous norm of the block,
 *                                  which shows R is [.., D] as P is, not a broadcast)
 *   N = LayerNormalization(X, scale, [beta])   axis -1, scale a 1-D initializer of length D
 * becomes SkipLayerNormalization(MatMul output, R, scale, beta, bias) -> N (and X where anything else reads it),
 * placed where X was computed. The bias, scale and beta must share their float type (the operator's one T).
 * Portable: no Node APIs, no ONNX Runtime.
 */
import { create } from '@bufbuild/protobuf';
import { AttributeProtoSchema, AttributeProto_AttributeType, NodeProtoSchema, type ModelProto, type NodeProto, type TensorProto } from 'onnx-buf';
import { initializerThroughIdentity, intAttr, isDefaultDomain as isDefault } from './attention-probe.ts';
import { pruneGraph } from './prune.ts';
import { MS_DOMAIN, importMsDomain, rewriteIndex } from './rewrite-index.ts';

const SCOPE = '/asgd_skip_layer_norm';

/** The length of a 1-D float initializer, or undefined. */
function vectorLength(t: TensorProto | undefined): { length: number; type: number } | undefined {
  if (!t || t.dims.length !== 1) return undefined;
  return { length: Number(t.dims[0]), type: t.dataType };
}

interface Match {
  residual: NodeProto;
  biasAdd: NodeProto;
  norm: NodeProto;
  input: string;
  skip: string;
  /** The initializers' names (Identity nodes in front of them may come later in the graph than the fused node). */
  scale: string;
  beta: string;
  bias: string;
}

/**
 * Rewrites every matched bias + residual + LayerNormalization of `model` (mutated in place) into one
 * SkipLayerNormalization node. Returns how many.
 */
export function fuseSkipLayerNorm(model: ModelProto): number {
  const graph = model.graph;
  if (!graph) return 0;
  const { init, producer, readers, outputs } = rewriteIndex(graph);
  const constant = (name: string): TensorProto | undefined => initializerThroughIdentity(name, init, producer);
  const normOver = (n: NodeProto, d: number, type: number): boolean => {
    if (n.opType !== 'LayerNormalization' || !isDefault(n) || (intAttr(n, 'axis') ?? -1n) !== -1n) return false;
    const scale = vectorLength(constant(n.input[1] ?? ''));
    return scale !== undefined && scale.length === d && scale.type === type;
  };
  const matches: Match[] = [];
  const used = new Set<NodeProto>();
  for (const norm of graph.node) {
    if (norm.opType !== 'LayerNormalization' || !isDefault(norm) || norm.output.length !== 1) continue;
    const x = norm.input[0]!;
    const residual = producer.get(x);
    if (!residual || residual.opType !== 'Add' || !isDefault(residual) || residual.input.length !== 2 || outputs.has(x)) continue;
    if (residual.input.some((i) => constant(i))) continue;
    for (const [side, p] of residual.input.entries()) {
      const biasAdd = producer.get(p);
      if (!biasAdd || biasAdd.opType !== 'Add' || !isDefault(biasAdd) || biasAdd.input.length !== 2) continue;
      if (outputs.has(p) || (readers.get(p) ?? []).length !== 1) continue;
      const b = biasAdd.input.findIndex((i) => constant(i));
      if (b < 0) continue;
      const biasTensor = constant(biasAdd.input[b]!)!;
      const bias = vectorLength(biasTensor);
      const input = biasAdd.input[1 - b]!;
      if (!bias || producer.get(input)?.opType !== 'MatMul') continue;
      if (!normOver(norm, bias.length, bias.type)) continue;
      const betaTensor = norm.input[2] ? constant(norm.input[2]) : undefined;
      const beta = vectorLength(betaTensor);
      if (norm.input[2] && (!beta || beta.length !== bias.length || beta.type !== bias.type)) continue;
      const skip = residual.input[1 - side]!;
      if (!(readers.get(skip) ?? []).some((r) => r !== residual && normOver(r, bias.length, bias.type))) continue;
      if ([residual, biasAdd, norm].some((n) => used.has(n))) continue;
      for (const n of [residual, biasAdd, norm]) used.add(n);
      matches.push({ residual, biasAdd, norm, input, skip, scale: constant(norm.input[1]!)!.name, beta: betaTensor?.name ?? '', bias: biasTensor.name });
      break;
    }
  }
  if (matches.length === 0) return 0;
  const replace = new Map<NodeProto, NodeProto[]>();
  for (const [i, m] of matches.entries()) {
    const x = m.residual.output[0]!;
    const sumRead = outputs.has(x) || (readers.get(x) ?? []).some((r) => r !== m.norm);
    const epsilon = m.norm.attribute.find((a) => a.name === 'epsilon')?.f ?? 1e-5;
    replace.set(m.residual, [create(NodeProtoSchema, {
      name: `${SCOPE}/SkipLayerNormalization_${i}`,
      opType: 'SkipLayerNormalization',
      domain: MS_DOMAIN,
      input: [m.input, m.skip, m.scale, m.beta, m.bias],
      output: sumRead ? [m.norm.output[0]!, '', '', x] : [m.norm.output[0]!],
      attribute: [create(AttributeProtoSchema, { name: 'epsilon', type: AttributeProto_AttributeType.FLOAT, f: epsilon })],
    })]);
    replace.set(m.biasAdd, []);
    replace.set(m.norm, []);
  }
  graph.node = graph.node.flatMap((n) => replace.get(n) ?? [n]);
  importMsDomain(model);
  pruneGraph(graph);
  return matches.length;
}
