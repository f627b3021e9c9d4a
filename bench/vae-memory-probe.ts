/**
 * Child of `npm run bench:vae-memory -- --probe`: runs one ONNX graph of the SD-width fixture in this fresh process,
 * loading nothing but ONNX Runtime (so the peak RSS is the graph's and the runtime's), and prints the peak after
 * loading and after each run, and the CPU time.
 *
 *   node --import tsx bench/vae-memory-probe.ts <model.onnx> <image px> <ORT session options JSON> <runs>
 */
import { createRequire } from 'node:module';
import type * as OrtTypes from 'onnxruntime-node';

// As in src/graph/vae-norm-graph.ts (not imported: it would load the ONNX protobuf code into this process).
const NORM_AFFINE_INPUT = 'asgd_norm_affine';
const NORM_REGION_INPUT = 'asgd_region';
const rssMiB = () => Math.round(process.resourceUsage().maxRSS / 1024);

function smoothLatent(h: number, w: number): Float32Array {
  const lat = new Float32Array(4 * h * w);
  for (let c = 0; c < 4; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) lat[(c * h + y) * w + x] = Math.sin(0.05 * x + 0.03 * y + c);
  return lat;
}

const [file, sizeArg, ortJson, runsArg] = process.argv.slice(2);
const ort = createRequire(import.meta.url)('onnxruntime-node') as typeof OrtTypes;
const h = Number(sizeArg) / 8;
const options = { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 1, interOpNumThreads: 1, ...JSON.parse(ortJson!) } as OrtTypes.InferenceSession.SessionOptions;
const s = await ort.InferenceSession.create(file!, options);
const afterLoadMiB = rssMiB();
const feeds: Record<string, OrtTypes.Tensor> = { latent_sample: new ort.Tensor('float32', smoothLatent(h, h), [1, 4, h, h]) };
if (s.inputNames.includes(NORM_AFFINE_INPUT)) {
  const n = (s.inputMetadata.find((m) => m.name === NORM_AFFINE_INPUT) as unknown as { shape: readonly number[] }).shape[0]!;
  // Unit maps: a = 1, b = 0 per layer (SD's layers have 32 groups).
  const affine = new Float32Array(n).map((_, i) => (Math.floor(i / 32) % 2 === 0 ? 1 : 0));
  feeds[NORM_AFFINE_INPUT] = new ort.Tensor('float32', affine, [n]);
}
const t0 = performance.now();
const peaks: number[] = [];
for (let run = 0; run < Number(runsArg); run++) {
  if (feeds[NORM_AFFINE_INPUT]) {
    // The middle 75 % of each side; later runs shift it by one eighth (tiles own different regions).
    const m = Math.round(h / 8);
    const d = run % 2 === 0 ? 0 : m;
    feeds[NORM_REGION_INPUT] = new ort.Tensor('int64', BigInt64Array.from([m - d, m, h - m, h - m + d].map(BigInt)), [4]);
  }
  await s.run(feeds);
  peaks.push(rssMiB());
}
const cpu = process.cpuUsage();
console.log(JSON.stringify({ afterLoadMiB, maxRssMiB: rssMiB(), peakAfterRunMiB: peaks, ms: Math.round(performance.now() - t0), cpuMs: Math.round((cpu.user + cpu.system) / 1000) }));
process.exit(0);
