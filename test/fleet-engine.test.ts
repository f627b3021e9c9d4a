/**
 * The fleet with the real engine and the shipped model (models/shapes-128), as users run it from the built
 * package: `asgd serve --queue` and two `asgd worker` processes on a redis-server of the test's own. Six jobs (every
 * method, several sizes, seeds, schedulers) spread over both workers; each output is byte-identical to
 * `asgd generate` in one process for the same settings. Needs `npm run build`.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { api, waitFor } from './helpers/fleet.ts';
import { tempDir } from './helpers/models.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin', 'asgd.js');
const MODEL = path.join(ROOT, 'models', 'shapes-128');

const children: ChildProcess[] = [];
let redis: TestRedis | undefined;
after(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await redis?.stop();
});

function start(args: string[], ready: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = ready.exec(err);
      if (m) resolve({ child, match: m });
    });
    child.on('exit', (code) => reject(new Error(`asgd ${args[0]} exited with ${code}: ${err}`)));
  });
}

// Six jobs that differ in seed, method, size, steps, guidance and scheduler, at the smallest sizes that still
// exercise each method: the native 128x128 for direct, two native-size patches (256x128, 128x256) for the patch
// methods, two steps (stage 1 and stage 2 of the two-stage methods).
const JOBS = [
  { prompt: 'a red circle on a blue background', seed: '1', steps: 3, width: 128, height: 128, method: 'direct' },
  { prompt: 'a green square', seed: '18446744073709551557', steps: 2, width: 128, height: 128, method: 'direct', guidanceScale: 5 },
  { prompt: 'a yellow triangle', seed: '42', steps: 2, width: 256, height: 128, method: 'asg' },
  { prompt: 'a blue square on a yellow background', seed: '7', steps: 2, width: 128, height: 256, method: 'asg', scheduler: 'ddim' },
  { prompt: 'a red circle', seed: '9007199254740993', steps: 2, width: 256, height: 128, method: 'cutdiffusion' },
  { prompt: 'a green circle on a red background', seed: '3', steps: 2, width: 128, height: 256, method: 'multidiffusion' },
];

test('six jobs over two worker processes give files byte-identical to asgd generate in one process', { timeout: 420_000 }, async () => {
  assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'server', 'fleet', 'worker.js')), 'run npm run build first');
  redis = await startRedis();
  const outputs = tempDir('fleet-engine');
  const q = ['--queue', redis.url, '--outputs', outputs];
  const [server] = await Promise.all([
    start(['serve', '--port', '0', ...q], /asgd serve: (http:\/\/\S+)/),
    start(['worker', ...q, '--model', MODEL, '--threads', '1'], /taking jobs/),
    start(['worker', ...q, '--model', MODEL, '--threads', '1'], /taking jobs/),
  ]);
  const a = api(server.match[1]!);
  await waitFor('both workers in the status view', async () => (await a.fleet()).workers.length === 2 || undefined, 20_000);
  const ids = [];
  for (const body of JOBS) ids.push(await a.queue(body));
  assert.equal(new Set(ids).size, JOBS.length, 'six different jobs');
  const done = await Promise.all(ids.map((id) => a.finished(id, 240_000)));
  for (const j of done) assert.equal(j.state, 'completed', JSON.stringify(j.error));
  // The workers' heartbeats (every 2 s) carry the jobs each completed.
  const workers = await waitFor('the heartbeats to count every job', async () => {
    const ws = (await a.fleet()).workers as unknown as { id: string; completed: number }[];
    return ws.reduce((n, w) => n + w.completed, 0) === JOBS.length ? ws : undefined;
  }, 10_000);
  assert.ok(workers.every((w) => w.completed >= 1), `both worker processes ran jobs: ${workers.map((w) => w.completed).join(', ')}`);
  const files = done.map((j) => fs.readFileSync(path.join(outputs, j.output!)));
  assert.equal(new Set(files.map((f) => f.toString('base64'))).size, JOBS.length, 'six different images');

  const refs = tempDir('fleet-engine-ref');
  for (const [i, body] of JOBS.entries()) {
    const ref = path.join(refs, `${i}.png`);
    const flags = Object.entries(body).flatMap(([k, v]) => [`--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`, String(v)]);
    const r = spawnSync(process.execPath, [BIN, 'generate', ...flags, '--model', MODEL, '--threads', '1', '-o', ref, '--quiet'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(files[i]!.equals(fs.readFileSync(ref)), `job ${i} (${body.method} ${body.width}x${body.height}) is byte-identical to asgd generate`);
  }
});
