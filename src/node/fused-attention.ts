/**
 * The UNet (or its attention-probe graph) with its attention fused into MultiHeadAttention nodes
 * (src/graph/attention-fusion.ts) and, in its transformer blocks, each output projection's bias, residual Add and
 * next LayerNormalization fused into one SkipLayerNormalization (src/graph/skip-layer-norm.ts) and, for WebGPU
 * devices only, each GEGLU into one BiasSplitGelu (src/graph/bias-split-gelu.ts) and each group norm into one GroupNorm
 * (src/graph/group-norm.ts), stored like the other derived
 * graphs (derived-graphs.ts): `<name>.asgd-fused.onnx` next to the source when its folder is writable, else in the
 * cache; weights referenced, never copied.
 */
import fs from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema, type ModelProto } from 'onnx-buf';
import { countOnnxAttention } from '../graph/attention-fusion.ts';
import { fuseUnet } from '../graph/unet-fusion.ts';
import { prepareDerivedGraphs, type DerivedGraphOptions, type DerivedSidecar } from './derived-graphs.ts';
import { referenceInlineWeights } from './probe.ts';

export interface FusedAttention {
  file: string;
  /** Attention layers fused. */
  fused: number;
  /** Bias + residual + LayerNormalization triples fused into SkipLayerNormalization nodes. */
  skipLayerNorms: number;
  /** GEGLUs fused into BiasSplitGelu nodes (0 unless asked for: WebGPU devices only). */
  biasSplitGelus: number;
  /** Group norms fused into GroupNorm nodes (0 unless asked for: WebGPU devices only). */
  groupNorms: number;
  /** Folder of the weights when the file does not sit next to them (session option; see probe.ts). */
  externalDataFolder?: string;
}

/** Bump when the fusion's output changes, so stored graphs are derived again. */
const FORMAT = 13;
const SUFFIX = '.asgd-fused';
/** Files fused without the residual norms (FuseUnetOptions.skipLayerNorm false): `<suffix>-attention-only`. */
const ATTENTION_ONLY = '-attention-only';
/** Files with the GEGLUs fused (FuseUnetOptions.biasSplitGelu; WebGPU only): `<suffix>-webgpu`. */
const WEBGPU_ONLY = '-webgpu';
/** WebGPU-only files without the group norms fused (FuseUnetOptions.groupNorm false: measuring what they change). */
const NO_GROUP_NORM = '-no-group-norm';
/** The flash form's files (q and k not padded: flash-check.ts says where ONNX Runtime's kernel for it is right). */
const FLASH_SUFFIX = '.asgd-fused-flash';

interface FusedResult {
  fused: number;
  skipLayerNorms: number;
  biasSplitGelus: number;
  groupNorms: number;
  bytes: number;
  /** The source's own weights folder when the source itself is stored apart from its weights (a cached probe). */
  weightsFolder: string | null;
}

function filesFor(suffix: string) {
  return (dir: string, source: string) => {
    const base = path.basename(source).replace(/\.onnx$/i, '');
    return { file: path.join(dir, `${base}${suffix}.onnx`), sidecar: path.join(dir, `${base}${suffix}.json`) };
  };
}

type FusedFiles = ReturnType<ReturnType<typeof filesFor>>;

async function open(side: DerivedSidecar<FusedResult> & { result: FusedResult }, files: FusedFiles): Promise<FusedAttention | undefined> {
  const size = await stat(files.file).then((s) => s.size, () => -1);
  if (size !== side.result.bytes) return undefined;
  const folder = side.result.weightsFolder ?? side.externalDataFolder;
  const { fused, skipLayerNorms, biasSplitGelus, groupNorms } = side.result;
  return { file: files.file, fused, skipLayerNorms, biasSplitGelus, groupNorms, ...(folder ? { externalDataFolder: folder } : {}) };
}

/**
 * The fused graph of the UNet (or probe) at `modelPath`, derived and stored first when missing or stale; or why
 * there is none (no attention the fusion recognises, or nothing could be written). `weightsFolder`: where the
 * source's external weights live when not next to it (a probe kept in the cache). `flashForm`: q and k left
 * unpadded (FuseAttentionOptions.flashForm), stored apart from the padded form. `skipLayerNorm` false: the attention
 * alone (for measuring what the residual norms' fusion changes), stored apart too. `biasSplitGelu`: the GEGLUs fused
 * too, for WebGPU devices only (ONNX Runtime's CPU provider has no kernel for BiasSplitGelu), stored apart too, with
 * the group norms as GroupNorm (no CPU kernel either) unless `groupNorm` is false.
 */
export async function prepareFusedAttention(
  modelPath: string, opts: DerivedGraphOptions & { weightsFolder?: string; flashForm?: boolean; skipLayerNorm?: boolean; biasSplitGelu?: boolean; groupNorm?: boolean } = {},
): Promise<FusedAttention | { reason: string }> {
  const flashForm = opts.flashForm ?? false;
  const skipLayerNorm = opts.skipLayerNorm ?? true;
  const biasSplitGelu = opts.biasSplitGelu ?? false;
  const groupNorm = biasSplitGelu && (opts.groupNorm ?? true);
  const derive = (bytes: Uint8Array, source: string) => {
    const model = parse(bytes);
    if ('reason' in model) return model;
    const fusion = fuseUnet(model, { flashForm, skipLayerNorm, biasSplitGelu, groupNorm });
    if ('reason' in fusion) return fusion;
    referenceInlineWeights(model, bytes, path.basename(source));
    const out = toBinary(ModelProtoSchema, model);
    return {
      result: { fused: fusion.fused, skipLayerNorms: fusion.skipLayerNorms, biasSplitGelus: fusion.biasSplitGelus, groupNorms: fusion.groupNorms, bytes: out.length, weightsFolder: opts.weightsFolder ?? null },
      files: (p: FusedFiles): [string, Uint8Array][] => [[p.file, out]],
    };
  };
  const filesIn = filesFor((flashForm ? FLASH_SUFFIX : SUFFIX) + (skipLayerNorm ? '' : ATTENTION_ONLY) + (biasSplitGelu ? WEBGPU_ONLY + (groupNorm ? '' : NO_GROUP_NORM) : ''));
  return prepareDerivedGraphs(modelPath, opts, { format: FORMAT, cacheFolder: 'fused-attention', filesIn, open, derive });
}

function parse(bytes: Uint8Array): ModelProto | { reason: string } {
  try {
    return fromBinary(ModelProtoSchema, bytes);
  } catch (err) {
    return { reason: `the model cannot be parsed (${err instanceof Error ? err.message : String(err)})` };
  }
}

/**
 * How many ONNX Attention nodes (opset 23) the UNet file at `modelPath` has, or why it cannot be read. Counted once
 * per file content: the count is kept in a sidecar (`<name>.asgd-ops.json`), stored like the derived graphs.
 */
export async function countOnnxAttentionIn(modelPath: string, opts: DerivedGraphOptions = {}): Promise<number | { reason: string }> {
  const r = await prepareDerivedGraphs<{ onnxAttention: number }, { sidecar: string }, { onnxAttention: number }>(modelPath, opts, {
    format: 1,
    cacheFolder: 'fused-attention',
    filesIn: (dir, source) => ({ sidecar: path.join(dir, `${path.basename(source).replace(/\.onnx$/i, '')}.asgd-ops.json`) }),
    open: async (side) => side.result,
    derive: (bytes) => {
      const model = parse(bytes);
      return 'reason' in model ? model : { result: { onnxAttention: countOnnxAttention(model) }, files: () => [] };
    },
  });
  return 'reason' in r ? r : r.onnxAttention;
}

/** Whether `file` was written by prepareFusedAttention (either form). */
export function isFusedAttentionFile(file: string): boolean {
  const tails = ['', ATTENTION_ONLY].flatMap((t) => [t, t + WEBGPU_ONLY, t + WEBGPU_ONLY + NO_GROUP_NORM]);
  return [SUFFIX, FLASH_SUFFIX].some((s) => tails.some((t) => file.endsWith(`${s}${t}.onnx`)));
}

/** How to open a file made by prepareFusedAttention (read from its sidecar); {} for any other file. */
export function fusedLoadOptions(file: string): { externalDataFolder?: string } {
  if (!isFusedAttentionFile(file)) return {};
  try {
    const side = JSON.parse(fs.readFileSync(file.replace(/\.onnx$/, '.json'), 'utf8')) as Partial<DerivedSidecar<FusedResult>>;
    const result = side.result && 'bytes' in side.result ? side.result : undefined;
    const folder = result?.weightsFolder ?? side.externalDataFolder;
    return folder ? { externalDataFolder: folder } : {};
  } catch {
    return {};
  }
}
