import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import ort from 'onnxruntime-node';
import type { UnetUnit } from '../src/core/methods/types.ts';
import { ClipTokenizer } from '../src/core/text/clip-tokenizer.ts';
import { readModelFolder } from '../src/node/model/folder.ts';
import { loadPipeline, type Pipeline } from '../src/node/pipeline.ts';
import type { TextConditioning } from '../src/core/conditioning.ts';
import { tinyModel } from './helpers/models.ts';

let dir: string;
let pipe: Pipeline;
before(async () => {
  dir = await tinyModel('sdxl');
  pipe = await loadPipeline(dir, { threads: 1 });
});
after(async () => pipe?.close());

/** Runs a text encoder directly and returns the named outputs. */
async function encode(file: string, rows: Int32Array[]): Promise<ort.InferenceSession.ReturnType> {
  const s = await ort.InferenceSession.create(file);
  const flat = new Int32Array(rows.length * 77);
  rows.forEach((r, i) => flat.set(r, i * 77));
  const input = s.inputMetadata[0]!;
  const t = input.isTensor && input.type === 'int64' ? new ort.Tensor('int64', BigInt64Array.from(flat, BigInt), [rows.length, 77]) : new ort.Tensor('int32', flat, [rows.length, 77]);
  const out = await s.run({ [s.inputNames[0]!]: t });
  await s.release();
  return out;
}

test('SDXL is detected with its two tokenizers and pad tokens', () => {
  const spec = readModelFolder(dir);
  assert.equal(spec.family, 'sdxl');
  assert.equal(pipe.info.nativeWidth, 1024);
  assert.equal(pipe.info.vae.scalingFactor, 0.13025);
  const t2 = new ClipTokenizer(spec.tokenizer2!, 'tokenizer_2');
  const t1 = new ClipTokenizer(spec.tokenizer, 'tokenizer');
  assert.equal(t2.padId, 0, 'tokenizer_2 pads with "!" (id 0)');
  assert.equal(t1.padId, t1.eosId, 'tokenizer pads with EOS');
});

test('the UNet gets both penultimate hidden states, the pooled embeddings of the right prompts, and time ids per unit', async () => {
  const spec = readModelFolder(dir);
  const t1 = new ClipTokenizer(spec.tokenizer, 'tokenizer');
  const t2 = new ClipTokenizer(spec.tokenizer2!, 'tokenizer_2');
  const prompt = 'a red circle on a blue background';
  const negative = 'a green square';
  let cond: TextConditioning | undefined;
  const batches: UnetUnit[][] = [];
  await pipe.generate(
    { prompt, negativePrompt: negative, width: 2048, height: 1536, steps: 4, seed: 2, method: 'asg', methodOptions: { stageSplit: 0.5 } },
    { onConditioning: (c) => (cond = c), onUnits: (u) => batches.push([...u]) },
  );
  assert.ok(cond);
  const e1 = await encode(spec.paths.textEncoder, [t1.encode(negative).ids, t1.encode(prompt).ids]);
  const e2 = await encode(spec.paths.textEncoder2!, [t2.encode(negative).ids, t2.encode(prompt).ids]);
  const names1 = Object.keys(e1).filter((n) => n.startsWith('hidden_states.')).sort();
  const names2 = Object.keys(e2).filter((n) => n.startsWith('hidden_states.')).sort();
  const h1 = e1[names1[names1.length - 2]!]!; // penultimate
  const h2 = e2[names2[names2.length - 2]!]!;
  const d1 = Number(h1.dims[2]);
  const d2 = Number(h2.dims[2]);
  assert.equal(cond.dim, d1 + d2);
  for (let row = 0; row < 2 * 77; row++) {
    const got = cond.hidden.subarray(row * cond.dim, (row + 1) * cond.dim);
    assert.deepEqual([...got.subarray(0, d1)], [...(h1.data as Float32Array).subarray(row * d1, (row + 1) * d1)]);
    assert.deepEqual([...got.subarray(d1)], [...(h2.data as Float32Array).subarray(row * d2, (row + 1) * d2)]);
  }
  // text_embeds: the second encoder's pooled output, negative prompt for the unconditional half.
  assert.deepEqual([...cond.textEmbeds!], [...(e2['text_embeds']!.data as Float32Array)]);
  // time_ids: original = target = the HR size; patches crop (0, 0); windows crop 8 x their padded origin.
  const units = batches.flat();
  const patches = units.filter((u) => u.kind === 'patch');
  const windows = units.filter((u) => u.kind === 'window');
  assert.equal(patches.length, 4 * 2); // latent 192x256, native 128: 2 x 2 patches, stage 1 = 2 of the 4 Euler steps
  assert.ok(windows.length > 0);
  for (const u of patches) assert.deepEqual(u.timeIds, [1536, 2048, 0, 0, 1536, 2048]);
  const crops = new Set<string>();
  for (const u of windows) {
    const [oh, ow, top, left, th, tw] = u.timeIds!;
    assert.deepEqual([oh, ow, th, tw], [1536, 2048, 1536, 2048]);
    assert.ok(top! % 8 === 0 && left! % 8 === 0 && top! >= 0 && left! >= 0, `crop ${top},${left}`);
    crops.add(`${top},${left}`);
  }
  assert.ok(crops.size > 1, 'windows have their own crops');
});

test('an empty negative prompt gives zero unconditional embeddings (force_zeros_for_empty_prompt)', async () => {
  let cond: TextConditioning | undefined;
  await pipe.generate({ prompt: 'a cat', steps: 1, seed: 1, width: 1024, height: 1024, method: 'direct' }, { onConditioning: (c) => (cond = c) });
  assert.ok(cond!.hidden.subarray(0, 77 * cond!.dim).every((v) => v === 0));
  assert.ok(cond!.textEmbeds!.subarray(0, cond!.pooledDim!).every((v) => v === 0));
  assert.ok(cond!.textEmbeds!.subarray(cond!.pooledDim!).some((v) => v !== 0));
});

test('every method runs end to end on the SDXL fixture', async () => {
  for (const method of ['direct', 'multidiffusion', 'cutdiffusion', 'asg'] as const) {
    const r = await pipe.generate({ prompt: 'a house', negativePrompt: 'blur', width: 2048, height: 1024, steps: 2, seed: 3, method });
    assert.equal(r.image.width, 2048, method);
    assert.equal(r.image.height, 1024, method);
  }
});

test('SDXL-only options on an SD 1.x model are a clear error', async () => {
  const sd = await loadPipeline(await tinyModel('standard'), { threads: 1, attentionProbe: false });
  try {
    await assert.rejects(sd.generate({ prompt: 'x', steps: 1, originalSize: { width: 1024, height: 1024 } }), /originalSize is an SDXL option; expected an SDXL model; received a Stable Diffusion 1\.x\/2\.x model/);
  } finally {
    await sd.close();
  }
  void path;
});
