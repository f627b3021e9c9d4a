/**
 * The page of `asgd serve --queue` in Debian's Chromium: the Fleet panel shows the live worker (its devices,
 * models and counts) and the model's queue depth, a job queued from the API completes, and no console error.
 * Needs `npm run build` (the page is served from dist/web).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { startWorker, type RunningFleetWorker } from '../src/server/fleet/worker.ts';
import { serve, type RunningServer } from '../src/server/serve.ts';
import { api, FAKE_ENGINE, fakeModelDir } from './helpers/fleet.ts';
import { tempDir } from './helpers/models.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'];

let redis: TestRedis | undefined;
let server: RunningServer | undefined;
let worker: RunningFleetWorker | undefined;
let browser: Browser | undefined;
after(async () => {
  await browser?.close();
  await server?.close();
  await worker?.close();
  await redis?.stop();
});

test('the Fleet panel lists the live worker and the queue depth', { timeout: 120_000 }, async () => {
  assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'web', 'index.html')), 'run npm run build first');
  assert.ok(fs.existsSync(CHROMIUM), `Debian's Chromium is needed at ${CHROMIUM}: run \`npm run setup:browser\` as root`);
  redis = await startRedis();
  const outputs = tempDir('fleet-web');
  worker = await startWorker({
    queue: redis.url, outputsDir: outputs, modelDirs: [fakeModelDir('fake-64')], log: () => undefined,
    engine: { module: FAKE_ENGINE, exportName: 'FakeEngine', options: { stepMs: 5 } },
  });
  server = await serve({ port: 0, host: '127.0.0.1', outputsDir: outputs, modelDirs: [], pipeline: {}, queue: redis.url, webDir: path.join(ROOT, 'dist', 'web') });
  const a = api(server.url);
  const id = await a.queue({ prompt: 'for the panel', seed: '3', steps: 4 });
  assert.equal((await a.finished(id)).state, 'completed');

  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(server.url);
  await page.waitForSelector('#fleet:not([hidden]) #fleet-workers tbody tr', { timeout: 30_000 });
  // The job's completion and the worker's beat that says it is free are two writes: the panel (refreshed every
  // 2 s) shows the second within a refresh or two.
  await page.waitForFunction(`document.querySelectorAll('#fleet-workers tbody tr td')[3]?.textContent === 'idle'`, undefined, { timeout: 10_000 })
    .catch(() => undefined);
  const cells = await page.$$eval('#fleet-workers tbody tr td', (tds) => tds.map((td) => td.textContent ?? ''));
  assert.equal(cells[0], worker.id);
  assert.equal(cells[1], 'cpu');
  assert.match(cells[2]!, /^fake-64 \([0-9a-f]{8}\)$/);
  assert.equal(cells[3], 'idle');
  assert.equal(cells[4], '1');
  assert.match(await page.textContent('#fleet-queues') ?? '', /fake-64: 0 waiting, 0 running, 1 done/);
  assert.deepEqual(errors, []);
});
