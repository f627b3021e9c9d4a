/**
 * `card.js dispatch` (bench/card-dispatch.ts): the chains compute (k + 1) · x with k Add kernels, the line through
 * the timings is a least-squares fit, the bench runs on the CPU and on WebGPU (lavapipe), and wrong options are
 * refused by name.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fromBinary } from '@bufbuild/protobuf';
import { ModelProtoSchema } from 'onnx-buf';
import ort from 'onnxruntime-node';
import { parseArgs } from '../bench/card.ts';
import { addChain, benchDispatch, dispatchOptions, fitLine } from '../bench/card-dispatch.ts';

test('a chain of k Adds: k nodes, each reading the previous sum and the input; its output is (k + 1) x', async () => {
  const m = fromBinary(ModelProtoSchema, addChain(5, 4, 'float32'));
  assert.deepEqual(m.graph!.node.map((n) => n.opType), Array(5).fill('Add'));
  assert.deepEqual(m.graph!.node.map((n) => n.input[1]), Array(5).fill('x'));
  const s = await ort.InferenceSession.create(addChain(5, 4, 'float32'));
  const y = (await s.run({ x: new ort.Tensor('float32', Float32Array.from([1, -1, 0, 0.5]), [1, 4]) }))['y']!.data as Float32Array;
  await s.release();
  assert.deepEqual([...y], [6, -6, 0, 3]);
});

test('fitLine: the least-squares line (exact on a line, the mean slope through noise)', () => {
  assert.deepEqual(fitLine([1, 64, 256, 1024], [1 * 0.02 + 0.5, 64 * 0.02 + 0.5, 256 * 0.02 + 0.5, 1024 * 0.02 + 0.5]).slope.toFixed(6), '0.020000');
  const f = fitLine([0, 1, 2], [1, 2, 4]);
  assert.ok(Math.abs(f.slope - 1.5) < 1e-12 && Math.abs(f.intercept - 5 / 6) < 1e-12, JSON.stringify(f));
});

test('the bench on the CPU and on WebGPU: every chain exact, the cost per kernel the line through the medians', async (t) => {
  for (const [provider, type] of [['cpu', 'float32'], ['webgpu', 'float32'], ['webgpu', 'float16']] as const) {
    const r = await benchDispatch(dispatchOptions({ provider, type, kernels: '1,32,128', warmup: '1', iters: '3' }));
    const chains = r['chains'] as { kernels: number; medianMs: number; maxError: number }[];
    assert.deepEqual(chains.map((c) => c.kernels), [1, 32, 128]);
    assert.deepEqual(chains.map((c) => c.maxError), [0, 0, 0], `${provider} ${type}: (k + 1) x exactly`);
    t.diagnostic(`${provider} ${type}: ${(r['usPerKernel'] as number).toFixed(1)} µs a kernel`);
    // Its sign is a timing (on the CPU a kernel costs about 0.3 µs, within a loaded machine's noise at 3 calls: once
    // -0.14 µs in CI), so the test checks the fit, not the speed.
    const line = fitLine(chains.map((c) => c.kernels), chains.map((c) => c.medianMs));
    assert.ok(Number.isFinite(r['usPerKernel']) && Number.isFinite(r['msPerCall']), JSON.stringify(r));
    assert.ok(Math.abs((r['usPerKernel'] as number) - line.slope * 1000) < 1e-9 && Math.abs((r['msPerCall'] as number) - line.intercept) < 1e-12, JSON.stringify(r));
  }
});

test('wrong options are refused, naming the option and what it takes', () => {
  assert.throws(() => dispatchOptions({ kernels: '64' }), /--kernels must list at least two different whole numbers from 1 to 2047 \(got "64"\)/);
  assert.throws(() => dispatchOptions({ kernels: '1,4096' }), /from 1 to 2047/);
  assert.throws(() => dispatchOptions({ type: 'bfloat16' }), /--type must be float32 or float16 \(got "bfloat16"\)/);
  assert.throws(() => dispatchOptions({ iters: '0' }), /--iters must be an integer of at least 1 \(got 0\)/);
  assert.throws(() => parseArgs(['dispatch', '--unet', 'x']), /card dispatch: unknown option --unet/);
});
