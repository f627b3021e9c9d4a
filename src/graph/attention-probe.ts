/**
 * Graph surgery that derives the attention-probe UNet: the user's UNet plus one graph output per up-block
 * cross-attention (attn2) layer, `attn2_probs:<layer>` = the conditional (last) batch row of that layer's softmax
 * probabilities, weighted over the text tokens by the input `asgd_mask_weights` [T, 1] and averaged over the heads:
 * float32 [1, HW]. The structure mask reads nothing else (mask.ts), so the reduction runs in-graph and HW values per
 * layer leave the session instead of B*HW*T (at SDXL's 128x128 latent, 221 KB a call instead of 34 MB: on a GPU each
 * output is a download, and the worker copied each to the coordinator).
 *
 * Works on the ModelProto alone (no weights needed, no Node APIs): initializers stored as external data stay
 * external. Finds the Softmax nodes by the torch/diffusers export scope (`.../up_blocks.N/.../attn2/Softmax`) and
 * checks their structure: the Softmax reads q·kᵀ (times a scale) and the keys come from `encoder_hidden_states`
 * through the to_k projection, so its last axis is the text length. Both score layouts are handled: [B*heads, HW, T]
 * (older diffusers exports) and [B, heads, HW, T].
 */
import { create } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType,
  NodeProtoSchema,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
  type TensorProto,
  type TensorShapeProto_Dimension,
} from 'onnx-buf';
import { invalidArgument } from '../core/errors.ts';
import { int64Tensor } from './small-model.ts';

/** Name prefix of the outputs the probe adds: `attn2_probs:<layer>`; the UNet adapter finds them by it. */
export const PROBE_OUTPUT_PREFIX = 'attn2_probs:';
/**
 * The probe's one added input, float32 [T, 1]: each text token's weight in the map (1/n at the n mask tokens, 0
 * elsewhere; the UNet adapter fills it from the unit's mask tokens).
 */
export const MASK_WEIGHTS_INPUT = 'asgd_mask_weights';

/** One up-block cross-attention Softmax the probe can expose. */
export interface CrossAttentionSite {
  /** Layer name: the node scope up to `/attn2`, e.g. `/up_blocks.1/attentions.0/transformer_blocks.0/attn2`. */
  layer: string;
  /** The Softmax node's name and output tensor (the probabilities). */
  softmaxNode: string;
  probabilities: string;
  /** The q·kᵀ MatMul's output and its key-side input (traced back to encoder_hidden_states). */
  scores: string;
  /**
   * An ONNX Attention node (opset 23: what torch's dynamo exporter writes at that opset): its index in graph.node,
   * whose probabilities the probe takes from its optional fourth output (qk_matmul_output_mode 3, after the softmax),
   * named `probabilities`; the surgery adds that output.
   */
  attentionNode?: number;
}

export interface CrossAttentionScan {
  sites: CrossAttentionSite[];
  /** attn2 Softmax nodes that were found but cannot be exposed, with why. */
  rejected: { layer: string; why: string }[];
  /** Fused attention operators present (op type -> count); they hide the probabilities. */
  fused: Record<string, number>;
}

export type ProbeSurgery = { layers: string[] } | { reason: string };

export const MASK_OFF_HINT = 'turn the cross-attention mask off with --no-mask';

const TEXT_INPUT = 'encoder_hidden_states';
const SAMPLE_INPUT = 'sample';
const FLOAT32 = 1;
const ATTN2 = '/attn2';
/** Scope of every node and tensor the surgery adds (torch never emits it). */
export const PROBE_SCOPE = '/asgd_probe';

/** Operators that compute attention internally without a separate Softmax. */
export const FUSED_ATTENTION_OPS = new Set([
  'Attention',
  'MultiHeadAttention',
  'PackedAttention',
  'PackedMultiHeadAttention',
  'GroupQueryAttention',
  'DecoderMaskedMultiHeadAttention',
  'SparseAttention',
  'PagedAttention',
  'ScaledDotProductAttention',
]);
/** Between the scores MatMul and the Softmax: the scale, an additive mask or bias, a cast. */
export const SCORE_OPS = new Set(['Mul', 'Div', 'Add', 'Sub', 'Cast', 'Identity']);
/** On the key path: data movement (follow the data input) ... */
export const LAYOUT_OPS = new Set(['Transpose', 'Reshape', 'Cast', 'Identity', 'Unsqueeze', 'Squeeze', 'Flatten', 'Expand']);
/** ... and the projection/scale, whose other operands are weights. */
export const AFFINE_OPS = new Set(['MatMul', 'FusedMatMul', 'Gemm', 'Mul', 'Div', 'Add', 'Sub']);
/** Outputs that do not depend on their inputs' values (only on shapes) or on no input at all. */
const VALUE_FREE_OPS = new Set(['Constant', 'Shape', 'Size', 'ConstantOfShape', 'EyeLike']);

export function probeOutputName(layer: string): string {
  return `${PROBE_OUTPUT_PREFIX}${layer}`;
}

/** The node metadata in which torch's dynamo exporter records the module a node comes from. */
const NAME_SCOPES = 'pkg.torch.onnx.name_scopes';

/**
 * The names that tell a node's module: its own and its output's (the TorchScript exporter's, e.g.
 * `/up_blocks.1/attentions.0/transformer_blocks.0/attn2/Softmax`), and, for torch's dynamo exporter, whose names do
 * not (`node_Softmax_12`), the same form rebuilt from its `pkg.torch.onnx.name_scopes` metadata: the module paths from
 * the root, dotted (`['', 'up_blocks.1', ..., 'up_blocks.1.attentions.0.transformer_blocks.0.attn2', 'softmax']`,
 * the last entry the node's own name).
 */
export function scopedNames(node: NodeProto): string[] {
  const names = [node.name, node.output[0] ?? ''];
  const scopes = node.metadataProps.find((p) => p.key === NAME_SCOPES)?.value;
  const entries = scopes ? [...scopes.matchAll(/'([^']*)'|"([^"]*)"/g)].map((m) => m[1] ?? m[2]!) : [];
  const module = entries.slice(1, -1).at(-1);
  if (module) {
    // A numeric part is a list index and stays with its list's name: up_blocks.1.attentions.0 -> up_blocks.1/attentions.0.
    const parts: string[] = [];
    for (const t of module.split('.')) {
      if (/^\d+$/.test(t) && parts.length > 0) parts[parts.length - 1] += `.${t}`;
      else parts.push(t);
    }
    names.push(`/${parts.join('/')}/${node.opType}`);
  }
  return names;
}

/** The layer a node belongs to: its name (or, when an optimizer dropped the name, its output's) up to `/attn2`. */
function attn2Layer(node: NodeProto): string | undefined {
  for (const name of scopedNames(node)) {
    const at = name.indexOf(`${ATTN2}/`);
    if (at >= 0) return name.slice(0, at + ATTN2.length);
  }
  return undefined;
}

function isUpBlock(layer: string): boolean {
  return /(^|\/)up_blocks\.\d+\//.test(layer);
}

/** Tensors whose values are fixed at load time: initializers and what is computed from them or from shapes. */
export function staticTensors(graph: GraphProto): Set<string> {
  const known = new Set<string>(['']);
  for (const t of graph.initializer) known.add(t.name);
  // ONNX requires nodes in topological order, so one forward pass settles every tensor.
  for (const node of graph.node) {
    if (VALUE_FREE_OPS.has(node.opType) || node.input.every((i) => known.has(i))) {
      for (const o of node.output) known.add(o);
    }
  }
  return known;
}

/** Whether `node` is of the default ONNX domain (written '' or 'ai.onnx'). */
export const isDefaultDomain = (node: NodeProto): boolean => node.domain === '' || node.domain === 'ai.onnx';

/**
 * The initializer behind `name`: itself, or one reached through Identity nodes (torch's exporter writes equal
 * parameters once and the others as Identity of it, e.g. a freshly initialised norm's ones and zeros).
 */
export function initializerThroughIdentity(
  name: string, initializers: ReadonlyMap<string, TensorProto>, producers: ReadonlyMap<string, NodeProto>,
): TensorProto | undefined {
  for (let i = 0; i < 16; i++) {
    const t = initializers.get(name);
    if (t) return t;
    const p = producers.get(name);
    if (!p || p.opType !== 'Identity' || !isDefaultDomain(p)) return undefined;
    name = p.input[0] ?? '';
  }
  return undefined;
}

export function intAttr(node: NodeProto, name: string): bigint | undefined {
  const a = node.attribute.find((x) => x.name === name);
  return a && a.type === AttributeProto_AttributeType.INT ? a.i : undefined;
}

/**
 * Values of a constant int64 tensor (initializer or Constant node), if it is one. `initializers`: the graph's
 * initializers by name, for callers that look up many names.
 */
export function int64Constant(
  graph: GraphProto, producers: Map<string, NodeProto>, name: string, initializers?: Map<string, TensorProto>,
): number[] | undefined {
  let t: TensorProto | undefined = initializers ? initializers.get(name) : graph.initializer.find((i) => i.name === name);
  if (!t) {
    const p = producers.get(name);
    if (p?.opType === 'Constant') {
      const v = p.attribute.find((a) => a.name === 'value');
      if (v?.t) t = v.t;
      const ints = p.attribute.find((a) => a.name === 'value_ints');
      if (ints) return ints.ints.map(Number);
    }
  }
  if (!t || t.dataType !== 7 || t.dataLocation === 1) return undefined; // INT64, not external
  if (t.int64Data.length > 0) return t.int64Data.map(Number);
  const raw = t.rawData;
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  return Array.from({ length: raw.byteLength / 8 }, (_, i) => Number(view.getBigInt64(i * 8, true)));
}

export function defaultOpset(model: ModelProto): number {
  const entry = model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx');
  return entry ? Number(entry.version) : 0;
}

/** Static dimension of a value, if the graph declares one (value_info is optional in ONNX). */
export function declaredDims(graph: GraphProto, tensor: string): readonly TensorShapeProto_Dimension[] | undefined {
  const vi = [...graph.valueInfo, ...graph.output, ...graph.input].find((v) => v.name === tensor);
  const type = vi?.type?.value;
  return type?.case === 'tensorType' ? type.value.shape?.dim : undefined;
}

export function dimValue(d: TensorShapeProto_Dimension | undefined): number | undefined {
  return d?.value.case === 'dimValue' ? Number(d.value.value) : undefined;
}

/** Who produces each tensor, which tensors are weights, and a node's data (non-weight) inputs. */
export interface GraphIndex {
  producer: Map<string, NodeProto>;
  fixed: Set<string>;
  dynamicInputs(node: NodeProto): string[];
}

export function indexGraph(graph: GraphProto): GraphIndex {
  const producer = new Map<string, NodeProto>();
  for (const node of graph.node) for (const o of node.output) producer.set(o, node);
  const fixed = staticTensors(graph);
  return { producer, fixed, dynamicInputs: (node) => node.input.filter((i) => !fixed.has(i)) };
}

/**
 * A Dropout that passes its input through: in inference mode (no training_mode input, or a constant false), its mask
 * output unread (`read`: whether a tensor is read by a node or is a graph output). torch's dynamo exporter writes one
 * after the Softmax of scaled-dot-product attention (its optimizer usually removes it). `constant`: the tensor behind
 * a name when it is an initializer or a Constant's value.
 */
export function isInferenceDropout(node: NodeProto, constant: (name: string) => TensorProto | undefined, read: (tensor: string) => boolean): boolean {
  if (node.opType !== 'Dropout' || (node.domain !== '' && node.domain !== 'ai.onnx')) return false;
  const training = node.input[2];
  if (training) {
    const t = constant(training);
    const values = !t || t.dataLocation === 1 ? undefined : t.int32Data.length > 0 ? Array.from(t.int32Data) : t.int64Data.length > 0 ? t.int64Data.map(Number) : Array.from(t.rawData);
    if (values?.length !== 1 || values[0] !== 0) return false;
  }
  const mask = node.output[1];
  return !mask || !read(mask);
}

/** Why a Softmax does not give per-row probabilities over its last axis; undefined when it does. */
export function softmaxAxisProblem(node: NodeProto, graph: GraphProto, opset: number): string | undefined {
  // Before opset 13, Softmax flattens from `axis` (default 1) on: only the last axis gives per-row probabilities.
  const axis = intAttr(node, 'axis') ?? (opset >= 13 ? -1n : 1n);
  const rank = declaredDims(graph, node.output[0]!)?.length;
  // Without a declared rank, a positive axis is accepted where it is the last axis of one of the two layouts.
  const last = axis === -1n || (rank !== undefined ? axis === BigInt(rank - 1) : axis === 2n || axis === 3n);
  return last ? undefined : `Softmax axis ${axis} is not the last axis`;
}

/** Back from a Softmax through scaling ops to the q·kᵀ MatMul (the only one with two data operands). */
export function scoresMatMul(softmax: NodeProto, index: GraphIndex): NodeProto | undefined {
  let t = softmax.input[0]!;
  for (let step = 0; step < 16; step++) {
    const p = index.producer.get(t);
    if (!p) return undefined;
    const data = index.dynamicInputs(p);
    if ((p.opType === 'MatMul' || p.opType === 'FusedMatMul') && data.length === 2) return p;
    if (SCORE_OPS.has(p.opType) && data.length === 1) t = data[0]!;
    else return undefined;
  }
  return undefined;
}

/** Finds every attn2 Softmax and keeps the up-block ones whose structure is q·kᵀ over the text keys. */
export function scanCrossAttention(model: ModelProto): CrossAttentionScan {
  const graph = model.graph;
  const scan: CrossAttentionScan = { sites: [], rejected: [], fused: {} };
  if (!graph) return scan;
  const { producer, fixed, dynamicInputs } = indexGraph(graph);
  // Old exports (IR < 4) also list the initializers as inputs: those are weights, not data.
  const inputs = new Set(graph.input.map((i) => i.name).filter((n) => !fixed.has(n)));
  const textInput = graph.input.find((i) => i.name === TEXT_INPUT);
  const textLength = textInput ? dimValue(declaredDims(graph, TEXT_INPUT)?.[1]) : undefined;
  const opset = defaultOpset(model);

  for (const node of graph.node) {
    if (FUSED_ATTENTION_OPS.has(node.opType)) scan.fused[node.opType] = (scan.fused[node.opType] ?? 0) + 1;
  }

  const seen = new Set<string>();
  const read = (t: string) => graph.node.some((n) => n.input.includes(t)) || graph.output.some((o) => o.name === t);
  for (const [index, node] of graph.node.entries()) {
    if (node.domain !== '' && node.domain !== 'ai.onnx') continue;
    const attention = node.opType === 'Attention' && opset >= 23;
    if (node.opType !== 'Softmax' && !attention) continue;
    const layer = attn2Layer(node);
    if (layer === undefined || !isUpBlock(layer)) continue;
    const reject = (why: string) => scan.rejected.push({ layer, why });
    if (seen.has(layer)) {
      reject(`a second ${node.opType} in the same attn2 scope`);
      continue;
    }
    if (!textInput) {
      reject(`the graph has no ${TEXT_INPUT} input`);
      continue;
    }
    if (attention) {
      // Its keys (input 1) must come from the text; the probabilities are its output 3 in mode 3 (after the softmax).
      const mode = node.attribute.find((a) => a.name === 'qk_matmul_output_mode')?.i ?? 0n;
      const extra = node.output[3];
      if (extra && mode !== 3n && read(extra)) {
        reject(`its qk_matmul_output (mode ${mode}) is read by the graph`);
        continue;
      }
      if (!keysFromText(node.input[1]!, { producer, dynamicInputs }, inputs)) {
        reject(`its keys do not come from ${TEXT_INPUT} (not a cross-attention over the text)`);
        continue;
      }
      seen.add(layer);
      const probabilities = extra && mode === 3n ? extra : `${PROBE_SCOPE}/attention_probabilities_${index}`;
      scan.sites.push({ layer, softmaxNode: node.name, probabilities, scores: probabilities, attentionNode: index });
      continue;
    }
    const axisProblem = softmaxAxisProblem(node, graph, opset);
    if (axisProblem) {
      reject(axisProblem);
      continue;
    }
    const outDims = declaredDims(graph, node.output[0]!);
    const last = dimValue(outDims?.[outDims.length - 1]);
    if (last !== undefined && textLength !== undefined && last !== textLength) {
      reject(`its last axis has ${last} entries, the text has ${textLength} tokens`);
      continue;
    }
    const scores = scoresMatMul(node, { producer, fixed, dynamicInputs });
    if (!scores) {
      reject('its input is not a q·kᵀ MatMul (optionally scaled)');
      continue;
    }
    if (!keysFromText(scores.input[1]!, { producer, dynamicInputs }, inputs)) {
      reject(`its keys do not come from ${TEXT_INPUT} (not a cross-attention over the text)`);
      continue;
    }
    seen.add(layer);
    scan.sites.push({ layer, softmaxNode: node.name, probabilities: node.output[0]!, scores: scores.output[0]! });
  }
  return scan;
}

/** Whether the key side `k` is the text: through layout ops and the to_k projection to encoder_hidden_states. */
function keysFromText(k: string, index: Pick<GraphIndex, 'producer' | 'dynamicInputs'>, inputs: ReadonlySet<string>): boolean {
  for (let step = 0; step < 32; step++) {
    if (inputs.has(k)) return k === TEXT_INPUT;
    const p = index.producer.get(k);
    if (!p) return false;
    const data = index.dynamicInputs(p);
    if (LAYOUT_OPS.has(p.opType)) k = p.input[0]!;
    else if (AFFINE_OPS.has(p.opType) && data.length === 1) k = data[0]!;
    else return false;
  }
  return false;
}

/** Why a model gives no probe, in words the user can act on. */
export function noProbeReason(scan: CrossAttentionScan): string {
  const lead = 'The UNet has no separable attention probabilities';
  const fused = Object.entries(scan.fused);
  if (fused.length > 0) {
    const ops = fused.map(([op, n]) => `${n} ${op}`).join(', ');
    return (
      `${lead}: its attention runs in fused operators (${ops}) that do not expose the softmax. ` +
      `The cross-attention mask needs them: ${MASK_OFF_HINT}, or use an export without fused attention ` +
      '(a plain torch.onnx / optimum-cli export, not one run through the ONNX Runtime transformer optimizer)'
    );
  }
  if (scan.rejected.length > 0) {
    const why = scan.rejected.map((r) => `${r.layer}: ${r.why}`).join('; ');
    return `${lead}: the up-block attn2 Softmax nodes do not have the expected structure (${why}). The cross-attention mask needs them: ${MASK_OFF_HINT}`;
  }
  return (
    `${lead}: no up-block cross-attention Softmax (a node named like /up_blocks.N/attentions.M/transformer_blocks.K/attn2/Softmax) was found. ` +
    `The cross-attention mask needs them: ${MASK_OFF_HINT}, or use a diffusers UNet exported with torch.onnx / optimum-cli`
  );
}

function attr(name: string, value: number | number[]): AttributeProto {
  return typeof value === 'number'
    ? create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(value) })
    : create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: value.map(BigInt) });
}

/** Appends the reduction nodes to a graph; every name lives under PROBE_SCOPE. */
export class ProbeWriter {
  private count = 0;
  constructor(private readonly graph: GraphProto) {}

  node(opType: string, inputs: string[], attrs: Record<string, number | number[]> = {}, output?: string): string {
    const name = `${PROBE_SCOPE}/${opType}_${this.count++}`;
    const out = output ?? `${name}_output_0`;
    this.graph.node.push(
      create(NodeProtoSchema, {
        name,
        opType,
        input: inputs,
        output: [out],
        attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)),
      }),
    );
    return out;
  }

  int64(values: number[]): string {
    const name = `${PROBE_SCOPE}/Constant_${this.count++}_output_0`;
    this.graph.initializer.push(int64Tensor(name, values));
    return name;
  }
}

/**
 * Adds `attn2_probs:<layer>` outputs to `model` (mutated in place) for the up-block cross-attention layers, or
 * returns why it cannot. `layers` restricts the outputs to the named layers (all found ones by default).
 */
export function addAttentionProbe(model: ModelProto, opts: { layers?: readonly string[] } = {}): ProbeSurgery {
  const graph = model.graph;
  const scan = scanCrossAttention(model);
  if (!graph || scan.sites.length === 0) return { reason: noProbeReason(scan) };
  let sites = scan.sites;
  if (opts.layers) {
    const found = new Set(sites.map((s) => s.layer));
    const unknown = opts.layers.filter((l) => !found.has(l));
    if (unknown.length > 0 || opts.layers.length === 0) {
      throw invalidArgument(
        'layers',
        `a non-empty list of the UNet's up-block attn2 layers (${[...found].join(', ')})`,
        opts.layers,
        'Name layers exactly as the model lists them, or leave the option out to use all of them',
      );
    }
    sites = sites.filter((s) => opts.layers!.includes(s.layer));
  }
  if (graph.node.some((n) => n.name.startsWith(`${PROBE_SCOPE}/`)) || graph.output.some((o) => o.name.startsWith(PROBE_OUTPUT_PREFIX))) {
    return { reason: 'The UNet already is an attention-probe graph; pass the original UNet' };
  }
  const sample = graph.input.find((i) => i.name === SAMPLE_INPUT) ?? graph.input[0];
  if (!sample) return { reason: 'The UNet graph has no inputs' };
  const text = graph.input.find((i) => i.name === TEXT_INPUT)!;
  const opset = defaultOpset(model);
  if (opset < 11) return { reason: `The UNet uses ONNX opset ${opset}; the attention probe needs opset 11 or later. Re-export the UNet, or ${MASK_OFF_HINT}` };

  const w = new ProbeWriter(graph);
  // The batch comes from the sample input, so the head count need not be known: [B*heads, ...] and
  // [B, heads, ...] both reshape to [B, heads, HW, T].
  const batch = w.node('Slice', [w.node('Shape', [sample.name]), w.int64([0]), w.int64([1]), w.int64([0])]);
  const minusOne = w.int64([-1]);
  const textDims = declaredDims(graph, text.name);
  const weights = addMaskWeightsInput(graph, textDims?.[1]);
  for (const [i, site] of sites.entries()) {
    const probs = site.probabilities;
    if (site.attentionNode !== undefined) {
      // Output 3 of an ONNX Attention node in mode 3: the probabilities, [B, heads, queries, keys].
      const n = graph.node[site.attentionNode]!;
      while (n.output.length < 4) n.output.push('');
      n.output[3] = probs;
      n.attribute = [...n.attribute.filter((a) => a.name !== 'qk_matmul_output_mode'), attr('qk_matmul_output_mode', 3)];
    }
    const last2 = w.node('Slice', [w.node('Shape', [probs]), w.int64([-2]), w.int64([Number.MAX_SAFE_INTEGER]), w.int64([0])]);
    const grouped = w.node('Reshape', [probs, w.node('Concat', [batch, minusOne, last2], { axis: 0 })]);
    addMaskMapOutput(w, graph, grouped, weights, probeOutputName(site.layer), opset, `attn2_hw_${i}`);
  }
  return { layers: sites.map((s) => s.layer) };
}

/**
 * Declares the probe's weights input, float32 [T, 1] (`tokens`: the text input's declared length, if any), and
 * returns its name.
 */
export function addMaskWeightsInput(graph: GraphProto, tokens: TensorShapeProto_Dimension | undefined): string {
  const t = tokens?.value.case ? dim(tokens.value) : dim({ case: 'dimParam', value: 'tokens' });
  graph.input.push(valueInfo(MASK_WEIGHTS_INPUT, [t, dim({ case: 'dimValue', value: 1n })]));
  return MASK_WEIGHTS_INPUT;
}

/**
 * The probe's output for one layer: of the grouped probabilities [batch, heads, queries, keys], the last batch row
 * (the conditional branch: the UNet adapter puts it last), cast to float32 (a no-op for float32 models: float16
 * models are reduced in float32), times `weights` [keys, 1] and averaged over the heads, into `output` [1, queries],
 * declared as a graph output. The row is cut first and the keys reduced before the heads, so each step works on
 * the smallest tensor it can.
 */
export function addMaskMapOutput(
  w: ProbeWriter, graph: GraphProto, grouped: string, weights: string, output: string, opset: number, queries: string,
): void {
  const lastRow = w.node('Slice', [grouped, w.int64([-1]), w.int64([Number.MAX_SAFE_INTEGER]), w.int64([0])]);
  const asFloat = w.node('Cast', [lastRow], { to: FLOAT32 });
  const weighted = w.node('MatMul', [asFloat, weights]);
  // ReduceMean took `axes` as an attribute until opset 18, as an input since. [1, heads, HW, 1] -> [1, HW].
  if (opset >= 18) w.node('ReduceMean', [weighted, w.int64([1, 3])], { keepdims: 0 }, output);
  else w.node('ReduceMean', [weighted], { axes: [1, 3], keepdims: 0 }, output);
  graph.output.push(valueInfo(output, [dim({ case: 'dimValue', value: 1n }), dim({ case: 'dimParam', value: queries })]));
}

function dim(value: TensorShapeProto_Dimension['value']): TensorShapeProto_Dimension {
  return create(TensorShapeProto_DimensionSchema, { value });
}

function valueInfo(name: string, dims: TensorShapeProto_Dimension[]) {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, { elemType: FLOAT32, shape: create(TensorShapeProtoSchema, { dim: dims }) }),
      },
    }),
  });
}
