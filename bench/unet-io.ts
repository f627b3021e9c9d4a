/**
 * The UNet call's input/output traffic on one device (issue 15): one CFG call (batch 2, part 'both') timed with the
 * text conditioning fed from the host every call (today's path before device residency; still the CPU provider's)
 * and held on the device (src/onnx/device-conditioning.ts), interleaved call by call so that load on a shared
 * machine hits both alike; the upload alone (the Identity session putting the same tensors on the device); and
 * the CFG combination on the device tried on top (a small graph on the UNet's device-resident output, so only
 * [1,C,h,w] comes back). Graph capture is not measured: onnxruntime-node 1.30 cannot turn it on (docs/benchmarks.md).
 *
 *   npm run bench:unet-io -- [--device webgpu:0] [--iters 20] [--warmup 3] [--latent 32] [--cases shipped,sd15,sdxl]
 *                            [--unet FILE ...] [--out bench/results/unet-io-<date>.json]
 *
 * Cases: `shipped` is models/shapes-128's UNet (context 77x64) at its 16x16 latent; `sd15` and `sdxl` are the
 * test fixtures' tiny UNet (test/fixtures/tiny-unet.ts) at SD 1.5's context width (77x768) and SDXL's (77x2048 and
 * text_embeds 1280), at --latent; `--unet FILE` adds an exported UNet (the card's SD-sized exports). Prints a
 * markdown table (ratios to the host-fed call) and writes the JSON. Absolute times on a shared machine are noise;
 * the ratios are the result.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { cfgCombineModelBytes } from '../src/graph/small-model.ts';
import { DeviceConditioning, type HostTensor } from '../src/onnx/device-conditioning.ts';
import { DeviceUploader } from '../src/onnx/device-upload.ts';
import type { ProviderName } from '../src/onnx/io.ts';
import { floatTensor, openSession, readFloat, releaseSession, type OpenSession } from '../src/onnx/session.ts';
import { denoiserAdapter } from '../src/onnx/transformer.ts';
import type { TextConditioning, UnetCall } from '../src/onnx/unet.ts';
import { BenchUsageError, benchCli, choiceList, intArg } from './args.ts';
import { float32ToFloat16 } from '../src/core/float16.ts';
import { buildTinyUnet } from '../test/fixtures/tiny-unet.ts';
import { timingStats, type Timing } from './timing.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export interface UnetIoOptions {
  provider: ProviderName;
  iters: number;
  warmup: number;
  /** Latent side of the fixture cases (the shipped model and exports use their config's sample_size). */
  latent: number;
  cases: string[];
  /** Exported UNets to add (model.onnx paths). */
  files: string[];
}

export interface UnetIoCase {
  name: string;
  latent: number;
  context: string;
  /** Bytes of conditioning a host-fed call sends (encoder_hidden_states, text_embeds; batch 2). */
  conditioningBytes: number;
  hostFed: Timing;
  deviceResident: Timing;
  deviceOverHost: number;
  /** The Identity upload of the same conditioning tensors, alone. */
  upload: Timing;
  uploadOverHost: number;
  /** max |device-resident - host-fed| over the output (0: bit-identical). */
  deviceMaxDiff: number;
  uploadsCounted: number;
  /** CFG combined on the device after the UNet (outputs on the device), with device-resident conditioning. */
  deviceCfg?: { timing: Timing; overHost: number; overDevice: number; maxDiff: number } | { error: string };
}


function wave(n: number, k: number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin(i * 0.618 + k));
}

function maxDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Times each of `fns` once per round, in turn, for warmup + iters rounds. */
async function interleaved(fns: (() => Promise<unknown>)[], warmup: number, iters: number): Promise<Timing[]> {
  const times: number[][] = fns.map(() => []);
  for (let i = 0; i < warmup + iters; i++) {
    for (let k = 0; k < fns.length; k++) {
      const t0 = performance.now();
      await fns[k]!();
      if (i >= warmup) times[k]!.push(performance.now() - t0);
    }
  }
  return times.map((t) => timingStats(t));
}

function errorText(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0]!.slice(0, 300);
}

type Model = { name: string; file: string | Uint8Array; latent: number };

function fixtureModel(name: 'sd15' | 'sdxl', latent: number): Model {
  const model = buildTinyUnet({
    seed: 0, floatType: 'float32', timestep: 'int64',
    crossAttentionDim: name === 'sd15' ? 768 : 2048,
    ...(name === 'sdxl' ? { addedConditioning: { textEmbedsDim: 1280, addTimeDim: 8 } } : {}),
  });
  return { name: `fixture UNet, ${name === 'sd15' ? 'SD 1.5' : 'SDXL'} context`, file: toBinary(ModelProtoSchema, model), latent };
}

function configuredLatent(file: string, fallback: number): number {
  try {
    const n = Number(JSON.parse(fs.readFileSync(path.join(path.dirname(file), 'config.json'), 'utf8')).sample_size);
    return Number.isFinite(n) && n > 0 ? n : fallback;
  } catch {
    return fallback;
  }
}

async function benchCase(m: Model, o: UnetIoOptions): Promise<UnetIoCase> {
  const opts = { provider: o.provider };
  const s = await openSession(m.file, 'unet', opts);
  const uploader = new DeviceUploader(opts);
  const extra: OpenSession[] = [];
  try {
    const host = denoiserAdapter(s);
    const device = new DeviceConditioning(uploader);
    const dev = denoiserAdapter(s, { device });
    const tokens = typeof host.hidden.shape[1] === 'number' ? host.hidden.shape[1] : 77;
    const dim = host.hidden.shape[2];
    const pooled = host.textEmbeds?.shape[1];
    if (typeof dim !== 'number' || (host.textEmbeds && typeof pooled !== 'number')) throw new Error(`unet-io: ${m.name} has no static text widths`);
    const cond: TextConditioning = { hidden: wave(2 * tokens * dim, 2), tokens, dim };
    if (host.textEmbeds) {
      cond.textEmbeds = wave(2 * (pooled as number), 3);
      cond.pooledDim = pooled as number;
    }
    const c = typeof host.sample.shape[1] === 'number' ? host.sample.shape[1] : 4;
    const L = m.latent;
    const call: UnetCall = {
      sample: wave(c * L * L, 1), channels: c, height: L, width: L, timestep: 500, guidanceScale: 7.5,
      timeIds: host.timeIds ? [8 * L, 8 * L, 0, 0, 8 * L, 8 * L] : undefined,
    };
    const bytesPer = host.hidden.type === 'float16' ? 2 : 4;
    const conditioningBytes = bytesPer * (cond.hidden.length + (cond.textEmbeds?.length ?? 0));
    const asHost = (type: string, data: Float32Array, dims: number[]): HostTensor =>
      type === 'float16' ? { type, data: float32ToFloat16(data), dims } : { type: 'float32', data, dims };
    const hostTensors = [asHost(host.hidden.type, cond.hidden, [2, tokens, dim])];
    if (cond.textEmbeds) hostTensors.push(asHost(host.textEmbeds!.type, cond.textEmbeds, [2, cond.pooledDim!]));

    const hostOut = (await host.run(call, cond)).output.slice();
    const devOut = (await dev.run(call, cond)).output.slice();
    const [hostFed, deviceResident, upload] = await interleaved([
      () => host.run(call, cond),
      () => dev.run(call, cond),
      async () => {
        for (const t of hostTensors) (await uploader.upload(t)).dispose();
      },
    ], o.warmup, o.iters);
    const result: UnetIoCase = {
      name: m.name, latent: L, context: `${tokens}x${dim}${pooled ? ` + ${pooled}` : ''}`, conditioningBytes,
      hostFed: hostFed!, deviceResident: deviceResident!, deviceOverHost: deviceResident!.medianMs / hostFed!.medianMs,
      upload: upload!, uploadOverHost: upload!.medianMs / hostFed!.medianMs,
      deviceMaxDiff: maxDiff(devOut, hostOut), uploadsCounted: device.counts.uploads,
    };

    // CFG on the device: the UNet's output stays there, a small graph combines it, [1,C,h,w] comes back.
    try {
      const onDevice = await openSession(m.file, 'unet (outputs on the device)', opts, { outputLocation: 'gpu-buffer' });
      extra.push(onDevice);
      const combine = await openSession(cfgCombineModelBytes(host.out.type as 'float32'), 'cfg combine', opts);
      extra.push(combine);
      const devCfg = denoiserAdapter(onDevice, { device: new DeviceConditioning(uploader) });
      const scale = floatTensor(host.out.type, new Float32Array([call.guidanceScale]), [1], 'scale');
      const runDeviceCfg = async (): Promise<Float32Array> => {
        const r = await onDevice.session.run(await devCfg.feeds(call, cond, [0, 1]));
        const raw = r[devCfg.out.name]!;
        try {
          return readFloat((await combine.session.run({ raw, scale }))['out']!, 'cfg out');
        } finally {
          for (const t of Object.values(r)) t.dispose();
        }
      };
      const cfgOut = await runDeviceCfg();
      const [h2, d2, g2] = await interleaved([() => host.run(call, cond), () => dev.run(call, cond), runDeviceCfg], o.warmup, o.iters);
      result.deviceCfg = { timing: g2!, overHost: g2!.medianMs / h2!.medianMs, overDevice: g2!.medianMs / d2!.medianMs, maxDiff: maxDiff(cfgOut, hostOut) };
    } catch (err) {
      result.deviceCfg = { error: errorText(err) };
    }

    return result;
  } finally {
    for (const e of extra) await releaseSession(e);
    await uploader.release();
    await releaseSession(s);
  }
}

export async function benchUnetIo(o: UnetIoOptions): Promise<{ machine: Record<string, unknown>; options: UnetIoOptions; cases: UnetIoCase[] }> {
  if (o.provider !== 'webgpu') {
    throw new Error(`unet-io: --device must be a webgpu device (the conditioning is held on the device only there); received ${o.provider}`);
  }
  const models: Model[] = [];
  for (const name of o.cases) {
    if (name === 'shipped') {
      const file = path.join(ROOT, 'models', 'shapes-128', 'unet', 'model.onnx');
      models.push({ name: 'shipped (shapes-128)', file, latent: configuredLatent(file, 16) });
    } else if (name === 'sd15' || name === 'sdxl') {
      models.push(fixtureModel(name, o.latent));
    } else {
      throw new Error(`unet-io: unknown case ${name} (expected shipped, sd15 or sdxl)`);
    }
  }
  for (const file of o.files) models.push({ name: path.resolve(file).split(path.sep).slice(-3).join('/'), file, latent: configuredLatent(file, o.latent) });
  const cases: UnetIoCase[] = [];
  for (const m of models) {
    console.error(`[unet-io] ${m.name} on ${o.provider} ...`);
    cases.push(await benchCase(m, o));
  }
  const machine = { node: process.version, platform: `${process.platform}-${process.arch}`, cpu: os.cpus()[0]?.model, cores: os.cpus().length, load: os.loadavg(), date: new Date().toISOString() };
  return { machine, options: o, cases };
}

const f2 = (x: number) => x.toFixed(2);

export function unetIoTable(cases: UnetIoCase[]): string {
  const rows = [
    '| case | latent | context | conditioning sent per host-fed call | device-resident / host-fed | upload alone / host-fed call | device max diff | CFG on device / device-resident |',
    '| --- | --- | --- | --- | --- | --- | --- | --- |',
  ];
  for (const c of cases) {
    const cfg = !c.deviceCfg ? 'n/a' : 'error' in c.deviceCfg ? `failed: ${c.deviceCfg.error}` : `${f2(c.deviceCfg.overDevice)} (max diff ${c.deviceCfg.maxDiff.toExponential(1)})`;
    rows.push(`| ${c.name} | ${c.latent}x${c.latent} | ${c.context} | ${(c.conditioningBytes / 1024).toFixed(0)} KiB | ${f2(c.deviceOverHost)} | ${c.uploadOverHost.toFixed(4)} | ${c.deviceMaxDiff} | ${cfg} |`);
  }
  return rows.join('\n');
}

const USAGE = `
npm run bench:unet-io [-- options]: one CFG UNet call with the text conditioning fed from the host and held on the
device, interleaved; prints a Markdown table and writes bench/results/unet-io-<provider>-<date>.json (or --out).

  --device D        a webgpu device (default webgpu)
  --iters N         timed calls per case (default 20)
  --warmup N        untimed calls first (default 3)
  --latent N        latent side of the sd15 and sdxl cases (default 32)
  --cases LIST      comma-separated subset of shipped, sd15, sdxl (default all; '' for none)
  --unet FILE       also an exported UNet (repeatable)
  --out FILE        where the JSON goes
  --help            this text
`;

function parse(argv: string[]): { options: UnetIoOptions; out?: string } {
  return benchCli(USAGE, {
    args: argv,
    options: {
      device: { type: 'string' }, iters: { type: 'string' }, warmup: { type: 'string' }, latent: { type: 'string' },
      cases: { type: 'string' }, unet: { type: 'string', multiple: true }, out: { type: 'string' },
    },
  }, ({ values }) => {
    const provider = (values.device ?? 'webgpu').split(':')[0] as ProviderName;
    if (provider !== 'webgpu') throw new BenchUsageError(`--device: expected a webgpu device (the conditioning is held on the device only there), received ${JSON.stringify(values.device)}`);
    const options: UnetIoOptions = {
      provider,
      iters: values.iters === undefined ? 20 : intArg('--iters', values.iters, 1),
      warmup: values.warmup === undefined ? 3 : intArg('--warmup', values.warmup, 0),
      latent: values.latent === undefined ? 32 : intArg('--latent', values.latent, 1),
      cases: values.cases === undefined ? ['shipped', 'sd15', 'sdxl'] : values.cases === '' ? [] : choiceList('--cases', values.cases, ['shipped', 'sd15', 'sdxl'] as const),
      files: values.unet ?? [],
    };
    return { options, out: values.out };
  });
}

async function main(): Promise<void> {
  const { options, out } = parse(process.argv.slice(2));
  const result = await benchUnetIo(options);
  console.log(unetIoTable(result.cases));
  const file = out ?? path.join(ROOT, 'bench', 'results', `unet-io-${options.provider}-${result.machine['date']!.toString().slice(0, 10)}.json`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(result, null, 1)}\n`);
  console.error(`[unet-io] wrote ${path.relative(process.cwd(), file)}`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
