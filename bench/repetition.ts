/**
 * The repetition benchmark: does a method keep one object at high resolution? For the shapes toy model
 * (models/shapes-128, captions of training/data.py) it generates every prompt x seed at native size, 4x and 16x
 * area with each method, counts the objects of the asked colour (bench/analysis/shapes.ts) and reports per method
 * and size: the single-object rate (exactly one object, of the asked shape), the mean object count and the mean
 * edge sharpness. Markdown on stdout, JSON in bench/results/repetition.json, a contact sheet per size in
 * bench/results/repetition-<size>.png (one row per method, one column per (prompt, seed); the strip under a cell
 * is green when the image is correct, red when not).
 *
 *   node --import tsx bench/repetition.ts [--model DIR] [--seeds N] [--steps N] [--prompts N] [--quick]
 *   node --import tsx bench/repetition.ts --sweep [--quick]       asg option sweep at 4x and 16x area
 *   node --import tsx bench/repetition.ts --sweep --design split  the stage-split sweep
 *
 * Other flags: --sizes 128,256 (pixel sizes instead of native x 1, 2, 4), --threads N, --devices cpu,cpu,
 * --margin 0.1 (sharpness loss vs cutdiffusion the sweep and the targets tolerate), --asg JSON (options for both
 * asg rows, e.g. '{"structureSpace":"x0"}'), --options JSON (options for every row but direct, e.g. '{"stageSplit":0.9}'), --tag NAME (write repetition-NAME.json / -<size>.png instead), --methods asg,cutdiffusion (a subset of the rows), --sweep-top N (settings besides the default carried from the
 * sweep's first size to the next, default 4), --resume (reuse images already generated under
 * bench/results/repetition-images/ for the same model file, steps, code version (see codeVersion), method and
 * resolved options, size, prompt and seed), --cached-only (only analyse such images, generate nothing: re-scores a run after analysis changes).
 * Without --model it uses models/shapes-128, or the random-weight fixture when that is absent (only to check
 * that the benchmark runs: its images hold no shapes).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { SHAPE_PROMPTS as PROMPTS, analyseImage, parsePrompt, type ShapeAnalysis } from './analysis/shapes.ts';
import { contactSheet } from './analysis/contact-sheet.ts';
import { AsgdError, invalidArgument } from '../src/core/errors.ts';
import type { RgbImage } from '../src/core/image.ts';
import { DEFAULT_METHOD_OPTIONS, resolveMethodOptions } from '../src/core/methods/options.ts';
import type { MethodName } from '../src/core/methods/types.ts';
import { writeTinySdModel } from '../test/fixtures/index.ts';
import { saveImage } from '../src/node/image/write.ts';
import { loadPipeline, type Pipeline } from '../src/node/pipeline.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const RESULTS = path.join(ROOT, 'bench', 'results');

interface Variant {
  label: string;
  method: MethodName;
  methodOptions?: Record<string, unknown>;
}

const METHODS: Variant[] = [
  { label: 'direct', method: 'direct' },
  { label: 'multidiffusion', method: 'multidiffusion' },
  { label: 'cutdiffusion', method: 'cutdiffusion' },
  { label: 'asg', method: 'asg' },
  { label: 'asg-sync', method: 'asg', methodOptions: { guidanceSync: true } },
];

/**
 * The sweep designs. 'options' (default): a fractional design around the defaults (w 0.5, cosine, eps, mask on,
 * pixel interaction on): the full weight x schedule grid, then the space, mask and pixel-interaction switches one
 * at a time at two weights. 'split': the stage split (fraction of steps in stage 1, the structure stage) for the
 * default guidance, for the x0 variant and for plain cutdiffusion.
 */
function sweepVariants(design: 'options' | 'split'): Variant[] {
  const out: Variant[] = [{ label: 'cutdiffusion', method: 'cutdiffusion' }];
  const add = (o: { w: number; schedule?: string; space?: string; mask?: boolean; pi?: boolean; split?: number }) => {
    const schedule = o.schedule ?? 'cosine';
    const space = o.space ?? 'eps';
    const mask = o.mask ?? true;
    const pi = o.pi ?? true;
    const split = o.split === undefined ? '' : `-s${o.split}`;
    out.push({
      label: `w${o.w}-${schedule}-${space}-${mask ? 'mask' : 'nomask'}-${pi ? 'pi' : 'nopi'}${split}`,
      method: 'asg',
      methodOptions: {
        structureWeight: o.w, structureSchedule: schedule, structureSpace: space, mask, pixelInteraction: pi,
        ...(o.split === undefined ? {} : { stageSplit: o.split }),
      },
    });
  };
  if (design === 'split') {
    for (const split of [0.7, 0.8, 0.9]) out.push({ label: `cutdiffusion-s${split}`, method: 'cutdiffusion', methodOptions: { stageSplit: split } });
    for (const split of [0.6, 0.7, 0.8, 0.9]) add({ w: 0.5, split });
    for (const split of [0.7, 0.8, 0.9]) add({ w: 1, space: 'x0', split });
    add({ w: 0.25, schedule: 'constant', split: 0.8 });
    return out;
  }
  for (const schedule of ['cosine', 'constant']) for (const w of [0.25, 0.5, 0.75, 1]) add({ w, schedule });
  for (const w of [0.5, 1]) {
    add({ w, space: 'x0' });
    add({ w, mask: false });
    add({ w, pi: false });
  }
  return out;
}

interface Record_ {
  label: string;
  method: MethodName;
  methodOptions: Record<string, unknown>;
  size: number;
  prompt: string;
  promptIndex: number;
  seed: number;
  count: number;
  correct: boolean;
  sharpness: number | null;
  noise: number;
  shapes: string[];
  background: string | null;
  /** Generation time (from the image's sidecar file when reused with --resume; null when that is missing). */
  ms: number | null;
  unetEvaluations: number | null;
}

interface Summary {
  label: string;
  size: number;
  images: number;
  singleObjectRate: number;
  /** Exactly one object of the asked colour, whatever its shape. */
  oneObjectRate: number;
  meanCount: number;
  meanSharpness: number | null;
  meanNoise: number;
  meanSeconds: number | null;
}

function fail(e: unknown): never {
  console.error(e instanceof Error ? e.message : String(e));
  process.exit(e instanceof AsgdError && e.kind === 'invalid-argument' ? 2 : 1);
}

function intFlag(name: string, value: string | undefined, fallback: number, min: number, max = Infinity): number {
  if (value === undefined) return fallback;
  const v = Number(value);
  if (!Number.isInteger(v) || v < min || v > max) throw invalidArgument(`--${name}`, `an integer from ${min}${max === Infinity ? '' : ` to ${max}`}`, value);
  return v;
}

function parseCli() {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' },
      seeds: { type: 'string' },
      steps: { type: 'string' },
      prompts: { type: 'string' },
      sizes: { type: 'string' },
      threads: { type: 'string' },
      devices: { type: 'string' },
      margin: { type: 'string' },
      asg: { type: 'string' },
      options: { type: 'string' },
      methods: { type: 'string' },
      design: { type: 'string' },
      tag: { type: 'string' },
      'sweep-top': { type: 'string' },
      quick: { type: 'boolean', default: false },
      sweep: { type: 'boolean', default: false },
      resume: { type: 'boolean', default: false },
      'cached-only': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const quick = values.quick!;
  const sweep = values.sweep!;
  const sizes = values.sizes?.split(',').map((s) => {
    const v = Number(s);
    if (!Number.isInteger(v) || v < 64 || v % 8 !== 0) throw invalidArgument('--sizes', 'comma-separated pixel sizes, multiples of 8 from 64', values.sizes);
    return v;
  });
  const margin = values.margin === undefined ? 0.1 : Number(values.margin);
  if (!(margin >= 0 && margin < 1)) throw invalidArgument('--margin', 'a fraction in [0, 1)', values.margin, 'e.g. 0.1 for 10 %');
  const json = (flag: string, text: string | undefined): Record<string, unknown> | undefined => {
    if (text === undefined) return undefined;
    let o: unknown;
    try {
      o = JSON.parse(text);
    } catch {
      o = undefined;
    }
    if (typeof o !== 'object' || o === null || Array.isArray(o)) {
      throw invalidArgument(flag, 'a JSON object of method options', text, `e.g. ${flag} '{"stageSplit":0.8}'`);
    }
    resolveMethodOptions(o as Record<string, unknown>); // names a bad option before any work
    return o as Record<string, unknown>;
  };
  const asg = json('--asg', values.asg);
  const common = json('--options', values.options);
  const labels = METHODS.map((m) => m.label);
  const methods = values.methods?.split(',').map((m) => m.trim());
  if (methods && (methods.length === 0 || methods.some((m) => !labels.includes(m)))) {
    throw invalidArgument('--methods', `a comma-separated subset of ${labels.join(', ')}`, values.methods);
  }
  const design = values.design ?? 'options';
  if (design !== 'options' && design !== 'split') throw invalidArgument('--design', 'options or split', values.design);
  if (values.tag !== undefined && !/^[a-z0-9-]{1,40}$/.test(values.tag)) throw invalidArgument('--tag', 'lowercase letters, digits and dashes', values.tag);
  return {
    model: values.model,
    tag: values.tag,
    design: design as 'options' | 'split',
    asg,
    common,
    methods,
    sweepTop: intFlag('sweep-top', values['sweep-top'], 4, 0),
    quick,
    sweep,
    resume: values.resume! || values['cached-only']!,
    cachedOnly: values['cached-only']!,
    sizes,
    steps: intFlag('steps', values.steps, 20, 1, 1000),
    seeds: intFlag('seeds', values.seeds, quick ? 1 : sweep ? 2 : 4, 1),
    prompts: intFlag('prompts', values.prompts, quick ? 3 : PROMPTS.length, 1, PROMPTS.length),
    threads: intFlag('threads', values.threads, 2, 0),
    devices: values.devices ?? 'cpu',
    margin,
  };
}

async function modelDir(given: string | undefined): Promise<string> {
  if (given) return path.resolve(given);
  const trained = path.join(ROOT, 'models', 'shapes-128');
  if (fs.existsSync(path.join(trained, 'model_index.json'))) return trained;
  const fixture = path.join(ROOT, '.cache', 'models', 'tiny-sd');
  if (!fs.existsSync(path.join(fixture, 'model_index.json'))) await writeTinySdModel(fixture, { variant: 'standard' });
  console.error(`models/shapes-128 is absent: using the random-weight fixture ${fixture} (checks that the benchmark runs; its scores mean nothing)`);
  return fixture;
}

async function readPng(file: string): Promise<RgbImage> {
  const { data, info } = await sharp(file).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}


function mean(xs: number[]): number | null {
  return xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length;
}

function summarise(records: Record_[], labels: string[], sizes: number[]): Summary[] {
  const out: Summary[] = [];
  for (const size of sizes) {
    for (const label of labels) {
      const rs = records.filter((r) => r.label === label && r.size === size);
      if (rs.length === 0) continue;
      const ms = rs.map((r) => r.ms).filter((m): m is number => m !== null);
      out.push({
        label,
        size,
        images: rs.length,
        singleObjectRate: rs.filter((r) => r.correct).length / rs.length,
        oneObjectRate: rs.filter((r) => r.count === 1).length / rs.length,
        meanCount: mean(rs.map((r) => r.count))!,
        meanSharpness: mean(rs.map((r) => r.sharpness).filter((s): s is number => s !== null)),
        meanNoise: mean(rs.map((r) => r.noise))!,
        meanSeconds: ms.length ? mean(ms)! / 1000 : null,
      });
    }
  }
  return out;
}

function markdown(title: string, summaries: Summary[], native: number): string {
  const f = (v: number | null, d = 2) => (v === null ? '-' : v.toFixed(d));
  const lines = [
    `### ${title}`,
    '',
    '| method | size (area) | images | single-object rate | one object, any shape | mean count | mean sharpness | mean noise | s / image |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const s of summaries) {
    const area = (s.size / native) ** 2;
    lines.push(`| ${s.label} | ${s.size}x${s.size} (${area}x) | ${s.images} | ${(100 * s.singleObjectRate).toFixed(0)} % | ${(100 * s.oneObjectRate).toFixed(0)} % | ${f(s.meanCount)} | ${f(s.meanSharpness)} | ${f(s.meanNoise, 3)} | ${f(s.meanSeconds, 1)} |`);
  }
  return lines.join('\n');
}

/** Short stable hash of a string (FNV-1a, 32 bits, hex): names cache folders. */
function shortHash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/**
 * The image folder of a method and its resolved options: an existing folder whose options.json agrees on the
 * method and on every option both know (an option added to the library later, at its default, keeps the old
 * images), else a new folder named by a hash of the options.
 */
function cacheFolder(root: string, method: string, options: Record<string, unknown>): string {
  if (fs.existsSync(root)) {
    for (const name of fs.readdirSync(root).sort()) {
      const file = path.join(root, name, 'options.json');
      if (!fs.existsSync(file)) continue;
      const saved = JSON.parse(fs.readFileSync(file, 'utf8')) as { method: string; options: Record<string, unknown> };
      if (saved.method === method && Object.keys(saved.options).every((k) => !(k in options) || JSON.stringify(saved.options[k]) === JSON.stringify(options[k]))) {
        return path.join(root, name);
      }
    }
  }
  return path.join(root, `${method}-${shortHash(JSON.stringify(options))}`);
}

/**
 * The version of the code that makes images: the last commit touching src/ (the analysis aside) plus a hash of
 * any uncommitted change there. Part of the image cache key, so --resume never mixes images of different library
 * versions (a scheduler or method change alters every image). 'nogit' outside a git checkout.
 */
function codeVersion(): string {
  try {
    const spec = ['--', 'src'];
    const git = (...args: string[]) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const commit = git('log', '-1', '--format=%h', ...spec).trim();
    const diff = git('diff', 'HEAD', ...spec);
    return diff ? `${commit}+${shortHash(diff)}` : commit;
  } catch {
    return 'nogit';
  }
}

/** What identifies the model measured: its folder, a hash of the UNet file, and the training record when present. */
function describeModel(dir: string) {
  const unet = path.join(dir, 'unet', 'model.onnx');
  const unetSha256 = fs.existsSync(unet) ? createHash('sha256').update(fs.readFileSync(unet)).digest('hex') : null;
  const hp = path.join(dir, 'training_hparams.json');
  const training = fs.existsSync(hp) ? (JSON.parse(fs.readFileSync(hp, 'utf8')) as { stats?: unknown; versions?: unknown; args?: unknown }) : null;
  return { dir, unetSha256, training: training ? { stats: training.stats, versions: training.versions, args: training.args } : null };
}

async function main(): Promise<void> {
  const opts = parseCli();
  const dir = await modelDir(opts.model);
  const model = describeModel(dir);
  const pipe: Pipeline = await loadPipeline(dir, { threads: opts.threads, devices: opts.devices });
  const native = pipe.nativeSize.width;
  const sizes = opts.sizes ?? (opts.sweep ? (opts.quick ? [2] : [2, 4]) : opts.quick ? [1, 2] : [1, 2, 4]).map((f) => f * native);
  const variants = opts.sweep
    ? sweepVariants(opts.design)
    : METHODS.filter((v) => !opts.methods || opts.methods.includes(v.label))
      .map((v) => (v.method === 'direct' ? v : { ...v, methodOptions: { ...v.methodOptions, ...opts.common, ...(v.method === 'asg' ? opts.asg : {}) } }));
  const prompts = PROMPTS.slice(0, opts.prompts);
  const seeds = Array.from({ length: opts.seeds }, (_, i) => i + 1);
  const modelName = path.basename(dir);
  // Images are cached per model file, steps, code version, method and resolved options, so --resume never reuses
  // an image made with other defaults, another model or another version of the library (e.g. the switch of patch
  // methods above the native size to Euler).
  const code = codeVersion();
  const imageRoot = path.join(RESULTS, 'repetition-images', `${modelName}-${(model.unetSha256 ?? 'nounet').slice(0, 8)}-${opts.steps}steps`, code);
  const records: Record_[] = [];
  const sheets = new Map<number, Map<string, { image: RgbImage; ok: boolean }[]>>();
  const ran = new Map<number, Variant[]>();
  let done = 0;
  const t0 = performance.now();

  const runOne = async (size: number, v: Variant, pi: number, prompt: string, seed: number, total: number) => {
    const subject = parsePrompt(prompt);
    const resolved = resolveMethodOptions(v.methodOptions ?? {});
    const folder = cacheFolder(path.join(imageRoot, String(size)), v.method, resolved as unknown as Record<string, unknown>);
    const file = path.join(folder, `p${pi}-s${seed}.png`);
    const side = file.replace(/\.png$/, '.json');
    if (opts.cachedOnly && !fs.existsSync(file)) return;
    let image: RgbImage;
    let ms: number | null = null;
    let unetEvaluations: number | null = null;
    const reused = opts.resume && fs.existsSync(file);
    if (reused) {
      image = await readPng(file);
      if (fs.existsSync(side)) ({ ms, unetEvaluations } = JSON.parse(fs.readFileSync(side, 'utf8')) as { ms: number; unetEvaluations: number });
    } else {
      const t = performance.now();
      const r = await pipe.generate({
        prompt, width: size, height: size, steps: opts.steps, seed, method: v.method, methodOptions: v.methodOptions ?? {},
      });
      ms = performance.now() - t;
      unetEvaluations = r.unetEvaluations;
      image = r.image;
      fs.mkdirSync(folder, { recursive: true });
      fs.writeFileSync(path.join(folder, 'options.json'), JSON.stringify({ method: v.method, options: resolved }, null, 2));
      await saveImage(file, image, r.metadata, true);
      fs.writeFileSync(side, JSON.stringify({ ms, unetEvaluations }));
    }
    const a: ShapeAnalysis = analyseImage(image.data, image.width, image.height, { colour: subject.colour, shape: subject.shape, nativeSize: native });
    records.push({
      label: v.label, method: v.method, methodOptions: v.methodOptions ?? {}, size, prompt, promptIndex: pi, seed,
      count: a.count, correct: a.correct, sharpness: a.sharpness, noise: a.noise, shapes: a.components.map((c) => c.shape),
      background: a.background, ms, unetEvaluations,
    });
    const bySize = sheets.get(size) ?? new Map<string, { image: RgbImage; ok: boolean }[]>();
    sheets.set(size, bySize);
    bySize.set(v.label, [...(bySize.get(v.label) ?? []), { image, ok: a.correct }]);
    done++;
    console.error(`[${done}/${total}] ${v.label} ${size}x${size} p${pi} s${seed}: ${a.count} object(s) [${a.components.map((c) => c.shape).join(' ')}]` +
      `${a.correct ? ' correct' : ''}, sharpness ${a.sharpness?.toFixed(2) ?? '-'}, noise ${a.noise.toFixed(3)}${reused ? ' (reused)' : ` (${(ms! / 1000).toFixed(1)} s)`}`);
  };

  try {
    let total = 0;
    for (const [k, size] of sizes.entries()) {
      // Sweep: every setting at the first size, then only cutdiffusion, the defaults and the best --sweep-top others.
      const todo = opts.sweep && k > 0 ? pickForNextSize(summarise(records, variants.map((v) => v.label), [sizes[0]!]), variants, opts.sweepTop) : variants;
      ran.set(size, todo);
      total = done + todo.length * prompts.length * seeds.length + (sizes.length - k - 1) * (opts.sweep ? opts.sweepTop + 2 : todo.length) * prompts.length * seeds.length;
      for (const v of todo) {
        for (const [pi, prompt] of prompts.entries()) {
          for (const seed of seeds) await runOne(size, v, pi, prompt, seed, total);
        }
      }
    }
  } finally {
    await pipe.close();
  }

  const labels = variants.map((v) => v.label);
  const summaries = summarise(records, labels, sizes);
  const title = opts.sweep ? 'asg option sweep' : 'Repetition benchmark';
  const setting = `${modelName}, ${opts.steps} steps, ${prompts.length} prompts x ${seeds.length} seeds, guidance 7.5, ${os.cpus()[0]?.model ?? 'cpu'} (${os.cpus().length} cores), devices ${opts.devices} x ${opts.threads} threads`;
  console.log(`\n${markdown(`${title} (${setting})`, summaries, native)}\n`);

  fs.mkdirSync(RESULTS, { recursive: true });
  const base = (opts.sweep ? (opts.design === 'split' ? 'repetition-sweep-split' : 'repetition-sweep') : 'repetition') + (opts.tag ? `-${opts.tag}` : '');
  const legend = {
    rows: Object.fromEntries([...ran].map(([size, vs]) => [size, vs.map((v) => v.label)])),
    columns: prompts.flatMap((p, i) => seeds.map((s) => ({ prompt: p, promptIndex: i, seed: s }))),
    strip: 'green: exactly one object of the asked colour and shape; red: not',
  };
  for (const [size, byLabel] of sheets) {
    const sheet = await contactSheet(ran.get(size)!.map((v) => byLabel.get(v.label) ?? []), Math.min(size, 256));
    await saveImage(path.join(RESULTS, `${base}-${size}.png`), sheet, undefined, true);
  }
  const result: Record<string, unknown> = {
    machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, date: new Date().toISOString() },
    command: `node --import tsx bench/repetition.ts ${process.argv.slice(2).join(' ')}`.trim(),
    model,
    code,
    nativeSize: native,
    steps: opts.steps,
    guidanceScale: 7.5,
    sizes,
    prompts,
    seeds,
    variants,
    legend,
    summaries,
    records,
    totalSeconds: (performance.now() - t0) / 1000,
  };

  if (opts.sweep) {
    const everywhere = labels.filter((l) => sizes.every((size) => summaries.some((x) => x.label === l && x.size === size)));
    const rec = recommend(summaries, everywhere, sizes, opts.margin);
    result['recommendation'] = rec;
    console.log(rec.text);
  } else {
    const t = targets(summaries, native, opts.margin);
    result['targets'] = t;
    console.log(t.map((x) => `- ${x.pass === null ? 'n/a ' : x.pass ? 'PASS' : 'MISS'} ${x.target}: ${x.measured}`).join('\n'));
  }
  fs.writeFileSync(path.join(RESULTS, `${base}.json`), JSON.stringify(result, null, 2));
  console.error(`\nWrote ${path.relative(ROOT, path.join(RESULTS, `${base}.json`))} and ${[...sheets.keys()].map((s) => `${base}-${s}.png`).join(', ')} in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
}

/** The issue's targets, checked against the summaries (null where the size was not run). */
function targets(summaries: Summary[], native: number, margin: number) {
  const at = (label: string, factor: number) => summaries.find((s) => s.label === label && s.size === native * factor);
  const pct = (s: Summary | undefined) => (s ? `${(100 * s.singleObjectRate).toFixed(0)} %` : 'not run');
  const out: { target: string; measured: string; pass: boolean | null }[] = [];
  const d4 = at('direct', 2);
  out.push({ target: 'direct single-object rate <= 50 % at 4x area', measured: pct(d4), pass: d4 ? d4.singleObjectRate <= 0.5 : null });
  for (const [factor, goal] of [[2, 0.9], [4, 0.8]] as const) {
    const a = at('asg', factor);
    out.push({ target: `asg single-object rate >= ${goal * 100} % at ${factor * factor}x area`, measured: pct(a), pass: a ? a.singleObjectRate >= goal : null });
    const c = at('cutdiffusion', factor);
    const ok = a && c && a.meanSharpness !== null && c.meanSharpness !== null;
    out.push({
      target: `asg sharpness >= ${(1 - margin).toFixed(2)} x cutdiffusion's at ${factor * factor}x area`,
      measured: ok ? `${a.meanSharpness!.toFixed(3)} vs ${c.meanSharpness!.toFixed(3)} (ratio ${(a.meanSharpness! / c.meanSharpness!).toFixed(2)})` : 'not run',
      pass: ok ? a.meanSharpness! >= (1 - margin) * c.meanSharpness! : null,
    });
  }
  return out;
}

/** The sweep label of the library's default asg options (always carried to the sweep's next size). */
const DEFAULT_SETTING = ((o) => `w${o.structureWeight}-${o.structureSchedule}-${o.structureSpace}-${o.mask ? 'mask' : 'nomask'}-${o.pixelInteraction ? 'pi' : 'nopi'}`)(DEFAULT_METHOD_OPTIONS);

/**
 * Settings carried to the next sweep size: cutdiffusion (the sharpness reference), the default setting, and the
 * `top` best others at the first size by single-object rate, then sharpness.
 */
function pickForNextSize(first: Summary[], variants: Variant[], top: number): Variant[] {
  const ranked = first
    .filter((s) => !s.label.startsWith('cutdiffusion') && s.label !== DEFAULT_SETTING)
    .sort((a, b) => b.singleObjectRate - a.singleObjectRate || (b.meanSharpness ?? 0) - (a.meanSharpness ?? 0))
    .slice(0, top)
    .map((s) => s.label);
  const keep = new Set([DEFAULT_SETTING, ...ranked]);
  return variants.filter((v) => v.method === 'cutdiffusion' || keep.has(v.label));
}

/**
 * The sweep's pick: the asg setting with the highest single-object rate averaged over the sizes, among those whose
 * mean sharpness stays within `margin` of cutdiffusion's at every size; ties go to the sharper one.
 */
function recommend(summaries: Summary[], labels: string[], sizes: number[], margin: number) {
  const rows = labels.filter((l) => l !== 'cutdiffusion').map((label) => {
    const per = sizes.map((size) => {
      const s = summaries.find((x) => x.label === label && x.size === size)!;
      const c = summaries.find((x) => x.label === 'cutdiffusion' && x.size === size);
      const ratio = s.meanSharpness !== null && c?.meanSharpness ? s.meanSharpness / c.meanSharpness : null;
      return { size, rate: s.singleObjectRate, oneObjectRate: s.oneObjectRate, meanCount: s.meanCount, sharpnessRatio: ratio };
    });
    const rate = mean(per.map((p) => p.rate))!;
    const oneObjectRate = mean(per.map((p) => p.oneObjectRate))!;
    const ratios = per.map((p) => p.sharpnessRatio);
    const sharpEnough = ratios.every((r) => r !== null && r >= 1 - margin);
    return { label, rate, oneObjectRate, minSharpnessRatio: ratios.some((r) => r === null) ? null : Math.min(...(ratios as number[])), sharpEnough, per };
  });
  const eligible = rows.filter((r) => r.sharpEnough && !r.label.startsWith('cutdiffusion')).sort((a, b) => b.rate - a.rate || (b.minSharpnessRatio ?? 0) - (a.minSharpnessRatio ?? 0));
  const best = eligible[0] ?? null;
  const lines = [
    `Sweep ranking (single-object rate averaged over ${sizes.join(', ')} px; sharpness ratio = asg / cutdiffusion, worst size; margin ${margin}):`,
    '',
    '| setting | mean single-object rate | one object, any shape | worst sharpness ratio | within margin |',
    '| --- | ---: | ---: | ---: | --- |',
    ...[...rows].sort((a, b) => b.rate - a.rate).map((r) =>
      `| ${r.label} | ${(100 * r.rate).toFixed(0)} % | ${(100 * r.oneObjectRate).toFixed(0)} % | ${r.minSharpnessRatio?.toFixed(2) ?? '-'} | ${r.sharpEnough ? 'yes' : 'no'} |`),
    '',
    best ? `Recommended: ${best.label} (${(100 * best.rate).toFixed(0)} % single-object, sharpness >= ${best.minSharpnessRatio!.toFixed(2)} x cutdiffusion)`
      : `No setting keeps sharpness within ${margin * 100} % of cutdiffusion at every size.`,
  ];
  return { margin, best: best?.label ?? null, rows, text: lines.join('\n') };
}

main().catch(fail);
