/**
 * Graph capture in ONNX Runtime Web's WebGPU provider (issue 15: "graph capture where the shapes allow"). Node's
 * binding cannot turn it on (docs/benchmarks.md); a browser can, with the session option `enableGraphCapture` and
 * every input on the device. This opens a UNet twice in Chromium (Debian's, its WebGPU adapter), as written and with
 * graph capture (shapes fixed by freeDimensionOverrides, inputs as GPU buffers written before each call), and
 * compares each captured call's output with the plain session's output for the same input:
 * - `ort-outputs`: the captured session allocates its output on the device (`preferredOutputLocation`);
 * - `bound-outputs`: the output is a GPU buffer of ours, passed as a fetch.
 * Each mode runs in a page of its own. Prints a table and writes the JSON.
 *
 *   node --import tsx bench/web-graph-capture.ts [--unet models/shapes-128/unet/model.onnx] [--latent 16]
 *        [--calls 5] [--out bench/results/web-graph-capture-<date>.json]
 *
 * The UNet must take sample [batch,4,h,w], timestep [batch] (int64) and encoder_hidden_states [batch,77,D], as the
 * shipped one does; D is read from the graph.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import * as ort from 'onnxruntime-node';
import { ROOT, serveSite } from '../test/helpers/demo-site.ts';
import { benchCli, intArg } from './args.ts';

const MODES = ['ort-outputs', 'bound-outputs'] as const;

/** Runs in the page: `ort` is onnxruntime-web's WebGPU bundle. Returns per call the input index and the differences. */
const PAGE = `<!doctype html><meta charset="utf-8"><script type="module">
import * as ort from './ort/ort.webgpu.bundle.min.mjs';
window.capture = async ({ mode, latent, dim, calls }) => {
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
  const bytes = new Uint8Array(await (await fetch('./model.onnx')).arrayBuffer());
  const B = 2, H = latent, W = latent, S = 77, D = dim;
  const base = { executionProviders: ['webgpu'], graphOptimizationLevel: 'all', logSeverityLevel: 3, freeDimensionOverrides: { batch: B, height: H, width: W, sequence: S } };
  const wave = (n, k) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.618 + k));
  const plain = await ort.InferenceSession.create(bytes, base);
  const captured = await ort.InferenceSession.create(bytes, { ...base, enableGraphCapture: true, ...(mode === 'ort-outputs' ? { preferredOutputLocation: 'gpu-buffer' } : {}) });
  const device = ort.env.webgpu.device;
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  const buffer = (n) => device.createBuffer({ size: Math.ceil(n / 16) * 16, usage });
  const [sample, timestep, hidden, out] = [buffer(B * 4 * H * W * 4), buffer(16), buffer(B * S * D * 4), buffer(B * 4 * H * W * 4)];
  device.queue.writeBuffer(timestep, 0, BigInt64Array.from([500n, 500n]));
  device.queue.writeBuffer(hidden, 0, wave(B * S * D, 2));
  const gpu = (b, dataType, dims) => ort.Tensor.fromGpuBuffer(b, { dataType, dims });
  const feeds = { sample: gpu(sample, 'float32', [B, 4, H, W]), timestep: gpu(timestep, 'int64', [B]), encoder_hidden_states: gpu(hidden, 'float32', [B, S, D]) };
  const readBack = device.createBuffer({ size: out.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const outputs = [];
  for (let k = 0; k < calls; k++) {
    device.queue.writeBuffer(sample, 0, wave(B * 4 * H * W, k));
    if (mode === 'ort-outputs') {
      outputs.push(Float32Array.from(await (await captured.run(feeds)).out_sample.getData()));
    } else {
      await captured.run(feeds, { out_sample: gpu(out, 'float32', [B, 4, H, W]) });
      const enc = device.createCommandEncoder();
      enc.copyBufferToBuffer(out, 0, readBack, 0, out.size);
      device.queue.submit([enc.finish()]);
      await readBack.mapAsync(GPUMapMode.READ);
      outputs.push(new Float32Array(readBack.getMappedRange().slice(0)));
      readBack.unmap();
    }
  }
  // The plain session's outputs only after every captured call: another session's run between the first captured
  // calls ended the captured session's next run ("Required member is undefined").
  const ref = [];
  for (let k = 0; k < calls; k++) {
    const t = (type, data, dims) => new ort.Tensor(type, data, dims);
    const r = await plain.run({ sample: t('float32', wave(B * 4 * H * W, k), [B, 4, H, W]), timestep: t('int64', BigInt64Array.from([500n, 500n]), [B]), encoder_hidden_states: t('float32', wave(B * S * D, 2), [B, S, D]) });
    ref.push(r.out_sample.data);
  }
  const maxDiff = (a, b) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
  const scale = Math.max(...ref[0].map(Math.abs));
  return { scale, calls: outputs.map((o, k) => ({ call: k, vsOwnInput: maxDiff(o, ref[k]), vsFirstInput: maxDiff(o, ref[0]), vsPreviousCall: k ? maxDiff(o, outputs[k - 1]) : null })) };
};
window.ready = true;
</script>`;

const opts = benchCli('node --import tsx bench/web-graph-capture.ts [--unet FILE] [--latent 16] [--calls 5] [--out FILE]', {
  options: { unet: { type: 'string' }, latent: { type: 'string' }, calls: { type: 'string' }, out: { type: 'string' } },
}, ({ values }) => ({
  unet: path.resolve(values.unet ?? path.join(ROOT, 'models', 'shapes-128', 'unet', 'model.onnx')),
  latent: values.latent === undefined ? 16 : intArg('--latent', values.latent, 8),
  calls: values.calls === undefined ? 5 : intArg('--calls', values.calls, 2),
  out: values.out,
}));

// The context width from the graph itself (onnxruntime-node reads the metadata).
const meta = await ort.InferenceSession.create(opts.unet);
const hiddenShape = meta.inputMetadata.find((i) => i.name === 'encoder_hidden_states');
const dim = hiddenShape?.isTensor ? Number(hiddenShape.shape[2]) : NaN;
await meta.release();
if (!Number.isInteger(dim)) throw new Error(`${opts.unet}: no encoder_hidden_states input with a fixed width`);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-capture-'));
fs.writeFileSync(path.join(dir, 'index.html'), PAGE);
fs.symlinkSync(path.join(ROOT, 'node_modules', 'onnxruntime-web', 'dist'), path.join(dir, 'ort'));
fs.symlinkSync(opts.unet, path.join(dir, 'model.onnx'));
const site = await serveSite(dir);
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu'] });
type Result = { scale: number; calls: { call: number; vsOwnInput: number; vsFirstInput: number; vsPreviousCall: number | null }[] };
const results: Record<string, Result | { error: string }> = {};
try {
  for (const mode of MODES) {
    const page = await browser.newPage();
    await page.goto(site.url);
    await page.waitForFunction('window.ready === true');
    results[mode] = await page.evaluate(`window.capture(${JSON.stringify({ mode, latent: opts.latent, dim, calls: opts.calls })})`).catch((e: Error) => ({ error: e.message.split('\n')[0]! })) as Result;
    await page.close();
  }
} finally {
  await browser.close();
  await site.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

const f = (x: number | null) => (x === null ? '' : x.toFixed(4));
console.log(`| mode | call | max diff vs the plain output for its input | vs the plain output for call 0's input | vs the previous call |`);
console.log(`| --- | --- | --- | --- | --- |`);
for (const mode of MODES) {
  const r = results[mode]!;
  if ('error' in r) console.log(`| ${mode} | | failed: ${r.error} | | |`);
  else for (const c of r.calls) console.log(`| ${mode} | ${c.call} | ${f(c.vsOwnInput)} | ${f(c.vsFirstInput)} | ${f(c.vsPreviousCall)} |`);
}
const first = Object.values(results).find((r): r is Result => !('error' in r));
if (first) console.log(`(outputs up to ${first.scale.toFixed(3)} in magnitude)`);
const out = opts.out ?? path.join(ROOT, 'bench', 'results', `web-graph-capture-${new Date().toISOString().slice(0, 10)}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ unet: opts.unet, latent: opts.latent, dim, onnxruntimeWeb: JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'onnxruntime-web', 'package.json'), 'utf8')).version, results }, null, 2));
console.log(`wrote ${out}`);
