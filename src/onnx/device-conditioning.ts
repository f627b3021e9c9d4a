/**
 * The text conditioning held on the device for a denoiser session: each (input, CFG rows) tensor is uploaded on
 * first use and fed from the device on every later call with the same TextConditioning object; a new conditioning
 * object (the next generation) disposes the old tensors first. The upload itself is the caller's (onnx/device-upload.ts
 * in Node). Portable: no Node APIs.
 */
import type { TextConditioning } from '../core/conditioning.ts';
import { identityModelBytes } from '../graph/small-model.ts';
import { makeTensor, type OpenSession, type OrtTensor } from './tensors.ts';
import type { DeviceConditioningCounts } from './io.ts';

export type { DeviceConditioningCounts } from './io.ts';

/** Host data in the element type the session input wants. */
export type HostTensor =
  | { type: 'float32'; data: Float32Array; dims: readonly number[] }
  | { type: 'float16'; data: Uint16Array; dims: readonly number[] }
  | { type: 'int64'; data: BigInt64Array; dims: readonly number[] };

/** The ONNX Runtime tensor of host data (no copy). */
export function hostTensor(t: HostTensor): OrtTensor {
  switch (t.type) {
    case 'float32':
      return makeTensor('float32', t.data, t.dims);
    case 'float16':
      return makeTensor('float16', t.data, t.dims);
    case 'int64':
      return makeTensor('int64', t.data, t.dims);
  }
}

/** Puts host data on the device; the returned tensor is the caller's to dispose. */
export interface TensorUploader {
  upload(t: HostTensor): Promise<OrtTensor>;
}

/**
 * Host data onto a WebGPU device: a one-node Identity model per element type and rank, opened by `openOnDevice` on
 * that device with its output kept there, returns a GPU tensor that the device's other sessions take as an input.
 * Node (onnx/device-upload.ts) and the browser's device worker give the opener.
 */
export class IdentityUploader implements TensorUploader {
  private readonly sessions = new Map<string, Promise<OpenSession>>();

  constructor(private readonly openOnDevice: (model: Uint8Array, label: string) => Promise<OpenSession>) {}

  async upload(t: HostTensor): Promise<OrtTensor> {
    const key = `${t.type}/${t.dims.length}`;
    let s = this.sessions.get(key);
    if (!s) {
      s = this.openOnDevice(identityModelBytes(t.type, t.dims.length), 'device upload');
      this.sessions.set(key, s);
    }
    const r = await (await s).session.run({ x: hostTensor(t) });
    return r['y']!;
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of all) await (await s.catch(() => undefined))?.session.release();
  }
}


export class DeviceConditioning {
  private cond?: TextConditioning;
  private readonly held = new Map<string, Promise<OrtTensor>>();
  private uploads = 0;
  private disposed = 0;

  constructor(private readonly uploader: TensorUploader) {}

  /** The device tensor for `key` of `cond`, uploaded from `host()` the first time. */
  tensor(cond: TextConditioning, key: string, host: () => HostTensor): Promise<OrtTensor> {
    if (cond !== this.cond) {
      this.clear();
      this.cond = cond;
    }
    let t = this.held.get(key);
    if (!t) {
      t = this.uploader.upload(host());
      this.uploads++;
      this.held.set(key, t);
      // A failed upload is not kept: the next call tries again.
      t.catch(() => this.held.get(key) === t && this.held.delete(key));
    }
    return t;
  }

  /** Disposes every held tensor (a new conditioning, or the session's release). */
  clear(): void {
    for (const t of this.held.values()) {
      this.disposed++;
      t.then((x) => x.dispose(), () => undefined);
    }
    this.held.clear();
    this.cond = undefined;
  }

  get counts(): DeviceConditioningCounts {
    return { uploads: this.uploads, disposed: this.disposed, live: this.held.size };
  }
}
