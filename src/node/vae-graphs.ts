/**
 * Prepares the derived VAE graphs of a decoder or encoder on disk (see src/graph/vae-norm-graph.ts): the statistics
 * graph `model.asgd-vae-stats.onnx`, the tile graph `model.asgd-vae-tile.onnx` and one prefix graph per norm layer
 * `model.asgd-vae-prefix-<k>.onnx`, with a sidecar `model.asgd-vae.json`. Stored as the attention probe is (src/node/probe.ts): weights are never copied (inline
 * initializers become external references into the source file), next to the source when its folder is writable,
 * else under the cache folder (then loaded with the source folder as the external-data folder). Rebuilt only when
 * the source's content or the surgery's format changes.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import type { NormLayer } from '../core/vae/norm-stats.ts';
import { derivePrefixGraph, deriveStatsGraph, deriveTileGraph } from '../graph/vae-norm-graph.ts';
import { cacheRoot, referenceInlineWeights, writeAtomic } from './probe.ts';

export interface VaeGraphOptions {
  /** Cache root (default as for the attention probe: $ASGD_CACHE_DIR, $XDG_CACHE_HOME/asgdiffusion, ~/.cache/asgdiffusion). */
  cacheDir?: string;
  /** 'auto' (default): next to the model when its folder is writable, else the cache; 'cache': always the cache. */
  placement?: 'auto' | 'cache';
}

export interface VaeGraphFiles {
  statsFile: string;
  tileFile: string;
  /** Prefix graph of each norm layer (its statistics only, from the part of the model before it). */
  prefixFiles: string[];
  layers: NormLayer[];
  /** Set when the files do not sit next to the source (their weights live in this folder). */
  externalDataFolder?: string;
}

export type VaeGraphs = VaeGraphFiles | { reason: string };

/** Bump when the surgery's output changes, so cached graphs are rebuilt. */
const FORMAT = 4;
const MAX_SINGLE_FILE = 2 ** 31 - 1;

interface Sidecar {
  format: number;
  source: string;
  size: number;
  mtimeMs: number;
  sha256: string;
  result: { layers: NormLayer[]; statsBytes: number; tileBytes: number; prefixBytes: number[] } | { reason: string };
  externalDataFolder: string | null;
}

function filesIn(dir: string, source: string) {
  const base = path.basename(source).replace(/\.onnx$/i, '');
  return {
    stats: path.join(dir, `${base}.asgd-vae-stats.onnx`),
    tile: path.join(dir, `${base}.asgd-vae-tile.onnx`),
    sidecar: path.join(dir, `${base}.asgd-vae.json`),
    prefix: (k: number) => path.join(dir, `${base}.asgd-vae-prefix-${k}.onnx`),
  };
}

async function readSidecar(file: string): Promise<Sidecar | undefined> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as Sidecar;
    return s.format === FORMAT ? s : undefined;
  } catch {
    return undefined;
  }
}

async function usable(side: Sidecar, files: ReturnType<typeof filesIn>): Promise<VaeGraphs | undefined> {
  if ('reason' in side.result) return { reason: side.result.reason };
  const prefixFiles = side.result.prefixBytes.map((_, k) => files.prefix(k));
  const sizes = await Promise.all([files.stats, files.tile, ...prefixFiles].map((f) => stat(f).then((x) => x.size, () => -1)));
  const expected = [side.result.statsBytes, side.result.tileBytes, ...side.result.prefixBytes];
  if (sizes.some((n, i) => n !== expected[i])) return undefined;
  return { statsFile: files.stats, tileFile: files.tile, prefixFiles, layers: side.result.layers, ...(side.externalDataFolder ? { externalDataFolder: side.externalDataFolder } : {}) };
}

/**
 * The statistics and tile graphs of the VAE decoder or encoder at `modelPath`, or why they cannot be derived (the
 * caller then tiles with per-tile statistics and warns with the reason).
 */
export async function prepareVaeGraphs(modelPath: string, opts: VaeGraphOptions = {}): Promise<VaeGraphs> {
  const source = path.resolve(modelPath);
  let st: fs.Stats;
  try {
    st = await stat(source);
  } catch (err) {
    return { reason: `the model file cannot be read (${err instanceof Error ? err.message : String(err)})` };
  }
  if (st.size > MAX_SINGLE_FILE) return { reason: `it is a single ONNX file of ${(st.size / 2 ** 30).toFixed(1)} GiB, over what Node can read; re-export it with external data` };
  const key = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const sibling = filesIn(path.dirname(source), source);
  const cached = filesIn(path.join(cacheRoot(opts), 'vae-graphs', key), source);
  const places = opts.placement === 'cache' ? [cached] : [sibling, cached];
  const sidecars = await Promise.all(places.map((p) => readSidecar(p.sidecar)));
  for (const [i, p] of places.entries()) {
    const side = sidecars[i];
    if (side && side.source === source && side.size === st.size && side.mtimeMs === st.mtimeMs) {
      const hit = await usable(side, p);
      if (hit) return hit;
    }
  }
  const bytes = await readFile(source);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  for (const [i, p] of places.entries()) {
    const side = sidecars[i];
    if (side && side.sha256 === sha256) {
      const hit = await usable(side, p);
      if (hit) {
        await writeAtomic(p.sidecar, JSON.stringify({ ...side, source, size: st.size, mtimeMs: st.mtimeMs }, null, 2)).catch(() => undefined);
        return hit;
      }
    }
  }
  let statsModel;
  let tileModel;
  try {
    statsModel = fromBinary(ModelProtoSchema, bytes);
    tileModel = fromBinary(ModelProtoSchema, bytes);
  } catch {
    return { reason: 'the file cannot be parsed as an ONNX model' };
  }
  const s = deriveStatsGraph(statsModel);
  const t = deriveTileGraph(tileModel);
  const base = { format: FORMAT, source, size: st.size, mtimeMs: st.mtimeMs, sha256 };
  let statsBytes: Uint8Array | undefined;
  let tileBytes: Uint8Array | undefined;
  const prefixBytes: Uint8Array[] = [];
  let result: Sidecar['result'];
  if ('reason' in s || 'reason' in t) {
    result = { reason: 'reason' in s ? s.reason : (t as { reason: string }).reason };
  } else {
    const location = path.basename(source);
    referenceInlineWeights(statsModel, bytes, location);
    referenceInlineWeights(tileModel, bytes, location);
    statsBytes = toBinary(ModelProtoSchema, statsModel);
    tileBytes = toBinary(ModelProtoSchema, tileModel);
    for (let k = 0; k < s.layers.length; k++) {
      const prefix = fromBinary(ModelProtoSchema, bytes);
      derivePrefixGraph(prefix, k);
      referenceInlineWeights(prefix, bytes, location);
      prefixBytes.push(toBinary(ModelProtoSchema, prefix));
    }
    result = { layers: s.layers, statsBytes: statsBytes.length, tileBytes: tileBytes.length, prefixBytes: prefixBytes.map((b) => b.length) };
  }
  const failures: string[] = [];
  for (const p of places) {
    const side: Sidecar = { ...base, result, externalDataFolder: p === sibling ? null : path.dirname(source) };
    try {
      await mkdir(path.dirname(p.sidecar), { recursive: true });
      if (statsBytes && tileBytes) {
        await writeAtomic(p.stats, statsBytes);
        await writeAtomic(p.tile, tileBytes);
        for (const [k, b] of prefixBytes.entries()) await writeAtomic(p.prefix(k), b);
      }
      await writeAtomic(p.sidecar, JSON.stringify(side, null, 2));
      return 'reason' in result
        ? result
        : {
            statsFile: p.stats, tileFile: p.tile, prefixFiles: prefixBytes.map((_, k) => p.prefix(k)), layers: result.layers,
            ...(side.externalDataFolder ? { externalDataFolder: side.externalDataFolder } : {}),
          };
    } catch (err) {
      failures.push(`${p.sidecar}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if ('reason' in result) return result;
  return { reason: `the derived graphs could not be written (${failures.join('; ')}); make the model's folder or the cache folder writable (ASGD_CACHE_DIR)` };
}
