/**
 * Whether the WebGPU execution provider finds a GPU adapter here: builds a one-node ONNX model (y = x + x) in
 * memory and runs it on the default adapter (the Node binding cannot pick another). The provider ships with
 * onnxruntime-node on every platform; an adapter needs a GPU driver (Vulkan on Linux), which only a real session
 * creation can tell.
 *
 * Where an adapter is found, a dense test (a chain of 512x512 matrix products) is timed on it and on the CPU
 * provider: the Node binding does not say whether the adapter is a GPU or a CPU emulation (Mesa's lavapipe,
 * SwiftShader), and `--devices auto` wants the faster of the two. Here lavapipe took about 530 ms a run against
 * 15-30 ms on 2 CPU cores; a GPU takes a few.
 */
import { smallModelBytes } from '../../graph/small-model.ts';
import { makeTensor, openSession, type OpenSession } from '../../onnx/session.ts';
import type { ProviderName } from '../../onnx/io.ts';

export function addModelBytes(size = 4): Uint8Array {
  const v = (name: string) => ({ name, type: 'float32' as const, dims: [size] });
  return smallModelBytes('webgpu_check', [{ opType: 'Add', input: ['x', 'x'], output: ['y'] }], [v('x')], [v('y')]);
}

const DENSE_SIZE = 512;
const DENSE_PRODUCTS = 8;

/** y = x^(k+1) by k MatMuls of n x n float32 matrices (x filled with 1/n keeps every value at 1/n). */
export function denseModelBytes(n = DENSE_SIZE, k = DENSE_PRODUCTS): Uint8Array {
  const nodes = Array.from({ length: k }, (_, i) => ({ opType: 'MatMul', input: [i === 0 ? 'x' : `y${i - 1}`, 'x'], output: [i === k - 1 ? 'y' : `y${i}`] }));
  const v = (name: string) => ({ name, type: 'float32' as const, dims: [n, n] });
  return smallModelBytes('dense_check', nodes, [v('x')], [v('y')]);
}

/** Median time of one dense-test run on `provider` after one warm-up run (shaders compiled, arenas sized), ms. */
export async function timeDense(provider: ProviderName, runs = 3): Promise<number> {
  const n = DENSE_SIZE;
  const x = new Float32Array(n * n).fill(1 / n);
  const opened = await openSession(denseModelBytes(), `dense check (${provider})`, { provider });
  try {
    const times: number[] = [];
    for (let i = 0; i <= runs; i++) {
      const t0 = performance.now();
      const r = await opened.session.run({ x: makeTensor('float32', x, [n, n]) });
      const y = r['y']!.data as Float32Array;
      if (Math.abs(y[0]! - 1 / n) > 1e-6) throw new Error(`the dense check computed ${y[0]} where 1/${n} was expected`);
      if (i > 0) times.push(performance.now() - t0);
    }
    return times.sort((a, b) => a - b)[times.length >> 1]!;
  } finally {
    await opened.session.release().catch(() => undefined);
  }
}

export interface DenseTimes {
  webgpuMs: number;
  cpuMs: number;
}

export type WebGpuCheck = { ok: true; ms: number; dense?: DenseTimes; denseError?: string } | { ok: false; reason: string };

export async function tryWebGpu(): Promise<WebGpuCheck> {
  const t0 = performance.now();
  let opened: OpenSession | undefined;
  let ms: number;
  try {
    opened = await openSession(addModelBytes(), 'webgpu check', { provider: 'webgpu' });
    const r = await opened.session.run({ x: makeTensor('float32', new Float32Array([1, 2, 3, 4]), [4]) });
    const y = r['y']!.data as Float32Array;
    if (y[3] !== 8) return { ok: false, reason: `wrong result ${Array.from(y).join(',')}` };
    ms = performance.now() - t0;
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    // ORT prefixes the source location; keep the sentence.
    return { ok: false, reason: msg.replace(/^.*?(Failed to get a WebGPU adapter:\s*)/s, '').trim() || msg };
  } finally {
    await opened?.session.release().catch(() => undefined);
  }
  try {
    return { ok: true, ms, dense: { webgpuMs: await timeDense('webgpu'), cpuMs: await timeDense('cpu') } };
  } catch (err) {
    return { ok: true, ms, denseError: err instanceof Error ? err.message : String(err) };
  }
}
