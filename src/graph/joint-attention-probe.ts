/**
 * Graph surgery for SD3's joint attention: the probe graph is the user's transformer plus one output per joint
 * block, `attn2_probs:<layer>` (the UNet probe's prefix, so the denoiser adapter reads both alike) = the image
 * queries' softmax probabilities over the text keys, reduced as the UNet probe's are (the last batch row, weighted
 * over the text keys by `asgd_mask_weights`, averaged over heads): float32 [1, S_img].
 *
 * diffusers' JointAttnProcessor2_0 attends over one sequence [image tokens, text tokens]: its Softmax has
 * [B, heads, S_img + L, S_img + L] (torch's SDPA export; [B*heads, ...] is accepted too). The rows of the image
 * queries are the first S_img, the text keys the last L columns, with L the encoder_hidden_states length and
 * S_img = total - L, both computed in-graph from shapes. Found by the export scope (`/transformer_blocks.N/attn/
 * Softmax`; SD3.5's image-only `attn2` is not joint and is skipped) and checked structurally: the Softmax reads
 * q·kᵀ (scaled) and the keys come from a two-input Concat along the sequence. Portable: ModelProto only.
 */
import { type ModelProto, type NodeProto } from 'onnx-buf';
import { invalidArgument } from '../core/errors.ts';
import {
  AFFINE_OPS,
  FUSED_ATTENTION_OPS,
  LAYOUT_OPS,
  MASK_OFF_HINT,
  PROBE_OUTPUT_PREFIX,
  PROBE_SCOPE,
  ProbeWriter,
  addMaskMapOutput,
  addMaskWeightsInput,
  indexGraph,
  scoresMatMul,
  scopedNames,
  softmaxAxisProblem,
  declaredDims,
  defaultOpset,
  probeOutputName,
  type ProbeSurgery,
} from './attention-probe.ts';

const IMAGE_INPUT = 'hidden_states';
const TEXT_INPUT = 'encoder_hidden_states';
const POOLED_INPUT = 'pooled_projections';

export interface JointAttentionSite {
  /** The node scope up to `/attn`, e.g. `/transformer_blocks.3/attn`. */
  layer: string;
  softmaxNode: string;
  probabilities: string;
  /** The q·kᵀ MatMul's output. */
  scores: string;
  /** Its query and key operands (as they enter the MatMul). */
  query: string;
  key: string;
}

export interface JointAttentionScan {
  sites: JointAttentionSite[];
  rejected: { layer: string; why: string }[];
  fused: Record<string, number>;
}

/** An SD3-style transformer: inputs hidden_states, encoder_hidden_states and pooled_projections. */
export function isJointTransformer(model: ModelProto): boolean {
  const names = new Set(model.graph?.input.map((i) => i.name) ?? []);
  return names.has(IMAGE_INPUT) && names.has(TEXT_INPUT) && names.has(POOLED_INPUT);
}

function jointLayer(node: NodeProto): string | undefined {
  for (const name of scopedNames(node)) {
    const m = /^(.*\/transformer_blocks\.\d+\/attn)\//.exec(name);
    if (m) return m[1];
  }
  return undefined;
}

export function scanJointAttention(model: ModelProto): JointAttentionScan {
  const graph = model.graph;
  const scan: JointAttentionScan = { sites: [], rejected: [], fused: {} };
  if (!graph) return scan;
  const index = indexGraph(graph);
  const { producer, dynamicInputs } = index;
  for (const node of graph.node) {
    if (FUSED_ATTENTION_OPS.has(node.opType)) scan.fused[node.opType] = (scan.fused[node.opType] ?? 0) + 1;
  }
  const opset = defaultOpset(model);
  const seen = new Set<string>();
  for (const node of graph.node) {
    if (node.opType !== 'Softmax' || (node.domain !== '' && node.domain !== 'ai.onnx')) continue;
    const layer = jointLayer(node);
    if (layer === undefined) continue;
    const reject = (why: string) => scan.rejected.push({ layer, why });
    if (seen.has(layer)) {
      reject('a second Softmax in the same attention scope');
      continue;
    }
    const axisProblem = softmaxAxisProblem(node, graph, opset);
    if (axisProblem) {
      reject(axisProblem);
      continue;
    }
    const scores = scoresMatMul(node, index);
    if (!scores) {
      reject('its input is not a q·kᵀ MatMul (optionally scaled)');
      continue;
    }
    // Keys: through the scale and layout ops to the Concat of image and text keys.
    let k = scores.input[1]!;
    let joined = false;
    for (let step = 0; step < 32; step++) {
      const p = producer.get(k);
      if (!p) break;
      const data = dynamicInputs(p);
      if (p.opType === 'Concat') {
        joined = data.length === 2;
        break;
      }
      if (LAYOUT_OPS.has(p.opType)) k = p.input[0]!;
      else if (AFFINE_OPS.has(p.opType) && data.length === 1) k = data[0]!;
      else break;
    }
    if (!joined) {
      reject('its keys are not the concatenation of image and text keys (not a joint attention)');
      continue;
    }
    seen.add(layer);
    scan.sites.push({ layer, softmaxNode: node.name, probabilities: node.output[0]!, scores: scores.output[0]!, query: scores.input[0]!, key: scores.input[1]! });
  }
  return scan;
}

export function noJointProbeReason(scan: JointAttentionScan): string {
  const lead = 'The transformer has no separable joint-attention probabilities';
  const fused = Object.entries(scan.fused);
  if (fused.length > 0) {
    const ops = fused.map(([op, n]) => `${n} ${op}`).join(', ');
    return `${lead}: its attention runs in fused operators (${ops}) that do not expose the softmax, so the mask is uniform (M = 1). For the mask use an export without fused attention (a plain optimum-cli export), or ${MASK_OFF_HINT}`;
  }
  if (scan.rejected.length > 0) {
    return `${lead}: the joint-attention Softmax nodes do not have the expected structure (${scan.rejected.map((r) => `${r.layer}: ${r.why}`).join('; ')}), so the mask is uniform (M = 1); ${MASK_OFF_HINT}`;
  }
  return `${lead}: no Softmax named like /transformer_blocks.N/attn/Softmax was found, so the mask is uniform (M = 1); ${MASK_OFF_HINT}`;
}

/** Adds `attn2_probs:<layer>` outputs for the joint blocks (all, or the named `layers`), or says why it cannot. */
export function addJointAttentionProbe(model: ModelProto, opts: { layers?: readonly string[] } = {}): ProbeSurgery {
  const graph = model.graph;
  const scan = scanJointAttention(model);
  if (!graph || scan.sites.length === 0) return { reason: noJointProbeReason(scan) };
  let sites = scan.sites;
  if (opts.layers) {
    const found = new Set(sites.map((s) => s.layer));
    const unknown = opts.layers.filter((l) => !found.has(l));
    if (unknown.length > 0 || opts.layers.length === 0) {
      throw invalidArgument('layers', `a non-empty list of the transformer's joint-attention layers (${[...found].join(', ')})`, opts.layers);
    }
    sites = sites.filter((s) => opts.layers!.includes(s.layer));
  }
  if (graph.node.some((n) => n.name.startsWith(`${PROBE_SCOPE}/`)) || graph.output.some((o) => o.name.startsWith(PROBE_OUTPUT_PREFIX))) {
    return { reason: 'The transformer already is an attention-probe graph; pass the original transformer' };
  }
  const opset = defaultOpset(model);
  if (opset < 11) return { reason: `The transformer uses ONNX opset ${opset}; the attention probe needs opset 11 or later. ${MASK_OFF_HINT}` };
  const w = new ProbeWriter(graph);
  const batch = w.node('Slice', [w.node('Shape', [IMAGE_INPUT]), w.int64([0]), w.int64([1]), w.int64([0])]);
  const textLen = w.node('Slice', [w.node('Shape', [TEXT_INPUT]), w.int64([1]), w.int64([2]), w.int64([0])]);
  const minusOne = w.int64([-1]);
  const zero = w.int64([0]);
  const end = w.int64([Number.MAX_SAFE_INTEGER]);
  const weights = addMaskWeightsInput(graph, declaredDims(graph, TEXT_INPUT)?.[1]);
  for (const [i, site] of sites.entries()) {
    const probs = site.probabilities;
    const total = w.node('Slice', [w.node('Shape', [probs]), w.int64([-1]), end, w.int64([0])]);
    const nImage = w.node('Sub', [total, textLen]);
    const rows = w.node('Slice', [probs, zero, nImage, w.int64([-2])]);
    const block = w.node('Slice', [rows, nImage, end, minusOne]);
    const last2 = w.node('Concat', [nImage, textLen], { axis: 0 });
    const grouped = w.node('Reshape', [block, w.node('Concat', [batch, minusOne, last2], { axis: 0 })]);
    addMaskMapOutput(w, graph, grouped, weights, probeOutputName(site.layer), opset, `joint_image_tokens_${i}`);
  }
  return { layers: sites.map((s) => s.layer) };
}
