/**
 * Where the coordinator's host time goes: the latency-model generation at the shipped defaults (bench/latency-model.ts,
 * host time charged), under the V8 CPU profiler (node:inspector), and the self time of each function per step.
 * Per function, where wall-time differences cannot say which part moved; on a shared machine the totals still vary
 * from run to run (10.7 to 14.8 ms/step for the same code here), so compare versions in alternating runs.
 *
 *   node --import tsx bench/host-profile.ts [--size 2048|3072] [--model sdxl|sd15|sd3] [--stage stage1|stage2] [--scheduler NAME] [--runs 4] [--top 15]
 *
 * Prints a table; writes bench/results/host-profile-<size>.json (host-profile-sd15-<size>.json for SD 1.5, -sd3- for SD3; with
 * --stage, -stage1 or -stage2 before .json; with --scheduler, -NAME before that).
 */
import fs from 'node:fs';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchCli, choiceArg, intArg } from './args.ts';
import { SCHEDULER_NAMES } from '../src/core/schedulers/index.ts';
import { shippedDefaultsSettings, simulateGeneration } from './latency-model.ts';

const USAGE = `
npm run bench:host-profile [-- options]: the latency-model generation at the shipped defaults under the V8 profiler;
self time per function per step. Prints a table and writes bench/results/host-profile[-sd15|-sd3]-<size>.json.

  --size N     2048 (4 devices) or 3072 (8 devices) (default 2048)
  --model M    sdxl (native 1024 px: 4 or 9 patches), sd15 (native 512 px: 16 or 36 patches) or sd3 (as sdxl with
               16 latent channels and flow-matching Euler) (default sdxl)
  --stage S    stage1 or stage2: every step in that stage (stage split 1 or 0) instead of the shipped split
  --scheduler NAME  a scheduler other than the model's Euler (${SCHEDULER_NAMES.join(', ')}), same config
  --runs N     profiled runs after a warm-up (default 4)
  --top N      functions listed (default 15)
  --help       this text
`;
const { values, size, model, runs, stage, scheduler } = benchCli(USAGE, {
  options: { size: { type: 'string', default: '2048' }, model: { type: 'string', default: 'sdxl' }, stage: { type: 'string' }, scheduler: { type: 'string' }, runs: { type: 'string', default: '4' }, top: { type: 'string', default: '15' } },
}, ({ values: v }) => ({
  values: { ...v, top: String(intArg('--top', v.top!, 1)) },
  size: Number(choiceArg('--size', v.size!, ['2048', '3072'] as const)) as 2048 | 3072,
  model: choiceArg('--model', v.model!, ['sdxl', 'sd15', 'sd3'] as const),
  runs: intArg('--runs', v.runs!, 1),
  stage: v.stage === undefined ? null : choiceArg('--stage', v.stage, ['stage1', 'stage2'] as const),
  scheduler: v.scheduler === undefined ? null : choiceArg('--scheduler', v.scheduler, SCHEDULER_NAMES),
}));
const shipped = shippedDefaultsSettings(size, model);
const settings = { ...shipped, ...(stage === null ? {} : { stageSplit: stage === 'stage1' ? 1 : 0 }), ...(scheduler === null ? {} : { scheduler }) };
const { name } = settings.geometry;
const { devices, steps } = settings;

await simulateGeneration(settings); // warm-up: compile the hot paths before profiling
const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.start');
for (let i = 0; i < runs; i++) await simulateGeneration(settings);
const { profile } = await session.post('Profiler.stop');
session.disconnect();

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const self = new Map<string, number>();
const deltas = profile.timeDeltas ?? [];
(profile.samples ?? []).forEach((id, i) => {
  const f = byId.get(id)!.callFrame;
  const name = f.functionName || '(anonymous)';
  const key = f.url ? `${name} (${path.basename(f.url)})` : name;
  self.set(key, (self.get(key) ?? 0) + (deltas[i] ?? 0) / 1000);
});
const perStep = (ms: number) => ms / (runs * steps);
const rows = [...self.entries()].filter(([k]) => k !== '(idle)').sort((a, b) => b[1] - a[1]);
const total = rows.reduce((s, [, v]) => s + v, 0);
console.log(`\n### Host CPU time per step, ${name} on ${devices} latency-model devices${stage ? `, every step in ${stage}` : ''}${scheduler ? `, ${scheduler}` : ''} (${runs} runs, self time)\n`);
console.log('| function | ms/step | share |');
console.log('|---|---|---|');
for (const [k, v] of rows.slice(0, Number(values.top))) console.log(`| ${k} | ${perStep(v).toFixed(2)} | ${((100 * v) / total).toFixed(1)}% |`);
console.log(`| all | ${perStep(total).toFixed(2)} | |`);
const out = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results', `host-profile${model === 'sdxl' ? '' : `-${model}`}-${size}${scheduler ? `-${scheduler}` : ''}${stage ? `-${stage}` : ''}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), node: process.version, cpu: os.cpus()[0]?.model, model, size, stage, scheduler, runs, msPerStep: Object.fromEntries(rows.map(([k, v]) => [k, perStep(v)])) }, null, 2) + '\n');
console.log(`\nWrote ${path.relative(process.cwd(), out)}`);
