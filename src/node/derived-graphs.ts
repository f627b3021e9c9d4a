/**
 * The on-disk store of graphs derived from a user's ONNX file (the VAE's norm-statistics graphs, its attention
 * split, the UNet with its attention fused): next to the source when its folder is writable, else under the cache folder (then the weights, referenced
 * never copied, live in the source's folder). A sidecar JSON records the source's path, size, mtime and SHA-256 and
 * the derivation's result, so the graphs are derived again only when the source's content or the format changes.
 */
import { createHash } from 'node:crypto';
import type fs from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { cacheRoot, writeAtomic } from './probe.ts';

export interface DerivedGraphOptions {
  /** Cache root (default as for the attention probe: $ASGD_CACHE_DIR, $XDG_CACHE_HOME/asgdiffusion, ~/.cache/asgdiffusion). */
  cacheDir?: string;
  /** 'auto' (default): next to the model when its folder is writable, else the cache; 'cache': always the cache. */
  placement?: 'auto' | 'cache';
}

export interface DerivedSidecar<T> {
  format: number;
  source: string;
  size: number;
  mtimeMs: number;
  sha256: string;
  result: T | { reason: string };
  /** The source's folder when the graphs are stored apart from it (their weights live there); null next to it. */
  externalDataFolder: string | null;
}

const MAX_SINGLE_FILE = 2 ** 31 - 1;

/** A derived file's content: bytes, or a writer of the file at the path it is given (then renamed into place). */
export type DerivedContent = Uint8Array | Uint8Array[] | ((file: string) => Promise<void>);

export interface DerivedGraphSpec<T, P extends { sidecar: string }, R> {
  /** Bump when the derivation's output changes, so stored graphs are derived again. */
  format: number;
  /** The cache root's subfolder for these graphs (default 'vae-graphs'). */
  cacheFolder?: string;
  /** The file names in one folder (the sidecar among them). */
  filesIn: (dir: string, source: string) => P;
  /** The graphs a stored sidecar describes, or undefined when its files are missing or incomplete. */
  open: (side: DerivedSidecar<T> & { result: T }, files: P) => Promise<R | undefined>;
  /**
   * Derives from the source's bytes: the sidecar's result and the files to write in a folder, or why not. A file's
   * content is its bytes, or a function that writes it to the path given (a file too large to hold in memory).
   */
  derive: (bytes: Uint8Array, source: string) => { result: T; files: (p: P) => [file: string, content: DerivedContent][] } | { reason: string };
}

/** The stored graphs derived from `modelPath`, derived and stored first when missing or stale; or why they cannot be. */
export async function prepareDerivedGraphs<T, P extends { sidecar: string }, R>(
  modelPath: string, opts: DerivedGraphOptions, spec: DerivedGraphSpec<T, P, R>,
): Promise<R | { reason: string }> {
  const source = path.resolve(modelPath);
  let st: fs.Stats;
  try {
    st = await stat(source);
  } catch (err) {
    return { reason: `the model file cannot be read (${err instanceof Error ? err.message : String(err)})` };
  }
  if (st.size > MAX_SINGLE_FILE) return { reason: `it is a single ONNX file of ${(st.size / 2 ** 30).toFixed(1)} GiB, over what Node can read; re-export it with external data` };
  const key = createHash('sha256').update(source).digest('hex').slice(0, 16);
  const sibling = spec.filesIn(path.dirname(source), source);
  const cached = spec.filesIn(path.join(cacheRoot(opts), spec.cacheFolder ?? 'vae-graphs', key), source);
  const places = opts.placement === 'cache' ? [cached] : [sibling, cached];
  const reuse = (side: DerivedSidecar<T>, p: P): Promise<R | { reason: string } | undefined> =>
    isReason(side.result) ? Promise.resolve({ reason: side.result.reason }) : spec.open(side as DerivedSidecar<T> & { result: T }, p);
  const sidecars = await Promise.all(places.map((p) => readSidecar<T>(p.sidecar, spec.format)));
  for (const [i, p] of places.entries()) {
    const side = sidecars[i];
    if (side && side.source === source && side.size === st.size && side.mtimeMs === st.mtimeMs) {
      const hit = await reuse(side, p);
      if (hit) return hit;
    }
  }
  // The same content under another path, size or mtime (a copy, a touch): reuse it and record the new stamp.
  const bytes = await readFile(source);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  for (const [i, p] of places.entries()) {
    const side = sidecars[i];
    if (side && side.sha256 === sha256) {
      const hit = await reuse(side, p);
      if (hit) {
        await writeAtomic(p.sidecar, JSON.stringify({ ...side, source, size: st.size, mtimeMs: st.mtimeMs }, null, 2)).catch(() => undefined);
        return hit;
      }
    }
  }
  const derived = spec.derive(bytes, source);
  const result = 'files' in derived ? derived.result : { reason: derived.reason };
  const failures: string[] = [];
  for (const p of places) {
    const side: DerivedSidecar<T> = { format: spec.format, source, size: st.size, mtimeMs: st.mtimeMs, sha256, result, externalDataFolder: p === sibling ? null : path.dirname(source) };
    try {
      await mkdir(path.dirname(p.sidecar), { recursive: true });
      if ('files' in derived) for (const [file, b] of derived.files(p)) await writeAtomic(file, b);
      await writeAtomic(p.sidecar, JSON.stringify(side, null, 2));
      const hit = await reuse(side, p);
      if (hit) return hit;
      failures.push(`${p.sidecar}: the written graphs are incomplete`);
    } catch (err) {
      failures.push(`${p.sidecar}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (isReason(result)) return result;
  return { reason: `the derived graphs could not be written (${failures.join('; ')}); make the model's folder or the cache folder writable (ASGD_CACHE_DIR)` };
}

function isReason(r: unknown): r is { reason: string } {
  return typeof r === 'object' && r !== null && 'reason' in r;
}

async function readSidecar<T>(file: string, format: number): Promise<DerivedSidecar<T> | undefined> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as DerivedSidecar<T>;
    return s.format === format ? s : undefined;
  } catch {
    return undefined;
  }
}
