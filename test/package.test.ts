/**
 * The package as a user gets it: `npm pack`, installed into a fresh project that has no tsx, used with plain
 * `node` (library, `asgdiffusion/core`, the `asgd` bin) and type-checked with `tsc` against the shipped `.d.ts`.
 * Dependencies come from npm's cache when present (`--prefer-offline`), else from the registry.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type SpawnSyncOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { loadPipeline } from '../src/node/pipeline.ts';
import { tempDir } from './helpers/models.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const devVersion = (name: string): string =>
  (JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;

// A user's environment: none of this project's npm settings (`npm test` hands them to its children as
// npm_config_* variables, e.g. engine-strict from .npmrc).
const userEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));

function run(cmd: string, args: string[], opts: SpawnSyncOptions = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 300_000, ...opts, env: { ...userEnv, ONNXRUNTIME_NODE_INSTALL: 'skip', ...opts.env } });
  return { code: r.status, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? ''), error: r.error };
}

const PROMPT = 'a red circle on a blue background';
let app: string;
let packedFiles: string[];

before(async () => {
  const work = tempDir('package');
  // A graph the library derives beside a model (probe, fused attention in either form, VAE graphs: all named
  // *.asgd-*) must never ship, whichever of them earlier runs left in models/: one of a future kind stands for all.
  const derived = path.join(ROOT, 'models', 'shapes-128', 'unet', 'model.asgd-package-check.onnx');
  fs.writeFileSync(derived, 'derived');
  let pack: ReturnType<typeof run>;
  try {
    pack = run(NPM, ['pack', '--json', '--pack-destination', work], { cwd: ROOT });
  } finally {
    fs.rmSync(derived, { force: true });
  }
  assert.equal(pack.code, 0, pack.stderr);
  const info = JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
  packedFiles = info[0]!.files.map((f) => f.path);
  app = path.join(work, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  const install = run(
    NPM,
    ['install', '--no-audit', '--no-fund', '--prefer-offline', path.join(work, info[0]!.filename), `typescript@${devVersion('typescript')}`, `@types/node@${devVersion('@types/node')}`],
    { cwd: app },
  );
  assert.equal(install.code, 0, install.stderr);
});

test('the tarball ships dist, bin, the default model, README and LICENSE, and nothing of tests, benches, training or fixtures', () => {
  for (const f of ['LICENSE', 'README.md', 'package.json', 'bin/asgd.js', 'dist/index.js', 'dist/index.d.ts', 'dist/core/index.js', 'dist/core/index.d.ts', 'dist/cli/main.js', 'dist/node/runner/worker.js', 'models/shapes-128/unet/model.onnx', 'models/shapes-128/model_index.json']) {
    assert.ok(packedFiles.includes(f), `${f} is in the tarball`);
  }
  const unwanted = packedFiles.filter((f) => /^(test|bench|training|scripts|src|docs)\//.test(f) || /fixtures|\.asgd-|\.tsbuildinfo|worker-dev/.test(f));
  assert.deepEqual(unwanted, []);
  assert.ok(!fs.existsSync(path.join(app, 'node_modules', 'tsx')), 'tsx is not installed with the package');
});

test('plain node imports asgdiffusion and generates the same 128 px image as the sources, its worker a thread or a process', async () => {
  const script = `
    import { loadPipeline } from 'asgdiffusion';
    import { createHash } from 'node:crypto';
    const model = new URL('./node_modules/asgdiffusion/models/shapes-128', import.meta.url).pathname;
    const out = {};
    for (const workerIsolation of ['thread', 'process']) {
      const pipe = await loadPipeline(model, { threads: 1, workerIsolation });
      let r;
      try {
        r = await pipe.generate({ prompt: ${JSON.stringify(PROMPT)}, seed: 11, steps: 4 });
      } finally {
        await pipe[Symbol.asyncDispose]();  // Node 20 has the symbol but not the 'await using' syntax
      }
      out[workerIsolation] = { w: r.image.width, h: r.image.height, sha: createHash('sha256').update(r.image.data).digest('hex') };
    }
    console.log(JSON.stringify(out));
  `;
  fs.writeFileSync(path.join(app, 'gen.mjs'), script);
  const r = run(process.execPath, ['gen.mjs'], { cwd: app });
  assert.equal(r.code, 0, r.stderr);
  const both = JSON.parse(r.stdout.trim()) as Record<'thread' | 'process', { w: number; h: number; sha: string }>;
  assert.deepEqual(both.process, both.thread, 'the worker process (the package\'s compiled worker, forked) gives the same image');
  const got = both.thread;
  assert.equal(got.w, 128);
  assert.equal(got.h, 128);
  const pipe = await loadPipeline(path.join(ROOT, 'models', 'shapes-128'), { threads: 1 });
  try {
    const ref = await pipe.generate({ prompt: PROMPT, seed: 11, steps: 4 });
    assert.equal(got.sha, createHash('sha256').update(ref.image.data).digest('hex'));
  } finally {
    await pipe.close();
  }
});

test('the asgd bin of the installed package shows help and generates with the shipped model', () => {
  const bin = path.join(app, 'node_modules', '.bin', 'asgd');
  const help = run(bin, ['--help'], { cwd: app });
  assert.equal(help.code, 0, help.stderr);
  assert.match(help.stdout, /generate/);
  const version = run(bin, ['--version'], { cwd: app });
  assert.equal(version.stdout.trim(), JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
  const out = path.join(app, 'bin-out.png');
  const gen = run(bin, ['generate', '-p', PROMPT, '--seed', '5', '--steps', '3', '--threads', '1', '-o', out, '--json'], { cwd: app });
  assert.equal(gen.code, 0, gen.stderr);
  const j = JSON.parse(gen.stdout) as { output: string; width: number; metadata: { model: { name: string } } };
  assert.equal(j.output, out);
  assert.equal(j.width, 128);
  assert.equal(j.metadata.model.name, 'shapes-128');
  assert.ok(fs.statSync(out).size > 0);
});

test('asgd serve of the installed package serves the built page and the API, and stops on Ctrl-C', async () => {
  assert.ok(packedFiles.includes('dist/web/index.html'), 'the page is in the tarball');
  const bin = path.join(app, 'node_modules', '.bin', 'asgd');
  const child = spawn(bin, ['serve', '--port', '0', '--outputs', path.join(app, 'gallery')], { cwd: app, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr!.on('data', (d: Buffer) => {
        err += d.toString();
        const m = /asgd serve: (http:\/\/\S+?)\/?\s/.exec(err);
        if (m) resolve(m[1]!);
      });
      void exited.then((code) => reject(new Error(`asgd serve exited with ${code}: ${err}`)));
    });
    const page = await (await fetch(`${url}/`)).text();
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(page)?.[1];
    assert.ok(script, page);
    assert.equal((await fetch(`${url}${script}`)).status, 200);
    const models = (await (await fetch(`${url}/api/v1/models`)).json()) as { models: { name: string }[] };
    assert.deepEqual(models.models.map((m) => m.name), ['shapes-128']);
  } finally {
    child.kill('SIGINT');
  }
  assert.equal(await exited, 0, err);
});

test('importing asgdiffusion/core loads no Node built-in, no onnxruntime-node and no sharp', () => {
  // A resolve hook records every import; the core must import nothing but its own files and pure-JS packages.
  fs.writeFileSync(
    path.join(app, 'trace-hooks.mjs'),
    `import fs from 'node:fs';
     export async function resolve(specifier, context, next) {
       const r = await next(specifier, context);
       fs.appendFileSync(process.env.TRACE_FILE, JSON.stringify({ specifier, parent: context.parentURL ?? '', url: r.url }) + '\\n');
       return r;
     }`,
  );
  fs.writeFileSync(path.join(app, 'trace.mjs'), `import { register } from 'node:module';\nregister('./trace-hooks.mjs', import.meta.url);\n`);
  fs.writeFileSync(
    path.join(app, 'core.mjs'),
    `const core = await import('asgdiffusion/core');
     const s = core.createScheduler({ _class_name: 'EulerDiscreteScheduler', num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear' }, 4);
     console.log(JSON.stringify({ timesteps: Array.from(s.timesteps), randn: Array.from(core.randn([3], 0n)) }));`,
  );
  const traceFile = path.join(app, 'trace.jsonl');
  const r = run(process.execPath, ['--import', './trace.mjs', 'core.mjs'], { cwd: app, env: { TRACE_FILE: traceFile } });
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim()) as { timesteps: number[]; randn: number[] };
  assert.equal(out.timesteps.length, 4);
  // torch.manual_seed(0); torch.randn(3)
  assert.deepEqual(out.randn.map((v) => v.toFixed(4)), ['1.5410', '-0.2934', '-2.1788']);
  const records = fs.readFileSync(traceFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { specifier: string; parent: string; url: string });
  const fromPackage = records.filter((x) => x.parent.includes('/node_modules/asgdiffusion/'));
  assert.ok(fromPackage.length > 10, 'the hook saw the core’s own imports');
  assert.deepEqual(records.filter((x) => x.url.startsWith('node:') && x.parent.includes('/node_modules/')).map((x) => `${x.specifier} from ${x.parent}`), []);
  assert.deepEqual(records.filter((x) => /\/node_modules\/(onnxruntime-node|onnxruntime-common|sharp|@img)\//.test(x.url)).map((x) => x.url), []);
});

test('importing asgdiffusion loads neither ONNX Runtime nor sharp until a pipeline or an image needs them', () => {
  fs.writeFileSync(
    path.join(app, 'lazy.mjs'),
    `import { createRequire } from 'node:module';
     const api = await import('asgdiffusion');
     const cached = () => Object.keys(createRequire(import.meta.url).cache).filter((k) => /onnxruntime|sharp|@img/.test(k)).length;
     const before = cached();
     const devices = api.describeAvailableDevices();
     console.log(JSON.stringify({ exports: typeof api.loadPipeline, before, after: cached(), cpu: devices[0].available }));`,
  );
  const traceFile = path.join(app, 'trace-lazy.jsonl');
  const r = run(process.execPath, ['--import', './trace.mjs', 'lazy.mjs'], { cwd: app, env: { TRACE_FILE: traceFile } });
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout.trim()) as { exports: string; before: number; after: number; cpu: boolean };
  assert.equal(out.exports, 'function');
  assert.equal(out.before, 0, 'no ONNX Runtime or sharp module is loaded by the import');
  assert.ok(out.after > 0, 'describing the devices loads ONNX Runtime (so the check above can see it)');
  assert.equal(out.cpu, true);
  const records = fs.readFileSync(traceFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { url: string });
  assert.deepEqual(records.filter((x) => /\/node_modules\/(sharp|@img)\//.test(x.url)).map((x) => x.url), []);
});

test('the browser device worker is exported as asgdiffusion/web/worker (for createWorker)', () => {
  const r = run(process.execPath, ['--input-type=module', '-e', "console.log(import.meta.resolve('asgdiffusion/web/worker'))"], { cwd: app });
  assert.equal(r.code, 0, r.stderr);
  const file = fileURLToPath(r.stdout.trim());
  assert.equal(path.relative(app, file), path.join('node_modules', 'asgdiffusion', 'dist', 'browser', 'device', 'worker.js'));
  assert.ok(fs.existsSync(file), 'the worker module is in the tarball');
});

test('a TypeScript consumer type-checks against the shipped declarations', () => {
  fs.writeFileSync(
    path.join(app, 'consumer.ts'),
    `import { loadPipeline, AsgdError, type GenerateResult, type GenerationProgress } from 'asgdiffusion';
     import { createScheduler, randn, resolveMethodOptions, type MethodOptions } from 'asgdiffusion/core';
     const options: Partial<MethodOptions> = { structureWeight: 0.5, stageSplit: 0.8 };
     const noise: Float32Array = randn([1, 4, 8, 8], 1n);
     export async function make(): Promise<GenerateResult> {
       await using pipe = await loadPipeline('model', { devices: 'cpu', threads: 1 });
       return pipe.generate({ prompt: 'a', methodOptions: options }, { onProgress: (p: GenerationProgress) => void p.step });
     }
     export const resolved: MethodOptions = resolveMethodOptions(options);
     export const isError = (e: unknown): boolean => e instanceof AsgdError && e.kind === 'invalid-argument';
     void createScheduler; void noise;
     // @ts-expect-error methodOptions are typed: an unknown option is a compile error
     export const bad: Partial<MethodOptions> = { structureWieght: 1 };
    `,
  );
  fs.writeFileSync(
    path.join(app, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { strict: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', lib: ['ES2022', 'ESNext.Disposable'], noEmit: true, skipLibCheck: false, types: ['node'] }, files: ['consumer.ts'] }),
  );
  const r = run(process.execPath, [path.join(app, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', '.'], { cwd: app });
  assert.equal(r.code, 0, r.stdout + r.stderr);
});
