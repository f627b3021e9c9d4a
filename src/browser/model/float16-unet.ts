/**
 * A float32 UNet export converted to float16 in the page (WebPipelineOptions.unetPrecision 'float16'), by the plan
 * Node uses (src/graph/float16-downcast.ts). optimum's default export is float32: an SD 1.5 UNet of 3.4 GB in
 * `unet/model.onnx_data`, which Chromium could not copy to a worker (bench/web-large-unet.ts) and which would fill most
 * of ONNX Runtime Web's 4 GB of WebAssembly memory; in float16 it is 1.7 GB. The source weights are streamed and converted
 * as they arrive, never held whole, in pieces between which the page keeps its turns. The result is
 * kept in Cache Storage beside the model's files (`unet/model.asgd-float16.onnx`, its `.data` and a `.json` naming
 * the source), so a later visit neither downloads the float32 weights nor converts again. Where the storage has room,
 * the converted weights stream into it as they are made, and the page holds neither file whole.
 */
import { AsgdError } from '../../core/errors.ts';
import { textDecoder, utf8Encode } from '../../core/platform.ts';
import { crc32 } from '../../core/png-chunks.ts';
import { ALREADY_FLOAT16, float16Names, float16Plan, float16WeightBytes, type Float16Counts, type Float16Plan } from '../../graph/float16-downcast.ts';
import { Float16FileWriter, Float16WeightStream, streamedWeights, type StreamedWeight } from '../../graph/float16-stream.ts';
import { pageTurns } from '../page-turns.ts';
import { modelBytes } from '../../graph/model-bytes.ts';
import { externalLocations, folderOf, handOver, type PageExternalFile } from './external-data.ts';
import { tooLargeError } from './model-files.ts';
import type { FileSource, StoreStream } from './file-source.ts';

/** Bump when the conversion's output changes, so that stored conversions are made again. */
const FORMAT = 1;

export interface Float16UnetResult extends Float16Counts {
  /** The converted graph's path in the folder, e.g. "unet/model.asgd-float16.onnx". */
  file: string;
  model: Uint8Array;
  external: PageExternalFile[];
  attentionScoresFloat32: boolean;
  /** Read from the browser's storage (converted on an earlier load). */
  fromStore: boolean;
}

interface Sidecar extends Float16Counts {
  format: number;
  source: string;
  attentionScoresFloat32: boolean;
  modelBytes: number;
  dataBytes: number;
}

/** Names a source export: its graph file's length and CRC-32 (a changed export has another). */
function sourceId(bytes: Uint8Array): string {
  return `${bytes.length}:${crc32(bytes).toString(16)}`;
}

function storedNames(file: string) {
  const n = float16Names(file);
  return { ...n, dataLocation: n.data.slice(folderOf(n.data).length) };
}

async function fromStore(src: FileSource, file: string, source: string, scores: boolean): Promise<Float16UnetResult | undefined> {
  const names = storedNames(file);
  const side = await src.stored(names.sidecar);
  if (!side) return undefined;
  let s: Sidecar;
  try {
    s = JSON.parse(textDecoder('utf-8').decode(side)) as Sidecar;
  } catch {
    return undefined;
  }
  if (s.format !== FORMAT || s.source !== source || s.attentionScoresFloat32 !== scores) return undefined;
  const model = await src.stored(names.model);
  // The weights as a Blob: the worker reads them (a page reading 1.7 GB is held for seconds at a time).
  const data = s.dataBytes > 0 ? await src.storedBlob(names.data) : new Blob([]);
  if (model?.length !== s.modelBytes || data?.size !== s.dataBytes) return undefined;
  return {
    file: names.model, model, external: s.dataBytes > 0 ? [{ path: names.dataLocation, data }] : [], tensors: s.tensors, float32Nodes: s.float32Nodes, casts: s.casts,
    attentionScoresFloat32: scores, fromStore: true,
  };
}

/**
 * Stores the converted graph, then its sidecar, once the weights are stored: a stored sidecar means a complete
 * conversion.
 */
async function keepGraph(src: FileSource, names: ReturnType<typeof storedNames>, model: Uint8Array, side: Sidecar): Promise<void> {
  if (await src.keep(names.model, model)) await src.keep(names.sidecar, utf8Encode(JSON.stringify(side)), 'application/json');
}

/** Removes a stored conversion of `file` (its sidecar first: without it the rest is never read). */
export async function forgetFloat16Unet(src: FileSource, file: string): Promise<void> {
  const names = storedNames(file);
  for (const f of [names.sidecar, names.model, names.data]) await src.forget(f);
}

/** The most source bytes converted in one piece: a few milliseconds, between two turns of the page (pageTurns). */
const PIECE = 1 << 20;

/**
 * Streams `location` (beside `file`) and converts each weight's bytes as they arrive (Float16WeightStream), in pieces
 * between which the page gets its turns; the bytes in flight are one chunk's, never the file's.
 */
async function streamWeights(src: FileSource, file: string, location: string, weights: StreamedWeight[], data: Uint8Array | Float16FileWriter, out?: StoreStream): Promise<void> {
  const path = folderOf(file) + location;
  const stream = new Float16WeightStream(weights, data);
  const turn = pageTurns();
  await src.stream(path, async (chunk) => {
    for (let k = 0; k < chunk.length; k += PIECE) {
      stream.push(chunk.subarray(k, k + PIECE));
      await turn();
      if (out && !(await out.ready())) throw new StoreRefused();
    }
  });
  const short = stream.incomplete();
  if (short) {
    throw new AsgdError(`${path} is shorter than ${file} says`, {
      kind: 'model', parameter: path, expected: `at least ${short.offset + short.length} bytes (tensor ${short.w.name})`, received: `${stream.received} bytes`,
      hint: 'The export is incomplete: copy the whole file to the server again',
    });
  }
}

/** The storage refused a conversion streamed into it: it is made again in the page. */
class StoreRefused extends Error {}

/**
 * The conversion's weights file streamed into the storage as it is made, front to back (Float16FileWriter): the page
 * holds the weights in progress, never the file (5.1 GB for an SDXL UNet). False where the storage refused it, or a
 * stored source proved short (nothing is kept; the caller converts again in the page, which retries from the server).
 */
async function convertIntoStore(src: FileSource, file: string, plan: Float16Plan, out: StoreStream): Promise<boolean> {
  const writer = new Float16FileWriter(plan.weights, plan.dataBytes, (bytes) => out.write(bytes));
  const pending = streamedWeights(file, plan.weights);
  try {
    for (const w of plan.weights) if (w.source.dataLocation !== 1) writer.done(w, float16WeightBytes(w));
    for (const [location, list] of pending) if (list.length > 0) await streamWeights(src, file, location, list, writer, out);
  } catch (err) {
    await out.abort();
    const shortStored = err instanceof AsgdError && err.kind === 'model' && [...pending.keys()].some((l) => src.isStored(folderOf(file) + l));
    if (err instanceof StoreRefused || shortStored) return false;
    throw err;
  }
  return out.close();
}

/**
 * streamWeights, from the server again where a stored copy of the weights file proves short (a download that was
 * stored cut off): that copy is removed first, so a bad copy does not break the model for good.
 */
async function streamWeightsOnce(src: FileSource, file: string, location: string, weights: StreamedWeight[], data: Uint8Array): Promise<void> {
  const path = folderOf(file) + location;
  try {
    await streamWeights(src, file, location, weights, data);
  } catch (err) {
    if (!(err instanceof AsgdError) || err.kind !== 'model' || !src.isStored(path)) throw err;
    await src.forget(path);
    await streamWeights(src, file, location, weights, data);
  }
}

/**
 * The float16 graph of the float32 UNet `file` (its graph's bytes `bytes`), read from the browser's storage where an
 * earlier load converted it, else converted (its external weights streamed) and stored; or why there is none (the
 * conversion's reason; `alreadyFloat16` where the export holds float16 tensors already).
 */
export async function float16Unet(src: FileSource, file: string, bytes: Uint8Array, attentionScoresFloat32: boolean): Promise<Float16UnetResult | { reason: string; alreadyFloat16: boolean }> {
  const source = sourceId(bytes);
  const stored = await fromStore(src, file, source, attentionScoresFloat32);
  if (stored) return stored;
  const names = storedNames(file);
  // Refuses a weights file outside the model's folder before any request.
  await externalLocations(file, bytes);
  const plan = float16Plan(bytes, { dataLocation: names.dataLocation, attentionScoresFloat32 });
  if ('reason' in plan) return { reason: plan.reason, alreadyFloat16: plan.reason === ALREADY_FLOAT16 };
  const counts: Float16Counts = plan.counts;
  const model = modelBytes(plan.model);
  const out = plan.dataBytes > 0 ? await src.keepStreamed(names.data, plan.dataBytes) : undefined;
  if (out && (await convertIntoStore(src, file, plan, out))) {
    const data = await src.keptBlob(names.data);
    if (data?.size === plan.dataBytes) {
      await keepGraph(src, names, model, { format: FORMAT, source, attentionScoresFloat32, modelBytes: model.length, dataBytes: plan.dataBytes, ...counts });
      return { file: names.model, model, external: [{ path: names.dataLocation, data }], ...counts, attentionScoresFloat32, fromStore: false };
    }
    await src.forget(names.data);
  }
  let data: Uint8Array;
  try {
    data = new Uint8Array(plan.dataBytes);
  } catch (err) {
    throw tooLargeError(names.data, plan.dataBytes, 'Even in float16 this UNet is larger than this browser can hold: use the Node API', err);
  }
  // Weights held in the graph are converted at once; the rest as their files stream in.
  for (const w of plan.weights) if (w.source.dataLocation !== 1) data.set(float16WeightBytes(w), w.offset);
  const pending = streamedWeights(file, plan.weights);
  for (const [location, list] of pending) if (list.length > 0) await streamWeightsOnce(src, file, location, list, data);
  // The weights first, the graph and its sidecar after them (keepGraph).
  if (plan.dataBytes === 0 || (await src.keep(names.data, data))) {
    await keepGraph(src, names, model, { format: FORMAT, source, attentionScoresFloat32, modelBytes: model.length, dataBytes: plan.dataBytes, ...counts });
  }
  return { file: names.model, model, external: plan.dataBytes > 0 ? [{ path: names.dataLocation, data: await handOver(src, names.data, data) }] : [], ...counts, attentionScoresFloat32, fromStore: false };
}
