/**
 * The HTTP API of `asgd serve` with the fake engine: job lifecycle, Server-Sent Events and their resumption,
 * cancel, reorder and remove, persistence across a restart and a crash (SIGKILL), validation, Origin/Host
 * checks, path escapes, and the OpenAPI document built from the option registry.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import { METHOD_OPTIONS, PARAM_OPTIONS, VAE_OPTIONS } from '../src/core/options/registry.ts';
import sharp from 'sharp';
import { encodeImage, readImageMetadata } from '../src/node/image/write.ts';
import { loadPipeline } from '../src/node/pipeline.ts';
import { createServer } from '../src/server/app.ts';
import { outputNameFor } from '../src/server/output-names.ts';
import { LibraryEngine } from '../src/server/library-engine.ts';
import { readModelFolderFacts } from '../src/server/model-facts.ts';
import { LocalJobQueue } from '../src/server/local-queue.ts';
import { serve } from '../src/server/serve.ts';
import type { JobProgress, JobRecord } from '../src/server/queue.ts';
import { FAKE_PROMPT_WORDS, FakeEngine } from './helpers/fake-engine.ts';
import { tempDir } from './helpers/models.ts';
import { readEvents } from './helpers/sse.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));

interface Harness {
  app: FastifyInstance;
  queue: LocalJobQueue;
  engine: FakeEngine;
  stateDir: string;
  outputsDir: string;
  url: string;
}

const open: Harness[] = [];
after(async () => {
  for (const h of open) await h.app.close().catch(() => undefined);
});

async function start(o: { stepMs?: number; stateDir?: string; outputsDir?: string; listen?: boolean; finishedKept?: number } = {}): Promise<Harness> {
  const stateDir = o.stateDir ?? tempDir('state');
  const outputsDir = o.outputsDir ?? tempDir('outputs');
  const queue = new LocalJobQueue({ dir: stateDir, ...(o.finishedKept ? { finishedKept: o.finishedKept } : {}) });
  const engine = new FakeEngine({ stepMs: o.stepMs ?? 2 });
  const app = await createServer({ queue, engine, outputsDir });
  app.addHook('onClose', async () => {
    await queue.close();
  });
  let url = '';
  if (o.listen) {
    await app.listen({ port: 0, host: '127.0.0.1' });
    const a = app.server.address();
    url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  }
  const h = { app, queue, engine, stateDir, outputsDir, url };
  open.push(h);
  return h;
}

async function post(h: Harness, body: unknown, headers: Record<string, string> = {}) {
  return h.app.inject({ method: 'POST', url: '/api/v1/jobs', payload: body as object, headers });
}

async function job(h: Harness, id: string): Promise<JobRecord> {
  const r = await h.app.inject({ url: `/api/v1/jobs/${id}` });
  assert.equal(r.statusCode, 200, r.body);
  return r.json() as JobRecord;
}

async function waitFor<T>(what: string, f: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const finished = (h: Harness, id: string) =>
  waitFor(`job ${id} to finish`, async () => {
    const j = await job(h, id);
    return ['completed', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
  });

test('a job goes queued -> running -> completed; its output is in the gallery with its metadata, a thumbnail, and can be deleted', async () => {
  const h = await start();
  const r = await post(h, { prompt: 'a red circle', steps: 6, width: 96, height: 64, seed: '18446744073709551615', method: 'direct' });
  assert.equal(r.statusCode, 202, r.body);
  const { id } = r.json() as { id: string };
  const done = await finished(h, id);
  assert.equal(done.state, 'completed', JSON.stringify(done.error));
  assert.equal(done.attempts, 1);
  assert.equal(done.output, outputNameFor(done));
  assert.equal(done.spec.settings['seed'], '18446744073709551615');

  const list = (await h.app.inject({ url: '/api/v1/jobs' })).json() as { jobs: JobRecord[] };
  assert.deepEqual(list.jobs.map((j) => j.id), [id]);

  const outputs = (await h.app.inject({ url: '/api/v1/outputs' })).json() as { outputs: { name: string; metadata?: { seed: string; prompt: string; width: number } }[] };
  assert.equal(outputs.outputs.length, 1);
  assert.equal(outputs.outputs[0]!.name, done.output);
  assert.equal(outputs.outputs[0]!.metadata?.seed, '18446744073709551615', 'a seed above 2^53 is kept exactly');
  assert.equal(outputs.outputs[0]!.metadata?.prompt, 'a red circle');
  assert.equal(outputs.outputs[0]!.metadata?.width, 96);

  const file = await h.app.inject({ url: `/api/v1/outputs/${done.output}` });
  assert.equal(file.statusCode, 200);
  assert.equal(file.headers['content-type'], 'image/png');
  assert.deepEqual([...file.rawPayload.subarray(1, 4)].map((c) => String.fromCharCode(c)).join(''), 'PNG');
  const meta = (await h.app.inject({ url: `/api/v1/outputs/${done.output}/metadata` })).json() as { metadata: { steps: number } };
  assert.equal(meta.metadata.steps, 6);
  const thumb = await h.app.inject({ url: `/api/v1/outputs/${done.output}/thumbnail` });
  assert.equal(thumb.statusCode, 200);
  assert.equal(thumb.headers['content-type'], 'image/webp');
  assert.equal(thumb.headers['cache-control'], 'private, max-age=86400', 'a reload does not fetch the gallery again');
  assert.equal(file.headers['cache-control'], 'private, max-age=86400');
  assert.ok(fs.existsSync(path.join(h.outputsDir, '.thumbnails', `${done.output}.webp`)), 'the thumbnail is cached');

  assert.equal((await h.app.inject({ method: 'DELETE', url: `/api/v1/jobs/${id}` })).statusCode, 204, 'a finished job is removed');
  assert.equal((await h.app.inject({ url: `/api/v1/jobs/${id}` })).statusCode, 404);
  assert.equal((await h.app.inject({ url: `/api/v1/outputs/${done.output}` })).statusCode, 200, 'its output stays');
  assert.equal((await h.app.inject({ method: 'DELETE', url: `/api/v1/outputs/${done.output}` })).statusCode, 204);
  assert.equal((await h.app.inject({ url: `/api/v1/outputs/${done.output}` })).statusCode, 404);
});

test("a run's warnings are in its job record (and the event stream's last state), kept over a restart; a run without any has none", async () => {
  const stateDir = tempDir('state');
  const outputsDir = tempDir('outputs');
  const h = await start({ stateDir, outputsDir });
  const long = Array.from({ length: FAKE_PROMPT_WORDS + 3 }, (_, i) => `word${i}`).join(' ');
  const a = (await post(h, { prompt: long, steps: 2, seed: '1', method: 'direct' })).json() as { id: string };
  const b = (await post(h, { prompt: 'a red circle', steps: 2, seed: '1', method: 'direct' })).json() as { id: string };
  const warned = await finished(h, a.id);
  assert.equal(warned.state, 'completed', JSON.stringify(warned.error));
  assert.deepEqual(warned.warnings, [`The prompt is too long: 3 word(s) beyond the fake engine's ${FAKE_PROMPT_WORDS} were dropped`]);
  const quiet = await finished(h, b.id);
  assert.equal(quiet.state, 'completed');
  assert.equal('warnings' in quiet, false, JSON.stringify(quiet));
  const events = await h.app.inject({ url: `/api/v1/jobs/${a.id}/events` });
  const states = events.body.split('\n\n').filter((e) => e.includes('event: state')).map((e) => JSON.parse(e.slice(e.indexOf('data: ') + 6)) as JobRecord);
  assert.deepEqual(states.at(-1)?.warnings, warned.warnings);
  await h.app.close();
  const again = await start({ stateDir, outputsDir });
  assert.deepEqual((await job(again, a.id)).warnings, warned.warnings, 'persisted with the job');
});

/** The events of a finished job's stream (GET /api/v1/jobs/{id}/events), from `lastEventId` on. */
async function streamOf(h: Harness, id: string, lastEventId?: string): Promise<{ id: string; event: string; data: JobRecord & JobProgress }[]> {
  const r = await h.app.inject({ url: `/api/v1/jobs/${id}/events`, headers: lastEventId ? { 'last-event-id': lastEventId } : {} });
  return r.body.split('\n\n').filter((b) => b.includes('data: ')).map((b) => {
    const field = (name: string) => b.split('\n').find((l) => l.startsWith(`${name}: `))?.slice(name.length + 2) ?? '';
    return { id: field('id'), event: field('event'), data: JSON.parse(field('data')) };
  });
}

test('the history is bounded: the oldest finished jobs are forgotten (their outputs stay); a finished job keeps only its last events', async () => {
  const h = await start({ finishedKept: 3 });
  const ids: string[] = [];
  for (let i = 0; i < 5; i++) ids.push(((await post(h, { prompt: `job ${i}`, steps: 20, seed: String(i), method: 'direct' })).json() as { id: string }).id);
  const whole = await streamOf(h, ids[4]!); // open while it waits: every event until it finishes
  assert.equal(whole.at(-1)!.data.state, 'completed');
  assert.ok(whole.length > 20, `${whole.length} events`);
  const list = ((await h.app.inject({ url: '/api/v1/jobs' })).json() as { jobs: JobRecord[] }).jobs;
  assert.deepEqual(list.map((j) => j.id), [ids[4], ids[3], ids[2]], 'the newest 3, newest first');
  assert.equal((await h.app.inject({ url: `/api/v1/jobs/${ids[0]}` })).statusCode, 404);
  assert.equal(fs.readdirSync(h.outputsDir).filter((f) => f.endsWith('.png')).length, 5, 'every output stays');
  const saved = JSON.parse(fs.readFileSync(path.join(h.stateDir, 'queue.json'), 'utf8')) as { jobs: JobRecord[] };
  assert.deepEqual(saved.jobs.map((j) => j.id).sort(), [ids[2], ids[3], ids[4]].sort());
  // Resuming from an early event of the finished job: a snapshot of it; from one of its last events: what followed.
  assert.deepEqual((await streamOf(h, ids[4]!, whole[1]!.id)).map((e) => [e.event, e.data.state]), [['state', 'completed']]);
  assert.deepEqual((await streamOf(h, ids[4]!, whole.at(-3)!.id)).map((e) => e.id), whole.slice(-2).map((e) => e.id));
});

test('GET /jobs?finished=N lists the running and queued jobs and the newest N finished; a bad N is named', async () => {
  const h = await start({ stepMs: 20 });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push(((await post(h, { prompt: `done ${i}`, steps: 1, seed: String(i), method: 'direct' })).json() as { id: string }).id);
  await finished(h, ids[2]!);
  const running = ((await post(h, { prompt: 'running', steps: 100, seed: '9', method: 'direct' })).json() as { id: string }).id;
  const queued = ((await post(h, { prompt: 'queued', steps: 2, seed: '10', method: 'direct' })).json() as { id: string }).id;
  await waitFor('the long job to run', async () => ((await job(h, running)).state === 'running' ? true : undefined));
  const list = async (q: string) => ((await h.app.inject({ url: `/api/v1/jobs${q}` })).json() as { jobs: JobRecord[] }).jobs.map((j) => j.id);
  assert.deepEqual(await list('?finished=1'), [running, queued, ids[2]]);
  assert.deepEqual(await list('?finished=0'), [running, queued]);
  assert.deepEqual(await list(''), [running, queued, ids[2], ids[1], ids[0]]);
  const bad = await h.app.inject({ url: '/api/v1/jobs?finished=all' });
  assert.equal(bad.statusCode, 400);
  assert.equal((bad.json() as { field: string }).field, 'finished');
  await h.app.inject({ method: 'DELETE', url: `/api/v1/jobs/${running}` });
});

test('Server-Sent Events: a client that drops mid-stream and resumes with Last-Event-ID sees every step once, in order', async () => {
  const h = await start({ stepMs: 15, listen: true });
  const { id } = (await post(h, { prompt: 'a square', steps: 40, seed: '7' })).json() as { id: string };
  const first = await readEvents(`${h.url}/api/v1/jobs/${id}/events`, {
    stop: (e) => e.event === 'progress' && (e.data as JobProgress).step >= 10,
  });
  const lastId = first.at(-1)!.id!;
  // Events go on while no client listens.
  await new Promise((r) => setTimeout(r, 100));
  const rest = await readEvents(`${h.url}/api/v1/jobs/${id}/events`, { lastEventId: lastId });
  const all = [...first, ...rest];
  const ids = all.map((e) => e.id!);
  assert.equal(new Set(ids).size, ids.length, 'no event twice');
  const steps = all.filter((e) => e.event === 'progress' && (e.data as JobProgress).phase === 'denoise').map((e) => (e.data as JobProgress).step);
  const distinct = steps.filter((s, i) => i === 0 || s !== steps[i - 1]);
  // A fresh client starts from a snapshot of the job: on a busy machine the job may be past step 1 by then.
  assert.equal(first[0]!.event, 'state');
  const snapshotStep = (first[0]!.data as JobRecord).progress?.step ?? 0;
  const from = distinct[0]!;
  assert.ok(from === snapshotStep || from === snapshotStep + 1, `first step ${from} after a snapshot at step ${snapshotStep}`);
  assert.deepEqual(distinct, Array.from({ length: 41 - from }, (_, i) => i + from), `steps ${from}..40, none repeated or skipped`);
  assert.ok(rest.length > 0 && rest[0]!.event === 'progress', 'the resumed stream starts with what followed, not a snapshot');
  const last = rest.at(-1)!;
  assert.equal(last.event, 'state');
  assert.equal((last.data as JobRecord).state, 'completed');
  const revisions = all.filter((e) => e.event === 'progress').map((e) => (e.data as JobProgress).previewRevision);
  assert.equal(Math.max(...revisions), 20, 'a preview every 2 steps');
  assert.ok(all.some((e) => e.event === 'progress' && typeof (e.data as JobProgress).etaSeconds === 'number'), 'an ETA is reported');

  // A client arriving after the end gets the final state at once.
  const late = await readEvents(`${h.url}/api/v1/jobs/${id}/events`);
  assert.deepEqual(late.map((e) => [e.event, (e.data as JobRecord).state]), [['state', 'completed']]);
  // A client reconnecting after the final event (EventSource does, a second after the server ends the stream):
  // that final state again, and the stream ends rather than staying open for nothing.
  const reconnect = readEvents(`${h.url}/api/v1/jobs/${id}/events`, { lastEventId: last.id! });
  const again = await Promise.race([reconnect, new Promise<'still open'>((r) => setTimeout(() => r('still open'), 5000).unref())]);
  assert.notEqual(again, 'still open');
  assert.deepEqual((again as typeof late).map((e) => [e.id, e.event, (e.data as JobRecord).state]), [[last.id, 'state', 'completed']]);
});

test('cancel: a running job stops within one step and writes nothing; a queued one never starts; the next job runs', async () => {
  const h = await start({ stepMs: 20 });
  const a = ((await post(h, { prompt: 'a', steps: 200 })).json() as { id: string }).id;
  const b = ((await post(h, { prompt: 'b', steps: 200 })).json() as { id: string }).id;
  const c = ((await post(h, { prompt: 'c', steps: 3 })).json() as { id: string }).id;
  await waitFor('a to denoise', async () => ((await job(h, a)).progress?.step ?? 0) >= 2);
  const cancelB = await h.app.inject({ method: 'DELETE', url: `/api/v1/jobs/${b}` });
  assert.equal(cancelB.statusCode, 200);
  assert.equal((cancelB.json() as JobRecord).state, 'cancelled');
  const t0 = performance.now();
  const cancelA = await h.app.inject({ method: 'DELETE', url: `/api/v1/jobs/${a}` });
  const ms = performance.now() - t0;
  const cancelledA = cancelA.json() as JobRecord;
  assert.equal(cancelledA.state, 'cancelled');
  // The answer comes once the job has stopped: well before its remaining steps could have run (a fixed bound in
  // milliseconds would also time the state file's fsync, which a loaded disk can stretch).
  const stepAtCancel = cancelledA.progress?.step ?? 0;
  assert.ok(stepAtCancel >= 2 && stepAtCancel < 200, `cancelled at step ${stepAtCancel}`);
  const remainingMs = (200 - stepAtCancel) * 20;
  assert.ok(ms < remainingMs / 2, `cancel answered in ${ms.toFixed(0)} ms, the job had ${remainingMs} ms of steps left`);
  await new Promise((r) => setTimeout(r, 100));
  assert.equal((await job(h, a)).progress?.step, stepAtCancel, 'no step ran after the cancel answered');
  const jc = await finished(h, c);
  assert.equal(jc.state, 'completed');
  assert.equal((await job(h, a)).output, undefined);
  assert.equal(h.engine.started, 2, 'b never started');
  assert.deepEqual(fs.readdirSync(h.outputsDir).filter((n) => !n.startsWith('.')), [jc.output], 'only the completed job wrote a file, and no temp file is left');
});

test('queue: reorder and remove queued jobs while one runs; they run in the new order', async () => {
  const h = await start({ stepMs: 10 });
  const ids: string[] = [];
  // a runs about 3 s, so the PATCHes and the list below land while it runs, even on a loaded machine.
  for (const p of ['a', 'b', 'c', 'd']) ids.push(((await post(h, { prompt: p, steps: p === 'a' ? 300 : 2 })).json() as { id: string }).id);
  const [a, b, c, d] = ids as [string, string, string, string];
  await waitFor('a to run', async () => (await job(h, a)).state === 'running');
  const moved = await h.app.inject({ method: 'PATCH', url: `/api/v1/jobs/${d}`, payload: { position: 0 } });
  assert.equal(moved.statusCode, 200, moved.body);
  assert.deepEqual((moved.json() as { queued: string[] }).queued, [d, b, c]);
  assert.equal((await h.app.inject({ method: 'PATCH', url: `/api/v1/jobs/${a}`, payload: { position: 0 } })).statusCode, 409, 'a running job cannot move');
  assert.equal((await h.app.inject({ method: 'PATCH', url: '/api/v1/jobs/nope', payload: { position: 0 } })).statusCode, 404);
  const list = (await h.app.inject({ url: '/api/v1/jobs' })).json() as { jobs: JobRecord[] };
  assert.deepEqual(list.jobs.map((j) => j.id), [a, d, b, c], 'running first, then the queue in order');
  assert.equal((await h.app.inject({ method: 'DELETE', url: `/api/v1/jobs/${c}` })).statusCode, 200);
  assert.equal((await h.app.inject({ method: 'DELETE', url: `/api/v1/jobs/${c}` })).statusCode, 204, 'the cancelled job is then removed');
  const jb = await finished(h, b);
  const jd = await job(h, d);
  const ja = await job(h, a);
  assert.equal(jb.state, 'completed');
  assert.ok(ja.finishedAt! <= jd.startedAt! && jd.finishedAt! <= jb.startedAt!, 'a, then d, then b: one at a time, in the new order');
  assert.equal((await h.app.inject({ url: `/api/v1/jobs/${c}` })).statusCode, 404);
});

test('a restart loses nothing: queued and interrupted jobs run after it, each output written once', async () => {
  const stateDir = tempDir('state');
  const outputsDir = tempDir('outputs');
  const h1 = await start({ stepMs: 10, stateDir, outputsDir });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) ids.push(((await post(h1, { prompt: `job ${i}`, steps: 60, seed: String(i) })).json() as { id: string }).id);
  await waitFor('the first job to denoise', async () => ((await job(h1, ids[0]!)).progress?.step ?? 0) >= 3);
  await h1.app.close();
  const saved = JSON.parse(fs.readFileSync(path.join(stateDir, 'queue.json'), 'utf8')) as { order: string[]; jobs: JobRecord[] };
  assert.deepEqual(saved.order, ids, 'the interrupted job is queued again at the front');
  assert.deepEqual(fs.readdirSync(outputsDir), [], 'the interrupted job wrote nothing');

  const h2 = await start({ stepMs: 2, stateDir, outputsDir });
  for (const id of ids) assert.equal((await finished(h2, id)).state, 'completed');
  assert.equal((await job(h2, ids[0]!)).attempts, 2);
  assert.equal(fs.readdirSync(outputsDir).filter((n) => n.endsWith('.png')).length, 3);
});

test('a job whose output was written just before a crash completes without running again', async () => {
  const stateDir = tempDir('state');
  const outputsDir = tempDir('outputs');
  const record: JobRecord = { id: '00000000000000aa', spec: { kind: 'generate', settings: { prompt: 'x' } }, state: 'running', lane: 'cpu', createdAt: '2026-01-02T03:04:05.000Z', attempts: 1 };
  fs.writeFileSync(path.join(stateDir, 'queue.json'), JSON.stringify({ version: 1, epoch: 3, order: [], jobs: [record] }));
  fs.writeFileSync(path.join(outputsDir, outputNameFor(record)), 'the finished output');
  const h = await start({ stateDir, outputsDir });
  const j = await finished(h, record.id);
  assert.equal(j.state, 'completed');
  assert.equal(j.output, outputNameFor(record));
  assert.equal(h.engine.started, 0, 'not run a second time');
});

test('a server killed with SIGKILL mid-job and restarted completes every job exactly once, no file half-written', { timeout: 120_000 }, async () => {
  const stateDir = tempDir('state');
  const outputsDir = tempDir('outputs');
  const log = path.join(tempDir('log'), 'completed.txt');
  const spawnServer = async (): Promise<{ child: ChildProcess; url: string }> => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(HERE, 'helpers', 'serve-fake.ts'), stateDir, outputsDir, log, '15'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const m = /port (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      child.on('exit', (code) => reject(new Error(`server exited with ${code}`)));
    });
    return { child, url: `http://127.0.0.1:${port}` };
  };
  const getJob = async (url: string, id: string) => (await (await fetch(`${url}/api/v1/jobs/${id}`)).json()) as JobRecord;

  const s1 = await spawnServer();
  const ids: string[] = [];
  for (let i = 0; i < 4; i++) {
    const r = await fetch(`${s1.url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: `p${i}`, steps: 12, seed: String(100 + i) }) });
    assert.equal(r.status, 202);
    ids.push(((await r.json()) as { id: string }).id);
  }
  await waitFor('the second job to be mid-denoise', async () => {
    const j = await getJob(s1.url, ids[1]!);
    return j.state === 'running' && (j.progress?.step ?? 0) >= 4;
  });
  s1.child.kill('SIGKILL');
  await new Promise((r) => s1.child.once('exit', r));
  assert.equal((await getJobStates(stateDir))[ids[1]!], 'running', 'the state file says it was running');

  const s2 = await spawnServer();
  try {
    for (const id of ids) await waitFor(`job ${id}`, async () => ((await getJob(s2.url, id)).state === 'completed' ? true : undefined), 60_000);
    const second = await getJob(s2.url, ids[1]!);
    assert.equal(second.attempts, 2, 'the interrupted job ran again');
  } finally {
    s2.child.kill('SIGTERM');
    await new Promise((r) => s2.child.once('exit', r));
  }
  const lines = fs.readFileSync(log, 'utf8').trim().split('\n');
  assert.equal(lines.length, 4, 'four completions in all');
  assert.equal(new Set(lines).size, 4, 'no job completed twice');
  const files = fs.readdirSync(outputsDir);
  assert.deepEqual(files.sort(), [...lines].sort(), 'exactly the outputs, no temp file');
  for (const f of files) assert.ok((await readImageMetadata(path.join(outputsDir, f))).metadata, `${f} is whole, with its metadata`);
});

async function getJobStates(stateDir: string): Promise<Record<string, string>> {
  const s = JSON.parse(fs.readFileSync(path.join(stateDir, 'queue.json'), 'utf8')) as { jobs: JobRecord[] };
  return Object.fromEntries(s.jobs.map((j) => [j.id, j.state]));
}

test('an invalid body is answered 400 with a message naming the field, and queues nothing', async () => {
  const h = await start();
  const cases: [unknown, string][] = [
    [{ steps: 5 }, 'prompt'],
    [{ prompt: 'x', steps: 0 }, 'steps'],
    [{ prompt: 'x', steps: '5' }, 'steps'],
    [{ prompt: 'x', seed: 12 }, 'seed'],
    [{ prompt: 'x', seed: '-1' }, 'seed'],
    [{ prompt: 'x', seed: '18446744073709551616' }, 'seed'],
    [{ prompt: 'x', stepz: 5 }, 'stepz'],
    [{ prompt: 'x', method: 'sideways' }, 'method'],
    [{ prompt: 'x', methodOptions: { stageSplit: 2 } }, 'methodOptions.stageSplit'],
    [{ prompt: 'x', vae: { tiling: 'maybe' } }, 'vae.tiling'],
    [{ prompt: 'x', width: 100 }, 'width'],
    [{ prompt: 'x', model: 'nope' }, 'model'],
  ];
  for (const [body, field] of cases) {
    const r = await post(h, body);
    assert.equal(r.statusCode, 400, `${JSON.stringify(body)}: ${r.body}`);
    const e = r.json() as { field: string; message: string };
    assert.equal(e.field, field, JSON.stringify(e));
    assert.match(e.message, new RegExp(field.split('.').at(-1)!), JSON.stringify(e));
  }
  const notJson = await h.app.inject({ method: 'POST', url: '/api/v1/jobs', payload: '{"prompt": ', headers: { 'content-type': 'application/json' } });
  assert.equal(notJson.statusCode, 400);
  const huge = await post(h, { prompt: 'x'.repeat(2 * 1024 * 1024) });
  assert.equal(huge.statusCode, 413, 'the body size is limited');
  assert.deepEqual(((await h.app.inject({ url: '/api/v1/jobs' })).json() as { jobs: unknown[] }).jobs, []);
  assert.equal(h.engine.started, 0);
});

test('schema errors name the field as its path in the body, what was expected (bounds, the allowed values, the seed\'s form) and what was received', async () => {
  const h = await start();
  const cases: [unknown, string, string][] = [
    [{ prompt: 'x', width: 9000 }, 'width', 'Invalid width; expected an integer in [64, 8192]; received 9000'],
    [{ prompt: 'x', steps: '5' }, 'steps', 'Invalid steps; expected an integer in [1, 1000]; received "5"'],
    [{ prompt: 'x', method: 'sideways' }, 'method', 'Invalid method; expected one of asg, cutdiffusion, multidiffusion, direct; received "sideways"'],
    [{ prompt: 'x', seed: 'abc' }, 'seed', 'Invalid seed; expected a decimal string of an integer 0 .. 2^64-1; received "abc"'],
    [{ prompt: 'x', vae: { tiling: 'maybe' } }, 'vae.tiling', 'Invalid vae.tiling; expected one of auto, on, off; received "maybe"'],
    [{ prompt: 'x', guidanceScale: 1e308 }, 'guidanceScale', 'Invalid guidanceScale; expected a number in [0, 100]; received 1e+308'],
  ];
  for (const [body, field, message] of cases) {
    const r = await post(h, body);
    assert.equal(r.statusCode, 400, r.body);
    assert.deepEqual(r.json(), { error: 'invalid-argument', field, message });
  }
  const long = await post(h, { prompt: 'x', method: 'y'.repeat(500) });
  assert.match(long.json().message, /received "y+\.\.\. \(502 characters\)$/, 'a long value is cut short');
  const missing = (await post(h, { steps: 5 })).json();
  assert.equal(missing.field, 'prompt');
  assert.match(missing.message, /^Invalid prompt: it is required; expected a string/);
  const unknown = (await post(h, { prompt: 'x', stepz: 5 })).json();
  assert.equal(unknown.field, 'stepz');
  assert.match(unknown.message, /^Invalid stepz: not a known setting; expected one of model, prompt, .*; received 5$/);
  // A method option is named by its place in the body.
  const stride = (await post(h, { prompt: 'x', methodOptions: { windowStride: 0 } })).json();
  assert.equal(stride.field, 'methodOptions.windowStride', JSON.stringify(stride));
  const query = await h.app.inject({ url: '/api/v1/jobs?finished=x' });
  assert.deepEqual(query.json(), { error: 'invalid-argument', field: 'finished', message: 'Invalid finished; expected a whole number of at most 6 digits; received "x"' });
});

test("Fastify's own errors answer in the API's shape: not JSON, a prototype key, another content type, too large, an unknown method or path", async () => {
  const h = await start();
  const send = (payload: string, type?: string) => h.app.inject({ method: 'POST', url: '/api/v1/jobs', payload, headers: type ? { 'content-type': type } : {} });
  const bad = await send('{"prompt": ', 'application/json');
  assert.equal(bad.statusCode, 400);
  assert.equal(bad.json().error, 'invalid-json');
  assert.equal(bad.json().field, 'body');
  assert.match(bad.json().message, /^Invalid body; expected JSON; received text that does not parse as JSON \(/);
  const proto = await send('{"prompt": "x", "__proto__": {"steps": 1}}', 'application/json');
  assert.equal(proto.statusCode, 400);
  assert.equal(proto.json().error, 'forbidden-key');
  assert.match(proto.json().message, /__proto__.*refused/);
  assert.doesNotMatch(proto.json().message, /not valid JSON/);
  const empty = await send('', 'application/json');
  assert.equal(empty.statusCode, 400, empty.body);
  assert.equal(empty.json().field, 'body');
  for (const type of ['text/plain', 'application/xml', undefined]) {
    const r = await send('{"prompt": "x"}', type);
    assert.equal(r.statusCode, 415, `${type}: ${r.body}`);
    assert.deepEqual(r.json(), { error: 'unsupported-media-type', field: 'content-type', message: `Invalid content-type; expected application/json; received ${type ?? 'none'}` });
  }
  assert.equal((await send('{"prompt": "x", "steps": 1}', 'application/json; charset=utf-8')).statusCode, 202, 'a charset is fine');
  const huge = await post(h, { prompt: 'x'.repeat(2 * 1024 * 1024) });
  assert.equal(huge.statusCode, 413);
  assert.deepEqual(huge.json(), { error: 'payload-too-large', field: 'body', message: 'Invalid body: too large; expected at most 1 MiB; received more' });
  const put = await h.app.inject({ method: 'PUT', url: '/api/v1/jobs' });
  assert.equal(put.statusCode, 405, put.body);
  assert.equal(put.headers['allow'], 'POST, GET, HEAD');
  assert.deepEqual(put.json(), { error: 'method-not-allowed', field: 'method', message: 'Invalid method for /api/v1/jobs; expected POST, GET, HEAD; received PUT' });
  const getUpload = await h.app.inject({ url: '/api/v1/uploads' });
  assert.equal(getUpload.statusCode, 405, getUpload.body);
  assert.equal(getUpload.headers['allow'], 'POST');
  const postJob = await h.app.inject({ method: 'POST', url: '/api/v1/jobs/abc', payload: {} });
  assert.equal(postJob.statusCode, 405, postJob.body);
  assert.equal(postJob.headers['allow'], 'GET, HEAD, PATCH, DELETE');
  for (const method of ['GET', 'POST'] as const) {
    const none = await h.app.inject({ method, url: '/api/v1/nothing-here' });
    assert.equal(none.statusCode, 404, none.body);
    assert.deepEqual(none.json(), { error: 'not-found', message: `No such endpoint: ${method} /api/v1/nothing-here` });
  }
  const doc = (await h.app.inject({ url: '/api/v1/openapi.json' })).json() as { paths: Record<string, Record<string, { responses: Record<string, unknown> }>> };
  for (const [p, m] of [['/api/v1/jobs', 'post'], ['/api/v1/estimate', 'post'], ['/api/v1/outputs/{name}/upscale', 'post'], ['/api/v1/jobs/{id}', 'patch'], ['/api/v1/uploads', 'post']]) {
    assert.ok(doc.paths[p]![m]!.responses['413'] && doc.paths[p]![m]!.responses['415'], `${m} ${p} documents 413 and 415`);
  }
});

test('a request from another site (Origin) or another host name (DNS rebinding) gets 403', async () => {
  const h = await start();
  const foreign = await post(h, { prompt: 'x' }, { origin: 'https://evil.example' });
  assert.equal(foreign.statusCode, 403);
  assert.equal((await h.app.inject({ url: '/api/v1/outputs', headers: { origin: 'http://localhost:9999' } })).statusCode, 403, 'another port is another origin');
  assert.equal((await h.app.inject({ method: 'DELETE', url: '/api/v1/jobs/x', headers: { origin: 'null' } })).statusCode, 403);
  assert.equal((await post(h, { prompt: 'x' }, { 'sec-fetch-site': 'cross-site' })).statusCode, 403);
  assert.equal((await h.app.inject({ url: '/api/v1/jobs', headers: { host: 'rebind.example:7860' } })).statusCode, 403);
  assert.deepEqual(((await h.app.inject({ url: '/api/v1/jobs' })).json() as { jobs: unknown[] }).jobs, [], 'nothing was queued');
  const same = await post(h, { prompt: 'x', steps: 1 }, { origin: 'http://localhost:80', host: 'localhost:80' });
  assert.equal(same.statusCode, 202, 'the page itself may post');
  assert.equal((await post(h, { prompt: 'x', steps: 1 })).statusCode, 202, 'scripts without an Origin may post');
});

test('the estimate checks the model as queueing does: an unknown one is named (400), a known one is the one estimated', async () => {
  const h = await start();
  const estimate = (body: object) => h.app.inject({ method: 'POST', url: '/api/v1/estimate', payload: body });
  const bad = await estimate({ prompt: 'x', model: 'nope' });
  assert.equal(bad.statusCode, 400);
  assert.deepEqual(bad.json(), { error: 'invalid-argument', field: 'model', message: 'Invalid model; expected one of fake-64, fake-other; received "nope"' });
  assert.deepEqual((await estimate({ prompt: 'x', method: 'direct', steps: 7 })).json(), { unetEvaluations: 7 });
  // The named model is the one planned: at 192x160 its native 96x80 makes fewer patches than fake-64's 64x64.
  const first = (await estimate({ prompt: 'x', width: 192, height: 160, steps: 4 })).json() as { unetEvaluations: number };
  const other = (await estimate({ prompt: 'x', width: 192, height: 160, steps: 4, model: 'fake-other' })).json() as { unetEvaluations: number };
  assert.notEqual(other.unetEvaluations, first.unetEvaluations);
});

test('the estimate counts the steps the scheduler runs: the shipped model\'s PNDM runs one more than asked, as the library does', async () => {
  const dir = path.join(HERE, '..', 'models', 'shapes-128');
  const queue = new LocalJobQueue({ dir: tempDir('state') });
  const app = await createServer({ queue, engine: new LibraryEngine([dir]), outputsDir: tempDir('outputs') });
  open.push({ app, queue, engine: new FakeEngine(), stateDir: '', outputsDir: '', url: '' });
  const units = async (body: object) => ((await app.inject({ method: 'POST', url: '/api/v1/estimate', payload: { prompt: 'a red circle', ...body } })).json() as { unetEvaluations: number }).unetEvaluations;
  assert.equal(await units({ method: 'direct', steps: 7 }), 8, 'PNDM with skip_prk_steps: one more step');
  assert.equal(await units({ method: 'direct', steps: 7, scheduler: 'euler' }), 7);
  // The library is the reference: a real run at the native size (PNDM) and one above it (euler, the patch default).
  const pipeline = await loadPipeline(dir);
  try {
    for (const settings of [{ method: 'direct' as const, steps: 3 }, { method: 'asg' as const, steps: 3 }, { method: 'asg' as const, steps: 3, width: 192, height: 128 }]) {
      const r = await pipeline.generate({ prompt: 'a red circle', seed: '1', ...settings });
      assert.equal(await units(settings), r.unetEvaluations, JSON.stringify(settings));
    }
  } finally {
    await pipeline.close();
  }
  await queue.close();
});

test('a queued job moves among the jobs of its own lane; the other lanes keep their order', async () => {
  const queue = new LocalJobQueue({ dir: tempDir('state') }); // no processor: every job stays queued
  const spec = (prompt: string) => ({ kind: 'generate' as const, settings: { prompt } });
  const added: string[] = [];
  for (const [p, lane] of [['a1', 'A'], ['b1', 'B'], ['a2', 'A'], ['b2', 'B']]) added.push((await queue.add(spec(p!), lane)).id);
  const [a1, b1, a2, b2] = added as [string, string, string, string];
  const ids = async () => (await queue.list()).map((j) => String(j.spec.settings['prompt']));
  assert.deepEqual(await ids(), ['a1', 'b1', 'a2', 'b2']);
  // Position 0 of lane B: before b1, not before a1.
  assert.deepEqual((await queue.move(b2, 0)).map((j) => j.id), [b2, b1]);
  assert.deepEqual(await ids(), ['a1', 'b2', 'b1', 'a2']);
  assert.deepEqual((await queue.move(a1, 1)).map((j) => j.id), [a2, a1], 'last of its lane');
  assert.deepEqual(await ids(), ['b2', 'b1', 'a2', 'a1']);
  assert.deepEqual((await queue.move(a1, 99)).map((j) => j.id), [a2, a1], 'beyond the end: last');
  await queue.close();
});

test('a job the process dies under three times fails, naming why, instead of running at every start; a clean shutdown does not count', async () => {
  const dir = tempDir('state');
  const spec = { kind: 'generate' as const, settings: { prompt: 'too big' } };
  // Runs until aborted (a clean shutdown aborts it); a queue dropped without close() is a process that died.
  const hang = (_job: JobRecord, ctx: { signal: AbortSignal }) => new Promise<{ output: string }>((_, reject) => ctx.signal.addEventListener('abort', () => reject(new Error('aborted'))));
  let q = new LocalJobQueue({ dir });
  q.process(hang);
  const id = (await q.add(spec)).id;
  const running = (queue: LocalJobQueue) => waitFor('the job to run', async () => ((await queue.get(id))?.state === 'running' ? true : undefined));
  await running(q);
  await q.close(); // clean: queued again, not counted
  for (let death = 1; death <= 3; death++) {
    q = new LocalJobQueue({ dir });
    assert.equal((await q.get(id))!.state, 'queued', `after death ${death - 1}`);
    q.process(hang);
    await running(q);
    // The process dies here: q is dropped without close().
  }
  q = new LocalJobQueue({ dir });
  const j = (await q.get(id))!;
  assert.equal(j.state, 'failed');
  assert.equal(j.attempts, 4, "one clean start and three deaths");
  assert.match(j.error!.message, /^The server stopped without finishing this job 3 times .*Queue it again to retry$/);
  assert.deepEqual((await q.list()).map((x) => x.id), [id]);
  const saved = JSON.parse(fs.readFileSync(path.join(dir, 'queue.json'), 'utf8')) as { interrupted?: unknown };
  assert.equal(saved.interrupted, undefined, 'nothing left to count');
  await q.close();
});

test('with a token, API requests without it get 401; the page itself needs none', async () => {
  const queue = new LocalJobQueue({ dir: tempDir('state') });
  const app = await createServer({ queue, engine: new FakeEngine(), outputsDir: tempDir('outputs'), token: 'sesame' });
  open.push({ app, queue, engine: new FakeEngine(), stateDir: '', outputsDir: '', url: '' });
  assert.equal((await app.inject({ url: '/api/v1/jobs' })).statusCode, 401);
  assert.equal((await app.inject({ url: '/api/v1/jobs', headers: { authorization: 'Bearer wrong' } })).statusCode, 401);
  assert.equal((await app.inject({ url: '/api/v1/jobs', headers: { authorization: 'Bearer sesame' } })).statusCode, 200);
  assert.equal((await app.inject({ url: '/api/v1/jobs?token=sesame' })).statusCode, 200);
  for (const t of ['sesam', 'sesamee', '', 'SESAME']) assert.equal((await app.inject({ url: `/api/v1/jobs?token=${t}` })).statusCode, 401, t);
  assert.equal((await app.inject({ url: '/api/v1/jobs', headers: { authorization: 'sesame' } })).statusCode, 401);
  assert.equal((await app.inject({ method: 'POST', url: '/api/v1/jobs', payload: { prompt: 'x' } })).statusCode, 401);
  // The router decodes the path: an encoded letter still reaches the API, and still needs the token.
  assert.equal((await app.inject({ url: '/%61pi/v1/jobs' })).statusCode, 401);
  assert.equal((await app.inject({ method: 'POST', url: '/%61pi/v1/jobs', payload: { prompt: 'x' } })).statusCode, 401);
  assert.equal((await app.inject({ url: '/%61pi/v1/jobs?token=sesame' })).statusCode, 200);
  assert.equal((await app.inject({ url: '/' })).statusCode, 200);
  await queue.close();
});

test('serve on an address other than loopback generates a token, prints it in the URL, and checks the Host', async () => {
  const outputsDir = tempDir('outputs');
  const server = await serve({ port: 0, host: '127.0.0.2', outputsDir, modelDirs: [], pipeline: {}, engine: new FakeEngine() });
  try {
    const m = /^http:\/\/127\.0\.0\.2:(\d+)\/\?token=([0-9a-f]{32})$/.exec(server.url);
    assert.ok(m, server.url);
    const base = `http://127.0.0.2:${m[1]}`;
    assert.equal((await fetch(`${base}/api/v1/jobs`)).status, 401);
    assert.equal((await fetch(`${base}/api/v1/jobs`, { headers: { authorization: `Bearer ${m[2]}` } })).status, 200);
    assert.equal((await fetch(`${base}/api/v1/jobs?token=${m[2]}`)).status, 200);
    assert.ok(fs.existsSync(path.join(outputsDir, '.queue', 'queue.json')), 'the queue is kept in the outputs folder');
  } finally {
    await server.close();
  }
  const local = await serve({ port: 0, host: '127.0.0.1', outputsDir, modelDirs: [], pipeline: {}, engine: new FakeEngine() });
  try {
    assert.equal(local.token, undefined, 'loopback needs no token');
    assert.equal((await fetch(`${local.url}api/v1/jobs`)).status, 200);
  } finally {
    await local.close();
  }
});

test('output names cannot escape the outputs folder', async () => {
  const root = tempDir('escape');
  const outputsDir = path.join(root, 'outputs');
  fs.mkdirSync(outputsDir);
  fs.writeFileSync(path.join(root, 'secret.png'), 'not yours');
  const h = await start({ outputsDir });
  for (const name of ['..%2Fsecret.png', '%2E%2E%2Fsecret.png', '..%5Csecret.png', '%2Fetc%2Fpasswd', '.thumbnails', 'queue.json', 'x%00.png', 'missing.png']) {
    for (const suffix of ['', '/metadata', '/thumbnail']) {
      const r = await h.app.inject({ url: `/api/v1/outputs/${name}${suffix}` });
      assert.ok(r.statusCode === 400 || r.statusCode === 404, `${name}${suffix}: ${r.statusCode}`);
      assert.doesNotMatch(r.body, /not yours/);
    }
    const d = await h.app.inject({ method: 'DELETE', url: `/api/v1/outputs/${name}` });
    assert.ok(d.statusCode === 400 || d.statusCode === 404, `DELETE ${name}: ${d.statusCode}`);
  }
  assert.ok(fs.existsSync(path.join(root, 'secret.png')));
  const r = await h.app.inject({ url: '/api/v1/outputs/..%2F..%2F..%2Fetc%2Fpasswd' });
  assert.ok(r.statusCode === 400 || r.statusCode === 404);
});

test('the longest output names the gallery lists can be fetched, described, thumbnailed and deleted', async () => {
  const h = await start();
  const png = await encodeImage({ data: new Uint8Array(16 * 16 * 3).fill(90), width: 16, height: 16 }, 'png');
  const name = `${'a'.repeat(201)}.png`;
  const longest = `${'b'.repeat(201)}.webp`;
  fs.writeFileSync(path.join(h.outputsDir, name), png);
  fs.writeFileSync(path.join(h.outputsDir, longest), await sharp(png).webp().toBuffer());
  const listed = ((await h.app.inject({ url: '/api/v1/outputs' })).json() as { outputs: { name: string }[] }).outputs.map((o) => o.name);
  assert.deepEqual(listed.sort(), [name, longest].sort());
  for (const n of [name, longest]) {
    for (const suffix of ['', '/metadata', '/thumbnail']) {
      const r = await h.app.inject({ url: `/api/v1/outputs/${n}${suffix}` });
      assert.equal(r.statusCode, 200, `${n.length} chars${suffix}: ${r.body.slice(0, 200)}`);
    }
    const d = await h.app.inject({ method: 'DELETE', url: `/api/v1/outputs/${n}` });
    assert.equal(d.statusCode, 204, d.body);
  }
  assert.deepEqual(fs.readdirSync(h.outputsDir).filter((f) => !f.startsWith('.')), []);
});

test('the OpenAPI document lists every endpoint and its generation schema is the option registry', async () => {
  const h = await start();
  const doc = (await h.app.inject({ url: '/api/v1/openapi.json' })).json() as { openapi: string; paths: Record<string, Record<string, { requestBody?: { content: { 'application/json': { schema: { properties: Record<string, Record<string, unknown>> } } } } }>> };
  assert.equal(doc.openapi, '3.1.0');
  for (const [p, m] of [['/api/v1/jobs', 'post'], ['/api/v1/jobs', 'get'], ['/api/v1/jobs/{id}', 'get'], ['/api/v1/jobs/{id}', 'delete'], ['/api/v1/jobs/{id}', 'patch'], ['/api/v1/jobs/{id}/events', 'get'], ['/api/v1/outputs', 'get'], ['/api/v1/outputs/{name}', 'get'], ['/api/v1/outputs/{name}', 'delete'], ['/api/v1/outputs/{name}/metadata', 'get'], ['/api/v1/models', 'get'], ['/api/v1/devices', 'get'], ['/api/v1/openapi.json', 'get']] as const) {
    assert.ok(doc.paths[p]?.[m], `${m.toUpperCase()} ${p}`);
  }
  const props = doc.paths['/api/v1/jobs']!['post']!.requestBody!.content['application/json'].schema.properties;
  for (const s of PARAM_OPTIONS) {
    assert.ok(props[s.key], s.key);
    if ('default' in s) assert.deepEqual(props[s.key]!['default'], s.default, `${s.key} default`);
    if ('min' in s) assert.equal(props[s.key]!['minimum'], s.min, `${s.key} minimum`);
    if ('max' in s) assert.equal(props[s.key]!['maximum'], s.max, `${s.key} maximum`);
    if ('choices' in s) assert.deepEqual(props[s.key]!['enum'], [...s.choices], `${s.key} choices`);
  }
  assert.equal(props['seed']!['type'], 'string');
  const method = props['methodOptions']!['properties'] as Record<string, Record<string, unknown>>;
  assert.deepEqual(Object.keys(method), METHOD_OPTIONS.map((s) => s.key));
  for (const s of METHOD_OPTIONS) assert.deepEqual(method[s.key]!['default'], s.default, `${s.key} default`);
  assert.deepEqual(Object.keys(props['vae']!['properties'] as object), VAE_OPTIONS.map((s) => s.key));
  const models = (await h.app.inject({ url: '/api/v1/models' })).json() as { models: { name: string }[] };
  assert.deepEqual(models.models.map((m) => m.name), ['fake-64', 'fake-other']);
  const devices = (await h.app.inject({ url: '/api/v1/devices' })).json() as { deviceSet: string; devices: unknown[] };
  assert.equal(devices.deviceSet, 'cpu');
});

test('an output can be upscaled: POST /outputs/{name}/upscale queues a job whose output is the upscaled picture', async () => {
  const h = await start();
  const g = await post(h, { prompt: 'a red circle', seed: '21', steps: 2, width: 64, height: 64 });
  assert.equal(g.statusCode, 202, g.body);
  const gen = await finished(h, g.json().id);
  assert.equal(gen.state, 'completed');
  const source = gen.output!;

  const r = await h.app.inject({ method: 'POST', url: `/api/v1/outputs/${source}/upscale`, payload: { scale: 2, strength: 0.4, steps: 3, seed: '5' } });
  assert.equal(r.statusCode, 202, r.body);
  const up = await finished(h, r.json().id);
  assert.equal(up.state, 'completed', JSON.stringify(up.error));
  assert.equal(up.spec.kind, 'upscale');
  assert.equal(up.spec.settings['source'], source);
  const meta = await readImageMetadata(path.join(h.outputsDir, up.output!));
  assert.equal(meta.metadata?.width, 128);
  assert.equal(meta.metadata?.height, 128);
  assert.equal(meta.metadata?.steps, 3);

  // Checked before queueing: the source must exist, the settings must be valid, the target within the limit.
  const missing = await h.app.inject({ method: 'POST', url: '/api/v1/outputs/nope.png/upscale', payload: {} });
  assert.equal(missing.statusCode, 404, missing.body);
  const strength = await h.app.inject({ method: 'POST', url: `/api/v1/outputs/${source}/upscale`, payload: { strength: 0 } });
  assert.equal(strength.statusCode, 400, strength.body);
  assert.equal(strength.json().field, 'strength');
  const big = await h.app.inject({ method: 'POST', url: `/api/v1/outputs/${source}/upscale`, payload: { scale: 4, maxPixels: 10000 } });
  assert.equal(big.statusCode, 400, big.body);
  assert.match(big.json().message, /10000/);
  const escape = await h.app.inject({ method: 'POST', url: `/api/v1/outputs/..%2F..%2Fetc%2Fpasswd/upscale`, payload: {} });
  assert.ok(escape.statusCode === 400 || escape.statusCode === 404, String(escape.statusCode));
});

test('an output a queued or running upscale reads cannot be deleted (409 naming the jobs); a job that fails on its source names it, not the folder', async () => {
  const h = await start({ stepMs: 20 });
  const g = await post(h, { prompt: 'a red circle', seed: '21', steps: 1, width: 64, height: 64 });
  const source = (await finished(h, g.json().id)).output!;
  // A long job first, so the upscale waits in the queue.
  const blocker = (await post(h, { prompt: 'slow', steps: 200, seed: '1', method: 'direct' })).json().id as string;
  const up = await h.app.inject({ method: 'POST', url: `/api/v1/outputs/${source}/upscale`, payload: { scale: 2, steps: 2, seed: '5' } });
  assert.equal(up.statusCode, 202, up.body);
  const upId = up.json().id as string;
  const refused = await h.app.inject({ method: 'DELETE', url: `/api/v1/outputs/${source}` });
  assert.equal(refused.statusCode, 409, refused.body);
  assert.equal(refused.json().error, 'in-use');
  assert.equal(refused.json().field, 'name');
  assert.match(refused.json().message, new RegExp(`${upId} \\(queued\\)`));
  assert.ok(fs.existsSync(path.join(h.outputsDir, source)), 'the file stays');

  // A source gone from the folder behind the server's back: the job fails naming the output, not the folder's path.
  fs.rmSync(path.join(h.outputsDir, source));
  await h.app.inject({ method: 'DELETE', url: `/api/v1/jobs/${blocker}` });
  const failed = await finished(h, upId);
  assert.equal(failed.state, 'failed', JSON.stringify(failed));
  assert.equal(failed.error?.parameter, 'name', JSON.stringify(failed.error));
  assert.match(failed.error!.message, new RegExp(source.replace(/\./g, '\\.')));
  assert.ok(!failed.error!.message.includes(h.outputsDir), failed.error!.message);

  // Once no job reads it, an output is deleted as before.
  const g2 = await post(h, { prompt: 'a red circle', seed: '22', steps: 1, width: 64, height: 64 });
  const other = (await finished(h, g2.json().id)).output!;
  const up2 = await h.app.inject({ method: 'POST', url: `/api/v1/outputs/${other}/upscale`, payload: { scale: 2, steps: 2, seed: '5' } });
  assert.equal((await finished(h, up2.json().id)).state, 'completed');
  assert.equal((await h.app.inject({ method: 'DELETE', url: `/api/v1/outputs/${other}` })).statusCode, 204);
});

test('settings the run would refuse are refused before queueing (400 naming the field), by the estimate alike: the method plan, the scheduler family, SDXL-only options, the seed', async () => {
  const h = await start();
  const cases: [Record<string, unknown>, string, RegExp][] = [
    [{ methodOptions: { windowStride: 1000 } }, 'methodOptions.windowStride', /windowStride/],
    [{ scheduler: 'flow-euler' }, 'scheduler', /flow-matching scheduler is for SD3 models only/],
    [{ originalSize: '1024x1024' }, 'originalSize', /originalSize is an SDXL option/],
    [{ seed: '99999999999999999999' }, 'seed', /Invalid seed/],
  ];
  for (const [extra, field, re] of cases) {
    for (const url of ['/api/v1/jobs', '/api/v1/estimate']) {
      const r = await h.app.inject({ method: 'POST', url, payload: { prompt: 'a red circle', ...extra } });
      assert.equal(r.statusCode, 400, `${url} ${JSON.stringify(extra)}: ${r.body}`);
      assert.equal(r.json().field, field, `${url}: ${r.body}`);
      assert.match(r.json().message, re);
    }
  }
  const g = await post(h, { prompt: 'a red circle', seed: '21', steps: 1, width: 64, height: 64 });
  assert.equal(g.statusCode, 202, g.body);
  const source = (await finished(h, g.json().id)).output!;
  // An upscale is checked as the upscale runs: at the size it denoises, with a scheduler that can start mid-way.
  const upCases: [Record<string, unknown>, string][] = [
    [{ methodOptions: { windowStride: 1000 } }, 'methodOptions.windowStride'],
    [{ scheduler: 'pndm' }, 'scheduler'],
    [{ scheduler: 'flow-euler' }, 'scheduler'],
    [{ seed: '99999999999999999999' }, 'seed'],
  ];
  for (const [extra, field] of upCases) {
    for (const url of [`/api/v1/outputs/${source}/upscale`, `/api/v1/outputs/${source}/upscale/estimate`]) {
      const r = await h.app.inject({ method: 'POST', url, payload: { scale: 2, ...extra } });
      assert.equal(r.statusCode, 400, `${url} ${JSON.stringify(extra)}: ${r.body}`);
      assert.equal(r.json().field, field, r.body);
    }
  }
  assert.equal(h.engine.started, 1, 'only the first generation ran');
  assert.equal(((await h.app.inject({ url: '/api/v1/jobs' })).json() as { jobs: unknown[] }).jobs.length, 1);
  // What passes the checks is queued and completes.
  const ok = await h.app.inject({ method: 'POST', url: `/api/v1/outputs/${source}/upscale`, payload: { scale: 2, steps: 2, scheduler: 'ddim' } });
  assert.equal(ok.statusCode, 202, ok.body);
  assert.equal((await finished(h, ok.json().id)).state, 'completed');
});

test("mask words not in the prompt are refused before queueing, with the model's tokenizer (the local engine); the model folder's facts are read without loading it", async () => {
  const dir = path.join(HERE, '..', 'models', 'shapes-128');
  assert.deepEqual(readModelFolderFacts(dir), { nativeWidth: 128, nativeHeight: 128, schedulerConfig: readModelFolderFacts(dir).schedulerConfig, family: 'sd', latentChannels: 4 });
  const queue = new LocalJobQueue({ dir: tempDir('state') });
  const engine = new LibraryEngine([dir]);
  const app = await createServer({ queue, engine, outputsDir: tempDir('outputs') });
  open.push({ app, queue, engine: new FakeEngine(), stateDir: '', outputsDir: '', url: '' });
  for (const url of ['/api/v1/jobs', '/api/v1/estimate']) {
    const r = await app.inject({ method: 'POST', url, payload: { prompt: 'a red circle', maskWords: ['giraffe'] } });
    assert.equal(r.statusCode, 400, r.body);
    assert.equal(r.json().field, 'maskWords');
    assert.match(r.json().message, /The mask word "giraffe" is not in the prompt/);
  }
  const fine = await app.inject({ method: 'POST', url: '/api/v1/estimate', payload: { prompt: 'a red circle', maskWords: ['circle'] } });
  assert.equal(fine.statusCode, 200, fine.body);
  const models = (await app.inject({ url: '/api/v1/models' })).json() as { models: Record<string, unknown>[] };
  assert.deepEqual(models.models, [{ name: 'shapes-128', nativeWidth: 128, nativeHeight: 128 }], 'the model list stays name and native size');
  assert.deepEqual((await queue.list()).length, 0);
  await queue.close();
});

test('model folder facts: the family as the loader finds it, the latent channels and the SD3 patch size from the configs', () => {
  const folder = (files: Record<string, string>) => {
    const d = tempDir('facts');
    for (const [f, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(d, f)), { recursive: true });
      fs.writeFileSync(path.join(d, f), text);
    }
    return d;
  };
  const sdxl = readModelFolderFacts(folder({ 'unet/model.onnx': '', 'text_encoder_2/model.onnx': '', 'unet/config.json': '{"sample_size": 128, "in_channels": 4}' }));
  assert.deepEqual([sdxl.family, sdxl.latentChannels, sdxl.nativeWidth, sdxl.patchSize], ['sdxl', 4, 1024, undefined]);
  assert.equal(readModelFolderFacts(folder({ 'model_index.json': '{"_class_name": "ORTStableDiffusionXLPipeline"}', 'unet/model.onnx': '' })).family, 'sdxl');
  const sd3 = readModelFolderFacts(folder({ 'transformer/model.onnx': '', 'transformer/config.json': '{"sample_size": 128, "in_channels": 16, "patch_size": 2}' }));
  assert.deepEqual([sd3.family, sd3.latentChannels, sd3.patchSize, sd3.nativeWidth, sd3.schedulerConfig?._class_name], ['sd3', 16, 2, 1024, 'FlowMatchEulerDiscreteScheduler']);
  const bare = readModelFolderFacts(folder({ 'unet/model.onnx': '' }));
  assert.deepEqual([bare.family, bare.latentChannels], ['sd', 4]);
  assert.deepEqual(readModelFolderFacts(folder({ 'transformer/model.onnx': '' })).latentChannels, 16);
});
