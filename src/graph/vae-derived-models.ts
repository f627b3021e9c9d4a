/**
 * The derived VAE models as ModelProtos, from a decoder's or encoder's bytes: its norm-statistics graphs
 * (src/graph/vae-norm-graph.ts) and its split at the attention (src/graph/vae-attention-split.ts). Node stores them
 * on disk with their weights referenced (src/node/vae-graphs.ts, vae-attention-graphs.ts); the browser's device
 * worker keeps them in memory with their weights inline (src/browser/device/vae-graphs.ts). Portable: no Node APIs.
 */
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import { modelBytes } from './model-bytes.ts';
import type { NormLayer } from '../core/vae/norm-stats.ts';
import { deriveAttentionCorePart, deriveAttentionGlobal, deriveAttentionTiled, type Reason, type VaeHalf } from './vae-attention-split.ts';
import { deriveStatsGraph, deriveTileGraph } from './vae-norm-graph.ts';
import { deriveSegmentGraph, type SegmentEnd } from './vae-segments.ts';

const UNPARSABLE: Reason = { reason: 'the file cannot be parsed as an ONNX model' };

function parse(bytes: Uint8Array): ModelProto | Reason {
  try {
    return fromBinary(ModelProtoSchema, bytes);
  } catch {
    return UNPARSABLE;
  }
}

export interface VaeNormModels {
  layers: NormLayer[];
  stats: ModelProto;
  tile: ModelProto;
}

/** The statistics and tile graphs of a decoder or encoder; or why not. */
export function deriveVaeNormModels(bytes: Uint8Array): VaeNormModels | Reason {
  const stats = parse(bytes);
  const tile = parse(bytes);
  if ('reason' in stats || 'reason' in tile) return UNPARSABLE;
  const s = deriveStatsGraph(stats);
  const t = deriveTileGraph(tile);
  if ('reason' in s || 'reason' in t) return { reason: 'reason' in s ? s.reason : (t as Reason).reason };
  return { layers: s.layers, stats, tile };
}

/**
 * A segment of a tile graph (src/graph/vae-segments.ts) from the tile graph's bytes, as a model's bytes. Segments are
 * cut when their session opens: each holds the weights of its part of the model, so keeping them all would hold the
 * model's weights again. `outputs`: its output names (a session keeping the states on the device names them).
 */
export function deriveSegmentModel(tileBytes: Uint8Array, span: { from: number; to: SegmentEnd }): { bytes: Uint8Array; outputs: string[] } | Reason {
  const m = parse(tileBytes);
  if ('reason' in m) return m;
  const r = deriveSegmentGraph(m, span.from, span.to);
  return 'reason' in r ? r : { bytes: modelBytes(m), outputs: (m.graph?.output ?? []).map((o) => o.name) };
}

export interface VaeAttentionModels {
  /** The part with the attention, run once on the whole latent grid (a decoder's head, an encoder's tail). */
  global: ModelProto;
  /** It as pre, attention core (run over query chunks) and post graphs; absent when the core is not row-independent. */
  chunked?: { pre: ModelProto; core: ModelProto; post: ModelProto };
  /** Why its attention cannot run in query chunks. */
  coreReason?: string;
  /** The part run over tiles (a decoder's tail, an encoder's head). */
  tiled: ModelProto;
  /** The tensor the model is cut at, and the attention it follows. */
  cut: string;
  attention: string;
}

/** A decoder split after its attention, or an encoder split before it; or why it cannot be split. */
export function deriveVaeAttentionModels(bytes: Uint8Array, half: VaeHalf): VaeAttentionModels | Reason {
  const part = <T extends object>(f: (m: ModelProto) => T | Reason): { model: ModelProto; meta: T } | Reason => {
    const m = parse(bytes);
    if ('reason' in m) return m;
    const meta = f(m);
    return 'reason' in meta ? meta : { model: m, meta };
  };
  const global = part((m) => deriveAttentionGlobal(m, half));
  if ('reason' in global) return global;
  const tiled = part((m) => deriveAttentionTiled(m, half));
  if ('reason' in tiled) return tiled;
  const [pre, core, post] = (['pre', 'core', 'post'] as const).map((name) => part((m) => deriveAttentionCorePart(m, name, half)));
  const coreProblem = [pre, core, post].find((x): x is Reason => 'reason' in x!);
  return {
    global: global.model,
    tiled: tiled.model,
    cut: global.meta.cut,
    attention: global.meta.attention,
    ...(coreProblem
      ? { coreReason: coreProblem.reason }
      : { chunked: { pre: (pre as { model: ModelProto }).model, core: (core as { model: ModelProto }).model, post: (post as { model: ModelProto }).model } }),
  };
}
