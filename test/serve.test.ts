/**
 * `asgd serve` as a user runs it, with the real engine and the shipped model (models/shapes-128): it prints its
 * URL, generates through the API, stops on Ctrl-C mid-job without a partial file, and runs the interrupted job
 * after a restart.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { readImageMetadata } from '../src/node/image/write.ts';
import type { JobRecord } from '../src/server/queue.ts';
import { tempDir } from './helpers/models.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const MODEL = path.join(ROOT, 'models', 'shapes-128');

async function startServe(outputs: string): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), 'serve', '--port', '0', '--outputs', outputs, '--model', MODEL], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /asgd serve: (http:\/\/\S+)/.exec(err);
      if (m) resolve(m[1]!.replace(/\/$/, ''));
    });
    child.on('exit', (code) => reject(new Error(`asgd serve exited with ${code}: ${err}`)));
  });
  return { child, url, stderr: () => err };
}

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v !== undefined) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const getJob = async (url: string, id: string) => (await (await fetch(`${url}/api/v1/jobs/${id}`)).json()) as JobRecord;
const queueJob = async (url: string, body: object) => {
  const r = await fetch(`${url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(r.status, 202, await r.clone().text());
  return ((await r.json()) as { id: string }).id;
};
const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once('exit', (code) => resolve(code))));

test('asgd serve generates a 128 px image with the shipped model; Ctrl-C mid-job leaves no partial file; the job runs after a restart', { timeout: 300_000 }, async () => {
  const outputs = tempDir('serve');
  const s1 = await startServe(outputs);
  assert.match(s1.url, /^http:\/\/127\.0\.0\.1:\d+$/);
  try {
    const models = (await (await fetch(`${s1.url}/api/v1/models`)).json()) as { models: { name: string; nativeWidth: number }[] };
    assert.deepEqual(models.models, [{ name: 'shapes-128', nativeWidth: 128, nativeHeight: 128 }]);
    const page = await fetch(`${s1.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);

    // A prompt beyond the text encoder's 77 tokens: the library's warning reaches the job record.
    const long = `a red circle on a blue background${' and a red circle'.repeat(20)}`;
    const a = await queueJob(s1.url, { prompt: long, steps: 4, seed: '9007199254740993', width: 128, height: 128, method: 'direct' });
    const ja = await waitFor('the first job', async () => {
      const j = await getJob(s1.url, a);
      assert.notEqual(j.state, 'failed', JSON.stringify(j.error));
      return j.state === 'completed' ? j : undefined;
    });
    assert.equal(ja.warnings?.length, 1, JSON.stringify(ja.warnings));
    assert.match(ja.warnings![0]!, /^The prompt is too long: \d+ token\(s\) beyond the model's 75 were dropped$/);
    const file = path.join(outputs, ja.output!);
    const meta = await readImageMetadata(file);
    assert.equal(meta.metadata?.seed, '9007199254740993');
    assert.equal(meta.metadata?.model.name, 'shapes-128');
    const info = await sharp(file).metadata();
    assert.deepEqual([info.width, info.height], [128, 128]);

    // The upscale estimate is what the library runs: size and UNet evaluations (asg at 2x, 6 steps, strength 0.5).
    const upscale = { scale: 2, steps: 6, seed: '4' };
    const post = (url: string, body: object) => fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const est = (await (await post(`${s1.url}/api/v1/outputs/${ja.output}/upscale/estimate`, upscale)).json()) as { width: number; height: number; unetEvaluations: number };
    assert.deepEqual([est.width, est.height], [256, 256]);
    const refused = await post(`${s1.url}/api/v1/outputs/${ja.output}/upscale/estimate`, { ...upscale, scale: 0.5 });
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { field: string }).field, 'scale');
    const u = ((await (await post(`${s1.url}/api/v1/outputs/${ja.output}/upscale`, upscale)).json()) as { id: string }).id;
    const ju = await waitFor('the upscale', async () => {
      const j = await getJob(s1.url, u);
      assert.notEqual(j.state, 'failed', JSON.stringify(j.error));
      return j.state === 'completed' ? j : undefined;
    });
    assert.equal(ju.progress?.unitsTotal, est.unetEvaluations, 'the estimate is what the library ran');
    assert.equal((await sharp(path.join(outputs, ju.output!)).metadata()).width, 256);

    // Cancelling a running job stops it within a model call; the next job loads the model again and runs.
    const c = await queueJob(s1.url, { prompt: 'a cancelled circle', steps: 200, seed: '3', width: 128, height: 128 });
    await waitFor('the job to cancel to denoise', async () => {
      const j = await getJob(s1.url, c);
      return j.state === 'running' && (j.progress?.step ?? 0) >= 1 ? j : undefined;
    });
    const t1 = Date.now();
    const cancelled = (await (await fetch(`${s1.url}/api/v1/jobs/${c}`, { method: 'DELETE' })).json()) as JobRecord;
    assert.equal(cancelled.state, 'cancelled');
    assert.ok(Date.now() - t1 < 5000, `cancelled in ${Date.now() - t1} ms`);

    const b = await queueJob(s1.url, { prompt: 'a green square', steps: 40, seed: '5', width: 128, height: 128 });
    await waitFor('the second job to denoise', async () => {
      const j = await getJob(s1.url, b);
      return j.state === 'running' && j.progress?.phase === 'denoise' ? j : undefined;
    });
    s1.child.kill('SIGINT');
    const t0 = Date.now();
    const code = await exited(s1.child);
    assert.equal(code, 0, s1.stderr());
    assert.ok(Date.now() - t0 < 20_000, `stopped in ${Date.now() - t0} ms`);
  } finally {
    if (s1.child.exitCode === null) s1.child.kill('SIGKILL');
  }
  const files = fs.readdirSync(outputs).filter((n) => n !== '.queue');
  assert.equal(files.length, 2, `only the first output and its upscale, no partial file: ${files.join(', ')}`);

  const s2 = await startServe(outputs);
  try {
    const jobs = (await (await fetch(`${s2.url}/api/v1/jobs`)).json()) as { jobs: JobRecord[] };
    const b = jobs.jobs.find((j) => j.spec.settings['prompt'] === 'a green square');
    assert.ok(b, 'the interrupted job is still there');
    const jb = await waitFor('the interrupted job after the restart', async () => {
      const j = await getJob(s2.url, b.id);
      assert.notEqual(j.state, 'failed', JSON.stringify(j.error));
      return j.state === 'completed' ? j : undefined;
    });
    assert.equal(jb.attempts, 2);
    assert.equal((await readImageMetadata(path.join(outputs, jb.output!))).metadata?.seed, '5');
  } finally {
    s2.child.kill('SIGINT');
    assert.equal(await exited(s2.child), 0);
  }
});

test('asgd serve refuses, at the start, a model folder it could not load and two folders of one name; it creates nothing', async () => {
  const { spawnSync } = await import('node:child_process');
  const weightless = path.join(tempDir('serve-weightless'), 'no-weights');
  fs.cpSync(MODEL, weightless, { recursive: true, filter: (f) => !f.endsWith('.onnx') });
  const twin = path.join(tempDir('serve-twin'), 'shapes-128');
  fs.cpSync(MODEL, twin, { recursive: true });
  const cases: [string[], number, RegExp][] = [
    [[weightless], 3, /^asgd: --model \S+no-weights cannot be served: The model folder has no UNet \(\S+\)\. Expected unet\/model\.onnx/],
    [[path.dirname(weightless)], 3, /^asgd: --model \S+ cannot be served: Unknown model layout: /],
    [[MODEL, twin], 2, /^asgd: Two --model folders have the same name shapes-128 \(\S+ and \S+\)\. Jobs name a model by its folder's name: rename one of them/],
  ];
  for (const [models, code, message] of cases) {
    const outputs = path.join(tempDir('serve-refused'), 'outputs');
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts'), 'serve', '--port', '0', '--outputs', outputs, '--model', ...models], {
      encoding: 'utf8', timeout: 60_000,
    });
    assert.equal(r.status, code, r.stderr);
    assert.match(r.stderr, message);
    assert.ok(!fs.existsSync(outputs), 'no outputs folder or queue state was made');
  }
});
