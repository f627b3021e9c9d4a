/** Which ONNX Runtime Web provider a page's pipeline runs: WebGPU where the browser has a hardware adapter. */
import { AsgdError } from '../core/errors.ts';
import type { WebProvider } from './device/protocol.ts';
import type { WebPipelineOptions } from './options.ts';

interface GpuAdapterLike {
  info?: { isFallbackAdapter?: boolean };
  isFallbackAdapter?: boolean;
}

/**
 * The provider to run: 'auto' takes WebGPU when the browser offers a hardware adapter, and WebAssembly where the
 * only adapter is a fallback one (a CPU emulation such as SwiftShader, far slower than WebAssembly); an explicit
 * 'webgpu' takes any adapter.
 */
export async function pickProvider(asked: WebPipelineOptions['provider']): Promise<{ provider: WebProvider; note?: string }> {
  if (asked === 'wasm') return { provider: 'wasm' };
  const gpu = (globalThis.navigator as { gpu?: { requestAdapter(): Promise<GpuAdapterLike | null> } } | undefined)?.gpu;
  const adapter = gpu ? await gpu.requestAdapter().catch(() => null) : null;
  if (asked === 'webgpu') {
    if (!adapter) {
      throw new AsgdError('WebGPU is not available in this browser', { kind: 'device', parameter: 'provider', expected: 'a browser with a WebGPU adapter', received: gpu ? 'no adapter' : 'no navigator.gpu', hint: 'Use provider "wasm" or "auto"' });
    }
    return { provider: 'webgpu' };
  }
  if (adapter && (adapter.info?.isFallbackAdapter ?? adapter.isFallbackAdapter)) {
    return { provider: 'wasm', note: 'provider auto: the only WebGPU adapter is a fallback (software) one, so WebAssembly runs; provider "webgpu" would use it' };
  }
  return { provider: adapter ? 'webgpu' : 'wasm' };
}
