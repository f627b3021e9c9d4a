/**
 * `card.js schedule` (bench/card-schedule.ts): the card's measured costs reach the latency model, the targets'
 * rows agree with the runner benchmark's own at the same costs, and bad part files are named in the error.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import { benchSchedule, type ScheduleRow } from '../bench/card-schedule.ts';

let dir = '';
const file = (name: string, value: unknown) => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, JSON.stringify(value));
  return f;
};

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-card-schedule-'));
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

// What `card.js unet` and `card.js probe` write (only the fields the model reads, plus one it must ignore).
const unet = (halfCost: number) => ({ latent: 128, adapter_both: { medianMs: 100 }, adapter_half_over_both: halfCost, run_batch1_over_batch2: 0.2, run_batch4_over_batch2: 1.8 });
const probe = { batch2: { probeOverPlain: 1.15 } };

test('the measured CFG-half cost decides the 3072 px target on 8 devices, as in the runner benchmark at the same costs', async () => {
  const r = await benchSchedule({ 'unet-json': file('unet.json', unet(0.5)), 'probe-json': file('probe.json', probe) });
  const m = r['measured'] as { unitMs: number; halfCost: number; probeExtra: number; batch4OverBatch2: number };
  assert.equal(m.unitMs, 100);
  assert.equal(m.halfCost, 0.5, 'the adapter CFG half, not the bare session run');
  assert.ok(Math.abs(m.probeExtra - 0.15) < 1e-12);
  assert.equal(m.batch4OverBatch2, 1.8);
  assert.equal(r['stageSplit'], 0.8, 'the shipped stage split, from the option registry');
  const rows = r['rows'] as ScheduleRow[];
  assert.equal(rows.length, 8);
  const at = (devices: number, split: string, host = false) => rows.find((x) => x.devices === devices && x.split === split && x.hostCharged === host)!;
  // docs/benchmarks.md, "CFG splitting and the dataflow" (runner benchmark, 1 ms per call more): half 0.5 gives
  // 3.89x (balance) and 3.72x (never) on 4 devices at 2048 px, 6.71x and 5.50x on 8 at 3072 px.
  assert.ok(Math.abs(at(4, 'balance').speedup - 3.89) < 0.1, String(at(4, 'balance').speedup));
  assert.ok(Math.abs(at(4, 'never').speedup - 3.72) < 0.1, String(at(4, 'never').speedup));
  assert.ok(Math.abs(at(8, 'balance').speedup - 6.71) < 0.1, String(at(8, 'balance').speedup));
  assert.ok(Math.abs(at(8, 'never').speedup - 5.5) < 0.1, String(at(8, 'never').speedup));
  for (const x of rows) assert.equal(x.met, x.speedup >= x.target, `${x.geometry} ${x.split}`);
  assert.equal(at(8, 'balance').met, true);
  assert.equal(at(8, 'never').met, false);
  assert.ok(at(8, 'balance', true).seconds > 0 && at(8, 'balance', true).idle.length === 8);
  // 'always': two halves of 0.5 cost one whole call, so one device takes as long either way (within the key unit's
  // probe, whose extra is charged to each half); on 8 devices the 9 patches' 18 halves fill them.
  assert.ok(Math.abs(at(8, 'always').oneDeviceOverNever! - 1) < 0.02, String(at(8, 'always').oneDeviceOverNever));
  assert.ok(at(8, 'always').speedup > at(8, 'never').speedup, `${at(8, 'always').speedup} vs never ${at(8, 'never').speedup}`);
  assert.equal(at(8, 'never').oneDeviceOverNever, undefined);
  assert.equal(r['modelCheck'], undefined, 'no generation given');
});

test('where the probe part measured a unit that is not probed on the probe graph, the unit and the key unit are charged from it', async () => {
  const r = await benchSchedule({ 'unet-json': file('unet2.json', unet(0.5)), 'probe-json': file('probe2.json', { batch2: { probeOverPlain: 1.26, probeNoiseOverPlain: 1.05 } }) });
  const m = r['measured'] as { unitMs: number; probeExtra: number; sources: Record<string, string> };
  assert.ok(Math.abs(m.unitMs - 105) < 1e-9, String(m.unitMs));
  assert.ok(Math.abs(m.probeExtra - 0.2) < 1e-9, String(m.probeExtra));
  assert.match(m.sources['probeExtra']!, /probeOverPlain \/ batch2\.probeNoiseOverPlain - 1$/);
  assert.match(m.sources['unitMs']!, /x .*probeNoiseOverPlain$/);
});

test('the model check compares one device at the generation geometry with its measured denoising time', async () => {
  const gen = file('gen.json', { devices: 'webgpu:0', width: 512, steps: 2, result: { timings: { denoiseMs: 5000 } } });
  const small = { ...unet(1.04), latent: 32 };
  const r = await benchSchedule({ 'unet-json': file('unet-small.json', small), 'probe-json': path.join(dir, 'missing.json'), 'gen-json': gen });
  assert.match((r['measured'] as { sources: Record<string, string> }).sources['probeExtra']!, /assumed 0\.15/);
  const c = r['modelCheck'] as { geometry: { latent: number; native: number }; steps: number; predictedDenoiseMs: number; measuredDenoiseMs: number; measuredOverPredicted: number };
  assert.deepEqual([c.geometry.latent, c.geometry.native, c.steps], [64, 32, 2]);
  assert.equal(c.measuredDenoiseMs, 5000);
  // 4 patches a step at 4x the native area, 2 steps, 100 ms each, at the least; the probe and stage 2 add to it.
  assert.ok(c.predictedDenoiseMs >= 800 && c.predictedDenoiseMs < 5000, String(c.predictedDenoiseMs));
  assert.equal(c.measuredOverPredicted, 5000 / c.predictedDenoiseMs);
  // A half as dear as a whole call (1.04, PyTorch's): splitting every unit doubles one device's time, give or take
  // the probe's extra, which each half pays.
  const always = (r['rows'] as ScheduleRow[]).filter((x) => x.split === 'always');
  assert.equal(always.length, 2);
  for (const x of always) assert.ok(x.oneDeviceOverNever! > 1.9 && x.oneDeviceOverNever! < 2.2, `${x.geometry}: ${x.oneDeviceOverNever}`);
});

test('a failed part, a missing number or a several-device generation is named in the error', async () => {
  await assert.rejects(benchSchedule({}), /--unet-json is required/);
  const failed = file('failed.json', { command: 'unet', error: 'WebGPU device lost' });
  await assert.rejects(benchSchedule({ 'unet-json': failed }), /failed\.json records a failed part: WebGPU device lost/);
  const partial = file('partial.json', { latent: 128, adapter_both: { medianMs: 100 } });
  await assert.rejects(benchSchedule({ 'unet-json': partial }), /partial\.json: expected a number at adapter_half_over_both, found undefined/);
  const two = file('gen-2.json', { devices: 'webgpu:0,webgpu:0', width: 512, steps: 2, result: { timings: { denoiseMs: 1 } } });
  await assert.rejects(benchSchedule({ 'unet-json': file('u.json', unet(1.04)), 'gen-json': two }), /needs a one-device generation, found devices webgpu:0,webgpu:0/);
});

test('a generation cut short by its time limit (progress only) leaves the model check out and says so', async () => {
  const cut = file('gen-cut.json', { devices: 'webgpu:0', width: 2048, steps: 50, partial: { step: 12, totalSteps: 50, unitsDone: 60, ms: 70000 } });
  const r = await benchSchedule({ 'unet-json': file('u-cut.json', unet(0.5)), 'gen-json': cut });
  assert.equal(r['modelCheck'], undefined);
  assert.match(String(r['genCheck']), /gen-cut\.json holds a generation cut short \(\{"step":12,"totalSteps":50,.*\): the one-device check is left out/);
  assert.equal((r['rows'] as ScheduleRow[]).length, 8, 'the targets are still computed');
});

test('scripts/device/card.sh runs the schedule part after gen-1, whose JSON it reads, and leaves it budget', () => {
  // card.sh with a stand-in card.js (no .device here: node from PATH, card.js from CARD_WORK/rt) that logs each
  // subcommand and writes its --out; only the two parts asked for run. The generation writes its progress and then
  // runs on, as a plain 2048 px generation does on the card, until the part's time limit ends it.
  const root = fs.mkdtempSync(path.join(dir, 'card-sh-'));
  const script = path.join(root, 'scripts', 'device', 'card.sh');
  fs.mkdirSync(path.dirname(script), { recursive: true });
  fs.copyFileSync(path.resolve(import.meta.dirname, '..', 'scripts', 'device', 'card.sh'), script);
  const work = path.join(root, 'work');
  const calls = path.join(root, 'calls.log');
  fs.mkdirSync(path.join(work, 'rt', 'build', 'bench'), { recursive: true });
  fs.writeFileSync(path.join(work, 'rt', 'build', 'bench', 'card.js'), `
const fs = require('node:fs');
const a = process.argv.slice(2);
const out = a[a.indexOf('--out') + 1];
const gen = a.includes('--gen-json') ? a[a.indexOf('--gen-json') + 1] : undefined;
fs.appendFileSync(${JSON.stringify(calls)}, a[0] + (gen ? ' gen-json ' + (fs.existsSync(gen) ? 'present' : 'absent') : '') + '\\n');
fs.writeFileSync(out, JSON.stringify(a[0] === 'generate' ? { devices: 'webgpu:0', partial: { step: 1 } } : { command: a[0] }));
if (a[0] === 'generate') setTimeout(() => {}, 120000);
`);
  fs.writeFileSync(path.join(work, 'rt', 'build', 'package.json'), '{"type": "commonjs"}');
  const r = spawnSync('bash', [script], {
    env: { ...process.env, OUT: path.join(root, 'out'), CARD_WORK: work, CARD_PARTS: 'schedule gen-1', CARD_BUDGET_S: '45', PYTHON: 'python3' },
    encoding: 'utf8', timeout: 60_000,
  });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.deepEqual(fs.readFileSync(calls, 'utf8').trim().split('\n'), ['generate', 'schedule gen-json present']);
  const doc = JSON.parse(fs.readFileSync(path.join(root, 'out', 'card.json'), 'utf8')) as { parts: Record<string, { status: string }> };
  assert.equal(doc.parts['gen-1']!.status, 'timeout');
  assert.equal(doc.parts['schedule']!.status, 'ok', 'gen-1 left the schedule its share of the budget');
});
