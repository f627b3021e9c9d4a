/**
 * Host data onto the WebGPU device in Node: the portable IdentityUploader (device-conditioning.ts) with sessions
 * opened on the same provider, outputs kept on the device. (Reading such a tensor's data on the host crashed
 * onnxruntime-node 1.30: results come back through a session whose outputs are on the CPU, the default.)
 */
import { IdentityUploader } from './device-conditioning.ts';
import type { SessionOptions } from './io.ts';
import { openSession } from './session.ts';

export class DeviceUploader extends IdentityUploader {
  constructor(options: SessionOptions) {
    super((model, label) => openSession(model, label, options, { outputLocation: 'gpu-buffer' }));
  }
}
