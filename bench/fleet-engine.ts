/**
 * The fleet with the real engine and the shipped model (models/shapes-128): the same jobs over 1 worker process,
 * then over 2 (1 thread each), through `asgd serve --queue` and `asgd worker` from the build (npm run build).
 * Prints the wall time of each and the throughput ratio; writes JSON under bench/results/.
 *
 *   node --import tsx bench/fleet-engine.ts [jobs=12] [size=256] [steps=4]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { api, waitFor } from '../test/helpers/fleet.ts';
import { startRedis } from '../test/helpers/redis.ts';
import { BenchUsageError, benchCli, positionalInts } from './args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin', 'asgd.js');
const MODEL = path.join(ROOT, 'models', 'shapes-128');
const USAGE = `
npm run bench:fleet-engine [-- JOBS [SIZE [STEPS]]] (needs npm run build): the real engine on models/shapes-128 through
asgd serve --queue and 1, then 2, asgd worker processes: JOBS jobs (default 12) of SIZE px (default 256, a multiple
of 8), asg, STEPS steps (default 4). Prints a Markdown table and writes bench/results/fleet-engine-<date>.json.
`;
const [jobs, size, steps] = benchCli(USAGE, { options: {}, allowPositionals: true }, ({ positionals }) =>
{
  const v = positionalInts(positionals, [['JOBS', 12, 1], ['SIZE', 256, 64], ['STEPS', 4, 1]]);
  if (v[1]! % 8 !== 0) throw new BenchUsageError(`SIZE: expected a multiple of 8, received ${v[1]}`);
  return v;
}) as [number, number, number];

function start(args: string[], ready: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray }> {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
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

async function run(workers: number): Promise<{ workers: number; seconds: number; jobsPerMinute: number }> {
  const redis = await startRedis();
  const outputs = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-bench-fleet-engine-'));
  const q = ['--queue', redis.url, '--outputs', outputs];
  const server = await start(['serve', '--port', '0', ...q], /asgd serve: (http:\/\/\S+)/);
  const ws = await Promise.all(Array.from({ length: workers }, () => start(['worker', ...q, '--model', MODEL, '--threads', '1'], /taking jobs/)));
  const a = api(server.match[1]!);
  await waitFor('the workers', async () => (await a.fleet()).workers.length === workers || undefined, 60_000);
  // Load the model on every worker first (one small job each), so the timing is of generations.
  const warm = await Promise.all(Array.from({ length: workers }, (_, i) => a.queue({ prompt: 'warm up', seed: String(900 + i), steps: 1, width: 128, height: 128, method: 'direct' })));
  await Promise.all(warm.map((id) => a.finished(id, 600_000)));
  const t0 = performance.now();
  const ids = [];
  for (let i = 0; i < jobs; i++) ids.push(await a.queue({ prompt: 'a red circle on a blue background', seed: String(i + 1), steps, width: size, height: size, method: 'asg' }));
  const done = await Promise.all(ids.map((id) => a.finished(id, 3_600_000)));
  const seconds = (performance.now() - t0) / 1000;
  if (done.some((j) => j.state !== 'completed')) throw new Error(`a job did not complete: ${JSON.stringify(done.find((j) => j.state !== 'completed'))}`);
  for (const p of [...ws, server]) p.child.kill('SIGINT');
  await Promise.all([...ws, server].map((p) => new Promise((r) => (p.child.exitCode !== null ? r(null) : p.child.once('exit', r)))));
  await redis.stop();
  fs.rmSync(outputs, { recursive: true, force: true });
  return { workers, seconds: Math.round(seconds * 10) / 10, jobsPerMinute: Math.round((jobs / seconds) * 600) / 10 };
}

const one = await run(1);
const two = await run(2);
const result = {
  date: new Date().toISOString(), host: { cpus: os.cpus().length, loadavg: os.loadavg().map((x) => Math.round(x * 10) / 10) },
  jobs, size, steps, method: 'asg', runs: [one, two], throughputRatio: Math.round((two.jobsPerMinute / one.jobsPerMinute) * 100) / 100,
};
process.stdout.write(`
fleet, real engine: ${jobs} jobs of ${size}x${size} px (asg, ${steps} steps) on models/shapes-128, 1 thread per worker, ${os.cpus().length} CPUs (load ${result.host.loadavg.join(' ')})
| workers | seconds | jobs/min |
| --- | --- | --- |
| 1 | ${one.seconds} | ${one.jobsPerMinute} |
| 2 | ${two.seconds} | ${two.jobsPerMinute} |
throughput ratio (2 workers / 1): ${result.throughputRatio}
`);
const dir = path.join(ROOT, 'bench', 'results');
fs.mkdirSync(dir, { recursive: true });
const file = path.join(dir, `fleet-engine-${result.date.replace(/[:.]/g, '-')}.json`);
fs.writeFileSync(file, JSON.stringify(result, null, 2));
process.stdout.write(`wrote ${file}\n`);
