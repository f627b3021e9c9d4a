/**
 * A float16 VAE export as a float32 graph (src/graph/float32-upcast.ts), for a VAE whose config sets
 * `force_upcast`, as diffusers runs it. Stored like the other derived graphs (derived-graphs.ts):
 * `<name>.asgd-float32.onnx` next to the source when its folder is writable, else in the cache. Unlike them it
 * holds its weights itself (float32 values, twice the float16 bytes): it reads nothing from the source's folder.
 * A float32 export is recorded as such in the sidecar, so later loads read only the sidecar.
 */
import fs from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { float32VaeFailedNote, float32VaeNote } from '../core/vae/upcast-note.ts';
import { ALREADY_FLOAT32, float32Model, type ExternalBytes } from '../graph/float32-upcast.ts';
import { modelParts } from '../graph/model-bytes.ts';
import { prepareDerivedGraphs, type DerivedGraphOptions, type DerivedSidecar } from './derived-graphs.ts';

export interface Float32Vae {
  file: string;
  /** float16 tensors converted (weights and constants). */
  tensors: number;
}

/** Bump when the conversion's output changes, so stored graphs are derived again. */
const FORMAT = 1;
/** One protobuf message (and one Node buffer) holds at most 2 GiB - 1. */
const MAX_SINGLE_FILE = 2 ** 31 - 1;

type Result = { tensors: number; bytes: number };

function filesIn(dir: string, source: string) {
  const base = path.basename(source).replace(/\.onnx$/i, '');
  return { file: path.join(dir, `${base}.asgd-float32.onnx`), sidecar: path.join(dir, `${base}.asgd-float32.json`) };
}

async function open(side: DerivedSidecar<Result> & { result: Result }, files: ReturnType<typeof filesIn>): Promise<Float32Vae | undefined> {
  const size = await stat(files.file).then((s) => s.size, () => -1);
  return size === side.result.bytes ? { file: files.file, tensors: side.result.tensors } : undefined;
}

/** Reads external tensors from files in the source's folder (never outside it, as ONNX Runtime requires). */
export function externalReader(source: string): ExternalBytes {
  const dir = path.dirname(source);
  return ({ location, offset, length }) => {
    const file = path.resolve(dir, location);
    const rel = path.relative(dir, file);
    if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) throw new Error(`external data ${location} is outside the model's folder`);
    const size = length ?? fs.statSync(file).size - offset;
    const out = new Uint8Array(size);
    const fd = fs.openSync(file, 'r');
    try {
      if (fs.readSync(fd, out, 0, size, offset) !== size) throw new Error(`external data ${location} ends before byte ${offset + size}`);
    } finally {
      fs.closeSync(fd);
    }
    return out;
  };
}

/**
 * The float32 graph of the float16 model at `modelPath`, derived and stored first when missing or stale; or why
 * there is none (`ALREADY_FLOAT32` for a model with no float16 tensor, else what failed).
 */
export async function prepareFloat32Vae(modelPath: string, opts: DerivedGraphOptions = {}): Promise<Float32Vae | { reason: string }> {
  const derive = (bytes: Uint8Array, source: string) => {
    const r = float32Model(bytes, externalReader(source));
    if ('reason' in r) return r;
    const parts = modelParts(r.model);
    const length = parts.reduce((n, p) => n + p.length, 0);
    if (length > MAX_SINGLE_FILE) return { reason: `in float32 it would be a single ONNX file of ${(length / 2 ** 30).toFixed(1)} GiB, over the 2 GiB of one protobuf message` };
    return { result: { tensors: r.tensors, bytes: length }, files: (p: ReturnType<typeof filesIn>): [string, Uint8Array[]][] => [[p.file, parts]] };
  };
  return prepareDerivedGraphs(modelPath, opts, { format: FORMAT, cacheFolder: 'float32-vae', filesIn, open, derive });
}

/** The VAE parts of a model spec that the conversion reads and replaces. */
interface VaeSpec {
  paths: { vaeDecoder: string; vaeEncoder?: string };
  vae: { forceUpcast: boolean };
  notes: string[];
}

/**
 * `spec` with its float16 VAE decoder and encoder replaced by their float32 graphs where the VAE's config sets
 * `force_upcast`, and a note for each; unchanged otherwise. Where one cannot be converted the note says why, and
 * the generation's check warns as before (a float16 decode may overflow).
 */
export async function withFloat32Vae<S extends VaeSpec>(spec: S, opts: DerivedGraphOptions = {}): Promise<S> {
  if (!spec.vae.forceUpcast) return spec;
  const paths = { ...spec.paths };
  const notes = [...spec.notes];
  for (const [key, name] of [['vaeDecoder', 'vae_decoder'], ['vaeEncoder', 'vae_encoder']] as const) {
    const source = paths[key];
    if (!source) continue;
    const r = await prepareFloat32Vae(source, opts);
    if ('file' in r) {
      paths[key] = r.file;
      notes.push(float32VaeNote(name, r.tensors, path.basename(r.file)));
    } else if (r.reason !== ALREADY_FLOAT32) {
      notes.push(float32VaeFailedNote(name, r.reason));
    }
  }
  return { ...spec, paths, notes };
}
