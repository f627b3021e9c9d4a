/**
 * The page of `asgd serve` in a real browser: Debian's Chromium (/usr/bin/chromium, installed by
 * scripts/setup-browser.sh) driven by playwright-core. The page is built from web/ by Vite for the test; the
 * server runs in this process with the fake engine, and once with the real engine and the shipped model.
 * ASGD_SCREENSHOT=1 also writes docs/webapp.png (1280x800) from the real-engine run.
 */
import assert from 'node:assert/strict';
import sharp from 'sharp';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, afterEach, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { build } from 'vite';
import { METHOD_NAMES } from '../src/core/options/registry.ts';
import { createServer } from '../src/server/app.ts';
import type { Engine } from '../src/server/engine.ts';
import { LibraryEngine } from '../src/server/library-engine.ts';
import { LocalJobQueue } from '../src/server/local-queue.ts';
import type { JobRecord } from '../src/server/queue.ts';
import { buildMetadata } from '../src/core/metadata.ts';
import { resolveParams } from '../src/core/params.ts';
import { encodeImage } from '../src/node/image/write.ts';
import { FAKE_FAIL, FAKE_PROMPT_WORDS, FakeEngine } from './helpers/fake-engine.ts';
import { waitFor } from './helpers/fleet.ts';
import { A1111_TEXT, COMFY_PROMPT, FOOOCUS_PARAMETERS, INVOKE_METADATA, jpegWithUserComment, plainPng, pngWithText } from './helpers/image-texts.ts';
import { tempDir } from './helpers/models.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

let webDir: string;
let browser: Browser;
/** The server with the fake engine most tests share (its gallery grows from test to test). */
let fake: { url: string; outputsDir: string };
const closers: (() => Promise<void>)[] = [];
/**
 * The browser contexts a test opened, closed when it ends: a page left open keeps polling the server and running its
 * timers, so by the later tests a dozen pages would compete for the machine's two cores.
 */
const contexts: BrowserContext[] = [];

afterEach(async () => {
  for (const c of contexts.splice(0)) await c.close().catch(() => undefined);
});

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `The browser tests need Debian's Chromium at ${CHROMIUM}: run \`npm run setup:browser\` as root, or \`sudo apt-get install -y chromium\``);
  webDir = tempDir('web');
  await build({ configFile: path.join(ROOT, 'web', 'vite.config.ts'), logLevel: 'warn', build: { outDir: webDir, emptyOutDir: true } });
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  fake = await startServer(new FakeEngine({ stepMs: 40, devices: ['cpu#0', 'cpu#1'] }));
});

after(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
  await browser?.close();
});

async function startServer(engine: Engine, o: { outputsDir?: string; port?: number; finishedKept?: number } = {}): Promise<{ url: string; outputsDir: string; close: () => Promise<void> }> {
  const outputsDir = o.outputsDir ?? tempDir('web-outputs');
  if (o.port) await portFree(o.port);
  const queue = new LocalJobQueue({ dir: path.join(outputsDir, '.queue'), ...(o.finishedKept ? { finishedKept: o.finishedKept } : {}) });
  const app = await createServer({ queue, engine, outputsDir, webDir });
  await app.listen({ port: o.port ?? 0, host: '127.0.0.1' });
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= (async () => {
      await queue.close();
      await app.close();
      await engine.close();
    })());
  closers.push(close);
  const a = app.server.address();
  return { url: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`, outputsDir, close };
}

/** Waits until `port` can be listened on again (a restart reuses the closed server's port, which another socket may hold a moment). */
async function portFree(port: number): Promise<void> {
  for (let i = 0; ; i++) {
    const err = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      const probe = net.createServer();
      probe.once('error', resolve);
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve(undefined)));
    });
    if (!err) return;
    if (err.code !== 'EADDRINUSE' || i >= 100) throw err;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A page that records console errors and uncaught exceptions. */
async function openPage(url: string): Promise<{ page: Page; errors: string[] }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  contexts.push(context);
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]');
  return { page, errors };
}

async function jobs(url: string): Promise<JobRecord[]> {
  return ((await (await fetch(`${url}/api/v1/jobs`)).json()) as { jobs: JobRecord[] }).jobs;
}

const SEED = '12345678901234567891'; // above 2^53: only exact as a string

test('the page loads with no console error and builds its form from the API schema', async () => {
  const { page, errors } = await openPage(fake.url);
  const methods = await page.$$eval('select[name="method"] option', (os) => os.map((o) => (o as unknown as { value: string }).value));
  assert.deepEqual(methods, [...METHOD_NAMES]);
  assert.equal(await page.inputValue('select[name="method"]'), 'asg');
  assert.ok(await page.$('[name="methodOptions.stageSplit"]'), 'method options are in the advanced section');
  assert.ok(await page.$('[name="vae.tiling"]'));
  assert.equal(await page.getAttribute('[name="steps"]', 'max'), '1000');
  assert.deepEqual(errors, []);
});

test('before the form: a server that needs its token asks for it, a wrong one is said, the right one opens the page', async () => {
  const outputsDir = tempDir('web-token');
  const queue = new LocalJobQueue({ dir: path.join(outputsDir, '.queue') });
  const engine = new FakeEngine({ stepMs: 40 });
  const app = await createServer({ queue, engine, outputsDir, webDir, token: 'sesame' });
  await app.listen({ port: 0, host: '127.0.0.1' });
  closers.push(async () => {
    await queue.close();
    await app.close();
    await engine.close();
  });
  const a = app.server.address();
  const url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/`;
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  await page.goto(url);
  await page.waitForSelector('#token-entry:not([hidden])');
  assert.match(await page.textContent('#start-message') ?? '', /needs its token: open the address `asgd serve` printed/);
  assert.equal(await page.isDisabled('#queue-button'), true, 'nothing to queue before the form');
  assert.equal(await page.$('#fields [name="prompt"]'), null, 'no form yet');
  assert.equal(await page.isVisible('#advanced'), false, 'nor its advanced section');
  await page.fill('#token-input', 'wrong');
  await page.press('#token-input', 'Enter');
  await page.waitForURL(/\?token=wrong$/);
  await page.waitForSelector('#token-entry:not([hidden])');
  assert.match(await page.textContent('#start-message') ?? '', /This token is not the server's/);
  await page.fill('#token-input', 'sesame');
  await page.click('#token-open');
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(new URL(page.url()).searchParams.get('token'), 'sesame');
  assert.ok(await page.$('#fields [name="prompt"]'), 'the form is built');
  assert.equal(await page.$('#start-status'), null, 'the status line is gone');
  assert.equal(await page.isVisible('#advanced'), true);
  assert.equal(await page.isDisabled('#queue-button'), false);
});

test('before the form: while the API cannot be reached the page says so and tries again; then the form is built', async () => {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  let refused = 0;
  await page.route('**/api/v1/openapi.json', (route) => {
    refused++;
    return route.abort('connectionrefused');
  });
  await page.goto(fake.url);
  await page.waitForFunction("/cannot be reached .*Trying again/.test(document.querySelector('#start-message').textContent)", undefined, { polling: 100 });
  assert.equal(await page.isDisabled('#queue-button'), true);
  await new Promise((r) => setTimeout(r, 2500));
  assert.ok(refused >= 2, `tried again: ${refused} requests`);
  await page.unroute('**/api/v1/openapi.json');
  await page.waitForSelector('body[data-ready="true"]', { timeout: 10_000 });
  assert.ok(await page.$('#fields [name="prompt"]'));
  assert.equal(await page.isDisabled('#queue-button'), false);
  assert.deepEqual(errors, []);
});

test('the size placeholders and the native preset follow the selected model; its native size is what an empty size gives', async () => {
  const { page, errors } = await openPage(fake.url);
  const sizes = async () => ({
    width: await page.getAttribute('[name="width"]', 'placeholder'),
    height: await page.getAttribute('[name="height"]', 'placeholder'),
    native: await page.$eval('#f-size option:nth-child(2)', (o) => [(o as unknown as { value: string }).value, o.textContent]),
  });
  assert.deepEqual(await sizes(), { width: '64', height: '64', native: ['64x64', 'native (64)'] });
  await page.selectOption('[name="model"]', 'fake-other');
  assert.deepEqual(await sizes(), { width: '96', height: '80', native: ['96x80', 'native (96)'] });
  await page.selectOption('#f-size', '96x80');
  assert.equal(await page.inputValue('[name="width"]'), '96');
  assert.equal(await page.inputValue('[name="height"]'), '80');
  await page.selectOption('[name="model"]', 'fake-64');
  assert.deepEqual(await sizes(), { width: '64', height: '64', native: ['64x64', 'native (64)'] });
  assert.deepEqual(errors, []);
});

test('narrow windows: no sideways scrolling; two columns, then one as the window narrows, where queueing scrolls to the progress', async () => {
  for (const [width, columns] of [[390, 1], [900, 2], [1280, 3]] as const) {
    const context = await browser.newContext({ viewport: { width, height: 800 } });
    contexts.push(context);
    const page = await context.newPage();
    await page.goto(fake.url);
    await page.waitForSelector('body[data-ready="true"]');
    assert.equal(await page.evaluate('document.documentElement.scrollWidth'), width, `no horizontal overflow at ${width} px`);
    const lefts = await page.$$eval('main > section', (ss) => ss.map((s) => Math.round(s.getBoundingClientRect().left)));
    assert.equal(new Set(lefts).size, columns, `${columns} column(s) at ${width} px: section left edges ${lefts}`);
    if (columns === 1) {
      // The progress is below the form there: queueing scrolls it into view.
      await page.fill('[name="prompt"]', 'on a phone');
      await page.fill('[name="steps"]', '3');
      const nowInView = `(() => { const r = document.querySelector('#current').getBoundingClientRect(); return r.top >= 0 && r.bottom <= innerHeight; })()`;
      assert.equal(await page.evaluate(nowInView), false, 'below the fold before');
      await page.click('#queue-button');
      await page.waitForFunction(nowInView, undefined, { timeout: 10_000 });
    }
    await context.close();
  }
});

test('generate: progress advances, the preview changes, the image lands in the gallery with its seed and metadata', async () => {
  const { page, errors } = await openPage(fake.url);
  await page.evaluate(`(() => {
    const seen = (window.seen = { previews: [], texts: [], devices: [] });
    const preview = document.querySelector('#preview');
    const text = document.querySelector('#progress-text');
    const devices = document.querySelector('#progress-devices');
    new MutationObserver(() => seen.previews.push(preview.getAttribute('src') ?? '')).observe(preview, { attributes: true, attributeFilter: ['src'] });
    new MutationObserver(() => seen.texts.push(text.textContent ?? '')).observe(text, { childList: true, characterData: true, subtree: true });
    // What a person sees of the devices line: shown or not, and its text.
    new MutationObserver(() => seen.devices.push(devices.checkVisibility() ? devices.innerText.replace(/\\s+/g, ' ').trim() : '')).observe(devices, { childList: true, subtree: true, attributes: true });
  })()`);
  await page.fill('[name="prompt"]', 'a red circle on a blue background');
  await page.fill('[name="steps"]', '24');
  await page.fill('[name="seed"]', SEED);
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction(`[...document.querySelectorAll('#gallery figcaption')].some((c) => c.textContent.endsWith('seed ${SEED}'))`, undefined, { timeout: 20_000 });
  const seen = (await page.evaluate('window.seen')) as { previews: string[]; texts: string[]; devices: string[] };
  // The devices line during the run: both devices named, each seen busy in turn, calls counted.
  const lines = seen.devices.filter(Boolean);
  assert.ok(lines.length >= 4, `the devices line was shown ${lines.length} times`);
  assert.ok(lines.every((l) => /^cpu#0 (busy|idle) · \d+ calls? cpu#1 (busy|idle) · \d+ calls?$/.test(l)), `devices lines: ${lines.slice(0, 4).join(' | ')}`);
  assert.ok(lines.some((l) => /cpu#0 busy/.test(l) && /cpu#1 idle/.test(l)), 'cpu#0 busy while cpu#1 idles');
  assert.ok(lines.some((l) => /cpu#1 busy/.test(l) && /cpu#0 idle/.test(l)), 'cpu#1 busy while cpu#0 idles');
  assert.ok(lines.some((l) => /cpu#0 \w+ · 12 calls cpu#1 \w+ · 12 calls/.test(l)), `calls counted up to 12 each: ${lines.at(-1)}`);
  const previews = new Set(seen.previews.filter(Boolean));
  assert.ok(previews.size >= 2, `the preview changed ${previews.size} times`);
  const steps = seen.texts.map((t) => /step (\d+)\/24/.exec(t)?.[1]).filter(Boolean).map(Number);
  assert.ok(new Set(steps).size >= 3, `progress advanced: ${steps.join(',')}`);
  assert.deepEqual(steps, [...steps].sort((a, b) => a - b), 'steps only go forward');
  const figure = page.locator('#gallery figure', { hasText: `seed ${SEED}` });
  assert.equal(await figure.count(), 1);
  await figure.click();
  assert.equal(await page.textContent('dd[data-meta="seed"]'), SEED);
  assert.equal(await page.textContent('dd[data-meta="prompt"]'), 'a red circle on a blue background');
  assert.equal(await page.textContent('dd[data-meta="steps"]'), '24');
  await page.click('#close-viewer');
  assert.deepEqual(errors, []);
});

test('reuse seed and use these settings fill the form exactly (a seed above 2^53 too); the form survives a reload', async () => {
  // An image of its own, queued through the API.
  const r = await fetch(`${fake.url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'a seed to reuse', steps: 13, seed: '18446744073709551001' }) });
  const { id } = (await r.json()) as { id: string };
  let output: string | undefined;
  for (let i = 0; i < 400 && !output; i++) {
    output = (await jobs(fake.url)).find((j) => j.id === id && j.state === 'completed')?.output;
    if (!output) await new Promise((res) => setTimeout(res, 25));
  }
  assert.ok(output, 'the job completed');
  const figure = `#gallery figure[data-name="${output}"]`;
  const { page, errors } = await openPage(fake.url);
  await page.fill('[name="seed"]', '');
  await page.fill('[name="prompt"]', 'something else');
  await page.click(figure);
  await page.click('#reuse-seed');
  assert.equal(await page.inputValue('[name="seed"]'), '18446744073709551001');
  assert.equal(await page.inputValue('[name="prompt"]'), 'something else', 'reuse seed leaves the rest');
  await page.click(figure);
  await page.click('#use-settings');
  assert.equal(await page.inputValue('[name="prompt"]'), 'a seed to reuse');
  assert.equal(await page.inputValue('[name="steps"]'), '13');
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  assert.equal(await page.inputValue('[name="seed"]'), '18446744073709551001');
  assert.equal(await page.inputValue('[name="prompt"]'), 'a seed to reuse');
  assert.equal(await page.locator(figure).count(), 1, 'the gallery is there after a reload');
  assert.deepEqual(errors, []);
});

test('upscale from the viewer: at the API defaults (2x), then 3x with a strength and a prompt; a scale out of range is refused there and queues nothing', async () => {
  const r = await fetch(`${fake.url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'a picture to upscale', steps: 3, width: 64, height: 64, seed: '77' }) });
  const { id } = (await r.json()) as { id: string };
  const output = (await waitFor('the job', async () => (await jobs(fake.url)).find((j) => j.id === id && j.state === 'completed')?.output, 10_000));
  const { page, errors } = await openPage(fake.url);
  const upscaleOf = (scale: number) =>
    waitFor(`the ${scale}x upscale`, async () => (await jobs(fake.url)).find((j) => j.spec.kind === 'upscale' && j.spec.settings['source'] === output && j.state === 'completed' && (j.spec.settings['scale'] ?? 2) === scale), 10_000);
  const widthOf = async (name: string) => ((await (await fetch(`${fake.url}/api/v1/outputs/${name}/metadata`)).json()) as { metadata: { width: number } }).metadata.width;

  await page.click(`#gallery figure[data-name="${output}"]`);
  await page.waitForFunction(`/^64 x 64 → 128 x 128 · \\d+ UNet evaluations/.test(document.querySelector('#upscale-size').textContent)`);
  assert.equal(await page.inputValue('#upscale-scale'), '2', 'the API default');
  assert.equal(await page.inputValue('#upscale-strength'), '0.5', 'the API default');
  assert.match(await page.getAttribute('#upscale-prompt', 'placeholder') ?? '', /a picture to upscale/);
  await page.click('#upscale-output');
  await page.waitForFunction(`!document.querySelector('#viewer').open`);
  const twice = await upscaleOf(2);
  assert.deepEqual(Object.keys(twice.spec.settings).sort(), ['scale', 'source', 'strength']);
  await page.waitForSelector(`#gallery figure[data-name="${twice.output}"]`);
  assert.equal(await widthOf(twice.output!), 128);

  await page.click(`#gallery figure[data-name="${output}"]`);
  await page.fill('#upscale-scale', '0.5');
  // Refused as it is typed (the estimate), and again when queued.
  await page.waitForFunction(`/^Scale: /.test(document.querySelector('#upscale-error').textContent) && document.querySelector('#upscale-size').textContent === ''`);
  await page.click('#upscale-output');
  await page.waitForFunction(`/^Scale: /.test(document.querySelector('#upscale-error').textContent)`);
  assert.ok(await page.$('#viewer[open]'), 'the viewer stays open');
  await page.fill('#upscale-scale', '3');
  await page.waitForFunction(`/^64 x 64 → 192 x 192 · \\d+ UNet evaluations/.test(document.querySelector('#upscale-size').textContent) && document.querySelector('#upscale-error').textContent === ''`);
  await page.fill('#upscale-strength', '0.3');
  await page.fill('#upscale-prompt', 'a sharper picture');
  await page.click('#upscale-output');
  const thrice = await upscaleOf(3);
  assert.deepEqual([thrice.spec.settings['strength'], thrice.spec.settings['prompt']], [0.3, 'a sharper picture']);
  assert.equal(await widthOf(thrice.output!), 192);
  assert.equal((await jobs(fake.url)).filter((j) => j.spec.kind === 'upscale' && j.spec.settings['source'] === output).length, 2, 'the refused one queued nothing');
  assert.deepEqual(errors.filter((e) => !/400 \(Bad Request\)/.test(e)), []);
});

test('a picture of one\'s own: "Add a picture" uploads it into the gallery, opens it, and it upscales from the viewer', async () => {
  const { page, errors } = await openPage(fake.url);
  const png = await sharp({ create: { width: 48, height: 40, channels: 3, background: { r: 20, g: 180, b: 90 } } }).png().toBuffer();
  await page.setInputFiles('#upload', { name: 'mine.png', mimeType: 'image/png', buffer: png });
  await page.waitForFunction(`document.querySelector('#upload-message').textContent.includes('is in the gallery')`);
  const name = /as (upload-[0-9a-f]{16}\.png)/.exec((await page.textContent('#upload-message')) ?? '')?.[1];
  assert.ok(name, await page.textContent('#upload-message') ?? '');
  await page.waitForSelector(`#gallery figure[data-name="${name}"]`);
  await page.waitForSelector('#viewer[open]');
  await page.click('#upscale-output');
  let upscaled: JobRecord | undefined;
  for (let i = 0; i < 400 && !upscaled; i++) {
    upscaled = (await jobs(fake.url)).find((j) => j.spec.kind === 'upscale' && j.spec.settings['source'] === name && j.state === 'completed');
    if (!upscaled) await new Promise((res) => setTimeout(res, 25));
  }
  assert.ok(upscaled?.output, 'the upscale of the upload completed');
  const meta = (await (await fetch(`${fake.url}/api/v1/outputs/${upscaled.output}/metadata`)).json()) as { metadata: { width: number; height: number } };
  assert.deepEqual([meta.metadata.width, meta.metadata.height], [96, 80]);
  // Not a picture: the message says so, the gallery is unchanged.
  await page.setInputFiles('#upload', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not a picture') });
  await page.waitForFunction(`document.querySelector('#upload-message').classList.contains('error')`);
  assert.match(await page.textContent('#upload-message') ?? '', /notes\.png: .*PNG, JPEG or WebP/);
  assert.deepEqual(errors.filter((e) => !/400 \(Bad Request\)/.test(e)), []);
});

test('invalid input is shown at its field and queues nothing', async () => {
  const { page, errors } = await openPage(fake.url);
  const before = (await jobs(fake.url)).length;
  await page.fill('[name="prompt"]', 'x');
  await page.fill('[name="steps"]', '0');
  await page.fill('[name="width"]', '100');
  await page.click('#queue-button');
  assert.match(await page.textContent('.field[data-field="steps"] .field-error') ?? '', /At least 1/);
  assert.match(await page.textContent('.field[data-field="width"] .field-error') ?? '', /multiple of 8/);
  await page.fill('[name="steps"]', '5');
  await page.fill('[name="width"]', '');
  await page.fill('[name="prompt"]', '');
  await page.click('#queue-button');
  assert.match(await page.textContent('.field[data-field="prompt"] .field-error') ?? '', /Required/);
  await page.waitForTimeout(200);
  assert.equal((await jobs(fake.url)).length, before, 'nothing was queued');
  assert.deepEqual(errors, []);
});

test('queue: add while one runs, reorder, remove, and cancel the running job', async () => {
  const { page, errors } = await openPage(fake.url);
  const before = await page.locator('#gallery figure').count();
  await page.fill('[name="seed"]', '1');
  // 'long' runs 1000 steps (the most allowed: 40 s on the fake engine) so that it is still running at the cancel on a
  // busy machine (at 400 steps it once ended before the test reached the cancel).
  for (const [prompt, steps] of [['long', '1000'], ['b', '2'], ['c', '2'], ['d', '2']] as const) {
    await page.fill('[name="prompt"]', prompt);
    await page.fill('[name="steps"]', steps);
    await page.click('#queue-button');
    await page.waitForFunction(`[...document.querySelectorAll('#queue .prompt, #running-prompt')].some((e) => e.textContent === ${JSON.stringify(prompt)})`);
  }
  const order = () => page.$$eval('#queue li .prompt', (es) => es.map((e) => e.textContent));
  assert.deepEqual(await order(), ['b', 'c', 'd']);
  await page.click('#queue li:nth-child(3) .move-up');
  await page.waitForFunction(`document.querySelector('#queue li:nth-child(2) .prompt')?.textContent === 'd'`);
  await page.click('#queue li:nth-child(2) .move-up');
  await page.waitForFunction(`document.querySelector('#queue li:nth-child(1) .prompt')?.textContent === 'd'`);
  assert.deepEqual(await order(), ['d', 'b', 'c']);
  await page.click('#queue li:nth-child(3) .remove');
  await page.waitForFunction(`document.querySelectorAll('#queue li .prompt').length === 2`);
  const queued = (await jobs(fake.url)).filter((j) => j.state === 'queued').map((j) => j.spec.settings['prompt']);
  assert.deepEqual(queued, ['d', 'b'], 'the server has the same order');

  assert.equal(await page.textContent('#running-prompt'), 'long');
  await page.waitForFunction(`/step \\d+\\/1000/.test(document.querySelector('#progress-text')?.textContent ?? '')`);
  await page.click('#cancel');
  // The next jobs run after the cancel.
  await page.waitForFunction(`document.querySelectorAll('#gallery figure').length >= ${before + 2}`, undefined, { timeout: 20_000 });
  const all = await jobs(fake.url);
  assert.equal(all.find((j) => j.spec.settings['prompt'] === 'long')?.state, 'cancelled');
  assert.deepEqual(all.filter((j) => ['b', 'd'].includes(String(j.spec.settings['prompt']))).map((j) => j.state), ['completed', 'completed']);
  assert.equal(all.find((j) => j.spec.settings['prompt'] === 'c'), undefined, 'c was removed');
  assert.deepEqual(errors, []);
});

test('compare: direct and asg on one seed side by side with a split slider; the viewer zooms with the wheel', async () => {
  const { page, errors } = await openPage(fake.url);
  await page.fill('[name="prompt"]', 'compare me');
  await page.fill('[name="steps"]', '4');
  await page.fill('[name="seed"]', '77');
  const before = await page.locator('#gallery figure').count();
  await page.click('#compare-button');
  await page.waitForFunction(`document.querySelectorAll('#gallery figure').length >= ${before + 2}`, undefined, { timeout: 20_000 });
  const outputs = ((await (await fetch(`${fake.url}/api/v1/outputs`)).json()) as { outputs: { name: string; metadata?: { seed: string; method: string; prompt: string } }[] }).outputs;
  const pair = outputs.filter((o) => o.metadata?.prompt === 'compare me');
  assert.deepEqual(pair.map((o) => o.metadata!.method).sort(), ['asg', 'direct']);
  assert.deepEqual(pair.map((o) => o.metadata!.seed), ['77', '77']);

  await page.click(`#gallery figure[data-name="${pair[0]!.name}"]`);
  // Opened fitted and centred; a double click shows it pixel for pixel, another fits it again.
  const view = () => page.evaluate(`(() => {
    const img = document.querySelector('#viewer-image'), port = document.querySelector('#viewport').getBoundingClientRect();
    const [x, y, s] = /translate\\((-?[\\d.]+)px, (-?[\\d.]+)px\\) scale\\(([\\d.]+)\\)/.exec(img.style.transform).slice(1).map(Number);
    const fit = Math.min(port.width / img.naturalWidth, port.height / img.naturalHeight);
    return { s, fit, dx: x - (port.width - img.naturalWidth * s) / 2, dy: y - (port.height - img.naturalHeight * s) / 2, natural: img.naturalWidth };
  })()`) as Promise<{ s: number; fit: number; dx: number; dy: number; natural: number }>;
  await page.waitForFunction(`document.querySelector('#viewer-image').naturalWidth > 0 && document.querySelector('#viewer-image').style.transform.includes('scale(1)') === false`);
  const fitted = await view();
  assert.ok(fitted.natural > 0 && fitted.fit > 1, `a ${fitted.natural} px image in a larger viewer`);
  // The style keeps about 6 significant digits.
  assert.ok(Math.abs(fitted.s / fitted.fit - 1) < 1e-4 && Math.abs(fitted.dx) < 0.05 && Math.abs(fitted.dy) < 0.05, JSON.stringify(fitted));
  await page.dblclick('#viewport');
  assert.equal((await view()).s, 1);
  await page.dblclick('#viewport');
  assert.ok(Math.abs((await view()).s / fitted.fit - 1) < 1e-4);
  // The wheel zooms around the pointer: the image point under it stays there.
  const port = (await page.locator('#viewport').boundingBox())!;
  const pointer = { x: port.x + port.width * 0.4, y: port.y + port.height * 0.6 };
  await page.mouse.move(pointer.x, pointer.y);
  const scaleNow = `Number(/scale\\(([\\d.e+-]+)\\)/.exec(document.querySelector('#viewer-image').style.transform)[1])`;
  const underPointer = () => page.evaluate(`(() => {
    const img = document.querySelector('#viewer-image'), port = document.querySelector('#viewport').getBoundingClientRect();
    const [x, y, s] = /translate\\((-?[\\d.]+)px, (-?[\\d.]+)px\\) scale\\(([\\d.]+)\\)/.exec(img.style.transform).slice(1).map(Number);
    return { s, u: (${pointer.x} - port.left - x) / s, v: (${pointer.y} - port.top - y) / s };
  })()`) as Promise<{ s: number; u: number; v: number }>;
  const start = await underPointer();
  // Once in CI the zoom never showed within 30 s (rAF-polled wait; nothing in the page explains it): poll at an
  // interval, and send the wheel again if it has not arrived.
  for (let tries = 0; (await underPointer()).s === start.s; tries++) {
    assert.ok(tries < 4, 'the viewer never received a wheel event');
    await page.mouse.wheel(0, -600);
    await page.waitForFunction(`${scaleNow} !== ${start.s}`, undefined, { timeout: 5_000, polling: 100 }).catch(() => undefined);
  }
  const zoomed = await underPointer();
  assert.ok(zoomed.s > 2 && zoomed.s <= 32, `zoomed in to ${zoomed.s}`);
  assert.ok(Math.abs(zoomed.u - start.u) < 0.05 && Math.abs(zoomed.v - start.v) < 0.05, JSON.stringify({ start, zoomed }));
  assert.equal(await page.isEnabled('#compare'), true);
  await page.click('#compare');
  await page.waitForSelector('#comparer[open]');
  assert.equal(await page.textContent('#compare-left-label'), 'direct');
  assert.equal(await page.textContent('#compare-right-label'), 'asg');
  const direct = pair.find((o) => o.metadata?.method === 'direct')!;
  assert.match(await page.getAttribute('#compare-left', 'src') ?? '', new RegExp(direct.name));
  await page.evaluate(`(() => { const s = document.querySelector('#compare-slider'); s.value = '30'; s.dispatchEvent(new Event('input')); })()`);
  assert.match(await page.evaluate(`document.querySelector('#compare-left').style.clipPath`) as string, /inset\(0(px)? 70% 0(px)? 0(px)?\)/);
  await page.click('#close-compare');
  assert.deepEqual(errors, []);
});

test('dropping an image loads its settings: this project, AUTOMATIC1111 (PNG, JPEG), ComfyUI, InvokeAI, Fooocus; unknown files get a friendly message', async () => {
  const { page, errors } = await openPage(fake.url);
  const drop = async (name: string, bytes: Uint8Array, type: string) => {
    await page.evaluate(`(() => {
      const bin = atob(${JSON.stringify(Buffer.from(bytes).toString('base64'))});
      const arr = new Uint8Array(bin.length);
      for (let i = 0; i < bin.length; i++) arr[i] = bin.charCodeAt(i);
      const dt = new DataTransfer();
      dt.items.add(new File([arr], ${JSON.stringify(name)}, { type: ${JSON.stringify(type)} }));
      document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    })()`);
    await page.waitForFunction(`document.querySelector('#drop-message').textContent.includes(${JSON.stringify(name)})`);
    return page.textContent('#drop-message');
  };
  const values = () => Promise.all(['prompt', 'negativePrompt', 'width', 'height', 'steps', 'guidanceScale', 'seed', 'scheduler'].map((n) => page.inputValue(`[name="${n}"]`)));

  const p = resolveParams({ prompt: 'ours', width: 1024, height: 512, steps: 21, seed: '18446744073709551557', method: 'direct', methodOptions: { structureWeight: 0.25 } }, { width: 512, height: 512 });
  const ours = await encodeImage({ data: new Uint8Array(8 * 8 * 3), width: 8, height: 8 }, 'webp', buildMetadata(p, { name: 'x', family: 'sd' }, 'ddim', 'test'));
  assert.match(await drop('ours.webp', ours, 'image/webp') ?? '', /asgdiffusion/);
  assert.deepEqual(await values(), ['ours', '', '1024', '512', '21', '7.5', '18446744073709551557', 'ddim']);
  assert.equal(await page.inputValue('[name="method"]'), 'direct');
  assert.equal(await page.inputValue('[name="methodOptions.structureWeight"]'), '0.25');

  assert.match(await drop('a1111.png', await pngWithText({ parameters: A1111_TEXT }), 'image/png') ?? '', /AUTOMATIC1111/);
  assert.deepEqual(await values(), ['a castle on a hill, sunset', 'blurry, low quality', '768', '512', '28', '6.5', '3141592653', 'dpmpp-2m']);
  await page.fill('[name="prompt"]', 'changed');
  assert.match(await drop('a1111.jpg', await jpegWithUserComment(A1111_TEXT), 'image/jpeg') ?? '', /AUTOMATIC1111/);
  assert.equal(await page.inputValue('[name="prompt"]'), 'a castle on a hill, sunset');
  assert.match(await drop('comfy.png', await pngWithText({ prompt: COMFY_PROMPT }), 'image/png') ?? '', /ComfyUI/);
  assert.deepEqual(await values(), ['a bottle with a galaxy inside', 'text, watermark', '640', '448', '20', '8', '8566257', 'euler-ancestral']);
  assert.match(await drop('invoke.png', await pngWithText({ invokeai_metadata: INVOKE_METADATA }), 'image/png') ?? '', /InvokeAI/);
  assert.equal(await page.inputValue('[name="prompt"]'), 'a fox in the snow');
  assert.match(await drop('fooocus.png', await pngWithText({ parameters: FOOOCUS_PARAMETERS }), 'image/png') ?? '', /Fooocus/);
  assert.equal(await page.inputValue('[name="seed"]'), '1234567890123456789');
  assert.equal(await page.inputValue('[name="width"]'), '1152');

  assert.match(await drop('plain.png', await plainPng(), 'image/png') ?? '', /has no generation settings/);
  // A dropped picture can go to the gallery, to upscale it.
  await page.click('#drop-upscale');
  await page.waitForFunction(`document.querySelector('#upload-message').textContent.includes('plain.png is in the gallery')`);
  await page.waitForSelector('#viewer[open]');
  await page.click('#close-viewer');
  assert.match(await drop('notes.txt', new TextEncoder().encode('hello'), 'text/plain') ?? '', /not a PNG, JPEG or WebP image/);
  assert.equal(await page.inputValue('[name="seed"]'), '1234567890123456789', 'an unknown file changes nothing');
  assert.deepEqual(errors, []);
});

test('a progress stream the browser gave up (an error answer) is opened again at the next poll', async () => {
  const server = await startServer(new FakeEngine({ stepMs: 40 }));
  const { page, errors } = await openPage(server.url);
  let refused = 0;
  await page.route('**/api/v1/jobs/*/events*', (route) => (refused++ === 0 ? route.fulfill({ status: 503, body: 'closing' }) : route.continue()));
  await page.fill('[name="prompt"]', 'a long one');
  await page.fill('[name="steps"]', '200');
  await page.click('#queue-button');
  // The first stream is answered 503 (EventSource then stops for good); the page's poll opens a new one. (This waited
  // for step 20 before: the job list's own progress, shown as a stream opens, can be past it already; one CI run saw
  // a single stream request.)
  const deadline = Date.now() + 20_000;
  while (refused < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(refused >= 2, `${refused} stream requests`);
  // The new stream carries the progress on: the step shown moves past the one shown when it opened.
  const stepShown = `Number(/step (\\d+)\\/200/.exec(document.querySelector('#progress-text')?.textContent ?? '')?.[1] ?? -1)`;
  const opened = (await page.evaluate(stepShown)) as number;
  await page.waitForFunction(`${stepShown} > ${opened}`, undefined, { timeout: 20_000 });
  await page.click('#cancel');
  assert.deepEqual(errors.filter((e) => !/status of 503/.test(e)), []);
});

test('the gallery and the queue survive a server restart: the reloaded page shows both, the interrupted job completes', async () => {
  const s1 = await startServer(new FakeEngine({ stepMs: 40 }));
  const port = Number(new URL(s1.url).port);
  const { page, errors } = await openPage(s1.url);
  await page.fill('[name="prompt"]', 'before the restart');
  await page.fill('[name="steps"]', '2');
  await page.click('#queue-button');
  await page.waitForSelector('#gallery figure', { timeout: 20_000 });
  await page.fill('[name="prompt"]', 'interrupted');
  await page.fill('[name="steps"]', '400');
  await page.click('#queue-button');
  await page.waitForFunction(`/step \\d+\\/400/.test(document.querySelector('#progress-text')?.textContent ?? '')`);
  await s1.close();
  const s2 = await startServer(new FakeEngine({ stepMs: 2 }), { outputsDir: s1.outputsDir, port });
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  assert.match(await page.textContent('#gallery figcaption') ?? '', /seed/);
  await page.waitForFunction(`document.querySelectorAll('#gallery figure').length === 2`, undefined, { timeout: 20_000 });
  const all = await jobs(s2.url);
  assert.deepEqual(all.map((j) => [j.spec.settings['prompt'], j.state, j.attempts]).sort(), [['before the restart', 'completed', 1], ['interrupted', 'completed', 2]]);
  // While the server was down the browser logged its failed requests (refused, reset, closed, or 503 from the server while it
  // closed: an event stream reconnecting then, or a poll); the page itself raised nothing.
  const down = /^Failed to load resource: (net::ERR_(CONNECTION_REFUSED|CONNECTION_RESET|CONNECTION_CLOSED|EMPTY_RESPONSE)|the server responded with a status of 503 \(Service Unavailable\))$/;
  assert.deepEqual(errors.filter((e) => !down.test(e)), []);
});

test("under Now: the last image's warnings (also in the viewer), or why the last job failed; nothing after a clean run", async () => {
  const server = await startServer(new FakeEngine({ stepMs: 5 }));
  const { page, errors } = await openPage(server.url);
  const queue = async (prompt: string) => {
    const before = (await jobs(server.url)).length;
    await page.fill('[name="prompt"]', prompt);
    await page.fill('[name="steps"]', '2');
    await page.click('#queue-button');
    const job = await waitFor('the job to finish', async () => {
      const all = await jobs(server.url);
      return all.length > before && ['completed', 'failed'].includes(all[0]!.state) ? all[0] : undefined;
    });
    await page.waitForFunction(`document.querySelector('#idle') && !document.querySelector('#idle').hidden`);
    return job;
  };
  const long = Array.from({ length: FAKE_PROMPT_WORDS + 4 }, (_, i) => `word${i}`).join(' ');
  const warning = `The prompt is too long: 4 word(s) beyond the fake engine's ${FAKE_PROMPT_WORDS} were dropped`;
  const warned = await queue(long);
  assert.deepEqual(warned.warnings, [warning]);
  await page.waitForFunction(`!document.querySelector('#last-job').hidden`);
  assert.equal(await page.textContent('#last-job-title'), 'Notes on the last image:');
  assert.deepEqual(await page.$$eval('#last-job-notes li', (ls) => ls.map((l) => l.textContent)), [warning]);
  await page.click(`#gallery figure[data-name="${warned.output}"]`);
  assert.equal(await page.textContent('dd[data-meta="note"]'), warning);
  await page.click('#close-viewer');

  const failed = await queue(`a red circle ${FAKE_FAIL}`);
  assert.equal(failed.state, 'failed');
  await page.waitForFunction(`/^The last job failed: Device cpu#0 failed/.test(document.querySelector('#last-job-title').textContent)`);
  assert.equal(await page.getAttribute('#last-job-title', 'class'), 'error');
  assert.equal(await page.$$eval('#last-job-notes li', (ls) => ls.length), 0);

  await queue('a red circle');
  await page.waitForFunction(`document.querySelector('#last-job').hidden`);
  // A reload shows the same: it comes from the job list.
  await queue(long);
  await page.reload();
  await page.waitForSelector('body[data-ready="true"]');
  await page.waitForFunction(`!document.querySelector('#last-job').hidden`);
  assert.deepEqual(await page.$$eval('#last-job-notes li', (ls) => ls.map((l) => l.textContent)), [warning]);
  assert.deepEqual(errors, []);
});

test("the page polls only the newest finished jobs; the viewer asks for an older image's own job for its notes", async () => {
  const server = await startServer(new FakeEngine({ stepMs: 1 }));
  const queue = async (prompt: string, seed: number) => {
    const r = await fetch(`${server.url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, steps: 1, seed: String(seed) }) });
    return ((await r.json()) as { id: string }).id;
  };
  const long = Array.from({ length: FAKE_PROMPT_WORDS + 1 }, (_, i) => `word${i}`).join(' ');
  const old = await queue(long, 1);
  let last = '';
  for (let i = 0; i < 21; i++) last = await queue(`later ${i}`, 10 + i);
  await waitFor('every job', async () => ((await jobs(server.url)).find((j) => j.id === last)?.state === 'completed' ? true : undefined), 20_000);
  const { page, errors } = await openPage(server.url);
  const requests: string[] = [];
  page.on('request', (r) => requests.push(new URL(r.url()).pathname + new URL(r.url()).search));
  const oldJob = (await jobs(server.url)).find((j) => j.id === old)!;
  await page.waitForRequest((r) => new URL(r.url()).pathname + new URL(r.url()).search === '/api/v1/jobs?finished=20', { timeout: 10_000 }); // a poll
  await page.click(`#gallery figure[data-name="${oldJob.output}"]`);
  await page.waitForSelector('dd[data-meta="note"]');
  assert.equal(await page.textContent('dd[data-meta="note"]'), `The prompt is too long: 1 word(s) beyond the fake engine's ${FAKE_PROMPT_WORDS} were dropped`);
  assert.ok(requests.includes(`/api/v1/jobs/${old}`), 'asked for its own job');
  assert.deepEqual(errors, []);
});

test('several images in one click: consecutive seeds from the given one (wrapping at 2^64), or from a random one; a bad count queues nothing', async () => {
  const server = await startServer(new FakeEngine({ stepMs: 2 }));
  const { page, errors } = await openPage(server.url);
  await page.fill('[name="prompt"]', 'a batch');
  await page.fill('[name="steps"]', '2');
  await page.fill('[name="seed"]', '18446744073709551614');
  await page.fill('#count', '3');
  await page.waitForFunction(`/^\\d+ UNet evaluations each, 3 images$/.test(document.querySelector('#estimate').textContent)`);
  await page.click('#queue-button');
  const seeds = async () => (await jobs(server.url)).map((j) => String(j.spec.settings['seed'])).sort();
  await waitFor('three jobs', async () => ((await jobs(server.url)).length === 3 ? true : undefined), 10_000);
  assert.deepEqual(await seeds(), ['0', '18446744073709551614', '18446744073709551615']);
  await page.fill('#count', '0');
  await page.click('#queue-button');
  await page.waitForFunction(`/^Images: a whole number from 1 to 16; nothing was queued/.test(document.querySelector('#form-error').textContent)`);
  assert.equal((await jobs(server.url)).length, 3);
  await page.fill('[name="seed"]', '');
  await page.fill('#count', '2');
  await page.click('#queue-button');
  await waitFor('two more jobs', async () => ((await jobs(server.url)).length === 5 ? true : undefined), 10_000);
  const random = (await jobs(server.url)).filter((j) => !['0', '18446744073709551614', '18446744073709551615'].includes(String(j.spec.settings['seed']))).map((j) => BigInt(String(j.spec.settings['seed']))).sort((a, b) => (a < b ? -1 : 1));
  assert.equal(random.length, 2);
  assert.ok(random[1]! - random[0]! === 1n || (random[0] === 0n && random[1] === 2n ** 64n - 1n), `consecutive: ${random}`);
  assert.deepEqual(errors, []);
});

test('delete from the viewer asks first: dismissed, the image stays; confirmed, it leaves the gallery and the folder', async () => {
  const server = await startServer(new FakeEngine({ stepMs: 2 }));
  const r = await fetch(`${server.url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'to delete', steps: 2, seed: '3' }) });
  const { id } = (await r.json()) as { id: string };
  const name = (await waitFor('the job', async () => (await jobs(server.url)).find((j) => j.id === id && j.state === 'completed')?.output, 10_000))!;
  const { page, errors } = await openPage(server.url);
  const asked: string[] = [];
  let answer = false;
  page.on('dialog', (d) => {
    asked.push(d.message());
    void (answer ? d.accept() : d.dismiss());
  });
  await page.click(`#gallery figure[data-name="${name}"]`);
  await page.click('#delete-output');
  assert.deepEqual(asked, [`Delete ${name}? The file is removed from the outputs folder.`]);
  assert.ok(await page.$('#viewer[open]'), 'dismissed: the viewer stays open');
  assert.ok(fs.existsSync(path.join(server.outputsDir, name)));
  answer = true;
  await page.click('#delete-output');
  await page.waitForFunction(`!document.querySelector('#gallery figure[data-name="${name}"]')`);
  assert.equal(fs.existsSync(path.join(server.outputsDir, name)), false);
  assert.equal(asked.length, 2);
  assert.deepEqual(errors, []);
});

test('jobs queued elsewhere (the API, the CLI) reach the gallery, also once the server forgets the oldest finished ones', async () => {
  const server = await startServer(new FakeEngine({ stepMs: 2 }), { finishedKept: 2 });
  const { page, errors } = await openPage(server.url);
  const names: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await fetch(`${server.url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: `from elsewhere ${i}`, steps: 2, seed: String(i) }) });
    const { id } = (await r.json()) as { id: string };
    names.push((await waitFor(`job ${i}`, async () => (await jobs(server.url)).find((j) => j.id === id && j.state === 'completed')?.output, 10_000))!);
    await page.waitForSelector(`#gallery figure[data-name="${names[i]}"]`, { timeout: 10_000 });
  }
  assert.equal((await jobs(server.url)).length, 2, 'the server kept the last two');
  assert.equal(await page.$$eval('#gallery figure', (fs) => fs.length), 4);
  assert.deepEqual(errors, []);
});

test('with the real engine and the shipped model: a 256 px image generated from the page, in the gallery with its seed', { timeout: 300_000 }, async () => {
  const real = await startServer(new LibraryEngine([path.join(ROOT, 'models', 'shapes-128')]));
  const { page, errors } = await openPage(real.url);
  await page.fill('[name="prompt"]', 'a blue square on a yellow background');
  await page.fill('[name="width"]', '256');
  await page.fill('[name="height"]', '256');
  await page.fill('[name="steps"]', '12');
  await page.fill('[name="seed"]', '1');
  await page.waitForFunction(`(() => {
    const e = document.querySelector('#estimate');
    const body = JSON.parse(e?.dataset.for || '{}');
    return body.width === 256 && body.height === 256 && body.steps === 12 && /^\\d+ UNet evaluations$/.test(e.textContent);
  })()`);
  const estimated = Number(await page.getAttribute('#estimate', 'data-units'));
  await page.click('#queue-button');
  await page.waitForFunction(`/denoise/.test(document.querySelector('#progress-text')?.textContent ?? '')`, undefined, { timeout: 120_000 });
  // The devices line names the engine's one device while it denoises.
  await page.waitForFunction(`/^cpu#0 (busy|idle) · \\d+ calls?$/.test(document.querySelector('#progress-devices')?.checkVisibility() ? document.querySelector('#progress-devices').innerText.replace(/\\s+/g, ' ').trim() : '')`, undefined, { timeout: 120_000 });
  await page.waitForSelector('#gallery figure', { timeout: 240_000 });
  assert.match(await page.textContent('#gallery figcaption') ?? '', /256x256 · seed 1$/);
  const done = (await jobs(real.url))[0]!;
  assert.equal(done.progress?.unitsTotal, estimated, 'the estimate before queueing is what the library ran');
  assert.ok(estimated > 12, `asg at 4x the native area runs several units per step (${estimated})`);
  await page.waitForFunction(`/UNet evaluations · about \\d+ s/.test(document.querySelector('#estimate')?.textContent ?? '')`);
  await page.click('#gallery figure');
  assert.equal(await page.textContent('dd[data-meta="seed"]'), '1');
  assert.equal(await page.textContent('dd[data-meta="model"]'), 'shapes-128');
  await page.click('#close-viewer');
  if (process.env['ASGD_SCREENSHOT']) {
    // The main view mid-generation: the finished image in the gallery, the next one forming.
    await page.fill('[name="prompt"]', 'a red circle on a blue background');
    await page.fill('[name="seed"]', '2');
    await page.click('#queue-button');
    await page.waitForFunction(`document.querySelector('#preview')?.complete && document.querySelector('#preview')?.naturalWidth > 0 && /step [4-9]/.test(document.querySelector('#progress-text')?.textContent ?? '')`, undefined, { timeout: 120_000 });
    await page.screenshot({ path: path.join(ROOT, 'docs', 'webapp.png') });
    await page.click('#cancel');
    await page.waitForSelector('#idle:not([hidden])');
  }
  assert.deepEqual(errors, []);
});
