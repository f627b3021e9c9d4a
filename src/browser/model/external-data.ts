/**
 * Weights a model file of the folder keeps outside itself (ONNX external data, as optimum writes an export over 2 GB:
 * `unet/model.onnx` and `unet/model.onnx_data`): fetched beside it and handed to ONNX Runtime Web with the model
 * (`externalData`), since a page has no file system for the runtime to open them from.
 */
import { AsgdError } from '../../core/errors.ts';
import { externalDataFiles, externalDataFilesFrom, unsafeLocation, type ByteSource } from '../../graph/external-data.ts';
import type { FileSource } from './file-source.ts';
import type { PageExternalFile } from '../device/protocol.ts';

export type { PageExternalFile };

/** The folder part of a model file's path, with its trailing slash ("unet/" for "unet/model.onnx"). */
export function folderOf(file: string): string {
  return file.slice(0, file.lastIndexOf('/') + 1);
}

/**
 * The external-data files `file` names (none where it holds its weights itself, or where its bytes are no readable
 * model: ONNX Runtime then says what is wrong). A stored copy (a Blob) is read in windows, its weights skipped
 * (externalDataFilesFrom). A location outside the model's folder is refused.
 */
export async function externalLocations(file: string, model: Uint8Array | Blob): Promise<string[]> {
  let locations: string[];
  try {
    locations = model instanceof Blob ? (await externalDataFilesFrom(blobSource(model))).files : externalDataFiles(model);
  } catch {
    return [];
  }
  for (const location of locations) {
    const why = unsafeLocation(location);
    if (why) {
      throw new AsgdError(`${file} keeps weights where they cannot be fetched: ${why}`, {
        kind: 'model', parameter: file, expected: 'external-data locations relative to the model file, inside its folder', received: JSON.stringify(location),
        hint: 'Re-export the model (optimum writes model.onnx_data beside model.onnx)',
      });
    }
  }
  return locations;
}

/** A Blob's bytes by slices. */
function blobSource(blob: Blob): ByteSource {
  return { size: blob.size, read: async (offset, length) => new Uint8Array(await blob.slice(offset, offset + length).arrayBuffer()) };
}

/** Files larger than this, once kept in the storage, go to the workers as the stored copy (handOver). */
export const HAND_OVER_STORED = 64 << 20;

/**
 * Every external-data file `file` names: its stored copy as a Blob (the worker reads it), else downloaded: a large
 * one streamed into the storage as it arrives and handed over as the stored copy, never held by the page
 * (FileSource.fetchForWorker); otherwise read whole (and, once stored, handed over: handOver).
 */
export async function readExternalFiles(src: FileSource, file: string, model: Uint8Array | Blob, tooLargeHint?: string): Promise<PageExternalFile[]> {
  const out: PageExternalFile[] = [];
  for (const path of await externalLocations(file, model)) {
    const name = folderOf(file) + path;
    const stored = await src.storedBlob(name);
    if (stored) {
      out.push({ path, data: stored });
      continue;
    }
    const fetched = await src.fetchForWorker(name, HAND_OVER_STORED, tooLargeHint);
    out.push({ path, data: fetched instanceof Blob ? fetched : await handOver(src, name, fetched) });
  }
  return out;
}

/**
 * What the workers get for `bytes`, the file `name` as just downloaded or made: where it is large and was kept in the
 * storage, the stored copy (a Blob, which each worker reads), so that the page lets its own buffer go and the page and
 * a worker do not hold the file at once (a 3.4 GB export held twice: bench/web-large-unet.ts); else the bytes.
 */
export async function handOver(src: FileSource, name: string, bytes: Uint8Array): Promise<Uint8Array | Blob> {
  return (bytes.length > HAND_OVER_STORED ? await src.keptBlob(name) : undefined) ?? bytes;
}

/**
 * A model file for the workers: where it is larger than HAND_OVER_STORED and storing is on, its stored copy as a Blob
 * (read from the storage, or streamed into it as it downloads), which each worker reads, so that the page never holds
 * it (an SD 1.5 float16 UNet is one file of 1.7 GB); otherwise its bytes, as `get` gives them.
 */
export async function readModelFile(src: FileSource, file: string): Promise<Uint8Array | Blob> {
  const length = await src.storedLength(file);
  const stored = length !== undefined && length > HAND_OVER_STORED ? await src.storedBlob(file) : undefined;
  if (stored) return stored;
  // A smaller stored copy is read into the page (and one that cannot be read, downloaded again), as `get` does.
  if (length !== undefined) return (await src.get(file))!;
  const fetched = await src.fetchForWorker(file, HAND_OVER_STORED);
  return fetched instanceof Blob ? fetched : handOver(src, file, fetched);
}
