// Two WebGPU sessions of one UNet export running at the same time in two worker threads of one process, as the
// project's runner did for --devices webgpu:0,webgpu:0 before it ran such workers as processes of their own
// (PipelineOptions.workerIsolation). On Mesa's lavapipe with onnxruntime-node 1.30 this ends
// the process (segmentation fault, or "exceeds maxNumPendingDispatches" / "No cached or pending pipeline for
// deferred dispatch"), with or without a WebGPU context id of its own per session ('ctx').
//
//   node scripts/device/two-webgpu-sessions.mjs UNET_MODEL.onnx [same|ctx] [latent] [workers: 2; 1 runs]
// (UNet with the contract IO, e.g. from scripts/device/sd_models.py; float16 inputs; run from the repository root)
import { createRequire } from 'node:module';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');

if (isMainThread) {
  const [file, mode = 'same', latent = '32', count = '2'] = process.argv.slice(2);
  if (!file) throw new Error('usage: two-webgpu-sessions.mjs UNET_MODEL.onnx [same|ctx] [latent]');
  const workers = Array.from({ length: Number(count) }, (_, i) => i).map((i) => new Worker(new URL(import.meta.url), { workerData: { i, mode, file, latent: Number(latent) } }));
  const done = workers.map((w) => new Promise((resolve, reject) => {
    w.on('message', resolve);
    w.on('error', reject);
    w.on('exit', (code) => code && reject(new Error(`worker exited with ${code}`)));
  }));
  console.log(mode, await Promise.all(done));
} else {
  const { i, mode, file, latent: L } = workerData;
  const options = { executionProviders: [{ name: 'webgpu' }] };
  if (mode === 'ctx') options.extra = { ep: { webgpuexecutionprovider: { deviceId: String(i + 1) } } };
  const s = await ort.InferenceSession.create(file, options);
  const B = 2;
  const half = (dims, bits) => new ort.Tensor('float16', new Uint16Array(dims.reduce((a, b) => a * b, 1)).fill(bits), dims);
  const meta = Object.fromEntries(s.inputMetadata.map((m) => [m.name, m]));
  const feeds = {
    sample: half([B, 4, L, L], 0x3800),
    timestep: new ort.Tensor('int64', new BigInt64Array(B).fill(500n), [B]),
    encoder_hidden_states: half([B, 77, meta.encoder_hidden_states.shape[2]], 0x3400),
  };
  if (meta.text_embeds) feeds.text_embeds = half([B, meta.text_embeds.shape[1]], 0x3400);
  if (meta.time_ids) feeds.time_ids = half([B, 6], 0x5c00);
  let values = 0;
  for (let k = 0; k < 4; k++) values += (await s.run(feeds)).out_sample.data.length;
  parentPort.postMessage(`worker ${i}: ${values} values`);
}
