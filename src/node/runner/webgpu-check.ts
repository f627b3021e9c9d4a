/**
 * Whether the WebGPU execution provider finds a GPU adapter here: builds a one-node ONNX model (y = x + x) in
 * memory and runs it on the default adapter (the Node binding cannot pick another). The provider ships with
 * onnxruntime-node on every platform; an adapter needs a GPU driver (Vulkan on Linux), which only a real session
 * creation can tell.
 */
import { smallModelBytes } from '../../graph/small-model.ts';
import { makeTensor, openSession, type OpenSession } from '../../onnx/session.ts';

export function addModelBytes(size = 4): Uint8Array {
  const v = (name: string) => ({ name, type: 'float32' as const, dims: [size] });
  return smallModelBytes('webgpu_check', [{ opType: 'Add', input: ['x', 'x'], output: ['y'] }], [v('x')], [v('y')]);
}

export async function tryWebGpu(): Promise<{ ok: true; ms: number } | { ok: false; reason: string }> {
  const t0 = performance.now();
  let opened: OpenSession | undefined;
  try {
    opened = await openSession(addModelBytes(), 'webgpu check', { provider: 'webgpu' });
    const r = await opened.session.run({ x: makeTensor('float32', new Float32Array([1, 2, 3, 4]), [4]) });
    const y = r['y']!.data as Float32Array;
    if (y[3] !== 8) return { ok: false, reason: `wrong result ${Array.from(y).join(',')}` };
    return { ok: true, ms: performance.now() - t0 };
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    // ORT prefixes the source location; keep the sentence.
    return { ok: false, reason: msg.replace(/^.*?(Failed to get a WebGPU adapter:\s*)/s, '').trim() || msg };
  } finally {
    await opened?.session.release().catch(() => undefined);
  }
}
