/**
 * Large arrays to and from worker processes through files in /dev/shm (src/node/runner/array-stow.ts): the round trip
 * gives back the same values and types, views travel as the view, small arrays stay in the message, the files are
 * deleted once read, a full or missing folder falls back to the channel, a missing file is a clear error; and a VAE
 * decode in a worker process gets its latent and returns its image through files, bit for bit what a worker thread
 * returns, the folder gone once the worker has ended.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ArrayStow, makeStowFolder, STOW_MIN_BYTES } from '../src/node/runner/array-stow.ts';
import { DeviceWorker, workerExecArgv } from '../src/node/runner/device-worker.ts';
import type { WorkerResult } from '../src/node/runner/protocol.ts';
import { mulberry32 } from './fixtures/prng.ts';

const SHIPPED = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'shapes-128');

function randoms(n: number, seed: number): Float32Array {
  const next = mulberry32(seed);
  return Float32Array.from({ length: n }, () => next() * 2 - 1);
}

describe('ArrayStow', () => {
  let folder: string;
  before(() => {
    const f = makeStowFolder();
    assert.ok(f, 'a folder in /dev/shm (Linux)');
    folder = f;
  });
  after(() => fs.rmSync(folder, { recursive: true, force: true }));

  test('a message round trip: large arrays through files (deleted once read), small ones and the rest as they are', () => {
    const big = randoms(STOW_MIN_BYTES / 4 + 3, 1);
    const backing = randoms(3 * STOW_MIN_BYTES / 4, 2);
    const view = backing.subarray(100, 100 + STOW_MIN_BYTES / 4); // a view into a larger buffer
    const ints = Int32Array.from({ length: STOW_MIN_BYTES / 4 }, (_, i) => i * 7 - 5);
    const bigints = BigInt64Array.from({ length: STOW_MIN_BYTES / 8 }, (_, i) => BigInt(i) * 3n - 2n);
    const small = new Float32Array([1, 2, 3]);
    const message = { id: 4, req: { type: 'unet', sample: big, nested: [{ view, ints }, bigints], small, text: 'x', n: null, when: new Date(5) } };
    const sender = new ArrayStow(folder, 'c');
    const sent = sender.stow(message);
    assert.deepEqual(sender.counts, { sent: 4, sentBytes: big.byteLength + view.byteLength + ints.byteLength + bigints.byteLength, received: 0, receivedBytes: 0, fellBack: 0 });
    assert.equal(fs.readdirSync(folder).length, 4, 'one file per large array');
    assert.ok(!ArrayBuffer.isView(sent.req.sample), 'a marker in its place');
    assert.equal(sent.req.small, small, 'a small array stays in the message');
    assert.ok(JSON.stringify(sent).length < 2000, 'what goes through the channel is small');
    assert.equal(message.req.sample, big, 'the message itself is not changed');
    // Through a structured clone (the channel's serialisation), then read back on the other side.
    const receiver = new ArrayStow(undefined, 'w');
    const got = receiver.unstow(structuredClone(sent));
    assert.equal(fs.readdirSync(folder).length, 0, 'the files are deleted once read');
    assert.equal(receiver.counts.received, 4);
    assert.ok(got.req.sample instanceof Float32Array && Buffer.from(got.req.sample.buffer).equals(Buffer.from(big.buffer)));
    const [first, second] = got.req.nested as [{ view: Float32Array; ints: Int32Array }, BigInt64Array];
    assert.deepEqual(Array.from(first.view), Array.from(view), 'the view, not the buffer under it');
    assert.equal(first.view.buffer.byteLength, view.byteLength);
    assert.ok(first.ints instanceof Int32Array && second instanceof BigInt64Array);
    assert.deepEqual(Array.from(first.ints), Array.from(ints));
    assert.deepEqual(Array.from(second), Array.from(bigints));
    assert.deepEqual(Array.from(got.req.small), [1, 2, 3]);
    assert.equal(got.req.text, 'x');
    assert.equal((got.req.when as Date).getTime(), 5);
  });

  test('a small view into a larger buffer is sent as the view alone (the channel would copy the whole buffer)', () => {
    const backing = new Float32Array(1000);
    const small = backing.subarray(10, 20);
    const sent = new ArrayStow(folder, 'c').stow({ small });
    assert.equal(sent.small.length, 10);
    assert.equal(sent.small.buffer.byteLength, 40);
  });

  test('without a folder nothing is stowed; with one that cannot be written, the arrays go through the channel', () => {
    const big = randoms(STOW_MIN_BYTES / 4, 3);
    const none = new ArrayStow(undefined, 'c');
    const m = { a: big };
    assert.equal(none.stow(m), m);
    const gone = new ArrayStow(path.join(folder, 'missing'), 'c');
    const sent = gone.stow({ a: big });
    assert.equal(sent.a, big, 'sent as it is');
    assert.deepEqual(gone.counts, { sent: 0, sentBytes: 0, received: 0, receivedBytes: 0, fellBack: 1 });
  });

  test('a file gone before it is read: an error that names it', () => {
    const sent = new ArrayStow(folder, 'c').stow({ a: randoms(STOW_MIN_BYTES / 4, 4) });
    const file = (sent.a as unknown as { file: string }).file;
    fs.rmSync(file);
    assert.throws(() => new ArrayStow(undefined, 'w').unstow(sent), (e: unknown) =>
      e instanceof Error && e.message.startsWith(`worker transport: the array file ${file} is gone`));
  });
});

describe('a worker process', () => {
  test('decodes through files: the latent in and the image out, bit for bit a worker thread\'s; its folder removed at the end', async () => {
    const latent = randoms(4 * 64 * 64, 5); // 64 KiB in, a 512x512 image (3 MiB) out
    const images: Float32Array[] = [];
    let transport!: NonNullable<Extract<WorkerResult, { type: 'describe' }>['transport']>;
    for (const isolation of ['thread', 'process'] as const) {
      const w = new DeviceWorker({ provider: 'cpu', threads: 1, label: 'cpu' }, isolation);
      try {
        await w.request({ type: 'init', paths: { vaeDecoder: path.join(SHIPPED, 'vae_decoder', 'model.onnx') }, session: { provider: 'cpu', threads: 1 } }, 'init');
        const r = await w.request<'vaeDecode'>({ type: 'vaeDecode', latent, channels: 4, height: 64, width: 64 }, 'decode');
        assert.deepEqual([r.height, r.width, r.data.length], [512, 512, 3 * 512 * 512]);
        images.push(r.data);
        const d = await w.request<'describe'>({ type: 'describe' }, 'describe');
        if (isolation === 'thread') assert.equal(d.transport, undefined);
        else transport = d.transport!;
      } finally {
        await w.terminate();
      }
    }
    assert.ok(Buffer.from(images[1]!.buffer).equals(Buffer.from(images[0]!.buffer)), 'the same image');
    assert.ok(transport?.folder?.startsWith(path.join('/dev/shm', 'asgd-worker-')), JSON.stringify(transport));
    assert.equal(transport.received, 1, 'the latent came through a file');
    assert.equal(transport.receivedBytes, latent.byteLength);
    assert.equal(transport.sent, 1, 'the image went back through a file');
    assert.equal(transport.sentBytes, 3 * 512 * 512 * 4);
    assert.equal(fs.existsSync(transport.folder!), false, 'the folder is removed once the worker has ended');
  });
});

describe('the Node options a device worker starts with', () => {
  test('keep loaders and limits; drop the entry point and mode of this process (-e/-p code, --input-type, test runner, watch)', () => {
    assert.deepEqual(
      workerExecArgv(['--import', 'tsx', '--input-type=module', '-e', 'code()', '--max-old-space-size=4096', '--test', '--test-concurrency=1', '--enable-source-maps']),
      ['--import', 'tsx', '--max-old-space-size=4096', '--enable-source-maps'],
    );
    assert.deepEqual(workerExecArgv(['--eval=code()', '-r', 'x.cjs', '-pe', '1+1', '--watch-path', 'src', '--conditions=dev', '--input-type', 'module']), ['-r', 'x.cjs', '--conditions=dev']);
    assert.deepEqual(workerExecArgv(['-p', '1', '--inspect', '-i', '--check', '--interactive', '--watch']), ['--inspect']);
  });

  // Before: a thread worker refused `--input-type` ("can only be used with string input"), and a forked worker
  // process ran the user's -e code instead of the worker.
  test('a pipeline loads and generates from `node --input-type=module -e` (worker threads) and `node -e` (worker processes), with one image', () => {
    const src = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'index.ts');
    const script = (isolation: string) => `
      const { loadPipeline } = await import(${JSON.stringify(src)});
      if (process.send) { console.log('worker ran the -e code'); process.exit(3); }
      const pipe = await loadPipeline(${JSON.stringify(SHIPPED)}, { threads: 1, workerIsolation: '${isolation}' });
      const r = await pipe.generate({ prompt: 'a red circle', width: 128, height: 128, steps: 2, seed: 5 });
      await pipe.close();
      const { createHash } = await import('node:crypto');
      console.log('sha ' + createHash('sha256').update(r.image.data).digest('hex'));`;
    const runs = [
      spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script('thread')], { encoding: 'utf8', timeout: 120_000 }),
      // -e without --input-type is CommonJS: the same code inside an async function.
      spawnSync(process.execPath, ['--import', 'tsx', '-e', `(async () => { ${script('process')} })().catch((e) => { console.error(e); process.exit(1); })`], { encoding: 'utf8', timeout: 120_000 }),
    ];
    const shas = runs.map((r) => {
      assert.equal(r.status, 0, r.stderr + r.stdout);
      const m = /sha ([0-9a-f]{64})/.exec(r.stdout);
      assert.ok(m, r.stdout);
      return m[1];
    });
    assert.equal(shas[1], shas[0], 'the same image from worker threads and worker processes');
  });
});
