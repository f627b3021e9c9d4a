/**
 * Whether ONNX Runtime's WebGPU flash-attention kernel computes attention correctly on an adapter, and what the
 * attention fusion should then write. ONNX Runtime (1.30, 1.31.1) takes that kernel for a MultiHeadAttention node whose q, k
 * and v share one head size (a multiple of 4); on Mesa's lavapipe it is wrong wherever the keys outnumber the
 * subgroup size (docs/benchmarks.md, "Fused attention"), so the fusion pads q and k to keep the provider on its
 * three-kernel path. Where the check passes, the fusion can leave them as they are: on an NVIDIA H200 that form
 * took 0.35 of the plain UNet call (docs/benchmarks.md, "On the card"). The cases are small nodes of SD's head
 * sizes (40, 64) with more keys than any adapter's subgroup (160) and as many as SD's text (77), in float32 and
 * float16; each output is compared with attention computed here in float64 from the same (rounded) inputs. Portable:
 * the session that runs a case is the caller's (Node: runner/flash-check.ts; the browser's device worker).
 */
import { float16ToFloat32, float32ToFloat16 } from '../core/float16.ts';
import { multiHeadAttentionModelBytes } from './small-model.ts';

export interface FlashCase {
  type: 'float32' | 'float16';
  queries: number;
  keys: number;
  heads: number;
  headSize: number;
}

/** 64 queries, as on lavapipe fewer than 32 take another program than SD's attentions (thousands of queries) do. */
export const FLASH_CASES: readonly FlashCase[] = (['float32', 'float16'] as const).flatMap((type) => [
  { type, queries: 64, keys: 160, heads: 2, headSize: 40 },
  { type, queries: 64, keys: 77, heads: 2, headSize: 64 },
]);

/**
 * Largest error allowed per dtype: the rounding of a softmax-weighted mean of values up to 2 (the CPU provider: 6e-7 in
 * float32, 5e-4 in float16), far below the wrong kernel's (0.07 to 0.31 on lavapipe, either dtype).
 */
export const FLASH_TOLERANCE = { float32: 1e-3, float16: 1e-2 } as const;

export interface FlashCaseResult extends FlashCase {
  /** NaN where the case could not run. */
  maxError: number;
  ok: boolean;
  /**
   * Why a float16 case could not run: the adapter has no float16 shaders (SwiftShader in Chromium), so no float16
   * model runs there and the case says nothing about float32 ones. Such a case counts as passed.
   */
  unsupported?: string;
}

export type FlashCheck = { ok: boolean; cases: FlashCaseResult[]; ms: number } | { ok: false; reason: string };

/** One case's model and inputs: q [1, queries, heads·d], k and v [1, keys, heads·d], as the node stores them. */
export interface FlashCaseInputs {
  model: Uint8Array;
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  qDims: number[];
  kvDims: number[];
}

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

export function flashCaseInputs(c: FlashCase): FlashCaseInputs {
  const D = c.heads * c.headSize;
  return {
    model: multiHeadAttentionModelBytes(c.type, 1, c.queries, c.keys, c.heads, c.headSize),
    q: asStored(values(c.queries * D, 1), c.type),
    k: asStored(values(c.keys * D, 2), c.type),
    v: asStored(values(c.keys * D, 3), c.type),
    qDims: [1, c.queries, D],
    kvDims: [1, c.keys, D],
  };
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

/** Every case through `run` (the node's output as float32), each against the reference. */
export async function checkFlashCases(
  run: (c: FlashCase, inputs: FlashCaseInputs) => Promise<Float32Array>, cases: readonly FlashCase[] = FLASH_CASES,
): Promise<FlashCaseResult[]> {
  const results: FlashCaseResult[] = [];
  for (const c of cases) {
    const inputs = flashCaseInputs(c);
    let o: Float32Array;
    try {
      o = await run(c, inputs);
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      if (c.type === 'float16' && /\bf16\b|float16|shader-f16/i.test(msg)) {
        results.push({ ...c, maxError: NaN, ok: true, unsupported: msg.replace(/^.*?(Program \S+ requires f16)/s, '$1').slice(0, 200) });
        continue;
      }
      throw err;
    }
    const ref = referenceAttention(inputs.q, inputs.k, inputs.v, c);
    let maxError = 0;
    for (let i = 0; i < ref.length; i++) maxError = Math.max(maxError, Math.abs(o[i]! - ref[i]!));
    if (!(o.length === ref.length && Number.isFinite(maxError))) maxError = Infinity;
    results.push({ ...c, maxError, ok: maxError <= FLASH_TOLERANCE[c.type] });
  }
  return results;
}

/** The whole check: every case right, or why it could not run. `now`: a clock in ms (the platform's). */
export async function runFlashCheck(run: (c: FlashCase, inputs: FlashCaseInputs) => Promise<Float32Array>, now: () => number): Promise<FlashCheck> {
  const t0 = now();
  try {
    const cases = await checkFlashCases(run);
    return { ok: cases.every((c) => c.ok), cases, ms: now() - t0 };
  } catch (err) {
    return { ok: false, reason: err instanceof Error ? err.message : String(err) };
  }
}

export interface AttentionForm {
  form: 'padded' | 'flash';
  formReason: string;
}

/** What the fusion writes on a WebGPU adapter with this check's result: the flash form only where it passed. */
export function attentionFormFor(c: FlashCheck): AttentionForm {
  if ('reason' in c) return { form: 'padded', formReason: `the check of ONNX Runtime's WebGPU flash-attention kernel did not run (${c.reason})` };
  const worst = (type: 'float32' | 'float16') => {
    const ran = c.cases.filter((x) => x.type === type && x.unsupported === undefined);
    return ran.length ? `${Math.max(...ran.map((x) => x.maxError)).toExponential(1)} in ${type}` : `${type} not supported by the adapter`;
  };
  const errors = `largest error ${worst('float32')}, ${worst('float16')}`;
  return c.ok
    ? { form: 'flash', formReason: `ONNX Runtime's WebGPU flash-attention kernel checked right on this adapter (${errors})` }
    : { form: 'padded', formReason: `ONNX Runtime's WebGPU flash-attention kernel is wrong on this adapter (${errors})` };
}

/** The form where no WebGPU device runs: padded, as the CPU provider computes either form right. */
export const NO_WEBGPU_FORM: AttentionForm = { form: 'padded', formReason: 'no WebGPU device (the form of every other provider)' };
