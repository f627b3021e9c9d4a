// Runs every exported ONNX model with onnxruntime-node on the inputs export.py saved and compares with the
// torch outputs: node training/check-export.mjs [check-dir]  (default training/runs/export-check).
// Exit code 1 when any output differs by more than the manifest's tolerance (1e-4) or has another shape.
import { readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';

const here = dirname(fileURLToPath(import.meta.url));
const checkDir = process.argv[2] ?? join(here, 'runs', 'export-check');

/** Minimal .npy reader for little-endian f4 / i4 / i8 C-order arrays. */
function readNpy(path) {
  const buf = readFileSync(path);
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${path}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${path}: Fortran order is not supported`);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const body = buf.subarray(start + headerLen);
  const copy = new Uint8Array(body).buffer; // aligned copy
  const types = { '<f4': ['float32', Float32Array], '<i4': ['int32', Int32Array], '<i8': ['int64', BigInt64Array] };
  if (!types[descr]) throw new Error(`${path}: dtype ${descr} is not supported`);
  const [type, Ctor] = types[descr];
  return new ort.Tensor(type, new Ctor(copy), shape);
}

const manifest = JSON.parse(readFileSync(join(checkDir, 'manifest.json'), 'utf8'));
const sessions = new Map();
let failed = 0;
for (const c of manifest.cases) {
  if (!sessions.has(c.model)) {
    sessions.set(c.model, await ort.InferenceSession.create(join(manifest.model_dir, c.model, 'model.onnx'), {
      intraOpNumThreads: 2,
    }));
  }
  const session = sessions.get(c.model);
  const feeds = Object.fromEntries(Object.entries(c.inputs).map(([k, f]) => [k, readNpy(join(checkDir, f))]));
  const t0 = performance.now();
  const out = await session.run(feeds);
  const ms = performance.now() - t0;
  for (const [name, file] of Object.entries(c.outputs)) {
    const ref = readNpy(join(checkDir, file));
    const got = out[name];
    let maxDiff = 0;
    const sameShape = got && got.dims.join('x') === ref.dims.join('x');
    if (sameShape) for (let i = 0; i < ref.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(got.data[i] - ref.data[i]));
    const ok = sameShape && maxDiff < manifest.tolerance && Number.isFinite(maxDiff);
    if (!ok) failed++;
    console.log(`${ok ? 'ok  ' : 'FAIL'} ${c.name}.${name} [${ref.dims}] got [${got?.dims}] max|diff| ${maxDiff.toExponential(2)} (${ms.toFixed(1)} ms)`);
  }
}
console.log(failed ? `${failed} output(s) differ` : 'all outputs match');
process.exit(failed ? 1 : 0);
