/**
 * `npm run bench:web-large-unet -- --unet DIR [--precision float16|native] [--provider wasm|webgpu] [--out JSON]`:
 * a UNet export of real size (DIR holds its model.onnx, model.onnx_data and config.json, e.g. the SD 1.5-sized float32
 * export of `python3 scripts/device/sd_models.py --model sd15 --no-time --dtype float32 --device cpu --out-dir D`)
 * loaded in Debian's Chromium through `loadWebPipeline`, in a model folder around it (the test fixture's tokenizer,
 * a text encoder 768 wide and a small VAE), served from this machine. A fresh profile on disk, as a visitor's browser
 * has; two loads: the first downloads (and with float16 converts and stores), the second reads the browser's storage.
 * Per load: when each file's download or read began and each session opened (ms from the load's start), the whole
 * load; Chromium's peak RSS (all its processes, sampled every 0.5 s); then one 512 px `direct` step, or the error it
 * gives. Prints a table and writes JSON.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { writeTinySdModel } from '../test/fixtures/tiny-sd.ts';
import { buildDemoSite, serveSite } from '../test/helpers/demo-site.ts';
import { BenchUsageError, benchCli, choiceArg } from './args.ts';

const USAGE = 'npm run bench:web-large-unet -- --unet DIR [--precision float16|native] [--provider wasm|webgpu] [--out JSON]';

const args = benchCli(USAGE, {
  options: { unet: { type: 'string' }, precision: { type: 'string' }, provider: { type: 'string' }, out: { type: 'string' } },
}, ({ values }) => {
  if (!values.unet) throw new BenchUsageError("--unet is required");
  return {
    unet: values.unet,
    precision: values.precision === undefined ? 'float16' : choiceArg('--precision', values.precision, ['float16', 'native'] as const),
    provider: values.provider === undefined ? 'wasm' : choiceArg('--provider', values.provider, ['wasm', 'webgpu'] as const),
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
  const load = async (generate: boolean) => (await page.evaluate(`(async () => {
    const { loadWebPipeline } = window.asgdDemo.web;
    const t0 = performance.now();
    const marks = {};
    let last = '';
    let pipe;
    try {
      pipe = await loadWebPipeline(${JSON.stringify(url)}, { ...${JSON.stringify(options)}, onProgress: (p) => {
        const key = p.phase === 'download' ? p.file + (p.fromStore ? ' (stored)' : '') : 'session ' + p.component;
        if (key !== last) { marks[key] = Math.round(performance.now() - t0); last = key; }
      } });
    } catch (e) {
      return { load: { ok: false, ms: performance.now() - t0, marks, message: e.message } };
    }
    const load = { ok: true, ms: performance.now() - t0, marks, notes: pipe.info.notes, unetFloat16: pipe.info.unetFloat16 };
    let step;
    if (${generate}) {
      const t1 = performance.now();
      try {
        const r = await pipe.generate({ prompt: 'a red circle', width: 512, height: 512, steps: 1, seed: 1, method: 'direct' });
        step = { ok: true, ms: performance.now() - t1, unetMs: r.timings.unetMs };
      } catch (e) {
        step = { ok: false, ms: performance.now() - t1, message: e.message };
      }
    }
    await pipe.close();
    return { load, step };
  })()`)) as { load: LoadReport; step?: { ok: boolean; ms: number; unetMs?: number; message?: string } };
  const first = await load(false);
  const second = await load(true);
  const result = {
    unet: args.unet, unetBytes, precision: args.precision, provider: args.provider, chromium: context.browser()?.version() ?? execFileSync('/usr/bin/chromium', ['--version']).toString().trim(),
    first: first.load, second: second.load, step: second.step, peakChromiumRssMiB: Math.round(peakMiB),
  };
  const rows = [['load', 'ms', 'UNet weights', 'UNet session opened at (ms)']];
  for (const [name, l] of [['first', first.load], ['second', second.load]] as const) {
    const weights = Object.keys(l.marks).find((k) => k.startsWith('unet/') && /\.data|onnx_data/.test(k)) ?? '-';
    rows.push([name, l.ok ? l.ms.toFixed(0) : `failed: ${l.message}`, weights, String(l.marks['session unet'] ?? '-')]);
  }
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  console.log(`one 512 px step: ${second.step?.ok ? `${second.step.ms.toFixed(0)} ms` : `failed: ${second.step?.message}`}`);
  console.log(`peak Chromium RSS ${Math.round(peakMiB)} MiB`);
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(args.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`wrote ${args.out}`);
} finally {
  clearInterval(sampler);
  await context.close();
  await served.close();
  fs.rmSync(work, { recursive: true, force: true });
}
