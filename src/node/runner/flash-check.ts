/**
 * The check of ONNX Runtime's WebGPU flash-attention kernel (src/graph/attention-check.ts) through the project's
 * session module: run in a process of its own by runner/devices.ts checkFlashAttention, since a WebGPU session in a
 * process beside a WebGPU worker thread ended that process in onnxruntime-node 1.30.
 */
import { checkFlashCases, FLASH_CASES, runFlashCheck, type FlashCase, type FlashCaseInputs, type FlashCaseResult, type FlashCheck } from '../../graph/attention-check.ts';
import type { ProviderName } from '../../onnx/io.ts';
import { floatTensor, openSession, readFloat, releaseSession, type OpenSession } from '../../onnx/session.ts';

export type { FlashCheck } from '../../graph/attention-check.ts';

/** One case's node on `provider`: its output as float32. */
function runOn(provider: ProviderName) {
  return async (c: FlashCase, x: FlashCaseInputs): Promise<Float32Array> => {
    let s: OpenSession | undefined;
    try {
      s = await openSession(x.model, 'attention check', { provider });
      const r = await s.session.run({ q: floatTensor(c.type, x.q, x.qDims, 'q'), k: floatTensor(c.type, x.k, x.kvDims, 'k'), v: floatTensor(c.type, x.v, x.kvDims, 'v') });
      return readFloat(r['o']!, 'o');
    } finally {
      await releaseSession(s);
    }
  };
}

/** Each case on `provider` against the float64 reference. */
export function checkMultiHeadAttention(provider: ProviderName, cases: readonly FlashCase[] = FLASH_CASES): Promise<FlashCaseResult[]> {
  return checkFlashCases(runOn(provider), cases);
}

/** The check on the WebGPU provider (in the child process devices.ts starts). */
export function tryFlashAttention(): Promise<FlashCheck> {
  return runFlashCheck(runOn('webgpu'), () => performance.now());
}
