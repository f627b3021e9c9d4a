/**
 * Loading in a real browser, the failures around it: options checked before any request, a bad answer of the
 * server not kept in Cache Storage, cancelling a load (during a download, while the workers open sessions), no
 * callback after a generation settled, ONNX Runtime's own files missing, the provider 'auto' on a fallback WebGPU
 * adapter, and the demo page's form with a size it does not offer. The demo site (demo/, built by Vite) is served
 * with model folders whose answers the test changes; the library is driven through the page
 * (window.asgdDemo.web), in Debian's Chromium with playwright-core, as in test/browser-engine.test.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { loadPipeline } from '../src/node/pipeline.ts';
import { ISOLATION, ROOT, buildDemoSite, compareRgb, rgbOfPng, serveSite, type PageError, type StaticSite } from './helpers/demo-site.ts';
import { tempDir } from './helpers/models.ts';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
/** WebGPU on: headless Chromium then offers SwiftShader, a fallback adapter (docs/browser.md). */
const WEBGPU_FLAGS = ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const MODEL = path.join(ROOT, 'models', 'shapes-128');

/** What the "flaky" model folder answers: a maintenance page for every file, for the UNet only, a UNet that is no model, or the model. */
type Flaky = 'html' | 'unet-html' | 'unet-garbage' | 'ok';
let flaky: Flaky = 'ok';
/** Whether the "partial" model folder (the shipped model) answers 404 for its scheduler config, an optional file. */
let partialHidden = true;
const PARTIAL_FILE = 'scheduler/scheduler_config.json';
const MAINTENANCE = '<!doctype html><html><body><p>Down for maintenance</p></body></html>';

let site: StaticSite;
/** The built site's files under models/. */
let siteFiles: string[] = [];
let browser: Browser;
let lib: Page;

function modelFile(res: import('node:http').ServerResponse, rel: string, slow: boolean): boolean {
  const file = path.join(MODEL, rel);
  if (!file.startsWith(MODEL + path.sep) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(404, ISOLATION).end();
    return true;
  }
  const bytes = fs.readFileSync(file);
  res.writeHead(200, { 'Content-Type': file.endsWith('.json') ? 'application/json' : 'application/octet-stream', 'Content-Length': bytes.length, 'Cache-Control': 'no-store', ...ISOLATION });
  if (!slow) {
    res.end(bytes);
    return true;
  }
  let at = 0;
  const tick = () => {
    if (res.destroyed) return;
    if (at >= bytes.length) return void res.end();
    res.write(bytes.subarray(at, (at += 65536)));
    setTimeout(tick, 100);
  };
  tick();
  return true;
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `The browser tests need Debian's Chromium at ${CHROMIUM}: run \`npm run setup:browser\` as root`);
  const dir = tempDir('load-site');
  // A graph the library derives beside a model (*.asgd-*) must not reach the static site: one is planted.
  const derived = path.join(MODEL, 'unet', 'model.asgd-site-check.onnx');
  fs.writeFileSync(derived, 'derived');
  try {
    await buildDemoSite(dir);
  } finally {
    fs.rmSync(derived, { force: true });
  }
  siteFiles = fs.readdirSync(path.join(dir, 'models'), { recursive: true }).map(String);
  site = await serveSite(dir, (url, res) => {
    const m = /^\/models\/(flaky|slow|partial)\/(.*)$/.exec(url);
    if (!m) return false;
    const [, variant, rel] = m as unknown as [string, string, string];
    if (variant === 'flaky' && (flaky === 'html' || (flaky === 'unet-html' && rel === 'unet/model.onnx'))) {
      res.writeHead(200, { 'Content-Type': 'text/html', ...ISOLATION }).end(MAINTENANCE);
      return true;
    }
    if (variant === 'flaky' && flaky === 'unet-garbage' && rel === 'unet/model.onnx') {
      // Starts like protobuf (field 1, varint), as a truncated or wrong .onnx would: only ONNX Runtime can tell.
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Cache-Control': 'no-store', ...ISOLATION }).end(Buffer.from([8, 7, ...Buffer.from('not a model at all')]));
      return true;
    }
    if (variant === 'partial' && partialHidden && rel === PARTIAL_FILE) {
      res.writeHead(404, ISOLATION).end();
      return true;
    }
    return modelFile(res, rel, variant === 'slow' && rel === 'unet/model.onnx');
  });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  lib = await libraryPage(browser);
});

after(async () => {
  await browser?.close();
  await site?.close();
});

/**
 * The demo page with a model URL it cannot parse (so it loads nothing and makes no request), and an in-page
 * helper that loads a pipeline with the library the page bundles, optionally aborting at the first UNet
 * download progress or the first session, and returns what happened.
 */
async function libraryPage(b: Browser): Promise<Page> {
  const page = await (await b.newContext()).newPage();
  await page.goto(`${site.url}?model=${encodeURIComponent('http://[bad')}`);
  await page.waitForSelector('body[data-state="error"]');
  await page.evaluate(`window.tryLoad = async (url, options, abortWhen) => {
    const { loadWebPipeline, AsgdError } = window.asgdDemo.web;
    const ctl = new AbortController();
    const o = { ...options };
    let abortedAt;
    if (abortWhen) {
      o.signal = ctl.signal;
      o.onProgress = (p) => {
        if (abortedAt !== undefined) return;
        const now = abortWhen === 'download' ? p.phase === 'download' && p.file === 'unet/model.onnx' && p.loaded > 0 && !p.fromStore : p.phase === 'session';
        if (now) { abortedAt = performance.now(); ctl.abort(); }
      };
    }
    try {
      const pipe = await loadWebPipeline(url, o);
      const info = pipe.info;
      await pipe.close();
      return { ok: true, provider: info.provider, notes: info.notes, fusion: info.attentionFusion, aborted: abortedAt !== undefined };
    } catch (e) {
      return { ok: false, asgd: e instanceof AsgdError, name: e.name, kind: e.kind, parameter: e.parameter, expected: e.expected, received: e.received, hint: e.hint, message: e.message,
        aborted: abortedAt !== undefined, msAfterAbort: abortedAt === undefined ? undefined : performance.now() - abortedAt };
    }
  }`);
  return page;
}

interface Outcome extends PageError {
  ok: boolean;
  provider?: string;
  notes?: string[];
  fusion?: { applied: boolean; layers: number; reason?: string; form?: string; formReason?: string; biasSplitGelus?: number; groupNorms?: number };
  asgd?: boolean;
  name?: string;
  aborted: boolean;
  msAfterAbort?: number;
}

/** Loads (and closes) a pipeline in the page; the model requests it made, by path. */
async function tryLoad(page: Page, model: string, options: Record<string, unknown>, abortWhen?: 'download' | 'session'): Promise<Outcome & { requests: string[] }> {
  const before = site.served.length;
  const r = (await page.evaluate(`window.tryLoad(${JSON.stringify(`${site.url}models/${model}/`)}, ${JSON.stringify(options)}, ${JSON.stringify(abortWhen ?? null)})`)) as Outcome;
  return { ...r, requests: site.served.slice(before).filter((u) => u.startsWith('/models/')) };
}

async function workersLeft(page: Page): Promise<number> {
  // A terminated worker leaves playwright's list when its close event arrives.
  for (let i = 0; i < 20 && page.workers().length > 0; i++) await new Promise((r) => setTimeout(r, 100));
  return page.workers().length;
}

const FAST = { provider: 'wasm', attentionProbe: false };

test('a bad answer of the server is not kept: once the server is fixed, the same URL loads', async () => {
  flaky = 'html';
  let r = await tryLoad(lib, 'flaky', FAST);
  assert.equal(r.ok, false);
  assert.equal(r.kind, 'model');
  assert.match(r.message!, /web page|HTML/, r.message);
  flaky = 'ok';
  r = await tryLoad(lib, 'flaky', FAST);
  assert.equal(r.ok, true, `after the fix: ${r.message}`);
  assert.ok(r.requests.includes('/models/flaky/model_index.json'), `model_index.json is downloaded again: ${JSON.stringify(r.requests)}`);

  assert.ok(((await lib.evaluate(`window.asgdDemo.web.clearStoredModel(${JSON.stringify(`${site.url}models/flaky/`)})`)) as number) > 0, 'the model was stored');
  flaky = 'unet-html';
  r = await tryLoad(lib, 'flaky', FAST);
  assert.equal(r.ok, false);
  assert.equal(r.kind, 'model');
  assert.match(r.message!, /unet\/model\.onnx/, r.message);
  assert.equal(await workersLeft(lib), 0, 'refused before any worker starts');
  flaky = 'ok';
  r = await tryLoad(lib, 'flaky', FAST);
  assert.equal(r.ok, true, `after the fix: ${r.message}`);
  assert.ok(r.requests.includes('/models/flaky/unet/model.onnx'), `the UNet is downloaded again: ${JSON.stringify(r.requests)}`);

  await lib.evaluate(`window.asgdDemo.web.clearStoredModel(${JSON.stringify(`${site.url}models/flaky/`)})`);
  flaky = 'unet-garbage';
  r = await tryLoad(lib, 'flaky', FAST);
  assert.equal(r.ok, false);
  assert.equal(r.parameter, 'unet', r.message);
  flaky = 'ok';
  r = await tryLoad(lib, 'flaky', FAST);
  assert.equal(r.ok, true, `after the fix: ${r.message}`);
  assert.ok(r.requests.includes('/models/flaky/unet/model.onnx'), `the UNet is downloaded again: ${JSON.stringify(r.requests)}`);
  assert.equal(await workersLeft(lib), 0);
});

test('a damaged copy in Cache Storage (e.g. stored by an earlier version) is downloaded again instead of failing', async () => {
  flaky = 'ok';
  const base = `${site.url}models/flaky/`;
  let r = await tryLoad(lib, 'flaky', FAST);
  assert.equal(r.ok, true, r.message);
  r = await tryLoad(lib, 'flaky', FAST);
  assert.deepEqual(r.requests, [], 'the model is stored');
  await lib.evaluate(`(async () => {
    const cache = await caches.open(window.asgdDemo.web.MODEL_CACHE);
    await cache.put(${JSON.stringify(`${base}model_index.json`)}, new Response(${JSON.stringify(MAINTENANCE)}, { headers: { 'content-type': 'text/html' } }));
    await cache.put(${JSON.stringify(`${base}unet/model.onnx`)}, new Response(new Uint8Array([8, 7, 1, 2, 3]), { headers: { 'content-type': 'application/octet-stream' } }));
  })()`);
  r = await tryLoad(lib, 'flaky', FAST);
  assert.equal(r.ok, true, `the damaged copies are replaced: ${r.message}`);
  assert.deepEqual(r.requests.sort(), ['/models/flaky/model_index.json', '/models/flaky/unet/model.onnx'], 'only the two damaged files are downloaded again');
  r = await tryLoad(lib, 'flaky', FAST);
  assert.deepEqual(r.requests, [], 'and stored again');
});

test("the static site ships the shipped model's files, and no graph derived beside it", () => {
  assert.ok(siteFiles.includes(path.join('shapes-128', 'unet', 'model.onnx')), siteFiles.join(', '));
  assert.deepEqual(siteFiles.filter((f) => f.includes('.asgd-')), []);
});

test('an optional file the server did not have is asked for again once that answer is a day old, not before', async () => {
  const url = `${site.url}models/partial/${PARTIAL_FILE}`;
  const asked = `/models/partial/${PARTIAL_FILE}`;
  partialHidden = true;
  let r = await tryLoad(lib, 'partial', FAST);
  assert.equal(r.ok, true, r.message);
  assert.ok(r.requests.includes(asked), JSON.stringify(r.requests));
  r = await tryLoad(lib, 'partial', FAST);
  assert.deepEqual(r.requests, [], 'a stored model makes no request, the 404 included');
  partialHidden = false; // the file is added to the folder
  r = await tryLoad(lib, 'partial', FAST);
  assert.deepEqual(r.requests, [], 'within a day the stored answer stands');
  // The stored answer made a day and a minute ago (as the library stores it, its time in the header).
  await lib.evaluate(`(async () => {
    const cache = await caches.open(window.asgdDemo.web.MODEL_CACHE);
    const marked = await cache.match(${JSON.stringify(url)});
    if (!marked || !marked.headers.get('x-asgdiffusion-missing')) throw new Error('no stored 404 for the file');
    await cache.put(${JSON.stringify(url)}, new Response(null, { headers: { 'x-asgdiffusion-missing': String(Date.now() - ${JSON.stringify(24 * 3600 * 1000 + 60_000)}) } }));
  })()`);
  r = await tryLoad(lib, 'partial', FAST);
  assert.deepEqual(r.requests, [asked], 'asked again, and only that file');
  r = await tryLoad(lib, 'partial', FAST);
  assert.deepEqual(r.requests, [], 'now stored as the file it is');
  const stored = (await lib.evaluate(`caches.open(window.asgdDemo.web.MODEL_CACHE).then((c) => c.match(${JSON.stringify(url)})).then((m) => m.text())`)) as string;
  assert.deepEqual(JSON.parse(stored), JSON.parse(fs.readFileSync(path.join(MODEL, PARTIAL_FILE), 'utf8')));
});

test('every load option is checked before any request, with Node\'s wording', async () => {
  const cases: [Record<string, unknown>, string, string][] = [
    [{ attentionProbe: 'no' }, 'attentionProbe', '"no"'],
    [{ store: 'no' }, 'store', '"no"'],
    [{ wokers: 2 }, 'wokers', '2'],
    [{ workers: '2' }, 'workers', '"2"'],
    [{ workers: 0 }, 'workers', '0'],
    [{ threads: -1 }, 'threads', '-1'],
    [{ fuseAttention: 'yes' }, 'fuseAttention', '"yes"'],
    [{ unetPrecision: 'half' }, 'unetPrecision', '"half"'],
    [{ splitCfg: 'sometimes' }, 'splitCfg', '"sometimes"'],
    [{ provider: 'cuda' }, 'provider', '"cuda"'],
    [{ wasmPaths: 7 }, 'wasmPaths', '7'],
    [{ signal: 'stop' }, 'signal', '"stop"'],
  ];
  for (const [options, parameter, received] of cases) {
    const r = await tryLoad(lib, 'shapes-128', { provider: 'wasm', ...options });
    assert.equal(r.ok, false, `${JSON.stringify(options)} is refused`);
    assert.deepEqual({ asgd: r.asgd, kind: r.kind, parameter: r.parameter, received: r.received }, { asgd: true, kind: 'invalid-argument', parameter, received }, JSON.stringify(options));
    assert.deepEqual(r.requests, [], `${JSON.stringify(options)}: no request`);
  }
  assert.equal(await workersLeft(lib), 0);
  const misspelt = await tryLoad(lib, 'shapes-128', { wokers: 2 });
  assert.match(misspelt.expected!, /^a loadWebPipeline option: provider, workers, /);
  // The options both sides have are refused in the same words.
  for (const options of [{ fuseAttention: 'yes' }, { unetPrecision: 'half' }, { splitCfg: 'sometimes' }, { threads: -1 }, { attentionProbe: 'no' }, { nope: 1 }]) {
    const web = await tryLoad(lib, 'shapes-128', options);
    const node = await loadPipeline(MODEL, options as object).then(
      async (p) => {
        await p.close();
        return undefined;
      },
      (e: Error & { hint?: string; received?: string }) => e,
    );
    assert.ok(node, `Node refuses ${JSON.stringify(options)}`);
    if ('nope' in options) assert.deepEqual([web.hint, web.received], [node.hint, node.received]);
    else assert.equal(web.message, node.message);
  }
});

test('cancelling during a download rejects with the download\'s AsgdError', async () => {
  const r = await tryLoad(lib, 'slow', { ...FAST, store: false }, 'download');
  assert.equal(r.aborted, true, 'aborted during the UNet\'s download');
  assert.deepEqual({ asgd: r.asgd, kind: r.kind, message: r.message }, { asgd: true, kind: 'cancelled', message: 'Model download cancelled' });
  assert.ok(r.msAfterAbort! < 2000, `rejected ${r.msAfterAbort} ms after the abort`);
  assert.equal(await workersLeft(lib), 0);
});

test('cancelling while the workers open sessions rejects as cancelled and ends the workers', async () => {
  const r = await tryLoad(lib, 'shapes-128', { provider: 'wasm', workers: 2, store: false }, 'session');
  assert.equal(r.aborted, true, 'aborted at the first session');
  assert.equal(r.ok, false, 'the load does not resolve');
  assert.deepEqual({ asgd: r.asgd, kind: r.kind }, { asgd: true, kind: 'cancelled' }, r.message);
  assert.ok(r.msAfterAbort! < 2000, `rejected ${r.msAfterAbort} ms after the abort`);
  assert.equal(await workersLeft(lib), 0, 'no worker left running');
});

test('ONNX Runtime\'s own files missing under wasmPaths: an error naming wasmPaths, not the UNet', async () => {
  const r = await tryLoad(lib, 'shapes-128', { provider: 'wasm', store: false, attentionProbe: false, wasmPaths: `${site.url}no-such-folder/` });
  assert.equal(r.ok, false);
  assert.deepEqual({ kind: r.kind, parameter: r.parameter }, { kind: 'device', parameter: 'wasmPaths' }, r.message);
  assert.match(r.expected!, /no-such-folder/);
  assert.equal(await workersLeft(lib), 0);
});

test('no progress or preview callback fires after a cancelled generation settled', async () => {
  await lib.evaluate(`(async () => { window.pipe = await window.asgdDemo.web.loadWebPipeline(${JSON.stringify(`${site.url}models/shapes-128/`)}, { provider: 'wasm' }); })()`);
  for (let trial = 0; trial < 2; trial++) {
    const r = (await lib.evaluate(`(async () => {
      const late = []; let previews = 0; let settled = false; let aborted = false;
      const ctl = new AbortController();
      const note = (what) => { if (settled) late.push(what); };
      let outcome;
      try {
        await pipe.generate({ prompt: 'a red circle on a blue background', width: 256, height: 256, steps: 6, seed: 9, method: 'asg' }, {
          signal: ctl.signal, previewEvery: 1,
          onPreview: (img, step) => { previews++; note('preview ' + step); },
          onWarning: (m) => note('warning ' + m),
          onProgress: (e) => { note(e.phase + ' ' + e.step); if (e.phase === 'denoise' && e.step >= 2 && !aborted) { aborted = true; ctl.abort(); } },
        });
        outcome = 'resolved';
      } catch (e) { outcome = e.kind; }
      settled = true;
      await new Promise((r) => setTimeout(r, 3000));
      return { outcome, previews, late };
    })()`)) as { outcome: string; previews: number; late: string[] };
    assert.equal(r.outcome, 'cancelled');
    assert.ok(r.previews > 0, 'previews came while it ran');
    assert.deepEqual(r.late, [], `trial ${trial}: nothing after the promise settled`);
  }
  await lib.evaluate('window.pipe.close()');
});

test('demo page: a size in the address that is not offered falls back with a notice, and a refused setting shows in the status line', async () => {
  const page = await (await browser.newContext()).newPage();
  await page.goto(`${site.url}?provider=wasm&probe=0&size=999x999&steps=0`);
  await page.waitForSelector('body[data-state="ready"], body[data-state="error"]', { timeout: 180_000 });
  assert.equal(await page.getAttribute('body', 'data-state'), 'ready', await page.textContent('#status') ?? '');
  assert.equal(await page.inputValue('[name="size"]'), '256x256', 'the default size');
  assert.match((await page.textContent('#form-error')) ?? '', /999x999.*256 × 256/);
  await page.click('#generate');
  await page.waitForFunction(`document.body.dataset.state === 'ready' && /steps/.test(document.querySelector('#status').textContent)`, undefined, { timeout: 30_000 });
  assert.match((await page.textContent('#status')) ?? '', /Invalid steps/);
  await page.close();
});

test('WebGPU: provider auto skips a fallback adapter; "webgpu" uses it, with nothing on the console; its fused graph generates the CPU\'s image', async () => {
  const gpuBrowser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: WEBGPU_FLAGS });
  try {
    const page = await libraryPage(gpuBrowser);
    const adapter = await page.evaluate(`(async () => { const a = await navigator.gpu?.requestAdapter(); return a ? { fallback: a.info.isFallbackAdapter } : null; })()`);
    assert.deepEqual(adapter, { fallback: true }, 'this Chromium offers a fallback adapter only (SwiftShader)');
    const auto = await tryLoad(page, 'shapes-128', { provider: 'auto', attentionProbe: false });
    assert.equal(auto.ok, true, auto.message);
    assert.equal(auto.provider, 'wasm');
    assert.ok(auto.notes!.some((n) => /fallback/.test(n)), JSON.stringify(auto.notes));
    const messages: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') messages.push(`${m.type()}: ${m.text()}`);
    });
    const gpu = await tryLoad(page, 'shapes-128', { provider: 'webgpu', attentionProbe: false });
    assert.equal(gpu.ok, true, gpu.message);
    assert.equal(gpu.provider, 'webgpu');
    assert.deepEqual(messages, [], 'no ONNX Runtime warning on the console');
    // Fused on this WebGPU device: the form follows the device worker's check of the flash-attention kernel.
    const fused = await tryLoad(page, 'shapes-128', { provider: 'webgpu', attentionProbe: false, fuseAttention: true });
    assert.equal(fused.ok, true, fused.message);
    const f = fused.fusion!;
    assert.equal(f.applied, true, JSON.stringify(f));
    assert.match(f.formReason ?? '', /^ONNX Runtime's WebGPU flash-attention kernel (checked right|is wrong) on this adapter \(largest error [0-9.e+-]+ in float32, (?:[0-9.e+-]+ in float16|float16 not supported by the adapter)\)$/);
    assert.equal(f.form, /checked right/.test(f.formReason!) ? 'flash' : 'padded');
    assert.equal(f.biasSplitGelus, 7, "a WebGPU worker's graph has the 7 GEGLUs as BiasSplitGelu (ONNX Runtime Web opened it)");
    assert.equal(f.groupNorms, 24, "and its 24 group norms as GroupNorm");
    // And it computes what the written-out graph does: a short generation on this WebGPU adapter against Node's CPU.
    const params = { prompt: 'a red circle', seed: 4, steps: 2, width: 128, height: 128, method: 'direct' };
    const png = (await page.evaluate(`(async () => {
      const pipe = await window.asgdDemo.web.loadWebPipeline(${JSON.stringify(`${site.url}models/shapes-128/`)}, { provider: 'webgpu', attentionProbe: false, fuseAttention: true });
      try { return Array.from((await pipe.generate(${JSON.stringify(params)})).png); } finally { await pipe.close(); }
    })()`)) as number[];
    const cpu = await loadPipeline(MODEL, { devices: 'cpu', threads: 1 });
    try {
      const ref = (await cpu.generate(params as Parameters<typeof cpu.generate>[0])).image;
      const d = compareRgb(await rgbOfPng(Uint8Array.from(png)), ref);
      console.log(`# fused graph with GroupNorm on Chromium's WebGPU adapter vs Node cpu (written out), direct 128 px: mean ${d.meanAbs.toFixed(4)}, max ${d.maxAbs}`);
      assert.ok(d.maxAbs <= 2 && d.meanAbs < 0.1, JSON.stringify(d));
    } finally {
      await cpu.close();
    }
    // On WebAssembly no check: padded, as in Node without a WebGPU device.
    const wasm = await tryLoad(page, 'shapes-128', { provider: 'wasm', attentionProbe: false, fuseAttention: true });
    assert.deepEqual([wasm.fusion?.form, wasm.fusion?.formReason], ['padded', 'no WebGPU device (the form of every other provider)']);
    assert.equal(wasm.fusion?.biasSplitGelus, undefined, 'no BiasSplitGelu for WebAssembly (no kernel)');
    assert.equal(wasm.fusion?.groupNorms, undefined, 'nor GroupNorm');
  } finally {
    await gpuBrowser.close();
  }
});

test("WebGPU: the text conditioning is uploaded once a generation and fed from the device; a new prompt's replaces it; each image is Node's", async () => {
  const gpuBrowser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: WEBGPU_FLAGS });
  try {
    const page = await libraryPage(gpuBrowser);
    const prompts = ['a red circle', 'a blue square on a yellow background'];
    const base = { seed: 4, steps: 2, width: 128, height: 128, method: 'direct' };
    const r = (await page.evaluate(`(async () => {
      const pipe = await window.asgdDemo.web.loadWebPipeline(${JSON.stringify(`${site.url}models/shapes-128/`)}, { provider: 'webgpu', attentionProbe: false });
      try {
        const out = [];
        for (const prompt of ${JSON.stringify(prompts)}) {
          const g = await pipe.generate({ ...${JSON.stringify(base)}, prompt });
          const d = await pipe.devices[0].request({ type: 'describe' }, 'describing');
          out.push({ png: Array.from(g.png), counts: d.deviceConditioning });
        }
        return out;
      } finally { await pipe.close(); }
    })()`)) as { png: number[]; counts: { unet?: { uploads: number; disposed: number; live: number } } }[];
    const [first, second] = r.map((x) => x.counts.unet!);
    assert.ok(first && first.uploads > 0 && first.disposed === 0 && first.live === first.uploads, `the first prompt uploaded once: ${JSON.stringify(first)}`);
    assert.deepEqual(second, { uploads: 2 * first.uploads, disposed: first.uploads, live: first.uploads }, "the second prompt's replaced it");
    const cpu = await loadPipeline(MODEL, { devices: 'cpu', threads: 1 });
    try {
      const refs = [];
      for (const [i, prompt] of prompts.entries()) {
        const ref = (await cpu.generate({ ...base, prompt } as Parameters<typeof cpu.generate>[0])).image;
        refs.push(ref);
        const d = compareRgb(await rgbOfPng(Uint8Array.from(r[i]!.png)), ref);
        console.log(`# conditioning on Chromium's WebGPU device, "${prompt}", direct 128 px: vs Node cpu mean ${d.meanAbs.toFixed(4)}, max ${d.maxAbs}`);
        assert.ok(d.maxAbs <= 2 && d.meanAbs < 0.1, `${prompt}: ${JSON.stringify(d)}`);
      }
      assert.ok(compareRgb(refs[0]!, refs[1]!).maxAbs > 32, 'the two prompts give clearly different images (a stale conditioning would show)');
    } finally {
      await cpu.close();
    }
  } finally {
    await gpuBrowser.close();
  }
});

test("WebGPU: a tiled decode with exact statistics keeps the tile states on the device and gives Node's tiled image", async () => {
  const gpuBrowser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: WEBGPU_FLAGS });
  try {
    const page = await libraryPage(gpuBrowser);
    // 9 tiles of 8 latents on the 16x16 latent: every norm layer's segment runs per tile, its state kept for the next
    // (Chromium's software adapter makes each pixel dear: 256 px with tiles of 16 took 2.7 minutes).
    const params = { prompt: 'a red circle', seed: 4, steps: 2, width: 128, height: 128, method: 'direct', vae: { tiling: 'on', tileSize: 8, overlap: 2, stats: 'exact' } };
    const r = (await page.evaluate(`(async () => {
      const pipe = await window.asgdDemo.web.loadWebPipeline(${JSON.stringify(`${site.url}models/shapes-128/`)}, { provider: 'webgpu', attentionProbe: false });
      try {
        const g = await pipe.generate(${JSON.stringify(params)});
        const d = await pipe.devices[0].request({ type: 'describe' }, 'describing');
        return { png: Array.from(g.png), warnings: g.warnings, tileStates: d.tileStates };
      } finally { await pipe.close(); }
    })()`)) as { png: number[]; warnings: string[]; tileStates?: { held: number; released: number; live: number; liveBytes: number } };
    assert.deepEqual(r.warnings.filter((w) => /VAE|tile/i.test(w)), [], 'no fallback warning');
    const s = r.tileStates;
    assert.ok(s && s.held > 0, `states held on the device: ${JSON.stringify(s)}`);
    assert.deepEqual([s.released, s.live, s.liveBytes], [s.held, 0, 0], 'every state freed when the decode ended');
    const cpu = await loadPipeline(MODEL, { devices: 'cpu', threads: 1 });
    try {
      const ref = (await cpu.generate(params as Parameters<typeof cpu.generate>[0])).image;
      const perTile = (await cpu.generate({ ...params, vae: { ...params.vae, stats: 'off' } } as Parameters<typeof cpu.generate>[0])).image;
      const web = await rgbOfPng(Uint8Array.from(r.png));
      const d = compareRgb(web, ref);
      const off = compareRgb(web, perTile);
      console.log(`# tiled exact decode, states on Chromium's WebGPU adapter, direct 128 px: vs Node cpu mean ${d.meanAbs.toFixed(4)}, max ${d.maxAbs}; vs per-tile statistics mean ${off.meanAbs.toFixed(4)}, max ${off.maxAbs}; ${s.held} states`);
      assert.ok(d.maxAbs <= 2 && d.meanAbs < 0.1, JSON.stringify(d));
      assert.ok(off.maxAbs > 8, `clearly apart from per-tile statistics: ${JSON.stringify(off)}`);
    } finally {
      await cpu.close();
    }
  } finally {
    await gpuBrowser.close();
  }
});
