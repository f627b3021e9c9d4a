/**
 * The upscale benchmark: does upscaling keep the input's one object, where it was, and add sharpness? With the
 * shipped shapes model it generates native-size images (every object colour and shape: 18 prompts, then again with
 * the next seed), upscales each x2 and x4 with every variant (the methods, and asg with each structure source), and
 * reports per variant and scale, over the inputs that hold exactly one object of the asked shape:
 *   - kept: the upscale still holds exactly one object of the asked shape (bench/analysis/shapes.ts);
 *   - IoU: of the upscale's object mask with the input's object mask resized (nearest) to the output size;
 *   - sharpness ratio: edge sharpness of the upscale / that of a plain Lanczos resize of the input.
 * Markdown on stdout, JSON in bench/results/upscale/upscale[-<tag>].json, contact sheets bench/results/upscale[-<tag>]-x<scale>.png (rows:
 * input, plain Lanczos resize, then each variant; a green strip under a cell when it holds the one object).
 *
 *   node --import tsx bench/upscale.ts [--images 24] [--scales 2,4] [--steps 20] [--strength s] [--variants a,b]
 *     [--threads N] [--model DIR] [--only substring,...]
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { COLOURS, OBJECT_COLOURS, SHAPES, analyseImage, cleanMask, connectedComponents, labelColours, minObjectArea, parsePrompt } from './analysis/shapes.ts';
import type { RgbImage } from '../src/core/image.ts';
import type { MethodName } from '../src/core/methods/types.ts';
import type { StructureSource } from '../src/core/options/registry.ts';
import { resizeLanczos } from '../src/node/image/read.ts';
import { contactSheet } from './analysis/contact-sheet.ts';
import { saveImage } from '../src/node/image/write.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { BenchUsageError, benchCli, choiceList, intArg, intList, numberArg } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench', 'results');

interface Variant {
  label: string;
  method: MethodName;
  structureSource?: StructureSource;
  methodOptions?: Record<string, unknown>;
}

const VARIANTS: Variant[] = [
  { label: 'direct', method: 'direct' },
  { label: 'multidiffusion', method: 'multidiffusion' },
  { label: 'cutdiffusion', method: 'cutdiffusion' },
  { label: 'asg-input', method: 'asg', structureSource: 'input' },
  { label: 'asg-input-skip', method: 'asg', structureSource: 'input-skip' },
  { label: 'asg-skip', method: 'asg', structureSource: 'skip' },
  { label: 'asg-key', method: 'asg', structureSource: 'key' },
  { label: 'asg-input-nomask', method: 'asg', structureSource: 'input', methodOptions: { mask: false } },
  { label: 'asg-polyphase', method: 'asg', structureSource: 'polyphase' },
  { label: 'asg-polyphase-nomask', method: 'asg', structureSource: 'polyphase', methodOptions: { mask: false } },
  { label: 'asg-polyphase-constant', method: 'asg', structureSource: 'polyphase', methodOptions: { structureSchedule: 'constant' } },
  // Until docs/upscale.md's run 4 the upscale default was this cosine schedule (runs 1-3 measured every asg variant with it).
  { label: 'asg-polyphase-cosine', method: 'asg', structureSource: 'polyphase', methodOptions: { structureSchedule: 'cosine' } },
  { label: 'asg-polyphase-gamma0.5', method: 'asg', structureSource: 'polyphase', methodOptions: { structureGamma: 0.5 } },
  { label: 'asg-polyphase-split1', method: 'asg', structureSource: 'polyphase', methodOptions: { stageSplit: 1 } },
];

/** Every object colour with every shape, each on a background of another colour. */
function prompts(): string[] {
  const backgrounds = ['blue', 'yellow', 'green', 'purple', 'orange', 'white'];
  const out: string[] = [];
  for (const [i, colour] of OBJECT_COLOURS.entries()) {
    for (const [j, shape] of SHAPES.entries()) {
      let bg = backgrounds[(i + j + 1) % backgrounds.length]!;
      if (bg === colour) bg = backgrounds[(i + j + 2) % backgrounds.length]!;
      out.push(`a ${colour} ${shape} on a ${bg} background`);
    }
  }
  return out;
}

/** The pixels of the asked colour in objects of at least the minimum area (as analyseImage counts them). */
function objectMask(img: RgbImage, colour: string, native: number): Uint8Array {
  const labels = labelColours(img.data, img.width, img.height);
  const target = COLOURS.indexOf(colour as (typeof COLOURS)[number]);
  const m = new Uint8Array(img.width * img.height);
  for (let i = 0; i < labels.length; i++) if (labels[i] === target) m[i] = 1;
  const out = new Uint8Array(m.length);
  const min = minObjectArea(img.width, img.height, native);
  for (const c of connectedComponents(cleanMask(m, img.width, img.height), img.width, img.height)) {
    if (c.pixels.length >= min) for (const p of c.pixels) out[p] = 1;
  }
  return out;
}

function resizeMaskNearest(m: Uint8Array, w: number, h: number, W: number, H: number): Uint8Array {
  const out = new Uint8Array(W * H);
  for (let y = 0; y < H; y++) {
    const sy = Math.min(h - 1, Math.floor(((y + 0.5) * h) / H));
    for (let x = 0; x < W; x++) out[y * W + x] = m[sy * w + Math.min(w - 1, Math.floor(((x + 0.5) * w) / W))]!;
  }
  return out;
}

function iou(a: Uint8Array, b: Uint8Array): number {
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i] && b[i]) inter++;
    if (a[i] || b[i]) union++;
  }
  return union === 0 ? 1 : inter / union;
}


const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

async function main(): Promise<void> {
  const usage = `
node --import tsx bench/upscale.ts [options] (npm run bench:upscale -- [options]): upscale native-size outputs of the
shipped model with every variant; Markdown on stdout, JSON in bench/results/upscale/upscale[-<tag>].json, contact
sheets bench/results/upscale[-<tag>]-x<scale>.png.

  --images N        native inputs (default 24: 18 prompts with seed 1, then seed 2)
  --scales LIST     comma-separated scales (default 2,4)
  --steps N         steps (default 20)
  --strength S      upscale strength in (0, 1] (default: the library's)
  --variants LIST   comma-separated subset of ${VARIANTS.map((v) => v.label).join(', ')} (default all)
  --threads N       CPU threads (default 0: ONNX Runtime's choice)
  --model DIR       model folder (default models/shapes-128)
  --tag NAME        suffix of the JSON and contact sheet names
  --only LIST       keep inputs whose prompt contains one of these substrings
  --help            this text
`;
  const { values, images, scales, steps, strength, variants } = benchCli(usage, {
    options: {
      images: { type: 'string' }, scales: { type: 'string' }, steps: { type: 'string' }, strength: { type: 'string' },
      variants: { type: 'string' }, threads: { type: 'string' }, model: { type: 'string' }, tag: { type: 'string' },
      only: { type: 'string' },
    },
  }, ({ values: v }) => {
    if (v.tag !== undefined && !/^[a-z0-9.-]{1,60}$/.test(v.tag)) throw new BenchUsageError(`--tag: lowercase letters, digits, dots and dashes, received ${JSON.stringify(v.tag)}`);
    if (v.threads !== undefined) intArg('--threads', v.threads, 0);
    const labels = v.variants === undefined ? undefined : choiceList('--variants', v.variants, VARIANTS.map((x) => x.label));
    return {
      values: v,
      images: v.images === undefined ? 24 : intArg('--images', v.images, 1),
      scales: v.scales === undefined ? [2, 4] : intList('--scales', v.scales, 2),
      steps: v.steps === undefined ? 20 : intArg('--steps', v.steps, 1),
      strength: v.strength === undefined ? undefined : numberArg('--strength', v.strength, 0, 1),
      variants: labels ? VARIANTS.filter((x) => labels.includes(x.label)) : VARIANTS,
    };
  });
  const tag = values.tag ? `-${values.tag}` : '';
  const dir = path.resolve(values.model ?? path.join(ROOT, 'models', 'shapes-128'));
  const pipe = await loadPipeline(dir, { threads: Number(values.threads ?? 0) });
  const native = pipe.nativeSize.width;
  const all = prompts();
  const jobs = Array.from({ length: images }, (_, i) => ({ prompt: all[i % all.length]!, seed: 1 + Math.floor(i / all.length) }));
  fs.mkdirSync(RESULTS, { recursive: true });
  const t0 = performance.now();

  // The inputs: native-size generations (default settings), and their object masks.
  const inputs: { prompt: string; seed: number; image: RgbImage; ok: boolean; mask: Uint8Array }[] = [];
  for (const j of jobs) {
    const r = await pipe.generate({ prompt: j.prompt, seed: j.seed, steps });
    const s = parsePrompt(j.prompt);
    const a = analyseImage(r.image.data, r.image.width, r.image.height, { colour: s.colour, shape: s.shape, nativeSize: native });
    inputs.push({ ...j, image: r.image, ok: a.correct, mask: objectMask(r.image, s.colour, native) });
  }
  // --only a,b: keep the inputs whose prompt contains one of these (a quick screen of variants on hard inputs).
  const only = values.only?.split(',');
  const usable = inputs.filter((i) => i.ok && (!only || only.some((o) => i.prompt.includes(o))));
  process.stderr.write(`${usable.length}/${inputs.length} native inputs hold one object of the asked shape (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);

  const records: Record<string, unknown>[] = [];
  const lines = [
    `### Upscale benchmark: ${usable.length} inputs (of ${inputs.length}), ${steps} steps, strength ${strength ?? 'default'}`,
    '',
    '| variant | scale | kept one object | mean IoU | min IoU | sharpness / Lanczos | s / image |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const scale of scales) {
    const size = native * scale;
    const sheet: { image: RgbImage; ok: boolean }[][] = [[], []];
    const plainSharp: number[] = [];
    for (const inp of usable) {
      const s = parsePrompt(inp.prompt);
      const plain = await resizeLanczos(inp.image, size, size);
      const a = analyseImage(plain.data, size, size, { colour: s.colour, shape: s.shape, nativeSize: native });
      plainSharp.push(a.sharpness ?? NaN);
      sheet[0]!.push({ image: inp.image, ok: true });
      sheet[1]!.push({ image: plain, ok: a.correct });
    }
    for (const v of variants) {
      const row: { image: RgbImage; ok: boolean }[] = [];
      const kept: boolean[] = [];
      const ious: number[] = [];
      const ratios: number[] = [];
      const secs: number[] = [];
      for (const [k, inp] of usable.entries()) {
        const s = parsePrompt(inp.prompt);
        const t = performance.now();
        const r = await pipe.upscale({ image: inp.image, prompt: inp.prompt, scale, steps, seed: inp.seed, method: v.method, methodOptions: v.methodOptions, strength, structureSource: v.structureSource });
        secs.push((performance.now() - t) / 1000);
        const a = analyseImage(r.image.data, size, size, { colour: s.colour, shape: s.shape, nativeSize: native });
        const m = objectMask(r.image, s.colour, native);
        const overlap = iou(m, resizeMaskNearest(inp.mask, native, native, size, size));
        kept.push(a.correct);
        ious.push(overlap);
        if (a.sharpness !== null && Number.isFinite(plainSharp[k]!)) ratios.push(a.sharpness / plainSharp[k]!);
        row.push({ image: r.image, ok: a.correct });
        records.push({ variant: v.label, scale, prompt: inp.prompt, seed: inp.seed, correct: a.correct, count: a.count, iou: overlap, sharpness: a.sharpness, plainSharpness: plainSharp[k], seconds: secs.at(-1) });
        if (k === 0) await saveImage(path.join(RESULTS, `upscale${tag}-x${scale}-${v.label}-first.png`), r.image, r.metadata, true);
      }
      sheet.push(row);
      const line = `| ${v.label} | x${scale} | ${(100 * kept.filter(Boolean).length / kept.length).toFixed(0)} % | ${mean(ious).toFixed(3)} | ${Math.min(...ious).toFixed(3)} | ${mean(ratios).toFixed(2)} | ${mean(secs).toFixed(1)} |`;
      lines.push(line);
      process.stderr.write(`${line}  (${((performance.now() - t0) / 1000).toFixed(0)} s)\n`);
    }
    await saveImage(path.join(RESULTS, `upscale${tag}-x${scale}.png`), await contactSheet(sheet, 96), undefined, true);
  }
  // The per-image records are committed (bench/results/upscale/); images and sheets stay local.
  fs.mkdirSync(path.join(RESULTS, 'upscale'), { recursive: true });
  fs.writeFileSync(path.join(RESULTS, 'upscale', `upscale${tag}.json`), JSON.stringify({ images, usable: usable.length, steps, strength: strength ?? null, scales, variants, records }, null, 2));
  process.stdout.write(lines.join('\n') + '\n');
  await pipe.close();
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
