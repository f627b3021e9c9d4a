/**
 * The fleet's faults, with fake-engine workers in their own processes and a redis-server of the test's own with
 * an append-only file: a worker whose event loop is blocked past its lock (exactly one output, its late
 * completion rejected); a worker SIGKILLed mid-job (the job completes on another worker, one output); Redis
 * restarted mid-run (server and workers reconnect, every job completes once). Short lock timings keep it fast.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { serve, type RunningServer } from '../src/server/serve.ts';
import { AsgdError } from '../src/core/errors.ts';
import type { JobRecord } from '../src/server/queue.ts';
import { api, fakeModelDir, outputFiles, waitFor } from './helpers/fleet.ts';
import { tempDir } from './helpers/models.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';

const HELPER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'fleet-worker.ts');
const PREFIX = 'faults';
const TIMINGS = { lockDurationMs: 1500, stalledIntervalMs: 500, heartbeatMs: 300, progressIntervalMs: 50 };

interface WorkerProc {
  child: ChildProcess;
  id: string;
  out: () => string;
}

let redis: TestRedis;
let server: RunningServer;
const outputs = tempDir('faults-outputs');
const model = fakeModelDir('fake-64');
const procs: WorkerProc[] = [];

async function spawnWorker(extra: Record<string, unknown> = {}): Promise<WorkerProc> {
  const cfg = { queue: redis.url, prefix: PREFIX, outputsDir: outputs, modelDirs: [model], stepMs: 50, timings: TIMINGS, ...extra };
  const child = spawn(process.execPath, ['--import', 'tsx', HELPER, JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const id = await waitFor('a worker process to be ready', async () => /ready (\S+)/.exec(out)?.[1] ?? (child.exitCode !== null ? Promise.reject(new Error(out)) : undefined), 60_000, 50);
  const p = { child, id, out: () => out };
  procs.push(p);
  return p;
}

const exited = (c: ChildProcess) => new Promise<void>((resolve) => (c.exitCode !== null || c.signalCode !== null ? resolve() : c.once('exit', () => resolve())));

before(async () => {
  redis = await startRedis({ appendonly: true });
  server = await serve({ port: 0, host: '127.0.0.1', outputsDir: outputs, modelDirs: [], pipeline: {}, queue: redis.url, prefix: PREFIX });
});

after(async () => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill('SIGKILL');
  await Promise.all(procs.map((p) => exited(p.child)));
  await server?.close();
  await redis?.stop();
});

const a = () => api(server.url);
/** A job read that tolerates the API failing while Redis is down. */
const tryJob = async (id: string): Promise<JobRecord | undefined> => {
  try {
    return await a().job(id);
  } catch {
    return undefined;
  }
};

test('a worker whose event loop is blocked past its lock: the job completes once on another worker; the late completion is rejected', { timeout: 90_000 }, async () => {
  const blocked = await spawnWorker({ blockMs: 5000, blockAtStep: 2 });
  const id = await a().queue({ prompt: 'blocked worker', seed: '1', steps: 16 });
  await waitFor('the job to run on the worker that will block', async () => (await a().job(id)).state === 'running');
  const other = await spawnWorker();
  const done = await a().finished(id, 60_000);
  assert.equal(done.state, 'completed', JSON.stringify(done.error));
  assert.ok(done.attempts >= 2, `attempts ${done.attempts}`);
  await waitFor('the blocked worker to wake up and reject its late result', async () => /job \S+: lock lost/.test(blocked.out()), 30_000);
  assert.match(blocked.out(), new RegExp(`job ${id}: lock lost`));
  assert.deepEqual(outputFiles(outputs), [done.output], 'exactly one output');
  assert.equal((await a().job(id)).output, done.output);
  assert.ok(other.id !== blocked.id);
});

test('a worker SIGKILLed mid-job: another worker completes the job, with one output', { timeout: 90_000 }, async () => {
  const id = await a().queue({ prompt: 'killed worker', seed: '2', steps: 40 });
  const runner = await waitFor('the job to run', async () => {
    const s = await a().fleet();
    return s.workers.find((w) => w.running.some((r) => r.jobId === id));
  });
  await waitFor('a few steps', async () => ((await a().job(id)).progress?.step ?? 0) >= 3);
  const victim = procs.find((p) => p.id === runner.id)!;
  victim.child.kill('SIGKILL');
  await exited(victim.child);
  const done = await a().finished(id, 60_000);
  assert.equal(done.state, 'completed', JSON.stringify(done.error));
  assert.equal(done.attempts, 2);
  assert.equal(outputFiles(outputs).filter((n) => n.includes(id)).length, 1);
  await waitFor('the dead worker to leave the status view', async () => !(await a().fleet()).workers.some((w) => w.id === victim.id));
});

test('a server whose Redis cannot be reached says so at once and does not start', async () => {
  const t0 = performance.now();
  await assert.rejects(
    serve({ port: 0, host: '127.0.0.1', outputsDir: tempDir('faults-none'), modelDirs: [], pipeline: {}, queue: 'unix:///nonexistent/redis.sock', prefix: PREFIX }),
    (e: unknown) => e instanceof AsgdError && e.kind === 'invalid-argument' && e.parameter === '--queue' &&
      /^Cannot reach the queue's Redis at unix:\/\/\/nonexistent\/redis\.sock \(connect ENOENT \/nonexistent\/redis\.sock\)\. Start Redis there/.test(e.message),
  );
  assert.ok(performance.now() - t0 < 10_000);
});

test('Redis restarted mid-run: the server and the workers reconnect, and every job completes once', { timeout: 120_000 }, async () => {
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) ids.push(await a().queue({ prompt: `through a restart ${i}`, seed: String(10 + i), steps: 8 }));
  await waitFor('the first job', async () => (await a().job(ids[0]!)).state === 'completed');
  const restarted = redis.restart(4000);
  // While Redis is down the API answers at once, 503 saying so (it waited until Redis was back).
  await waitFor('Redis to stop', async () => !fs.existsSync(redis.socket), 30_000, 20);
  const t0 = performance.now();
  const down = await fetch(new URL('/api/v1/jobs', server.url));
  const body = (await down.json()) as { error: string; message: string };
  assert.equal(down.status, 503, JSON.stringify(body));
  assert.equal(body.error, 'queue-unavailable');
  assert.match(body.message, /^The queue's Redis at unix:\/\/.* does not answer \(.*\); queued jobs are kept there: try again once it is back$/);
  assert.ok(performance.now() - t0 < 3500, `answered in ${Math.round(performance.now() - t0)} ms`);
  await restarted;
  for (const id of ids) {
    const j = await waitFor(`job ${id} after the restart`, async () => {
      const r = await tryJob(id);
      return r && ['completed', 'failed', 'cancelled'].includes(r.state) ? r : undefined;
    }, 60_000, 100);
    assert.equal(j.state, 'completed', JSON.stringify(j.error));
    assert.equal(outputFiles(outputs).filter((n) => n.includes(id)).length, 1, `one output for ${id}`);
  }
  // The server relays events again: a new job's stream ends with its completion.
  const late = await a().queue({ prompt: 'after the restart', seed: '99', steps: 4 });
  assert.equal((await a().finished(late)).state, 'completed');
});
