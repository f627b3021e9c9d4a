/**
 * `npm run bench:web-large-unet -- --unet DIR [--precision float16|native] [--provider wasm|webgpu] [--no-step] [--size 512] [--out JSON]`:
 * a UNet export of real size (DIR holds its model.onnx, model.onnx_data and config.json, e.g. the SD 1.5-sized float32
 * export of `python3 scripts/device/sd_models.py --model sd15 --no-time --dtype float32 --device cpu --out-dir D`)
 * loaded in Debian's Chromium through `loadWebPipeline`, in a model folder around it (the test fixture's tokenizer,
 * a text encoder 768 wide and a small VAE), served from this machine. A fresh profile on disk, as a visitor's browser
 * has; two loads: the first downloads (and with float16 converts and stores), the second reads the browser's storage.
 * Per load: when each file's download or read began and each session opened (ms from the load's start), the whole
 * load; the page's long tasks (the Long Tasks API: main-thread tasks over 50 ms, which delay its input and drawing):
 * their count, total and longest, and which phase the longest fell in; Chromium's peak RSS (all its processes, sampled
 * every 0.5 s, per load); then one `direct` step at 512 px or `--size` (not with `--no-step`), or the error it gives. Prints a table and writes
 * JSON.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { writeTinySdModel } from '../test/fixtures/tiny-sd.ts';
import { buildDemoSite, serveSite } from '../test/helpers/demo-site.ts';
import { BenchUsageError, benchCli, choiceArg, intArg } from './args.ts';

const USAGE = 'npm run bench:web-large-unet -- --unet DIR [--precision float16|native] [--provider wasm|webgpu] [--no-step] [--size 512] [--out JSON]';

const args = benchCli(USAGE, {
  options: { unet: { type: 'string' }, precision: { type: 'string' }, provider: { type: 'string' }, 'no-step': { type: 'boolean' }, size: { type: 'string' }, out: { type: 'string' } },
}, ({ values }) => {
  if (!values.unet) throw new BenchUsageError("--unet is required");
  return {
    unet: values.unet,
    precision: values.precision === undefined ? 'float16' : choiceArg('--precision', values.precision, ['float16', 'native'] as const),
    provider: values.provider === undefined ? 'wasm' : choiceArg('--provider', values.provider, ['wasm', 'webgpu'] as const),
    step: values['no-step'] !== true,
    size: values.size === undefined ? 512 : intArg('--size', values.size, 64),
    out: values.out ?? 'bench/results/web-large-unet.json',
  };
});

interface LoadReport {
  ok: boolean;
  ms: number;
  /** ms from the load's start at which each file's download (or read from storage) and each session began. */
  marks: Record<string, number>;
  notes?: string[];
  unetFloat16?: unknown;
  message?: string;
  longTasks: LongTasks;
}

/** The page's main-thread tasks over 50 ms during a load. */
interface LongTasks {
  count: number;
  totalMs: number;
  maxMs: number;
  /** The mark (file or session) that was last before the longest task began. */
  maxDuring: string;
  /** The tasks of 100 ms or more: when each began (ms from the load's start), how long it ran, the mark before it. */
  longest: { at: number; ms: number; during: string }[];
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'web-large-unet-'));
const site = path.join(work, 'site');
await buildDemoSite(site);
const folder = path.join(site, 'models', 'large');
await writeTinySdModel(folder, { text: { hidden: 768 } });
fs.rmSync(path.join(folder, 'unet'), { recursive: true });
fs.mkdirSync(path.join(folder, 'unet'));
for (const f of fs.readdirSync(args.unet)) {
  if (f.includes('.asgd-')) continue;
  // A hard link where the file system allows (the weights are gigabytes), else a copy.
  try {
    fs.linkSync(path.join(args.unet, f), path.join(folder, 'unet', f));
  } catch {
    fs.copyFileSync(path.join(args.unet, f), path.join(folder, 'unet', f));
  }
}
const unetBytes = fs.readdirSync(path.join(folder, 'unet')).reduce((n, f) => n + fs.statSync(path.join(folder, 'unet', f)).size, 0);
const served = await serveSite(site);
const context = await chromium.launchPersistentContext(path.join(work, 'profile'), {
  executablePath: '/usr/bin/chromium', headless: true, args: ['--headless', '--no-sandbox', '--no-first-run', ...(args.provider === 'webgpu' ? ['--enable-unsafe-webgpu'] : ['--disable-gpu'])],
});
let peakMiB = 0;
const sampler = setInterval(() => {
  try {
    const kb = execFileSync('ps', ['-C', 'chromium', '-o', 'rss=']).toString().split('\n').reduce((n, l) => n + (Number(l.trim()) || 0), 0);
    peakMiB = Math.max(peakMiB, kb / 1024);
  } catch {
    // no Chromium process at this instant
  }
}, 500);
try {
  const page = context.pages()[0] ?? (await context.newPage());
  await page.goto(`${served.url}?model=${encodeURIComponent('http://[bad')}`);
  await page.waitForSelector('body[data-state="error"]');
  const options = { provider: args.provider, unetPrecision: args.precision, attentionProbe: false };
  const url = `${served.url}models/large/`;
  await page.evaluate(`(() => {
    window.longTasks = [];
    new PerformanceObserver((list) => { for (const e of list.getEntries()) window.longTasks.push({ start: e.startTime, ms: e.duration }); }).observe({ type: 'longtask' });
  })()`);
  const load = async (generate: boolean) => (await page.evaluate(`(async () => {
    const { loadWebPipeline } = window.asgdDemo.web;
    const t0 = performance.now();
    const longTasks = () => {
      const mine = window.longTasks.filter((t) => t.start >= t0);
      window.longTasks = [];
      const max = mine.reduce((m, t) => (t.ms > m.ms ? t : m), { start: t0, ms: 0 });
      const during = (start) => Object.entries(marks).filter(([, ms]) => ms <= start - t0).sort((a, b) => b[1] - a[1])[0]?.[0] ?? 'start';
      const longest = mine.filter((t) => t.ms >= 100).map((t) => ({ at: Math.round(t.start - t0), ms: Math.round(t.ms), during: during(t.start) }));
      return { count: mine.length, totalMs: Math.round(mine.reduce((n, t) => n + t.ms, 0)), maxMs: Math.round(max.ms), maxDuring: during(max.start), longest };
    };
    const marks = {};
    let last = '';
    let pipe;
    try {
      pipe = await loadWebPipeline(${JSON.stringify(url)}, { ...${JSON.stringify(options)}, onProgress: (p) => {
        const key = p.phase === 'download' ? p.file + (p.fromStore ? ' (stored)' : '') : 'session ' + p.component;
        if (key !== last) { marks[key] = Math.round(performance.now() - t0); last = key; }
      } });
    } catch (e) {
      return { load: { ok: false, ms: performance.now() - t0, marks, message: e.message, longTasks: longTasks() } };
    }
    const load = { ok: true, ms: performance.now() - t0, marks, notes: pipe.info.notes, unetFloat16: pipe.info.unetFloat16, longTasks: longTasks() };
    let step;
    if (${generate}) {
      const t1 = performance.now();
      try {
        const r = await pipe.generate({ prompt: 'a red circle', width: ${args.size}, height: ${args.size}, steps: 1, seed: 1, method: 'direct' });
        step = { ok: true, ms: performance.now() - t1, unetMs: r.timings.unetMs, warnings: r.warnings };
      } catch (e) {
        step = { ok: false, ms: performance.now() - t1, message: e.message };
      }
    }
    await pipe.close();
    return { load, step };
  })()`)) as { load: LoadReport; step?: { ok: boolean; ms: number; unetMs?: number; warnings?: string[]; message?: string } };
  // Chromium's peak RSS during each load (the sampler's peak, taken and reset after it).
  const peakOf = async <T>(run: () => Promise<T>): Promise<T & { peakRssMiB: number }> => {
    peakMiB = 0;
    const r = await run();
    return { ...r, peakRssMiB: Math.round(peakMiB) };
  };
  const first = await peakOf(() => load(false));
  const second = await peakOf(() => load(args.step));
  const result = {
    unet: args.unet, unetBytes, precision: args.precision, provider: args.provider, chromium: context.browser()?.version() ?? execFileSync('/usr/bin/chromium', ['--version']).toString().trim(),
    first: { ...first.load, peakRssMiB: first.peakRssMiB }, second: { ...second.load, peakRssMiB: second.peakRssMiB }, step: second.step,
    peakChromiumRssMiB: Math.max(first.peakRssMiB, second.peakRssMiB),
  };
  const rows = [['load', 'ms', 'UNet weights', 'UNet session opened at (ms)', 'long tasks', 'their total ms', 'longest ms', 'longest during', 'peak RSS MiB']];
  for (const [name, l, peak] of [['first', first.load, first.peakRssMiB], ['second', second.load, second.peakRssMiB]] as const) {
    const weights = Object.keys(l.marks).find((k) => k.startsWith('unet/') && /\.data|onnx_data/.test(k)) ?? '-';
    const t = l.longTasks;
    rows.push([name, l.ok ? l.ms.toFixed(0) : `failed: ${l.message}`, weights, String(l.marks['session unet'] ?? '-'), String(t.count), String(t.totalMs), String(t.maxMs), t.maxDuring, String(peak)]);
  }
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  if (second.step) console.log(`one ${args.size} px step: ${second.step.ok ? `${second.step.ms.toFixed(0)} ms (UNet ${second.step.unetMs?.toFixed(0)} ms), warnings: ${JSON.stringify(second.step.warnings ?? [])}` : `failed: ${second.step.message}`}`);
  console.log(`peak Chromium RSS ${result.peakChromiumRssMiB} MiB`);
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${args.out}`);
} finally {
  clearInterval(sampler);
  await context.close();
  await served.close();
  fs.rmSync(work, { recursive: true, force: true });
}
