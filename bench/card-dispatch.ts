/**
 * `card.js dispatch`: what one kernel costs on a provider whatever its work. Chains of K Add nodes on a tiny tensor
 * (each Add reads the previous sum and the input, so no optimiser can merge them; the result, (K + 1) · x, checks
 * that every one ran), one session per K, calls alternating round by round; the median call time per K, and the
 * least-squares line through them: ms per kernel (slope) and ms per call (intercept).
 *
 * Why: the fused SD 1.5 call on the card took 81.3 ms at batch 1 and 114.9 ms at batch 2, so about 48 ms of it does
 * not grow with the batch (docs/benchmarks.md, "Why the gap"). With the call's kernel count from the profile parts,
 * the slope says how much of that share the dispatches are, and so what cutting kernels (the graph fusions) can gain.
 */
import { smallModelBytes, type SmallElemType } from '../src/graph/small-model.ts';
import { floatTensor, openSession, readFloat, releaseSession, type OpenSession } from '../src/onnx/session.ts';
import type { ProviderName } from '../src/onnx/io.ts';
import { timingStats } from './timing.ts';

/** The longest chain: (k + 1) · x stays an integer float16 holds exactly. */
const MAX_KERNELS = 2047;

export interface DispatchOptions {
  provider: ProviderName;
  /** Chain lengths (kernels per call), at least two different ones, at most 2047 (float16 sums stay exact). */
  kernels: number[];
  /** Elements of the tensor each Add works on. */
  size: number;
  type: 'float32' | 'float16';
  warmup: number;
  iters: number;
}

/** The command line's values, checked: each wrong one named with what is accepted. */
export function dispatchOptions(args: Record<string, string>): DispatchOptions {
  const kernels = (args['kernels'] ?? '1,64,256,1024').split(',').map(Number);
  if (kernels.some((k) => !Number.isInteger(k) || k < 1 || k > MAX_KERNELS) || new Set(kernels).size < 2) {
    throw new Error(`card dispatch: --kernels must list at least two different whole numbers from 1 to ${MAX_KERNELS} (got ${JSON.stringify(args['kernels'])})`);
  }
  const int = (key: string, fallback: number, min: number) => {
    const raw = args[key];
    const n = raw === undefined ? fallback : Number(raw);
    if (!Number.isInteger(n) || n < min) throw new Error(`card dispatch: --${key} must be an integer of at least ${min} (got ${raw})`);
    return n;
  };
  const type = args['type'] ?? 'float32';
  if (type !== 'float32' && type !== 'float16') throw new Error(`card dispatch: --type must be float32 or float16 (got ${JSON.stringify(type)})`);
  return {
    provider: (args['provider'] ?? 'webgpu') as ProviderName, kernels, size: int('size', 256, 1), type,
    warmup: int('warmup', 3, 0), iters: int('iters', 20, 1),
  };
}

/** A graph of `k` Adds: s_0 = x, s_i = s_(i-1) + x, output s_k = (k + 1) · x. */
export function addChain(k: number, size: number, type: SmallElemType): Uint8Array {
  const nodes = Array.from({ length: k }, (_, i) => ({ opType: 'Add', input: [i === 0 ? 'x' : `s${i}`, 'x'], output: [i === k - 1 ? 'y' : `s${i + 1}`] }));
  return smallModelBytes(`add_chain_${k}`, nodes, [{ name: 'x', type, dims: [1, size] }], [{ name: 'y', type, dims: [1, size] }]);
}

/** Least-squares line through (x, y): the slope and the intercept. */
export function fitLine(xs: readonly number[], ys: readonly number[]): { slope: number; intercept: number } {
  const n = xs.length;
  const mx = xs.reduce((s, x) => s + x, 0) / n;
  const my = ys.reduce((s, y) => s + y, 0) / n;
  let sxy = 0;
  let sxx = 0;
  for (let i = 0; i < n; i++) {
    sxy += (xs[i]! - mx) * (ys[i]! - my);
    sxx += (xs[i]! - mx) ** 2;
  }
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx };
}

export async function benchDispatch(o: DispatchOptions): Promise<Record<string, unknown>> {
  // -1, 0 and 1: every partial sum (at most k + 1 in size) is an integer, exact in float16 up to 2048.
  const x = Float32Array.from({ length: o.size }, (_, i) => (i % 3) - 1);
  const opened: { k: number; session: OpenSession; times: number[]; maxError: number }[] = [];
  try {
    for (const k of o.kernels) {
      opened.push({ k, session: await openSession(addChain(k, o.size, o.type), `add chain of ${k}`, { provider: o.provider }), times: [], maxError: 0 });
    }
    // Made once a session has bound ONNX Runtime.
    const feed = { x: floatTensor(o.type, x, [1, o.size], 'x') };
    for (let round = 0; round < o.warmup + o.iters; round++) {
      for (const c of opened) {
        const t0 = performance.now();
        const r = await c.session.session.run(feed);
        const ms = performance.now() - t0;
        if (round < o.warmup) continue;
        c.times.push(ms);
        const y = readFloat(r['y']!, 'y');
        for (let i = 0; i < y.length; i++) c.maxError = Math.max(c.maxError, Math.abs(y[i]! - (c.k + 1) * x[i]!));
      }
    }
  } finally {
    for (const c of opened) await releaseSession(c.session);
  }
  const rows = opened.map((c) => ({ kernels: c.k, ...timingStats(c.times), maxError: c.maxError }));
  const line = fitLine(rows.map((r) => r.kernels), rows.map((r) => r.medianMs));
  for (const r of rows) console.error(`[card] dispatch: ${r.kernels} Adds: ${r.medianMs.toFixed(3)} ms a call`);
  console.error(`[card] dispatch: ${(line.slope * 1000).toFixed(1)} µs a kernel, ${line.intercept.toFixed(3)} ms a call`);
  return { provider: o.provider, size: o.size, type: o.type, warmup: o.warmup, iters: o.iters, chains: rows, usPerKernel: line.slope * 1000, msPerCall: line.intercept };
}
