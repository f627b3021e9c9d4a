/**
 * Upscaling (issue 12): the img2img stage pieces, `pipe.upscale` / `generateUpscaled` on the tiny fixtures and the
 * shipped shapes model, and `asgd upscale` (bad inputs, --from, Ctrl-C).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { AsgdError } from '../src/core/errors.ts';
import { checkUpscale, noiseTo, polyphaseTargets, schedulerFrom, startStep, upscaleMethodOptions } from '../src/core/generation/img2img.ts';
import { createMethod } from '../src/core/methods/index.ts';
import { extractPatches } from '../src/core/methods/polyphase.ts';
import type { UnetUnit } from '../src/core/methods/types.ts';
import type { RgbImage } from '../src/core/image.ts';
import { promptFromParametersText } from '../src/core/metadata.ts';
import { addPngTextChunks } from '../src/core/png-chunks.ts';
import { createRandom } from '../src/core/random/index.ts';
import { createScheduler } from '../src/core/schedulers/index.ts';
import { resizeLanczos } from '../src/node/image/read.ts';
import { encodeImage, readImageMetadata, saveImage } from '../src/node/image/write.ts';
import { loadPipeline, type Pipeline } from '../src/node/pipeline.ts';
import { tempDir, tinyModel } from './helpers/models.ts';
import { absDifference } from '../bench/analysis/difference.ts';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin', 'asgd.js');
const SHAPES = path.join(ROOT, 'models', 'shapes-128');

/** A red disc on a blue background (the shapes model's palette), w x h. */
function disc(w: number, h: number): RgbImage {
  const data = new Uint8Array(w * h * 3);
  const r = Math.min(w, h) * 0.3;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const inside = (x + 0.5 - w / 2) ** 2 + (y + 0.5 - h / 2) ** 2 < r * r;
      data.set(inside ? [224, 26, 26] : [31, 56, 230], (y * w + x) * 3);
    }
  }
  return { data, width: w, height: h };
}

async function pngBytes(img: RgbImage, text?: Record<string, string>): Promise<Uint8Array> {
  const png = await encodeImage(img, 'png');
  return text ? addPngTextChunks(png, text) : png;
}

let pipe: Pipeline;
let dir: string;
let sourceFile: string;
before(async () => {
  pipe = await loadPipeline(await tinyModel('standard'), { threads: 1 });
  dir = tempDir('upscale');
  sourceFile = path.join(dir, 'source.png');
  fs.writeFileSync(sourceFile, await pngBytes(disc(40, 32)));
});
after(async () => {
  await pipe?.close();
});

const quick = { steps: 4, seed: 7, prompt: 'a red circle on a blue background' };

test('strength picks the last floor(T * s) steps (at least one)', () => {
  assert.deepEqual([1, 0.5, 0.3, 0.01, 0.999].map((s) => startStep(20, s)), [0, 10, 14, 19, 1]);
  assert.equal(startStep(3, 0.5), 2);
});

test('schedulerFrom runs the last steps of the full schedule, bit for bit', () => {
  const config = { _class_name: 'EulerDiscreteScheduler', beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012 };
  const full = createScheduler(config, 10);
  const tail = schedulerFrom(full, 6);
  assert.equal(tail.numSteps, 4);
  assert.deepEqual(tail.timesteps, full.timesteps.slice(6));
  assert.deepEqual(tail.noiseLevel(0), full.noiseLevel(6));
  assert.equal(tail.inputScale(3), full.inputScale(9));
  const x = createRandom(1n, 'noise').randn([1, 4, 4, 4]);
  const eps = createRandom(2n, 'noise').randn([1, 4, 4, 4]);
  const a = tail.step(tail.initialState(), eps, x);
  const b = full.step({ ...full.initialState(), stepIndex: 6 }, eps, x);
  assert.deepEqual(a.prevSample, b.prevSample);
  assert.equal(a.state.stepIndex, 1);
  // The part-of-the-latent steps come along, shifted: stepPositions and the kernels' scalars (Euler, DDIM), and the
  // multistep solvers' and Euler ancestral's elementwise mark.
  for (const name of ['euler', 'ddim']) {
    const f = createScheduler(config, 10, name);
    const t = schedulerFrom(f, 6);
    const at = Int32Array.of(0, 5, 63);
    const mine = new Float32Array(64);
    const theirs = new Float32Array(64);
    t.stepPositions!(2, eps, x, mine, at);
    f.stepPositions!(8, eps, x, theirs, at);
    assert.deepEqual(mine, theirs, `${name}: stepPositions at step 2 is full's step 8`);
    assert.deepEqual(t.eulerCoefficients!(2), f.eulerCoefficients!(8), `${name}: the kernels' scalars`);
  }
  for (const name of ['dpmpp-2m', 'euler-ancestral']) {
    const f = createScheduler(config, 10, name);
    const t = schedulerFrom(f, 6);
    assert.equal(t.elementwise, true, name);
    assert.equal(t.stepPositions, undefined, name);
    // stepPart, shifted: the tail's step 1 (order 2 for DPM-Solver++, with a history) is the full schedule's step 7.
    const at = Int32Array.of(0, 5, 63);
    const history = [createRandom(3n, 'noise').randn([64])];
    const noise = createRandom(4n, 'noise').randn([64]);
    const run = (s: typeof f, stepIndex: number) => {
      const into = new Float32Array(64);
      const after = [new Float32Array(64)];
      const next = s.stepPart!({ stepIndex, history, extra: { lowerOrderNums: 1 } }, { modelOutput: eps, sample: x, into, at, positions: null, after: (n) => after.slice(0, n), noise: () => noise });
      return { into, after, next };
    };
    const mine = run(t, 1);
    const theirs = run(f, 7);
    assert.deepEqual(mine.into, theirs.into, `${name}: stepPart at step 1 is full's step 7`);
    assert.deepEqual(mine.after, theirs.after, `${name}: the history after`);
    assert.deepEqual(mine.next, { ...theirs.next, stepIndex: 2 }, `${name}: the state after, shifted`);
    assert.ok(mine.into.some((v, i) => v !== 0 && at.includes(i)) && mine.into.every((v, i) => v === 0 || at.includes(i)), `${name}: only the listed positions`);
    // The kernels' form of the step (DPM-Solver++'s, Euler ancestral's), shifted too.
    assert.deepEqual(t.statefulCoefficients!({ stepIndex: 1, history, extra: { lowerOrderNums: 1 } }), f.statefulCoefficients!({ stepIndex: 7, history, extra: { lowerOrderNums: 1 } }), `${name}: the kernels' scalars`);
  }
  // Noising: alpha * x0 + sigma * n.
  assert.deepEqual(noiseTo(Float32Array.of(1, 2), Float32Array.of(0.5, -1), 1, 2), Float32Array.of(2, 0));
});

test('asg with a structure target: at weight 1 every patch\'s denoised estimate becomes its target (shared or per patch)', async () => {
  const config = { _class_name: 'EulerDiscreteScheduler', beta_schedule: 'scaled_linear', beta_start: 0.00085, beta_end: 0.012 };
  const sched = schedulerFrom(createScheduler(config, 10), 5);
  const setup = { height: 16, width: 16, nativeHeight: 8, nativeWidth: 8, channels: 4, numSteps: sched.numSteps };
  const options = { structureWeight: 1, structureSchedule: 'constant' as const, mask: false };
  const latent = createRandom(3n, 'noise').randn([1, 4, 16, 16]);
  const hr = createRandom(4n, 'noise').randn([1, 4, 16, 16]);
  const evaluate = async (units: UnetUnit[]) => units.map((u) => ({ output: u.sample.map((v, i) => Math.sin(v + i)) }));
  const ctxFor = (target: Float32Array) => ({
    scheduler: sched, evaluate, maskTokens: [], structureTarget: target,
    random: { permutation: createRandom(1n, 'permutation'), jitter: createRandom(1n, 'jitter') },
  });
  const perPatch = polyphaseTargets(hr, createMethod('asg', options, setup).plan.geometry);
  const shared = perPatch.slice(0, 4 * 8 * 8);
  for (const [target, name] of [[perPatch, 'per patch'], [shared, 'shared']] as const) {
    const method = createMethod('asg', options, setup);
    const geo = method.plan.geometry;
    assert.equal(geo.count, 4);
    const fused = await method.predict(latent, 0, ctxFor(target));
    const { alpha, sigma } = sched.noiseLevel(0);
    const x0 = extractPatches(latent.map((x, i) => (x - sigma * fused[i]!) / alpha), geo);
    for (let i = 0; i < x0.length; i++) {
      const want = target.length === x0.length ? target[i]! : target[i % target.length]!;
      assert.ok(Math.abs(x0[i]! - want) < 1e-4, `${name}: element ${i}: ${x0[i]} vs ${want}`);
    }
  }
  assert.deepEqual(perPatch.length, 4 * 4 * 8 * 8);
  await assert.rejects(createMethod('asg', options, setup).predict(latent, 0, ctxFor(new Float32Array(5))), /Invalid structureTarget; expected 256 values \(one patch, \[4, 8, 8\]\) or 1024 \(one per patch\); received 5$/);
});

test('checkUpscale: sizes, the grid, and every bad setting with its message', () => {
  const p = checkUpscale({ width: 100, height: 75 }, { scale: 3 });
  assert.deepEqual([p.targetWidth, p.targetHeight, p.workWidth, p.workHeight, p.scale, p.strength, p.structureSource], [300, 225, 304, 232, 3, 0.5, 'polyphase']);
  assert.match(p.notes[0]!, /The output 300x225 is denoised at 304x232/);
  assert.deepEqual([checkUpscale({ width: 100, height: 50 }, { width: 400 }).targetHeight, checkUpscale({ width: 100, height: 50 }, { width: 400 }).scale], [200, null]);
  const bad: [Parameters<typeof checkUpscale>, RegExp][] = [
    [[{ width: 64, height: 64 }, { scale: 0.5 }], /^Invalid scale; expected a number in \[1, 8\]; received 0\.5\. Use a scale from 1 to 8, e\.g\. 2 \(or give -W\/-H\)\.$/],
    [[{ width: 64, height: 64 }, { strength: 0 }], /^Invalid strength; expected a number in \(0, 1\]; received 0\./],
    [[{ width: 64, height: 64 }, { strength: 1.5 }], /^Invalid strength; expected a number in \(0, 1\]; received 1\.5\./],
    [[{ width: 7, height: 64 }, {}], /^The input image is too small to upscale; expected at least 8x8 pixels; received 7x64\. Use a larger image$/],
    [[{ width: 1000, height: 1000 }, { scale: 4 }], /^The upscaled image would exceed the pixel limit; expected at most 16777216 pixels \(width x height\); received 4000x4000 = 16000000/],
    [[{ width: 100, height: 100 }, { scale: 2, maxPixels: 1000 }], /^The upscaled image would exceed the pixel limit; expected at most 1000 pixels \(width x height\); received 200x200 = 40000 pixels\. Use a smaller scale or size, or raise the limit with --max-pixels 40000 \(API: maxPixels\)$/],
    [[{ width: 100, height: 100 }, { scale: 2, width: 300 }], /^Give either a scale or an output size, not both/],
    [[{ width: 64, height: 64 }, { structureSource: 'nope' as never }], /^Invalid structureSource; expected one of polyphase, input, input-skip, skip, key/],
    [[{ width: 100, height: 60 }, { width: 1 }], /^The output width is smaller than the input's; expected at least the input's width \(100x60 input\); received 1x1\. Upscaling keeps or enlarges each side/],
    [[{ width: 100, height: 60 }, { width: 200, height: 50 }], /^The output height is smaller than the input's; expected at least the input's height \(100x60 input\); received 200x50\./],
  ];
  // 4000 x 4000 is under 4096^2: that one must pass.
  const [ok] = bad.splice(4, 1);
  assert.equal(checkUpscale(...ok![0]).targetWidth, 4000);
  for (const [args, re] of bad) {
    assert.throws(() => checkUpscale(...args), (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && re.test(e.message), String(re));
  }
});

test('prompts from another tool\'s parameters text', () => {
  assert.deepEqual(promptFromParametersText('a green square,\nbig\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, Seed: 1'), { prompt: 'a green square,\nbig', negativePrompt: 'blurry' });
  assert.deepEqual(promptFromParametersText('just a prompt'), { prompt: 'just a prompt', negativePrompt: '' });
});

test('upscale is deterministic and its metadata records the source and settings; the round trip re-runs it', async () => {
  const a = await pipe.upscale({ ...quick, image: sourceFile, scale: 2, strength: 0.5 });
  const b = await pipe.upscale({ ...quick, image: sourceFile, scale: 2, strength: 0.5 });
  assert.equal(a.image.width, 80);
  assert.equal(a.image.height, 64);
  assert.deepEqual(a.image.data, b.image.data);
  const sha = createHash('sha256').update(fs.readFileSync(sourceFile)).digest('hex');
  assert.deepEqual(a.metadata.upscale, { source: { sha256: sha, width: 40, height: 32 }, scale: 2, strength: 0.5, structureSource: 'polyphase', startStep: 2 });
  assert.deepEqual([a.metadata.width, a.metadata.height, a.metadata.steps, a.metadata.seed, a.metadata.scheduler], [80, 64, 4, '7', 'euler']);
  const out = path.join(dir, 'up.png');
  await saveImage(out, a.image, a.metadata);
  const back = await readImageMetadata(out);
  assert.deepEqual(back.metadata, a.metadata);
  assert.match(back.parameters ?? '', /, Denoising strength: 0\.5, Upscale: 2x from 40x32 sha256 [0-9a-f]{64}, Structure source: polyphase, Version: /);
  // Above the native size (512 px for this fixture: several patches) the structure sources differ.
  const x4 = { ...quick, image: sourceFile, width: 1024, steps: 5, strength: 1 };
  const byPolyphase = await pipe.upscale(x4);
  const fromInput = await pipe.upscale({ ...x4, structureSource: 'input' });
  const fromKey = await pipe.upscale({ ...x4, structureSource: 'key' });
  assert.deepEqual([fromInput.image.width, fromInput.image.height], [1024, 819]);
  assert.notDeepEqual(fromKey.image.data, fromInput.image.data);
  assert.notDeepEqual(byPolyphase.image.data, fromInput.image.data);
  const direct = await pipe.upscale({ ...quick, image: sourceFile, scale: 2, strength: 0.5, method: 'direct' });
  assert.equal(direct.unetEvaluations, 2);
  // asg's structure guidance is held at full weight when upscaling unless asked otherwise; recorded either way.
  assert.equal(byPolyphase.metadata.methodOptions?.structureSchedule, 'constant');
  const cosine = await pipe.upscale({ ...x4, methodOptions: { structureSchedule: 'cosine' } });
  assert.equal(cosine.metadata.methodOptions?.structureSchedule, 'cosine');
  assert.notDeepEqual(cosine.image.data, byPolyphase.image.data);
});

test('upscale method options: the registry\'s upscale defaults fill what the caller left out, for the methods that read them', () => {
  assert.deepEqual(upscaleMethodOptions(undefined, undefined), { structureSchedule: 'constant' });
  assert.deepEqual(upscaleMethodOptions('asg', { mask: false }), { mask: false, structureSchedule: 'constant' });
  assert.deepEqual(upscaleMethodOptions('asg', { structureSchedule: 'cosine' }), { structureSchedule: 'cosine' });
  assert.equal(upscaleMethodOptions('cutdiffusion', undefined), undefined);
  assert.deepEqual(upscaleMethodOptions('direct', { stageSplit: 0.5 }), { stageSplit: 0.5 });
});

test('prompt from the input: this project\'s JSON or another tool\'s parameters; none: empty with a note; alpha kept', async () => {
  const withText = await pngBytes(disc(32, 32), { parameters: 'a green square\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a' });
  const r = await pipe.upscale({ image: withText, steps: 2, seed: 1, scale: 2 });
  assert.deepEqual([r.metadata.prompt, r.metadata.negativePrompt], ['a green square', 'blurry']);
  const plain = await pipe.upscale({ image: disc(32, 32), steps: 2, seed: 1, scale: 2 });
  assert.equal(plain.metadata.prompt, '');
  assert.ok(plain.warnings.includes('No prompt given and none embedded in the input: upscaling with an empty prompt'), plain.warnings.join('|'));
  // Alpha: the left half transparent, the right half opaque; kept, resized with the picture, written to PNG.
  const opacity = new Uint8Array(32 * 32);
  for (let y = 0; y < 32; y++) opacity.fill(255, y * 32 + 16, y * 32 + 32);
  const rgbaPixels = new Uint8Array(32 * 32 * 4);
  disc(32, 32).data.forEach((v, i) => (rgbaPixels[Math.floor(i / 3) * 4 + (i % 3)] = v));
  opacity.forEach((a, i) => (rgbaPixels[i * 4 + 3] = a));
  const rgba = new Uint8Array(await sharp(Buffer.from(rgbaPixels), { raw: { width: 32, height: 32, channels: 4 } }).png().toBuffer());
  const alpha = await pipe.upscale({ image: rgba, prompt: 'x', steps: 2, seed: 1, scale: 2 });
  assert.equal(alpha.image.data.length, 64 * 64 * 3);
  assert.equal(alpha.image.alpha?.length, 64 * 64);
  assert.deepEqual([alpha.image.alpha![64 * 10 + 5], alpha.image.alpha![64 * 10 + 60]], [0, 255]);
  const keptFile = path.join(dir, 'alpha.png');
  await saveImage(keptFile, alpha.image, alpha.metadata);
  const written = await sharp(keptFile).raw().toBuffer({ resolveWithObject: true });
  assert.equal(written.info.channels, 4);
  assert.deepEqual([written.data[(64 * 10 + 5) * 4 + 3], written.data[(64 * 10 + 60) * 4 + 3]], [0, 255]);
  // The same run from pixels without the alpha gives the same colours: the alpha does not reach the models.
  const rgbOnly = await pipe.upscale({ image: { data: disc(32, 32).data, width: 32, height: 32 }, prompt: 'x', steps: 2, seed: 1, scale: 2 });
  assert.deepEqual(alpha.image.data, rgbOnly.image.data);
  // A JPEG output has no alpha: written as RGB.
  const jpegFile = path.join(dir, 'alpha.jpg');
  await saveImage(jpegFile, alpha.image, alpha.metadata);
  assert.equal((await sharp(jpegFile).metadata()).channels, 3);
  // JPEG and WebP inputs.
  for (const format of ['jpeg', 'webp'] as const) {
    const bytes = await encodeImage(disc(24, 16), format);
    const u = await pipe.upscale({ image: bytes, prompt: 'x', steps: 2, seed: 1, scale: 3 });
    assert.deepEqual([u.image.width, u.image.height, u.metadata.upscale?.source.width, u.metadata.upscale?.source.height], [72, 48, 24, 16], format);
  }
  // The JSON of an upscaled image gives its prompt.
  const up = path.join(dir, 'prompted.png');
  await saveImage(up, r.image, { ...r.metadata, prompt: 'a blue circle', negativePrompt: '' });
  const again = await pipe.upscale({ image: up, steps: 2, seed: 1, scale: 1 });
  assert.equal(again.metadata.prompt, 'a blue circle');
});

test('bad inputs to pipe.upscale: clear invalid-argument errors before any UNet call', async () => {
  const png = fs.readFileSync(sourceFile);
  let units = 0;
  const cases: [Parameters<Pipeline['upscale']>[0], RegExp][] = [
    [{ image: new TextEncoder().encode('not an image at all') }, /^the image is not a readable image/],
    [{ image: png.subarray(0, Math.floor(png.length / 2)) }, /^the image is not a readable image/],
    [{ image: disc(6, 20) }, /^The input image is too small to upscale; expected at least 8x8 pixels; received 6x20/],
    [{ image: sourceFile, scale: 8, maxPixels: 10_000 }, /^The upscaled image would exceed the pixel limit; expected at most 10000 pixels/],
    [{ image: sourceFile, scale: 0.9 }, /^Invalid scale; expected a number in \[1, 8\]; received 0\.9/],
    [{ image: sourceFile, strength: 0 }, /^Invalid strength/],
    [{ image: sourceFile, strength: 1.01 }, /^Invalid strength/],
    [{ image: path.join(dir, 'missing.png') }, /^Cannot read image/],
    [{ image: sourceFile, scheduler: 'pndm' }, /^Invalid scheduler; expected a scheduler that can start from a partly noised image/],
    // A misspelt upscale setting is named with the upscale's own settings in the list.
    [{ image: sourceFile, scal: 4 } as never, /^Invalid scal; expected an upscale setting: image, scale, strength, structureSource, maxPixels, prompt, .*; received 4\. Check the spelling/],
    [{ image: { data: new Float32Array(768), width: 16, height: 16 } } as never, /^The image pixels do not match their size; expected interleaved 8-bit RGB of width x height x 3 bytes; received a Float32Array for 16x16/],
  ];
  for (const [params, re] of cases) {
    await assert.rejects(pipe.upscale({ prompt: 'x', steps: 2, ...params }, { onUnits: () => void units++ }), (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && re.test(e.message), String(re));
  }
  assert.equal(units, 0);
  // A canvas' pixels (Uint8ClampedArray) are the same bytes as a Uint8Array's.
  const img = disc(16, 16);
  const clamped = await pipe.upscale({ prompt: 'x', steps: 1, seed: 1, scale: 1, image: { ...img, data: new Uint8ClampedArray(img.data) as never } });
  const plain = await pipe.upscale({ prompt: 'x', steps: 1, seed: 1, scale: 1, image: img });
  assert.deepEqual(clamped.image.data, plain.image.data);
});

test("the input's VAE encoding reports its own progress phase, tile by tile, before the prompt and the steps", async () => {
  const events: { phase: string; tilesDone?: number; tilesTotal?: number; totalSteps: number }[] = [];
  // 80x64 output (a 10x8 latent) in 8-latent-px tiles: encoded tiled.
  const r = await pipe.upscale({ ...quick, image: sourceFile, scale: 2, strength: 0.5, vae: { tiling: 'on', tileSize: 8, overlap: 2 } }, { onProgress: (p) => events.push({ ...p }) });
  const encode = events.filter((e) => e.phase === 'encode');
  assert.ok(encode.length > 1, JSON.stringify(events.slice(0, 5)));
  const total = encode[0]!.tilesTotal!;
  assert.ok(total > 1);
  assert.deepEqual(encode.map((e) => e.tilesDone), Array.from({ length: total }, (_, i) => i + 1), 'each tile once, in order');
  assert.ok(encode.every((e) => e.tilesTotal === total && e.totalSteps === 2), 'the steps the upscale runs: 4 x 0.5');
  const phases = [...new Set(events.map((e) => e.phase))];
  assert.deepEqual(phases, ['encode', 'text', 'denoise', 'decode']);
  assert.equal(r.metadata.upscale?.startStep, 2);
});

test('generateUpscaled: one result whose metadata holds both stages; the same bytes as generate then upscale', async () => {
  const params = { prompt: 'a red circle', steps: 3, seed: 11, width: 64, height: 64 };
  const both = await pipe.generateUpscaled(params, { scale: 2, strength: 0.6 });
  const g = await pipe.generate(params);
  const u = await pipe.upscale({ prompt: 'a red circle', steps: 3, seed: 11, image: g.image, scale: 2, strength: 0.6 });
  assert.deepEqual(both.image.data, u.image.data);
  assert.deepEqual(both.metadata.upscale?.source.generation, g.metadata);
  assert.equal(both.unetEvaluations, g.unetEvaluations + u.unetEvaluations);
  // A misspelt upscale setting is named before anything runs (it would otherwise be dropped: scale 2 by default).
  await assert.rejects(pipe.generateUpscaled(params, { scale: 2, sclae: 3 } as never), (e: AsgdError) => e.kind === 'invalid-argument' && e.parameter === 'sclae' && /an upscale setting of generateUpscaled/.test(e.expected ?? ''));
  await assert.rejects(pipe.generateUpscaled(params, { width: 256 } as never), (e: AsgdError) => e.parameter === 'width');
});

test('strength near 0 returns nearly the input (shapes model: mean |difference| to a Lanczos resize under 4 %)', async () => {
  await using shapes = await loadPipeline(SHAPES, { threads: 1 });
  const src = disc(128, 128);
  const r = await shapes.upscale({ image: src, prompt: 'a red circle on a blue background', scale: 2, strength: 0.02, steps: 20, seed: 3, method: 'direct' });
  assert.equal(r.metadata.upscale?.startStep, 19);
  const plain = await resizeLanczos(src, 256, 256);
  let sum = 0;
  for (let i = 0; i < plain.data.length; i++) sum += Math.abs(plain.data[i]! - r.image.data[i]!);
  const mad = sum / plain.data.length / 255;
  console.log('strength 0.02 mean abs difference', mad);
  assert.ok(mad < 0.04, `mean abs difference ${mad}`);
  // Full strength redraws it: much further from the input.
  const redrawn = await shapes.upscale({ image: src, prompt: 'a red circle on a blue background', scale: 2, strength: 1, steps: 20, seed: 3, method: 'direct' });
  let far = 0;
  for (let i = 0; i < plain.data.length; i++) far += Math.abs(plain.data[i]! - redrawn.image.data[i]!);
  assert.ok(far / plain.data.length / 255 > mad, 'strength 1 stays closer to the input than strength 0.02');
});

test('upscale on the SDXL fixture runs (time ids at the output size)', async () => {
  await using xl = await loadPipeline(await tinyModel('sdxl'), { threads: 1 });
  const r = await xl.upscale({ image: disc(48, 40), prompt: 'a red circle', steps: 2, seed: 1, scale: 2 });
  assert.equal(r.image.width, 96);
  assert.equal(r.image.height, 80);
  assert.equal(r.metadata.model.family, 'sdxl');
  assert.equal(r.metadata.upscale?.scale, 2);
});

test('asgd upscale has exactly the registry flags (generate\'s without --upscale, then the upscale options)', async () => {
  const { buildProgram } = await import('../src/cli/main.ts');
  const { flagText } = await import('../src/core/options/spec.ts');
  const { UPSCALE_COMMAND_OPTIONS } = await import('../src/core/options/registry.ts');
  const cmd = buildProgram(() => undefined).commands.find((c) => c.name() === 'upscale')!;
  const flags = cmd.options.filter((o) => !o.hidden).map((o) => o.flags);
  assert.deepEqual(flags, UPSCALE_COMMAND_OPTIONS.filter((s) => s.cli).map(flagText));
  assert.deepEqual(flags.slice(-4), ['--scale <x>', '--strength <s>', '--structure-source <s>', '--max-pixels <n>']);
  assert.ok(!flags.includes('--upscale <x>'));
});

function asgd(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('asgd upscale: writes the image, --from re-runs it from the same source (same bytes) or says it needs it', async () => {
  const model = await tinyModel('standard');
  const out = path.join(dir, 'cli-a.png');
  const r = asgd(['upscale', sourceFile, '-m', model, '-o', out, '--scale', '2', '--steps', '3', '--seed', '4', '--threads', '1', '-p', 'a red circle', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual([j.width, j.height, j.metadata.upscale.scale], [80, 64, 2]);
  const again = path.join(dir, 'cli-b.png');
  assert.equal(asgd(['upscale', sourceFile, '-m', model, '--from', out, '-o', again, '--threads', '1', '-q']).code, 0);
  assert.deepEqual(fs.readFileSync(again), fs.readFileSync(out));
  const missing = asgd(['upscale', '-m', model, '--from', out, '-o', path.join(dir, 'cli-c.png')]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^asgd: Re-running an upscale needs its source image\. Pass the source image it was upscaled from \(40x32, sha256 [0-9a-f]{64}\): asgd upscale SOURCE --from /);
  const generateFrom = asgd(['generate', '-m', model, '--from', out, '-o', path.join(dir, 'cli-c.png')]);
  assert.equal(generateFrom.code, 2);
  assert.match(generateFrom.stderr, /is an upscale of another image file \(40x32, sha256 [0-9a-f]{64}\)\. Re-run it with: asgd upscale SOURCE --from /);
  assert.ok(!fs.existsSync(path.join(dir, 'cli-c.png')));
});

test('asgd generate --from an image of generate --upscale reproduces it (the upscale stage keeps its own recorded options)', async () => {
  const model = await tinyModel('standard');
  const out = path.join(dir, 'gen-up.png');
  const r = asgd(['generate', '-m', model, '-p', 'a red circle', '-W', '64', '-H', '64', '--steps', '10', '--seed', '7', '--upscale', '2', '-o', out, '--threads', '1', '--json']);
  assert.equal(r.code, 0, r.stderr);
  const meta = JSON.parse(r.stdout).metadata;
  assert.equal(meta.methodOptions.structureSchedule, 'constant', 'the upscale default');
  assert.equal(meta.upscale.source.generation.methodOptions.structureSchedule, 'cosine', 'the generation default');
  const again = path.join(dir, 'gen-up-again.png');
  const r2 = asgd(['generate', '-m', model, '--from', out, '-o', again, '--threads', '1', '--json']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(JSON.parse(r2.stdout).metadata.methodOptions.structureSchedule, 'constant');
  assert.deepEqual(fs.readFileSync(again), fs.readFileSync(out), 'the same bytes');
});

test('asgd upscale -W takes any width (the README\'s padded sizes), the height following; its help says what the defaults are there', async () => {
  const model = await tinyModel('standard');
  const r = asgd(['upscale', sourceFile, '-m', model, '-W', '100', '-o', path.join(dir, 'cli-w.png'), '--steps', '2', '--threads', '1', '-p', 'a red circle', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual([JSON.parse(r.stdout).width, JSON.parse(r.stdout).height], [100, 80], '40x32 to 100 wide');
  const help = asgd(['upscale', '--help']).stdout.replace(/\s+/g, ' ');
  assert.match(help, /-W, --width <px> output width in pixels, any .*\(default: the input's x --scale\)/);
  assert.match(help, /-n, --negative-prompt <text> what to avoid \(default: the one embedded in the input when -p is not given, else empty\)/);
  assert.match(help, /--scheduler <name> scheduler .*\(default: the model's; euler instead of pndm\/lms, which cannot start from a noised image\)/);
  // The input as the output, even with --overwrite: refused before anything runs, the input untouched.
  const copy = path.join(dir, 'cli-self.png');
  fs.copyFileSync(sourceFile, copy);
  for (const target of [copy, path.join(dir, '.', 'cli-self.png')]) {
    const self = asgd(['upscale', copy, '-m', model, '-o', target, '--overwrite', '--steps', '1']);
    assert.equal(self.code, 2, self.stderr);
    assert.match(self.stderr, /^asgd: Invalid --output; expected a file other than the input image; received .*cli-self\.png"\. Choose another name: the input would be replaced/);
  }
  assert.deepEqual(fs.readFileSync(copy), fs.readFileSync(sourceFile));
  // --structure-source only steers asg: a warning under another method, and the image's text leaves it out.
  const direct = asgd(['upscale', sourceFile, '-m', model, '--method', 'direct', '--structure-source', 'input', '-o', path.join(dir, 'cli-direct.png'), '--steps', '1', '--threads', '1', '-p', 'a red circle']);
  assert.equal(direct.code, 0, direct.stderr);
  assert.match(direct.stderr, /warning: --structure-source is an option of asg; --method direct does not use it/);
  assert.doesNotMatch(asgd(['read', path.join(dir, 'cli-direct.png')]).stdout, /Structure source/);
  // An input with transparency written as JPEG: said before the run (the output has no alpha).
  const seeThrough = path.join(dir, 'see-through.png');
  await sharp({ create: { width: 32, height: 32, channels: 4, background: { r: 200, g: 30, b: 30, alpha: 0.5 } } }).png().toFile(seeThrough);
  const jpeg = asgd(['upscale', seeThrough, '-m', model, '-o', path.join(dir, 'see-through.jpg'), '--steps', '1', '--threads', '1', '-p', 'x']);
  assert.equal(jpeg.code, 0, jpeg.stderr);
  assert.match(jpeg.stderr, /warning: \S+see-through\.png has transparency, which a JPEG cannot hold: it is dropped \(write \.png or \.webp to keep it\)/);
  const png = asgd(['upscale', seeThrough, '-m', model, '-o', path.join(dir, 'see-through-2.png'), '--steps', '1', '--threads', '1', '-p', 'x']);
  assert.doesNotMatch(png.stderr, /transparency/);
  const zero = asgd(['upscale', sourceFile, '-m', model, '-W', '0', '-o', path.join(dir, 'cli-w0.png')]);
  assert.equal(zero.code, 2);
  assert.match(zero.stderr, /^asgd: Invalid --width; expected an integer in \[1, 8192\]; received "0"\. Use a positive width/);
});

test('an image whose asgdiffusion record was damaged: read and --from name it; upscale still takes the prompt from its parameters text', async () => {
  const model = await tinyModel('standard');
  const good = path.join(dir, 'record.png');
  assert.equal(asgd(['generate', '-m', model, '-p', 'a teal triangle', '-W', '64', '-H', '64', '--steps', '2', '--threads', '1', '-o', good, '-q']).code, 0);
  const bytes = fs.readFileSync(good);
  const at = bytes.indexOf('"seed":"');
  assert.ok(at > 0, 'the record is stored as plain text');
  bytes[at + 6] = '['.charCodeAt(0); // "seed"["...: not JSON any more
  const bad = path.join(dir, 'record-bad.png');
  fs.writeFileSync(bad, bytes);
  const read = asgd(['read', bad]);
  assert.equal(read.code, 0);
  assert.match(read.stdout, /^a teal triangle\nSteps: 2/);
  assert.match(read.stderr, /^warning: the asgdiffusion parameters in .*record-bad\.png are damaged \(.*JSON.*\); its parameters text follows/);
  for (const args of [['read', '--json', bad], ['generate', '-m', model, '--from', bad, '-o', path.join(dir, 'never.png')]]) {
    const r = asgd(args);
    assert.equal(r.code, 2, args.join(' '));
    assert.match(r.stderr, /^asgd: The asgdiffusion parameters in .*record-bad\.png are damaged \(.*\)\. The file was changed after it was written; give the settings as flags/);
  }
  const up = asgd(['upscale', bad, '-m', model, '--steps', '2', '--threads', '1', '-o', path.join(dir, 'record-up.png'), '--json']);
  assert.equal(up.code, 0, up.stderr);
  assert.equal(JSON.parse(up.stdout).metadata.prompt, 'a teal triangle');
  assert.doesNotMatch(up.stderr, /No prompt given/);
  assert.ok(!fs.existsSync(path.join(dir, 'never.png')));
});

test('asgd bad inputs: exit 2, one clear line, nothing written (generate --from a non-image too)', async () => {
  const model = await tinyModel('standard');
  const bad = tempDir('cli-bad');
  const text = path.join(bad, 'text.png');
  fs.writeFileSync(text, 'hello, not an image');
  const cut = path.join(bad, 'cut.png');
  fs.writeFileSync(cut, fs.readFileSync(sourceFile).subarray(0, 200));
  const tiny = path.join(bad, 'tiny.png');
  fs.writeFileSync(tiny, await pngBytes(disc(7, 7)));
  const out = path.join(bad, 'out.png');
  const cases: [string[], RegExp][] = [
    [['upscale', text], /^asgd: .*text\.png is not a readable image \(.*\); expected a PNG, JPEG or WebP image/],
    [['upscale', cut], /^asgd: .*cut\.png is not a readable image/],
    [['upscale', tiny], /^asgd: The input image is too small to upscale; expected at least 8x8 pixels; received 7x7/],
    [['upscale', sourceFile, '--scale', '0.5'], /^asgd: Invalid --scale; expected a number in \[1, 8\]; received "0\.5"/],
    [['upscale', sourceFile, '--strength', '0'], /^asgd: Invalid --strength; expected a number in \(0, 1\]; received "0"/],
    [['upscale', sourceFile, '--strength', '1.2'], /^asgd: Invalid --strength/],
    [['upscale', sourceFile, '--scale', '8', '--max-pixels', '5000'], /^asgd: The upscaled image would exceed the pixel limit; expected at most 5000 pixels \(width x height\); received 320x256 = 81920 pixels\. Use a smaller scale or size, or raise the limit with --max-pixels 81920 \(API: maxPixels\)\n$/],
    [['upscale', sourceFile, '--scale', '2', '-W', '200'], /^asgd: Give either a scale or an output size, not both/],
    [['generate', '--from', text], /^asgd: .*text\.png is not a readable image/],
    [['generate', '--from', cut], /^asgd: .*cut\.png is not a readable image/],
  ];
  for (const [args, re] of cases) {
    const r = asgd([...args, '-m', model, '-o', out]);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.split('\n').length, 2, r.stderr);
  }
  assert.deepEqual(fs.readdirSync(bad).sort(), ['cut.png', 'text.png', 'tiny.png']);
});

test('Ctrl-C during asgd upscale: exit 130, no output file', async () => {
  const model = await tinyModel('standard');
  const d = tempDir('cli-cancel');
  const out = path.join(d, 'out.png');
  const preview = path.join(d, 'p.png');
  const child = spawn(process.execPath, [BIN, 'upscale', sourceFile, '-m', model, '-o', out, '-W', '512', '--steps', '30', '--strength', '1', '--threads', '1', '-p', 'x', '--preview', preview, '--preview-every', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  const t0 = performance.now();
  while (!fs.existsSync(preview)) {
    assert.ok(child.exitCode === null, `exited before the first preview: ${stderr}`);
    assert.ok(performance.now() - t0 < 120_000, 'no preview within 120 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGINT');
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /asgd: Upscale cancelled\n$/);
  assert.deepEqual(fs.readdirSync(d).filter((f) => f !== 'p.png'), []);
});

test('upscale encodes a large input tiled, with the whole image\'s GroupNorm statistics: the result matches the untiled encode', async () => {
  await using shapes = await loadPipeline(SHAPES, { threads: 1 });
  // Instrument: which requests reach the workers (the encoder's segments show the tiled path with statistics ran).
  const pool = (shapes as unknown as { pool: { request: (component: string, req: { type: string; graph?: string }, ...rest: unknown[]) => Promise<unknown> } }).pool;
  const original = pool.request.bind(pool);
  const seen: string[] = [];
  pool.request = (component, req, ...rest) => {
    seen.push(`${component}:${req.type}${req.graph ? `:${req.graph}` : ''}`);
    return original(component, req, ...rest);
  };
  const base = { image: disc(128, 128), prompt: 'a red circle on a blue background', scale: 2, strength: 0.02, steps: 20, seed: 3, method: 'direct' as const };
  const untiled = await shapes.upscale({ ...base, vae: { tiling: 'off' } });
  assert.ok(!seen.some((s) => s.startsWith('vaeEncoder:vaeNorm')), seen.join(' '));
  const encodeTiled = async (stats: 'exact' | 'off') => {
    seen.length = 0;
    // 256 px input = 32 latent px: tiles of 16 with overlap 8 (3 x 3 tiles), for the encoder and the decoder.
    const r = await shapes.upscale({ ...base, vae: { tiling: 'auto', tileSize: 16, overlap: 8, stats } });
    return { r, seen: [...seen] };
  };
  const exact = await encodeTiled('exact');
  // The shipped encoder's 5 norm layers: a segment per layer and the rest of the model, each over the 9 tiles.
  assert.equal(exact.seen.filter((s) => s === 'vaeEncoder:vaeNorm:vaeEncoderSegment').length, 9 * (5 + 1), exact.seen.join(' '));
  const plain = await encodeTiled('off');
  const dExact = absDifference(exact.r.image.data, untiled.image.data);
  const dPlain = absDifference(plain.r.image.data, untiled.image.data);
  console.log('tiled encode vs untiled: exact statistics', dExact, 'per-tile statistics', dPlain);
  // Measured: exact max 6 levels, mean 0.08; per-tile statistics max 50, mean 3.2 (one denoising step between).
  assert.ok(dExact.max <= 8 && dExact.mean < 0.25, `exact statistics: ${JSON.stringify(dExact)}`);
  // The per-tile statistics of the old tiling are visibly off: the check can tell the two apart.
  assert.ok(dPlain.mean > 10 * dExact.mean && dPlain.max > dExact.max, `per-tile ${JSON.stringify(dPlain)} vs exact ${JSON.stringify(dExact)}`);
});
