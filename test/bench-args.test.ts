/**
 * The benchmark scripts' command lines (bench/args.ts): a misspelt flag or a wrong value stops the script with
 * exit code 2 and one line naming it, before any work (not ignored, not a stack trace), and `--help` prints the
 * usage. Each script is started for real with a wrong command line; none of them gets as far as loading a model.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BenchUsageError, choiceList, intArg, intList, readBenchArgs } from '../bench/args.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function bench(script: string, args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join('bench', script), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit 2 at once, the problem named on stderr, no stack trace. */
function refuses(script: string, args: string[], message: RegExp): void {
  const r = bench(script, args);
  assert.equal(r.status, 2, `${script} ${args.join(' ')}: exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stderr, message);
  assert.doesNotMatch(r.stderr, /^\s+at /m, 'no stack trace');
}

function helps(script: string, mentions: RegExp): void {
  const r = bench(script, ['--help']);
  assert.equal(r.status, 0, `${script} --help: exit ${r.status}\n${r.stderr}`);
  assert.match(r.stdout, mentions);
}

test('readBenchArgs: strict flags, --help, values checked by the reader', () => {
  const config = (args: string[]) => ({ args, options: { only: { type: 'string' as const }, quick: { type: 'boolean' as const } } });
  const r = readBenchArgs(config(['--only', 'host', '--quick']), ({ values }) => ({ ...values }));
  assert.deepEqual(r, { help: false, value: { only: 'host', quick: true } });
  assert.deepEqual(readBenchArgs(config(['--onyl', 'host', '--help']), () => 0), { help: true });
  assert.throws(() => readBenchArgs(config(['--onyl', 'host']), () => 0), (e: unknown) => e instanceof BenchUsageError && /--onyl/.test(e.message));
  assert.throws(() => readBenchArgs(config(['--only']), () => 0), BenchUsageError);
  assert.throws(() => readBenchArgs(config(['stray']), () => 0), BenchUsageError);
  assert.throws(() => readBenchArgs(config([]), () => intArg('--runs', 'x', 1)), /--runs: expected an integer of at least 1, received "x"/);
  assert.deepEqual(intList('--sizes', '256, 512', 64), [256, 512]);
  assert.throws(() => intList('--sizes', '256,', 64), BenchUsageError);
  assert.throws(() => choiceList('--variants', 'asg-polyphase,asg-polyphse', ['asg-polyphase']), /unknown: "asg-polyphse"/);
});

test('npm run bench: an unknown section or a misspelt flag is refused (was: nothing run, or every section)', () => {
  refuses('bench.ts', ['--only', 'hosts'], /--only: expected one of generation, host, methods/);
  refuses('bench.ts', ['--onyl', 'host'], /Unknown option '--onyl'/);
  helps('bench.ts', /--only SECTION/);
});

test('bench/runner.ts: a misspelt part flag is refused (was: the long real part ran)', () => {
  refuses('runner.ts', ['--scheduling-onyl'], /Unknown option '--scheduling-onyl'/);
  refuses('runner.ts', ['--host-only', '--runs', '0'], /--runs: expected an integer of at least 1/);
  refuses('runner.ts', ['--model-only', '--host-only'], /at most one part/);
  refuses('runner.ts', ['--real-only', '--configs', 'gpu:1'], /--configs: bad config/);
  helps('runner.ts', /--scheduling-only/);
});

test('npm run bench:vae: a misspelt flag and a non-square or wrong-sized saved latent are refused (were: ignored, the default run)', () => {
  refuses('vae-tiling.ts', ['--tile', '32'], /Unknown option '--tile'/);
  refuses('vae-tiling.ts', ['--latent', 'x.f32', '--latent-size', '64x32'], /--latent-size: expected a square size/);
  refuses('vae-tiling.ts', ['--latent', 'x.f32'], /--latent and --latent-size go together/);
  refuses('vae-tiling.ts', ['--sizes', '512,x'], /--sizes: expected an integer/);
  helps('vae-tiling.ts', /--pass-limits/);
});

test('npm run bench:vae -- --encoder writes its JSON (bench/results/vae-tiling-encoder.json) as well as the table', () => {
  const file = path.join(ROOT, 'bench', 'results', 'vae-tiling-encoder.json');
  fs.rmSync(file, { force: true });
  const r = bench('vae-tiling.ts', ['--encoder', '--sizes', '128', '--tiles', '8']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /\| 128 \| 8 \| 4 \| exact \|/);
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { rows: { size: number; stats: string }[] };
  assert.deepEqual(json.rows.map((x) => [x.size, x.stats]), [[128, 'off'], [128, 'estimate'], [128, 'exact']]);
});

test('npm run bench:vae-attention: misspelt flags and tiles below the library minimum are refused (were: ignored, a stack trace)', () => {
  refuses('vae-attention.ts', ['--tiles', '16'], /Unknown option '--tiles'/);
  refuses('vae-attention.ts', ['--tile', '4'], /--tile: expected an integer of at least 8/);
  refuses('vae-attention.ts', ['--size', '100'], /--size: expected a multiple of 8/);
  refuses('vae-attention.ts', ['--unchunked'], /only with --head-memory/);
  helps('vae-attention.ts', /--head-memory/);
});

test('npm run bench:vae-memory: a misspelt case is refused (was: a stack trace for the model, a tiled run for the mode)', () => {
  refuses('vae-memory.ts', ['--cases', 'shiped:512'], /--cases: expected model:size/);
  refuses('vae-memory.ts', ['--cases', 'shipped:512:tiles'], /--cases: expected model:size/);
  refuses('vae-memory.ts', ['--max-tile', '2'], /Unknown option '--max-tile'/);
  refuses('vae-memory.ts', ['--stats', 'exakt'], /--stats: expected one of estimate, exact, off/);
  refuses('vae-memory.ts', ['--probe', 'tile', '--ort', '{bad'], /--ort: expected a JSON object/);
  helps('vae-memory.ts', /--cases LIST/);
});

test('npm run bench:worker-transport: a misspelt or wrong --rounds is refused (was: the default 7 rounds)', () => {
  refuses('worker-transport.ts', ['--round', '1'], /Unknown option '--round'/);
  refuses('worker-transport.ts', ['--rounds', 'x'], /--rounds: expected an integer of at least 1/);
  helps('worker-transport.ts', /--rounds N/);
});

test('npm run bench:unet-io: a misspelt flag or case is named in one line (was: a stack trace)', () => {
  refuses('unet-io.ts', ['--iter', '3'], /Unknown option '--iter'/);
  refuses('unet-io.ts', ['--cases', 'sd15,sdlx'], /--cases: expected a comma-separated subset of shipped, sd15, sdxl; unknown: "sdlx"/);
  refuses('unet-io.ts', ['--device', 'cpu'], /--device: expected a webgpu device/);
  helps('unet-io.ts', /--unet FILE/);
});

test('npm run bench:vae-stats-memory: a misspelt flag, a bad budget or size is named in one line', () => {
  refuses('vae-stats-memory.ts', ['--budget', '0'], /Unknown option '--budget'/);
  refuses('vae-stats-memory.ts', ['--budgets', '0,x'], /--budgets: expected an integer of at least 0, received "x"/);
  refuses('vae-stats-memory.ts', ['--size', '100'], /--size: expected a multiple of 8/);
  refuses('vae-stats-memory.ts', ['--tile', '4'], /--tile: expected an integer of at least 8/);
  refuses('vae-stats-memory.ts', ['--provider', 'cuda'], /--provider: expected cpu or webgpu, received cuda/);
  refuses('vae-stats-memory.ts', ['--host-budgets', '1024'], /--host-budgets: only with --provider webgpu/);
  helps('vae-stats-memory.ts', /--budgets LIST/);
  helps('vae-stats-memory.ts', /--host-budgets LIST/);
});

test('npm run bench:probe-memory: the UNet is required, a misspelt flag and a bad number are named in one line', () => {
  refuses('probe-memory.ts', [], /--unet FILE is required/);
  refuses('probe-memory.ts', ['--unet', 'x.onnx', '--iter', '3'], /Unknown option '--iter'/);
  refuses('probe-memory.ts', ['--unet', 'x.onnx', '--latent', '4'], /--latent: expected an integer of at least 8/);
  helps('probe-memory.ts', /--unet FILE/);
});

test('bench:fleet, bench:fleet-engine, bench:server: their positional counts are checked (was: `--jobs 10` gave NaN jobs and 10 workers)', () => {
  refuses('fleet.ts', ['--jobs', '10'], /Unknown option '--jobs'/);
  refuses('fleet.ts', ['x'], /JOBS: expected an integer of at least 1, received "x"/);
  refuses('fleet.ts', ['10', '2', '5', '7'], /expected at most 3 arguments/);
  refuses('fleet-engine.ts', ['2', '100'], /SIZE: expected a multiple of 8/);
  refuses('server-load.ts', ['10', '20'], /CLIENTS: at most JOBS/);
  refuses('server-load.ts', ['--jobs', '10'], /Unknown option '--jobs'/);
  helps('fleet.ts', /JOBS \[WORKERS \[PACED\]\]/);
  helps('server-load.ts', /JOBS \[CLIENTS\]/);
});

test('bench/tune.ts: missing or malformed configs are named (was: a SyntaxError stack trace)', () => {
  refuses('tune.ts', [], /CONFIGS: expected a JSON array/);
  refuses('tune.ts', ['[["a","asgg",{}]]'], /CONFIGS: expected a JSON array of \[label, method/);
  refuses('tune.ts', ['[["a","asg",{}]]', '12x'], /SIZE: expected an integer/);
  helps('tune.ts', /CONFIGS \[SIZE\]/);
});

test('cost-growth, host-profile, host-ab, torch-side-by-side, bench:fidelity: an unknown flag is one line, not node\'s parseArgs stack trace', () => {
  refuses('cost-growth.ts', ['--area', '1'], /Unknown option '--area'/);
  refuses('cost-growth.ts', ['--areas', '2'], /--areas: expected perfect squares/);
  refuses('cost-growth.ts', ['--methods', 'asg,cut'], /--methods: expected a comma-separated subset of .*unknown: "cut"/);
  refuses('host-profile.ts', ['--size', '1024'], /--size: expected one of 2048, 3072/);
  refuses('host-profile.ts', ['--run', '2'], /Unknown option '--run'/);
  refuses('torch-side-by-side.ts', ['--sizes', '256'], /--sizes: expected WxH sizes/);
  refuses('fidelity.ts', ['--tag', 'shapes-128', '--report-onyl'], /Unknown option '--report-onyl'/);
  refuses('fidelity.ts', ['--asg', '{"stageSplitt":1}'], /--asg: Invalid methodOptions.stageSplitt: not a known setting/);
  refuses('fidelity.ts', ['--asg', '{bad'], /--asg: expected a JSON object/);
  helps('fidelity.ts', /--report-only/);
  helps('host-profile.ts', /--size N/);
  refuses('host-ab.ts', [], /--before: required/);
  refuses('host-ab.ts', ['--before', 'docs'], /docs is not a checkout of this project/);
  refuses('host-ab.ts', ['--before', '.', '--rounds', '1'], /--rounds: expected an integer of at least 3/);
  helps('host-ab.ts', /--before DIR/);
});

test('npm run bench:upscale: a misspelt variant is refused (was: dropped, a run with no such rows) and numbers are checked', () => {
  refuses('upscale.ts', ['--variants', 'direct,asg-polyphse'], /--variants: expected a comma-separated subset of .*unknown: "asg-polyphse"/);
  refuses('upscale.ts', ['--images', 'x'], /--images: expected an integer/);
  refuses('upscale.ts', ['--strength', '1.5'], /--strength: expected a number from 0 to 1/);
  refuses('upscale.ts', ['--scale', '2'], /Unknown option '--scale'/);
  helps('upscale.ts', /--variants LIST/);
});

test('bench/card.ts: an option its subcommand does not read is refused (was: ignored, e.g. --iter 1 ran the default 10 calls)', async () => {
  const { parseArgs, CardUsageError } = await import('../bench/card.ts');
  assert.deepEqual(parseArgs(['unet', '--unet', 'u.onnx', '--provider', 'cpu', '--iters', '3']), { command: 'unet', args: { unet: 'u.onnx', provider: 'cpu', iters: '3' } });
  assert.throws(() => parseArgs(['unet', '--unet', 'u.onnx', '--iter', '3']), (e: unknown) => e instanceof CardUsageError && /unknown option --iter/.test(e.message));
  assert.throws(() => parseArgs(['schedule', '--unet', 'u.json']), CardUsageError);
  assert.throws(() => parseArgs(['sched']), /unknown subcommand "sched"/);
  refuses('card.ts', ['probe', '--unet', 'u.onnx', '--provider', 'cpu', '--warm-up', '1'], /card probe: unknown option --warm-up/);
});

test('npm run bench:server writes its JSON (bench/results/server-load.json) as well as the table', () => {
  const file = path.join(ROOT, 'bench', 'results', 'server-load.json');
  fs.rmSync(file, { force: true });
  const r = bench('server-load.ts', ['6', '2']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^\| 6 \| 2 \| /m);
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { jobs: number; clients: number; completions: number; distinctCompletions: number };
  assert.equal(json.jobs, 6);
  assert.equal(json.clients, 2);
  assert.equal(json.distinctCompletions, 6);
});

test('npm run bench:vae-attention -- --head-memory prints its table row and writes its JSON', () => {
  const file = path.join(ROOT, 'bench', 'results', 'vae-attention-head-64-unchunked.json');
  fs.rmSync(file, { force: true });
  const r = bench('vae-attention.ts', ['--head-memory', '--size', '64', '--unchunked']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^\| 64 \| 8x8 \(64\) \| unchunked head graph \| - \| \d+ \| \d+ \|$/m);
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { size: number; unchunked: boolean; peakRssMiB: number };
  assert.equal(json.size, 64);
  assert.equal(json.unchunked, true);
  assert.ok(json.peakRssMiB > 0);
});

test('npm run bench:web-external-offsets: a small run gives every value right in both layouts, the pieces as planned, and writes its JSON', () => {
  refuses('web-external-offsets.ts', ['--layouts', 'one-file,piece'], /--layouts: expected one of one-file, pieces/);
  const file = path.join(ROOT, 'bench', 'results', 'web-external-offsets-test.json');
  fs.rmSync(file, { force: true });
  // 5 weights of 1 MiB cut at 2 MiB: 3 pieces (2 + 2 + 1 weights).
  const r = bench('web-external-offsets.ts', ['--tensors', '5', '--tensor-mib', '1', '--piece-mib', '2', '--out', file]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^\| one-file \| 1 \| 15, 15 \| 0 of 262144 \|/m);
  assert.match(r.stdout, /^\| pieces \| 3 \| 15, 15 \| 0 of 262144 \|/m);
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as { expected: number; results: Record<string, { wrong: number; mounts: number }> };
  assert.equal(json.expected, 15);
  assert.deepEqual([json.results['one-file']!.wrong, json.results['pieces']!.mounts], [0, 3]);
});
