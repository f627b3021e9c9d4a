import { createRequire } from 'node:module';
import { spawn } from 'node:child_process';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
const require = createRequire(import.meta.url);
const [mode = 'threads', file = 'models/shapes-128/unet/model.onnx', L = '16', iters = '20'] = process.argv.slice(2);
async function work(i) {
  const ort = require('onnxruntime-node');
  const s = await ort.InferenceSession.create(file, { executionProviders: [{ name: 'webgpu' }] });
  const meta = Object.fromEntries(s.inputMetadata.map((m) => [m.name, m]));
  const B = 2, l = Number(L);
  const f = (dims, v) => new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(v), dims);
  const feeds = { sample: f([B, 4, l, l], 0.5), timestep: new ort.Tensor('int64', new BigInt64Array(B).fill(500n), [B]), encoder_hidden_states: f([B, 77, meta.encoder_hidden_states.shape[2]], 0.25) };
  let sum = 0; const t0 = Date.now();
  for (let k = 0; k < Number(iters); k++) { const o = (await s.run(feeds)).out_sample.data; sum += o[0]; }
  return `worker ${i}: ${sum.toFixed(4)} in ${Date.now() - t0} ms`;
}
if (process.env.CHILD) { console.log(await work(process.env.CHILD)); }
else if (!isMainThread) { parentPort.postMessage(await work(workerData)); }
else if (mode === 'threads') {
  const ws = [0, 1].map((i) => new Worker(new URL(import.meta.url), { workerData: i, argv: process.argv.slice(2) }));
  console.log(await Promise.all(ws.map((w) => new Promise((res, rej) => { w.on('message', res); w.on('error', rej); w.on('exit', (c) => c && rej(new Error('exit ' + c))); }))));
} else if (mode === 'one') { console.log(await work(0)); }
else {
  const ps = [0, 1].map((i) => spawn(process.execPath, [new URL(import.meta.url).pathname, ...process.argv.slice(2)], { env: { ...process.env, CHILD: String(i) }, stdio: ['ignore', 'pipe', 'inherit'] }));
  console.log(await Promise.all(ps.map((p) => new Promise((res) => { let out = ''; p.stdout.on('data', (d) => (out += d)); p.on('exit', (c, sig) => res(`${out.trim()} (exit ${c} ${sig ?? ''})`)); }))));
}
