/**
 * Model files by URL: downloaded with progress and kept in the browser's Cache Storage, so a second visit reads
 * them from disk and makes no request. Only complete, successful downloads that look like the file asked for are
 * stored, and a stored file that turns out unusable is downloaded again (readFileWith, file-source.ts).
 */
import { AsgdError } from '../../core/errors.ts';
import type { FileProgress, FileSource } from './file-source.ts';

/** The Cache Storage cache the model files are kept in (bump the suffix to drop every stored file). */
export const MODEL_CACHE = 'asgdiffusion-models-v1';

/** Marks a stored answer for an optional file the server does not have; its value is when it was asked (ms). */
const MISSING_HEADER = 'x-asgdiffusion-missing';
/**
 * How long a stored "missing" stands before the server is asked again: a stored model makes no request within a
 * day, and a file added to the folder later (a config the export lacked) is found within a day, without
 * clearStoredModel.
 */
export const MISSING_RECHECK_MS = 24 * 3600 * 1000;

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

function downloadCancelled(): AsgdError {
  return new AsgdError('Model download cancelled', { kind: 'cancelled' });
}

/** What a download cut off became: cancelled (the signal), the AsgdError it already is, or one naming the file. */
function downloadFailed(err: unknown, file: string, url: string, signal?: AbortSignal): AsgdError {
  if (signal?.aborted) return downloadCancelled();
  if (err instanceof AsgdError) return err;
  return new AsgdError(`Cannot download ${file}`, { kind: 'model', parameter: 'model', expected: `the whole file from ${url}`, received: err instanceof Error ? err.message : String(err), hint: 'Check the connection and load again', cause: err });
}

/** A download whose length is not the one its server announced. */
function lengthMismatch(file: string, url: string, total: number, received: string): AsgdError {
  return new AsgdError(`Cannot download ${file}`, { kind: 'model', parameter: 'model', expected: `${total} bytes from ${url} (its Content-Length)`, received, hint: received === 'more' ? 'Check the server' : 'Check the connection and load again' });
}

/**
 * Reads the body chunk by chunk into `sink`, reporting the bytes read so far; a download cut off (the signal, the
 * network) rejects the pending read, not the fetch, and becomes an AsgdError naming the file.
 */
async function readChunks(res: Response, file: string, url: string, sink: (chunk: Uint8Array) => void | Promise<void>, report: (loaded: number) => void, signal?: AbortSignal): Promise<number> {
  const failed = (err: unknown) => downloadFailed(err, file, url, signal);
  if (!res.body) {
    let bytes: Uint8Array;
    try {
      bytes = new Uint8Array(await res.arrayBuffer());
    } catch (err) {
      throw failed(err);
    }
    await sink(bytes);
    report(bytes.length);
    return bytes.length;
  }
  const reader = res.body.getReader();
  let loaded = 0;
  let inSink = false;
  try {
    for (;;) {
      if (signal?.aborted) throw downloadCancelled();
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        throw failed(err);
      }
      if (chunk.done) break;
      inSink = true;
      await sink(chunk.value);
      inSink = false;
      loaded += chunk.value.length;
      report(loaded);
    }
  } catch (err) {
    await reader.cancel().catch(() => undefined);
    // What the sink throws is its own error, not the download's (unless the load was cancelled meanwhile).
    throw inSink && !signal?.aborted ? err : failed(err);
  }
  return loaded;
}

/** The error for a file larger than this browser can allocate one buffer for; `hint` says what to do instead. */
export function tooLargeError(file: string, bytes: number, hint?: string, cause?: unknown): AsgdError {
  return new AsgdError(`${file} is too large to load in this browser`, {
    kind: 'model', parameter: file, expected: 'a file this browser can hold in memory at once', received: `${bytes} bytes`,
    hint: hint ?? 'Use a float16 export of the model, or the Node API', cause,
  });
}

/**
 * The whole body. Where the server gives its length, the buffer is allocated first, so a file too large for this
 * browser fails before it is downloaded, and the bytes are not copied twice.
 */
async function readBody(res: Response, file: string, url: string, total: number | undefined, report: (loaded: number) => void, signal?: AbortSignal, tooLargeHint?: string): Promise<Uint8Array> {
  if (total !== undefined) {
    let out: Uint8Array;
    try {
      out = new Uint8Array(total);
    } catch (err) {
      await res.body?.cancel().catch(() => undefined);
      throw tooLargeError(file, total, tooLargeHint, err);
    }
    let at = 0;
    await readChunks(res, file, url, (c) => {
      if (at + c.length > total) throw lengthMismatch(file, url, total, 'more');
      out.set(c, at);
      at += c.length;
    }, report, signal);
    if (at !== total) throw lengthMismatch(file, url, total, `${at} bytes`);
    return out;
  }
  const parts: Uint8Array[] = [];
  const loaded = await readChunks(res, file, url, (c) => void parts.push(c), report, signal);
  let out: Uint8Array;
  try {
    out = new Uint8Array(loaded);
  } catch (err) {
    throw tooLargeError(file, loaded, tooLargeHint, err);
  }
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Bytes handed to Cache Storage in chunks of this size. */
const STORE_CHUNK = 16 << 20;

/**
 * `bytes` as a stream of STORE_CHUNK pieces: Chromium's Cache Storage refuses a Blob body of 600 MB ("Unexpected
 * internal error"; 100 MB passes), but stores a streamed body of 1.8 GB (measured in Debian's Chromium 156).
 */
function chunked(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (at >= bytes.length) return ctl.close();
      ctl.enqueue(bytes.slice(at, at + STORE_CHUNK));
      at += STORE_CHUNK;
    },
  });
}

/** Room the storage must have beyond a file streamed into it (its entry's own records, other writes meanwhile). */
const STORE_MARGIN = 64 << 20;

/**
 * Whether this browser's storage says it has room for `bytes` more (navigator.storage.estimate); false where it does
 * not say. A private window's storage is small (held in memory), so a large file is not streamed into it only to be
 * refused at the end and downloaded again.
 */
async function storageHasRoom(bytes: number): Promise<boolean> {
  const storage = typeof navigator !== 'undefined' ? navigator.storage : undefined;
  if (typeof storage?.estimate !== 'function') return false;
  try {
    const { quota, usage } = await storage.estimate();
    return quota !== undefined && quota - (usage ?? 0) >= bytes + STORE_MARGIN;
  } catch {
    return false;
  }
}

/**
 * The server's answer `res` (its length `total` announced) as a stream that Cache Storage reads as it writes, one
 * chunk at a time (pulled, so a slow disk slows the download rather than piling chunks up in the page). A cut-off or
 * mis-sized download errors the stream; `failure()` then says why, so that the caller tells it from the storage
 * refusing the file.
 */
function countedBody(res: Response, file: string, url: string, total: number, report: (loaded: number) => void, signal?: AbortSignal) {
  const reader = res.body!.getReader();
  let loaded = 0;
  let failure: AsgdError | undefined;
  const fail = (err: AsgdError) => {
    failure = err;
    throw err;
  };
  const body = new ReadableStream<Uint8Array>({
    async pull(ctl) {
      if (signal?.aborted) fail(downloadCancelled());
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (err) {
        return fail(downloadFailed(err, file, url, signal));
      }
      if (chunk.done) {
        if (loaded !== total) fail(lengthMismatch(file, url, total, `${loaded} bytes`));
        return ctl.close();
      }
      loaded += chunk.value.length;
      if (loaded > total) fail(lengthMismatch(file, url, total, 'more'));
      ctl.enqueue(chunk.value);
      report(loaded);
    },
    cancel: (reason) => reader.cancel(reason),
  });
  return { body, failure: () => failure, cancel: () => reader.cancel().catch(() => undefined) };
}

/** Whether the bytes can start a protobuf message (an ONNX model): a valid wire type and a field number. */
function protobufStart(bytes: Uint8Array): boolean {
  const b = bytes[0];
  return b !== undefined && b >> 3 > 0 && [0, 1, 2, 5].includes(b & 7);
}

/** Refuses a web page answered for a model file, by its type, before its body is read (and before it is stored). */
function refuseWebPage(file: string, url: string, type: string | null): void {
  if (type && /^\s*text\/html\b/i.test(type) && !/\.html?$/i.test(file)) {
    throw new AsgdError(`Cannot download ${file}: the server answered a web page`, {
      kind: 'model', parameter: 'model', expected: `the model file at ${url}`, received: `an HTML page (Content-Type ${type})`,
      hint: 'Check the model URL; a maintenance page or a single-page app that answers every path is not a model folder',
    });
  }
}

/** Refuses an ONNX file that is plainly not one (not protobuf), before it is stored. */
function refuseNonOnnx(file: string, url: string, bytes: Uint8Array, length = bytes.length): void {
  if (file.endsWith('.onnx') && !protobufStart(bytes)) {
    const head = Array.from(bytes.subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new AsgdError(`${file} is not an ONNX model`, {
      kind: 'model', parameter: file, expected: `an ONNX model (protobuf) at ${url}`, received: length ? `${length} bytes starting ${head}` : 'an empty file',
      hint: 'Check the model URL and the file on the server',
    });
  }
}

/** Files of the model folder at `base` (a URL ending in "/"). */
export async function modelFileSource(base: string, opts: FileSourceOptions = {}): Promise<FileSource> {
  const store = await openStore(opts.store ?? true);
  const doFetch = opts.fetch ?? fetch.bind(globalThis);
  const fromStore = new Set<string>();
  /** Files this source put into the storage during this load. */
  const kept = new Set<string>();
  const urlOf = (file: string) => new URL(file, base).href;

  const forget = async (file: string): Promise<void> => {
    fromStore.delete(file);
    kept.delete(file);
    try {
      await store?.delete(urlOf(file));
    } catch (err) {
      throw new AsgdError(`Cannot remove ${file} from this browser's storage`, {
        kind: 'model', parameter: 'store', received: err instanceof Error ? err.message : String(err), hint: `Call clearStoredModel(${JSON.stringify(base)}), or load with store: false`, cause: err,
      });
    }
  };

  /** The server's answer for `file` and its length where known; undefined for an optional file it does not have. */
  const request = async (file: string, optional: boolean) => {
    const url = urlOf(file);
    fromStore.delete(file);
    let res: Response;
    try {
      res = await doFetch(url, { signal: opts.signal });
    } catch (err) {
      if (opts.signal?.aborted) throw downloadCancelled();
      throw new AsgdError(`Cannot download ${file}`, { kind: 'model', parameter: 'model', expected: `a reachable file at ${url}`, received: err instanceof Error ? err.message : String(err), hint: 'Check the model URL and that the host allows this origin (CORS)', cause: err });
    }
    if (res.status === 404 && optional) {
      // Remembered with its time, so that a stored model makes no request at all within MISSING_RECHECK_MS.
      await store?.put(url, new Response(null, { headers: { [MISSING_HEADER]: String(Date.now()) } })).catch(() => undefined);
      return undefined;
    }
    if (!res.ok) {
      throw new AsgdError(`Cannot download ${file}`, { kind: 'model', parameter: 'model', expected: `HTTP 200 from ${url}`, received: `HTTP ${res.status}`, hint: 'Check the model URL: it must point at an optimum ONNX export folder' });
    }
    const type = res.headers.get('content-type');
    const length = Number(res.headers.get('content-length'));
    const total = Number.isFinite(length) && length > 0 && !res.headers.get('content-encoding') ? length : undefined;
    opts.onProgress?.({ file, loaded: 0, total, fromStore: false });
    return { res, url, type, total, report: (loaded: number) => opts.onProgress?.({ file, loaded, total, fromStore: false }) };
  };

  const keep = async (file: string, bytes: Uint8Array, type = 'application/octet-stream'): Promise<boolean> => {
    if (!store) return false;
    kept.delete(file);
    const ok = await store.put(urlOf(file), new Response(chunked(bytes), { headers: { 'content-type': type, 'content-length': String(bytes.length) } })).then(() => true, () => false);
    if (ok) kept.add(file);
    return ok;
  };

  type Answer = NonNullable<Awaited<ReturnType<typeof request>>>;

  /** The answer's bytes, read into the page, checked and stored where storing is on. */
  const readAndKeep = async (file: string, r: Answer, tooLargeHint?: string): Promise<Uint8Array> => {
    const bytes = await readBody(r.res, file, r.url, r.total, r.report, opts.signal, tooLargeHint);
    refuseNonOnnx(file, r.url, bytes);
    await keep(file, bytes, r.type ?? undefined);
    return bytes;
  };

  const download = async (file: string, optional: boolean, tooLargeHint?: string): Promise<Uint8Array | undefined> => {
    const r = await request(file, optional);
    if (!r) return undefined;
    refuseWebPage(file, r.url, r.type);
    return readAndKeep(file, r, tooLargeHint);
  };

  /**
   * The answer streamed into the storage as it arrives (the page never holds the file), and the stored copy as a
   * Blob; undefined where the storage refused it (nothing is kept then). A download cut off rejects, as `get` does.
   */
  const streamIntoStore = async (file: string, r: Answer & { total: number }): Promise<Blob | undefined> => {
    const counted = countedBody(r.res, file, r.url, r.total, r.report, opts.signal);
    kept.delete(file);
    const headers = { 'content-type': r.type ?? 'application/octet-stream', 'content-length': String(r.total) };
    const stored = await store!.put(r.url, new Response(counted.body, { headers })).then(() => true, () => false);
    const failure = counted.failure() ?? (opts.signal?.aborted ? downloadCancelled() : undefined);
    if (failure) throw failure;
    if (!stored) {
      await counted.cancel();
      return undefined;
    }
    kept.add(file);
    const blob = await (await store!.match(r.url).catch(() => undefined))?.blob().catch(() => undefined);
    if (blob?.size === r.total) return blob;
    await forget(file);
    return undefined;
  };

  /** The stored answer for `file`: its bytes, 'missing' (an optional file the server lacked, asked within a day), or undefined. */
  const storedAnswer = async (file: string, optional: boolean): Promise<Response | 'missing' | undefined> => {
    const stored = await store?.match(urlOf(file)).catch(() => undefined);
    if (!stored) return undefined;
    const missingSince = stored.headers.get(MISSING_HEADER);
    // Asked again once the answer is a day old (or from before it was dated: "1"), and where the file is not optional.
    if (missingSince) return optional && Date.now() - Number(missingSince) < MISSING_RECHECK_MS ? 'missing' : undefined;
    return stored;
  };

  const storedBytes = async (file: string, stored: Response): Promise<Uint8Array | undefined> => {
    // Chunk by chunk into one buffer, as a download: Chromium's arrayBuffer() of a 1.7 GB stored body held the page's
    // main thread for seconds at a time (bench/web-large-unet.ts). A stored answer that cannot be read is fetched again.
    const length = Number(stored.headers.get('content-length'));
    const total = Number.isFinite(length) && length > 0 ? length : undefined;
    const report = (loaded: number) => opts.onProgress?.({ file, loaded, total: total ?? loaded, fromStore: true });
    const bytes = await readBody(stored, file, urlOf(file), total, report, opts.signal).catch((err: unknown) => {
      if (err instanceof AsgdError && err.kind === 'cancelled') throw err;
      return undefined;
    });
    if (bytes) fromStore.add(file);
    return bytes;
  };

  const source: FileSource = {
    async get(file, optional = false, tooLargeHint) {
      const stored = await storedAnswer(file, optional);
      if (stored === 'missing') return undefined;
      if (stored) {
        const bytes = await storedBytes(file, stored);
        if (bytes) return bytes;
      }
      return download(file, optional, tooLargeHint);
    },
    async stored(file) {
      const stored = await storedAnswer(file, false);
      return stored && stored !== 'missing' ? storedBytes(file, stored) : undefined;
    },
    async storedLength(file) {
      const stored = await storedAnswer(file, false);
      // Every stored answer carries its length (keep, streamIntoStore).
      return stored && stored !== 'missing' ? Number(stored.headers.get('content-length')) : undefined;
    },
    async storedBlob(file) {
      const stored = await storedAnswer(file, false);
      if (!stored || stored === 'missing') return undefined;
      const blob = await stored.blob().catch(() => undefined);
      if (blob) {
        fromStore.add(file);
        opts.onProgress?.({ file, loaded: blob.size, total: blob.size, fromStore: true });
      }
      return blob;
    },
    async keepStreamed(file, length, type = 'application/octet-stream') {
      if (!store || !(await storageHasRoom(length))) return undefined;
      kept.delete(file);
      const pipe = new TransformStream<Uint8Array, Uint8Array>();
      const writer = pipe.writable.getWriter();
      let refused = false;
      const headers = { 'content-type': type, 'content-length': String(length) };
      const put = store.put(urlOf(file), new Response(pipe.readable, { headers })).then(() => true, () => ((refused = true), false));
      const ready = async () => !refused && (await writer.ready.then(() => !refused, () => ((refused = true), false)));
      return {
        write: (bytes) => void (refused || writer.write(bytes).catch(() => void (refused = true))),
        ready,
        async close() {
          if (!refused) await writer.close().catch(() => undefined);
          const ok = await put;
          if (ok) kept.add(file);
          return ok;
        },
        async abort() {
          await writer.abort(new Error('abandoned')).catch(() => undefined);
          await put;
        },
      };
    },
    async fetchForWorker(file, streamAbove, tooLargeHint) {
      let r = (await request(file, false))!;
      refuseWebPage(file, r.url, r.type);
      const total = r.total;
      if (store && r.res.body && total !== undefined && total > streamAbove && (await storageHasRoom(total))) {
        const blob = await streamIntoStore(file, { ...r, total });
        if (blob) {
          // An ONNX file that is plainly not one is refused as `get` refuses it, and not kept.
          if (file.endsWith('.onnx')) {
            const head = new Uint8Array(await blob.slice(0, 8).arrayBuffer());
            if (!protobufStart(head)) {
              await forget(file);
              refuseNonOnnx(file, r.url, head, total);
            }
          }
          return blob;
        }
        // Refused by the storage after all (its room was overstated): downloaded again, into the page.
        r = (await request(file, false))!;
        refuseWebPage(file, r.url, r.type);
      }
      return readAndKeep(file, r, tooLargeHint);
    },
    async keptBlob(file) {
      if (!kept.has(file)) return undefined;
      const stored = await store?.match(urlOf(file)).catch(() => undefined);
      return stored?.blob().catch(() => undefined);
    },
    keep,
    async stream(file, sink) {
      const stored = await storedAnswer(file, false);
      if (stored && stored !== 'missing' && stored.body) {
        fromStore.add(file);
        const length = Number(stored.headers.get('content-length'));
        const total = Number.isFinite(length) && length > 0 ? length : undefined;
        return readChunks(stored, file, urlOf(file), sink, (loaded) => opts.onProgress?.({ file, loaded, total, fromStore: true }), opts.signal);
      }
      const r = (await request(file, false))!;
      refuseWebPage(file, r.url, r.type);
      return readChunks(r.res, file, r.url, sink, r.report, opts.signal);
    },
    isStored: (file) => fromStore.has(file),
    async reload(file, optional = false) {
      await forget(file);
      try {
        return await download(file, optional);
      } catch (err) {
        if (!(err instanceof AsgdError) || err.kind === 'cancelled') throw err;
        throw new AsgdError(`${err.summary} (its copy in this browser's storage could not be used and was removed)`, {
          kind: err.kind, parameter: err.parameter, expected: err.expected, received: err.received,
          hint: `${err.hint ? `${err.hint}. ` : ''}clearStoredModel(${JSON.stringify(base)}) removes the model's other stored files`, cause: err,
        });
      }
    },
    forget,
  };
  return source;
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
