/**
 * The model families beyond SD 1.x in a real browser: SDXL (two text encoders, time ids) and SD3 (the joint-attention
 * transformer, CLIP-L, CLIP-G and T5, the 16-channel VAE with its shift factor; docs/sd3.md) as the tiny fixtures
 * build them in optimum's layout, served over HTTP to the demo page (demo/, built by Vite) in Debian's Chromium driven
 * by playwright-core, on ONNX Runtime Web's WebAssembly provider. Each image is compared with the Node CPU pipeline's
 * of the same folder and settings, made in this process, and the model's description with Node's.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { loadPipeline, type ModelInfo, type Pipeline } from '../src/node/pipeline.ts';
import { encodeImage } from '../src/node/image/write.ts';
import type { GenerationMetadata } from '../src/core/metadata.ts';
import type { GenerateParams } from '../src/core/params.ts';
import { NO_T5_NOTE } from '../src/core/sd3-config.ts';
import { apiWording } from '../src/core/options/api-wording.ts';
import { buildDemoSite, compareRgb, generateOnDemo, openDemo, rgbOfPng, serveSite, type StaticSite } from './helpers/demo-site.ts';
import { tempDir, tinyModel } from './helpers/models.ts';
import { writeTinySd3Model } from './fixtures/tiny-sd3.ts';

const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
/** WebGPU on: headless Chromium then offers SwiftShader, a fallback adapter (docs/browser.md). */
const WEBGPU_FLAGS = ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];
/**
 * Against the Node CPU image (8-bit levels), as test/browser-engine.test.ts's: ONNX Runtime's WebAssembly kernels round
 * differently from the native CPU kernels, and the denoising carries that through its steps.
 */
const WASM_TOLERANCE = { meanAbs: 0.05, maxAbs: 2 };
const PROMPT = 'a red circle on a blue background';

let site: StaticSite;
let browser: Browser;
let context: BrowserContext;
/** The served folders by name (site/models/<name>/). */
const folders = new Map<string, string>();
const nodePipes = new Map<string, Pipeline>();

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `The browser tests need Debian's Chromium at ${CHROMIUM}: run \`npm run setup:browser\` as root`);
  const siteDir = tempDir('demo-site-families');
  await buildDemoSite(siteDir);
  const models = path.join(siteDir, 'models');
  const sdxl = path.join(models, 'tiny-sdxl');
  fs.cpSync(await tinyModel('sdxl'), sdxl, { recursive: true });
  // A native size of 128 px (SDXL's config says 1024), so that 256 px is twice it, with patches and the mask.
  const unetConfig = JSON.parse(fs.readFileSync(path.join(sdxl, 'unet', 'config.json'), 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(sdxl, 'unet', 'config.json'), JSON.stringify({ ...unetConfig, sample_size: 16 }));
  await writeTinySd3Model(path.join(models, 'tiny-sd3'), { variant: 'sd3' });
  await writeTinySd3Model(path.join(models, 'tiny-sd3-no-t5'), { variant: 'sd3-no-t5' });
  // A FLUX folder: the transformer/ layout, refused by name before any download of a model file.
  const flux = path.join(models, 'tiny-flux');
  await writeTinySd3Model(flux, { variant: 'sd3' });
  const index = JSON.parse(fs.readFileSync(path.join(flux, 'model_index.json'), 'utf8')) as Record<string, unknown>;
  fs.writeFileSync(path.join(flux, 'model_index.json'), JSON.stringify({ ...index, _class_name: 'FluxPipeline' }));
  // T5 listed in model_index.json, its tokenizer served, its model not (deleted to save its size).
  const t5Gone = path.join(models, 'tiny-sd3-t5-gone');
  await writeTinySd3Model(t5Gone, { variant: 'sd3' });
  fs.rmSync(path.join(t5Gone, 'text_encoder_3'), { recursive: true });
  for (const name of ['tiny-sdxl', 'tiny-sd3', 'tiny-sd3-no-t5', 'tiny-flux']) folders.set(name, path.join(models, name));
  site = await serveSite(siteDir);
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
});

after(async () => {
  await context?.close();
  await browser?.close();
  for (const p of nodePipes.values()) await p.close();
  await site?.close();
});

async function nodePipe(name: string): Promise<Pipeline> {
  let p = nodePipes.get(name);
  if (!p) {
    p = await loadPipeline(folders.get(name)!, { devices: 'cpu' });
    nodePipes.set(name, p);
  }
  return p;
}

interface PageRun {
  png: number[];
  metadata: GenerationMetadata;
  warnings: string[];
  /** Per worker: the tasks it ran. */
  stats: { tasks: number }[];
}

/** The page's model description, the fields Node's ModelInfo shares with it. */
type SharedInfo = Pick<ModelInfo, 'family' | 'nativeWidth' | 'nativeHeight' | 'latentChannels' | 'textWidth' | 'patchSize' | 'textEncoders' | 'attentionProbe'> & { notes: string[] };

async function pageInfo(page: Page): Promise<SharedInfo> {
  return JSON.parse((await page.evaluate(`(() => {
    const i = window.asgdDemo.pipeline.info;
    return JSON.stringify({ family: i.family, nativeWidth: i.nativeWidth, nativeHeight: i.nativeHeight, latentChannels: i.latentChannels, textWidth: i.textWidth,
      patchSize: i.patchSize, textEncoders: i.textEncoders, attentionProbe: i.attentionProbe, notes: i.notes });
  })()`)) as string) as SharedInfo;
}

function withoutNotes(info: SharedInfo): Omit<SharedInfo, 'notes'> {
  const { notes: _, ...rest } = info;
  return rest;
}

function sharedOf(info: ModelInfo): Omit<SharedInfo, 'notes'> {
  const { family, nativeWidth, nativeHeight, latentChannels, textWidth, patchSize, textEncoders, attentionProbe } = info;
  return JSON.parse(JSON.stringify({ family, nativeWidth, nativeHeight, latentChannels, textWidth, patchSize, textEncoders, attentionProbe })) as Omit<SharedInfo, 'notes'>;
}

/** Runs `call` ('generate' or 'upscale') on the page's pipeline with `params` (an upscale's image: the PNG `image`). */
async function runInPage(page: Page, call: 'generate' | 'upscale', params: object, image?: Uint8Array): Promise<PageRun> {
  return (await page.evaluate(`(async () => {
    const pipe = window.asgdDemo.pipeline;
    const params = ${JSON.stringify(params)};
    ${image ? `params.image = new Blob([new Uint8Array(${JSON.stringify(Array.from(image))})]);` : ''}
    const r = await pipe.${call}(params);
    return { png: Array.from(r.png), metadata: r.metadata, warnings: r.warnings, stats: pipe.deviceStats };
  })()`)) as PageRun;
}

/** The page's image within the tolerance of Node's, with the same metadata and warnings (in the settings' words). */
async function matchesNode(what: string, r: PageRun, ref: { image: import('../src/core/image.ts').RgbImage; metadata: GenerationMetadata; warnings: string[] }): Promise<void> {
  const d = compareRgb(await rgbOfPng(new Uint8Array(r.png)), ref.image);
  console.log(`# ${what}: against Node's: mean |diff| ${d.meanAbs.toFixed(4)}, max ${d.maxAbs}, ${d.differing} values differ, PSNR ${d.psnr.toFixed(1)} dB`);
  assert.ok(d.meanAbs <= WASM_TOLERANCE.meanAbs && d.maxAbs <= WASM_TOLERANCE.maxAbs, `${what} within ${JSON.stringify(WASM_TOLERANCE)} of Node's: ${JSON.stringify(d)}`);
  assert.deepEqual(r.metadata, ref.metadata);
  assert.deepEqual(r.warnings, ref.warnings.map(apiWording));
}

const asg = (seed: number): GenerateParams => ({ prompt: PROMPT, width: 256, height: 256, seed, steps: 4, method: 'asg' });

test('WASM: an SDXL export (two text encoders, time ids) makes the 256 px asg image Node makes, and is described as Node describes it', async () => {
  const { page, errors } = await openDemo(context, site.url, `provider=wasm&workers=1&model=${encodeURIComponent(`${site.url}models/tiny-sdxl/`)}`);
  const node = await nodePipe('tiny-sdxl');
  const info = await pageInfo(page);
  assert.deepEqual(withoutNotes(info), sharedOf(node.info));
  assert.equal(info.family, 'sdxl');
  assert.equal(info.nativeWidth, 128);
  const params = asg(3);
  await matchesNode('SDXL 256 px asg', await runInPage(page, 'generate', params), await node.generate(params));
  assert.deepEqual(errors, []);
  await page.close();
});

test('WASM: an SD3 export (transformer, CLIP-L, CLIP-G, T5, 16-channel VAE) makes the 256 px asg image Node makes, and upscales a PNG as Node does', async () => {
  const { page, errors, modelRequests } = await openDemo(context, site.url, `provider=wasm&workers=1&model=${encodeURIComponent(`${site.url}models/tiny-sd3/`)}`);
  for (const file of ['transformer/model.onnx', 'text_encoder_3/model.onnx', 'tokenizer_3/tokenizer.json']) {
    assert.ok(modelRequests.some((u) => u.endsWith(`/tiny-sd3/${file}`)), `the page downloads ${file}`);
  }
  const node = await nodePipe('tiny-sd3');
  const info = await pageInfo(page);
  assert.deepEqual(withoutNotes(info), sharedOf(node.info));
  assert.equal(info.family, 'sd3');
  assert.equal(info.latentChannels, 16);
  assert.deepEqual(info.textEncoders, ['text_encoder (CLIP-L)', 'text_encoder_2 (CLIP-G)', 'text_encoder_3 (T5)']);
  assert.equal(info.attentionProbe.available, true, 'the joint-attention probe is built in the device worker');
  assert.ok(info.attentionProbe.layers.length > 0);
  assert.equal(info.notes.includes(NO_T5_NOTE), false);

  const params = asg(5);
  const ref = await node.generate(params);
  assert.equal(ref.metadata.scheduler, 'flow-euler');
  const r = await runInPage(page, 'generate', params);
  await matchesNode('SD3 256 px asg (flow Euler, the mask over CLIP and T5 tokens)', r, ref);

  // The upscale encodes with the VAE's shift factor and decodes with it: Node's image of the same file.
  const source = await encodeImage(ref.image, 'png', ref.metadata);
  const up = { scale: 2, strength: 0.5, steps: 4, seed: 9, method: 'asg' } as const;
  const refUp = await node.upscale({ image: source, ...up });
  const rUp = await runInPage(page, 'upscale', up, source);
  await matchesNode('SD3 256 -> 512 px asg upscale', rUp, refUp);
  assert.equal(rUp.metadata.prompt, PROMPT, 'the prompt is read from the PNG');
  assert.deepEqual(errors, []);
  await page.close();
});

test("WASM: fuseAttention fuses SD3's joint attention in the device worker (the transformer and its probe graph); the image is Node's fused one", async () => {
  const { page: demo, errors } = await openDemo(context, site.url, `provider=wasm&workers=1&fuse=1&model=${encodeURIComponent(`${site.url}models/tiny-sd3/`)}`);
  const fusion = JSON.parse((await demo.evaluate('JSON.stringify(window.asgdDemo.pipeline.info.attentionFusion)')) as string) as { applied: boolean; layers: number; form?: string };
  assert.deepEqual([fusion.applied, fusion.layers, fusion.form], [true, 2, 'padded'], JSON.stringify(fusion));
  const node = await loadPipeline(folders.get('tiny-sd3')!, { devices: 'cpu', fuseAttention: true });
  try {
    assert.deepEqual([node.info.attentionFusion.applied, node.info.attentionFusion.layers], [true, 2]);
    const params = asg(12);
    await matchesNode('SD3 256 px asg, joint attention fused', await runInPage(demo, 'generate', params), await node.generate(params));
  } finally {
    await node.close();
  }
  assert.deepEqual(errors, []);
  await demo.close();
});

test('WASM: an SD3 export without T5 runs with zeros in its place and says so, as Node does', async () => {
  const { page, errors, modelRequests } = await openDemo(context, site.url, `provider=wasm&workers=1&model=${encodeURIComponent(`${site.url}models/tiny-sd3-no-t5/`)}`);
  assert.equal(modelRequests.some((u) => /\/(text_encoder_3|tokenizer_3)\//.test(u)), false, 'nothing of T5 is asked for');
  const node = await nodePipe('tiny-sd3-no-t5');
  const info = await pageInfo(page);
  assert.deepEqual(info.textEncoders, ['text_encoder (CLIP-L)', 'text_encoder_2 (CLIP-G)']);
  assert.ok(info.notes.includes(NO_T5_NOTE), info.notes.join(' | '));
  assert.ok(node.info.notes.includes(NO_T5_NOTE));
  const params: GenerateParams = { ...asg(6), width: 128, height: 128, method: 'direct' };
  await matchesNode('SD3 without T5, 128 px direct', await runInPage(page, 'generate', params), await node.generate(params));
  assert.deepEqual(errors, []);
  await page.close();
});

test("WebGPU (SwiftShader): SD3's transformer with its text conditioning on the device and the joint-attention probe on the adapter: the 256 px asg image is Node's CPU one", async () => {
  const gpuBrowser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: WEBGPU_FLAGS });
  try {
    const gpuContext = await gpuBrowser.newContext();
    const { page, errors } = await openDemo(gpuContext, site.url, `provider=wasm&workers=1&model=${encodeURIComponent(`${site.url}models/tiny-sd3/`)}`);
    const params = { ...asg(8), steps: 2 };
    const r = (await page.evaluate(`(async () => {
      const pipe = await window.asgdDemo.web.loadWebPipeline(${JSON.stringify(`${site.url}models/tiny-sd3/`)}, { provider: 'webgpu' });
      try {
        const g = await pipe.generate(${JSON.stringify(params)});
        const d = await pipe.devices[0].request({ type: 'describe' }, 'describing');
        return { png: Array.from(g.png), warnings: g.warnings, provider: pipe.info.provider, probe: pipe.info.attentionProbe.available, counts: d.deviceConditioning };
      } finally { await pipe.close(); }
    })()`)) as { png: number[]; warnings: string[]; provider: string; probe: boolean; counts: { unet?: { uploads: number } } };
    assert.equal(r.provider, 'webgpu');
    assert.equal(r.probe, true);
    assert.ok((r.counts.unet?.uploads ?? 0) > 0, `the conditioning went to the device: ${JSON.stringify(r.counts)}`);
    const ref = await (await nodePipe('tiny-sd3')).generate(params);
    assert.equal(r.warnings.some((w) => /mask/i.test(w)), false, r.warnings.join(' | '));
    const d = compareRgb(await rgbOfPng(Uint8Array.from(r.png)), ref.image);
    console.log(`# SD3 256 px asg on Chromium's WebGPU adapter (SwiftShader) vs Node cpu: mean ${d.meanAbs.toFixed(4)}, max ${d.maxAbs}`);
    assert.ok(d.maxAbs <= 2 && d.meanAbs < 0.1, JSON.stringify(d));
    assert.deepEqual(errors, []);
  } finally {
    await gpuBrowser.close();
  }
});

test("the demo's Model folder field loads another export (SD3 here) in place of the shipped model, and names a folder it cannot load", async () => {
  const { page, errors } = await openDemo(context, site.url, 'provider=wasm&workers=1');
  assert.match((await page.textContent('#status')) ?? '', /^Ready: shapes-128 \(Stable Diffusion 1\.x\/2\.x, 128 px native\)/);
  await page.fill('[name="model"]', 'models/tiny-sd3/');
  await page.click('#load-model');
  await page.waitForFunction(`/^Ready: tiny-sd3/.test(document.querySelector('#status').textContent)`, undefined, { timeout: 120_000 });
  assert.match((await page.textContent('#status')) ?? '', /^Ready: tiny-sd3 \(Stable Diffusion 3, 128 px native\) on wasm × 1/);
  // The form's sizes are the new model's, and Generate runs it.
  const r = await generateOnDemo(page, { prompt: PROMPT, width: 256, height: 256, seed: 2, steps: 2, method: 'asg' });
  assert.equal(r.metadata.model.name, 'tiny-sd3');
  assert.equal(r.metadata.scheduler, 'flow-euler');
  // A folder that is not there: the status names the file that could not be had; the form stays usable.
  await page.fill('[name="model"]', 'models/no-such-model/');
  await page.press('[name="model"]', 'Enter');
  await page.waitForSelector('body[data-state="error"]', { timeout: 60_000 });
  assert.match((await page.textContent('#status')) ?? '', /^The model could not be loaded: Cannot download model_index\.json/);
  assert.equal(await page.isDisabled('#load-model'), false);
  assert.deepEqual(errors.filter((e) => !/404/.test(e)), []);
  await page.close();
});

test('an SD3 folder that lists T5 but does not serve it: the load fails naming text_encoder_3 and how to load without T5', async () => {
  const page = await context.newPage();
  await page.goto(`${site.url}?provider=wasm&workers=1&model=${encodeURIComponent(`${site.url}models/tiny-sd3-t5-gone/`)}`);
  await page.waitForSelector('body[data-state="error"]', { timeout: 60_000 });
  const status = (await page.textContent('#status')) ?? '';
  assert.match(status, /Cannot download text_encoder_3\/model\.onnx/);
  assert.match(status, /HTTP 404/);
  assert.match(status, /set text_encoder_3 \(and tokenizer_3\) to \[null, null\] in model_index\.json/);
  await page.close();
});

test('a FLUX folder is refused by name when the page loads it, before any model file is downloaded', async () => {
  const page = await context.newPage();
  const modelRequests: string[] = [];
  page.on('request', (r) => void (/\.onnx/.test(r.url()) && modelRequests.push(r.url())));
  await page.goto(`${site.url}?provider=wasm&workers=1&model=${encodeURIComponent(`${site.url}models/tiny-flux/`)}`);
  await page.waitForSelector('body[data-state="error"]', { timeout: 60_000 });
  const status = (await page.textContent('#status')) ?? '';
  assert.match(status, /FLUX exports are not supported/);
  assert.match(status, /tiny-flux/);
  assert.deepEqual(modelRequests, []);
  await page.close();
});
