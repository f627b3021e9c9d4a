import assert from 'node:assert/strict';
import sharp from 'sharp';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { tempDir, tinyModel } from './helpers/models.ts';

const BIN = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'asgd.js');
const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');
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
    [['-m', model, '-p', 'x', '-W', '100', '-o', out], 2, /Invalid --width; expected a multiple of 8 between 64 and 8192; received "100"\. Try 104\n$/],
    // Decimal numbers only (Number() reads 0x80 as 128).
    [['-m', model, '-p', 'x', '-W', '0x80', '-o', out], 2, /Invalid --width; expected a multiple of 8 between 64 and 8192; received "0x80"\n$/],
    [['-m', model, '-p', 'x', '--steps', '0b11', '-o', out], 2, /Invalid --steps; expected an integer in \[1, 1000\]; received "0b11"/],
    // The library's own checks, named by the flag.
    [['-m', model, '-p', 'x', '--seed', '-1', '-o', out], 2, /^asgd: Invalid --seed; expected an integer in \[0, 2\^64 - 1\]; received "-1"\n$/],
    [['-m', model, '-p', 'x', '--vae-tile-overlap', '40', '-o', out], 2, /^asgd: Invalid --vae-tile-overlap; expected an integer in \[0, 32\]/],
    [['-m', model, '-p', 'x', '--preview', path.join(dir, 'p.gif'), '-o', out], 2, /^asgd: Unsupported preview file type; expected \.png, \.jpg, \.jpeg or \.webp; received \.gif/],
    [['-m', model, '-p', 'x', '-o', `${dir}/`], 2, /^asgd: The output path is a folder; expected an image file name/],
    [['-m', model, '-p', 'x', '-H', '16384', '-o', out], 2, /Invalid --height; expected a multiple of 8 between 64 and 8192; received "16384"/],
    [['-m', model, '-p', 'x', '--steps', '0', '-o', out], 2, /Invalid --steps; expected an integer in \[1, 1000\]; received "0"/],
    [['-m', model, '-p', 'x', '-g', 'inf', '-o', out], 2, /Invalid --guidance-scale; expected a number in \[0, 100\]; received "inf"/],
    [['-m', model, '-p', 'x', '-g', '1e308', '-o', out], 2, /Invalid --guidance-scale; expected a number in \[0, 100\]; received "1e308"/],
    [['-m', model, '-p', 'x', '-o', path.join(dir, 'no', 'such', 'x.png')], 4, /The output folder does not exist/],
    [['-m', model, '-p', 'x', '-o', existing], 4, /The output file already exists.*--overwrite/],
    [['-m', model, '-p', 'x', '-o', path.join(dir, 'x.bmp')], 2, /Unsupported output file type; expected \.png, \.jpg, \.jpeg or \.webp/],
    [['-m', model, '-o', out], 2, /Invalid --prompt/],
    [['-m', model, '-p', 'x', '--devices', 'tpu', '-o', out], 2, /Invalid --devices/],
    [['-m', model, '-p', 'x', '--method', 'nope', '-o', out], 2, /Allowed choices are asg, cutdiffusion, multidiffusion, direct/],
    [['-m', model, '-p', 'x', '--threads', '100000', '-o', out], 2, /Invalid --threads; expected an integer in \[0, 1024\]; received "100000"\. Use 0/],
    // A preview replaces only its own earlier previews: not a file that was there, nor the output.
    [['-m', model, '-p', 'x', '--preview', existing, '-o', out], 4, /The preview file already exists: .*exists\.png\. Pass --overwrite/],
    [['-m', model, '-p', 'x', '--preview', out, '-o', out], 2, /Invalid --preview; expected a file other than the output/],
  ];
  for (const [args, code, re] of cases) {
    const r = asgd(['generate', ...quick, ...args]);
    assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, re, args.join(' '));
  }
  const none = asgd([]);
  assert.equal(none.code, 2, 'no command is a bad argument (help is shown)');
  assert.match(none.stderr, /Usage: asgd/);
  assert.equal(asgd(['--help']).code, 0);
  assert.deepEqual(fs.readdirSync(dir), ['exists.png']);
  assert.equal(fs.readFileSync(existing, 'utf8'), 'keep me');
});

/** Starts `asgd generate` with a preview written every step; resolves once the first preview exists (mid-denoise). */
async function startUntilPreview(args: string[]) {
  const previewDir = tempDir('cli-preview');
  const preview = path.join(previewDir, 'p.png');
  const child = spawn(process.execPath, [BIN, 'generate', '-m', model, '-p', 'a red circle', '--preview', preview, '--preview-every', '1', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  let running = true;
  void exited.then(() => (running = false));
  const t0 = performance.now();
  while (!fs.existsSync(preview)) {
    assert.ok(running, `asgd exited before the first preview: ${stderr}`);
    assert.ok(performance.now() - t0 < 120_000, 'no preview within 120 s');
    await new Promise((r) => setTimeout(r, 20));
  }
  return { child, exited, previewDir, stderr: () => stderr };
}

test('weights cut short in model.onnx_data: one line naming the external weights file, no raw ONNX Runtime log (even under -q)', async () => {
  const { copyModel } = await import('./helpers/models.ts');
  const dir = await copyModel('external-data');
  const data = path.join(dir, 'unet', 'model.onnx_data');
  fs.truncateSync(data, 1000);
  for (const extra of [['-q'], []]) {
    const r = asgd(['generate', '-m', dir, '-p', 'x', '-W', '64', '-H', '64', ...quick, '-o', path.join(dir, 'x.png'), ...extra]);
    assert.equal(r.code, 3, r.stderr);
    assert.doesNotMatch(r.stderr, /\[[EWI]:onnxruntime:/, 'no log line of ONNX Runtime');
    assert.equal(r.stderr.split('\n').filter(Boolean).length, 1, r.stderr);
    assert.match(r.stderr, /^asgd: ONNX Runtime cannot load unet: .*External initializer.*\. Its external weights file \(in \S+\/unet\) is missing, incomplete or damaged/s);
  }
});

test('an output path that cannot be written: exit 4, a clear message and no file, whoever runs it (root too)', async () => {
  // The cause is a regular file where the output folder should be (ENOTDIR), which holds for root as well,
  // unlike a read-only folder (root may write into a folder without write permission).
  const dir = tempDir('cli-unwritable');
  const notAFolder = path.join(dir, 'file.txt');
  fs.writeFileSync(notAFolder, 'a file, not a folder');
  const r = asgd(['generate', '-m', model, '-p', 'x', '-o', path.join(notAFolder, 'x.png'), ...quick]);
  assert.equal(r.code, 4, r.stderr);
  assert.equal(r.stderr, `asgd: The output folder is not a folder: ${notAFolder}. Choose another path\n`);
  assert.deepEqual(fs.readdirSync(dir), ['file.txt']);
  assert.equal(fs.readFileSync(notAFolder, 'utf8'), 'a file, not a folder');

  // The same cause arising during the generation (the folder replaced by a file after the checks at the start):
  // the write fails after denoising, with the same exit code and no file or temporary file left.
  const outDir = tempDir('cli-replaced');
  const out = path.join(outDir, 'x.png');
  const run = await startUntilPreview(['-W', '512', '-H', '512', '--steps', '30', '--threads', '1', '-o', out]);
  fs.rmSync(outDir, { recursive: true });
  fs.writeFileSync(outDir, 'now a file');
  const code = await run.exited;
  assert.equal(code, 4, run.stderr());
  assert.ok(run.stderr().endsWith(`asgd: The output folder is not a folder: ${outDir}. Choose another path\n`), run.stderr());
  assert.equal(fs.readFileSync(outDir, 'utf8'), 'now a file');
  assert.deepEqual(fs.readdirSync(path.dirname(outDir)).filter((f) => f.startsWith(`.${path.basename(outDir)}`) || f.endsWith('.tmp')), []);
});

test('Ctrl-C stops the generation, exits 130 and leaves no file', async () => {
  const dir = tempDir('cli-int');
  const out = path.join(dir, 'x.png');
  const run = await startUntilPreview(['--steps', '200', '-W', '512', '-H', '512', '-o', out, '--threads', '1']);
  run.child.kill('SIGINT');
  const code = await run.exited;
  assert.equal(code, 130, run.stderr());
  assert.match(run.stderr(), /Generation cancelled/);
  assert.deepEqual(fs.readdirSync(dir), []);
});

test('Ctrl-C with two CPU workers, mid-denoise: exit 130, no output file and no temporary file', async () => {
  const dir = tempDir('cli-int2');
  const out = path.join(dir, 'x.png');
  // 1024 px on the 512-native model: 4 patches per step, dealt to both workers.
  const run = await startUntilPreview(['-W', '1024', '-H', '1024', '--steps', '200', '--devices', 'cpu,cpu', '--threads', '1', '-o', out]);
  const t0 = performance.now();
  run.child.kill('SIGINT');
  const code = await run.exited;
  assert.equal(code, 130, run.stderr());
  assert.match(run.stderr(), /Cancelling\.\.\.\nasgd: Generation cancelled\n$/);
  assert.ok(performance.now() - t0 < 30_000, 'stops within 30 s of Ctrl-C');
  assert.equal(fs.existsSync(out), false);
  assert.deepEqual(fs.readdirSync(dir), [], 'nothing in the output folder, temporary files included');
  assert.deepEqual(fs.readdirSync(run.previewDir).filter((f) => f !== 'p.png'), [], 'no temporary preview file either');
});

// onnxruntime-node aborts the process (exit 134, "terminate called after throwing an instance of 'Napi::Error'")
// when it exits while a worker thread is creating a session; a cancelled load leaves one doing so.
test('Ctrl-C while the model loads into worker threads: exit 130 (never an abort), no file, at any moment of the load', async () => {
  const dir = tempDir('cli-int-load-threads');
  const out = path.join(dir, 'x.png');
  const outcomes: string[] = [];
  for (let delay = 200; delay <= 2000; delay += 150) {
    const child = spawn(process.execPath, [BIN, 'generate', '-m', SHIPPED, '-p', 'x', '-o', out, '--devices', 'cpu,cpu,cpu,cpu', ...quick], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<string>((r) => child.on('exit', (code, signal) => r(signal ?? String(code))));
    await new Promise((r) => setTimeout(r, delay));
    child.kill('SIGINT');
    const code = await exited;
    outcomes.push(`${delay} ms: ${code} ${JSON.stringify(stderr.split('\n').filter(Boolean).at(-1) ?? '')}`);
    // SIGINT: ended by the signal before the CLI took Ctrl-C over (as a shell's 130); 0: done before the Ctrl-C.
    assert.ok(code === '130' || code === 'SIGINT' || (code === '0' && !/Cancelling/.test(stderr)), outcomes.join('\n') + '\n' + stderr);
    assert.equal(fs.existsSync(out), code === '0', 'a file only from a run that completed before the Ctrl-C');
    fs.rmSync(out, { force: true });
  }
  assert.ok(outcomes.some((o) => /130 "asgd: Loading cancelled"/.test(o)), `some Ctrl-C came while the model loaded:\n${outcomes.join('\n')}`);
});

test('Ctrl-C while the model loads ends the load: exit 130, its worker processes gone, no file', async () => {
  const dir = tempDir('cli-int-load');
  const out = path.join(dir, 'x.png');
  const child = spawn(process.execPath, [BIN, 'generate', '-m', model, '-p', 'x', '-o', out, '--devices', 'cpu,cpu,cpu,cpu', '--worker-isolation', 'process', ...quick], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  // Linux lists a process's children: the first device worker process means the load is under way.
  const children = () => {
    try {
      return fs.readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
    } catch {
      return [];
    }
  };
  let workers: string[] = [];
  for (let i = 0; i < 3000 && workers.length === 0; i++) {
    await new Promise((r) => setTimeout(r, 5));
    workers = children();
  }
  assert.ok(workers.length > 0 && workers.length < 4, `caught the load with ${workers.length} of 4 workers started: ${stderr}`);
  child.kill('SIGINT');
  assert.equal(await exited, 130, stderr);
  assert.match(stderr, /Cancelling\.\.\.\nasgd: Loading cancelled\n$/);
  for (const pid of workers) {
    for (let i = 0; i < 100 && fs.existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(fs.existsSync(`/proc/${pid}`), false, `worker process ${pid} ended`);
  }
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
  // The encoder upscaling needs is opened only then, but info says whether there is one.
  assert.equal(info.vaeEncoder, path.join('vae_encoder', 'model.onnx'));
  assert.match(asgd(['info', model]).stdout, /^Upscaling: +VAE encoder vae_encoder\/model\.onnx \(opened when an upscale runs\)$/m);
  const d = asgd(['devices']);
  assert.equal(d.code, 0);
  assert.match(d.stdout, /^cpu +available/m);
  // With an adapter (the test command's setup installs lavapipe), what --fuse-attention does with it.
  assert.match(d.stdout, /^webgpu +available +adapter found: .*; ONNX Runtime's flash-attention kernel (checked right here \(largest error [0-9.e+-]+\): --fuse-attention uses it|is wrong here \(largest error [0-9.e+-]+\): --fuse-attention pads q and k to avoid it)$/m);
  // lavapipe emulates the GPU on the CPU: far slower than the CPU provider at dense work, so auto keeps the CPU.
  assert.match(d.stdout, /^webgpu +available +adapter found: a test model ran in \d+ ms; it ran a dense test \(8 products of 512x512 matrices\) in [0-9.]+ ms, [0-9.]+x slower than the CPU \([0-9.]+ ms\);/m);
  assert.match(d.stdout, /^auto +available +picks cpu: the WebGPU adapter ran a dense test .*: a CPU emulation such as lavapipe or SwiftShader, or a slow GPU$/m);
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
  assert.match(bad.stderr, /Invalid --structure-weight; expected a number in \[0, 1\]; received "-1"\. Use 0 to turn guidance off/);
});

test('--from: fused attention is recorded and used again (its last bits differ); another model than the recorded one is named', async () => {
  const dir = tempDir('cli-from-fused');
  const pixels = async (f: string) => (await sharp(f).raw().toBuffer());
  const args = ['-m', SHIPPED, '-p', 'a red circle', '-W', '256', '-H', '192', '--seed', '3', '--steps', '5', '--threads', '1'];
  const plain = path.join(dir, 'plain.png');
  const fused = path.join(dir, 'fused.png');
  assert.equal(asgd(['generate', ...args, '-o', plain, '-q']).code, 0);
  const r = asgd(['generate', ...args, '--fuse-attention', '-o', fused, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).metadata.fusedAttention, true);
  assert.ok(!(await pixels(plain)).equals(await pixels(fused)), 'the fused attention changes some pixels (else this test shows nothing)');
  const again = path.join(dir, 'again.png');
  const r2 = asgd(['generate', '-m', SHIPPED, '--from', fused, '-o', again, '-q', '--threads', '1']);
  assert.equal(r2.code, 0, r2.stderr);
  assert.ok(fs.readFileSync(fused).equals(fs.readFileSync(again)), '--from reproduces the fused image byte for byte');

  // Made with the test model, re-run with the shipped one: the run goes ahead, and says so (stderr, and --json).
  const other = path.join(dir, 'other.png');
  assert.equal(asgd(['generate', '-m', model, '-p', 'a red circle', '-o', other, '-q', ...quick]).code, 0);
  const shipped = asgd(['generate', '--from', other, '-o', path.join(dir, 'shipped.png'), '--json', '--threads', '1']);
  assert.equal(shipped.code, 0, shipped.stderr);
  const note = `${other} was made with the model ${path.basename(model)}; this run uses shapes-128`;
  assert.ok(JSON.parse(shipped.stdout).warnings.some((w: string) => w.startsWith(note)), shipped.stdout);
  assert.equal(shipped.stderr, '', '--json implies --quiet: warnings only in the JSON');
  const loud = asgd(['generate', '--from', other, '-o', path.join(dir, 'loud.png'), '--threads', '1']);
  assert.ok(loud.stderr.includes(`warning: ${note}`), loud.stderr);
});

test('flags this run does not read are named: a method\'s options under another method, --preview-every without --preview', () => {
  const dir = tempDir('cli-unused');
  const r = asgd(['generate', '-m', model, '-p', 'a red circle', '--method', 'direct', '--structure-weight', '0.5', '--mask-words', 'red', '--stage-split', '0.5', '--preview-every', '1', '-o', path.join(dir, 'a.png'), ...quick]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stderr.split('\n').filter((l) => l.startsWith('warning:')), [
    'warning: --mask-words is an option of asg; --method direct does not use it',
    'warning: --stage-split is an option of asg/cutdiffusion; --method direct does not use it',
    'warning: --structure-weight is an option of asg; --method direct does not use it',
    'warning: --preview-every has no effect without --preview FILE',
  ]);
  // -q drops the progress bar and the summary, not the warnings; --json carries them in its result instead.
  const quiet = asgd(['generate', '-m', model, '-p', 'a red circle', '--method', 'direct', '--structure-weight', '0.5', '-o', path.join(dir, 'q.png'), '-q', ...quick]);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, 'warning: --structure-weight is an option of asg; --method direct does not use it\n');
  const json = asgd(['generate', '-m', model, '-p', 'a red circle', '--method', 'direct', '--structure-weight', '0.5', '-o', path.join(dir, 'j.png'), '--json', ...quick]);
  assert.equal(json.code, 0, json.stderr);
  assert.equal(json.stderr, '');
  assert.deepEqual(JSON.parse(json.stdout).warnings, ['--structure-weight is an option of asg; --method direct does not use it']);
  const asg = asgd(['generate', '-m', model, '-p', 'a red circle', '--structure-weight', '0.5', '--mask-words', 'red', '-o', path.join(dir, 'b.png'), ...quick]);
  assert.equal(asg.code, 0, asg.stderr);
  assert.doesNotMatch(asg.stderr, /warning/);
});

test('VAE tile options given with --vae-tiling off are named: nothing is tiled, so they change nothing', () => {
  const dir = tempDir('cli-unused-vae');
  const r = asgd(['generate', '-m', model, '-p', 'a red circle', '--vae-tiling', 'off', '--vae-tile-size', '32', '--vae-tile-stats', 'estimate', '-o', path.join(dir, 'a.png'), ...quick]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.stderr.split('\n').filter((l) => l.startsWith('warning:')), [
    'warning: --vae-tile-size has no effect with --vae-tiling off',
    'warning: --vae-tile-stats has no effect with --vae-tiling off',
  ]);
  // From a recorded --vae-tiling off too; a tiling flag given over it turns tiling on again: no warning.
  const again = asgd(['generate', '-m', model, '--from', path.join(dir, 'a.png'), '--vae-tile-overlap', '8', '-o', path.join(dir, 'b.png'), ...quick]);
  assert.match(again.stderr, /^warning: --vae-tile-overlap has no effect with --vae-tiling off$/m);
  const on = asgd(['generate', '-m', model, '--from', path.join(dir, 'a.png'), '--vae-tiling', 'auto', '--vae-tile-overlap', '8', '-o', path.join(dir, 'c.png'), ...quick]);
  assert.equal(on.code, 0, on.stderr);
  assert.doesNotMatch(on.stderr, /warning/);
});

test('--vae is recorded, and --from says when a re-run decodes with another VAE than the recorded one', () => {
  const dir = tempDir('cli-vae-record');
  const otherVae = path.join(dir, 'other-vae');
  fs.cpSync(path.join(model, 'vae_decoder'), path.join(otherVae, 'vae_decoder'), { recursive: true });
  const withVae = path.join(dir, 'with.png');
  const r = asgd(['generate', '-m', model, '-p', 'a red circle', '--vae', otherVae, '-o', withVae, '--json', ...quick]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).metadata.model.vae, 'other-vae');
  // Before: no word, and the image decoded with the model's own VAE.
  const own = asgd(['generate', '-m', model, '--from', withVae, '-o', path.join(dir, 'own.png'), ...quick]);
  assert.equal(own.code, 0, own.stderr);
  assert.match(own.stderr, new RegExp(`^warning: ${withVae.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} was decoded with the VAE other-vae \\(--vae\\); this run uses the model's own, so the image may differ: pass --vae with the folder of other-vae to reproduce it$`, 'm'));
  const same = asgd(['generate', '-m', model, '--from', withVae, '--vae', otherVae, '-o', path.join(dir, 'same.png'), ...quick]);
  assert.equal(same.code, 0, same.stderr);
  assert.doesNotMatch(same.stderr, /warning/);
  const plain = path.join(dir, 'plain.png');
  assert.equal(asgd(['generate', '-m', model, '-p', 'a red circle', '-o', plain, '-q', ...quick]).code, 0);
  const other = asgd(['generate', '-m', model, '--from', plain, '--vae', otherVae, '-o', path.join(dir, 'other.png'), ...quick]);
  assert.match(other.stderr, /records no --vae \(it was decoded with the model's own VAE, or written before --vae was recorded\); this run uses --vae other-vae, so the image may differ: leave --vae out to reproduce an image made without one$/m);
});

test('--from an image of an earlier version made with --vae (no model.vae recorded then): the same --vae is not said to be the model\'s own VAE, nor told to be left out', async () => {
  const dir = tempDir('cli-vae-old');
  const otherVae = path.join(dir, 'other-vae');
  fs.cpSync(path.join(model, 'vae_decoder'), path.join(otherVae, 'vae_decoder'), { recursive: true });
  const made = path.join(dir, 'made.png');
  const r = asgd(['generate', '-m', model, '-p', 'a red circle', '--vae', otherVae, '-o', made, '--json', ...quick]);
  assert.equal(r.code, 0, r.stderr);
  // As the version before model.vae wrote it: the same image and settings, the model's name and family only.
  const { saveImage } = await import('../src/node/image/write.ts');
  const { readSourceImage } = await import('../src/node/image/read.ts');
  const source = await readSourceImage(made);
  const meta = source.embedded!.metadata!;
  assert.equal(meta.model.vae, 'other-vae');
  delete meta.model.vae;
  const old = path.join(dir, 'old.png');
  await saveImage(old, source.image, meta);
  const again = asgd(['generate', '-m', model, '--from', old, '--vae', otherVae, '-o', path.join(dir, 'again.png'), ...quick]);
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stderr, /was decoded with the model's own VAE;/);
  assert.doesNotMatch(again.stderr, /leave --vae out to reproduce it$/m);
  assert.match(again.stderr, /or written before --vae was recorded/);
});

test('a prompt as long as one command-line argument can be runs (the device thread\'s stack grows with the command line): cut, with a warning', () => {
  const dir = tempDir('cli-long');
  const out = path.join(dir, 'long.png');
  // 130,000 characters: near the longest one argument can be (128 KiB); Node's default thread stack overflowed at 22,000.
  const prompt = 'a red circle '.repeat(10_000);
  const r = asgd(['generate', '-m', model, '-p', prompt, '-W', '64', '-H', '64', '-o', out, ...quick]);
  assert.equal(r.code, 0, `exit ${r.code} (139: a segfault) ${r.stderr.slice(-500)}`);
  assert.match(r.stderr, /^warning: The prompt is too long: \d+ token\(s\) beyond the model's 75 were dropped$/m);
  assert.ok(fs.existsSync(out));
});

test('--from: a flag given overrides what it read, on/off method flags both ways', () => {
  const dir = tempDir('cli-from-flags');
  const first = path.join(dir, 'off.png');
  const r = asgd(['generate', '-m', model, '-p', 'a red circle', '-W', '128', '-H', '128', '--no-mask', '--guidance-sync', '--no-window-jitter', '-o', first, '--json', ...quick]);
  assert.equal(r.code, 0, r.stderr);
  const off = JSON.parse(r.stdout).metadata.methodOptions;
  assert.deepEqual([off.mask, off.guidanceSync, off.windowJitter], [false, true, false]);
  const again = asgd(['generate', '-m', model, '--from', first, '--mask', '--no-guidance-sync', '-o', path.join(dir, 'on.png'), '--json', ...quick]);
  assert.equal(again.code, 0, again.stderr);
  const on = JSON.parse(again.stdout).metadata.methodOptions;
  assert.deepEqual([on.mask, on.guidanceSync, on.windowJitter], [true, false, false], 'the flags given, and what was read for the rest');
});

test('--from at another size chooses the scheduler again (a recorded PNDM is the model\'s choice at the recorded size)', () => {
  const dir = tempDir('cli-from-size');
  const native = path.join(dir, 'native.png');
  const r = asgd(['generate', '-p', 'a red circle', '-o', native, '--json', ...quick]); // the shipped model: PNDM, 128 px
  assert.equal(r.code, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).metadata.scheduler, 'pndm');
  const big = asgd(['generate', '--from', native, '-W', '256', '-H', '256', '-o', path.join(dir, 'big.png'), '--json', ...quick]);
  assert.equal(big.code, 0, big.stderr);
  assert.equal(JSON.parse(big.stdout).metadata.scheduler, 'euler');
  assert.ok(JSON.parse(big.stdout).warnings.some((w: string) => /Using the euler scheduler instead of the model's pndm for asg above the native size/.test(w)), big.stdout);
  const same = asgd(['generate', '--from', native, '-o', path.join(dir, 'same.png'), '--json', ...quick]);
  assert.equal(JSON.parse(same.stdout).metadata.scheduler, 'pndm', 'the same size: the recorded one');
  const chosen = asgd(['generate', '--from', native, '-W', '256', '-H', '256', '--scheduler', 'pndm', '-o', path.join(dir, 'chosen.png'), '--json', ...quick]);
  assert.equal(JSON.parse(chosen.stdout).metadata.scheduler, 'pndm', 'named on the command line: kept');
});
