import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AsgdError } from '../src/core/errors.ts';
import { checkProvidersAvailable, cudaInstalled, threadsWarning, parseDevices } from '../src/node/runner/devices.ts';

test('device lists parse into one worker per entry', () => {
  assert.deepEqual(parseDevices('cpu'), [{ provider: 'cpu', deviceId: undefined, threads: 0, label: 'cpu#0' }]);
  assert.deepEqual(parseDevices('cpu,cpu', 1).map((d) => [d.label, d.threads]), [['cpu#0', 1], ['cpu#1', 1]]);
  assert.deepEqual(parseDevices('webgpu:0, cuda:1,cpu').map((d) => d.label), ['webgpu:0', 'cuda:1', 'cpu#0']);
  assert.deepEqual(parseDevices('webgpu').map((d) => d.deviceId), [0]);
});

test('bad device lists name the problem', () => {
  for (const [list, re] of [
    ['', /Invalid devices/],
    ['cpu,,cpu', /Invalid devices/],
    ['tpu:0', /Invalid devices; expected entries of the form cpu, webgpu\[:N\] or cuda\[:N\].*received "tpu:0"/],
    ['cpu:1', /"cpu" without an index/],
  ] as const) {
    assert.throws(() => parseDevices(list), (e: unknown) => e instanceof AsgdError && re.test(e.message), list);
  }
  assert.throws(() => parseDevices('cpu', -1), /Invalid threads/);
});

test('cuda without the provider library is a clear error that says how to install it', (t) => {
  if (cudaInstalled()) {
    // This machine has the CUDA provider: the check must pass instead.
    assert.doesNotThrow(() => checkProvidersAvailable(parseDevices('cuda:0')));
    return;
  }
  assert.throws(
    () => checkProvidersAvailable(parseDevices('cuda:0')),
    (e: unknown) => e instanceof AsgdError && e.kind === 'device' && /cuda execution provider is not installed/.test(e.message) && /ONNXRUNTIME_NODE_INSTALL=cuda12/.test(e.message),
  );
  void t;
});

test('threads given beyond the cores are warned of, with the count that fits; within them, left to the default, or without a CPU worker, not', () => {
  assert.equal(threadsWarning(parseDevices('cpu', 8, 2), 2), '8 CPU threads (1 worker x --threads 8) on 2 cores: slower than fewer (try --threads 2, or leave it out)');
  assert.equal(threadsWarning(parseDevices('cpu,cpu', 2, 2), 2), '4 CPU threads (2 workers x --threads 2) on 2 cores: slower than fewer (try --threads 1, or leave it out)');
  assert.equal(threadsWarning(parseDevices('cpu,cpu', 1, 2), 2), undefined);
  assert.equal(threadsWarning(parseDevices('cpu', 0, 2), 2), undefined, "ONNX Runtime's default");
  assert.equal(threadsWarning(parseDevices('webgpu:0', 4, 2), 2), undefined, 'no CPU worker');
});
