/**
 * Whether ONNX Runtime Web reads external data past 4 GiB of one file (an SDXL UNet in float16 keeps 5.1 GB in one
 * `model.onnx_data`), and whether the pieces of src/graph/external-pieces.ts fix it. A graph of K Add nodes, each
 * adding a weight of M MiB whose every value is its index plus one, to a zero input: the output is K(K+1)/2 where
 * every weight was read from its own bytes. Opened in a worker of Debian's Chromium (WebGPU on its adapter, or
 * WebAssembly), its weights filled in the worker and mounted as `externalData`:
 * - `one-file`: one file of K x M MiB, as exported;
 * - `pieces`: the pieces planPieces cuts (1 GiB at most, or `--piece-mib`), each a view of that one buffer, the model rewritten.
 * Each layout in a browser of its own. Prints a table and writes the JSON. The default (18 x 256 MiB = 4.5 GiB) made
 * Chromium's processes peak at about 19 GiB here: a check too large for the test suite.
 *
 *   node --import tsx bench/web-external-offsets.ts [--tensors 18] [--tensor-mib 256] [--provider webgpu|wasm]
 *        [--layouts one-file,pieces] [--piece-mib 1024] [--out bench/results/web-external-offsets-<date>.json]
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import {
  GraphProtoSchema, ModelProtoSchema, NodeProtoSchema, OperatorSetIdProtoSchema, StringStringEntryProtoSchema, TensorProtoSchema, TensorShapeProto_DimensionSchema,
  TensorShapeProtoSchema, TypeProto_TensorSchema, TypeProtoSchema, ValueInfoProtoSchema,
} from 'onnx-buf';
import { chromium } from 'playwright-core';
import { EXTERNAL_PIECE_BYTES, planPieces } from '../src/graph/external-pieces.ts';
import { ROOT, serveSite } from '../test/helpers/demo-site.ts';
import { benchCli, choiceArg, intArg } from './args.ts';

const LAYOUTS = ['one-file', 'pieces'] as const;
type Layout = (typeof LAYOUTS)[number];

const opts = benchCli('node --import tsx bench/web-external-offsets.ts [--tensors 18] [--tensor-mib 256] [--provider webgpu|wasm] [--layouts one-file,pieces] [--piece-mib 1024] [--out FILE]', {
  options: { tensors: { type: 'string' }, 'tensor-mib': { type: 'string' }, 'piece-mib': { type: 'string' }, provider: { type: 'string' }, layouts: { type: 'string' }, out: { type: 'string' } },
}, ({ values }) => ({
  tensors: values.tensors === undefined ? 18 : intArg('--tensors', values.tensors, 1),
  tensorMib: values['tensor-mib'] === undefined ? 256 : intArg('--tensor-mib', values['tensor-mib'], 1),
  pieceBytes: values['piece-mib'] === undefined ? EXTERNAL_PIECE_BYTES : intArg('--piece-mib', values['piece-mib'], 1) * 2 ** 20,
  provider: values.provider === undefined ? 'webgpu' : choiceArg('--provider', values.provider, ['webgpu', 'wasm'] as const),
  layouts: (values.layouts ?? LAYOUTS.join(',')).split(',').map((l) => choiceArg('--layouts', l, LAYOUTS)),
  out: values.out,
}));

const FILE = 'weights.bin';
const N = (opts.tensorMib * 2 ** 20) / 4;
const K = opts.tensors;

/** x + w0 + w1 + ... + w(K-1), each w of N float32 values in FILE, one after another. */
function addChain(): Uint8Array {
  const dims = [BigInt(N)];
  const value = (name: string) => create(ValueInfoProtoSchema, {
    name,
    type: create(TypeProtoSchema, { value: { case: 'tensorType', value: create(TypeProto_TensorSchema, { elemType: 1, shape: create(TensorShapeProtoSchema, { dim: [create(TensorShapeProto_DimensionSchema, { value: { case: 'dimValue', value: BigInt(N) } })] }) }) } }),
  });
  const initializer = Array.from({ length: K }, (_, i) => create(TensorProtoSchema, {
    name: `w${i}`, dims, dataType: 1, dataLocation: 1,
    externalData: [['location', FILE], ['offset', String(i * N * 4)], ['length', String(N * 4)]].map(([key, v]) => create(StringStringEntryProtoSchema, { key: key!, value: v! })),
  }));
  const node = Array.from({ length: K }, (_, i) => create(NodeProtoSchema, { opType: 'Add', input: [i === 0 ? 'x' : `h${i - 1}`, `w${i}`], output: [i === K - 1 ? 'y' : `h${i}`] }));
  const graph = create(GraphProtoSchema, { name: 'add-chain', node, initializer, input: [value('x')], output: [value('y')] });
  return toBinary(ModelProtoSchema, create(ModelProtoSchema, { irVersion: 8n, opsetImport: [create(OperatorSetIdProtoSchema, { domain: '', version: 17n })], graph }));
}

/** The worker: fills the weights, mounts them as the layout says, opens the session, runs it once. */
const WORKER = `import * as ort from './ort/ort.webgpu.bundle.min.mjs';
ort.env.wasm.numThreads = 1;
ort.env.wasm.wasmPaths = new URL('./ort/', location.href).href;
onmessage = async ({ data: { model, mounts, N, K, provider } }) => {
  try {
    const bytes = new Uint8Array(N * 4 * K);
    const values = new Float32Array(bytes.buffer);
    for (let i = 0; i < K; i++) values.fill(i + 1, i * N, (i + 1) * N);
    const t0 = performance.now();
    const session = await ort.InferenceSession.create(model, { executionProviders: [provider], logSeverityLevel: 3, externalData: mounts.map((m) => ({ path: m.path, data: bytes.subarray(m.start, m.end) })) });
    const t1 = performance.now();
    const y = (await session.run({ x: new ort.Tensor('float32', new Float32Array(N), [N]) })).y.data;
    const wrong = y.reduce((n, v) => n + (v !== K * (K + 1) / 2 ? 1 : 0), 0);
    postMessage({ first: y[0], last: y[N - 1], wrong, openMs: t1 - t0, runMs: performance.now() - t1 });
  } catch (e) {
    postMessage({ error: String(e?.message ?? e).split('\\n')[0] });
  }
};`;
const PAGE = `<!doctype html><meta charset="utf-8"><script>
window.check = (req) => new Promise((resolve) => {
  const w = new Worker('./worker.mjs', { type: 'module' });
  w.onmessage = (e) => resolve(e.data);
  w.onerror = (e) => resolve({ error: 'worker: ' + e.message });
  w.postMessage(req);
});
</script>`;

/** The resident memory of every Chromium process, sampled until stop() (GiB at the peak). */
function sampleRss(): { stop: () => number } {
  let peak = 0;
  const timer = setInterval(() => {
    try {
      const kib = execFileSync('ps', ['-C', 'chromium', '-o', 'rss='], { encoding: 'utf8' }).split('\n').reduce((n, l) => n + (Number(l) || 0), 0);
      peak = Math.max(peak, kib / 2 ** 20);
    } catch {
      // no chromium process at this instant
    }
  }, 500);
  return { stop: () => (clearInterval(timer), peak) };
}

const model = addChain();
const bytes = N * 4 * K;
const plans: Record<Layout, { model: number[]; mounts: { path: string; start: number; end: number }[] }> = {
  'one-file': { model: [...model], mounts: [{ path: FILE, start: 0, end: bytes }] },
  pieces: (() => {
    const p = planPieces(model, [{ path: FILE, bytes }], opts.pieceBytes);
    return { model: [...p.model], mounts: p.pieces.length > 0 ? p.pieces : [{ path: FILE, start: 0, end: bytes }] };
  })(),
};

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-offsets-'));
fs.writeFileSync(path.join(dir, 'index.html'), PAGE);
fs.writeFileSync(path.join(dir, 'worker.mjs'), WORKER);
fs.symlinkSync(path.join(ROOT, 'node_modules', 'onnxruntime-web', 'dist'), path.join(dir, 'ort'));
const site = await serveSite(dir);
type Result = { first: number; last: number; wrong: number; openMs: number; runMs: number } | { error: string };
const results: Partial<Record<Layout, Result & { mounts: number; peakRssGiB: number }>> = {};
try {
  for (const layout of opts.layouts) {
    const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args: ['--headless', '--no-sandbox', '--enable-unsafe-webgpu'] });
    const rss = sampleRss();
    try {
      const page = await browser.newPage();
      await page.goto(site.url);
      const r = (await page.evaluate(
        (req) => (globalThis as unknown as { check: (q: object) => Promise<unknown> }).check({ ...req, model: new Uint8Array(req.model) }),
        { ...plans[layout], N, K, provider: opts.provider },
      )) as Result;
      results[layout] = { ...r, mounts: plans[layout].mounts.length, peakRssGiB: rss.stop() };
    } finally {
      rss.stop();
      await browser.close();
    }
  }
} finally {
  await site.close();
  fs.rmSync(dir, { recursive: true, force: true });
}

const expected = (K * (K + 1)) / 2;
console.log(`${K} weights of ${opts.tensorMib} MiB (${(bytes / 2 ** 30).toFixed(2)} GiB), provider ${opts.provider}; every output value should be ${expected}`);
console.log('| layout | files mounted | output (first, last) | values wrong | open ms | run ms | Chromium peak RSS |');
console.log('| --- | --- | --- | --- | --- | --- | --- |');
for (const layout of opts.layouts) {
  const r = results[layout]!;
  if ('error' in r) console.log(`| ${layout} | ${r.mounts} | failed: ${r.error} | | | | ${r.peakRssGiB.toFixed(1)} GiB |`);
  else console.log(`| ${layout} | ${r.mounts} | ${r.first}, ${r.last} | ${r.wrong} of ${N} | ${r.openMs.toFixed(0)} | ${r.runMs.toFixed(0)} | ${r.peakRssGiB.toFixed(1)} GiB |`);
}
const out = opts.out ?? path.join(ROOT, 'bench', 'results', `web-external-offsets-${new Date().toISOString().slice(0, 10)}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({
  tensors: K, tensorMib: opts.tensorMib, provider: opts.provider, pieceBytes: opts.pieceBytes, expected,
  onnxruntimeWeb: JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'onnxruntime-web', 'package.json'), 'utf8')).version, results,
}, null, 2));
console.log(`wrote ${out}`);
