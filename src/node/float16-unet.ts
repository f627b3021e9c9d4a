/**
 * A float32 UNet (or SD3 transformer) export as a float16 graph (src/graph/float16-downcast.ts), for
 * `PipelineOptions.unetPrecision` 'float16'. Stored like the other derived graphs (derived-graphs.ts):
 * `<name>.asgd-float16.onnx` and its weights `<name>.asgd-float16.onnx.data` next to the source when its folder is
 * writable, else in the cache. It holds its weights itself, so the graphs derived from it (the attention probe, the
 * fused forms) derive from it as from any export with external data. The weights are converted and written one
 * tensor at a time, into a temporary file renamed into place when complete.
 */
import { open as openFile, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { ALREADY_FLOAT16, float16Names, float16Plan, float16WeightBytes, type Float16Counts } from '../graph/float16-downcast.ts';
import { modelBytes } from '../graph/model-bytes.ts';
import { prepareDerivedGraphs, type DerivedContent, type DerivedGraphOptions, type DerivedSidecar } from './derived-graphs.ts';
import { externalReader } from './float32-vae.ts';
import { float16AlreadyNote, float16FailedWarning, float16UnetInfo, float16UnetNote, type UnetFloat16Info } from '../core/unet-precision.ts';


export interface Float16Unet extends Float16Counts {
  file: string;
  /** Whether the attention scores stayed float32 (the UNet's config sets `upcast_attention`). */
  attentionScoresFloat32: boolean;
}

/** Bump when the conversion's output changes, so stored graphs are derived again. */
const FORMAT = 3;

type Result = Float16Counts & { bytes: number; dataBytes: number; attentionScoresFloat32: boolean };

function filesIn(dir: string, source: string) {
  const n = float16Names(path.join(dir, path.basename(source)));
  return { file: n.model, data: n.data, sidecar: n.sidecar };
}

type Files = ReturnType<typeof filesIn>;

/**
 * The float16 graph of the float32 UNet at `modelPath`, derived and stored first when missing or stale; or why there
 * is none (`ALREADY_FLOAT16` for an export with float16 tensors, else what failed). `attentionScoresFloat32`: keep
 * each Softmax and its scores in float32 (diffusers' `upcast_attention`). `signal`: an abort stops the writing between
 * tensors, leaving no file (then the reason says it could not be written).
 */
export async function prepareFloat16Unet(
  modelPath: string, opts: DerivedGraphOptions & { attentionScoresFloat32?: boolean; signal?: AbortSignal } = {},
): Promise<Float16Unet | { reason: string }> {
  const scores = opts.attentionScoresFloat32 ?? false;
  const open = async (side: DerivedSidecar<Result> & { result: Result }, files: Files): Promise<Float16Unet | undefined> => {
    const r = side.result;
    if (r.attentionScoresFloat32 !== scores) return undefined;
    const [size, dataSize] = await Promise.all([files.file, files.data].map((f) => stat(f).then((s) => s.size, () => -1)));
    if (size !== r.bytes || (r.dataBytes > 0 && dataSize !== r.dataBytes)) return undefined;
    return { file: files.file, tensors: r.tensors, float32Nodes: r.float32Nodes, casts: r.casts, attentionScoresFloat32: scores };
  };
  const derive = (bytes: Uint8Array, source: string) => {
    const dataLocation = path.basename(filesIn('.', source).data);
    const plan = float16Plan(bytes, { dataLocation, attentionScoresFloat32: scores });
    if ('reason' in plan) return plan;
    const onnx = modelBytes(plan.model);
    const read = externalReader(source);
    const writeData = async (file: string) => {
      const fh = await openFile(file, 'w');
      try {
        for (const w of plan.weights) {
          // Cancelled loading stops between tensors; the partial file is removed (writeAtomic).
          if (opts.signal?.aborted) throw new Error('cancelled');
          const b = float16WeightBytes(w, read);
          if (b.length !== w.length) throw new Error(`weight ${w.name}: ${b.length} bytes where ${w.length} were planned`);
          await fh.write(b, 0, b.length, w.offset);
        }
      } finally {
        await fh.close();
      }
    };
    const result: Result = { ...plan.counts, bytes: onnx.length, dataBytes: plan.dataBytes, attentionScoresFloat32: scores };
    return {
      result,
      // The weights first: the model and then the sidecar are written only once its weights are complete.
      files: (p: Files): [string, DerivedContent][] => [...(plan.dataBytes > 0 ? [[p.data, writeData] as [string, DerivedContent]] : []), [p.file, onnx]],
    };
  };
  return prepareDerivedGraphs(modelPath, opts, { format: FORMAT, cacheFolder: 'float16-unet', filesIn, open, derive });
}

/** Whether the UNet's config (config.json beside it) sets diffusers' `upcast_attention` (SD 2.1 does). */
export async function upcastsAttention(modelPath: string): Promise<boolean> {
  try {
    const config = JSON.parse(await readFile(path.join(path.dirname(modelPath), 'config.json'), 'utf8')) as Record<string, unknown>;
    return config['upcast_attention'] === true;
  } catch {
    return false;
  }
}

/**
 * `spec` with its UNet replaced by the float16 graph, a note saying so, and what was done; unchanged where the export
 * is float16 already (a note) or cannot be converted (then `warning`, which every run repeats).
 */
export async function withFloat16Unet<S extends { paths: { unet: string }; notes: string[] }>(
  spec: S, opts: DerivedGraphOptions & { signal?: AbortSignal } = {},
): Promise<{ spec: S; unetFloat16: UnetFloat16Info; warning?: string }> {
  const source = spec.paths.unet;
  const r = await prepareFloat16Unet(source, { ...opts, attentionScoresFloat32: await upcastsAttention(source) });
  if ('reason' in r) {
    if (r.reason === ALREADY_FLOAT16) {
      return { spec: { ...spec, notes: [...spec.notes, float16AlreadyNote(path.basename(source))] }, unetFloat16: { applied: false, reason: r.reason } };
    }
    return { spec, unetFloat16: { applied: false, reason: r.reason }, warning: float16FailedWarning(r.reason) };
  }
  return {
    spec: { ...spec, paths: { ...spec.paths, unet: r.file }, notes: [...spec.notes, float16UnetNote(path.basename(r.file), r)] },
    unetFloat16: float16UnetInfo(r),
  };
}
