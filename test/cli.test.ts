import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempDir, tinyModel } from './helpers/models.ts';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'asgd.js');
let model: string;
before(async () => {
  model = await tinyModel('standard');
});

function asgd(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const quick = ['--steps', '2', '--threads', '1'];

test('generate writes the image, --json reports it, read prints the parameters, --from re-runs it', () => {
  const dir = tempDir('cli');
  const out = path.join(dir, 'a.png');
  const r = asgd(['generate', '-m', model, '-p', 'a red circle', '-W', '128', '-H', '64', '--seed', '9', '-o', out, '--json', ...quick]);
  assert.equal(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.equal(j.output, out);
  assert.equal(j.width, 128);
  assert.equal(j.height, 64);
  assert.equal(j.metadata.seed, '9');
  const read = asgd(['read', out]);
  assert.equal(read.code, 0);
  assert.match(read.stdout, /^a red circle\nSteps: 2, Sampler: pndm, CFG scale: 7\.5, Seed: 9, Size: 128x64/);
  const again = path.join(dir, 'b.png');
  const r2 = asgd(['generate', '-m', model, '--from', out, '-o', again, '--quiet', '--threads', '1']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.equal(r2.stderr, '');
  assert.ok(fs.readFileSync(out).equals(fs.readFileSync(again)), '--from reproduces the image byte for byte');
});

test('bad input: clear message, non-zero exit, no output file', () => {
  const dir = tempDir('cli-bad');
  const out = path.join(dir, 'x.png');
  const existing = path.join(dir, 'exists.png');
  fs.writeFileSync(existing, 'keep me');
  const cases: [string[], number, RegExp][] = [
    [['-m', path.join(dir, 'missing-model'), '-p', 'x', '-o', out], 3, /Model folder not found/],
    [['-m', model, '-p', 'x', '-W', '100', '-o', out], 2, /Invalid width; expected a multiple of 8/],
    [['-m', model, '-p', 'x', '-H', '16384', '-o', out], 2, /Invalid height/],
    [['-m', model, '-p', 'x', '--steps', '0', '-o', out], 2, /Invalid steps/],
    [['-m', model, '-p', 'x', '-g', 'inf', '-o', out], 2, /Invalid --guidance-scale; expected a finite number/],
    [['-m', model, '-p', 'x', '-o', path.join(dir, 'no', 'such', 'x.png')], 4, /The output folder does not exist/],
    [['-m', model, '-p', 'x', '-o', existing], 4, /The output file already exists.*--overwrite/],
    [['-m', model, '-p', 'x', '-o', path.join(dir, 'x.bmp')], 2, /Unsupported output file type; expected \.png, \.jpg, \.jpeg or \.webp/],
    [['-m', model, '-o', out], 2, /Invalid --prompt/],
    [['-m', model, '-p', 'x', '--devices', 'tpu', '-o', out], 2, /Invalid devices/],
    [['-m', model, '-p', 'x', '--method', 'nope', '-o', out], 2, /Allowed choices are asg, cutdiffusion, multidiffusion, direct/],
  ];
  for (const [args, code, re] of cases) {
    const r = asgd(['generate', ...quick, ...args]);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
  }
  assert.deepEqual(fs.readdirSync(dir), ['exists.png']);
  assert.equal(fs.readFileSync(existing, 'utf8'), 'keep me');
  if (process.getuid?.() !== 0) {
    const ro = tempDir('ro');
    fs.chmodSync(ro, 0o555);
    const r = asgd(['generate', '-m', model, '-p', 'x', '-o', path.join(ro, 'x.png'), ...quick]);
    assert.equal(r.code, 4);
    assert.match(r.stderr, /not writable/);
  }
});

test('Ctrl-C stops the generation, exits 130 and leaves no file', async () => {
  const dir = tempDir('cli-int');
  const out = path.join(dir, 'x.png');
  const child = spawn(process.execPath, [BIN, 'generate', '-m', model, '-p', 'x', '--steps', '200', '-W', '512', '-H', '512', '-o', out, '--threads', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  await new Promise((r) => setTimeout(r, 2500));
  child.kill('SIGINT');
  const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  assert.equal(code, 130, stderr);
  assert.match(stderr, /Generation cancelled/);
  assert.deepEqual(fs.readdirSync(dir), []);
});

test('info, devices and --help', () => {
  const i = asgd(['info', model, '--json']);
  assert.equal(i.code, 0, i.stderr);
  const info = JSON.parse(i.stdout);
  assert.equal(info.family, 'sd');
  assert.equal(info.nativeWidth, 512);
  assert.equal(info.vae.scalingFactor, 0.18215);
  assert.equal(info.scheduler.className, 'PNDMScheduler');
  assert.deepEqual(info.components.unet.inputs.map((x: { name: string }) => x.name), ['sample', 'timestep', 'encoder_hidden_states']);
  const d = asgd(['devices']);
  assert.equal(d.code, 0);
  assert.match(d.stdout, /^cpu +available/m);
  for (const args of [['--help'], ['generate', '--help'], ['info', '--help']]) {
    const h = asgd(args);
    assert.equal(h.code, 0, args.join(' '));
    assert.match(h.stdout, /Usage: asgd/);
  }
  const bad = asgd(['frobnicate']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown command/);
});

test('--from reproduces a high-resolution asg image with its method options', () => {
  const dir = tempDir('cli-from');
  const out = path.join(dir, 'hr.png');
  const args = ['-m', model, '-p', 'a red circle', '-W', '1024', '-H', '512', '--seed', '4', '--structure-weight', '0.3', '--structure-space', 'x0', '--no-pixel-interaction', '--mask-words', 'red'];
  const r = asgd(['generate', ...args, '-o', out, '--json', ...quick]);
  assert.equal(r.code, 0, r.stderr);
  const meta = JSON.parse(r.stdout).metadata;
  assert.equal(meta.method, 'asg');
  assert.equal(meta.methodOptions.structureWeight, 0.3);
  assert.equal(meta.methodOptions.structureSpace, 'x0');
  assert.equal(meta.methodOptions.pixelInteraction, false);
  assert.deepEqual(meta.maskWords, ['red']);
  const again = path.join(dir, 'again.png');
  const r2 = asgd(['generate', '-m', model, '--from', out, '-o', again, '--quiet', '--threads', '1']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.ok(fs.readFileSync(out).equals(fs.readFileSync(again)), '--from reproduces the image byte for byte');
  const bad = asgd(['generate', ...args, '--structure-weight', '-1', '-o', path.join(dir, 'x.png'), ...quick]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /Invalid structureWeight/);
});
