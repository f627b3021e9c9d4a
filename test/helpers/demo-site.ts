/**
 * The demo page as a static site, for the browser engine test and scripts/browser-check.ts: built by Vite from
 * demo/, served by a plain HTTP server with the cross-origin isolation headers a static host would send; model
 * files are marked not cacheable by HTTP, so a load that makes no model request can only have used Cache Storage.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BrowserContext, Page } from 'playwright-core';
import sharp from 'sharp';
import { build } from 'vite';
import type { RgbImage } from '../../src/core/image.ts';
import type { GenerationMetadata } from '../../src/core/metadata.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const TYPES: Record<string, string> = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json',
};

/** The headers that make the page cross-origin isolated (WebAssembly threads). */
export const ISOLATION = { 'Cross-Origin-Opener-Policy': 'same-origin', 'Cross-Origin-Embedder-Policy': 'require-corp' } as const;

export async function buildDemoSite(outDir: string): Promise<void> {
  await build({ configFile: path.join(ROOT, 'demo', 'vite.config.ts'), logLevel: 'warn', build: { outDir, emptyOutDir: true } });
}

export interface StaticSite {
  url: string;
  /** Paths requested so far. */
  served: string[];
  close(): Promise<void>;
}

/** Answers a request itself (true) or leaves it to the static files (false); for tests that inject faults. */
export type SiteRoute = (url: string, res: http.ServerResponse) => boolean;

export async function serveSite(dir: string, route?: SiteRoute): Promise<StaticSite> {
  const served: string[] = [];
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent((req.url ?? '/').split('?')[0]!);
    served.push(url);
    if (route?.(url, res)) return;
    const file = path.join(dir, url.endsWith('/') ? `${url}index.html` : url);
    if (!file.startsWith(dir) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream',
      'Content-Length': fs.statSync(file).size,
      ...ISOLATION,
      ...(url.includes('/models/') ? { 'Cache-Control': 'no-store' } : {}),
    });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const a = server.address();
  return {
    url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/`,
    served,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

export async function rgbOfPng(png: Uint8Array): Promise<RgbImage> {
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 3) throw new Error(`rgbOfPng: ${info.channels} channels`);
  return { data: new Uint8Array(data), width: info.width, height: info.height };
}

/** Per-value differences of two RGB images: mean and max in levels, PSNR in dB, and how many values differ. */
export function compareRgb(a: RgbImage, b: RgbImage): { meanAbs: number; maxAbs: number; psnr: number; differing: number } {
  if (a.width !== b.width || a.height !== b.height) throw new Error(`compareRgb: ${a.width}x${a.height} against ${b.width}x${b.height}`);
  let sum = 0;
  let sq = 0;
  let max = 0;
  let differing = 0;
  for (let i = 0; i < a.data.length; i++) {
    const d = Math.abs(a.data[i]! - b.data[i]!);
    sum += d;
    sq += d * d;
    if (d > max) max = d;
    if (d > 0) differing++;
  }
  const mse = sq / a.data.length;
  return { meanAbs: sum / a.data.length, maxAbs: max, psnr: mse === 0 ? Infinity : 10 * Math.log10((255 * 255) / mse), differing };
}

/** An AsgdError as a page hands it over (its fields, as plain values). */
export interface PageError {
  kind?: string;
  parameter?: string;
  expected?: string;
  received?: string;
  hint?: string;
  message?: string;
}

export interface OpenedDemo {
  page: Page;
  /** Console errors and uncaught exceptions. */
  errors: string[];
  /** Requests the page made for model files. */
  modelRequests: string[];
}

/** Opens the demo (query: its parameters) in `context` and waits until the model is loaded. */
export async function openDemo(context: BrowserContext, siteUrl: string, query: string, timeout = 180_000): Promise<OpenedDemo> {
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
  await page.goto(`${siteUrl}?${query}`);
  await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout });
  const state = await page.getAttribute('body', 'data-state');
  if (state !== 'ready') throw new Error(`The demo did not load the model: ${await page.textContent('#status')}`);
  return { page, errors, modelRequests };
}

export interface DemoSettings {
  prompt: string;
  width: number;
  height: number;
  seed: number;
  steps: number;
  method?: string;
}

export interface DemoResult {
  png: Buffer;
  metadata: GenerationMetadata;
  totalMs: number;
  /** Per worker: the tasks it ran (a unit, or one of its CFG halves). */
  stats: { label: string; tasks: number }[];
  /** The generation's units (WebGenerateResult.unetEvaluations). */
  unetEvaluations: number;
  /** How the pipeline splits units into CFG halves (WebModelInfo.splitCfg). */
  splitCfg: string;
}

/** Fills the demo's form, generates, and reads the result the page exposes (window.asgdDemo). */
export async function generateOnDemo(page: Page, s: DemoSettings, timeout = 120_000): Promise<DemoResult> {
  await page.fill('[name="prompt"]', s.prompt);
  await page.selectOption('[name="size"]', `${s.width}x${s.height}`);
  await page.selectOption('[name="method"]', s.method ?? 'asg');
  await page.fill('[name="steps"]', String(s.steps));
  await page.fill('[name="seed"]', String(s.seed));
  await page.click('#generate');
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout });
  if ((await page.getAttribute('body', 'data-state')) !== 'done') throw new Error(`The demo failed: ${await page.textContent('#status')}`);
  const r = (await page.evaluate(`(() => {
    const d = window.asgdDemo;
    return { png: Array.from(d.result.png), metadata: d.result.metadata, totalMs: d.result.timings.totalMs, stats: d.pipeline.deviceStats, unetEvaluations: d.result.unetEvaluations, splitCfg: d.pipeline.info.splitCfg };
  })()`)) as Omit<DemoResult, 'png'> & { png: number[] };
  return { ...r, png: Buffer.from(r.png) };
}

/** Generates through the page's pipeline object (window.asgdDemo.pipeline), for settings the form does not offer. */
export async function generateOnPipeline(page: Page, params: Record<string, unknown>): Promise<{ png: Buffer; warnings: string[]; decodeMs: number }> {
  const r = (await page.evaluate(`(async () => {
    const seen = [];
    const r = await window.asgdDemo.pipeline.generate(${JSON.stringify(params)}, { onWarning: (m) => seen.push(m) });
    if (JSON.stringify(seen) !== JSON.stringify(r.warnings)) throw new Error('onWarning and warnings differ: ' + JSON.stringify([seen, r.warnings]));
    return { png: Array.from(r.png), warnings: r.warnings, decodeMs: r.timings.decodeMs };
  })()`)) as { png: number[]; warnings: string[]; decodeMs: number };
  return { ...r, png: Buffer.from(r.png) };
}
