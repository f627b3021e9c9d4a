/**
 * PyTorch's own output of a UNet call on the card (scripts/device/sd_models.py --reference-out): one batch-2 call
 * on bench/card.ts's deterministic inputs, in float16 as timed and in float32 (TF32 off). Comparing ONNX Runtime's
 * output with the float32 one, next to PyTorch's float16 output against it, says whether a WebGPU call is as
 * accurate as PyTorch's on the same card: at float16 two correct graphs differ by their rounding, so the difference
 * between two of ours (fused and plain) alone cannot say which is wrong.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface TorchReference {
  prefix: string;
  /** Outputs by dtype ('float32', and 'float16' where the call was timed in it), [2, 4, latent, latent]. */
  outputs: Record<string, Float32Array>;
  latent: number;
  /** PyTorch float16 against float32, where both were written. */
  torchFloat16VsFloat32?: { maxAbs: number; meanAbs: number };
}

export interface Difference {
  maxAbs: number;
  meanAbs: number;
}

/** Reads PREFIX.json and its files; refuses a reference of another latent or batch than the call compared. */
export function readTorchReference(prefix: string, latent: number): TorchReference {
  const metaFile = `${prefix}.json`;
  if (!fs.existsSync(metaFile)) throw new Error(`card: --reference ${prefix}: ${metaFile} is missing (sd_models.py --reference-out ${prefix} writes it)`);
  const meta = JSON.parse(fs.readFileSync(metaFile, 'utf8')) as {
    batch: number; latent: number; files: Record<string, { file: string; shape: number[] }>; torch_float16_vs_float32?: { max_abs: number; mean_abs: number };
  };
  if (meta.latent !== latent || meta.batch !== 2) {
    throw new Error(`card: --reference ${prefix} holds a batch-${meta.batch} call at latent ${meta.latent}; this call is batch 2 at latent ${latent} (give --latent ${meta.latent})`);
  }
  const outputs: Record<string, Float32Array> = {};
  for (const [dtype, f] of Object.entries(meta.files)) {
    const bytes = fs.readFileSync(path.join(path.dirname(metaFile), f.file));
    const n = f.shape.reduce((a, b) => a * b, 1);
    if (bytes.length !== 4 * n) throw new Error(`card: --reference ${f.file} has ${bytes.length} bytes, expected ${4 * n} (shape ${f.shape.join('x')})`);
    outputs[dtype] = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
  }
  const t = meta.torch_float16_vs_float32;
  return { prefix, outputs, latent, ...(t ? { torchFloat16VsFloat32: { maxAbs: t.max_abs, meanAbs: t.mean_abs } } : {}) };
}

export function difference(a: Float32Array, b: Float32Array): Difference {
  if (a.length !== b.length) throw new Error(`card: outputs of ${a.length} and ${b.length} values cannot be compared`);
  let max = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (d > max) max = d;
    sum += d;
  }
  return { maxAbs: max, meanAbs: sum / a.length };
}

/** One of our outputs against each of PyTorch's (keys: the reference's dtypes). */
export function againstTorch(out: Float32Array, ref: TorchReference): Record<string, Difference> {
  return Object.fromEntries(Object.entries(ref.outputs).map(([dtype, r]) => [dtype, difference(out, r)]));
}
