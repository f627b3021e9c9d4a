/** Errors across the browser's worker boundary: an AsgdError is rebuilt whole, another error keeps its name and message. */
import { AsgdError, asgdErrorFromWire, type WireError } from '../../core/errors.ts';

export { errorToWire as toWire } from '../../core/errors.ts';

export function fromWire(e: WireError): Error {
  const asgd = asgdErrorFromWire(e);
  if (asgd) return asgd;
  const err = new Error(e.message);
  err.name = e.name;
  return err;
}

/**
 * ONNX Runtime Web's allocation failure (`std::bad_alloc` from its WebAssembly heap) said as what it is, naming the
 * way out; any other error unchanged. WebAssembly holds at most 4 GB: an SD 1.5-sized float16 UNet (1.7 GB of
 * weights) opened there and failed on its first call (bench/web-large-unet.ts).
 */
export function outOfMemory(err: unknown, provider: 'webgpu' | 'wasm' | undefined, what: string): unknown {
  const msg = err instanceof Error ? err.message : String(err);
  if (err instanceof AsgdError || !/std::bad_alloc|out of memory|Aborted\(OOM\)/i.test(msg)) return err;
  return new AsgdError(`ONNX Runtime Web ran out of memory (${what}): ${msg}`, {
    kind: 'device', parameter: 'provider', expected: 'a model and size that fit the device worker\'s memory', received: `${provider ?? 'an uninitialised'} worker out of memory`,
    hint: provider === 'wasm'
      ? "WebAssembly holds at most 4 GB: use provider 'webgpu' for a model of this size (SD 1.x and larger), or the Node API"
      : 'Use a smaller size, fewer workers, or the Node API',
    cause: err,
  });
}
