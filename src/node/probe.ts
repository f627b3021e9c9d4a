/**
 * Prepares the attention-probe UNet file (see src/graph/attention-probe.ts) for a UNet on disk, and says how to load it.
 *
 * Storage: the probe never copies weights. Initializers the source keeps as external data keep their relative
 * `location`; initializers stored inline in a single-file model.onnx become external references to their bytes
 * inside that model.onnx (ONNX Runtime reads external data at any byte offset). The probe is therefore small.
 *
 * Placement: next to the source (`model.asgd-probe.onnx` in the same folder) when that folder is writable, so
 * ONNX Runtime resolves the relative locations as for the source. Otherwise in a cache folder; onnxruntime-node
 * 1.30 and 1.31 refuse external data given by an absolute path, a `..` path or a symlink leaving the model's folder
 * ("External data path ... escapes model directory"), so a cached probe is loaded from bytes with the session
 * config entry `session.model_external_initializers_file_folder_path` set to the source folder; the sidecar JSON
 * (`model.asgd-probe.json`) records that folder for the worker (probeLoadOptions).
 *
 * Caching: the sidecar records the source's size, mtime and SHA-256; the probe is rebuilt only when the source's
 * content (or the surgery's format, or the requested layers) changes. Files are written atomically (rename).
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, StringStringEntryProtoSchema, type ModelProto } from 'onnx-buf';
import { AsgdError } from '../core/errors.ts';
import { MASK_OFF_HINT, addAttentionProbe } from '../graph/attention-probe.ts';
import { addJointAttentionProbe, isJointTransformer } from '../graph/joint-attention-probe.ts';

export interface AttentionProbeOptions {
  /** Restrict the probe to these attn2 layers (default: every up-block attn2 layer found). */
  layers?: string[];
  /** Cache root (default: $ASGD_CACHE_DIR, else $XDG_CACHE_HOME/asgdiffusion, else ~/.cache/asgdiffusion). */
  cacheDir?: string;
  /** 'auto' (default): next to the UNet when its folder is writable, else the cache; 'cache': always the cache. */
  placement?: 'auto' | 'cache';
}

export type AttentionProbe = { file: string; layers: string[] } | { reason: string };

/** How the worker must open a probe file. */
export interface ProbeLoad {
  /** Folder holding the external data (set when the probe does not sit next to the source UNet). */
  externalDataFolder?: string;
}

/** A probe graph's file name ends so (probePaths). */
const PROBE_SUFFIX = /\.asgd-probe\.onnx$/i;
/** Bump when the surgery's output changes, so cached probes are rebuilt. */
const PROBE_FORMAT = 3;
/** One Node buffer (and one protobuf message) holds at most 2 GiB - 1. */
const MAX_SINGLE_FILE = 2 ** 31 - 1;
/** Inline initializers at least this large become references into the source file. */
const EXTERNALIZE_BYTES = 1024;
const EXTERNAL = 1; // TensorProto.DataLocation.EXTERNAL

interface Sidecar {
  format: number;
  source: string;
  size: number;
  mtimeMs: number;
  sha256: string;
  layersRequested: string[] | null;
  result: { layers: string[]; probeBytes: number } | { reason: string };
  externalDataFolder: string | null;
}

function probePaths(dir: string, source: string): { file: string; sidecar: string } {
  const base = path.basename(source).replace(/\.onnx$/i, '');
  return { file: path.join(dir, `${base}.asgd-probe.onnx`), sidecar: path.join(dir, `${base}.asgd-probe.json`) };
}

export function cacheRoot(opts: AttentionProbeOptions): string {
  if (opts.cacheDir) return opts.cacheDir;
  if (process.env.ASGD_CACHE_DIR) return process.env.ASGD_CACHE_DIR;
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'asgdiffusion');
}

function cacheFolder(opts: AttentionProbeOptions, source: string): string {
  const key = createHash('sha256').update(source).digest('hex').slice(0, 16);
  return path.join(cacheRoot(opts), 'attention-probes', key);
}

async function readSidecar(file: string): Promise<Sidecar | undefined> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as Sidecar;
    return s.format === PROBE_FORMAT ? s : undefined;
  } catch {
    return undefined;
  }
}

export async function writeAtomic(file: string, data: Uint8Array | string | readonly Uint8Array[] | ((tmp: string) => Promise<void>)): Promise<void> {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    if (typeof data === 'function') await data(tmp);
    else await writeFile(tmp, data);
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

/** A sidecar's result, if it answers for this source and request (and its probe file is still there). */
async function usable(side: Sidecar | undefined, file: string, layersKey: string, sha256?: string): Promise<AttentionProbe | undefined> {
  if (!side || JSON.stringify(side.layersRequested) !== layersKey) return undefined;
  if (sha256 !== undefined && side.sha256 !== sha256) return undefined;
  if ('reason' in side.result) return { reason: side.result.reason };
  const st = await stat(file).catch(() => undefined);
  return st && st.size === side.result.probeBytes ? { file, layers: side.result.layers } : undefined;
}

/**
 * Builds (or finds in the cache) the attention-probe graph of the UNet at `unetPath`. Returns the probe's file
 * and layer names, or a reason when the model has no separable cross-attention probabilities or cannot be read.
 */
export async function prepareAttentionProbe(unetPath: string, opts: AttentionProbeOptions = {}): Promise<AttentionProbe> {
  const source = path.resolve(unetPath);
  let st: fs.Stats;
  try {
    st = await stat(source);
  } catch (err) {
    throw new AsgdError(`Cannot read the UNet (${source})`, { kind: 'model', parameter: 'unet', hint: 'Check that the model folder is complete', cause: err });
  }
  if (st.size > MAX_SINGLE_FILE) {
    const gib = (st.size / 2 ** 30).toFixed(1);
    return {
      reason:
        `The UNet is a single ONNX file of ${gib} GiB: Node cannot read a file over 2 GiB, so the attention probe cannot be derived. ` +
        'Re-export it with external data (optimum-cli does so for models over 2 GB; or onnx.save_model(model, path, save_as_external_data=True)), ' +
        `or ${MASK_OFF_HINT}`,
    };
  }
  const layersKey = JSON.stringify(opts.layers ?? null);
  const sibling = probePaths(path.dirname(source), source);
  const cached = probePaths(cacheFolder(opts, source), source);
  const places = opts.placement === 'cache' ? [cached] : [sibling, cached];

  // Fast path: an unchanged source (same size and mtime) is not read again.
  const sidecars = await Promise.all(places.map((p) => readSidecar(p.sidecar)));
  for (const [i, p] of places.entries()) {
    const side = sidecars[i];
    if (side && side.source === source && side.size === st.size && side.mtimeMs === st.mtimeMs) {
      const hit = await usable(side, p.file, layersKey);
      if (hit) return hit;
    }
  }

  const bytes = await readFile(source);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  for (const [i, p] of places.entries()) {
    const side = sidecars[i];
    const hit = await usable(side, p.file, layersKey, sha256);
    if (hit && side) {
      // Same content, new mtime (touched or copied): refresh the sidecar so the fast path hits next time.
      await writeAtomic(p.sidecar, JSON.stringify({ ...side, source, size: st.size, mtimeMs: st.mtimeMs }, null, 2)).catch(() => undefined);
      return hit;
    }
  }

  let model: ModelProto;
  try {
    model = fromBinary(ModelProtoSchema, bytes);
  } catch (err) {
    throw new AsgdError(`Cannot parse the UNet (${source}) as an ONNX model`, { kind: 'model', parameter: 'unet', hint: 'The file is damaged or not an ONNX model; re-export the model', cause: err });
  }
  const surgery = isJointTransformer(model) ? addJointAttentionProbe(model, { layers: opts.layers }) : addAttentionProbe(model, { layers: opts.layers });
  const base = { format: PROBE_FORMAT, source, size: st.size, mtimeMs: st.mtimeMs, sha256, layersRequested: opts.layers ?? null };
  let probeBytes: Uint8Array | undefined;
  if ('layers' in surgery) {
    referenceInlineWeights(model, bytes, path.basename(source));
    probeBytes = toBinary(ModelProtoSchema, model);
  }
  const failures: string[] = [];
  for (const p of places) {
    const inSourceFolder = p === sibling;
    const side: Sidecar = {
      ...base,
      result: probeBytes && 'layers' in surgery ? { layers: surgery.layers, probeBytes: probeBytes.length } : { reason: (surgery as { reason: string }).reason },
      externalDataFolder: inSourceFolder ? null : path.dirname(source),
    };
    try {
      await mkdir(path.dirname(p.file), { recursive: true });
      if (probeBytes) await writeAtomic(p.file, probeBytes);
      await writeAtomic(p.sidecar, JSON.stringify(side, null, 2));
      return 'layers' in surgery ? { file: p.file, layers: surgery.layers } : surgery;
    } catch (err) {
      failures.push(`${p.file}: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if ('reason' in surgery) return surgery;
  return {
    reason:
      `The attention probe could not be written (${failures.join('; ')}). ` +
      `Make the UNet's folder or the cache folder (${cacheRoot(opts)}; set ASGD_CACHE_DIR to move it) writable, or ${MASK_OFF_HINT}`,
  };
}

/** Whether `file` is a probe graph made by prepareAttentionProbe (by its name). */
export function isProbeFile(file: string): boolean {
  return PROBE_SUFFIX.test(file);
}

/** How to open a probe file made by prepareAttentionProbe (read from its sidecar). */
export function probeLoadOptions(probeFile: string): ProbeLoad {
  const { sidecar } = probePaths(path.dirname(probeFile), probeFile.replace(PROBE_SUFFIX, '.onnx'));
  try {
    const side = JSON.parse(fs.readFileSync(sidecar, 'utf8')) as Partial<Sidecar>;
    return side.externalDataFolder ? { externalDataFolder: side.externalDataFolder } : {};
  } catch {
    return {};
  }
}

/**
 * Turns the probe's large inline initializers into external-data references to the same bytes inside the source
 * file `location` (the probe's model stays small; ONNX Runtime reads them from the source). Tensors whose bytes
 * cannot be located exactly stay inline.
 */
export function referenceInlineWeights(model: ModelProto, sourceBytes: Uint8Array, location: string): number {
  let spans: Map<string, { offset: number; length: number }>;
  try {
    spans = initializerRawDataSpans(sourceBytes);
  } catch {
    return 0; // fromBinary accepted the bytes; if this reader cannot, the weights simply stay inline
  }
  let moved = 0;
  for (const t of model.graph?.initializer ?? []) {
    if (t.dataLocation === EXTERNAL || t.rawData.length < EXTERNALIZE_BYTES) continue;
    const span = spans.get(t.name);
    if (!span || span.length !== t.rawData.length) continue;
    if (!Buffer.from(sourceBytes.buffer, sourceBytes.byteOffset + span.offset, span.length).equals(t.rawData)) continue;
    t.rawData = new Uint8Array(0);
    t.dataLocation = EXTERNAL;
    t.externalData = [
      create(StringStringEntryProtoSchema, { key: 'location', value: location }),
      create(StringStringEntryProtoSchema, { key: 'offset', value: String(span.offset) }),
      create(StringStringEntryProtoSchema, { key: 'length', value: String(span.length) }),
    ];
    moved++;
  }
  return moved;
}

/**
 * Byte spans of each top-graph initializer's raw_data inside a serialized ModelProto, read from the protobuf wire
 * format (ModelProto.graph = field 7, GraphProto.initializer = 5, TensorProto.name = 8, TensorProto.raw_data = 9).
 */
export function initializerRawDataSpans(bytes: Uint8Array): Map<string, { offset: number; length: number }> {
  const spans = new Map<string, { offset: number; length: number }>();
  const decoder = new TextDecoder();
  for (const graph of lengthDelimited(bytes, 0, bytes.length, 7)) {
    for (const tensor of lengthDelimited(bytes, graph.offset, graph.offset + graph.length, 5)) {
      let name: string | undefined;
      let raw: { offset: number; length: number } | undefined;
      for (const f of fields(bytes, tensor.offset, tensor.offset + tensor.length)) {
        if (f.wireType !== 2) continue;
        if (f.field === 8) name = decoder.decode(bytes.subarray(f.offset, f.offset + f.length));
        else if (f.field === 9) raw = { offset: f.offset, length: f.length };
      }
      if (name !== undefined && raw) spans.set(name, raw);
    }
  }
  return spans;
}

function lengthDelimited(bytes: Uint8Array, start: number, end: number, field: number): { offset: number; length: number }[] {
  return fields(bytes, start, end).filter((f) => f.field === field && f.wireType === 2);
}

/** The fields of one message in bytes[start, end): number, wire type and (for length-delimited ones) the payload. */
function fields(bytes: Uint8Array, start: number, end: number): { field: number; wireType: number; offset: number; length: number }[] {
  const out: { field: number; wireType: number; offset: number; length: number }[] = [];
  let pos = start;
  const varint = (): number => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (pos >= end) throw new Error('protobuf: truncated varint');
      const b = bytes[pos++]!;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 128;
    }
  };
  while (pos < end) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wireType = key % 8;
    switch (wireType) {
      case 0:
        varint();
        break;
      case 1:
        pos += 8;
        break;
      case 5:
        pos += 4;
        break;
      case 2: {
        const length = varint();
        out.push({ field, wireType, offset: pos, length });
        pos += length;
        break;
      }
      default:
        throw new Error(`protobuf: unsupported wire type ${wireType}`);
    }
  }
  if (pos !== end) throw new Error('protobuf: field runs past the message end');
  return out;
}
