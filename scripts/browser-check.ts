/**
 * The browser engine on a provider of your choice (WebGPU on a machine with a GPU; see docs/browser.md): builds the
 * demo, serves it with the isolation headers, opens it in Chromium, generates asg images and compares each with the
 * Node CPU image of the same settings. Prints one JSON line per image (sizes, timings, differences).
 *
 *   npm run check:browser -- --provider webgpu --sizes 128,256 --steps 4
 *   npm run check:browser -- --provider webgpu --flags "--enable-unsafe-webgpu --use-angle=vulkan --enable-features=Vulkan"
 *
 * Options: --provider (webgpu | wasm; default webgpu), --sizes (comma-separated square sides; default 128,256),
 * --steps (default 4), --seed (default 7), --workers (default 1), --chromium (default /usr/bin/chromium),
 * --flags (extra Chromium flags; default --enable-unsafe-webgpu), --timeout (seconds per image; default 1800).
 * Tiled VAE decoding: --vae-tile-size (latent pixels; tiles every image, comparing the decode time, the difference
 * from Node's tiled decode of the same settings and from Node's per-tile-statistics decode), --vae-overlap (default
 * 4), --vae-stats (comma-separated modes; default exact):
 *
 *   npm run check:browser -- --provider wasm --sizes 256,512 --vae-tile-size 16 --vae-stats exact,estimate,off
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { chromium } from 'playwright-core';
import { loadPipeline } from '../src/node/pipeline.ts';
import { ROOT, buildDemoSite, compareRgb, generateOnDemo, generateOnPipeline, openDemo, rgbOfPng, serveSite } from '../test/helpers/demo-site.ts';

const { values: o } = parseArgs({
  options: {
    provider: { type: 'string', default: 'webgpu' },
    sizes: { type: 'string', default: '128,256' },
    steps: { type: 'string', default: '4' },
    seed: { type: 'string', default: '7' },
    workers: { type: 'string', default: '1' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    flags: { type: 'string', default: '--enable-unsafe-webgpu' },
    timeout: { type: 'string', default: '1800' },
    'vae-tile-size': { type: 'string' },
    'vae-overlap': { type: 'string', default: '4' },
    'vae-stats': { type: 'string', default: 'exact' },
  },
});
if (o.provider !== 'webgpu' && o.provider !== 'wasm') throw new Error(`--provider: expected webgpu or wasm, received ${JSON.stringify(o.provider)}`);
const sizes = o.sizes.split(',').map(Number);
if (sizes.some((s) => !Number.isInteger(s) || s % 8 !== 0)) throw new Error(`--sizes: expected multiples of 8, received ${JSON.stringify(o.sizes)}`);
const steps = Number(o.steps);
const seed = Number(o.seed);
const timeoutMs = Number(o.timeout) * 1000;
const prompt = 'a red circle on a blue background';
const vaeTile = o['vae-tile-size'] === undefined ? undefined : Number(o['vae-tile-size']);
if (vaeTile !== undefined && !(Number.isInteger(vaeTile) && vaeTile >= 8)) throw new Error(`--vae-tile-size: expected an integer >= 8 (latent pixels), received ${JSON.stringify(o['vae-tile-size'])}`);
const vaeStats = o['vae-stats'].split(',') as ('exact' | 'estimate' | 'off')[];
if (vaeStats.some((m) => !['exact', 'estimate', 'off'].includes(m))) throw new Error(`--vae-stats: expected exact, estimate or off (comma-separated), received ${JSON.stringify(o['vae-stats'])}`);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-browser-check-'));
await buildDemoSite(dir);
const site = await serveSite(dir);
const browser = await chromium.launch({ executablePath: o.chromium, headless: true, args: ['--headless', '--no-sandbox', ...o.flags.split(' ').filter(Boolean)] });
const node = await loadPipeline(path.join(ROOT, 'models', 'shapes-128'), { devices: 'cpu' });
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  const adapter = await page.goto(site.url).then(() => page.evaluate(`(async () => {
    const a = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    return a ? { vendor: a.info.vendor, architecture: a.info.architecture, description: a.info.description, fallback: a.info.isFallbackAdapter } : null;
  })()`));
  console.log(JSON.stringify({ chromium: browser.version(), adapter }));
  await page.close();
  const t = performance.now();
  const demo = await openDemo(context, site.url, `provider=${o.provider}&workers=${o.workers}&store=0`, timeoutMs);
  console.log(JSON.stringify({ provider: o.provider, loadMs: Math.round(performance.now() - t) }));
  for (const size of vaeTile === undefined ? [] : sizes) {
    const tileSize = vaeTile!;
    for (const stats of vaeStats) {
      const vae = { tiling: 'on', tileSize, overlap: Number(o['vae-overlap']), stats } as const;
      const params = { prompt, width: size, height: size, seed, steps, method: 'asg' as const, vae };
      const r = await generateOnPipeline(demo.page, params);
      const web = await rgbOfPng(r.png);
      const ref = await node.generate(params);
      const perTile = await node.generate({ ...params, vae: { ...vae, stats: 'off' } });
      const d = compareRgb(web, ref.image);
      const off = compareRgb(web, perTile.image);
      console.log(JSON.stringify({
        provider: o.provider, size, steps, seed, vae, browserDecodeMs: Math.round(r.decodeMs), nodeDecodeMs: Math.round(ref.timings.decodeMs),
        ...d, perTileStats: { meanAbs: off.meanAbs, maxAbs: off.maxAbs }, vaeWarnings: r.warnings.filter((m) => /VAE/.test(m)),
      }));
    }
  }
  for (const size of vaeTile === undefined ? sizes : []) {
    const r = await generateOnDemo(demo.page, { prompt, width: size, height: size, seed, steps }, timeoutMs);
    const ref = await node.generate({ prompt, width: size, height: size, seed, steps, method: 'asg' });
    const d = compareRgb(await rgbOfPng(r.png), ref.image);
    console.log(JSON.stringify({ provider: o.provider, size, steps, seed, browserMs: Math.round(r.totalMs), nodeMs: Math.round(ref.timings.totalMs), ...d }));
  }
  if (demo.errors.length > 0) console.log(JSON.stringify({ consoleErrors: demo.errors }));
} finally {
  await browser.close();
  await node.close();
  await site.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
