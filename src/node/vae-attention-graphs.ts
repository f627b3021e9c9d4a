/**
 * Prepares, on disk, the graphs of a VAE decoder split after its self-attention, or of an encoder split before it
 * (src/graph/vae-attention-split.ts): the part run once on the whole latent `model.asgd-vae-attn-global.onnx` (the
 * decoder's head, the encoder's tail), its pre/core/post graphs for a chunked attention (`-pre`, `-core`, `-post`),
 * the part run over tiles `model.asgd-vae-attn-tiled.onnx` and its GroupNorm-statistics graphs (src/node/vae-graphs.ts,
 * derived from it as from a whole decoder or encoder: `model.asgd-vae-attn-tiled.asgd-vae-*.onnx`), with a sidecar
 * `model.asgd-vae-attn.json`. Stored as the other derived graphs are: weights referenced, never copied; next to the
 * source when its folder is writable, else under the cache folder; rebuilt when the source or the format changes.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import { deriveAttentionCorePart, deriveAttentionGlobal, deriveAttentionTiled, type Reason, type VaeHalf } from '../graph/vae-attention-split.ts';
import { cacheRoot, referenceInlineWeights, writeAtomic } from './probe.ts';
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
  /** Its statistics, tile and prefix graphs, or why there are none. */
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
const MAX_SINGLE_FILE = 2 ** 31 - 1;
const PARTS = ['global', 'pre', 'core', 'post', 'tiled'] as const;
type Part = (typeof PARTS)[number];

interface Sidecar {
  format: number;
  source: string;
  size: number;
  mtimeMs: number;
  sha256: string;
  result: { cut: string; attention: string; coreReason?: string; bytes: Partial<Record<Part, number>> } | { reason: string };
  externalDataFolder: string | null;
}

function filesIn(dir: string, source: string) {
  const base = path.basename(source).replace(/\.onnx$/i, '');
  return { part: (p: Part) => path.join(dir, `${base}.asgd-vae-attn-${p}.onnx`), sidecar: path.join(dir, `${base}.asgd-vae-attn.json`) };
}

async function readSidecar(file: string): Promise<Sidecar | undefined> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as Sidecar;
    return s.format === FORMAT ? s : undefined;
  } catch {
    return undefined;
  }
}

async function complete(side: Sidecar, files: ReturnType<typeof filesIn>, opts: VaeGraphOptions): Promise<VaeAttentionGraphs | undefined> {
  const r = side.result;
  if ('reason' in r) return { reason: r.reason };
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

/**
 * The graphs of the decoder (or encoder) at `modelPath` split at its attention, or why it cannot be split (the caller
 * then tiles the whole model, each tile's attention seeing only the tile, and warns with the reason).
 */
export async function prepareVaeAttentionGraphs(modelPath: string, half: VaeHalf = 'decoder', opts: VaeGraphOptions = {}): Promise<VaeAttentionGraphs> {
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
      const hit = await complete(side, p, opts);
      if (hit) return hit;
    }
  }
  const bytes = await readFile(source);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const location = path.basename(source);
  const derive = (f: (m: ModelProto, half: VaeHalf) => object): { bytes: Uint8Array; meta: object } | Reason => {
    let m: ModelProto;
    try {
      m = fromBinary(ModelProtoSchema, bytes);
    } catch {
      return { reason: 'the file cannot be parsed as an ONNX model' };
    }
    const meta = f(m, half);
    if ('reason' in meta) return meta as Reason;
    referenceInlineWeights(m, bytes, location);
    return { bytes: toBinary(ModelProtoSchema, m), meta };
  };
  const out: Partial<Record<Part, Uint8Array>> = {};
  let result: Sidecar['result'];
  const global = derive(deriveAttentionGlobal);
  const tiled = 'reason' in global ? global : derive(deriveAttentionTiled);
  if ('reason' in global || 'reason' in tiled) {
    result = { reason: 'reason' in global ? global.reason : (tiled as Reason).reason };
  } else {
    out.global = global.bytes;
    out.tiled = tiled.bytes;
    const cut = global.meta as { cut: string; attention: string };
    const parts = (['pre', 'core', 'post'] as const).map((part) => derive((m, h) => deriveAttentionCorePart(m, part, h)));
    const coreProblem = parts.find((x): x is Reason => 'reason' in x);
    if (!coreProblem) [out.pre, out.core, out.post] = parts.map((x) => (x as { bytes: Uint8Array }).bytes);
    result = {
      cut: cut.cut, attention: cut.attention, ...(coreProblem ? { coreReason: coreProblem.reason } : {}),
      bytes: Object.fromEntries(Object.entries(out).map(([k, b]) => [k, b.length])),
    };
  }
  const failures: string[] = [];
  for (const p of places) {
    const side: Sidecar = { format: FORMAT, source, size: st.size, mtimeMs: st.mtimeMs, sha256, result, externalDataFolder: p === sibling ? null : path.dirname(source) };
    try {
      await mkdir(path.dirname(p.sidecar), { recursive: true });
      for (const [k, b] of Object.entries(out) as [Part, Uint8Array][]) await writeAtomic(p.part(k), b);
      await writeAtomic(p.sidecar, JSON.stringify(side, null, 2));
      const hit = await complete(side, p, opts);
      if (hit) return hit;
      failures.push(`${p.sidecar}: the written graphs are incomplete`);
    } catch (err) {
      failures.push(`${p.sidecar}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if ('reason' in result) return result;
  return { reason: `the derived graphs could not be written (${failures.join('; ')}); make the model's folder or the cache folder writable (ASGD_CACHE_DIR)` };
}
