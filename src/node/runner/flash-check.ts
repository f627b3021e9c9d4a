/**
 * Whether ONNX Runtime's WebGPU flash-attention kernel computes attention correctly on this machine's adapter.
 * ONNX Runtime 1.30 takes that kernel for a MultiHeadAttention node whose q, k and v share one head size (a multiple
 * of 4); on Mesa's lavapipe it is wrong wherever the keys outnumber the subgroup size (docs/benchmarks.md, "Fused
 * attention"), so the attention fusion pads q and k to keep the provider on its three-kernel path. Where this check
 * passes, the fusion can leave them as they are: on an NVIDIA H200 that form took 0.35 of the plain UNet call
 * (docs/benchmarks.md, "On the card"). The check runs small nodes of SD's head sizes (40, 64) with more keys than
 * any adapter's subgroup (160) and as many as SD's text (77), in float32 and float16, against attention computed
 * here in float64 from the same (rounded) inputs. It cannot prove the kernel right at every size; it catches the
 * fault measured on lavapipe, which every size with more keys than a subgroup showed.
 */
import { float16ToFloat32, float32ToFloat16 } from '../../core/float16.ts';
import { multiHeadAttentionModelBytes } from '../../graph/small-model.ts';
import type { ProviderName } from '../../onnx/io.ts';
import { floatTensor, openSession, readFloat, releaseSession, type OpenSession } from '../../onnx/session.ts';

export interface FlashCase {
  type: 'float32' | 'float16';
  queries: number;
  keys: number;
  heads: number;
  headSize: number;
}

/**
 * SD 1.5's head size (40) and SDXL's (64), self-attention-like (160 keys) and cross-attention-like (77); 64 queries,
 * as on lavapipe fewer than 32 take another program than SD's attentions (thousands of queries) do.
 */
export const FLASH_CASES: readonly FlashCase[] = (['float32', 'float16'] as const).flatMap((type) => [
  { type, queries: 64, keys: 160, heads: 2, headSize: 40 },
  { type, queries: 64, keys: 77, heads: 2, headSize: 64 },
]);

/**
 * Largest error allowed per dtype: the rounding of a softmax-weighted mean of values up to 2 (the CPU provider: 6e-7 in
 * float32, 5e-4 in float16), far below the wrong kernel's (0.07 to 0.09 on lavapipe, either dtype).
 */
export const FLASH_TOLERANCE = { float32: 1e-3, float16: 1e-2 } as const;

export interface FlashCaseResult extends FlashCase {
  maxError: number;
  ok: boolean;
}

export type FlashCheck = { ok: boolean; cases: FlashCaseResult[]; ms: number } | { ok: false; reason: string };

/** Uniform values in [-2, 2] from a fixed seed (a small LCG: no shared random state). */
function values(n: number, seed: number): Float32Array {
  let x = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return (x / 2 ** 32) * 4 - 2;
  });
}

/** The inputs as the node sees them: rounded to float16 for a float16 node. */
function asStored(x: Float32Array, type: FlashCase['type']): Float32Array {
  return type === 'float16' ? float16ToFloat32(float32ToFloat16(x)) : x;
}

/** Attention in float64: o[s, h·d + j] = Σ_l softmax_l(q_s·k_l / sqrt(d)) v[l, h·d + j] (batch 1). */
export function referenceAttention(q: Float32Array, k: Float32Array, v: Float32Array, c: FlashCase): Float64Array {
  const { queries: S, keys: L, heads: H, headSize: d } = c;
  const D = H * d;
  const out = new Float64Array(S * D);
  const scores = new Float64Array(L);
  for (let h = 0; h < H; h++) {
    for (let s = 0; s < S; s++) {
      let max = -Infinity;
      for (let l = 0; l < L; l++) {
        let dot = 0;
        for (let j = 0; j < d; j++) dot += q[s * D + h * d + j]! * k[l * D + h * d + j]!;
        scores[l] = dot / Math.sqrt(d);
        if (scores[l]! > max) max = scores[l]!;
      }
      let sum = 0;
      for (let l = 0; l < L; l++) sum += (scores[l] = Math.exp(scores[l]! - max));
      for (let j = 0; j < d; j++) {
        let acc = 0;
        for (let l = 0; l < L; l++) acc += scores[l]! * v[l * D + h * d + j]!;
        out[s * D + h * d + j] = acc / sum;
      }
    }
  }
  return out;
}

/** Each case on `provider` against the float64 reference. */
export async function checkMultiHeadAttention(provider: ProviderName, cases: readonly FlashCase[] = FLASH_CASES): Promise<FlashCaseResult[]> {
  const results: FlashCaseResult[] = [];
  for (const c of cases) {
    const D = c.heads * c.headSize;
    const q = asStored(values(c.queries * D, 1), c.type);
    const k = asStored(values(c.keys * D, 2), c.type);
    const v = asStored(values(c.keys * D, 3), c.type);
    let s: OpenSession | undefined;
    try {
      s = await openSession(multiHeadAttentionModelBytes(c.type, 1, c.queries, c.keys, c.heads, c.headSize), 'attention check', { provider });
      const r = await s.session.run({
        q: floatTensor(c.type, q, [1, c.queries, D], 'q'), k: floatTensor(c.type, k, [1, c.keys, D], 'k'), v: floatTensor(c.type, v, [1, c.keys, D], 'v'),
      });
      const o = readFloat(r['o']!, 'o');
      const ref = referenceAttention(q, k, v, c);
      let maxError = 0;
      for (let i = 0; i < ref.length; i++) maxError = Math.max(maxError, Math.abs(o[i]! - ref[i]!));
      if (!(o.length === ref.length && Number.isFinite(maxError))) maxError = Infinity;
      results.push({ ...c, maxError, ok: maxError <= FLASH_TOLERANCE[c.type] });
    } finally {
      await releaseSession(s);
    }
  }
  return results;
}

/** The check on the WebGPU provider (run in a process of its own: runner/devices.ts). */
export async function tryFlashAttention(): Promise<FlashCheck> {
  const t0 = performance.now();
  try {
    const cases = await checkMultiHeadAttention('webgpu');
    return { ok: cases.every((c) => c.ok), cases, ms: performance.now() - t0 };
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  }
}
