/**
 * What running a float16 VAE in float32 costs (not a test; src/graph/float32-upcast.ts, src/node/float32-vae.ts), on
 * an SD-width random-weight decoder (test/fixtures/groupnorm-vae.ts: SD 1.x/2.x and SDXL's widths, 49 M parameters):
 *  - serializing the float32 model: the protobuf library's toBinary against modelBytes and modelParts
 *    (src/graph/model-bytes.ts), alternately, median of the rounds;
 *  - the conversion as a load does it the first time (read, hash, convert, write) and later (the sidecar read);
 *  - one decode at a latent of --latent px on the CPU provider: the float16 export as exported against its float32
 *    graph, alternately, median of the rounds.
 * Prints Markdown tables and writes bench/results/float32-vae.json.
 *
 *   npm run bench:float32-vae -- [--rounds 3] [--latent 32]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import * as ort from 'onnxruntime-node';
import { float32ToFloat16 } from '../src/core/float16.ts';
import { float32Model } from '../src/graph/float32-upcast.ts';
import { modelBytes, modelParts } from '../src/graph/model-bytes.ts';
import { prepareFloat32Vae } from '../src/node/float32-vae.ts';
import { SD_VAE_DECODER, buildGroupNormVaeDecoder } from '../test/fixtures/groupnorm-vae.ts';
import { benchCli, intArg } from './args.ts';
import { timingStats } from './timing.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const USAGE = `
npm run bench:float32-vae [-- --rounds N --latent L]: an SD-width float16 VAE decoder run in float32: serializing it
(toBinary against modelBytes), converting and storing it (first load, later loads), and one decode at an L x L latent
(default 32) on the CPU provider, float16 as exported against float32; median of N rounds (default 3).
Prints Markdown tables and writes bench/results/float32-vae.json.
`;

const { rounds, latent } = benchCli(USAGE, { options: { rounds: { type: 'string' }, latent: { type: 'string' } } }, ({ values }) => ({
  rounds: values.rounds === undefined ? 3 : intArg('--rounds', values.rounds, 1),
  latent: values.latent === undefined ? 32 : intArg('--latent', values.latent, 8),
}));

const median = (xs: number[]) => timingStats(xs).medianMs;
const time = async (f: () => unknown) => {
  const t = performance.now();
  await f();
  return performance.now() - t;
};

const half = toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 1, floatType: 'float16', form: 'instance-norm', ...SD_VAE_DECODER }));
const converted = float32Model(half);
if ('reason' in converted) throw new Error(converted.reason);
const model = converted.model;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-float32-vae-'));

// Serializing: alternately, so that load on a shared machine hits each alike.
const serial: Record<'toBinary' | 'modelBytes' | 'modelParts', number[]> = { toBinary: [], modelBytes: [], modelParts: [] };
let float32Bytes = 0;
for (let r = 0; r < rounds; r++) {
  serial.toBinary.push(await time(() => { float32Bytes = toBinary(ModelProtoSchema, model).length; }));
  serial.modelBytes.push(await time(() => modelBytes(model)));
  serial.modelParts.push(await time(() => fs.promises.writeFile(path.join(dir, 'parts.onnx'), modelParts(model))));
}

// The conversion as a pipeline's load makes it: the first load derives and stores, later ones read the sidecar.
const source = path.join(dir, 'model.onnx');
fs.writeFileSync(source, half);
let file = '';
const firstMs = await time(async () => {
  const r = await prepareFloat32Vae(source);
  if (!('file' in r)) throw new Error(r.reason);
  file = r.file;
});
const laterMs = await time(() => prepareFloat32Vae(source));

// One decode, float16 as exported against the float32 graph, on the CPU provider.
const input = Float32Array.from({ length: 4 * latent * latent }, (_, i) => Math.sin(i * 0.37) * 2);
const sessions = {
  float16: await ort.InferenceSession.create(source, { logSeverityLevel: 3 }),
  float32: await ort.InferenceSession.create(file, { logSeverityLevel: 3 }),
};
const feeds = {
  float16: { latent_sample: new ort.Tensor('float16', float32ToFloat16(input), [1, 4, latent, latent]) },
  float32: { latent_sample: new ort.Tensor('float32', input, [1, 4, latent, latent]) },
};
const decode: Record<'float16' | 'float32', number[]> = { float16: [], float32: [] };
for (const k of ['float16', 'float32'] as const) await sessions[k].run(feeds[k]); // warm-up
for (let r = 0; r < rounds; r++) for (const k of ['float16', 'float32'] as const) decode[k].push(await time(() => sessions[k].run(feeds[k])));
await Promise.all(Object.values(sessions).map((s) => s.release()));
fs.rmSync(dir, { recursive: true, force: true });

const result = {
  date: new Date().toISOString(), cores: os.availableParallelism(), load: os.loadavg()[0], rounds, latent,
  float16Bytes: half.length, float32Bytes,
  serializeMs: { toBinary: median(serial.toBinary), modelBytes: median(serial.modelBytes), modelPartsWritten: median(serial.modelParts) },
  convertMs: { first: firstMs, later: laterMs },
  decodeMs: { float16: median(decode.float16), float32: median(decode.float32) },
  runs: { serial, decode },
};
const mib = (n: number) => (n / 2 ** 20).toFixed(1);
console.log(`SD-width VAE decoder: ${mib(half.length)} MiB in float16, ${mib(float32Bytes)} MiB in float32; median of ${rounds} (load ${result.load.toFixed(1)})\n`);
console.log('| serializing the float32 model | ms |\n| --- | ---: |');
console.log(`| toBinary (protobuf library) | ${result.serializeMs.toBinary.toFixed(0)} |`);
console.log(`| modelBytes (one buffer) | ${result.serializeMs.modelBytes.toFixed(0)} |`);
console.log(`| modelParts, written to a file | ${result.serializeMs.modelPartsWritten.toFixed(0)} |\n`);
console.log('| conversion as a load makes it | ms |\n| --- | ---: |');
console.log(`| first load (read, hash, convert, write) | ${firstMs.toFixed(0)} |\n| later loads (sidecar) | ${laterMs.toFixed(1)} |\n`);
console.log(`| one decode, ${latent}x${latent} latent, CPU provider | ms |\n| --- | ---: |`);
console.log(`| float16 as exported | ${result.decodeMs.float16.toFixed(0)} |\n| float32 graph | ${result.decodeMs.float32.toFixed(0)} |`);
fs.mkdirSync(path.join(ROOT, 'bench', 'results'), { recursive: true });
fs.writeFileSync(path.join(ROOT, 'bench', 'results', 'float32-vae.json'), `${JSON.stringify(result, null, 2)}\n`);
