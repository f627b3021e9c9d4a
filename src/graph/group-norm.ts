/**
 * Group-norm fusion for graphs that only WebGPU devices run. torch exports GroupNorm (below opset 18) as
 *   R = Reshape(X, [0 or N, groups, -1])
 *   I = InstanceNormalization(R, ones, zeros)     every scale 1 and bias 0
 *   B = Reshape(I, Shape(X))
 *   Y = Add(Mul(B, gamma), beta)                  gamma, beta constants of shape [C, 1, 1]
 * and diffusers' ResNet blocks follow it with SiLU: Mul(Y, Sigmoid(Y)). On ONNX Runtime's WebGPU provider that is
 * about 7 kernels (two layout Transposes, the channel scale and shift, the instance norm, Mul, Add, and the SiLU,
 * which ONNX Runtime fuses to one QuickGelu), each reading and writing the whole activation. From 1.31 the provider
 * has a kernel for `com.microsoft` GroupNorm in the channels-last layout (two programs: statistics, then the affine
 * map with the SiLU as its `activation`); 1.30 placed none, and the CPU provider has none. So each match becomes
 *   Transpose(X, NHWC) -> GroupNorm(channels_last 1, groups, epsilon, activation 0 or 1) -> Transpose(NCHW)
 * and ONNX Runtime's layout optimiser cancels the two Transposes against the ones it puts around the neighbouring
 * convolutions (measured on lavapipe: Conv, group norm with SiLU, Conv went from 11 programs to 6, docs/benchmarks.md,
 * "Group norms as one node"). gamma and beta are fed as float32 [C] (Reshape, and Cast for a float16 export, which
 * ONNX Runtime folds when the session opens), so external weights stay external. Portable: no Node APIs.
 */
import { create } from '@bufbuild/protobuf';
import { AttributeProtoSchema, AttributeProto_AttributeType, NodeProtoSchema, TensorProtoSchema, type ModelProto, type NodeProto, type TensorProto } from 'onnx-buf';
import { floatValues } from './tensor-values.ts';
import { declaredDims, initializerThroughIdentity, int64Constant, isDefaultDomain as isDefault } from './attention-probe.ts';
import { pruneGraph } from './prune.ts';
import { MS_DOMAIN, importMsDomain, rewriteIndex } from './rewrite-index.ts';

const SCOPE = '/asgd_group_norm';
const FLOAT = 1;
const INT64 = 7;
const FLOAT16 = 10;

interface Match {
  /** The node whose output the fused group norm produces (the Add, or the SiLU's Mul). */
  last: NodeProto;
  input: string;
  /** The [C, 1, 1] constants as the graph names them (an initializer's own name where there is one). */
  gamma: { name: string; type: number };
  beta: { name: string; type: number };
  groups: number;
  epsilon: number;
  silu: boolean;
}

/**
 * Rewrites every matched group norm of `model` (mutated in place) into one `com.microsoft` GroupNorm between two
 * Transposes, with a following SiLU folded in. Returns how many. Only for graphs that WebGPU devices alone run.
 */
export function fuseGroupNorm(model: ModelProto): number {
  const graph = model.graph;
  if (!graph) return 0;
  const { init, producer, readers, outputs } = rewriteIndex(graph);
  /**
   * An initializer (behind Identity nodes) or a Constant node's tensor, also behind a Cast between float types (as
   * exports that compute a float16 model in float32 write it: the values are the same).
   */
  const constant = (name: string, depth = 0): TensorProto | undefined => {
    const t = initializerThroughIdentity(name, init, producer);
    if (t) return t;
    const p = producer.get(name);
    if (!p || !isDefault(p)) return undefined;
    if (p.opType === 'Constant') return p.attribute.find((a) => a.name === 'value')?.t;
    const to = p.attribute.find((a) => a.name === 'to')?.i;
    return p.opType === 'Cast' && (to === BigInt(FLOAT) || to === BigInt(FLOAT16)) && depth < 4 ? constant(p.input[0] ?? '', depth + 1) : undefined;
  };
  /** The element type of `name` when it is a constant (a Cast's target type where it is cast). */
  const typeOf = (name: string, t: TensorProto): number => {
    const p = producer.get(name);
    return p?.opType === 'Cast' ? Number(p.attribute.find((a) => a.name === 'to')?.i) : t.dataType;
  };
  /** The one node reading `name` (and `name` no graph output), or undefined. */
  const sole = (name: string): NodeProto | undefined => {
    const r = readers.get(name) ?? [];
    return r.length === 1 && !outputs.has(name) && isDefault(r[0]!) ? r[0] : undefined;
  };
  /** The [C, 1, 1] float constant that `node` (a binary op) applies to `x`: its name, type and C; or undefined. */
  const perChannel = (node: NodeProto, x: string) => {
    if (node.input.length !== 2 || !node.input.includes(x)) return undefined;
    const input = node.input[node.input[0] === x ? 1 : 0]!;
    const t = constant(input);
    const dims = t?.dims.map(Number);
    if (!t || (t.dataType !== FLOAT && t.dataType !== FLOAT16) || dims?.length !== 3 || dims[1] !== 1 || dims[2] !== 1) return undefined;
    // An initializer by its own name (the Identity nodes in front of it may come later in the graph); else as read.
    const direct = init.has(t.name) && initializerThroughIdentity(input, init, producer) === t;
    return { name: direct ? t.name : input, type: direct ? t.dataType : typeOf(input, t), channels: dims[0]! };
  };
  const all = (name: string, value: number) => {
    const t = constant(name);
    const v = t ? floatValues(t) : undefined;
    return v !== undefined && v.length > 0 && v.every((x) => x === value);
  };
  const matches: Match[] = [];
  for (const norm of graph.node) {
    if (norm.opType !== 'InstanceNormalization' || !isDefault(norm) || norm.input.length !== 3) continue;
    const grouping = producer.get(norm.input[0]!);
    if (grouping?.opType !== 'Reshape' || !isDefault(grouping) || sole(norm.input[0]!) !== norm) continue;
    const shape = int64Constant(graph, producer, grouping.input[1] ?? '', init);
    if (!shape || shape.length !== 3 || shape[2] !== -1 || !(shape[1]! > 0) || !(shape[0] === 0 || shape[0] === 1)) continue;
    const x = grouping.input[0]!;
    // The Transposes are 4-D: a tensor declared with another rank is left alone (SD's UNets and VAEs are 4-D).
    const rank = declaredDims(graph, x)?.length;
    if (rank !== undefined && rank !== 4) continue;
    if (!all(norm.input[1]!, 1) || !all(norm.input[2]!, 0)) continue;
    const back = sole(norm.output[0]!);
    const backShape = back?.opType === 'Reshape' ? producer.get(back.input[1] ?? '') : undefined;
    if (!back || back.input[0] !== norm.output[0] || backShape?.opType !== 'Shape' || backShape.input[0] !== x || backShape.attribute.length > 0) continue;
    const mul = sole(back.output[0]!);
    const gamma = mul?.opType === 'Mul' ? perChannel(mul, back.output[0]!) : undefined;
    const add = gamma ? sole(mul!.output[0]!) : undefined;
    const beta = add?.opType === 'Add' ? perChannel(add, mul!.output[0]!) : undefined;
    const groups = shape[1]!;
    if (!gamma || !beta || beta.channels !== gamma.channels || gamma.channels % groups !== 0) continue;
    // SiLU: Mul(Y, Sigmoid(Y)), Y read by those two alone.
    const y = add!.output[0]!;
    const yReaders = outputs.has(y) ? [] : readers.get(y) ?? [];
    const sigmoid = yReaders.find((r) => r.opType === 'Sigmoid' && isDefault(r));
    const siluMul = sigmoid ? sole(sigmoid.output[0]!) : undefined;
    const silu = yReaders.length === 2 && siluMul?.opType === 'Mul' && yReaders.includes(siluMul) && siluMul.input.includes(y) && siluMul.input.includes(sigmoid!.output[0]!);
    const epsilon = norm.attribute.find((a) => a.name === 'epsilon')?.f ?? 1e-5;
    matches.push({ last: silu ? siluMul! : add!, input: x, gamma, beta, groups, epsilon, silu });
  }
  if (matches.length === 0) return 0;
  const minusOne = `${SCOPE}/minus_one`;
  graph.initializer.push(create(TensorProtoSchema, { name: minusOne, dataType: INT64, dims: [1n], rawData: new Uint8Array(new BigInt64Array([-1n]).buffer) }));
  const replace = new Map<NodeProto, NodeProto[]>();
  for (const [i, m] of matches.entries()) {
    const name = `${SCOPE}/GroupNorm_${i}`;
    const nodes: NodeProto[] = [];
    const node = (opType: string, part: string, input: string[], attrs: Record<string, number | number[]>, output = `${name}/${part}`, domain = '') => {
      nodes.push(create(NodeProtoSchema, { name: `${name}/${part}`, opType, domain, input, output: [output], attribute: Object.entries(attrs).map(([k, v]) => attribute(k, v)) }));
      return output;
    };
    // gamma and beta as float32 [C]: constant nodes ONNX Runtime folds when the session opens.
    const vector = (t: { name: string; type: number }, part: string) => {
      const flat = node('Reshape', `${part}_flat`, [t.name, minusOne], {});
      return t.type === FLOAT ? flat : node('Cast', `${part}_float32`, [flat], { to: FLOAT });
    };
    const nhwc = node('Transpose', 'to_nhwc', [m.input], { perm: [0, 2, 3, 1] });
    const normed = node('GroupNorm', 'norm', [nhwc, vector(m.gamma, 'gamma'), vector(m.beta, 'beta')], {
      groups: m.groups, activation: m.silu ? 1 : 0, channels_last: 1, epsilon: m.epsilon,
    }, undefined, MS_DOMAIN);
    node('Transpose', 'to_nchw', [normed], { perm: [0, 3, 1, 2] }, m.last.output[0]!);
    replace.set(m.last, nodes);
  }
  // The constants read by the fused nodes may be Constant nodes placed later than the replaced one: keep order valid
  // by moving every Constant node to the front (they read nothing).
  const constants = graph.node.filter((n) => n.opType === 'Constant' && n.input.length === 0);
  graph.node = [...constants, ...graph.node.filter((n) => !(n.opType === 'Constant' && n.input.length === 0)).flatMap((n) => replace.get(n) ?? [n])];
  importMsDomain(model);
  pruneGraph(graph);
  return matches.length;
}

function attribute(name: string, value: number | number[]) {
  if (Array.isArray(value)) return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: value.map(BigInt) });
  if (name === 'epsilon') return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.FLOAT, f: value });
  return create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(value) });
}
