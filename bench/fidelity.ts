/**
 * The fidelity benchmark: can a benchmark tell asg from cutdiffusion? For every seed, prompt, size and method it
 * generates an image, scores it against its caption (bench/analysis/scenes.ts: objects per colour, extra and
 * missing ones, shapes, relation, size order), against the native image of the same seed (layout: per-colour
 * mask IoU and centre distance after box-downscaling), and for artefacts (bench/analysis/fidelity-metrics.ts:
 * high-frequency energy inside flat regions, colour step across the window grid vs elsewhere), plus edge sharpness.
 *
 *   node --import tsx bench/fidelity.ts --model models/scenes-128 --prompts scenes --seeds 4 --sizes 256
 *   node --import tsx bench/fidelity.ts --tag NAME --report-only [--sheets]   tables (and contact sheets) again
 *
 * Flags: --model DIR (default models/shapes-128), --prompts scenes|shapes (caption set, default scenes for a model
 * folder named scenes-*, else shapes), --seeds N (seeds 1..N, default 4), --seed-start K, --sizes 256,512 (pixel
 * sizes above the native one; '' for native images only), --methods direct,multidiffusion,cutdiffusion,asg,asg-sync (the defaults sweep:
 * asg-nomask, asg-split05, asg-eps, asg-constant, asg-weight0.5, asg-weight0.25; scheduling settings: asg-w4, asg-m4, asg-m8, asg-m8t25, asg-m16t25, asg-lines, asg-lines2), --steps N (20),
 * --threads N (1), --asg JSON (options of both asg rows), --options JSON (every row but direct), --tag NAME
 * (results folder, default the model folder's name), --report-only, --rescore (measure every recorded image
 * again from its saved PNG, and the native one, and rewrite records.jsonl: after a change of the analysis), --sheets (contact sheets: a row per method,
 * a column per image, at most --sheet-columns, default 24).
 *
 * Results go to bench/results/fidelity/<tag>/: records.jsonl (one JSON line per image, appended as each image is
 * scored, so an interrupted run keeps what it made and a rerun continues where it stopped), summary.json and
 * summary.md (tables with 95 % intervals), images/<size>/<label>/p<prompt>-s<seed>.png (not committed) and
 * sheet-<size>.png. Seeds are the outer loop: a partial run holds every method for the same prompts and seeds.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BenchUsageError, benchCli } from './args.ts';
import sharp from 'sharp';
import { flatEnergy, flatInterior, seamContrast, type Rgb } from './analysis/fidelity-metrics.ts';
import { askedByColour, layoutAgainst, parseScene, scoreScene } from './analysis/scenes.ts';
import { SHAPE_PROMPTS, labelColours } from './analysis/shapes.ts';
import { resolveMethodOptions } from '../src/core/methods/options.ts';
import type { MethodName } from '../src/core/methods/types.ts';
import { saveImage } from '../src/node/image/write.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { summarise, type FidelityRecord } from './fidelity-report.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** Captions of training/scenes.py: 6 relations (2 with sizes, 1 striped), 4 counts (1 striped), 2 single objects on stripes. */
export const SCENE_PROMPTS = [
  'a red circle left of a blue square on a gray background',
  'a yellow triangle above a green circle on a purple background',
  'a white square right of a red triangle on a blue background',
  'a blue circle below a yellow square on a striped gray and white background',
  'a large green square left of a small red circle on a white background',
  'a small black circle above a large yellow triangle on a orange background',
  'two blue squares on a yellow background',
  'three red circles on a white background',
  'two yellow triangles on a striped black and purple background',
  'three green squares on a orange background',
  'a red square on a striped white and blue background',
  'a yellow circle on a striped purple and gray background',
];

interface Variant {
  label: string;
  method: MethodName;
  methodOptions: Record<string, unknown>;
}

const VARIANTS: Variant[] = [
  { label: 'direct', method: 'direct', methodOptions: {} },
  { label: 'multidiffusion', method: 'multidiffusion', methodOptions: {} },
  { label: 'cutdiffusion', method: 'cutdiffusion', methodOptions: {} },
  { label: 'asg', method: 'asg', methodOptions: {} },
  { label: 'asg-sync', method: 'asg', methodOptions: { guidanceSync: true } },
  // The defaults sweep: one asg setting changed at a time.
  { label: 'asg-nomask', method: 'asg', methodOptions: { mask: false } },
  { label: 'asg-split05', method: 'asg', methodOptions: { stageSplit: 0.5 } },
  { label: 'asg-eps', method: 'asg', methodOptions: { structureSpace: 'eps' } },
  { label: 'asg-constant', method: 'asg', methodOptions: { structureSchedule: 'constant' } },
  { label: 'asg-weight0.5', method: 'asg', methodOptions: { structureWeight: 0.5 } },
  { label: 'asg-weight0.25', method: 'asg', methodOptions: { structureWeight: 0.25 } },
  // Scheduling settings (issue 15): stage-2 grids of a multiple of 4 windows; pixel interaction every 4th step.
  { label: 'asg-w4', method: 'asg', methodOptions: { stage2Windows: 4 } },
  { label: 'asg-m4', method: 'asg', methodOptions: { interactionEvery: 4 } },
  { label: 'asg-m8', method: 'asg', methodOptions: { interactionEvery: 8 } },
  // Sparse pixel interaction early, every step in the last quarter of stage 1 (interactionTail).
  { label: 'asg-m8t25', method: 'asg', methodOptions: { interactionEvery: 8, interactionTail: 0.25 } },
  { label: 'asg-lines', method: 'asg', methodOptions: { interactionGroups: 'lines', linesPeriod: 1 } },
  { label: 'asg-lines2', method: 'asg', methodOptions: { interactionGroups: 'lines', linesPeriod: 2 } },
  { label: 'asg-m16t25', method: 'asg', methodOptions: { interactionEvery: 16, interactionTail: 0.25 } },
];

function jsonObject(flag: string, text: string | undefined): Record<string, unknown> {
  if (text === undefined) return {};
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch {
    o = undefined;
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new BenchUsageError(`${flag}: expected a JSON object of method options, received ${JSON.stringify(text)}`);
  try {
    resolveMethodOptions(o as Record<string, unknown>);
  } catch (err) {
    throw new BenchUsageError(`${flag}: ${err instanceof Error ? err.message : String(err)}`);
  }
  return o as Record<string, unknown>;
}

const USAGE = `
node --import tsx bench/fidelity.ts [options] (npm run bench:fidelity -- [options]): generate and score images per
seed, prompt, size and method; tables to stdout and bench/results/fidelity/<tag>/summary.md, records in records.jsonl.
See the header of bench/fidelity.ts for what is measured.

  --model DIR          model folder (default models/shapes-128)
  --prompts SET        scenes or shapes (default scenes for a model folder named scenes-*, else shapes)
  --seeds N            seeds K..K+N-1 (default 4), --seed-start K (default 1)
  --sizes LIST         pixel sizes above the native one, comma-separated (default 256; '' for native images only)
  --methods LIST       comma-separated labels (default all): ${VARIANTS.map((v) => v.label).join(', ')}
  --steps N            steps (default 20)
  --threads N          CPU threads (default 1)
  --asg JSON           method options of the asg rows; --options JSON: of every row but direct
  --tag NAME           results folder (default the model folder's name)
  --report-only        tables (and --sheets) from the records only; --rescore: measure the saved images again
  --sheets             contact sheets, at most --sheet-columns N columns (default 24)
  --help               this text
`;

function cli() {
  return benchCli(USAGE, {
    options: {
      model: { type: 'string' },
      prompts: { type: 'string' },
      seeds: { type: 'string', default: '4' },
      'seed-start': { type: 'string', default: '1' },
      sizes: { type: 'string', default: '256' },
      methods: { type: 'string' },
      steps: { type: 'string', default: '20' },
      threads: { type: 'string', default: '1' },
      asg: { type: 'string' },
      options: { type: 'string' },
      tag: { type: 'string' },
      'report-only': { type: 'boolean', default: false },
      rescore: { type: 'boolean', default: false },
      sheets: { type: 'boolean', default: false },
      'sheet-columns': { type: 'string', default: '24' },
    },
  }, ({ values }) => {
    const int = (name: string, v: string, min: number) => {
      const n = Number(v);
      if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new BenchUsageError(`--${name}: an integer >= ${min}, got ${v}`);
      return n;
    };
    const model = path.resolve(values.model ?? path.join(ROOT, 'models', 'shapes-128'));
    const promptSet = values.prompts ?? (path.basename(model).startsWith('scenes') ? 'scenes' : 'shapes');
    if (promptSet !== 'scenes' && promptSet !== 'shapes') throw new BenchUsageError('--prompts: scenes or shapes');
    const labels = VARIANTS.map((v) => v.label);
    const methods = values.methods?.split(',') ?? labels;
    for (const m of methods) if (!labels.includes(m)) throw new BenchUsageError(`--methods: a subset of ${labels.join(',')}; unknown: ${m}`);
    const tag = values.tag ?? path.basename(model);
    if (!/^[a-z0-9-]{1,60}$/.test(tag)) throw new BenchUsageError('--tag: lowercase letters, digits, dashes');
    const asg = jsonObject('--asg', values.asg);
    const common = jsonObject('--options', values.options);
    const variants = VARIANTS.filter((v) => methods.includes(v.label)).map((v) => (v.method === 'direct'
      ? v
      : { ...v, methodOptions: { ...v.methodOptions, ...common, ...(v.method === 'asg' ? asg : {}) } }));
    const seedStart = int('seed-start', values['seed-start']!, 0);
    return {
      model,
      promptSet,
      prompts: promptSet === 'scenes' ? SCENE_PROMPTS : SHAPE_PROMPTS,
      seeds: Array.from({ length: int('seeds', values.seeds!, 1) }, (_, i) => seedStart + i),
      sizes: values.sizes!.split(',').filter((s) => s.trim() !== '').map((s) => int('sizes', s, 64)),
      variants,
      steps: int('steps', values.steps!, 1),
      threads: int('threads', values.threads!, 0),
      tag,
      reportOnly: values['report-only']! || values.rescore!,
      rescore: values.rescore!,
      sheets: values.sheets!,
      sheetColumns: int('sheet-columns', values['sheet-columns']!, 1),
    };
  });
}

async function readPng(file: string): Promise<Rgb> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

/** Scores one image (native: layout against itself is skipped). */
export function measure(image: Rgb, prompt: string, native: Rgb | null, nativeSize: number) {
  const spec = parseScene(prompt);
  const score = scoreScene(image, spec, nativeSize);
  const labels = labelColours(image.data, image.width, image.height);
  const interior = flatInterior(labels, image.width, image.height, 3);
  const seam = seamContrast(image, Math.max(1, Math.round(nativeSize / 2)), interior);
  const layout = native ? layoutAgainst(native, image, [...askedByColour(spec).keys()]) : null;
  return {
    kind: score.kind,
    correct: score.correct,
    countCorrect: score.countCorrect,
    shapesCorrect: score.shapesCorrect,
    relationKept: score.relationKept,
    sizeKept: score.sizeKept,
    extra: score.extra,
    missing: score.missing,
    found: Object.fromEntries(score.colours.map((c) => [c.colour, c.found])),
    shapes: Object.fromEntries(score.colours.map((c) => [c.colour, c.shapes])),
    sharpness: score.sharpness,
    flatEnergy: flatEnergy(image, interior),
    seamRatio: seam.ratio,
    seamBorder: Number.isNaN(seam.border) ? null : seam.border,
    seamElsewhere: Number.isNaN(seam.elsewhere) ? null : seam.elsewhere,
    layoutIoU: layout?.meanIoU ?? null,
    centreDistance: layout?.meanCentreDistance ?? null,
  };
}

async function contactSheets(dir: string, records: FidelityRecord[], columns: number): Promise<string[]> {
  const written: string[] = [];
  const cell = 128;
  const gap = 4;
  const strip = 6;
  for (const size of [...new Set(records.map((r) => r.size))].sort((a, b) => a - b)) {
    const rs = records.filter((r) => r.size === size);
    const labels = [...new Set(rs.map((r) => r.label))];
    const keys = [...new Set(rs.map((r) => `${r.promptIndex}:${r.seed}`))].slice(0, columns);
    const width = gap + keys.length * (cell + gap);
    const height = gap + labels.length * (cell + strip + gap);
    const parts: NonNullable<Parameters<ReturnType<typeof sharp>['composite']>[0]> = [];
    for (const [row, label] of labels.entries()) {
      for (const [col, key] of keys.entries()) {
        const r = rs.find((x) => x.label === label && `${x.promptIndex}:${x.seed}` === key);
        if (!r || !fs.existsSync(path.join(dir, r.image))) continue;
        const left = gap + col * (cell + gap);
        const top = gap + row * (cell + strip + gap);
        parts.push({ input: await sharp(path.join(dir, r.image)).resize(cell, cell, { kernel: 'lanczos3' }).png().toBuffer(), left, top });
        const colour = r.correct ? { r: 40, g: 200, b: 60 } : { r: 220, g: 40, b: 40 };
        parts.push({ input: { create: { width: cell, height: strip - 1, channels: 3, background: colour } }, left, top: top + cell + 1 });
      }
    }
    const file = path.join(dir, `sheet-${size}.png`);
    await sharp({ create: { width, height, channels: 3, background: { r: 40, g: 40, b: 40 } } }).composite(parts).png().toFile(file);
    written.push(file);
    fs.writeFileSync(path.join(dir, `sheet-${size}.json`), JSON.stringify({ rows: labels, columns: keys.map((k) => {
      const [p, s] = k.split(':').map(Number);
      return { prompt: rs.find((r) => r.promptIndex === p)!.prompt, promptIndex: p, seed: s };
    }), strip: 'green: the image holds what the caption asks (correct); red: not' }, null, 2));
  }
  return written;
}

function readRecords(file: string): FidelityRecord[] {
  if (!fs.existsSync(file)) return [];
  const all = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as FidelityRecord);
  // Two runs of one tag (e.g. one per size) may both record a native image: the last record of a key wins.
  const byKey = new Map(all.map((r) => [`${r.label}|${r.size}|${r.promptIndex}|${r.seed}`, r]));
  return [...byKey.values()];
}

async function main(): Promise<void> {
  const o = cli();
  const dir = path.join(ROOT, 'bench', 'results', 'fidelity', o.tag);
  fs.mkdirSync(dir, { recursive: true });
  const recordsFile = path.join(dir, 'records.jsonl');
  const have = readRecords(recordsFile);
  const key = (r: { label: string; size: number; promptIndex: number; seed: number }) => `${r.label}|${r.size}|${r.promptIndex}|${r.seed}`;
  const done = new Set(have.map(key));
  const t0 = performance.now();
  if (!o.reportOnly) {
    const pipe = await loadPipeline(o.model, { threads: o.threads, devices: 'cpu' });
    const native = pipe.nativeSize.width;
    const total = o.seeds.length * o.prompts.length * (1 + o.sizes.length * o.variants.length);
    let n = 0;
    try {
      for (const seed of o.seeds) {
        for (const [pi, prompt] of o.prompts.entries()) {
          const nativeFile = path.join('images', String(native), 'native', `p${pi}-s${seed}.png`);
          let nativeImage: Rgb | null = fs.existsSync(path.join(dir, nativeFile)) ? await readPng(path.join(dir, nativeFile)) : null;
          const jobs: { label: string; method: MethodName; methodOptions: Record<string, unknown>; size: number }[] = [
            { label: 'native', method: 'direct', methodOptions: {}, size: native },
            ...o.sizes.flatMap((size) => o.variants.map((v) => ({ ...v, size }))),
          ];
          for (const job of jobs) {
            n++;
            const rec = { label: job.label, size: job.size, promptIndex: pi, seed };
            if (done.has(key(rec)) && (job.label !== 'native' || nativeImage)) continue;
            const image = path.join('images', String(job.size), job.label, `p${pi}-s${seed}.png`);
            const t = performance.now();
            const r = await pipe.generate({ prompt, width: job.size, height: job.size, steps: o.steps, seed, method: job.method, methodOptions: job.methodOptions });
            const ms = performance.now() - t;
            fs.mkdirSync(path.dirname(path.join(dir, image)), { recursive: true });
            await saveImage(path.join(dir, image), r.image, r.metadata, true);
            if (job.label === 'native') nativeImage = r.image;
            if (done.has(key(rec))) continue;
            const m = measure(r.image, prompt, job.label === 'native' ? null : nativeImage, native);
            const record: FidelityRecord = {
              ...rec, method: job.method, methodOptions: job.methodOptions, prompt, steps: o.steps, ms, unetEvaluations: r.unetEvaluations, image, ...m,
            };
            fs.appendFileSync(recordsFile, `${JSON.stringify(record)}\n`);
            have.push(record);
            done.add(key(rec));
            console.error(`[${n}/${total}] ${job.label} ${job.size} p${pi} s${seed}: ${m.correct ? 'correct' : 'wrong'} found ${JSON.stringify(m.found)}` +
              ` rel ${m.relationKept} iou ${m.layoutIoU?.toFixed(2) ?? '-'} flat ${m.flatEnergy?.toExponential(2) ?? '-'} seam ${m.seamRatio?.toFixed(2) ?? '-'} (${(ms / 1000).toFixed(1)} s)`);
          }
        }
      }
    } finally {
      await pipe.close();
    }
  }
  if (o.rescore) {
    const nativeOf = new Map(have.filter((r) => r.label === 'native').map((r) => [`${r.promptIndex}|${r.seed}`, r]));
    const next: FidelityRecord[] = [];
    for (const r of have) {
      const file = path.join(dir, r.image);
      if (!fs.existsSync(file)) throw new Error(`--rescore: ${file} is missing`);
      const nat = r.label === 'native' ? null : nativeOf.get(`${r.promptIndex}|${r.seed}`);
      const nativeImage = nat ? await readPng(path.join(dir, nat.image)) : null;
      const image = await readPng(file);
      const nativeSize = have.find((x) => x.label === 'native')?.size ?? r.size;
      next.push({ ...r, ...measure(image, r.prompt, nativeImage, nativeSize) });
    }
    fs.writeFileSync(`${recordsFile}.tmp`, next.map((r) => `${JSON.stringify(r)}\n`).join(''));
    fs.renameSync(`${recordsFile}.tmp`, recordsFile);
    have.splice(0, have.length, ...next);
    console.error(`rescored ${next.length} records`);
  }
  const summary = summarise(have);
  const setting = `${path.basename(o.model)}, ${o.steps} steps, guidance 7.5, ${os.cpus()[0]?.model ?? 'cpu'} (${os.cpus().length} cores)`;
  const md = `## Fidelity benchmark (${setting})\n\n${summary.markdown}\n`;
  console.log(md);
  fs.writeFileSync(path.join(dir, 'summary.md'), md);
  fs.writeFileSync(path.join(dir, 'summary.json'), JSON.stringify({
    command: `node --import tsx bench/fidelity.ts ${process.argv.slice(2).join(' ')}`.trim(),
    model: o.model.startsWith(ROOT) ? path.relative(ROOT, o.model) : o.model,
    machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, date: new Date().toISOString() },
    records: have.length,
    cells: summary.cells,
    comparisons: summary.comparisons,
  }, null, 2));
  if (o.sheets) {
    const files = await contactSheets(dir, have, o.sheetColumns);
    console.error(`contact sheets: ${files.map((f) => path.relative(ROOT, f)).join(', ')}`);
  }
  console.error(`${path.relative(ROOT, dir)}: ${have.length} records (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.stack ?? e.message : String(e));
    process.exit(1);
  });
}
