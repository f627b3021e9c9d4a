/**
 * Prepares, on disk, the graphs of a VAE decoder split after its self-attention, or of an encoder split before it
 * (src/graph/vae-attention-split.ts): the part run once on the whole latent `model.asgd-vae-attn-global.onnx` (the
 * decoder's head, the encoder's tail), its pre/core/post graphs for a chunked attention (`-pre`, `-core`, `-post`),
 * the part run over tiles `model.asgd-vae-attn-tiled.onnx` and its GroupNorm-statistics graphs (src/node/vae-graphs.ts,
 * derived from it as from a whole decoder or encoder: `model.asgd-vae-attn-tiled.asgd-vae-*.onnx`), with a sidecar
 * `model.asgd-vae-attn.json`. Stored as the other derived graphs are: weights referenced, never copied; next to the
 * source when its folder is writable, else under the cache folder; rebuilt when the source or the format changes.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import type { VaeHalf } from '../graph/vae-attention-split.ts';
import { deriveVaeAttentionModels } from '../graph/vae-derived-models.ts';
import { prepareDerivedGraphs, type DerivedSidecar } from './derived-graphs.ts';
import { referenceInlineWeights } from './probe.ts';
import { prepareVaeGraphs, type VaeGraphOptions, type VaeGraphs } from './vae-graphs.ts';

export interface VaeAttentionGraphFiles {
  /** The part with the attention, run once on the whole latent grid (a decoder's head, an encoder's tail). */
  global: string;
  /** It as pre, attention core (run over query chunks) and post graphs; absent when the core is not row-independent. */
  chunked?: { pre: string; core: string; post: string };
  /** Why its attention cannot run in query chunks. */
  coreReason?: string;
  /** The part run over tiles (a decoder's tail, an encoder's head). */
  tiled: string;
  /** Its statistics and tile graphs, or why there are none. */
  tiledNorms: VaeGraphs;
  /** The tensor the decoder is cut at, and the attention it follows. */
  cut: string;
  attention: string;
  /** Set when the files do not sit next to the source (their weights live in this folder). */
  externalDataFolder?: string;
}

export type VaeAttentionGraphs = VaeAttentionGraphFiles | { reason: string };

/** Bump when the surgery's output changes, so cached graphs are rebuilt. */
const FORMAT = 1;
type Part = 'global' | 'pre' | 'core' | 'post' | 'tiled';
type SplitResult = { cut: string; attention: string; coreReason?: string; bytes: Partial<Record<Part, number>> };

function filesIn(dir: string, source: string) {
  const base = path.basename(source).replace(/\.onnx$/i, '');
  return { part: (p: Part) => path.join(dir, `${base}.asgd-vae-attn-${p}.onnx`), sidecar: path.join(dir, `${base}.asgd-vae-attn.json`) };
}

async function complete(side: DerivedSidecar<SplitResult> & { result: SplitResult }, files: ReturnType<typeof filesIn>, opts: VaeGraphOptions): Promise<VaeAttentionGraphFiles | undefined> {
  const r = side.result;
  for (const [p, n] of Object.entries(r.bytes) as [Part, number][]) {
    if ((await stat(files.part(p)).then((x) => x.size, () => -1)) !== n) return undefined;
  }
  const external = side.externalDataFolder ?? undefined;
  let tiledNorms = await prepareVaeGraphs(files.part('tiled'), { ...opts, placement: 'auto' });
  // Its graphs refer to the source's weights, which live where the tiled part's do.
  if (external && !('reason' in tiledNorms)) tiledNorms = { ...tiledNorms, externalDataFolder: external };
  return {
    global: files.part('global'),
    ...(r.bytes.pre !== undefined ? { chunked: { pre: files.part('pre'), core: files.part('core'), post: files.part('post') } } : {}),
    ...(r.coreReason ? { coreReason: r.coreReason } : {}),
    tiled: files.part('tiled'),
    tiledNorms,
    cut: r.cut,
    attention: r.attention,
    ...(external ? { externalDataFolder: external } : {}),
  };
}

/** The parts of a decoder or encoder's bytes split at its attention, or why it cannot be split. */
function derive(bytes: Uint8Array, source: string, half: VaeHalf) {
  const models = deriveVaeAttentionModels(bytes, half);
  if ('reason' in models) return models;
  const location = path.basename(source);
  const serialize = (m: ModelProto) => {
    referenceInlineWeights(m, bytes, location);
    return toBinary(ModelProtoSchema, m);
  };
  const out: Partial<Record<Part, Uint8Array>> = { global: serialize(models.global), tiled: serialize(models.tiled) };
  if (models.chunked) [out.pre, out.core, out.post] = [models.chunked.pre, models.chunked.core, models.chunked.post].map(serialize);
  return {
    result: {
      cut: models.cut, attention: models.attention, ...(models.coreReason ? { coreReason: models.coreReason } : {}),
      bytes: Object.fromEntries(Object.entries(out).map(([k, b]) => [k, b.length])),
    },
    files: (p: ReturnType<typeof filesIn>) => (Object.entries(out) as [Part, Uint8Array][]).map(([k, b]): [string, Uint8Array] => [p.part(k), b]),
  };
}

/**
 * The graphs of the decoder (or encoder) at `modelPath` split at its attention, or why it cannot be split (the caller
 * then tiles the whole model, each tile's attention seeing only the tile, and warns with the reason).
 */
export async function prepareVaeAttentionGraphs(modelPath: string, half: VaeHalf = 'decoder', opts: VaeGraphOptions = {}): Promise<VaeAttentionGraphs> {
  return prepareDerivedGraphs<SplitResult, ReturnType<typeof filesIn>, VaeAttentionGraphFiles>(modelPath, opts, {
    format: FORMAT,
    filesIn,
    open: (side, files) => complete(side, files, opts),
    derive: (bytes, source) => derive(bytes, source, half),
  });
}
