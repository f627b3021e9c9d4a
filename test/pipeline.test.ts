import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { create, toBinary } from '@bufbuild/protobuf';
import { AttributeProtoSchema, AttributeProto_AttributeType, ModelProtoSchema, NodeProtoSchema, TensorProtoSchema } from 'onnx-buf';
import { AsgdError } from '../src/core/errors.ts';
import { SMALL_VAE_DECODER, buildGroupNormVaeDecoder } from './fixtures/groupnorm-vae.ts';
import { VARIANTS } from './fixtures/index.ts';
import { readImageMetadata, saveImage } from '../src/node/image/write.ts';
import { loadPipeline, openPipeline, type Pipeline } from '../src/node/pipeline.ts';
import { copyModel, tempDir, tinyModel } from './helpers/models.ts';
import { absDifference } from '../bench/analysis/difference.ts';

let pipe: Pipeline;
before(async () => {
  pipe = await loadPipeline(await tinyModel('standard'), { threads: 1 });
});
after(async () => {
  await pipe?.close();
});

const base = { prompt: 'a red circle on a blue background', negativePrompt: 'blurry', steps: 3, guidanceScale: 7.5 };

test('end to end: an image of the requested size with readable embedded parameters', async () => {
  const r = await pipe.generate({ ...base, width: 256, height: 192, seed: 5 });
  assert.equal(r.image.width, 256);
  assert.equal(r.image.height, 192);
  assert.equal(r.image.data.length, 256 * 192 * 3);
  const dir = tempDir();
  const file = path.join(dir, 'a.png');
  await saveImage(file, r.image, r.metadata);
  const back = await readImageMetadata(file);
  assert.equal(back.metadata?.prompt, base.prompt);
  assert.equal(back.metadata?.negativePrompt, 'blurry');
  assert.equal(back.metadata?.seed, '5');
  assert.equal(back.metadata?.width, 256);
  assert.equal(back.metadata?.steps, 3);
  assert.match(back.parameters ?? '', /^a red circle on a blue background\nNegative prompt: blurry\nSteps: 3, Sampler: pndm, CFG scale: 7\.5, Seed: 5, Size: 256x192/);
  for (const ext of ['jpg', 'webp']) {
    const f = path.join(dir, `a.${ext}`);
    await saveImage(f, r.image, r.metadata);
    const m = await readImageMetadata(f);
    assert.equal(m.metadata?.seed, '5', ext);
    assert.equal(m.metadata?.prompt, base.prompt, ext);
  }
  assert.deepEqual(fs.readdirSync(dir).sort(), ['a.jpg', 'a.png', 'a.webp']);
});

test('saveImage to a path whose folder is a regular file fails with kind output and leaves no file (root too)', async () => {
  const dir = tempDir('unwritable');
  const notAFolder = path.join(dir, 'file.txt');
  fs.writeFileSync(notAFolder, 'a file');
  const img = { data: new Uint8Array(8 * 8 * 3).fill(128), width: 8, height: 8 };
  const cases: [string, string][] = [
    [path.join(notAFolder, 'a.png'), `The output folder is not a folder: ${notAFolder}`],
    [path.join(notAFolder, 'sub', 'a.png'), `The output folder does not exist: ${path.join(notAFolder, 'sub')}`],
  ];
  for (const [file, message] of cases) {
    await assert.rejects(saveImage(file, img, undefined, true), (e: unknown) =>
      e instanceof AsgdError && e.kind === 'output' && e.parameter === 'output' && e.message.startsWith(`${message}. `), file);
  }
  assert.deepEqual(fs.readdirSync(dir), ['file.txt']);
  assert.equal(fs.readFileSync(notAFolder, 'utf8'), 'a file');
  // A folder that takes no new files (even for root): the error names the file asked for, not the temporary one.
  await assert.rejects(saveImage('/proc/a.png', img, undefined, true), (e: unknown) =>
    e instanceof AsgdError && e.kind === 'output' && e.message === "Cannot write /proc/a.png: ENOENT: no such file or directory, open '/proc/a.png'. Check the disk space and permissions");
});

test('the same seed gives byte-identical files, another seed a different one', async () => {
  const dir = tempDir();
  const files: Buffer[] = [];
  for (const [i, seed] of [11, 11, 12].entries()) {
    const r = await pipe.generate({ ...base, seed });
    const f = path.join(dir, `s${i}.png`);
    await saveImage(f, r.image, r.metadata);
    files.push(fs.readFileSync(f));
  }
  assert.ok(files[0]!.equals(files[1]!), 'same seed, same bytes');
  assert.ok(!files[0]!.equals(files[2]!), 'other seed, other bytes');
});

test('every loader variant loads and generates', async () => {
  for (const variant of VARIANTS.filter((v) => v !== 'sdxl')) {
    const p = await loadPipeline(await tinyModel(variant), { threads: 1 });
    try {
      const size = variant === 'static-shape' ? 512 : 128;
      const r = await p.generate({ ...base, steps: 2, seed: 3, width: size, height: size, method: 'direct' });
      assert.equal(r.image.width, size, variant);
      assert.ok(r.image.data.some((v) => v !== r.image.data[0]), `${variant}: image not constant`);
      assert.equal(p.info.latentChannels, 4, variant);
      if (variant === 'static-shape') {
        await assert.rejects(p.generate({ ...base, steps: 1, width: 256, height: 256 }), /static input size; expected multiples of 512x512.*received 256x256/);
      }
    } finally {
      await p.close();
    }
  }
});

test('tiled and untiled VAE decoding agree on a decoder with image-wide GroupNorm (shared statistics), not with per-tile statistics', async () => {
  // The tiny model's own decoder is local; this VAE normalises over the whole image, as SD's does.
  const vaeDir = tempDir('gn-vae');
  fs.mkdirSync(path.join(vaeDir, 'vae_decoder'));
  fs.writeFileSync(path.join(vaeDir, 'vae_decoder', 'model.onnx'), toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 3, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_DECODER })));
  fs.writeFileSync(path.join(vaeDir, 'vae_decoder', 'config.json'), JSON.stringify({ scaling_factor: 0.5 }));
  const p = await loadPipeline(await tinyModel('standard'), { threads: 1, vae: vaeDir, attentionProbe: false });
  try {
    const h = 40;
    const w = 56;
    const latent = new Float32Array(4 * h * w);
    // A smooth latent with a step on the right: tiles see different statistics.
    for (let c = 0; c < 4; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) latent[(c * h + y) * w + x] = 0.5 * Math.sin(0.21 * x + 0.13 * y + c) + (x > 30 ? 0.6 : 0);
    const full = await p.decodeLatent(latent, h, w, { tiling: 'off', tileSize: 24, overlap: 12, stats: 'exact', attention: 'global' });
    const warnings: string[] = [];
    const tiled = await p.decodeLatent(latent, h, w, { tiling: 'on', tileSize: 24, overlap: 12, stats: 'exact', attention: 'global' }, undefined, (m) => warnings.push(m));
    const perTile = await p.decodeLatent(latent, h, w, { tiling: 'on', tileSize: 24, overlap: 12, stats: 'off', attention: 'global' });
    // Tiling forced on a latent that fits one tile: the estimate runs on the latent itself (not a downscaled copy).
    const one = await p.decodeLatent(latent.slice(0, 4 * 20 * 20), 20, 20, { tiling: 'on', tileSize: 24, overlap: 12, stats: 'estimate', attention: 'global' });
    const oneFull = await p.decodeLatent(latent.slice(0, 4 * 20 * 20), 20, 20, { tiling: 'off', tileSize: 24, overlap: 12, stats: 'estimate', attention: 'global' });
    let oneMax = 0;
    for (let i = 0; i < one.data.length; i++) oneMax = Math.max(oneMax, Math.abs(one.data[i]! - oneFull.data[i]!));
    assert.ok(oneMax <= 1, `one tile with its own whole-image statistics: ${oneMax}`);
    assert.deepEqual(warnings, []);
    assert.equal(tiled.width, full.width);
    const diff = (a: typeof full) => absDifference(full.data, a.data);
    const shared = diff(tiled);
    const own = diff(perTile);
    assert.ok(shared.max <= 6 && shared.mean <= 0.25, `shared statistics: ${JSON.stringify(shared)}`);
    assert.ok(own.max >= 30 && own.mean >= 2, `per-tile statistics: ${JSON.stringify(own)}`);
  } finally {
    await p.close();
  }
});

test('a decoder whose norm the surgery cannot rewrite is tiled with per-tile statistics, with a warning that names the node', async () => {
  const model = buildGroupNormVaeDecoder({ seed: 3, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_DECODER });
  const graph = model.graph!;
  // The first GroupNorm's Reshape gets its shape from a Concat: still a GroupNorm, but not one the surgery can prove.
  const norm = graph.node.find((n) => n.opType === 'InstanceNormalization')!;
  const reshape = graph.node.find((n) => n.output[0] === norm.input[0])!;
  const concat = create(NodeProtoSchema, { name: '/test/Concat', opType: 'Concat', input: [reshape.input[1]!], output: ['/test/Concat_output_0'], attribute: [create(AttributeProtoSchema, { name: 'axis', type: AttributeProto_AttributeType.INT, i: 0n })] });
  graph.node.splice(graph.node.indexOf(reshape), 0, concat);
  reshape.input[1] = '/test/Concat_output_0';
  const vaeDir = tempDir('gn-vae-fallback');
  fs.writeFileSync(path.join(vaeDir, 'model.onnx'), toBinary(ModelProtoSchema, model));
  const p = await loadPipeline(await tinyModel('standard'), { threads: 1, vae: vaeDir, attentionProbe: false });
  try {
    const warnings: string[] = [];
    const img = await p.decodeLatent(new Float32Array(4 * 20 * 20).fill(0.1), 20, 20, { tiling: 'on', tileSize: 12, overlap: 6, stats: 'exact', attention: 'global' }, undefined, (m) => warnings.push(m));
    assert.equal(img.width, 160);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /^Tiled VAE decoding falls back to per-tile normalisation \(colours may shift between tiles\): normalisation layers it cannot rewrite: \/decoder\/mid_block\/resnets\.0\/norm1\/InstanceNormalization: InstanceNormalization after a Reshape to a computed shape, not \[N, groups, -1\]$/);
  } finally {
    await p.close();
  }
});

test('bad model folders get clear errors', async () => {
  const cases: [string, (dir: string) => void, RegExp][] = [
    ['missing vae', (d) => fs.rmSync(path.join(d, 'vae_decoder'), { recursive: true }), /The model folder has no vae_decoder.*Expected vae_decoder\/model\.onnx/],
    ['missing tokenizer', (d) => fs.rmSync(path.join(d, 'tokenizer'), { recursive: true }), /The model has no tokenizer folder/],
    ['unknown layout', (d) => { for (const e of fs.readdirSync(d)) fs.rmSync(path.join(d, e), { recursive: true }); fs.writeFileSync(path.join(d, 'x.txt'), 'x'); }, /Unknown model layout/],
    ['no unet', (d) => fs.rmSync(path.join(d, 'unet'), { recursive: true }), /has no UNet/],
    ['unet not matching the contract', (d) => fs.copyFileSync(path.join(d, 'vae_decoder', 'model.onnx'), path.join(d, 'unet', 'model.onnx')), /unet has no timestep input.*re-export/],
    ['damaged onnx', (d) => fs.writeFileSync(path.join(d, 'text_encoder', 'model.onnx'), 'garbage'), /ONNX Runtime cannot load text_encoder/],
    ['bad json', (d) => fs.writeFileSync(path.join(d, 'model_index.json'), '{'), /model_index\.json is not valid JSON/],
  ];
  for (const [name, breakIt, re] of cases) {
    const dir = await copyModel('standard');
    breakIt(dir);
    await assert.rejects(loadPipeline(dir, { threads: 1 }), (e: unknown) => e instanceof AsgdError && e.kind === 'model' && re.test(e.message), name);
  }
  await assert.rejects(loadPipeline('/nonexistent/model'), /Model folder not found/);
  // A pipeline class this tool does not know is loaded by its files, with a note saying so.
  const other = await copyModel('standard');
  const index = JSON.parse(fs.readFileSync(path.join(other, 'model_index.json'), 'utf8'));
  fs.writeFileSync(path.join(other, 'model_index.json'), JSON.stringify({ ...index, _class_name: 'KandinskyV22Pipeline' }));
  const { readModelFolder } = await import('../src/node/model/folder.ts');
  assert.ok(readModelFolder(other).notes.includes('model_index.json names KandinskyV22Pipeline, not a text-to-image pipeline this tool knows: loaded by its files (expected e.g. ORTStableDiffusionPipeline)'));
  assert.ok(!readModelFolder(await tinyModel('standard')).notes.some((n) => n.includes('not a text-to-image pipeline')));
});

test('calls made at once on one pipeline run one after another: each image is the one it makes alone; decodes, tiled or not, too', async () => {
  const A = { ...base, prompt: 'a red circle on a blue background', width: 64, height: 64, steps: 2, seed: 1 };
  const B = { ...base, prompt: 'a green square on a white background', width: 64, height: 64, steps: 2, seed: 2 };
  const a = await pipe.generate(A);
  const b = await pipe.generate(B);
  // Before: the second call's conditioning replaced the first's on the device mid-run.
  const [a2, b2] = await Promise.all([pipe.generate(A), pipe.generate(B)]);
  assert.deepEqual(a2.image.data, a.image.data);
  assert.deepEqual(b2.image.data, b.image.data);
  const vae: Parameters<Pipeline['decodeLatent']>[3] = { tiling: 'off', tileSize: 16, overlap: 4, stats: 'exact', attention: 'auto' };
  const plain = await pipe.decodeLatent(a.latent, 8, 8, vae);
  const tiled = await pipe.decodeLatent(a.latent, 8, 8, { ...vae, tiling: 'on' as const });
  // Before: one released the other's session on the device ("Session already disposed").
  const both = await Promise.all([pipe.decodeLatent(a.latent, 8, 8, vae), pipe.decodeLatent(a.latent, 8, 8, { ...vae, tiling: 'on' as const })]);
  assert.deepEqual(both.map((x) => x.data), [plain.data, tiled.data]);
});

test('with retry on, a model every device fails on reports the failure itself, not that no device is left', async () => {
  const dir = tempDir('retry-broken');
  fs.cpSync(fileURLToPath(new URL('../models/shapes-128', import.meta.url)), dir, { recursive: true });
  // A decoder that fits the contract (one 4-channel latent input), so it loads, and fails on every device at the
  // first decode: its latent is reshaped to a size no latent has.
  const decoder = buildGroupNormVaeDecoder({ seed: 3, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_DECODER });
  const graph = decoder.graph!;
  const input = graph.input[0]!.name;
  for (const n of graph.node) n.input = n.input.map((x) => (x === input ? '/test/bad_latent' : x));
  graph.initializer.push(create(TensorProtoSchema, { name: '/test/bad_shape', dataType: 7, dims: [4n], rawData: new Uint8Array(new BigInt64Array([1n, 4n, 999n, 999n]).buffer) }));
  graph.node.unshift(create(NodeProtoSchema, { name: '/test/Reshape', opType: 'Reshape', input: [input, '/test/bad_shape'], output: ['/test/bad_latent'] }));
  fs.writeFileSync(path.join(dir, 'vae_decoder', 'model.onnx'), toBinary(ModelProtoSchema, decoder));
  await using p = await loadPipeline(dir, { devices: 'cpu,cpu', threads: 1, retryOnOtherDevice: true });
  await assert.rejects(p.generate({ ...base, steps: 1, seed: 1, method: 'direct' }), (e: unknown) =>
    e instanceof AsgdError && /^Device cpu#\d failed on VAE decoding: .*\/test\/Reshape/s.test(e.message), 'the cause');
});

test("a model folder without a scheduler config generates with diffusers' Euler defaults, as its note says", async () => {
  const dir = await copyModel('standard');
  fs.rmSync(path.join(dir, 'scheduler'), { recursive: true });
  await using p = await loadPipeline(dir, { threads: 1 });
  assert.ok(p.info.notes.includes('no scheduler config: diffusers defaults for EulerDiscreteScheduler'), p.info.notes.join('; '));
  const r = await p.generate({ ...base, steps: 2, seed: 1, width: 64, height: 64, method: 'direct' });
  assert.equal(r.metadata.scheduler, 'euler');
  assert.equal(r.unetEvaluations, 2);
});

test('an error raised inside a device worker keeps its fields (parameter, expected, received, hint)', async () => {
  const dir = await copyModel('standard');
  fs.copyFileSync(path.join(dir, 'vae_decoder', 'model.onnx'), path.join(dir, 'unet', 'model.onnx'));
  const err = await loadPipeline(dir, { threads: 1 }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof AsgdError, String(err));
  assert.equal(err.kind, 'model');
  assert.equal(err.parameter, 'unet');
  assert.match(err.expected ?? '', /^one of timestep/);
  assert.equal(err.received, 'latent_sample');
  assert.match(err.hint ?? '', /re-export it with optimum-cli/);
  assert.equal(err.summary, 'unet has no timestep input');
  assert.equal(err.message, `unet has no timestep input; expected ${err.expected}; received latent_sample. ${err.hint}`);
});

test('cancelling stops within one model call; later runs, queued behind it or started after, start the workers again', async () => {
  let ask!: () => Promise<unknown>;
  const p = await openPipeline(await tinyModel('standard'), { threads: 1 }, { inspectWorkers: (f) => (ask = f) });
  try {
    const small = { ...base, steps: 2, seed: 9, width: 128, height: 128 };
    const reference = (await pipe.generate(small)).image.data;
    // A signal aborted already: cancelled before any model call, the workers left running.
    let early = 0;
    await assert.rejects(p.generate(small, { signal: AbortSignal.abort(), onProgress: () => early++ }), (e: unknown) => e instanceof AsgdError && e.kind === 'cancelled');
    assert.equal(early, 0);
    await ask(); // the first workers still answer

    const controller = new AbortController();
    let events = 0;
    const t0 = performance.now();
    const cancelled = p.generate({ ...base, steps: 50, seed: 1, width: 512, height: 512 }, {
      signal: controller.signal,
      onProgress: () => {
        if (++events === 2) controller.abort();
      },
    });
    const queued = p.generate(small); // no signal: waits its turn behind the cancelled run
    await assert.rejects(cancelled, (e: unknown) => e instanceof AsgdError && e.kind === 'cancelled');
    assert.equal(events, 2, 'no progress after the abort');
    assert.ok(performance.now() - t0 < 20_000);
    await assert.rejects(ask(), 'the cancel ended the first workers');
    assert.ok(Buffer.from((await queued).image.data).equals(Buffer.from(reference)), 'the queued run ran on started-again workers, with the same image');
    const phases: string[] = [];
    const again = await p.generate(small, { onProgress: (e) => phases.push(e.phase) });
    assert.ok(Buffer.from(again.image.data).equals(Buffer.from(reference)));
    assert.deepEqual([...new Set(phases)], ['text', 'denoise', 'decode']);
    await p.close();
    await assert.rejects(p.generate(small), (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && /pipeline is closed/.test(e.message));
  } finally {
    await p.close();
  }
});

test('loadPipeline, generate and their options are checked: each wrong argument named, with what was expected and received', async () => {
  const model = await tinyModel('standard');
  const refused = async (call: () => Promise<unknown>, parameter: string, received: RegExp) =>
    assert.rejects(call, (e: unknown) => {
      assert.ok(e instanceof AsgdError, String(e));
      assert.deepEqual([e.kind, e.parameter], ['invalid-argument', parameter], e.message);
      assert.match(e.received ?? '', received, e.message);
      assert.ok(e.expected, e.message);
      return true;
    });
  await refused(() => loadPipeline(42 as unknown as string), 'dir', /42/);
  await refused(() => loadPipeline(model, null as unknown as undefined), 'options', /null/);
  await refused(() => loadPipeline(model, { vae: 5 as unknown as string }), 'vae', /5/);
  await refused(() => loadPipeline(model, { devices: 3 as unknown as string }), 'devices', /3/);
  await refused(() => loadPipeline(model, { devices: [] }), 'devices', /\[\]/);
  await refused(() => loadPipeline(model, { splitCfg: 'bogus' as 'auto' }), 'splitCfg', /bogus/);
  await refused(() => loadPipeline(model, { signal: 'x' as unknown as AbortSignal }), 'signal', /x/);
  await refused(() => loadPipeline(model, { thread: 2 } as unknown as { threads: number }), 'thread', /2/);
  const small = { ...base, steps: 1, seed: 1, width: 64, height: 64 };
  await refused(() => pipe.generate(small, { signal: 'nope' as unknown as AbortSignal }), 'signal', /nope/);
  await refused(() => pipe.generate(small, { onProgress: 5 as unknown as () => void }), 'onProgress', /5/);
  await refused(() => pipe.generate({ ...small, widht: 256 } as unknown as typeof small), 'widht', /256/);
  // The pipeline still generates after the refusals.
  assert.equal((await pipe.generate(small)).image.width, 64);
});

test('a long prompt is truncated with a warning that says how many tokens were dropped', async () => {
  const long = Array.from({ length: 90 }, () => 'red').join(' ');
  const r = await pipe.generate({ ...base, prompt: long, steps: 1, seed: 1, width: 64, height: 64, method: 'direct' });
  assert.deepEqual(r.warnings.filter((w) => /too long/.test(w)), ["The prompt is too long: 15 token(s) beyond the model's 75 were dropped"]);
});

test('patch methods above the native size use euler instead of a linear multistep config scheduler, unless one is named', async () => {
  const hr = await pipe.generate({ ...base, steps: 2, seed: 1, width: 1024, height: 512, method: 'asg' });
  assert.equal(hr.metadata.scheduler, 'euler');
  assert.ok(hr.warnings.some((w) => /Using the euler scheduler instead of the model's pndm/.test(w)));
  const named = await pipe.generate({ ...base, steps: 2, seed: 1, width: 1024, height: 512, method: 'asg', scheduler: 'pndm' });
  assert.equal(named.metadata.scheduler, 'pndm');
  const native = await pipe.generate({ ...base, steps: 2, seed: 1, method: 'asg' });
  assert.equal(native.metadata.scheduler, 'pndm');
  const direct = await pipe.generate({ ...base, steps: 2, seed: 1, width: 1024, height: 512, method: 'direct' });
  assert.equal(direct.metadata.scheduler, 'pndm');
});

test("progress counts the scheduler's steps: PNDM (skip_prk_steps) runs one more than asked, and the last event is step N of N", async () => {
  const events: { phase: string; step: number; totalSteps: number; unitsDone: number; unitsTotal: number }[] = [];
  const r = await pipe.generate({ ...base, steps: 4, seed: 1, width: 64, height: 64, method: 'direct' }, { onProgress: (p) => events.push({ ...p }) });
  assert.equal(r.metadata.scheduler, 'pndm');
  const denoise = events.filter((e) => e.phase === 'denoise');
  assert.equal(r.unetEvaluations, 5, 'PLMS with skip_prk_steps: steps + 1 evaluations');
  assert.deepEqual([...new Set(denoise.map((e) => `${e.step}/${e.totalSteps}`))], ['1/5', '2/5', '3/5', '4/5', '5/5']);
  assert.ok(events.filter((e) => e.phase === 'decode').every((e) => e.step === 5 && e.totalSteps === 5));
});

test('odd sizes come out exactly; progress counts every UNet evaluation by the formula; previews arrive', async () => {
  const events: { stage: number; step: number; unitsDone: number; unitsTotal: number; phase: string }[] = [];
  const previews: { w: number; h: number; step: number }[] = [];
  // 1000x600 px on a 512-native model: latent 125x75 -> 2 x 1 patches (padded), 3 x 2 windows.
  const r = await pipe.generate(
    { ...base, steps: 4, seed: 2, width: 1000, height: 600, method: 'asg', scheduler: 'euler' },
    { onProgress: (p) => events.push({ ...p }), onPreview: (img, step) => previews.push({ w: img.width, h: img.height, step }), previewEvery: 2 },
  );
  assert.equal(r.image.width, 1000);
  assert.equal(r.image.height, 600);
  const denoise = events.filter((e) => e.phase === 'denoise');
  const total = denoise[0]!.unitsTotal;
  // asg: N x S + windows x (T - S) with N = 2 (rows 1, cols 2), S = round(4 x 0.8) = 3, windows = 2 rows x 3 cols.
  assert.equal(total, 2 * 3 + 6 * 1);
  assert.equal(r.unetEvaluations, total);
  assert.equal(denoise[denoise.length - 1]!.unitsDone, total);
  assert.deepEqual([...new Set(denoise.map((e) => e.stage))], [1, 2]);
  assert.ok(events.some((e) => e.phase === 'decode'));
  await new Promise((res) => setTimeout(res, 200));
  assert.ok(previews.length >= 1, 'a preview every 2 steps');
  assert.ok(previews.every((p) => p.w > 0 && p.h > 0 && p.w <= 1000));
});

test('method option errors name the option; a mask word not in the prompt is refused', async () => {
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ structureWeight: -0.5 }, /Invalid structureWeight; expected a number in \[0, 1\]; received -0\.5/],
    [{ stageSplit: 1.5 }, /Invalid stageSplit; expected a number in \[0, 1\]/],
    [{ windowStride: 100 }, /Invalid windowStride; expected an integer from 1 to the window size \(64 latent px\)/],
    [{ maskEvery: 0 }, /Invalid maskEvery/],
    [{ nonsense: 1 }, /Invalid methodOptions.nonsense: not a known setting; expected one of/],
  ];
  for (const [methodOptions, re] of cases) {
    await assert.rejects(pipe.generate({ ...base, steps: 1, width: 1024, height: 512, methodOptions }), (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && re.test(e.message), JSON.stringify(methodOptions));
  }
  await assert.rejects(pipe.generate({ ...base, steps: 1, maskWords: ['dog'] }), /The mask word "dog" is not in the prompt.*Prompt words: a red circle on blue background/);
  // A word the vocabulary splits into pieces is listed whole, as typed (its repeated pieces were dropped).
  await assert.rejects(pipe.generate({ ...base, prompt: 'a red circle, masterpiece', steps: 1, maskWords: ['dog'] }), /Prompt words: a red circle , masterpiece$/);
  const ok = await pipe.generate({ ...base, steps: 1, seed: 1, width: 1024, height: 512, maskWords: ['red', 'circle'] });
  assert.equal(ok.metadata.maskWords?.join(' '), 'red circle');
});

test('force_upcast with a float16 VAE: it runs in float32, or warns where its float32 graph cannot be made; --vae replaces the VAE with a float32 one', async () => {
  const fp16 = await loadPipeline(await tinyModel('fp16'), { threads: 1, attentionProbe: false });
  try {
    assert.equal(fp16.info.components.vaeDecoder?.inputs[0]?.type, 'float32');
    assert.ok(fp16.info.notes.some((n) => /^vae_decoder is a float16 export and the VAE config sets force_upcast: it runs in float32 \(\d+ tensors converted, model\.asgd-float32\.onnx\)$/.test(n)), fp16.info.notes.join(' | '));
    assert.ok(fp16.info.notes.some((n) => /^vae_encoder is a float16 export .* runs in float32/.test(n)), fp16.info.notes.join(' | '));
    assert.equal(fp16.info.vaeEncoder, path.join('vae_encoder', 'model.asgd-float32.onnx'));
    const r = await fp16.generate({ ...base, steps: 1, seed: 1, width: 64, height: 64, method: 'direct' });
    assert.ok(!r.warnings.some((w) => /force_upcast/.test(w)), r.warnings.join('\n'));
    // The encoder's float32 graph serves an upscale.
    const up = await fp16.upscale({ prompt: base.prompt, steps: 2, seed: 1, image: r.image, scale: 2, strength: 0.5 });
    assert.deepEqual([up.image.width, up.image.height], [128, 128]);
  } finally {
    await fp16.close();
  }
  // Nowhere to store the float32 graphs (a folder where the file would go, a cache path that is a file): the VAE
  // runs as exported, the load says why, and every generation warns.
  const blocked = await copyModel('fp16');
  for (const part of ['vae_decoder', 'vae_encoder']) {
    for (const f of fs.readdirSync(path.join(blocked, part)).filter((n) => n.includes('asgd-float32'))) fs.rmSync(path.join(blocked, part, f));
    fs.mkdirSync(path.join(blocked, part, 'model.asgd-float32.onnx', 'x'), { recursive: true });
  }
  const cacheFile = path.join(tempDir('cache-file'), 'not-a-folder');
  fs.writeFileSync(cacheFile, '');
  const cacheBefore = process.env.ASGD_CACHE_DIR;
  process.env.ASGD_CACHE_DIR = cacheFile;
  try {
    const fallback = await loadPipeline(blocked, { threads: 1, attentionProbe: false });
    try {
      assert.equal(fallback.info.components.vaeDecoder?.inputs[0]?.type, 'float16');
      assert.ok(fallback.info.notes.some((n) => /^vae_decoder: the VAE config sets force_upcast, but its float32 graph could not be made \(the derived graphs could not be written .*\); it runs as exported$/.test(n)), fallback.info.notes.join(' | '));
      const r = await fallback.generate({ ...base, steps: 1, seed: 1, width: 64, height: 64, method: 'direct' });
      assert.ok(r.warnings.some((w) => /force_upcast but vae_decoder is a float16 export.*--vae/.test(w)), r.warnings.join('\n'));
    } finally {
      await fallback.close();
    }
  } finally {
    if (cacheBefore === undefined) delete process.env.ASGD_CACHE_DIR;
    else process.env.ASGD_CACHE_DIR = cacheBefore;
  }
  const mixed = await loadPipeline(await tinyModel('fp16'), { threads: 1, attentionProbe: false, vae: await tinyModel('standard') });
  try {
    assert.equal(mixed.info.components.vaeDecoder?.inputs[0]?.type, 'float32');
    const r = await mixed.generate({ ...base, steps: 1, seed: 1, width: 64, height: 64, method: 'direct' });
    assert.ok(!r.warnings.some((w) => /force_upcast/.test(w)));
  } finally {
    await mixed.close();
  }
  await assert.rejects(loadPipeline(await tinyModel('standard'), { vae: tempDir('novae') }), /The VAE folder has no decoder/);
});

test("asg without attention maps says why in its mask warning: the probe turned off, or the probe's own reason", async () => {
  const off = await loadPipeline(await tinyModel('standard'), { threads: 1, attentionProbe: false });
  try {
    const r = await off.generate({ prompt: 'a red circle', steps: 2, seed: 1, width: 1024, height: 512, scheduler: 'euler' });
    assert.ok(r.warnings.includes('structure mask disabled (M = 1): the attention-probe graph was turned off (attentionProbe: false), so the model gives no cross-attention maps'), r.warnings.join(' | '));
  } finally {
    await off.close();
  }
  // An export whose attention is fused: the probe cannot separate the probabilities, and the warning says so.
  const fused = await loadPipeline(await tinyModel('fused-attention'), { threads: 1 });
  try {
    const reason = fused.info.attentionProbe.reason!;
    assert.ok(reason.length > 20, reason);
    const r = await fused.generate({ prompt: 'a red circle', steps: 2, seed: 1, width: 1024, height: 512, scheduler: 'euler' });
    assert.ok(r.warnings.includes(`structure mask disabled (M = 1): no cross-attention maps: ${reason}`), r.warnings.join(' | '));
  } finally {
    await fused.close();
  }
});

test('decodeLatent takes VAE options as generate does: unset ones default, bad ones and a latent of the wrong size are refused by name', async () => {
  const latent = new Float32Array(4 * 16 * 24).map((_, i) => Math.sin(i * 0.01));
  const whole = await pipe.decodeLatent(latent, 16, 24);
  assert.equal(whole.width, 192);
  // Before: "Invalid vaeTileSize ... received nothing" (a name no API has) for a partial object.
  const tiled = await pipe.decodeLatent(latent, 16, 24, { tiling: 'on', tileSize: 16, overlap: 4 });
  assert.equal(tiled.height, 128);
  // Before: an unknown statistics mode ran as 'estimate'; a latent of another size decoded garbage (tiled) or failed as a device error.
  await assert.rejects(pipe.decodeLatent(latent, 16, 24, { tiling: 'on', stats: 'exactly' as never }), /^AsgdError: Invalid vae\.stats; expected one of exact, estimate, off; received "exactly"$/);
  await assert.rejects(pipe.decodeLatent(latent, 16, 24, { tileSize: 0 }), /^AsgdError: Invalid vae\.tileSize; expected an integer >= 8; received 0\./);
  for (const tiling of ['on', 'off'] as const) {
    await assert.rejects(pipe.decodeLatent(latent, 15, 24, { tiling }), (e: unknown) =>
      e instanceof AsgdError && e.kind === 'invalid-argument' && /^Invalid latent; expected 1440 values \(4 channels x 15 x 24\); received 1536 values\. /.test(e.message));
  }
});
