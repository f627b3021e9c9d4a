/**
 * What the browser pipeline reads model files through (FileSource; model-files.ts gives the one over HTTP and Cache
 * Storage), and reading a file again where its stored copy proves unusable. Uses no DOM API, so that readers built
 * on it (web-model.ts) run in Node's tests too.
 */

/** One file's download progress (LoadProgress's 'download' phase). */
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
  /**
   * The file's bytes, or undefined when `optional` and the server answers 404. A file too large for this browser to
   * hold fails before its download with an error whose hint is `tooLargeHint` (where given).
   */
  get(file: string, optional?: boolean, tooLargeHint?: string): Promise<Uint8Array | undefined>;
  /** The file's stored copy, without any request; undefined where none is stored. */
  stored(file: string): Promise<Uint8Array | undefined>;
  /**
   * The file's stored copy as a Blob, its bytes not read (a worker reads them, off the page's main thread); undefined
   * where none is stored.
   */
  storedBlob(file: string): Promise<Blob | undefined>;
  /** The length of the file's stored copy, without reading it; undefined where none is stored. */
  storedLength(file: string): Promise<number | undefined>;
  /**
   * A stream into the storage for `file`, `length` bytes made as they are written (a conversion), where storing is on
   * and the storage says it has room for them; undefined otherwise. Nothing is kept unless the stream ends whole.
   */
  keepStreamed(file: string, length: number, type?: string): Promise<StoreStream | undefined>;
  /**
   * Downloads `file` (no stored copy is read) for the workers to read: where it is larger than `streamAbove` bytes (by
   * its Content-Length), storing is on and the storage says it has room, the server's answer streams into the storage
   * as it arrives, the page holding one chunk at a time, and the stored copy comes back as a Blob; else the bytes, read
   * into the page and stored as `get` does. A file too large for this browser to hold fails as `get` says; a `.onnx`
   * file that is plainly not one (not protobuf) is refused as `get` refuses it, and not kept.
   */
  fetchForWorker(file: string, streamAbove: number, tooLargeHint?: string): Promise<Uint8Array | Blob>;
  /**
   * The copy of `file` that this source kept in the storage during this load (downloaded, or given to `keep`), as a
   * Blob, its bytes not read: so that a worker reads the file and the page can let its own buffer go. Undefined where
   * it was not kept (storing off or refused). Not counted as read from the storage (`isStored`).
   */
  keptBlob(file: string): Promise<Blob | undefined>;
  /**
   * Stores `bytes` as `file` (e.g. a graph derived from the model's files), where storing is on; whether it was stored
   * (the browser may refuse: its quota).
   */
  keep(file: string, bytes: Uint8Array, type?: string): Promise<boolean>;
  /**
   * Reads the file chunk by chunk into `sink` (its stored copy where there is one, else the server's answer, which is
   * not stored: for a file too large to hold, read once into what is made of it); the bytes read.
   */
  stream(file: string, sink: (chunk: Uint8Array) => void | Promise<void>): Promise<number>;
  /** Whether the bytes `get` last gave for `file` came from the browser's storage. */
  isStored(file: string): boolean;
  /** Removes the stored copy of `file` (found unusable) and downloads it again. */
  reload(file: string, optional?: boolean): Promise<Uint8Array | undefined>;
  /** Removes the stored copy of `file`, so that the next load downloads it. */
  forget(file: string): Promise<void>;
}

/** A file written into the storage as it is made (FileSource.keepStreamed). */
export interface StoreStream {
  /** Queues the next bytes (they are the storage's from then on: not to be changed). */
  write(bytes: Uint8Array): void;
  /** Waits while the storage is behind; false once it has refused the file (write then drops the bytes). */
  ready(): Promise<boolean>;
  /** Ends the file: whether the storage kept it whole. */
  close(): Promise<boolean>;
  /** Gives up the file: nothing is kept. */
  abort(): Promise<void>;
}

/**
 * Reads `file` and makes it into T with `use` (which throws when the bytes are not what was expected), downloading
 * it once again where a stored copy proves unusable (storedCopyRetry).
 */
export async function readFileWith<T>(src: FileSource, file: string, optional: boolean, use: (bytes: Uint8Array) => T | Promise<T>): Promise<T | undefined> {
  const bytes = await src.get(file, optional);
  if (!bytes) return undefined;
  return storedCopyRetry(src, file, bytes, optional)(use);
}

/**
 * Files read with a model file and used with it (its external weights, ONNX external data): where the model fails to
 * load, their stored copies are as suspect as its own, so storedCopyRetry removes and reads them again with it.
 */
export interface CompanionFiles {
  /** Their paths in the folder, as last read. */
  paths(): readonly string[];
  /** Reads them again (their stored copies have just been removed, so they are downloaded). */
  reread(): Promise<void>;
}

/**
 * Uses `file`'s bytes as first read (`first`), so that one bad answer of a server, stored, does not break the URL for
 * good: where `use` throws an error that `unusable` accepts (any, by default), and the file or one of its `companions`
 * came from the browser's storage, their stored copies are removed and downloaded once (one download for every use of
 * the returned function, e.g. the same model loaded on several devices at once; `onFresh` is given the file's bytes
 * before the companions are read again) and `use` runs on that; a download that `use` refuses is removed from the
 * storage, with its companions, so that the next load downloads them.
 */
export function storedCopyRetry<B extends Uint8Array | Blob>(src: FileSource, file: string, first: B, optional = false, onFresh?: (bytes: Uint8Array) => void, companions?: CompanionFiles) {
  const others = () => companions?.paths() ?? [];
  const wasStored = src.isStored(file) || others().some((p) => src.isStored(p));
  const forgetAll = async () => {
    await src.forget(file);
    for (const p of others()) await src.forget(p);
  };
  let fresh: Promise<Uint8Array | undefined> | undefined;
  // A file used as its stored copy (a Blob) comes back downloaded, as bytes.
  return async <T>(use: (bytes: B | Uint8Array) => T | Promise<T>, unusable: (err: unknown) => boolean = () => true): Promise<T | undefined> => {
    try {
      return await use(first);
    } catch (err) {
      if (!unusable(err)) throw err;
      if (!wasStored) {
        await forgetAll();
        throw err;
      }
    }
    fresh ??= src.reload(file, optional).then(async (b) => {
      if (!b) return b;
      onFresh?.(b);
      if (companions) {
        for (const p of others()) await src.forget(p);
        await companions.reread();
      }
      return b;
    });
    const bytes = await fresh;
    if (!bytes) return undefined;
    try {
      return await use(bytes);
    } catch (err) {
      if (unusable(err)) await forgetAll();
      throw err;
    }
  };
}
