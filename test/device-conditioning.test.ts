/**
 * The text conditioning held on the WebGPU device (src/onnx/device-conditioning.ts, device-upload.ts), on the Vulkan
 * driver the test setup provides (scripts/setup-system.mjs: Mesa's lavapipe): the UNet's output with the
 * conditioning fed from the device equals the host-fed output bit for bit (measured: max diff 0 on the shipped model
 * and the SDXL fixture, so the tolerance is 0), it is uploaded once per conditioning and CFG rows however many calls
 * follow, the old tensors are disposed when a new conditioning arrives, and a whole webgpu generation is the same
 * either way, with one upload per generation and worker (per graph and CFG rows), counted through the workers. On the CPU provider nothing changes: the adapter feeds exactly the host tensors of the ONNX contract.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { combineCfg } from '../src/core/dispatch/cfg.ts';
import { float32ToFloat16 } from '../src/core/float16.ts';
import type { GenerateParams } from '../src/core/params.ts';
import { openPipeline, type PipelineTestHooks } from '../src/node/pipeline.ts';
import { liveDeviceWorkers } from '../src/node/runner/device-worker.ts';
import { DeviceConditioning } from '../src/onnx/device-conditioning.ts';
import { DeviceUploader } from '../src/onnx/device-upload.ts';
import { makeTensor, openSession, readFloat, releaseSession, type OrtTensor } from '../src/onnx/session.ts';
import { denoiserAdapter } from '../src/onnx/transformer.ts';
import type { TextConditioning, UnetCall } from '../src/onnx/unet.ts';
import { tinyModel } from './helpers/models.ts';

const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');

after(async () => {
  for (let i = 0; i < 50 && liveDeviceWorkers().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(liveDeviceWorkers(), [], 'no device worker is left running');
});

const wave = (n: number, k: number) => Float32Array.from({ length: n }, (_, i) => 0.5 * Math.sin(i * 0.618 + k));

function conditioning(dim: number, k: number, pooled?: number): TextConditioning {
  const cond: TextConditioning = { hidden: wave(2 * 77 * dim, k), tokens: 77, dim };
  if (pooled) {
    cond.textEmbeds = wave(2 * pooled, k + 1);
    cond.pooledDim = pooled;
  }
  return cond;
}

function call(latent: number, k: number, sdxl: boolean): UnetCall {
  return {
    sample: wave(4 * latent * latent, k), channels: 4, height: latent, width: latent, timestep: 900 - 100 * k, guidanceScale: 7.5,
    timeIds: sdxl ? [8 * latent, 8 * latent, 0, 0, 8 * latent, 8 * latent] : undefined,
  };
}

for (const which of ['shipped', 'sdxl'] as const) {
  test(`${which}: device-resident conditioning on webgpu equals host-fed, uploaded once per conditioning and rows, disposed on change`, async () => {
    const file = which === 'shipped' ? path.join(SHIPPED, 'unet', 'model.onnx') : path.join(await tinyModel('sdxl'), 'unet', 'model.onnx');
    const opts = { provider: 'webgpu' as const };
    const s = await openSession(file, 'unet', opts);
    const uploader = new DeviceUploader(opts);
    try {
      const host = denoiserAdapter(s);
      const device = new DeviceConditioning(uploader);
      const dev = denoiserAdapter(s, { device });
      assert.equal(host.device, undefined);
      const dim = host.hidden.shape[2] as number;
      const pooled = host.textEmbeds ? (host.textEmbeds.shape[1] as number) : undefined;
      const inputsPerRows = pooled ? 2 : 1;
      const latent = which === 'shipped' ? 16 : 8;
      const sdxl = pooled !== undefined;
      const a = conditioning(dim, 1, pooled);

      // A generation's calls: one conditioning object, many samples and timesteps.
      for (let k = 0; k < 3; k++) {
        const c = call(latent, k, sdxl);
        const [h, d] = [(await host.run(c, a)).output, (await dev.run(c, a)).output];
        assert.deepEqual(d, h, `call ${k}: device-resident output differs from host-fed`);
      }
      assert.deepEqual(device.counts, { uploads: inputsPerRows, disposed: 0, live: inputsPerRows }, 'uploaded once for three calls');

      // CFG halves (split across devices): rows 0 and 1 are uploaded once each.
      for (let k = 0; k < 2; k++) {
        for (const part of ['uncond', 'cond'] as const) {
          const c = { ...call(latent, k, sdxl), part };
          assert.deepEqual((await dev.run(c, a)).output, (await host.run(c, a)).output, `${part} half`);
        }
      }
      assert.deepEqual(device.counts, { uploads: 3 * inputsPerRows, disposed: 0, live: 3 * inputsPerRows });

      // The next generation: a new conditioning object disposes the old tensors and uploads its own.
      const b = conditioning(dim, 5, pooled);
      const c = call(latent, 4, sdxl);
      const hb = (await host.run(c, b)).output;
      assert.deepEqual((await dev.run(c, b)).output, hb, 'new conditioning');
      assert.notDeepEqual(hb, (await host.run(c, a)).output, 'the two conditionings give different outputs');
      assert.deepEqual(device.counts, { uploads: 4 * inputsPerRows, disposed: 3 * inputsPerRows, live: inputsPerRows });
      device.clear();
      assert.deepEqual(device.counts, { uploads: 4 * inputsPerRows, disposed: 4 * inputsPerRows, live: 0 });
    } finally {
      await uploader.release();
      await releaseSession(s);
    }
  });
}

test('webgpu generations: device-resident equals host-fed bit for bit, uploaded once per generation and worker, disposed on the next', async (t) => {
  const params: GenerateParams = { prompt: 'a red circle on a blue background', seed: 5, steps: 2, width: 256, height: 256, method: 'asg' };
  type Described = Awaited<ReturnType<Parameters<NonNullable<PipelineTestHooks['inspectWorkers']>>[0]>>;
  const open = async (env: string | undefined) => {
    const before = process.env['ASGD_DEVICE_CONDITIONING'];
    if (env === undefined) delete process.env['ASGD_DEVICE_CONDITIONING'];
    else process.env['ASGD_DEVICE_CONDITIONING'] = env;
    try {
      let ask: (() => Promise<Described>) | undefined;
      const p = await openPipeline(SHIPPED, { devices: 'webgpu:0' }, { inspectWorkers: (f) => (ask = f) });
      return { p, counts: async () => (await ask!())[0]!.deviceConditioning };
    } finally {
      if (before === undefined) delete process.env['ASGD_DEVICE_CONDITIONING'];
      else process.env['ASGD_DEVICE_CONDITIONING'] = before;
    }
  };
  const host = await open('0');
  let hostFed;
  try {
    hostFed = await host.p.generate(params);
    assert.deepEqual(await host.counts(), { unet: undefined, probe: undefined }, 'ASGD_DEVICE_CONDITIONING=0: nothing held on the device');
  } finally {
    await host.p.close();
  }
  const dev = await open(undefined);
  try {
    const first = await dev.p.generate(params);
    assert.deepEqual(first.latent, hostFed.latent);
    assert.deepEqual(first.image.data, hostFed.image.data);
    const c1 = await dev.counts();
    t.diagnostic(`asg 256 px: ${first.unetEvaluations} UNet evaluations; held on the device: unet ${JSON.stringify(c1.unet)}, probe ${JSON.stringify(c1.probe)}`);
    assert.ok(c1.unet && c1.probe, 'the UNet and the probe graph hold the conditioning on the device');
    const uploads1 = c1.unet.uploads + c1.probe.uploads;
    assert.ok(first.unetEvaluations > 2 * uploads1, `${first.unetEvaluations} evaluations, ${uploads1} uploads`);
    // At most one upload per (graph, CFG rows) in a generation: both rows, row 0, row 1.
    assert.ok(c1.unet.uploads >= 1 && c1.unet.uploads <= 3 && c1.probe.uploads >= 1 && c1.probe.uploads <= 3);
    assert.deepEqual([c1.unet.disposed, c1.unet.live, c1.probe.disposed, c1.probe.live], [0, c1.unet.uploads, 0, c1.probe.uploads]);

    // The next generation (a new conditioning): the first one's tensors are disposed, its own uploaded once.
    const second = await dev.p.generate({ ...params, prompt: 'a blue square on a red background' });
    const c2 = await dev.counts();
    assert.notDeepEqual(second.latent, first.latent);
    assert.deepEqual(c2.unet, { uploads: 2 * c1.unet.uploads, disposed: c1.unet.uploads, live: c1.unet.uploads });
    assert.deepEqual(c2.probe, { uploads: 2 * c1.probe.uploads, disposed: c1.probe.uploads, live: c1.probe.uploads });
  } finally {
    await dev.p.close();
  }
});

/** The ONNX contract's host feeds for one CFG call, built here independently of the adapter. */
function contractFeeds(
  s: Awaited<ReturnType<typeof openSession>>, c: UnetCall, cond: TextConditioning, float16: boolean,
): Record<string, OrtTensor> {
  const f = (data: Float32Array, dims: number[]) => (float16 ? makeTensor('float16', float32ToFloat16(data), dims) : makeTensor('float32', data, dims));
  const n = c.sample.length;
  const sample = new Float32Array(2 * n);
  sample.set(c.sample, 0);
  sample.set(c.sample, n);
  const feeds: Record<string, OrtTensor> = {
    sample: f(sample, [2, c.channels, c.height, c.width]),
    timestep: makeTensor('int64', new BigInt64Array(2).fill(BigInt(c.timestep)), [2]),
    encoder_hidden_states: f(cond.hidden, [2, cond.tokens, cond.dim]),
  };
  if (s.inputs.some((i) => i.name === 'text_embeds')) {
    feeds['text_embeds'] = f(cond.textEmbeds!, [2, cond.pooledDim!]);
    const ids = new Float32Array(12);
    ids.set(c.timeIds!, 0);
    ids.set(c.timeIds!, 6);
    feeds['time_ids'] = f(ids, [2, 6]);
  }
  return feeds;
}

test('on the cpu provider the adapter feeds exactly the host tensors of the contract (float32, float16, SDXL)', async () => {
  for (const variant of ['standard', 'fp16', 'sdxl'] as const) {
    const s = await openSession(path.join(await tinyModel(variant), 'unet', 'model.onnx'), 'unet', { provider: 'cpu', threads: 1 });
    try {
      const unet = denoiserAdapter(s);
      assert.equal(unet.device, undefined);
      const dim = unet.hidden.shape[2] as number;
      const pooled = unet.textEmbeds ? (unet.textEmbeds.shape[1] as number) : undefined;
      const cond = conditioning(dim, 2, pooled);
      const c = call(8, 1, pooled !== undefined);
      const float16 = unet.sample.type === 'float16';
      const raw = readFloat((await s.session.run(contractFeeds(s, c, cond, float16)))[unet.out.name]!, 'out');
      const n = c.sample.length;
      const expected = combineCfg(raw.subarray(0, n), raw.subarray(n), c.guidanceScale);
      assert.deepEqual((await unet.run(c, cond)).output, expected, variant);
    } finally {
      await releaseSession(s);
    }
  }
});
