/**
 * The fleet (asgd serve --queue + asgd worker) with the fake engine, on a redis-server of the test's own: no live
 * worker -> 409; a size no worker takes -> 409; idempotent submission; throttled progress in order over SSE with
 * previews from the shared folder and the worker's devices' activity; reordering (priorities); cancelling a
 * running job (no retry) and a queued one; a server restart with the queue and the history intact; the status view.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { AsgdError } from '../src/core/errors.ts';
import { serve, type RunningServer } from '../src/server/serve.ts';
import { progressRelay } from '../src/server/fleet/progress-relay.ts';
import { startWorker, type RunningFleetWorker } from '../src/server/fleet/worker.ts';
import type { JobProgress, JobRecord } from '../src/server/queue.ts';
import { api, FAKE_ENGINE, fakeModelDir, outputFiles, waitFor } from './helpers/fleet.ts';
import { FAKE_PROMPT_WORDS } from './helpers/fake-engine.ts';
import { tempDir } from './helpers/models.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';
import { readEvents } from './helpers/sse.ts';

let redis: TestRedis;
let server: RunningServer;
let worker: RunningFleetWorker | undefined;
const outputs = tempDir('fleet-outputs');
const engineLog = path.join(tempDir('fleet-log'), 'engine.log');
const PREFIX = 'fleet-test';
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const modelDir = fakeModelDir('fake-64');
const startFakeWorker = () => startWorker({
  queue: redis.url, prefix: PREFIX, outputsDir: outputs, modelDirs: [modelDir], maxPixels: { direct: 64 * 64 },
  timings: { progressIntervalMs: 40, heartbeatMs: 500 },
  engine: { module: FAKE_ENGINE, exportName: 'FakeEngine', options: { stepMs: 10, log: engineLog, devices: ['cpu#0', 'cpu#1'] } },
  log: () => undefined,
});
const startServer = () => serve({ port: 0, host: '127.0.0.1', outputsDir: outputs, modelDirs: [], pipeline: {}, queue: redis.url, prefix: PREFIX });

before(async () => {
  redis = await startRedis();
  server = await startServer();
});

after(async () => {
  await server?.close();
  await worker?.close();
  await redis?.stop();
});

const a = () => api(server.url);
const logged = () => (fs.existsSync(engineLog) ? fs.readFileSync(engineLog, 'utf8').split('\n').filter(Boolean) : []);

test('no live worker: a job is refused with 409, not queued to wait forever', async () => {
  const r = await a().post({ prompt: 'nobody to run it', seed: '1' });
  assert.equal(r.status, 409, JSON.stringify(r.json));
  assert.match(r.json.message!, /No live worker/);
  assert.equal((await a().jobs()).length, 0);
  // The page asks for an estimate as it opens: the same answer, not a crash (500).
  const e = await fetch(`${a().url}/api/v1/estimate`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: 'x' }) });
  assert.equal(e.status, 409);
  assert.match(((await e.json()) as { message: string }).message, /^No live worker: start one with `asgd worker --queue/);
});

test('a worker joins: models and devices come from its heartbeat; a size beyond its limit is refused with 409', async () => {
  worker = await startFakeWorker();
  // The server reads the directory every second.
  const models = await waitFor('the model to be listed', async () => {
    const m = (await (await fetch(`${a().url}/api/v1/models`)).json()) as { models: { name: string }[] };
    return m.models.length ? m : undefined;
  });
  assert.deepEqual(models.models.map((m) => m.name), ['fake-64']);
  const devices = (await (await fetch(`${a().url}/api/v1/devices`)).json()) as { devices: { name: string }[] };
  assert.deepEqual(devices.devices.map((d) => d.name), [`${worker.id}/cpu`]);

  const big = await a().post({ prompt: 'too big for direct here', method: 'direct', width: 128, height: 128, seed: '1' });
  assert.equal(big.status, 409, JSON.stringify(big.json));
  assert.match(big.json.message!, /direct at 128x128/);
  const unknown = await a().post({ prompt: 'x', model: 'not-served', seed: '1' });
  assert.equal(unknown.status, 400);
});

test('the same settings and seed give the same job: submitted again, it returns the existing job and output', async () => {
  const body = { prompt: 'idempotent', seed: '18446744073709551615', width: 64, height: 64, steps: 6 };
  const id1 = await a().queue(body);
  const id2 = await a().queue({ ...body });
  assert.equal(id2, id1);
  const done = await a().finished(id1);
  assert.equal(done.state, 'completed', JSON.stringify(done.error));
  assert.equal(done.spec.settings['seed'], '18446744073709551615');
  // Again after completion, and with the defaults spelled out differently: the same job, no new run.
  assert.equal(await a().queue({ ...body, method: 'asg' }), id1);
  assert.equal((await a().job(id1)).output, done.output);
  assert.equal('warnings' in done, false, 'a run without warnings has none');
  assert.equal(logged().filter((l) => l.includes(id1)).length, 1, 'generated once');
  assert.deepEqual(outputFiles(outputs).filter((n) => n.includes(id1)), [done.output]);
  // Its output deleted, the same settings run again (the finished job went with the file).
  assert.equal((await fetch(`${a().url}/api/v1/outputs/${done.output}`, { method: 'DELETE' })).status, 204);
  assert.equal((await fetch(`${a().url}/api/v1/jobs/${id1}`)).status, 404, 'the job that wrote it is forgotten');
  assert.equal(await a().queue(body), id1);
  const again = await a().finished(id1);
  assert.equal(again.state, 'completed', JSON.stringify(again.error));
  assert.equal(logged().filter((l) => l.includes(id1)).length, 2, 'generated again');
  assert.ok(fs.existsSync(path.join(outputs, again.output!)), 'a new output');
  // A different seed is a different job; no seed gets a random one, chosen at submission (decimal string).
  assert.notEqual(await a().queue({ ...body, seed: '5' }), id1);
  const random = await a().job(await a().queue({ prompt: 'random seed', steps: 2 }));
  assert.match(String(random.spec.settings['seed']), /^\d+$/);
});

test("a run's warnings travel from the worker's engine process to the job record", async () => {
  const long = Array.from({ length: FAKE_PROMPT_WORDS + 2 }, (_, i) => `word${i}`).join(' ');
  const done = await a().finished(await a().queue({ prompt: long, seed: '2', width: 64, height: 64, steps: 2 }));
  assert.equal(done.state, 'completed', JSON.stringify(done.error));
  assert.deepEqual(done.warnings, [`The prompt is too long: 2 word(s) beyond the fake engine's ${FAKE_PROMPT_WORDS} were dropped`]);
  // The newest finished job alone, as the page polls (from each model's queue only as many as asked for).
  const newest = (await (await fetch(`${a().url}/api/v1/jobs?finished=1`)).json()) as { jobs: JobRecord[] };
  assert.ok((await a().jobs()).filter((j) => j.state === 'completed').length > 1);
  assert.deepEqual(newest.jobs.map((j) => j.id), [done.id]);
});

test('progress reaches the SSE stream throttled and in order, with previews from the shared folder', async () => {
  const id = await a().queue({ prompt: 'progress', seed: '77', steps: 30 });
  const events = await readEvents(`${a().url}/api/v1/jobs/${id}/events`);
  const last = events.at(-1)!;
  assert.equal(last.event, 'state');
  assert.equal((last.data as JobRecord).state, 'completed');
  const progress = events.filter((e) => e.event === 'progress').map((e) => e.data as JobProgress);
  assert.ok(progress.length >= 3, `${progress.length} progress events`);
  // At most one event per engine report (the throttle itself is checked on its own below, without timing).
  assert.ok(progress.length <= 30 + 3 + 15, `${progress.length} progress events for 30 steps and 15 previews`);
  const order = ['load', 'text', 'denoise', 'decode', 'save'];
  for (let i = 1; i < progress.length; i++) {
    const [p, q] = [progress[i - 1]!, progress[i]!];
    assert.ok(order.indexOf(q.phase) >= order.indexOf(p.phase), `phase ${p.phase} -> ${q.phase}`);
    assert.ok(q.step >= p.step, `step ${p.step} -> ${q.step}`);
    assert.ok(q.previewRevision >= p.previewRevision);
  }
  assert.equal(progress.filter((p) => p.phase === 'denoise').at(-1)!.step, 30, 'the last step is flushed');
  // The worker's devices' activity comes through: both named in every denoise event, busy in turn, calls counted.
  const denoise = progress.filter((p) => p.phase === 'denoise');
  for (const p of denoise) assert.deepEqual(p.devices?.map((d) => d.id), ['cpu#0', 'cpu#1'], JSON.stringify(p));
  assert.ok(denoise.some((p) => p.devices!.some((d) => d.busy)), 'a device seen busy');
  assert.deepEqual(denoise.at(-1)!.devices!.map((d) => [d.busy, d.calls]), [[false, 15], [false, 15]], 'after the last step: both idle, 15 calls each');
  assert.ok(progress.at(-1)!.previewRevision >= 2, 'previews were counted');
  const ids = events.map((e) => e.id!).filter((e) => e !== '0-0');
  assert.equal(new Set(ids).size, ids.length, 'event ids are unique');
  const preview = await fetch(`${a().url}/api/v1/jobs/${id}/preview`);
  assert.equal(preview.status, 200);
  assert.equal(preview.headers.get('content-type'), 'image/png');
});

test('the progress relay sends at most one update per interval, a new phase or stage and previews at once, in order, and flushes the last', async () => {
  const sent: JobProgress[] = [];
  const relay = progressRelay({ updateProgress: async (p) => void sent.push(p as JobProgress) }, 60_000, async () => undefined);
  const at = (phase: JobProgress['phase'], stage: number, step: number) => ({ phase, stage, step, totalSteps: 100, unitsDone: step, unitsTotal: 100 });
  relay.report(at('load', 1, 0));
  relay.report(at('denoise', 1, 1));
  for (let step = 2; step <= 50; step++) relay.report(at('denoise', 1, step));
  relay.preview();
  for (let step = 51; step <= 80; step++) relay.report(at('denoise', 1, step));
  relay.report(at('denoise', 2, 81));
  for (let step = 82; step <= 100; step++) relay.report(at('denoise', 2, step));
  await relay.flush();
  assert.deepEqual(sent.map((p) => [p.phase, p.stage, p.step, p.previewRevision]), [
    ['load', 1, 0, 0], ['denoise', 1, 1, 0], ['denoise', 1, 50, 1], ['denoise', 2, 81, 1], ['denoise', 2, 100, 1],
  ]);
});

test('a client that drops mid-stream and resumes with Last-Event-ID gets what followed, nothing twice', async () => {
  const id = await a().queue({ prompt: 'resume', seed: '78', steps: 60 });
  const first = await readEvents(`${a().url}/api/v1/jobs/${id}/events`, {
    stop: (e) => e.event === 'progress' && (e.data as JobProgress).step >= 10,
  });
  await new Promise((r) => setTimeout(r, 150));
  const rest = await readEvents(`${a().url}/api/v1/jobs/${id}/events`, { lastEventId: first.at(-1)!.id! });
  assert.equal(rest[0]!.event, 'progress', 'the resumed stream starts with what followed, not a snapshot');
  const all = [...first, ...rest];
  const ids = all.map((e) => e.id!);
  assert.equal(new Set(ids).size, ids.length, 'no event twice');
  const steps = all.filter((e) => e.event === 'progress').map((e) => (e.data as JobProgress).step);
  for (let i = 1; i < steps.length; i++) assert.ok(steps[i]! >= steps[i - 1]!, `steps in order: ${steps.join(',')}`);
  // Progress is throttled to one update per 40 ms (4 steps of 10 ms): the events kept while no client listened
  // leave no larger gap.
  const lastBefore = (first.at(-1)!.data as JobProgress).step;
  const firstAfter = (rest[0]!.data as JobProgress).step;
  assert.ok(firstAfter - lastBefore <= 8, `resumed at step ${firstAfter} after ${lastBefore}`);
  assert.equal((rest.at(-1)!.data as JobRecord).state, 'completed');
});

test('reordering queued jobs sets their priorities: the moved job runs next', async () => {
  // Long enough that it still runs while the others are queued and moved on a loaded machine; cancelled after.
  const busy = await a().queue({ prompt: 'occupies the worker', seed: '100', steps: 1000 });
  await waitFor('the long job to run', async () => (await a().job(busy)).state === 'running');
  const [j1, j2, j3] = [await a().queue({ prompt: 'first', seed: '101', steps: 2 }), await a().queue({ prompt: 'second', seed: '102', steps: 2 }), await a().queue({ prompt: 'third', seed: '103', steps: 2 })];
  const moved = await fetch(`${a().url}/api/v1/jobs/${j3}`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ position: 0 }) });
  assert.equal(moved.status, 200);
  assert.deepEqual(((await moved.json()) as { queued: string[] }).queued, [j3, j1, j2]);
  const listed = (await a().jobs()).filter((j) => j.state === 'queued').map((j) => j.id);
  assert.deepEqual(listed, [j3, j1, j2]);
  // A running job cannot be moved.
  const notQueued = await fetch(`${a().url}/api/v1/jobs/${busy}`, { method: 'PATCH', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ position: 0 }) });
  assert.equal(notQueued.status, 409);
  assert.equal((await a().job(busy)).state, 'running', 'the long job still ran while the others were moved');
  assert.equal((await (await fetch(`${a().url}/api/v1/jobs/${busy}`, { method: 'DELETE' })).json() as JobRecord).state, 'cancelled');
  const done = await Promise.all([j1, j2, j3].map((id) => a().finished(id)));
  const started = done.map((j) => Date.parse(j.startedAt!));
  assert.ok(started[2]! <= started[0]! && started[0]! <= started[1]!, `ran in the order third, first, second: ${started.join(', ')}`);
});

test('cancelling a running job stops it on the worker within a model call, and it is not retried; a queued one is cancelled too', async () => {
  const id = await a().queue({ prompt: 'to cancel', seed: '200', steps: 1000 });
  await waitFor('the job to denoise', async () => {
    const j = await a().job(id);
    return j.state === 'running' && (j.progress?.step ?? 0) >= 2;
  });
  const queued = await a().queue({ prompt: 'queued behind', seed: '201', steps: 4 });
  const t0 = Date.now();
  const r = await fetch(`${a().url}/api/v1/jobs/${id}`, { method: 'DELETE' });
  const ms = Date.now() - t0;
  assert.equal(r.status, 200);
  const rj = (await r.json()) as JobRecord;
  assert.equal(rj.state, 'cancelled', JSON.stringify(rj));
  assert.ok(ms < 3000, `cancelled in ${ms} ms`);
  const next = await a().finished(queued);
  assert.equal(next.state, 'completed', 'the next job runs');
  const j = await a().job(id);
  assert.equal(j.state, 'cancelled');
  assert.equal(j.attempts, 1, 'not retried');
  assert.ok(!outputFiles(outputs).some((n) => n.includes(id)), 'no output');
  assert.ok(!logged().some((l) => l.includes(id)));

  const busy = await a().queue({ prompt: 'busy again', seed: '202', steps: 40 });
  await waitFor('busy', async () => (await a().job(busy)).state === 'running');
  const waiting = await a().queue({ prompt: 'never runs', seed: '203', steps: 4 });
  const c = (await (await fetch(`${a().url}/api/v1/jobs/${waiting}`, { method: 'DELETE' })).json()) as JobRecord;
  assert.equal(c.state, 'cancelled');
  await a().finished(busy);
  assert.equal((await a().job(waiting)).state, 'cancelled');
  assert.ok((await a().jobs()).some((x) => x.id === waiting && x.state === 'cancelled'), 'listed as cancelled');
  // Removing a finished job forgets it.
  assert.equal((await fetch(`${a().url}/api/v1/jobs/${waiting}`, { method: 'DELETE' })).status, 204);
  assert.equal((await fetch(`${a().url}/api/v1/jobs/${waiting}`)).status, 404);
});

test('an output is upscaled on a worker (the source is read from the shared folder); a cancelled job submitted again runs again', async () => {
  const src = await a().finished(await a().queue({ prompt: 'to upscale', seed: '500', steps: 2, width: 64, height: 64 }));
  const r = await fetch(`${a().url}/api/v1/outputs/${src.output}/upscale`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ scale: 2, steps: 2, seed: '501' }) });
  assert.equal(r.status, 202, await r.clone().text());
  const up = await a().finished(((await r.json()) as { id: string }).id);
  assert.equal(up.state, 'completed', JSON.stringify(up.error));
  assert.equal(up.spec.kind, 'upscale');
  const meta = (await (await fetch(`${a().url}/api/v1/outputs/${up.output}/metadata`)).json()) as { metadata: { width: number } };
  assert.equal(meta.metadata.width, 128);

  const body = { prompt: 'cancelled, then again', seed: '502', steps: 1000 };
  const id = await a().queue(body);
  await waitFor('running', async () => ((await a().job(id)).progress?.step ?? 0) >= 1);
  assert.equal(((await (await fetch(`${a().url}/api/v1/jobs/${id}`, { method: 'DELETE' })).json()) as JobRecord).state, 'cancelled');
  assert.equal(await a().queue({ ...body, steps: 3 }) === id, false, 'other settings, another job');
  assert.equal(await a().queue(body), id, 'the same settings: the same job, queued again');
  await waitFor('running again', async () => (await a().job(id)).state === 'running');
  assert.equal(((await (await fetch(`${a().url}/api/v1/jobs/${id}`, { method: 'DELETE' })).json()) as JobRecord).state, 'cancelled');
});

test('the status view lists the live worker, its devices and models, and the queue depths', async () => {
  const s = (await (await fetch(`${a().url}/api/v1/fleet`)).json()) as {
    workers: { id: string; devices: { name: string }[]; models: { name: string; hash: string }[]; maxPixels: Record<string, number> }[];
    queues: { queue: string; model?: string; counts: Record<string, number> }[];
  };
  assert.equal(s.workers.length, 1);
  assert.equal(s.workers[0]!.id, worker!.id);
  assert.deepEqual(s.workers[0]!.models.map((m) => m.name), ['fake-64']);
  assert.match(s.workers[0]!.models[0]!.hash, /^[0-9a-f]{64}$/);
  assert.equal(s.workers[0]!.maxPixels['direct'], 4096);
  assert.equal(s.queues.length, 1);
  assert.equal(s.queues[0]!.model, 'fake-64');
  assert.ok(s.queues[0]!.counts['completed']! >= 5);
  assert.ok(s.queues[0]!.counts['failed']! >= 2, 'cancelled running jobs are failed in BullMQ');
});

test('a restarted server finds the queue and the history in Redis; queued jobs complete', async () => {
  const busy = await a().queue({ prompt: 'running across the restart', seed: '300', steps: 100 });
  await waitFor('busy', async () => (await a().job(busy)).state === 'running');
  const queued = [await a().queue({ prompt: 'q1', seed: '301', steps: 3 }), await a().queue({ prompt: 'q2', seed: '302', steps: 3 })];
  const before = (await a().jobs()).map((j) => j.id).sort();
  await server.close();
  server = await startServer();
  const after = await a().jobs();
  assert.deepEqual(after.map((j) => j.id).sort(), before);
  for (const id of [busy, ...queued]) assert.equal((await a().finished(id)).state, 'completed');
  const history = (await a().jobs()).filter((j) => j.state === 'completed');
  for (const j of history) assert.ok(fs.existsSync(path.join(outputs, j.output!)), `${j.output} exists`);
  // Exactly one file per completed job, no temporary file left.
  assert.equal(outputFiles(outputs).length, history.length);
  assert.deepEqual(fs.readdirSync(path.join(outputs, '.fleet-tmp')), []);
});

test('a worker that stops (Ctrl-C) puts its running job back in the queue; the next worker completes it', async () => {
  const id = await a().queue({ prompt: 'interrupted by a worker stop', seed: '400', steps: 300 });
  await waitFor('the job to denoise', async () => ((await a().job(id)).progress?.step ?? 0) >= 2);
  await worker!.close();
  assert.equal((await a().job(id)).state, 'queued');
  worker = await startFakeWorker();
  const done = await a().finished(id);
  assert.equal(done.state, 'completed', JSON.stringify(done.error));
  assert.equal(done.attempts, 2);
  assert.equal(outputFiles(outputs).filter((n) => n.includes(id)).length, 1);
});

test('routing by model: a job for a model only another worker serves goes to that worker, and runs with that model', async () => {
  const other = await startWorker({
    queue: redis.url, prefix: PREFIX, outputsDir: outputs, modelDirs: [fakeModelDir('fake-other')],
    timings: { heartbeatMs: 500 }, engine: { module: FAKE_ENGINE, exportName: 'FakeEngine', options: { stepMs: 10 } }, log: () => undefined,
  });
  try {
    const id = await a().queue({ prompt: 'on the other model', model: 'fake-other', seed: '600', steps: 3 });
    const done = await a().finished(id);
    assert.equal(done.state, 'completed', JSON.stringify(done.error));
    assert.equal(done.spec.model, 'fake-other');
    assert.notEqual(done.lane, (await a().job(await a().queue({ prompt: 'on the first model', model: 'fake-64', seed: '601', steps: 1 }))).lane, 'one queue per model');
    const meta = (await (await fetch(`${a().url}/api/v1/outputs/${done.output}/metadata`)).json()) as { metadata: { model: { name: string } } };
    assert.equal(meta.metadata.model.name, 'fake-other');
    const s = await a().fleet();
    assert.equal(s.workers.length, 2);
    assert.equal(s.workers.find((w) => w.id === other.id)!.models[0]!.name, 'fake-other');
  } finally {
    await other.close();
  }
  // Its worker gone, the model is still known (400 would say unknown) but no live worker serves it: 409.
  await waitFor('the other worker to leave', async () => (await a().fleet()).workers.length === 1);
  const r = await a().post({ prompt: 'x', model: 'fake-other', seed: '602' });
  assert.equal(r.status, 409, JSON.stringify(r.json));
  assert.match(r.json.message!, /No live worker serves model fake-other/);
});

test('a worker refuses a model whose name a live worker serves with other content, and a server seeing both answers 409 naming them', async () => {
  assert.ok(worker, 'the fake-64 worker is live');
  // Same folder name, other weights: jobs naming fake-64 could not be told apart.
  const twin = fakeModelDir('fake-64');
  fs.writeFileSync(path.join(twin, 'weights.bin'), 'newer weights');
  await assert.rejects(
    startWorker({ queue: redis.url, prefix: PREFIX, outputsDir: outputs, modelDirs: [twin], engine: { module: FAKE_ENGINE, exportName: 'FakeEngine' }, log: () => undefined }),
    (e: unknown) => e instanceof AsgdError && e.parameter === '--model' && e.message.startsWith(`Worker ${worker!.id} (`)
      && /serves another model named fake-64: content hash [0-9a-f]{12}, this folder's [0-9a-f]{12}\. Jobs name a model by its folder's name: give this folder another name/.test(e.message),
  );
  assert.ok(!(await a().fleet()).workers.some((w) => w.id !== worker!.id), 'the refused worker never joined');
  // Two workers that started at the same moment both got in: the server refuses to choose between them.
  const mine = (await a().fleet()).workers.find((w) => w.id === worker!.id)!;
  const r0 = await a().post({ prompt: 'which one', model: 'fake-64', seed: '700', steps: 1 });
  assert.equal(r0.status, 202, JSON.stringify(r0.json));
  const { writeBeat, removeBeat } = await import('../src/server/fleet/directory.ts');
  const { Redis } = await import('ioredis');
  const client = new Redis({ path: redis.socket });
  const beat = { ...mine, id: 'racing-worker', models: mine.models.map((m) => ({ ...m, hash: 'f'.repeat(64) })) } as unknown as Parameters<typeof writeBeat>[2];
  try {
    await writeBeat(client, PREFIX, beat, 60_000);
    await new Promise((r) => setTimeout(r, 1100));
    const r = await a().post({ prompt: 'which one', model: 'fake-64', seed: '701', steps: 1 });
    assert.equal(r.status, 409, JSON.stringify(r.json));
    assert.match(r.json.message!, /^Live workers serve different models named fake-64 \(.*\): stop one side, or start it with the folder renamed$/);
    assert.ok(r.json.message!.includes(`${mine.models[0]!.hash.slice(0, 12)} on ${worker!.id}`) && r.json.message!.includes('ffffffffffff on racing-worker'), r.json.message);
  } finally {
    await removeBeat(client, PREFIX, 'racing-worker');
    client.disconnect();
  }
});

test('a worker whose Redis cannot be reached says so at once; one given a folder the model loader cannot load refuses it before joining', async () => {
  const t0 = performance.now();
  await assert.rejects(
    startWorker({ queue: 'unix:///nonexistent/redis.sock', outputsDir: outputs, modelDirs: [modelDir], engine: { module: FAKE_ENGINE, exportName: 'FakeEngine' } }),
    (e: unknown) => e instanceof AsgdError && e.parameter === '--queue' && /^Cannot reach the queue's Redis at unix:\/\/\/nonexistent\/redis\.sock \(connect ENOENT/.test(e.message),
  );
  assert.ok(performance.now() - t0 < 10_000);
  // The library's engine (no test engine): a model folder without its UNet weights fails every job, so it is refused.
  const weightless = path.join(tempDir('fleet-weightless'), 'no-weights');
  fs.cpSync(path.join(ROOT, 'models', 'shapes-128'), weightless, { recursive: true, filter: (f) => !f.endsWith('.onnx') });
  const before = (await a().fleet()).workers.length;
  await assert.rejects(
    startWorker({ queue: redis.url, prefix: PREFIX, outputsDir: outputs, modelDirs: [weightless] }),
    (e: unknown) => e instanceof AsgdError && e.kind === 'model' && e.parameter === '--model'
      && e.message.startsWith(`--model ${weightless} cannot be served: The model folder has no UNet`),
  );
  await assert.rejects(
    startWorker({ queue: redis.url, prefix: PREFIX, outputsDir: outputs, modelDirs: [modelDir, fakeModelDir('fake-64')], engine: { module: FAKE_ENGINE, exportName: 'FakeEngine' } }),
    /Two --model folders have the same name fake-64/,
  );
  assert.equal((await a().fleet()).workers.length, before);
});

test("mask words are checked before queueing with the tokenizer the model's worker shared: a word not in the prompt is a 400, never a failed job", async () => {
  const dir = fakeModelDir('fake-tok');
  fs.cpSync(path.join(ROOT, 'models', 'shapes-128', 'tokenizer'), path.join(dir, 'tokenizer'), { recursive: true });
  const tok = await startWorker({
    queue: redis.url, prefix: PREFIX, outputsDir: outputs, modelDirs: [dir],
    timings: { heartbeatMs: 500 }, engine: { module: FAKE_ENGINE, exportName: 'FakeEngine', options: { stepMs: 1 } }, log: () => undefined,
  });
  try {
    const jobsBefore = (await a().jobs()).length;
    // Until the server's next refresh (every second) the model is unknown there (400 naming model); from then on the
    // tokenizer is known with it, so the job is never queued.
    const refused = await waitFor('the server to know the model', async () => {
      const r = await a().post({ prompt: 'a red circle', model: 'fake-tok', maskWords: ['giraffe'], seed: '800', steps: 1 });
      assert.notEqual(r.status, 202, 'queued without the check');
      return (r.json as { field?: string }).field === 'model' ? undefined : r;
    }, 10_000, 100);
    assert.equal(refused.status, 400);
    assert.equal((refused.json as { field?: string }).field, 'maskWords');
    assert.match(refused.json.message!, /The mask word "giraffe" is not in the prompt/);
    const ok = await a().queue({ prompt: 'a red circle', model: 'fake-tok', maskWords: ['circle'], seed: '801', steps: 1 });
    assert.equal((await a().finished(ok)).state, 'completed');
    assert.equal((await a().jobs()).length, jobsBefore + 1, 'only the valid job was queued');
  } finally {
    await tok.close();
  }
});
