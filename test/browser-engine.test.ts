/**
 * The engine in a real browser: the demo page (demo/, built by Vite as for a static host) in Debian's Chromium
 * (/usr/bin/chromium, scripts/setup-browser.sh) driven by playwright-core, running the shipped model on ONNX
 * Runtime Web's WebAssembly provider. Images are compared with the Node CPU pipeline's, made in this process.
 * Few steps keep it short (the machine is shared).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import sharp from 'sharp';
import { build } from 'vite';
import { loadPipeline, type Pipeline } from '../src/node/pipeline.ts';
import { TOOL_VERSION as NODE_TOOL_VERSION } from '../src/node/version.ts';
import { TOOL_VERSION as WEB_TOOL_VERSION } from '../src/browser/version.ts';
import { readPngTextChunks } from '../src/core/png-chunks.ts';
import { JSON_KEY, TEXT_KEY, formatParametersText, type GenerationMetadata } from '../src/core/metadata.ts';
import type { RgbImage } from '../src/core/image.ts';
import { tempDir } from './helpers/models.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const MODEL = path.join(ROOT, 'models', 'shapes-128');
const PROMPT = 'a red circle on a blue background';
const STEPS = 4;

/**
 * Tolerances against the Node CPU image (8-bit RGB levels): ONNX Runtime's WebAssembly kernels (SIMD128) round
 * differently from the native CPU kernels (AVX2/FMA), and denoising carries the differences through the steps.
 * Measured (docs/browser.md): max 1 level, mean 0.001 at 128 and 256 px; the bound leaves one level of margin.
 */
const WASM_TOLERANCE = { meanAbs: 0.05, maxAbs: 2 };
/** The page's own JavaScript (every .js the build emits, ONNX Runtime's glue included; its .wasm excluded), gzip -9. */
const BUNDLE_BUDGET = 250_000;

let siteDir: string;
let server: http.Server;
let baseUrl: string;
let browser: Browser;
let node: Pipeline;
/** Requests the server saw, by path. */
const served: string[] = [];
const closers: (() => Promise<unknown>)[] = [];

const TYPES: Record<string, string> = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json',
};

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `The browser tests need Debian's Chromium at ${CHROMIUM}: run \`npm run setup:browser\` as root`);
  siteDir = tempDir('demo-site');
  await build({ configFile: path.join(ROOT, 'demo', 'vite.config.ts'), logLevel: 'warn', build: { outDir: siteDir, emptyOutDir: true } });
  // A plain static host with the two cross-origin isolation headers; model files are not HTTP-cacheable, so a
  // second load that makes no request can only have read the browser's Cache Storage.
  server = http.createServer((req, res) => {
    const url = decodeURIComponent((req.url ?? '/').split('?')[0]!);
    served.push(url);
    const file = path.join(siteDir, url.endsWith('/') ? `${url}index.html` : url);
    if (!file.startsWith(siteDir) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'Content-Length': fs.statSync(file).size,
      'Cross-Origin-Opener-Policy': 'same-origin',
      'Cross-Origin-Embedder-Policy': 'require-corp',
      ...(url.includes('/models/') ? { 'Cache-Control': 'no-store' } : {}),
    });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const a = server.address();
  baseUrl = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/`;
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  node = await loadPipeline(MODEL, { devices: 'cpu' });
});

after(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await browser?.close();
  await node?.close();
  await new Promise((resolve) => server?.close(resolve));
});

interface Opened {
  page: Page;
  errors: string[];
  modelRequests: string[];
}

async function newContext(): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  closers.push(() => context.close());
  return context;
}

/** Opens the demo in `context` and waits until the model is loaded. */
async function openDemo(context: BrowserContext, query: string): Promise<Opened> {
  const page = await context.newPage();
  const errors: string[] = [];
  const modelRequests: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('request', (r) => {
    if (new URL(r.url()).pathname.includes('/models/')) modelRequests.push(r.url());
  });
  await page.goto(`${baseUrl}?${query}`);
  await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 180_000 });
  assert.equal(await page.getAttribute('body', 'data-state'), 'ready', `the model loaded: ${await page.textContent('#status')}`);
  return { page, errors, modelRequests };
}

interface PageResult {
  png: Buffer;
  metadata: GenerationMetadata;
  totalMs: number;
  stats: { label: string; tasks: number }[];
}

/** Fills the form, generates, and reads the result the page exposes. */
async function generateOnPage(page: Page, s: { width: number; height: number; seed: number; steps?: number; method?: string }): Promise<PageResult> {
  await page.fill('[name="prompt"]', PROMPT);
  await page.selectOption('[name="size"]', `${s.width}x${s.height}`);
  await page.selectOption('[name="method"]', s.method ?? 'asg');
  await page.fill('[name="steps"]', String(s.steps ?? STEPS));
  await page.fill('[name="seed"]', String(s.seed));
  await page.click('#generate');
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 120_000 });
  assert.equal(await page.getAttribute('body', 'data-state'), 'done', `generated: ${await page.textContent('#status')}`);
  const r = (await page.evaluate(`(() => {
    const d = window.asgdDemo;
    return { png: Array.from(d.result.png), metadata: d.result.metadata, totalMs: d.result.timings.totalMs, stats: d.pipeline.deviceStats };
  })()`)) as { png: number[]; metadata: GenerationMetadata; totalMs: number; stats: { label: string; tasks: number }[] };
  return { ...r, png: Buffer.from(r.png) };
}

async function rgbOf(png: Buffer): Promise<RgbImage> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  assert.equal(info.channels, 3);
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}

function compare(a: RgbImage, b: RgbImage): { meanAbs: number; maxAbs: number; psnr: number } {
  assert.equal(a.width, b.width);
  assert.equal(a.height, b.height);
  let sum = 0;
  let sq = 0;
  let max = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = Math.abs(a.data[i]! - b.data[i]!);
    sum += d;
    sq += d * d;
    if (d > max) max = d;
  }
  const mse = sq / a.data.length;
  return { meanAbs: sum / a.data.length, maxAbs: max, psnr: mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse) };
}

async function matchesNode(r: PageResult, s: { width: number; height: number; seed: number }): Promise<void> {
  const t = performance.now();
  const ref = await node.generate({ prompt: PROMPT, width: s.width, height: s.height, seed: s.seed, steps: STEPS, method: 'asg' });
  const nodeMs = performance.now() - t;
  const web = await rgbOf(r.png);
  const d = compare(web, ref.image);
  console.log(`# ${s.width}x${s.height} asg ${STEPS} steps: browser (wasm) ${r.totalMs.toFixed(0)} ms, node cpu ${nodeMs.toFixed(0)} ms; mean |diff| ${d.meanAbs.toFixed(3)}, max |diff| ${d.maxAbs}, PSNR ${d.psnr.toFixed(1)} dB`);
  assert.ok(d.meanAbs <= WASM_TOLERANCE.meanAbs && d.maxAbs <= WASM_TOLERANCE.maxAbs, `within ${JSON.stringify(WASM_TOLERANCE)}: ${JSON.stringify(d)}`);
  // The same metadata as Node's, in the same chunks.
  assert.deepEqual(r.metadata, ref.metadata);
  const chunks = readPngTextChunks(new Uint8Array(r.png));
  assert.equal(chunks[TEXT_KEY], formatParametersText(ref.metadata));
  assert.deepEqual(JSON.parse(chunks[JSON_KEY]!), ref.metadata);
}

test('the browser entry writes the same tool version as Node', () => {
  assert.equal(WEB_TOOL_VERSION, NODE_TOOL_VERSION);
});

test('the page\'s JavaScript fits the budget (without ONNX Runtime\'s WebAssembly)', () => {
  const assets = path.join(siteDir, 'assets');
  const js = fs.readdirSync(assets).filter((f) => f.endsWith('.js'));
  const sizes = js.map((f) => ({ f, raw: fs.statSync(path.join(assets, f)).size, gz: gzipSync(fs.readFileSync(path.join(assets, f)), { level: 9 }).length }));
  const total = sizes.reduce((n, x) => n + x.gz, 0);
  console.log(`# page JavaScript: ${sizes.map((x) => `${x.f} ${x.raw} B (${x.gz} B gz)`).join(', ')}; total ${total} B gzip`);
  assert.ok(total <= BUNDLE_BUDGET, `${total} B gzip, budget ${BUNDLE_BUDGET}`);
  assert.ok(fs.readdirSync(assets).some((f) => f.endsWith('.wasm')), 'ONNX Runtime\'s .wasm is in the build');
  assert.ok(fs.existsSync(path.join(siteDir, 'models', 'shapes-128', 'unet', 'model.onnx')), 'the shipped model is in the build');
});

// One context for the WASM tests: its Cache Storage keeps the model between the two page loads.
let context: BrowserContext;
let single: Opened;
const images: Record<string, PageResult> = {};

test('WASM: the page loads with no console error and makes the 128 px and 256 px asg images as Node does', async () => {
  context = await newContext();
  single = await openDemo(context, 'provider=wasm&workers=1');
  assert.ok(single.modelRequests.some((u) => u.endsWith('/unet/model.onnx')), 'the first load downloads the model');
  images.r128 = await generateOnPage(single.page, { width: 128, height: 128, seed: 7 });
  await matchesNode(images.r128, { width: 128, height: 128, seed: 7 });
  images.r256 = await generateOnPage(single.page, { width: 256, height: 256, seed: 11 });
  await matchesNode(images.r256, { width: 256, height: 256, seed: 11 });
  assert.deepEqual(single.errors, []);
});

test('WASM: cancel stops a generation, and the page generates again afterwards', async () => {
  const { page, errors } = single;
  await page.fill('[name="prompt"]', PROMPT);
  await page.selectOption('[name="size"]', '256x256');
  await page.fill('[name="steps"]', '40');
  await page.click('#generate');
  await page.waitForFunction(`/Step [1-9]/.test(document.querySelector('#status').textContent)`, undefined, { timeout: 60_000 });
  const t = performance.now();
  await page.click('#cancel');
  await page.waitForSelector('body[data-state="cancelled"]', { timeout: 20_000 });
  console.log(`# cancelled after ${(performance.now() - t).toFixed(0)} ms`);
  const r = await generateOnPage(page, { width: 128, height: 128, seed: 7 });
  assert.ok(r.png.equals(images.r128!.png), 'the same image as before the cancelled run');
  assert.deepEqual(errors, []);
  await page.close();
});

test('WASM: the second load reads the stored model (no model request), and two workers give the same image as one', async () => {
  const before = served.length;
  const two = await openDemo(context, 'provider=wasm&workers=2');
  assert.deepEqual(two.modelRequests, [], 'no model request on the second load');
  assert.deepEqual(served.slice(before).filter((u) => u.includes('/models/')), []);
  const r = await generateOnPage(two.page, { width: 256, height: 256, seed: 11 });
  assert.equal(r.stats.length, 2);
  assert.ok(r.stats.every((s) => s.tasks > 0), `both workers ran units: ${JSON.stringify(r.stats)}`);
  const d = compare(await rgbOf(r.png), await rgbOf(images.r256!.png));
  assert.equal(d.maxAbs, 0, `identical pixels: ${JSON.stringify(d)}`);
  assert.ok(r.png.equals(images.r256!.png), 'identical files');
  assert.deepEqual(two.errors, []);
});
