/**
 * Options and records tied to one model family (SDXL's original size, SD3's flow-matching scheduler) met on
 * another family: what the check stage says, and what a re-run with --from does.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AsgdError } from '../src/core/errors.ts';
import { checkSettings, type ModelFacts } from '../src/core/generation/check.ts';
import { buildMetadata } from '../src/core/metadata.ts';
import { createScheduler } from '../src/core/schedulers/index.ts';
import { resolveParams, type GenerateParams } from '../src/core/params.ts';
import { readImageMetadata, saveImage } from '../src/node/image/write.ts';
import { readModelFolder } from '../src/node/model/folder.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { createServer } from '../src/server/app.ts';
import { LibraryEngine } from '../src/server/library-engine.ts';
import { LocalJobQueue } from '../src/server/local-queue.ts';
import { readModelFolderFacts } from '../src/server/model-facts.ts';
import { writeTinySd3Model } from './fixtures/tiny-sd3.ts';
import { copyModel, tempDir, tinyModel } from './helpers/models.ts';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'asgd.js');
function asgd(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** An image whose record says it was made by a model of `family` with `params` (no model runs). */
async function recorded(family: string, scheduler: string, params: Partial<GenerateParams>): Promise<string> {
  const file = path.join(tempDir('record'), `${family}.png`);
  const p = resolveParams({ prompt: 'a cat', width: 128, height: 128, steps: 1, seed: 1, ...params }, { width: 128, height: 128 });
  const image = { width: 128, height: 128, data: new Uint8Array(128 * 128 * 3).fill(128) };
  await saveImage(file, image, buildMetadata(p, { name: `${family}-model`, family }, scheduler, 'asgdiffusion test'));
  return file;
}

const SD3: ModelFacts = {
  family: 'sd3', latentMultiple: 2, nativeWidth: 128, nativeHeight: 128, latentChannels: 16,
  schedulerClassName: 'FlowMatchEulerDiscreteScheduler', vaeForceUpcast: false, vaeIsFloat16: false,
};
const SD: ModelFacts = { ...SD3, family: 'sd', latentMultiple: 8, latentChannels: 4, schedulerClassName: 'PNDMScheduler' };

test('originalSize on a non-SDXL model names the family it was given to', () => {
  const originalSize = { width: 1024, height: 1024 };
  assert.throws(() => checkSettings({ prompt: 'a', originalSize }, SD3), (e: unknown) =>
    e instanceof AsgdError && e.parameter === 'originalSize' && e.received === 'a Stable Diffusion 3 model');
  assert.throws(() => checkSettings({ prompt: 'a', originalSize }, SD), (e: unknown) =>
    e instanceof AsgdError && e.parameter === 'originalSize' && e.received === 'a Stable Diffusion 1.x/2.x model');
});

test('--from an SDXL or SD3 image on a model of another family goes ahead: the recorded settings of that family are left out with a warning', async () => {
  const sd = await tinyModel('standard');
  const sd3 = path.join(tempDir('sd3'), 'sd3');
  await writeTinySd3Model(sd3, { variant: 'sd3' });
  const dir = tempDir('from-family');
  const rerun = (from: string, model: string, name: string, extra: string[] = []) => {
    const out = path.join(dir, name);
    return { out, ...asgd(['generate', '--from', from, '-m', model, '-o', out, '--threads', '1', ...extra]) };
  };
  const xl = await recorded('sdxl', 'euler', { originalSize: { width: 512, height: 512 } });
  const a = rerun(xl, sd, 'a.png');
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stderr, /records SDXL's original size 512x512, which a Stable Diffusion 1\.x\/2\.x model does not take: left out/);
  assert.equal((await readImageMetadata(a.out)).metadata?.originalSize, undefined);

  const flow = await recorded('sd3', 'flow-euler', {});
  const b = rerun(flow, sd, 'b.png');
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stderr, /records the flow-euler scheduler, which does not fit a Stable Diffusion 1\.x\/2\.x model: the model's own scheduler is used/);
  assert.equal((await readImageMetadata(b.out)).metadata?.scheduler, 'pndm');

  const pndm = await recorded('sd', 'pndm', {});
  const c = rerun(pndm, sd3, 'c.png');
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stderr, /records the pndm scheduler, which does not fit a Stable Diffusion 3 model: its flow-euler is used\n/);
  assert.equal((await readImageMetadata(c.out)).metadata?.scheduler, 'flow-euler');

  const xlModel = await tinyModel('sdxl');
  const e = rerun(flow, xlModel, 'e.png');
  assert.equal(e.code, 0, e.stderr);
  assert.match(e.stderr, /records the flow-euler scheduler, which does not fit an SDXL model: the model's own scheduler is used/);

  // A flag given is the user's: still refused, naming it.
  const d = rerun(xl, sd, 'd.png', ['--original-size', '512x512']);
  assert.equal(d.code, 2);
  assert.match(d.stderr, /originalSize is an SDXL option/);
});

test('an SDXL or SD3 folder without its denoiser config.json is taken at its family\'s native size (1024 px), and the note names that file', async () => {
  const xl = await copyModel('sdxl');
  fs.rmSync(path.join(xl, 'unet', 'config.json'));
  const sd3 = path.join(tempDir('sd3-no-config'), 'sd3');
  await writeTinySd3Model(sd3, { variant: 'sd3' });
  fs.rmSync(path.join(sd3, 'transformer', 'config.json'));
  for (const [dir, file] of [[xl, 'unet/config.json'], [sd3, 'transformer/config.json']] as const) {
    const pipe = await loadPipeline(dir, { threads: 1, attentionProbe: false });
    try {
      assert.equal(pipe.info.nativeWidth, 1024, dir);
      assert.ok(pipe.info.notes.some((n) => n.startsWith(`no ${file} sample_size: assuming a native size of 1024 px`)), pipe.info.notes.join('; '));
    } finally {
      await pipe.close();
    }
    // The server checks and estimates jobs at the size the pipeline runs.
    assert.equal(readModelFolderFacts(dir).nativeWidth, 1024, dir);
  }
});

test('a model_index.json class that names SDXL or SD3 on a folder of another family is said to be the problem', async () => {
  for (const [className, missing] of [['StableDiffusion3Pipeline', 'transformer/model.onnx'], ['ORTStableDiffusionXLPipeline', 'text_encoder_2/model.onnx']]) {
    const dir = await copyModel('standard');
    fs.writeFileSync(path.join(dir, 'model_index.json'), JSON.stringify({ _class_name: className }));
    assert.throws(() => readModelFolder(dir), (e: unknown) =>
      e instanceof AsgdError && e.parameter === 'model_index.json' && e.message.includes(`model_index.json names ${className}`) &&
      e.received === `no ${missing}; the folder has unet/model.onnx` && /_class_name/.test(e.hint ?? ''), className);
  }
});

test('the server estimates an SD3 job with the patch-size latent grid the run uses', async () => {
  const dir = path.join(tempDir('sd3-estimate'), 'sd3');
  await writeTinySd3Model(dir, { variant: 'sd3' });
  // A latent of 33 x 49: patches on SD3's grid of 2, not the UNets' 8.
  const body = { prompt: 'a cat', width: 264, height: 392, steps: 3, seed: '1' };
  const queue = new LocalJobQueue({ dir: tempDir('state') });
  const app = await createServer({ queue, engine: new LibraryEngine([dir]), outputsDir: tempDir('outputs') });
  const pipe = await loadPipeline(dir, { threads: 1 });
  try {
    const r = await app.inject({ method: 'POST', url: '/api/v1/estimate', payload: body });
    assert.equal(r.statusCode, 200, r.body);
    const ran = await pipe.generate({ ...body, seed: 1 });
    assert.equal(r.json().unetEvaluations, ran.unetEvaluations);
  } finally {
    await pipe.close();
    await app.close();
    await queue.close();
  }
});

test('the upscale API takes SDXL\'s originalSize like the CLI and the library: checked against the model before queueing, and run', async () => {
  const xl = await tinyModel('sdxl');
  const outputs = tempDir('outputs');
  const queue = new LocalJobQueue({ dir: tempDir('state') });
  const engine = new LibraryEngine([xl, await tinyModel('standard')], { threads: 1 });
  const app = await createServer({ queue, engine, outputsDir: outputs });
  try {
    const source = 'source.png';
    await saveImage(path.join(outputs, source), { width: 128, height: 128, data: new Uint8Array(128 * 128 * 3).fill(100) }, undefined);
    const url = `/api/v1/outputs/${source}/upscale`;
    const refused = await app.inject({ method: 'POST', url, payload: { model: 'standard', scale: 2, steps: 2, originalSize: '2048x2048' } });
    assert.equal(refused.statusCode, 400, refused.body);
    assert.equal(refused.json().field, 'originalSize');
    assert.match(refused.json().message, /originalSize is an SDXL option/);
    const r = await app.inject({ method: 'POST', url, payload: { model: 'sdxl', prompt: 'a cat', scale: 2, steps: 2, seed: '1', originalSize: '2048x2048' } });
    assert.equal(r.statusCode, 202, r.body);
    const id = (r.json() as { id: string }).id;
    let job: { state: string; output?: string; error?: unknown } = { state: 'queued' };
    for (const t0 = Date.now(); !['completed', 'failed', 'cancelled'].includes(job.state) && Date.now() - t0 < 60_000;) {
      await new Promise((res) => setTimeout(res, 50));
      job = (await app.inject({ url: `/api/v1/jobs/${id}` })).json();
    }
    assert.equal(job.state, 'completed', JSON.stringify(job.error));
    const meta = (await readImageMetadata(path.join(outputs, job.output!))).metadata;
    assert.deepEqual(meta?.originalSize, { width: 2048, height: 2048 });
  } finally {
    await app.close();
    await queue.close();
    await engine.close();
  }
});

test('originalSize takes width and height only: another key is refused by name, not ignored', () => {
  const xl = { ...SD3, family: 'sdxl' as const, latentMultiple: 8, latentChannels: 4, schedulerClassName: 'EulerDiscreteScheduler' };
  const originalSize = { width: 1024, height: 1024, cropTop: 64 } as unknown as { width: number; height: number };
  assert.throws(() => checkSettings({ prompt: 'a', originalSize }, xl), (e: unknown) =>
    e instanceof AsgdError && e.parameter === 'originalSize.cropTop' && e.received === '64' && /width, height/.test(e.expected ?? ''));
  assert.deepEqual(checkSettings({ prompt: 'a', originalSize: { width: 1024, height: 512 } }, xl).params.originalSize, { width: 1024, height: 512 });
});

test('an SD3 scheduler config this project cannot run is not answered with "pick another --scheduler" (SD3 takes no other)', () => {
  const hintOf = (config: Record<string, unknown>) => {
    try {
      createScheduler({ _class_name: 'FlowMatchEulerDiscreteScheduler', shift: 3, ...config }, 4, undefined, { imageSeqLen: 64 });
    } catch (e) {
      assert.ok(e instanceof AsgdError);
      return e.hint ?? '';
    }
    assert.fail(`accepted ${JSON.stringify(config)}`);
  };
  for (const config of [{ use_karras_sigmas: true }, { stochastic_sampling: true }, { use_dynamic_shifting: true, time_shift_type: 'weird' }]) {
    const hint = hintOf(config);
    assert.match(hint, /scheduler\/scheduler_config\.json/, JSON.stringify(config));
    assert.doesNotMatch(hint, /another --scheduler/, JSON.stringify(config));
  }
  // A noise-prediction model may still switch scheduler.
  assert.throws(() => createScheduler({ _class_name: 'DDIMScheduler', thresholding: true }, 4), /pick another --scheduler/);
});

test('--fuse-attention on an SD3 transformer: fused and recorded; on one whose attention is fused already it warns at every run, not only in asgd info', async () => {
  const dir = path.join(tempDir('sd3-fuse'), 'sd3');
  await writeTinySd3Model(dir, { variant: 'sd3' });
  const fused = await loadPipeline(dir, { threads: 1, fuseAttention: true, attentionProbe: false });
  try {
    assert.deepEqual([fused.info.attentionFusion.applied, fused.info.attentionFusion.layers], [true, 2]);
    const r = await fused.generate({ prompt: 'a cat', steps: 1, seed: 1 });
    assert.deepEqual(r.warnings, []);
    assert.ok(r.metadata.fusedAttention, 'the record says the attention ran fused');
  } finally {
    await fused.close();
  }
  const already = path.join(tempDir('sd3-fuse'), 'sd3-fused-attention');
  await writeTinySd3Model(already, { variant: 'sd3-fused-attention' });
  const pipe = await loadPipeline(already, { threads: 1, fuseAttention: true, attentionProbe: false });
  try {
    assert.equal(pipe.info.attentionFusion.applied, false);
    const r = await pipe.generate({ prompt: 'a cat', steps: 1, seed: 1 });
    assert.ok(r.warnings.some((w) => /^fuseAttention \(--fuse-attention\) changes nothing for this model: the export runs its attention fused already \(2 MultiHeadAttention nodes\)$/.test(w)), r.warnings.join('; '));
    assert.equal(r.metadata.fusedAttention, undefined);
  } finally {
    await pipe.close();
  }
});

test('an SD3 image larger than the transformer\'s position table (direct above pos_embed_max_size patches) is refused before any model call, in the library and the server', async () => {
  const dir = path.join(tempDir('sd3-pos'), 'sd3');
  await writeTinySd3Model(dir, { variant: 'sd3' });
  // The fixture's table: 24 x 24 patches of 2 latent px, 384 px a side.
  const refused = (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && e.parameter === 'width' &&
    /384 px/.test(e.expected ?? '') && /--method asg/.test(e.hint ?? '');
  const pipe = await loadPipeline(dir, { threads: 1, attentionProbe: false });
  const queue = new LocalJobQueue({ dir: tempDir('state') });
  const app = await createServer({ queue, engine: new LibraryEngine([dir]), outputsDir: tempDir('outputs') });
  try {
    let calls = 0;
    await assert.rejects(pipe.generate({ prompt: 'a cat', method: 'direct', width: 512, height: 384, steps: 1 }, { onUnits: () => calls++ }), refused);
    assert.equal(calls, 0);
    const fits = await pipe.generate({ prompt: 'a cat', method: 'direct', width: 384, height: 384, steps: 1, seed: 1 });
    assert.equal(fits.image.width, 384);
    // Patch methods denoise native-size units: any size.
    assert.equal((await pipe.generate({ prompt: 'a cat', width: 512, height: 128, steps: 1, seed: 1 })).image.width, 512);
    const r = await app.inject({ method: 'POST', url: '/api/v1/jobs', payload: { prompt: 'a cat', method: 'direct', width: 512, height: 384 } });
    assert.equal(r.statusCode, 400, r.body);
    assert.equal(r.json().field, 'width');
  } finally {
    await pipe.close();
    await app.close();
    await queue.close();
  }
});

test('GET /api/v1/models stays name and native size for an SD3 model (its position table is the server\'s own business)', async () => {
  const dir = path.join(tempDir('sd3-models'), 'sd3');
  await writeTinySd3Model(dir, { variant: 'sd3' });
  const queue = new LocalJobQueue({ dir: tempDir('state') });
  const app = await createServer({ queue, engine: new LibraryEngine([dir]), outputsDir: tempDir('outputs') });
  try {
    const models = (await app.inject({ url: '/api/v1/models' })).json() as { models: Record<string, unknown>[] };
    assert.deepEqual(models.models, [{ name: 'sd3', nativeWidth: 128, nativeHeight: 128 }]);
  } finally {
    await app.close();
    await queue.close();
  }
});
