/**
 * The fleet on loopback (bounded): `asgd serve --queue` in this process, N fake-engine worker processes, one
 * redis-server of its own. A burst of jobs (queued while the queue is paused, then resumed) gives the workers'
 * throughput; a paced run below capacity gives the queue latency (queued -> started on a worker). Checks that nothing is lost or
 * made twice (one completion, one engine run and one output file per job), and reads Redis's memory after.
 *
 *   node --import tsx bench/fleet.ts [jobs=1000] [workers=4] [paced=200]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Queue } from 'bullmq';
import { bullConnection, redisOptions } from '../src/server/fleet/connection.ts';
import { queueNameFor } from '../src/server/fleet/settings.ts';
import { serve } from '../src/server/serve.ts';
import type { JobRecord } from '../src/server/queue.ts';
import { api, fakeModelDir, waitFor } from '../test/helpers/fleet.ts';
import { startRedis } from '../test/helpers/redis.ts';
import { benchCli, positionalInts } from './args.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.join(HERE, '..', 'test', 'helpers', 'fleet-worker.ts');
const USAGE = `
npm run bench:fleet [-- JOBS [WORKERS [PACED]]]: the fleet on loopback with fake-engine workers and a redis-server of
its own: a burst of JOBS jobs (default 1000) over WORKERS worker processes (default 4), then PACED jobs (default 200)
at 20 per second. Prints a Markdown table and writes bench/results/fleet-<date>.json.
`;
const [jobs, workers, paced] = benchCli(USAGE, { options: {}, allowPositionals: true }, ({ positionals }) =>
  positionalInts(positionals, [['JOBS', 1000, 1], ['WORKERS', 4, 1], ['PACED', 200, 0]])) as [number, number, number];
const PACED_RATE = 20;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : NaN;
};

const redis = await startRedis();
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-bench-fleet-'));
const outputs = path.join(work, 'outputs');
const engineLog = path.join(work, 'engine.log');
const model = fakeModelDir('fake-64');
const server = await serve({ port: 0, host: '127.0.0.1', outputsDir: outputs, modelDirs: [], pipeline: {}, queue: redis.url, prefix: 'bench' });
const a = api(server.url);
const procs: ChildProcess[] = [];
for (let i = 0; i < workers; i++) {
  const cfg = { queue: redis.url, prefix: 'bench', outputsDir: outputs, modelDirs: [model], stepMs: 0, engineLog };
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER, JSON.stringify(cfg)], { stdio: ['ignore', 'pipe', 'inherit'] });
  procs.push(child);
}
await Promise.all(procs.map((c) => new Promise<void>((resolve) => {
  let out = '';
  c.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    if (/ready /.test(out)) resolve();
  });
})));
await waitFor('the workers in the status view', async () => (await a.fleet()).workers.length === workers || undefined, 30_000);

let finishedBefore = 0;
/** Waits on the queue's counts (cheap), then lists the jobs once. */
async function runAll(ids: string[]): Promise<JobRecord[]> {
  await waitFor('every job to finish', async () => {
    const q = (await a.fleet()).queues;
    const finished = q.reduce((n, x) => n + (x.counts['completed'] ?? 0) + (x.counts['failed'] ?? 0), 0);
    return finished - finishedBefore >= ids.length || undefined;
  }, 600_000, 100);
  finishedBefore += ids.length;
  const byId = new Map((await a.jobs()).map((j) => [j.id, j]));
  return ids.map((id) => byId.get(id)).filter((j): j is JobRecord => !!j);
}

// Burst: the model's queue is paused while every job is queued (8 requests at a time), then resumed: the
// throughput is the workers', not the submission's.
const hash = (await a.fleet()).workers[0]!.models[0]!.hash;
const bull = new Queue(queueNameFor(hash), { connection: bullConnection(redisOptions(redis.url)), prefix: 'bench' });
await bull.pause();
const t0 = performance.now();
const burstIds: string[] = new Array(jobs);
let next = 0;
await Promise.all(Array.from({ length: 8 }, async () => {
  for (let i = next++; i < jobs; i = next++) burstIds[i] = await a.queue({ prompt: `burst ${i}`, seed: String(i), steps: 1, width: 64, height: 64 });
}));
const queuedS = (performance.now() - t0) / 1000;
const resumedAt = Date.now();
await bull.resume();
const burst = await runAll(burstIds);
await bull.close();
const lastEnd = Math.max(...burst.map((j) => Date.parse(j.finishedAt!)));
const wait = burst.map((j) => Date.parse(j.startedAt!) - Math.max(resumedAt, Date.parse(j.createdAt)));

// Paced: below capacity, so the latency is the queue's pick-up time, not the backlog.
const pacedIds: string[] = [];
const t1 = performance.now();
for (let i = 0; i < paced; i++) {
  pacedIds.push(await a.queue({ prompt: `paced ${i}`, seed: String(1_000_000 + i), steps: 1, width: 64, height: 64 }));
  const next = t1 + ((i + 1) * 1000) / PACED_RATE;
  await new Promise((r) => setTimeout(r, Math.max(0, next - performance.now())));
}
const pacedDone = await runAll(pacedIds);
const pickup = pacedDone.map((j) => Date.parse(j.startedAt!) - Date.parse(j.createdAt));

const all = [...burst, ...pacedDone];
const files = fs.readdirSync(outputs).filter((n) => !n.startsWith('.'));
const runs = fs.readFileSync(engineLog, 'utf8').split('\n').filter(Boolean);
const perId = new Map<string, number>();
for (const r of runs) {
  const id = /-(j[0-9a-f]+)\.png/.exec(r)?.[1] ?? r;
  perId.set(id, (perId.get(id) ?? 0) + 1);
}
const completed = all.filter((j) => j.state === 'completed');
const result = {
  date: new Date().toISOString(),
  host: { cpus: os.cpus().length, loadavg: os.loadavg().map((x) => Math.round(x * 10) / 10) },
  workers,
  burst: {
    jobs,
    /** Seconds to submit them all through the API (8 at a time), and submissions per second. */
    submitSeconds: Math.round(queuedS * 10) / 10,
    submitPerSecond: Math.round((jobs / queuedS) * 10) / 10,
    /** From the resume to the last completion. */
    seconds: Math.round((lastEnd - resumedAt) / 100) / 10,
    jobsPerSecond: Math.round((jobs / ((lastEnd - resumedAt) / 1000)) * 10) / 10,
    queueWaitMs: { p50: pct(wait, 50), p99: pct(wait, 99) },
  },
  paced: { jobs: paced, ratePerSecond: PACED_RATE, pickupMs: { p50: pct(pickup, 50), p99: pct(pickup, 99) } },
  redisUsedMemoryBytes: redis.usedMemory(),
  lost: all.length - completed.length + (jobs + paced - all.length),
  duplicated: [...perId.values()].filter((n) => n > 1).length + Math.max(0, files.length - completed.length),
  outputFiles: files.length,
  engineRuns: runs.length,
};

process.stdout.write(`
fleet: ${workers} worker processes, fake engine (1 step), ${os.cpus().length} CPUs (load ${result.host.loadavg.join(' ')})
| run | jobs | throughput (jobs/s) | queue wait p50 / p99 (ms) |
| --- | --- | --- | --- |
| burst (all queued, then the queue resumed) | ${jobs} | ${result.burst.jobsPerSecond} | ${result.burst.queueWaitMs.p50} / ${result.burst.queueWaitMs.p99} (behind the backlog) |
| paced (${PACED_RATE}/s, below capacity) | ${paced} | - | ${result.paced.pickupMs.p50} / ${result.paced.pickupMs.p99} |
API submissions: ${result.burst.submitPerSecond}/s (8 in flight)
Redis used_memory after: ${(result.redisUsedMemoryBytes / 1024 / 1024).toFixed(2)} MiB (${jobs + paced} finished jobs kept as history)
lost: ${result.lost}, duplicated: ${result.duplicated} (outputs ${files.length}, engine runs ${runs.length}, completed ${completed.length})
`);
const dir = path.join(HERE, 'results');
fs.mkdirSync(dir, { recursive: true });
const file = path.join(dir, `fleet-${result.date.replace(/[:.]/g, '-')}.json`);
fs.writeFileSync(file, JSON.stringify(result, null, 2));
process.stdout.write(`wrote ${file}\n`);

for (const c of procs) c.kill('SIGTERM');
await Promise.all(procs.map((c) => new Promise((r) => (c.exitCode !== null ? r(null) : c.once('exit', r)))));
await server.close();
await redis.stop();
fs.rmSync(work, { recursive: true, force: true });
process.exit(result.lost || result.duplicated ? 1 : 0);
