/**
 * Prepares the derived VAE graphs of a decoder or encoder on disk (see src/graph/vae-norm-graph.ts): the statistics
 * graph `model.asgd-vae-stats.onnx` and the tile graph `model.asgd-vae-tile.onnx`, with a sidecar `model.asgd-vae.json`
 * (the tile graph's segments, src/graph/vae-segments.ts, are cut from it by the worker that runs them). Stored as the attention probe is (src/node/probe.ts): weights are never copied (inline
 * initializers become external references into the source file), next to the source when its folder is writable,
 * else under the cache folder (then loaded with the source folder as the external-data folder). Rebuilt only when
 * the source's content or the surgery's format changes.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import type { NormLayer } from '../core/vae/norm-stats.ts';
import { deriveVaeNormModels } from '../graph/vae-derived-models.ts';
import { prepareDerivedGraphs, type DerivedGraphOptions, type DerivedSidecar } from './derived-graphs.ts';
import { referenceInlineWeights } from './probe.ts';

export type VaeGraphOptions = DerivedGraphOptions;

export interface VaeGraphFiles {
  statsFile: string;
  tileFile: string;
  layers: NormLayer[];
  /** Set when the files do not sit next to the source (their weights live in this folder). */
  externalDataFolder?: string;
}

export type VaeGraphs = VaeGraphFiles | { reason: string };

/** Bump when the surgery's output changes, so cached graphs are rebuilt. */
const FORMAT = 5;

type NormResult = { layers: NormLayer[]; statsBytes: number; tileBytes: number };

function filesIn(dir: string, source: string) {
  const base = path.basename(source).replace(/\.onnx$/i, '');
  return {
    stats: path.join(dir, `${base}.asgd-vae-stats.onnx`),
    tile: path.join(dir, `${base}.asgd-vae-tile.onnx`),
    sidecar: path.join(dir, `${base}.asgd-vae.json`),
  };
}

async function open(side: DerivedSidecar<NormResult> & { result: NormResult }, files: ReturnType<typeof filesIn>): Promise<VaeGraphFiles | undefined> {
  const sizes = await Promise.all([files.stats, files.tile].map((f) => stat(f).then((x) => x.size, () => -1)));
  const expected = [side.result.statsBytes, side.result.tileBytes];
  if (sizes.some((n, i) => n !== expected[i])) return undefined;
  return { statsFile: files.stats, tileFile: files.tile, layers: side.result.layers, ...(side.externalDataFolder ? { externalDataFolder: side.externalDataFolder } : {}) };
}

/** The statistics and tile graphs of a decoder or encoder's bytes, or why they cannot be derived. */
function derive(bytes: Uint8Array, source: string) {
  const models = deriveVaeNormModels(bytes);
  if ('reason' in models) return models;
  const location = path.basename(source);
  const serialize = (m: ModelProto) => {
    referenceInlineWeights(m, bytes, location);
    return toBinary(ModelProtoSchema, m);
  };
  const statsBytes = serialize(models.stats);
  const tileBytes = serialize(models.tile);
  return {
    result: { layers: models.layers, statsBytes: statsBytes.length, tileBytes: tileBytes.length },
    files: (p: ReturnType<typeof filesIn>): [string, Uint8Array][] => [[p.stats, statsBytes], [p.tile, tileBytes]],
  };
}

/**
 * The statistics and tile graphs of the VAE decoder or encoder at `modelPath`, or why they cannot be derived (the
 * caller then tiles with per-tile statistics and warns with the reason).
 */
export async function prepareVaeGraphs(modelPath: string, opts: VaeGraphOptions = {}): Promise<VaeGraphs> {
  return prepareDerivedGraphs(modelPath, opts, { format: FORMAT, filesIn, open, derive });
}
