/**
 * Host data onto the WebGPU device: a one-node Identity model per element type and rank, opened on the same provider
 * with its outputs kept on the device, returns a GPU tensor that another session of this process takes as an input.
 * (Reading such a tensor's data on the host crashed onnxruntime-node 1.30: results come back through a session whose
 * outputs are on the CPU, the default.)
 */
import { identityModelBytes } from '../graph/small-model.ts';
import { hostTensor, type HostTensor, type TensorUploader } from './device-conditioning.ts';
import type { SessionOptions } from './io.ts';
import { openSession, releaseSession, type OpenSession, type OrtTensor } from './session.ts';

export class DeviceUploader implements TensorUploader {
  private readonly sessions = new Map<string, Promise<OpenSession>>();

  constructor(private readonly options: SessionOptions) {}

  async upload(t: HostTensor): Promise<OrtTensor> {
    const key = `${t.type}/${t.dims.length}`;
    let s = this.sessions.get(key);
    if (!s) {
      s = openSession(identityModelBytes(t.type, t.dims.length), 'device upload', this.options, { outputLocation: 'gpu-buffer' });
      this.sessions.set(key, s);
    }
    const r = await (await s).session.run({ x: hostTensor(t) });
    return r['y']!;
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of all) await releaseSession(await s.catch(() => undefined));
  }
}
