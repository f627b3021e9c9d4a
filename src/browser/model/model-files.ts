/**
 * Model files by URL: downloaded with progress and kept in the browser's Cache Storage, so a second visit reads
 * them from disk and makes no request. Only complete, successful downloads are stored.
 */
import { AsgdError } from '../../core/errors.ts';

/** The Cache Storage cache the model files are kept in (bump the suffix to drop every stored file). */
export const MODEL_CACHE = 'asgdiffusion-models-v1';

/** Marks a stored answer for an optional file the server does not have. */
const MISSING_HEADER = 'x-asgdiffusion-missing';

export interface FileProgress {
  /** The file's path inside the model folder, e.g. "unet/model.onnx". */
  file: string;
  loaded: number;
  /** From Content-Length; undefined when the server does not say. */
  total?: number;
  /** Read from the browser's storage instead of the network. */
  fromStore: boolean;
}

export interface FileSource {
  /** The file's bytes, or undefined when `optional` and the server answers 404. */
  get(file: string, optional?: boolean): Promise<Uint8Array | undefined>;
}

export interface FileSourceOptions {
  /** Keep files in Cache Storage (default true; ignored where the page has no Cache Storage, e.g. plain http). */
  store?: boolean;
  onProgress?: (p: FileProgress) => void;
  signal?: AbortSignal;
  fetch?: typeof fetch;
}

/** The model folder URL with a trailing slash, resolved against the page. */
export function folderUrl(url: string | URL): string {
  const base = typeof location !== 'undefined' ? location.href : undefined;
  let u: URL;
  try {
    u = new URL(String(url), base);
  } catch (err) {
    throw new AsgdError('Invalid model URL', { kind: 'invalid-argument', parameter: 'model', expected: 'a URL of a model folder', received: JSON.stringify(String(url)), cause: err });
  }
  if (!u.pathname.endsWith('/')) u.pathname += '/';
  return u.href;
}

async function openStore(wanted: boolean): Promise<Cache | undefined> {
  if (!wanted || typeof caches === 'undefined') return undefined;
  try {
    return await caches.open(MODEL_CACHE);
  } catch {
    return undefined;
  }
}

async function readBody(res: Response, report: (loaded: number) => void, signal?: AbortSignal): Promise<Uint8Array> {
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let loaded = 0;
  for (;;) {
    if (signal?.aborted) {
      await reader.cancel();
      throw new AsgdError('Model download cancelled', { kind: 'cancelled' });
    }
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    loaded += value.length;
    report(loaded);
  }
  const out = new Uint8Array(loaded);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Files of the model folder at `base` (a URL ending in "/"). */
export async function modelFileSource(base: string, opts: FileSourceOptions = {}): Promise<FileSource> {
  const store = await openStore(opts.store ?? true);
  const doFetch = opts.fetch ?? fetch.bind(globalThis);
  return {
    async get(file, optional = false) {
      const url = new URL(file, base).href;
      const stored = await store?.match(url);
      if (stored) {
        if (stored.headers.get(MISSING_HEADER)) return undefined;
        const bytes = new Uint8Array(await stored.arrayBuffer());
        opts.onProgress?.({ file, loaded: bytes.length, total: bytes.length, fromStore: true });
        return bytes;
      }
      let res: Response;
      try {
        res = await doFetch(url, { signal: opts.signal });
      } catch (err) {
        if (opts.signal?.aborted) throw new AsgdError('Model download cancelled', { kind: 'cancelled' });
        throw new AsgdError(`Cannot download ${file}`, { kind: 'model', parameter: 'model', expected: `a reachable file at ${url}`, received: err instanceof Error ? err.message : String(err), hint: 'Check the model URL and that the host allows this origin (CORS)', cause: err });
      }
      if (res.status === 404 && optional) {
        // Remembered, so that a stored model makes no request at all.
        await store?.put(url, new Response(null, { headers: { [MISSING_HEADER]: '1' } })).catch(() => undefined);
        return undefined;
      }
      if (!res.ok) {
        throw new AsgdError(`Cannot download ${file}`, { kind: 'model', parameter: 'model', expected: `HTTP 200 from ${url}`, received: `HTTP ${res.status}`, hint: 'Check the model URL: it must point at an optimum ONNX export folder' });
      }
      const length = Number(res.headers.get('content-length'));
      const total = Number.isFinite(length) && length > 0 && !res.headers.get('content-encoding') ? length : undefined;
      opts.onProgress?.({ file, loaded: 0, total, fromStore: false });
      const bytes = await readBody(res, (loaded) => opts.onProgress?.({ file, loaded, total, fromStore: false }), opts.signal);
      if (store) {
        const type = res.headers.get('content-type') ?? 'application/octet-stream';
        await store.put(url, new Response(new Blob([bytes as Uint8Array<ArrayBuffer>]), { headers: { 'content-type': type, 'content-length': String(bytes.length) } })).catch(() => undefined);
      }
      return bytes;
    },
  };
}

/** Removes the stored files of the model at `url` (every stored model when `url` is undefined). */
export async function clearStoredModel(url?: string | URL): Promise<number> {
  if (typeof caches === 'undefined') return 0;
  if (url === undefined) return (await caches.delete(MODEL_CACHE)) ? 1 : 0;
  const base = folderUrl(url);
  const cache = await caches.open(MODEL_CACHE);
  let n = 0;
  for (const req of await cache.keys()) {
    if (req.url.startsWith(base) && (await cache.delete(req))) n++;
  }
  return n;
}
