/**
 * Graph surgery that derives, from a user's VAE decoder (or encoder), the two graphs tiled decoding with shared
 * normalisation statistics needs:
 *
 * - the statistics graph: the model unchanged, plus one output `asgd_norm_stats` holding, for every GroupNorm layer
 *   in graph order, its per-group mean then its per-group (biased) variance, float32, as computed over the whole
 *   input;
 * - the tile graph: every GroupNorm layer applies a per-group affine map x * a + b read from a new input
 *   `asgd_norm_affine` (float32, per layer `groups` a's then `groups` b's) instead of normalising with its own
 *   statistics; a second new input `asgd_region` (int64 [y0, x0, y1, x1], in input pixels) names the part of the tile
 *   the tile owns, and the output `asgd_norm_stats` holds each layer's per-group mean and variance of its input over
 *   that part (scaled to the layer's resolution), so statistics can be accumulated over tiles.
 *
 * GroupNorm reaches ONNX in two forms, both recognised in float32 and float16 graphs: torch's export at opsets
 * below 18 (Reshape to [N, groups, -1] -> InstanceNormalization -> Reshape back -> affine Mul/Add), and the
 * GroupNormalization operator (opset 18-20: per-group scale and bias; opset 21+: per-channel). Any other
 * normalisation node, or a GroupNorm in another layout, makes the surgery refuse with a reason (the caller falls
 * back to tiles with their own statistics).
 *
 * Works on the ModelProto alone (no Node APIs, no ONNX Runtime): initializers stored as external data stay external.
 */
import { create } from '@bufbuild/protobuf';
import {
  AttributeProtoSchema,
  AttributeProto_AttributeType,
  NodeProtoSchema,
  TensorProtoSchema,
  TensorShapeProtoSchema,
  TensorShapeProto_DimensionSchema,
  TypeProtoSchema,
  TypeProto_TensorSchema,
  ValueInfoProtoSchema,
  type AttributeProto,
  type GraphProto,
  type ModelProto,
  type NodeProto,
} from 'onnx-buf';
import type { NormLayer } from '../core/vae/norm-stats.ts';
import { int64Constant } from './attention-probe.ts';

export const NORM_STATS_OUTPUT = 'asgd_norm_stats';
export const NORM_AFFINE_INPUT = 'asgd_norm_affine';
export const NORM_REGION_INPUT = 'asgd_region';

/** Scope of every node and tensor the surgery adds. */
const SCOPE = '/asgd_vae';
const FLOAT32 = 1;
const INT64 = 7;
const FLOAT16 = 10;
const BOOL = 9;

/** One GroupNorm layer found in the graph. */
export interface NormSite extends NormLayer {
  form: 'instance-norm' | 'group-normalization';
  /** The node that normalises (InstanceNormalization or GroupNormalization). */
  node: NodeProto;
  /** The layer's 4-D input [N, C, H, W] (before the grouping Reshape). */
  input: string;
  /** The grouped tensor [N, groups, -1] the InstanceNormalization reads (instance-norm form). */
  grouped?: string;
  /** Whether the layer computes in float32 (known from its scale's type): its statistics need no Cast. */
  float32: boolean;
}

export interface NormScan {
  sites: NormSite[];
  /** Normalisation nodes the surgery cannot rewrite, with why. */
  problems: string[];
}

export type VaeNormSurgery = { layers: NormLayer[] } | { reason: string };

/** Normalisation operators whose statistics would be tile-local and that the surgery does not rewrite. */
const OTHER_NORMS = new Set(['LayerNormalization', 'GroupNorm', 'SkipGroupNorm', 'BatchNormalization', 'LpNormalization', 'MeanVarianceNormalization', 'SimplifiedLayerNormalization', 'SkipLayerNormalization']);

function defaultOpset(model: ModelProto): number {
  const entry = model.opsetImport.find((o) => o.domain === '' || o.domain === 'ai.onnx');
  return entry ? Number(entry.version) : 0;
}

function layerName(node: NodeProto): string {
  const name = node.name || node.output[0] || '';
  const at = name.lastIndexOf('/');
  return at > 0 ? name.slice(0, at) : name;
}

function floatAttr(node: NodeProto, name: string, fallback: number): number {
  const a = node.attribute.find((x) => x.name === name);
  return a && a.type === AttributeProto_AttributeType.FLOAT ? a.f : fallback;
}

function intAttr(node: NodeProto, name: string): number | undefined {
  const a = node.attribute.find((x) => x.name === name);
  return a && a.type === AttributeProto_AttributeType.INT ? Number(a.i) : undefined;
}

/** The element type of a tensor when the graph states it plainly (initializer, Constant, Cast output), else undefined. */
function elemTypeOf(graph: GraphProto, producers: Map<string, NodeProto>, name: string): number | undefined {
  const init = graph.initializer.find((i) => i.name === name);
  if (init) return init.dataType;
  const p = producers.get(name);
  if (p?.opType === 'Constant') return p.attribute.find((a) => a.name === 'value')?.t?.dataType;
  if (p?.opType === 'Cast') return intAttr(p, 'to');
  return undefined;
}

/** Finds every GroupNorm layer, and the normalisation nodes that cannot be rewritten. */
export function scanNorms(model: ModelProto): NormScan {
  const graph = model.graph;
  const scan: NormScan = { sites: [], problems: [] };
  if (!graph) return scan;
  const producers = new Map<string, NodeProto>();
  for (const n of graph.node) for (const o of n.output) producers.set(o, n);
  const opset = defaultOpset(model);
  for (const node of graph.node) {
    const name = node.name || node.output[0] || node.opType;
    if (node.opType === 'InstanceNormalization' && (node.domain === '' || node.domain === 'ai.onnx')) {
      const reshape = producers.get(node.input[0] ?? '');
      if (!reshape || reshape.opType !== 'Reshape') {
        scan.problems.push(`${name}: InstanceNormalization whose input is not a Reshape (not a GroupNorm export)`);
        continue;
      }
      const shape = int64Constant(graph, producers, reshape.input[1] ?? '');
      if (!shape || shape.length !== 3 || shape[2] !== -1 || !(shape[1]! > 0) || !(shape[0] === 0 || shape[0] === 1)) {
        scan.problems.push(`${name}: InstanceNormalization after a Reshape to ${shape ? `[${shape.join(', ')}]` : 'a computed shape'}, not [N, groups, -1]`);
        continue;
      }
      scan.sites.push({
        name: layerName(node), form: 'instance-norm', groups: shape[1]!, epsilon: floatAttr(node, 'epsilon', 1e-5),
        node, input: reshape.input[0]!, grouped: node.input[0]!, float32: elemTypeOf(graph, producers, node.input[1] ?? '') === FLOAT32,
      });
    } else if (node.opType === 'GroupNormalization' && (node.domain === '' || node.domain === 'ai.onnx')) {
      const groups = intAttr(node, 'num_groups');
      if (!groups || groups < 1) {
        scan.problems.push(`${name}: GroupNormalization without num_groups`);
        continue;
      }
      if (opset < 18) {
        scan.problems.push(`${name}: GroupNormalization in a model of opset ${opset}`);
        continue;
      }
      scan.sites.push({
        name: layerName(node), form: 'group-normalization', groups, epsilon: floatAttr(node, 'epsilon', 1e-5), node, input: node.input[0]!,
        float32: elemTypeOf(graph, producers, node.input[1] ?? '') === FLOAT32,
      });
    } else if (OTHER_NORMS.has(node.opType)) {
      scan.problems.push(`${name}: a ${node.opType} node (${node.domain || 'ai.onnx'}), which the surgery does not rewrite`);
    }
  }
  return scan;
}

function attr(name: string, value: number | number[]): AttributeProto {
  return typeof value === 'number'
    ? create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INT, i: BigInt(value) })
    : create(AttributeProtoSchema, { name, type: AttributeProto_AttributeType.INTS, ints: value.map(BigInt) });
}

/** Writes the added nodes (into a target list) and constants; every name lives under SCOPE. */
class Writer {
  private count = 0;
  target: NodeProto[] = [];
  constructor(private readonly graph: GraphProto, readonly opset: number) {}

  node(opType: string, inputs: string[], attrs: Record<string, number | number[]> = {}, output?: string): string {
    const name = `${SCOPE}/${opType}_${this.count++}`;
    const out = output ?? `${name}_output_0`;
    this.target.push(create(NodeProtoSchema, { name, opType, input: inputs, output: [out], attribute: Object.entries(attrs).map(([k, v]) => attr(k, v)) }));
    return out;
  }

  int64(values: number[]): string {
    const name = `${SCOPE}/Constant_${this.count++}_output_0`;
    const raw = new Uint8Array(values.length * 8);
    const view = new DataView(raw.buffer);
    values.forEach((v, i) => view.setBigInt64(i * 8, BigInt(v), true));
    this.graph.initializer.push(create(TensorProtoSchema, { name, dataType: INT64, dims: [BigInt(values.length)], rawData: raw }));
    return name;
  }

  /**
   * `value` unchanged, computed only once `dependency` is: Where(false, dependency[0], value). ONNX Runtime orders
   * nodes by a depth-first walk from the outputs, which puts statistics nothing else reads after the whole decoder,
   * keeping every norm layer's input alive to the end (measured: +1 GiB at 512 px on an SD-width decoder); made an
   * input of their layer's norm, they run just before it. `float32`: value is float32 (else cast to its type).
   */
  after(value: string, dependency: string, float32: boolean): string {
    let dep = this.node('Slice', [dependency, this.int64([0]), this.int64([1]), this.int64([0])]);
    if (!float32) dep = this.opset >= 15 ? this.node('CastLike', [dep, value]) : this.node('Cast', [dep], { to: FLOAT16 });
    const no = `${SCOPE}/Constant_${this.count++}_output_0`;
    this.graph.initializer.push(create(TensorProtoSchema, { name: no, dataType: BOOL, dims: [1n], rawData: new Uint8Array([0]) }));
    return this.node('Where', [no, dep, value]);
  }

  /** A reduction over the last axis of [N, G, L], keeping it (`axesAsInput`: the opset from which axes are an input). */
  private reduceLast(op: string, x: string, axesAsInput: number): string {
    return this.opset >= axesAsInput ? this.node(op, [x, this.int64([2])], { keepdims: 1 }) : this.node(op, [x], { axes: [2], keepdims: 1 });
  }

  /**
   * Per-group mean and variance of a 4-D tensor, as float32 [2 * groups] (`float32`: x already is, no Cast).
   * Computed as E[x] and E[x²] - E[x]² with fused reductions (ReduceMean, ReduceSumSquare), so that no tensor of the
   * input's size is made beyond the float32 view: the two-pass form (x - mean, its square) made two, which at a
   * wide decoder's full-resolution layers set the tile graph's peak memory. In float32 the cancellation costs about
   * 1e-7 * (mean / std)² of the variance; rounding below 0 is clamped.
   */
  groupStats(x: string, groups: number, float32 = false): string {
    const g = this.node('Reshape', [float32 ? x : this.node('Cast', [x], { to: FLOAT32 }), this.int64([0, groups, -1])]);
    const mean = this.reduceLast('ReduceMean', g, 18);
    const count = this.node('Cast', [this.node('Slice', [this.node('Shape', [g]), this.int64([2]), this.int64([3]), this.int64([0])])], { to: FLOAT32 });
    const meanSquare = this.node('Div', [this.reduceLast('ReduceSumSquare', g, 18), count]);
    const variance = this.node('Relu', [this.node('Sub', [meanSquare, this.node('Mul', [mean, mean])])]);
    return this.node('Concat', [this.node('Reshape', [mean, this.int64([-1])]), this.node('Reshape', [variance, this.int64([-1])])], { axis: 0 });
  }
}

function floatValueInfo(name: string, elemType: number, dims: (number | string)[]) {
  return create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, {
      value: {
        case: 'tensorType',
        value: create(TypeProto_TensorSchema, {
          elemType,
          shape: create(TensorShapeProtoSchema, {
            dim: dims.map((d) => create(TensorShapeProto_DimensionSchema, { value: typeof d === 'number' ? { case: 'dimValue', value: BigInt(d) } : { case: 'dimParam', value: d } })),
          }),
        }),
      },
    }),
  });
}

/** Checks common to both derivations; the scan when the graph can be rewritten. */
function prepare(model: ModelProto): NormScan | { reason: string } {
  const graph = model.graph;
  if (!graph || graph.input.length === 0) return { reason: 'the graph has no inputs' };
  if (graph.node.some((n) => n.name.startsWith(`${SCOPE}/`)) || graph.output.some((o) => o.name === NORM_STATS_OUTPUT)) {
    return { reason: 'the model already is a derived statistics or tile graph; pass the original' };
  }
  const opset = defaultOpset(model);
  if (opset < 11) return { reason: `it uses ONNX opset ${opset}; the surgery needs opset 11 or later` };
  const scan = scanNorms(model);
  if (scan.problems.length > 0) return { reason: `normalisation layers it cannot rewrite: ${scan.problems.join('; ')}` };
  return scan;
}

function statsLength(sites: readonly NormSite[]): number {
  return sites.reduce((s, l) => s + 2 * l.groups, 0);
}

function layersOf(sites: readonly NormSite[]): NormLayer[] {
  return sites.map((s) => ({ name: s.name, groups: s.groups, epsilon: s.epsilon }));
}

/** Adds the `asgd_norm_stats` output (whole-input statistics of every GroupNorm layer); mutates `model`. */
export function deriveStatsGraph(model: ModelProto): VaeNormSurgery {
  const scan = prepare(model);
  if ('reason' in scan) return scan;
  const graph = model.graph!;
  const w = new Writer(graph, defaultOpset(model));
  if (scan.sites.length === 0) return { layers: [] };
  // Each layer's statistics are computed just before its norm node, so that its input need not stay alive to the end.
  const before = new Map<NodeProto, NodeProto[]>();
  const parts = scan.sites.map((site) => {
    w.target = [];
    before.set(site.node, w.target);
    const part = w.groupStats(site.input, site.groups, site.float32);
    site.node.input[2] = w.after(site.node.input[2]!, part, site.float32);
    return part;
  });
  const rebuilt: NodeProto[] = [];
  for (const node of graph.node) rebuilt.push(...(before.get(node) ?? []), node);
  w.target = rebuilt;
  w.node('Concat', parts, { axis: 0 }, NORM_STATS_OUTPUT);
  graph.node = rebuilt;
  graph.output.push(floatValueInfo(NORM_STATS_OUTPUT, FLOAT32, [statsLength(scan.sites)]));
  return { layers: layersOf(scan.sites) };
}

/**
 * Rewrites every GroupNorm layer to apply the affine map from `asgd_norm_affine`, and adds `asgd_region` and the
 * `asgd_norm_stats` output (statistics over the region); mutates `model`.
 */
export function deriveTileGraph(model: ModelProto): VaeNormSurgery {
  const scan = prepare(model);
  if ('reason' in scan) return scan;
  const graph = model.graph!;
  const opset = defaultOpset(model);
  if (scan.sites.length === 0) return { layers: [] };
  const w = new Writer(graph, opset);
  const dataInput = graph.input.find((i) => !graph.initializer.some((t) => t.name === i.name))!;
  const inputType = dataInput.type?.value.case === 'tensorType' ? dataInput.type.value.value.elemType : FLOAT32;
  const total = statsLength(scan.sites);
  graph.input.push(floatValueInfo(NORM_AFFINE_INPUT, FLOAT32, [total]));
  graph.input.push(floatValueInfo(NORM_REGION_INPUT, INT64, [4]));

  // Region arithmetic shared by all layers: the input's spatial size, the region's start and end corners.
  const head: NodeProto[] = [];
  w.target = head;
  const inputSize = w.node('Slice', [w.node('Shape', [dataInput.name]), w.int64([2]), w.int64([4]), w.int64([0])]);
  const regionStart = w.node('Slice', [NORM_REGION_INPUT, w.int64([0]), w.int64([2]), w.int64([0])]);
  const regionEnd = w.node('Slice', [NORM_REGION_INPUT, w.int64([2]), w.int64([4]), w.int64([0])]);

  const replacement = new Map<NodeProto, NodeProto[]>();
  const statsParts: string[] = [];
  const tail: NodeProto[] = [];
  let at = 0;
  for (const site of scan.sites) {
    const nodes: NodeProto[] = [];
    // Statistics of the layer's input over the owned region, at the layer's resolution; computed just before the
    // norm, so that the input need not stay alive to the end of the graph.
    w.target = nodes;
    const layerSize = w.node('Slice', [w.node('Shape', [site.input]), w.int64([2]), w.int64([4]), w.int64([0])]);
    const scaleCorner = (c: string) => w.node('Div', [w.node('Mul', [c, layerSize]), inputSize]);
    const crop = w.node('Slice', [site.input, scaleCorner(regionStart), scaleCorner(regionEnd), w.int64([2, 3])]);
    const part = w.groupStats(crop, site.groups, site.float32);
    statsParts.push(part);
    const slice = (from: number, to: number) => w.node('Slice', [NORM_AFFINE_INPUT, w.int64([from]), w.int64([to]), w.int64([0])]);
    // The layer's b values (float32), read only after its statistics: they run before the layer, not at the end.
    const shiftIn = w.after(slice(at + site.groups, at + 2 * site.groups), part, true);
    const like = (t: string, ref: string) => (opset >= 15 ? w.node('CastLike', [t, ref]) : inputType === FLOAT16 ? w.node('Cast', [t], { to: FLOAT16 }) : t);
    const asColumn = (t: string) => w.node('Reshape', [t, w.int64([site.groups, 1])]);
    /** (r * a + b) * s + t as r * (a * s) + (b * s + t), with a, b, s, t per group ([G, 1]). */
    const folded = (a: string, b: string, s: string, t: string) => {
      const sc = asColumn(s);
      return { scale: w.node('Mul', [a, sc]), shift: w.node('Add', [w.node('Mul', [b, sc]), asColumn(t)]) };
    };
    const out = site.node.output[0]!;
    if (site.form === 'instance-norm') {
      // InstanceNormalization(r, scale, bias) -> r * (a * scale) + (b * scale + bias): the per-group maps folded on
      // [G, 1] first, so the layer makes two tensors of its input's size (as the norm it replaces), not four.
      const r = site.grouped!;
      const { scale, shift } = folded(like(asColumn(slice(at, at + site.groups)), r), like(asColumn(shiftIn), r), site.node.input[1]!, site.node.input[2]!);
      w.node('Add', [w.node('Mul', [r, scale]), shift], {}, out);
    } else if (opset < 21) {
      // GroupNormalization with per-group scale and bias (opset 18-20): folded as above, then back to [N, C, ...].
      const x = site.input;
      const r = w.node('Reshape', [x, w.int64([0, site.groups, -1])]);
      const { scale, shift } = folded(like(asColumn(slice(at, at + site.groups)), r), like(asColumn(shiftIn), r), site.node.input[1]!, site.node.input[2]!);
      w.node('Reshape', [w.node('Add', [w.node('Mul', [r, scale]), shift]), w.node('Shape', [x])], {}, out);
    } else {
      // Per-channel scale and bias (opset 21+): a and b per group, scale and bias per channel, folded to per-channel
      // maps [C, 1, 1] ([G, 1, 1] times [G, C/G, 1]) applied to the layer's input as it is.
      const x = site.input;
      const perGroup = (t: string) => w.node('Reshape', [t, w.int64([site.groups, 1, 1])]);
      const grouped = (t: string) => w.node('Reshape', [t, w.int64([site.groups, -1, 1])]);
      const perChannel = (t: string) => w.node('Reshape', [t, w.int64([-1, 1, 1])]);
      const sc = grouped(site.node.input[1]!);
      const scale = perChannel(w.node('Mul', [like(perGroup(slice(at, at + site.groups)), x), sc]));
      const shift = perChannel(w.node('Add', [w.node('Mul', [like(perGroup(shiftIn), x), sc]), grouped(site.node.input[2]!)]));
      w.node('Add', [w.node('Mul', [x, scale]), shift], {}, out);
    }
    replacement.set(site.node, nodes);
    at += 2 * site.groups;
  }
  w.target = tail;
  // Gathered in layer order by one Concat: src/graph/vae-segments.ts reads each layer's statistics from it.
  w.node('Concat', statsParts, { axis: 0 }, NORM_STATS_OUTPUT);
  const rebuilt: NodeProto[] = [...head];
  for (const node of graph.node) rebuilt.push(...(replacement.get(node) ?? [node]));
  rebuilt.push(...tail);
  graph.node = rebuilt;
  graph.output.push(floatValueInfo(NORM_STATS_OUTPUT, FLOAT32, [total]));
  return { layers: layersOf(scan.sites) };
}

