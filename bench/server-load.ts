/**
 * Load and faults for `asgd serve`, on loopback with the fake engine (bounded in count and time): many queued
 * jobs, many SSE clients, a client that drops mid-stream and resumes, and the server killed with SIGKILL mid-job
 * and restarted. Checks that every job completes exactly once with a whole output, and reports the latency of
 * POST /api/v1/jobs and the queue's hand-over time (one job's end to the next one's start), p50 and p99.
 *
 *   node --import tsx bench/server-load.ts [jobs=200] [clients=20]
 *
 * Prints a Markdown table and writes bench/results/server-load.json.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readImageMetadata } from '../src/node/image/write.ts';
import type { JobProgress, JobRecord } from '../src/server/queue.ts';
import { readEvents, type SseEvent } from '../test/helpers/sse.ts';
import { BenchUsageError, benchCli, positionalInts } from './args.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const SERVE = path.join(HERE, '..', 'test', 'helpers', 'serve-fake.ts');

export interface LoadResult {
  jobs: number;
  clients: number;
  steps: number;
  postMs: { p50: number; p99: number };
  handoverMs: { p50: number; p99: number };
  completions: number;
  distinctCompletions: number;
  outputs: number;
  wholeOutputs: number;
  /** Jobs run twice because the kill interrupted them. */
  rerun: number;
  /** SSE clients that saw their job complete, and those that saw (in an uninterrupted run) every step once, in order. */
  clientsCompleted: number;
  clientsExact: number;
  /** The client that dropped and resumed saw every step once. */
  resumedExact: boolean;
  totalSeconds: number;
  /** Jobs the state file held as running, and as completed, when the server was killed. */
  killedRunning: number;
  killedDone: number;
  /** The events of clients that did not see every step once (for diagnosis; empty when all did). */
  inexact: string[];
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

async function startServer(stateDir: string, outputsDir: string, log: string, stepMs: number): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVE, stateDir, outputsDir, log, String(stepMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /port (\d+)/.exec(out);
      if (m) resolve(Number(m[1]));
    });
    child.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { child, url: `http://127.0.0.1:${port}` };
}

/** Follows a job's events across disconnections and a server restart, until its final state. */
async function follow(base: () => string, id: string, deadline: number): Promise<SseEvent[]> {
  const all: SseEvent[] = [];
  let last: string | undefined;
  while (Date.now() < deadline) {
    try {
      const got = await readEvents(`${base()}/api/v1/jobs/${id}/events`, { lastEventId: last });
      all.push(...got);
      last = got.at(-1)?.id ?? last;
      const end = got.at(-1);
      if (end?.event === 'state' && ['completed', 'failed', 'cancelled'].includes((end.data as JobRecord).state)) return all;
    } catch {
      // The server is down (killed): try again shortly.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`job ${id}: no final state before the deadline`);
}

/** Reads a job's events until its second step, drops the connection, and reads the rest from where it left off. */
async function dropAndResume(url: string, id: string): Promise<SseEvent[]> {
  const first = await readEvents(`${url}/api/v1/jobs/${id}/events`, { stop: (e) => e.event === 'progress' && (e.data as JobProgress).step >= 2 });
  const rest = await readEvents(`${url}/api/v1/jobs/${id}/events`, { lastEventId: first.at(-1)!.id });
  return [...first, ...rest];
}

function denoiseSteps(events: SseEvent[]): number[] {
  const steps = events.filter((e) => e.event === 'progress' && (e.data as JobProgress).phase === 'denoise').map((e) => (e.data as JobProgress).step);
  return steps.filter((s, i) => i === 0 || s !== steps[i - 1]);
}

export async function runServerLoad(o: { jobs?: number; clients?: number; steps?: number; stepMs?: number; timeoutMs?: number } = {}): Promise<LoadResult> {
  const jobs = o.jobs ?? 200;
  const clients = o.clients ?? 20;
  const steps = o.steps ?? 6;
  const stepMs = o.stepMs ?? 2;
  const deadline = Date.now() + (o.timeoutMs ?? 240_000);
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-load-'));
  const stateDir = path.join(root, 'state');
  const outputsDir = path.join(root, 'outputs');
  const log = path.join(root, 'completed.txt');
  const t0 = performance.now();
  let server = await startServer(stateDir, outputsDir, log, stepMs);
  let url = server.url;
  try {
    const ids: string[] = [];
    const postMs: number[] = [];
    // SSE clients on jobs spread over the queue, each connected as soon as its job is queued.
    const every = Math.max(1, Math.floor(jobs / clients));
    const followed: string[] = [];
    const streams: Promise<SseEvent[]>[] = [];
    // One more client drops mid-stream and resumes with Last-Event-ID. It subscribes as soon as its job is queued
    // (subscribing later could find the job already finished, leaving nothing to drop from).
    const droppedIndex = Math.floor(jobs / 2) + 1;
    let resumed: Promise<SseEvent[]> = Promise.resolve([]);
    for (let i = 0; i < jobs; i++) {
      const t = performance.now();
      const r = await fetch(`${url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: `job ${i}`, steps, seed: String(i) }) });
      postMs.push(performance.now() - t);
      if (r.status !== 202) throw new Error(`POST: HTTP ${r.status}`);
      const id = ((await r.json()) as { id: string }).id;
      ids.push(id);
      if (i % every === 0 && followed.length < clients) {
        followed.push(id);
        streams.push(follow(() => url, id, deadline));
      }
      if (i === droppedIndex) resumed = dropAndResume(url, id);
    }
    // Kill the server mid-job once a third of the jobs are done, then start it again on the same folders.
    for (;;) {
      const n = fs.existsSync(log) ? fs.readFileSync(log, 'utf8').split('\n').filter(Boolean).length : 0;
      if (n >= jobs / 3) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const resumedEvents = await resumed.catch(() => [] as SseEvent[]);
    // Mid-job: the running job has done some steps.
    for (;;) {
      const live = ((await (await fetch(`${url}/api/v1/jobs`)).json()) as { jobs: JobRecord[] }).jobs;
      if (live.some((j) => j.state === 'running' && (j.progress?.step ?? 0) >= 2)) break;
    }
    server.child.kill('SIGKILL');
    await new Promise((r) => server.child.once('exit', r));
    const atKill = JSON.parse(fs.readFileSync(path.join(stateDir, 'queue.json'), 'utf8')) as { jobs: JobRecord[] };
    const killedRunning = atKill.jobs.filter((j) => j.state === 'running').length;
    const killedDone = atKill.jobs.filter((j) => j.state === 'completed').length;
    server = await startServer(stateDir, outputsDir, log, stepMs);
    url = server.url;
    for (const id of ids) {
      for (;;) {
        if (Date.now() > deadline) throw new Error('jobs did not finish before the deadline');
        const j = (await (await fetch(`${url}/api/v1/jobs/${id}`)).json()) as JobRecord;
        if (j.state === 'completed') break;
        if (j.state !== 'queued' && j.state !== 'running') throw new Error(`job ${id} ended ${j.state}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    }
    const followedEvents = await Promise.all(streams);
    const all = ((await (await fetch(`${url}/api/v1/jobs`)).json()) as { jobs: JobRecord[] }).jobs;
    const byStart = all.filter((j) => j.startedAt && j.finishedAt).sort((a, b) => a.startedAt!.localeCompare(b.startedAt!));
    const handover: number[] = [];
    for (let i = 1; i < byStart.length; i++) {
      const gap = Date.parse(byStart[i]!.startedAt!) - Date.parse(byStart[i - 1]!.finishedAt!);
      if (gap >= 0 && gap < 1000) handover.push(gap);
    }
    const completions = fs.readFileSync(log, 'utf8').split('\n').filter(Boolean);
    const files = fs.readdirSync(outputsDir).filter((n) => !n.startsWith('.'));
    let whole = 0;
    for (const f of files) if ((await readImageMetadata(path.join(outputsDir, f))).metadata) whole += 1;
    // Every step from the one the client joined at to the last, each once, in order (a client that joined a
    // running job starts from its snapshot).
    const exact = (ev: SseEvent[]) => {
      const s = denoiseSteps(ev);
      // A client that arrived after the end gets the final state alone: nothing to miss.
      if (ev.length === 1 && ev[0]!.event === 'state' && (ev[0]!.data as JobRecord).state === 'completed') return true;
      // A client that joined after the last step (the job saving its output) gets a later phase's snapshot at the
      // last step, then the end: nothing to miss either.
      const progress = ev.filter((e) => e.event === 'progress').map((e) => e.data as JobProgress);
      if (s.length === 0 && progress.length > 0 && progress[0]!.step === steps && (ev.at(-1)?.data as JobRecord | undefined)?.state === 'completed') return true;
      return s.length > 0 && s.at(-1) === steps && s.every((v, i) => i === 0 || v === s[i - 1]! + 1);
    };
    const rerunIds = new Set(all.filter((j) => j.attempts > 1).map((j) => j.id));
    return {
      jobs, clients, steps,
      postMs: { p50: percentile(postMs, 50), p99: percentile(postMs, 99) },
      handoverMs: { p50: percentile(handover, 50), p99: percentile(handover, 99) },
      completions: completions.length,
      distinctCompletions: new Set(completions).size,
      outputs: files.length,
      wholeOutputs: whole,
      rerun: rerunIds.size,
      clientsCompleted: followedEvents.filter((ev) => (ev.at(-1)?.data as JobRecord | undefined)?.state === 'completed').length,
      clientsExact: followedEvents.filter((ev, k) => rerunIds.has(followed[k]!) || exact(ev)).length,
      resumedExact: exact(resumedEvents) && new Set(resumedEvents.map((e) => e.id)).size === resumedEvents.length,
      totalSeconds: (performance.now() - t0) / 1000,
      inexact: followedEvents.filter((ev, k) => !(rerunIds.has(followed[k]!) || exact(ev))).map((ev) => ev.map((e) => `${e.id}:${e.event}:${e.event === 'state' ? (e.data as JobRecord).state : (e.data as JobProgress).step}`).join(' ')),
      killedRunning,
      killedDone,
    };
  } finally {
    server.child.kill('SIGKILL');
    fs.rmSync(root, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const usage = `
npm run bench:server [-- JOBS [CLIENTS]]: asgd serve on loopback with the fake engine: JOBS queued jobs (default 200),
CLIENTS SSE clients (default 20, at most JOBS), a client that drops and resumes, and a SIGKILL mid-job. Prints a
Markdown table and writes bench/results/server-load.json.
`;
  const [jobs, clients] = benchCli(usage, { options: {}, allowPositionals: true }, ({ positionals }) => {
    const v = positionalInts(positionals, [['JOBS', 200, 2], ['CLIENTS', 20, 1]]);
    if (v[1]! > v[0]!) throw new BenchUsageError(`CLIENTS: at most JOBS (${v[0]}), received ${v[1]}`);
    return v;
  }) as [number, number];
  const r = await runServerLoad({ jobs, clients });
  const f = (x: number) => x.toFixed(1);
  console.log(`| jobs | SSE clients | POST /jobs p50 / p99 | hand-over p50 / p99 | completions (distinct) | whole outputs | re-run after SIGKILL | total |`);
  console.log(`| --- | --- | --- | --- | --- | --- | --- | --- |`);
  console.log(`| ${r.jobs} | ${r.clients} | ${f(r.postMs.p50)} / ${f(r.postMs.p99)} ms | ${f(r.handoverMs.p50)} / ${f(r.handoverMs.p99)} ms | ${r.completions} (${r.distinctCompletions}) | ${r.wholeOutputs}/${r.outputs} | ${r.rerun} | ${f(r.totalSeconds)} s |`);
  for (const x of r.inexact) console.log(`inexact: ${x}`);
  console.log(`killed with ${r.killedDone} jobs completed and ${r.killedRunning} running`);
  console.log(`SSE clients completed: ${r.clientsCompleted}/${r.clients}, exact steps: ${r.clientsExact}/${r.clients}; resumed client exact: ${r.resumedExact}`);
  const out = path.join(HERE, 'results', 'server-load.json');
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify({ date: new Date().toISOString(), node: process.version, cpus: os.cpus().length, load: os.loadavg(), ...r }, null, 2)}\n`);
  console.log(`wrote ${path.relative(process.cwd(), out)}`);
}
