/**
 * Tile states of 'exact' tiled VAE statistics held on the WebGPU device between segments (src/onnx/tile-states.ts),
 * on the Vulkan driver the test setup provides (scripts/setup-system.mjs: Mesa's lavapipe): the image is the one whose
 * states come back to the host (ASGD_DEVICE_TILE_STATES=0) bit for bit, at budgets that keep every cut, some, or
 * none (measured: max difference 0 at each, so the tolerance is 0); every state held is freed by the end of the decode
 * (none left on the device); and the same through the pipeline's worker, for a decoder whose attention runs once for
 * the whole latent too (its tiled part's segments) and for decodes in a row.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import type { RgbImage } from '../src/core/image.ts';
import type { VaeDecodeOptions } from '../src/core/params.ts';
import { decodeTiled } from '../src/core/vae/tiled.ts';
import { DEVICE_TILE_STATES_ENV } from '../src/node/device-tile-states.ts';
import { openPipeline, type PipelineTestHooks } from '../src/node/pipeline.ts';
import { liveDeviceWorkers } from '../src/node/runner/device-worker.ts';
import { localBackend } from '../src/node/vae-local.ts';
import type { OrtTensor } from '../src/onnx/tensors.ts';
import { DeviceTileStates } from '../src/onnx/tile-states.ts';
import { SMALL_VAE_DECODER, buildGroupNormVaeDecoder } from './fixtures/groupnorm-vae.ts';
import { tempDir } from './helpers/models.ts';

const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');
const DECODER = path.join(SHIPPED, 'vae_decoder', 'model.onnx');

after(async () => {
  for (let i = 0; i < 50 && liveDeviceWorkers().length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(liveDeviceWorkers(), [], 'no device worker is left running');
});

/** Runs `f` with ASGD_DEVICE_TILE_STATES set to `value` (undefined: unset), restoring it after. */
async function withEnv<T>(value: string | undefined, f: () => Promise<T>): Promise<T> {
  const before = process.env[DEVICE_TILE_STATES_ENV];
  if (value === undefined) delete process.env[DEVICE_TILE_STATES_ENV];
  else process.env[DEVICE_TILE_STATES_ENV] = value;
  try {
    return await f();
  } finally {
    if (before === undefined) delete process.env[DEVICE_TILE_STATES_ENV];
    else process.env[DEVICE_TILE_STATES_ENV] = before;
  }
}

const wave = (n: number) => Float32Array.from({ length: n }, (_, i) => 0.8 * Math.sin(i * 0.37));

test('webgpu: tile states kept on the device give the host-state image bit for bit at every budget, and are all freed', async (t) => {
  const h = 32;
  const latent = wave(4 * h * h);
  const decode = (env: string | undefined, statsMemory: number) => withEnv(env, async () => {
    const be = await localBackend(DECODER, 'vae_decoder', { provider: 'webgpu' });
    try {
      const r = await decodeTiled(latent, 4, h, h, be, { tileSize: 16, overlap: 8, stats: 'exact', statsMemory });
      return { r, counts: be.tileStates() };
    } finally {
      await be.close();
    }
  });
  const host = await decode('0', 1024);
  assert.equal(host.counts, undefined, 'ASGD_DEVICE_TILE_STATES=0: no state held on the device');
  assert.equal(host.r.tiles, 9);
  assert.equal(host.r.resumedFrom, 6, 'the host run keeps every cut (7 norm layers)');
  // 1024 MiB keeps every cut; 4 MiB the first three (states grow with the resolution); 1 MiB none.
  for (const [statsMemory, resumedFrom] of [[1024, 6], [4, 2], [1, -1]] as const) {
    const dev = await decode(undefined, statsMemory);
    t.diagnostic(`${statsMemory} MiB: resumed from cut ${dev.r.resumedFrom}, states ${JSON.stringify(dev.counts)}`);
    assert.equal(dev.r.resumedFrom, resumedFrom, `${statsMemory} MiB`);
    assert.ok(dev.r.data.every((v, i) => Object.is(v, host.r.data[i])), `${statsMemory} MiB: the host-state image, bit for bit`);
    const c = dev.counts!;
    assert.equal(c.live, 0, `${statsMemory} MiB: nothing left on the device`);
    assert.equal(c.liveBytes, 0);
    assert.equal(c.released, c.held);
    // Kept cuts hold a state per tile; a cut not kept holds its first tile's (to measure it) and frees it at once.
    const kept = resumedFrom + 1;
    assert.equal(c.held, 9 * kept + (kept < 7 ? 7 - kept : 0), `${statsMemory} MiB: states held`);
  }
});

type Described = Awaited<ReturnType<Parameters<NonNullable<PipelineTestHooks['inspectWorkers']>>[0]>>;

/** Decodes `latent` on a webgpu:0 pipeline of `model` once per VAE setting, then asks the worker what it holds. */
async function pipelineDecodes(model: string, env: string | undefined, latent: Float32Array, h: number, settings: Partial<VaeDecodeOptions>[]) {
  return withEnv(env, async () => {
    let ask: (() => Promise<Described>) | undefined;
    const p = await openPipeline(model, { devices: 'webgpu:0' }, { inspectWorkers: (f) => (ask = f) });
    try {
      const images: RgbImage[] = [];
      for (const vae of settings) images.push(await p.decodeLatent(latent.slice(), h, h, { tiling: 'on', tileSize: 16, overlap: 8, stats: 'exact', ...vae }));
      return { images, states: (await ask!())[0]!.tileStates };
    } finally {
      await p.close();
    }
  });
}

test("webgpu: the pipeline's worker keeps the states on the device and frees them; the image is the host-state one", async (t) => {
  const h = 32;
  const latent = wave(4 * h * h);
  const host = await pipelineDecodes(SHIPPED, '0', latent, h, [{ attention: 'tile' }]);
  const dev = await pipelineDecodes(SHIPPED, undefined, latent, h, [{ attention: 'tile' }]);
  t.diagnostic(`worker states: ${JSON.stringify(dev.states)}`);
  assert.equal(host.states, undefined, 'ASGD_DEVICE_TILE_STATES=0: the worker holds none');
  assert.ok(dev.states && dev.states.held === 63, `the worker held a state per tile and cut: ${JSON.stringify(dev.states)}`);
  assert.equal(dev.states.live, 0, 'and freed them all');
  assert.equal(dev.states.released, 63);
  assert.deepEqual(dev.images[0]!.data, host.images[0]!.data, 'the same image');
});

test('webgpu: a decoder with self-attention, its attention once for the whole latent and its tail in tiles, twice in a row: the host-state images', async (t) => {
  // The shipped model with a small SD-structured decoder (GroupNorm, mid-block attention) in place of its own.
  const folder = path.join(tempDir('device-states'), 'shapes-attn');
  fs.cpSync(SHIPPED, folder, { recursive: true });
  const decoder = buildGroupNormVaeDecoder({ seed: 5, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_DECODER, midAttention: true });
  fs.writeFileSync(path.join(folder, 'vae_decoder', 'model.onnx'), toBinary(ModelProtoSchema, decoder));
  const h = 24;
  const latent = wave(4 * h * h);
  // The tail after the attention in tiles (its own segments), then the whole decoder per tile, on one worker.
  const settings: Partial<VaeDecodeOptions>[] = [{ attention: 'global' }, { attention: 'tile', statsMemory: 1 }, { attention: 'global' }];
  const host = await pipelineDecodes(folder, '0', latent, h, settings);
  const dev = await pipelineDecodes(folder, undefined, latent, h, settings);
  t.diagnostic(`worker states: ${JSON.stringify(dev.states)}`);
  for (const [i, img] of dev.images.entries()) assert.deepEqual(img.data, host.images[i]!.data, `decode ${i}: the host-state image`);
  assert.notDeepEqual(dev.images[0]!.data, dev.images[1]!.data, 'the attention ran differently in the first two');
  assert.deepEqual(dev.images[2]!.data, dev.images[0]!.data, 'the third decode repeats the first');
  assert.ok(dev.states && dev.states.held > 0 && dev.states.live === 0 && dev.states.released === dev.states.held, JSON.stringify(dev.states));
});

test('DeviceTileStates: a retired session is released after the last state it made, tensors are freed once, a freed handle is refused', async () => {
  const disposed: string[] = [];
  const tensor = (name: string, dims: number[], type = 'float32') => ({ type, dims, dispose: () => disposed.push(name) }) as unknown as OrtTensor;
  const store = new DeviceTileStates();
  const [sessionA, sessionB] = [{ name: 'A' }, { name: 'B' }];
  const a1 = store.hold({ x: tensor('a1.x', [1, 4, 2, 2]), s: tensor('a1.s', [2], 'int64') }, sessionA);
  const a2 = store.hold({ x: tensor('a2.x', [1, 4, 2, 2], 'float16') }, sessionA);
  assert.equal(a1.bytes, 4 * 16 + 8 * 2);
  assert.equal(a2.bytes, 2 * 16);
  assert.deepEqual(a1.tensors, {}, 'a held state carries no host tensors');
  assert.deepEqual(store.counts, { held: 2, released: 0, live: 2, liveBytes: 80 + 32 });
  const released: string[] = [];
  // A made states still held: its release waits; B made none: released at once.
  await store.retire(sessionA, async () => void released.push('A'));
  await store.retire(sessionB, async () => void released.push('B'));
  assert.deepEqual(released, ['B']);
  await store.release([a1.held!]);
  assert.deepEqual(disposed, ['a1.x', 'a1.s']);
  assert.deepEqual(released, ['B'], 'A still made a live state');
  assert.throws(() => store.tensors(a1), /tile state 1 is not held on this device \(released already, or held by another worker\)/);
  assert.equal(store.tensors(a2)['x']!.type, 'float16');
  await store.release([a1.held!, 99]);
  assert.equal(disposed.length, 2, 'a freed or unknown handle is ignored');
  await store.clear();
  assert.deepEqual(disposed, ['a1.x', 'a1.s', 'a2.x']);
  assert.deepEqual(released, ['B', 'A'], 'A goes with its last state, after the tensors');
  assert.deepEqual(store.counts, { held: 2, released: 2, live: 0, liveBytes: 0 });
});
