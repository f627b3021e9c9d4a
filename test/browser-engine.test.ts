/**
 * The engine in a real browser: the demo page (demo/, built by Vite as for a static host) in Debian's Chromium
 * (/usr/bin/chromium, scripts/setup-browser.sh) driven by playwright-core, running the shipped model on ONNX
 * Runtime Web's WebAssembly provider. Images are compared with the Node CPU pipeline's, made in this process.
 * Few steps keep it short (the machine is shared). WebGPU: see docs/browser.md and scripts/browser-check.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { fromBinary, toBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import { chromium, type Browser, type BrowserContext } from 'playwright-core';
import { loadPipeline, type Pipeline } from '../src/node/pipeline.ts';
import { fuseAttention } from '../src/graph/attention-fusion.ts';
import { fusionChangesNothing } from '../src/core/fusion-note.ts';
import { TOOL_VERSION as NODE_TOOL_VERSION } from '../src/node/version.ts';
import { TOOL_VERSION as WEB_TOOL_VERSION } from '../src/browser/version.ts';
import { readPngTextChunks } from '../src/core/png-chunks.ts';
import { JSON_KEY, TEXT_KEY, formatParametersText } from '../src/core/metadata.ts';
import { ROOT, buildDemoSite, compareRgb, generateOnDemo, generateOnPipeline, openDemo, rgbOfPng, serveSite, type DemoResult, type OpenedDemo, type StaticSite } from './helpers/demo-site.ts';
import { tempDir } from './helpers/models.ts';
import { KERNEL_BYTES_BASE64 } from '../src/core/kernels/kernel-bytes.ts';
import { eulerRangeKernel } from '../src/core/kernels/euler-range.ts';
import { createRandom } from '../src/core/random/index.ts';
import { SMALL_VAE_DECODER, buildGroupNormVaeDecoder } from './fixtures/groupnorm-vae.ts';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
const MODEL = path.join(ROOT, 'models', 'shapes-128');
const PROMPT = 'a red circle on a blue background';
const STEPS = 4;

/**
 * Tolerances against the Node CPU image (8-bit RGB levels): ONNX Runtime's WebAssembly kernels (SIMD128) round
 * differently from the native CPU kernels (AVX2/FMA), and denoising carries the differences through the steps.
 * Measured (docs/browser.md): max 1 level at 128 and 256 px (mean 0.0004 and 0.0006); the bound leaves one level
 * of margin.
 */
const WASM_TOLERANCE = { meanAbs: 0.05, maxAbs: 2 };
/** The page's own JavaScript (every .js the build emits, ONNX Runtime's glue included; its .wasm excluded), gzip -9. */
const BUNDLE_BUDGET = 250_000;

let siteDir: string;
let site: StaticSite;
let browser: Browser;
let node: Pipeline;
const closers: (() => Promise<unknown>)[] = [];

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `The browser tests need Debian's Chromium at ${CHROMIUM}: run \`npm run setup:browser\` as root`);
  siteDir = tempDir('demo-site');
  await buildDemoSite(siteDir);
  site = await serveSite(siteDir);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  node = await loadPipeline(MODEL, { devices: 'cpu' });
});

after(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await browser?.close();
  await node?.close();
  await site?.close();
});

async function newContext(): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  closers.push(() => context.close());
  return context;
}

const settings = (width: number, height: number, seed: number) => ({ prompt: PROMPT, width, height, seed, steps: STEPS });

async function matchesNode(r: DemoResult, s: { width: number; height: number; seed: number }): Promise<void> {
  const t = performance.now();
  const ref = await node.generate({ prompt: PROMPT, width: s.width, height: s.height, seed: s.seed, steps: STEPS, method: 'asg' });
  const nodeMs = performance.now() - t;
  const d = compareRgb(await rgbOfPng(r.png), ref.image);
  console.log(`# ${s.width}x${s.height} asg ${STEPS} steps: browser (wasm) ${r.totalMs.toFixed(0)} ms, node cpu ${nodeMs.toFixed(0)} ms; mean |diff| ${d.meanAbs.toFixed(4)}, max |diff| ${d.maxAbs}, ${d.differing} values differ, PSNR ${d.psnr.toFixed(1)} dB`);
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
let single: OpenedDemo;
/** The last page opened, reused by later tests (a page load costs about 20 s here); they open their own when run alone. */
let loaded: OpenedDemo | undefined;
const images: Record<string, DemoResult> = {};

test("the sampler's WebAssembly kernels (SIMD included) compile in Chromium and step as in Node, bit for bit (Euler, flow Euler, DDIM, DPM-Solver++)", async () => {
  const context = await newContext();
  const page = await context.newPage();
  const len = 1027; // vectors of four and a tail
  const rng = createRandom(3, 'test');
  const m = Float32Array.from(rng.randn([len]));
  const s = Float32Array.from(rng.randn([len]), (v) => v * 7);
  const cases = [
    { kind: 0, sigma: 3.5, dt: -0.25, cOut: 0, s2p1: 0 },
    { kind: 1, sigma: 1.25, dt: -0.125, cOut: Math.fround(-1.25 / Math.sqrt(1.25 * 1.25 + 1)), s2p1: Math.fround(1.25 * 1.25 + 1) },
    { kind: 3, sigma: 0.75, dt: Math.fround(-0.0375), cOut: 0, s2p1: 0 },
    // DDIM: epsilon, sample, v (sqrt(abar) 0.6, sqrt(1 - abar) 0.8, the previous timestep's 0.8 and 0.6).
    ...[4, 5, 6].map((kind) => ({ kind, sigma: Math.fround(0.6), dt: Math.fround(0.8), cOut: Math.fround(0.8), s2p1: Math.fround(0.6) })),
  ];
  const inPage = await page.evaluate(
    ({ b64, m, s, cases }) => {
      // The page's WebAssembly (the tests' TypeScript library has no WebAssembly types).
      const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer }; Module: new (b: Uint8Array) => object; Instance: new (m: object, i: object) => { exports: unknown } } }).WebAssembly;
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const memory = new wasm.Memory({ initial: 1 });
      const k = new wasm.Instance(new wasm.Module(bytes), { env: { memory } }).exports as { eulerRange: (...a: number[]) => void };
      const n = m.length;
      const f = new Float32Array(memory.buffer);
      f.set(m, 0);
      f.set(s, n);
      return cases.map((c) => {
        k.eulerRange(8 * n, 0, 4 * n, n, c.kind, c.sigma, c.dt, c.cOut, c.s2p1);
        return Array.from(new Uint32Array(memory.buffer, 8 * n, n));
      });
    },
    { b64: KERNEL_BYTES_BASE64, m: Array.from(m), s: Array.from(s), cases },
  );
  cases.forEach((c, i) => {
    const here = new Float32Array(len);
    assert.ok(eulerRangeKernel(c, m, s, here), 'the kernel runs in Node');
    assert.deepEqual(inPage[i], Array.from(new Uint32Array(here.buffer)), `kind ${c.kind}: the same bits`);
  });
  // DPM-Solver++'s kinds of the unit kernel (7 to 12: first and second order, epsilon, v, sample), its history read
  // and written in the kernel's memory (the stepped values and the x0 predictions kept), and Euler ancestral's (13
  // and 14: epsilon, v), the step's noise read there.
  const dpm = { b64: KERNEL_BYTES_BASE64, m: Array.from(m), s: Array.from(s), h: Array.from(rng.randn([len])), kinds: [7, 8, 9, 10, 11, 12, 13, 14] };
  const dpmInPage = await page.evaluate(dpmUnitSteps, dpm);
  const dpmHere = dpmUnitSteps(dpm);
  assert.equal(dpmHere.length, 16);
  assert.ok(dpmHere[6]!.some((v, i) => v !== dpmHere[0]![i]), 'second order differs from first');
  assert.ok(dpmHere[12]!.some((v, i) => v !== dpmHere[14]![i]), 'Euler ancestral: epsilon and v differ');
  dpmHere.forEach((bits, i) => assert.deepEqual(dpmInPage[i], bits, `kind ${dpm.kinds[i >> 1]}, ${i % 2 ? 'x0 kept' : 'stepped'}: the same bits`));
});

/**
 * unitStep's DPM-Solver++ and Euler ancestral kinds on one patch of m.length elements, unguided, in a memory of its
 * own (h: the history or noise read): per kind, the stepped values' bits, then the bits of what it kept (DPM-Solver++'s
 * x0 predictions; unwritten for Euler ancestral). Self-contained, so that it runs in the page
 * (page.evaluate) and in Node alike.
 */
function dpmUnitSteps(a: { b64: string; m: number[]; s: number[]; h: number[]; kinds: number[] }): number[][] {
  const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer }; Module: new (b: Uint8Array) => object; Instance: new (m: object, i: object) => { exports: unknown } } }).WebAssembly;
  const bytes = Uint8Array.from(atob(a.b64), (c) => c.charCodeAt(0));
  const memory = new wasm.Memory({ initial: 4 });
  const k = new wasm.Instance(new wasm.Module(bytes), { env: { memory } }).exports as { unitStep: (...args: number[]) => void };
  const n = a.m.length;
  // Byte offsets: the output, the latent, the guided output, the next latent, the history before and after, the
  // key and weights (unread: no guidance), the patch's base, the element offsets, the permutation (one patch: 0).
  const [out, lat, eps, nxt, hin, hout, key, wts, base, off, perm] = [0, 4, 8, 12, 16, 20, 24, 28, 36, 37, 41].map((q) => q * n * 4);
  new Float32Array(memory.buffer, out, n).set(a.m);
  new Float32Array(memory.buffer, lat, n).set(a.s);
  new Float32Array(memory.buffer, hin, n).set(a.h);
  new Int32Array(memory.buffer, base, 1)[0] = 0;
  new Int32Array(memory.buffer, off, n).set(Array.from({ length: n }, (_, e) => e));
  new Uint8Array(memory.buffer, perm, n).fill(0);
  const f = Math.fround;
  return a.kinds.flatMap((kind) => {
    // DPM-Solver++'s sigma, alpha, ratio, c0 in the four step slots, then the histories' addresses, c1 and invR0;
    // Euler ancestral's sigma, dt, cOut and s2p1, sigma_up in c1's slot.
    k.unitStep(out, lat, eps, nxt, key, wts, base, off, perm, 0, 1, 0, n, 0, 1, 0, 0, 0, 0, kind, f(0.8), f(0.6), f(0.93), f(-0.31), hin, hout, f(0.17), f(1.7));
    return [Array.from(new Uint32Array(memory.buffer, nxt, n)), Array.from(new Uint32Array(memory.buffer, hout, n))];
  });
}

test('WASM: the page loads with no console error and makes the 128 px and 256 px asg images as Node does', async () => {
  context = await newContext();
  single = await openDemo(context, site.url, 'provider=wasm&workers=1');
  assert.ok(single.modelRequests.some((u) => u.endsWith('/unet/model.onnx')), 'the first load downloads the model');
  images.r128 = await generateOnDemo(single.page, settings(128, 128, 7));
  assert.equal(images.r128.splitCfg, 'never', "'auto' with one worker: no CFG halves");
  await matchesNode(images.r128, { width: 128, height: 128, seed: 7 });
  images.r256 = await generateOnDemo(single.page, settings(256, 256, 11));
  await matchesNode(images.r256, { width: 256, height: 256, seed: 11 });
  // Above the native size asg steps with Euler instead of the model's PNDM, and says how to keep it in the words a
  // page sets it with (Node's warning names the CLI flag).
  const warnings = (await single.page.evaluate('window.asgdDemo.result.warnings')) as string[];
  const scheduler = warnings.find((w) => w.startsWith("Using the euler scheduler instead of the model's pndm"));
  assert.ok(scheduler, warnings.join('\n'));
  assert.match(scheduler, /set the scheduler to pndm \(scheduler pndm\) to keep it$/);
  assert.ok(warnings.every((w) => !/--[a-z]/.test(w)), `no CLI flag in the page's warnings: ${warnings.join('\n')}`);
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
  const r = await generateOnDemo(page, settings(128, 128, 7));
  assert.ok(r.png.equals(images.r128!.png), 'the same image as before the cancelled run');
  assert.deepEqual(errors, []);
  await page.close();
});

test('WASM: the second load reads the stored model (no model request), and two workers give the same image as one', async () => {
  const before = site.served.length;
  const two = await openDemo(context, site.url, 'provider=wasm&workers=2');
  loaded = two;
  assert.deepEqual(two.modelRequests, [], 'no model request on the second load');
  assert.deepEqual(site.served.slice(before).filter((u) => u.includes('/models/')), []);
  const r = await generateOnDemo(two.page, settings(256, 256, 11));
  assert.equal(r.stats.length, 2);
  assert.ok(r.stats.every((s) => s.tasks > 0), `both workers ran units: ${JSON.stringify(r.stats)}`);
  const d = compareRgb(await rgbOfPng(r.png), await rgbOfPng(images.r256!.png));
  assert.equal(d.maxAbs, 0, `identical pixels: ${JSON.stringify(d)}`);
  assert.ok(r.png.equals(images.r256!.png), 'identical files');
  assert.equal(r.splitCfg, 'balance', "'auto' on two WebAssembly workers whose UNet gives a split unit a whole one's bits");
  assert.deepEqual(two.errors, []);
});

test("WASM: two workers running every unit as two CFG halves (splitCfg 'always') give the same image as one worker", async () => {
  const halves = await openDemo(context ?? (await newContext()), site.url, 'provider=wasm&workers=2&split=always');
  const r = await generateOnDemo(halves.page, settings(256, 256, 11));
  assert.equal(r.splitCfg, 'always');
  const tasks = r.stats.reduce((n, s) => n + s.tasks, 0);
  assert.equal(tasks, 2 * r.unetEvaluations, `every unit ran as two halves: ${JSON.stringify(r.stats)}, ${r.unetEvaluations} units`);
  assert.ok(r.stats.every((s) => s.tasks > 0), `both workers ran halves: ${JSON.stringify(r.stats)}`);
  if (images.r256) {
    const d = compareRgb(await rgbOfPng(r.png), await rgbOfPng(images.r256.png));
    assert.equal(d.maxAbs, 0, `identical pixels: ${JSON.stringify(d)}`);
    assert.ok(r.png.equals(images.r256.png), 'identical files');
  } else await matchesNode(r, { width: 256, height: 256, seed: 11 });
  assert.deepEqual(halves.errors, []);
  await halves.page.close();
});

test('WASM: fuseAttention fuses the UNet and the probe graph in the device worker; the image is Node\'s fused one within the tolerance', async () => {
  const fused = await openDemo(context ?? (await newContext()), site.url, 'provider=wasm&workers=1&fuse=1');
  const info = (await fused.page.evaluate('(() => { const i = window.asgdDemo.pipeline.info; return { fusion: i.attentionFusion, probe: i.attentionProbe.available }; })()')) as {
    fusion: unknown; probe: boolean;
  };
  assert.deepEqual(info, {
    fusion: { applied: true, layers: 14, form: 'padded', formReason: 'no WebGPU device (the form of every other provider)' }, probe: true,
  }, 'the 14 attentions of the shipped UNet (padded, as in Node without a WebGPU device), and the probe graph built');
  // One session serves the fused UNet and the fused probe (every attention fused in both): text encoder, VAE, UNet.
  const sessions = await fused.page.evaluate('window.asgdDemo.pipeline.devices[0].request({ type: "describe" }, "describing").then((r) => r.sessions)');
  assert.equal(sessions, 3);
  // probeSession 'separate': the fused UNet and the fused probe graph in two sessions, the same image.
  const separate = await openDemo(context ?? (await newContext()), site.url, 'provider=wasm&workers=1&fuse=1&probeSession=separate');
  assert.equal(await separate.page.evaluate('window.asgdDemo.pipeline.devices[0].request({ type: "describe" }, "describing").then((r) => r.sessions)'), 4);
  const rSeparate = await generateOnDemo(separate.page, settings(256, 256, 11));
  assert.deepEqual(separate.errors, []);
  await separate.page.close();
  const r = await generateOnDemo(fused.page, settings(256, 256, 11));
  assert.ok(rSeparate.png.equals(r.png), 'the same file with the probe graph in a session of its own');
  const nodeFused = await loadPipeline(MODEL, { devices: 'cpu', fuseAttention: true });
  try {
    const ref = await nodeFused.generate({ prompt: PROMPT, width: 256, height: 256, seed: 11, steps: STEPS, method: 'asg' });
    assert.equal(ref.warnings.some((w) => /mask/i.test(w)), false);
    const d = compareRgb(await rgbOfPng(r.png), ref.image);
    console.log(`# fused attention, 256x256 asg: browser (wasm) vs node cpu (fused): mean |diff| ${d.meanAbs.toFixed(4)}, max |diff| ${d.maxAbs}`);
    assert.ok(d.meanAbs <= WASM_TOLERANCE.meanAbs && d.maxAbs <= WASM_TOLERANCE.maxAbs, `within ${JSON.stringify(WASM_TOLERANCE)}: ${JSON.stringify(d)}`);
    // Node's metadata records the fusion (`asgd generate --from` turns it on again from it): the browser's is equal.
    assert.equal(ref.metadata.fusedAttention, true);
    assert.deepEqual(r.metadata, ref.metadata);
  } finally {
    await nodeFused.close();
  }
  assert.deepEqual(fused.errors, []);
  await fused.page.close();
});

test('WASM: fuseAttention on an export whose attention is fused already changes nothing, and every run says so, as Node\'s does', async () => {
  // The shipped model with its UNet as the fusion writes it (14 MultiHeadAttention nodes), as a fused export would be.
  const folder = path.join(siteDir, 'models', 'shapes-prefused');
  fs.cpSync(MODEL, folder, { recursive: true });
  const unet = fromBinary(ModelProtoSchema, new Uint8Array(fs.readFileSync(path.join(MODEL, 'unet', 'model.onnx'))));
  assert.equal((fuseAttention(unet) as { fused: number }).fused, 14);
  fs.writeFileSync(path.join(folder, 'unet', 'model.onnx'), toBinary(ModelProtoSchema, unet));
  const expected = fusionChangesNothing('the export runs its attention fused already (14 MultiHeadAttention nodes)');
  const nodePipe = await loadPipeline(folder, { devices: 'cpu', attentionProbe: false, fuseAttention: true });
  closers.push(() => nodePipe.close());
  const params = { ...settings(128, 128, 3), steps: 1, methodOptions: { mask: false } };
  assert.ok((await nodePipe.generate(params)).warnings.includes(expected), 'Node says it at the run');
  const { page, errors } = await openDemo(context ?? (await newContext()), site.url, `provider=wasm&workers=1&probe=0&fuse=1&model=${encodeURIComponent(`${site.url}models/shapes-prefused/`)}`);
  const info = await page.evaluate('window.asgdDemo.pipeline.info.attentionFusion');
  assert.deepEqual(info, { applied: false, layers: 0, reason: 'the export runs its attention fused already (14 MultiHeadAttention nodes)' });
  for (let i = 0; i < 2; i++) {
    const r = await generateOnPipeline(page, params);
    assert.ok(r.warnings.includes(expected), `run ${i + 1}: ${r.warnings.join('; ')}`);
  }
  assert.deepEqual(errors, []);
  await page.close();
});

/**
 * Tiled decoding in the browser against Node's, same settings and seed: small tiles force 9 tiles on the 32x32 latent.
 * Measured (docs/browser.md): max 1 level from Node's tiled decode (mean 0.0001), 68 levels (mean 5.6) from Node's
 * per-tile-statistics decode; the test asks for 4x the tolerance at least.
 */
const TILED_VAE = { tiling: 'on', tileSize: 16, overlap: 4, stats: 'exact' } as const;

test('WASM: a tiled decode uses the whole image\'s normalisation statistics, as Node\'s does', async () => {
  const { page, errors } = loaded ?? (await openDemo(await newContext(), site.url, 'provider=wasm&workers=1'));
  const params = { ...settings(256, 256, 11), method: 'asg' as const, vae: TILED_VAE };
  const r = await generateOnPipeline(page, params);
  assert.deepEqual(r.warnings.filter((m) => /VAE/.test(m)), [], 'no fallback warning');
  const web = await rgbOfPng(r.png);
  const shared = await node.generate(params);
  const perTile = await node.generate({ ...params, vae: { ...TILED_VAE, stats: 'off' } });
  const d = compareRgb(web, shared.image);
  const off = compareRgb(web, perTile.image);
  console.log(`# 256x256 tiled decode (16-latent tiles, overlap 4, exact statistics): browser ${r.decodeMs.toFixed(0)} ms; against Node's: mean |diff| ${d.meanAbs.toFixed(4)}, max ${d.maxAbs}; against Node's per-tile statistics: mean ${off.meanAbs.toFixed(4)}, max ${off.maxAbs}`);
  assert.ok(d.meanAbs <= WASM_TOLERANCE.meanAbs && d.maxAbs <= WASM_TOLERANCE.maxAbs, `within ${JSON.stringify(WASM_TOLERANCE)} of Node's tiled decode: ${JSON.stringify(d)}`);
  assert.ok(off.maxAbs >= 4 * WASM_TOLERANCE.maxAbs && off.meanAbs >= 4 * WASM_TOLERANCE.meanAbs, `clearly apart from per-tile statistics: ${JSON.stringify(off)}`);
  assert.deepEqual(errors, []);
  await page.close();
});

test('WASM: a decoder with self-attention: the tiled decode computes the attention once for the whole latent, as Node\'s does', async () => {
  // The shipped model with a small SD-structured decoder (GroupNorm, mid-block attention) in place of its own.
  const folder = path.join(siteDir, 'models', 'shapes-attn');
  fs.cpSync(MODEL, folder, { recursive: true });
  fs.writeFileSync(path.join(folder, 'vae_decoder', 'model.onnx'), toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 5, floatType: 'float32', form: 'instance-norm', ...SMALL_VAE_DECODER, midAttention: true })));
  const attnNode = await loadPipeline(folder, { devices: 'cpu', attentionProbe: false });
  closers.push(() => attnNode.close());
  // No attention probe, few steps, estimated statistics (the test above covers them): the attention is the point.
  const { page, errors } = await openDemo(context ?? (await newContext()), site.url, `provider=wasm&workers=1&probe=0&model=${encodeURIComponent(`${site.url}models/shapes-attn/`)}`);
  const vae = { ...TILED_VAE, overlap: 8, stats: 'estimate', attention: 'global' } as const;
  const params = { ...settings(256, 256, 11), steps: 2, method: 'asg' as const, vae, methodOptions: { mask: false } };
  const r = await generateOnPipeline(page, params);
  assert.deepEqual(r.warnings.filter((m) => /VAE/.test(m)), [], 'no fallback warning');
  const web = await rgbOfPng(r.png);
  const d = compareRgb(web, (await attnNode.generate(params)).image);
  const tile = compareRgb(web, (await attnNode.generate({ ...params, vae: { ...vae, attention: 'tile' } })).image);
  console.log(`# 256x256 tiled decode, decoder with attention (global, estimated statistics): browser ${r.decodeMs.toFixed(0)} ms; against Node's: mean |diff| ${d.meanAbs.toFixed(4)}, max ${d.maxAbs}; against Node's per-tile attention: mean ${tile.meanAbs.toFixed(4)}, max ${tile.maxAbs}`);
  assert.ok(d.meanAbs <= WASM_TOLERANCE.meanAbs && d.maxAbs <= WASM_TOLERANCE.maxAbs, `within ${JSON.stringify(WASM_TOLERANCE)} of Node's tiled decode: ${JSON.stringify(d)}`);
  assert.ok(tile.maxAbs >= 4 * WASM_TOLERANCE.maxAbs && tile.meanAbs >= 4 * WASM_TOLERANCE.meanAbs, `clearly apart from per-tile attention: ${JSON.stringify(tile)}`);
  assert.deepEqual(errors, []);
  await page.close();
});

test('WASM: a float16 decoder whose config sets force_upcast runs in float32 in the device worker, as in Node', async () => {
  // The shipped model with a small SD-structured float16 decoder whose activations pass float16's range (as SDXL's
  // VAE does): as exported it decodes to NaN, drawn black (test/float32-vae.test.ts).
  const folder = path.join(siteDir, 'models', 'shapes-f16-vae');
  fs.cpSync(MODEL, folder, { recursive: true });
  fs.writeFileSync(path.join(folder, 'vae_decoder', 'model.onnx'), toBinary(ModelProtoSchema, buildGroupNormVaeDecoder({ seed: 3, floatType: 'float16', form: 'instance-norm', ...SMALL_VAE_DECODER, inputGain: 1e4 })));
  const config = path.join(folder, 'vae_decoder', 'config.json');
  fs.writeFileSync(config, JSON.stringify({ ...JSON.parse(fs.readFileSync(config, 'utf8')), force_upcast: true }));
  const { page, errors } = await openDemo(context ?? (await newContext()), site.url, `provider=wasm&workers=1&probe=0&model=${encodeURIComponent(`${site.url}models/shapes-f16-vae/`)}`);
  const notes = (await page.evaluate('window.asgdDemo.pipeline.info.notes')) as string[];
  assert.ok(notes.some((n) => /^vae_decoder is a float16 export and the VAE config sets force_upcast: it runs in float32 \(93 tensors converted\)$/.test(n)), notes.join(' | '));
  const params = { ...settings(128, 128, 3), steps: 2, method: 'asg' as const, methodOptions: { mask: false } };
  const r = await generateOnPipeline(page, params);
  assert.deepEqual(r.warnings, []);
  const f16Node = await loadPipeline(folder, { devices: 'cpu', attentionProbe: false });
  closers.push(() => f16Node.close());
  const ref = await f16Node.generate(params);
  const web = await rgbOfPng(r.png);
  const d = compareRgb(web, ref.image);
  console.log(`# 128x128 with a float16 decoder run in float32: against Node's: mean |diff| ${d.meanAbs.toFixed(4)}, max ${d.maxAbs}`);
  assert.ok(d.meanAbs <= WASM_TOLERANCE.meanAbs && d.maxAbs <= WASM_TOLERANCE.maxAbs, `within ${JSON.stringify(WASM_TOLERANCE)} of Node's: ${JSON.stringify(d)}`);
  assert.ok(web.data.some((v) => v > 0), 'not the black of a float16 overflow');
  assert.deepEqual(errors, []);
  await page.close();
});
