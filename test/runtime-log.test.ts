/**
 * The runtime's log level and the filter for what the driver stack writes natively to stderr
 * (src/onnx/runtime-log.ts). The filter is exercised in a child process that writes to descriptor 2 directly, as
 * native code does, so that nothing passes through process.stderr.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { isDriverNote, ortSeverity, runtimeLogLevel } from '../src/onnx/runtime-log.ts';

const MODULE = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'onnx', 'runtime-log.ts');
const NOTE = 'Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.';
const ORT_NOTE = '\x1b[0;93m2026-12-01 21:13:46.749493003 [W:onnxruntime:, session_state.cc:1397 VerifyEachNodeIsAssignedToAnEp] Some nodes were not assigned';

function runChild(env: Record<string, string>, fails = false): { stdout: string; stderr: string; status: number | null } {
  const script = `
    import fs from 'node:fs';
    const { withDriverNotesFiltered } = await import(${JSON.stringify(MODULE)});
    const r = await withDriverNotesFiltered(async () => {
      fs.writeSync(2, ${JSON.stringify(NOTE + '\n')});
      fs.writeSync(2, 'a real error from the driver\\n');
      fs.writeSync(2, ${JSON.stringify(ORT_NOTE + '\n')});
      await new Promise((r) => setTimeout(r, 10));
      if (${fails}) throw new Error('no adapter');
      return 42;
    }).catch((e) => 'failed: ' + e.message + ' / ' + JSON.stringify(e.driverOutput));
    fs.writeSync(1, 'result ' + r + '\\n');
    process.stderr.write('stderr after\\n');
  `;
  // stderr is a file, as for a terminal or a shell redirection (a socket, what Node gives a child for 'pipe',
  // cannot be reopened, and the filter then steps aside).
  const errFile = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'asgd-log-')), 'stderr.txt');
  const errFd = fs.openSync(errFile, 'w');
  try {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, ...env },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', errFd],
    });
    return { stdout: r.stdout, stderr: fs.readFileSync(errFile, 'utf8'), status: r.status };
  } finally {
    fs.closeSync(errFd);
    fs.rmSync(path.dirname(errFile), { recursive: true, force: true });
  }
}

test('driver notes written natively to stderr are dropped, other lines kept, stderr restored', () => {
  const r = runChild({ ASGD_RUNTIME_LOG: '' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'result 42\n');
  assert.equal(r.stderr, 'a real error from the driver\nstderr after\n');
});

test('when the call fails, the lines kept go with its error instead of to stderr', () => {
  const r = runChild({ ASGD_RUNTIME_LOG: '' }, true);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'result failed: no adapter / ["a real error from the driver"]\n');
  assert.equal(r.stderr, 'stderr after\n');
});

test('at the warning level nothing is filtered', () => {
  const r = runChild({ ASGD_RUNTIME_LOG: 'warning' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr, `${NOTE}\na real error from the driver\n${ORT_NOTE}\nstderr after\n`);
});

test('the level comes from ASGD_RUNTIME_LOG and a wrong value names the variable', () => {
  const saved = process.env['ASGD_RUNTIME_LOG'];
  try {
    delete process.env['ASGD_RUNTIME_LOG'];
    assert.equal(runtimeLogLevel(), 'error');
    process.env['ASGD_RUNTIME_LOG'] = 'verbose';
    assert.equal(runtimeLogLevel(), 'verbose');
    assert.equal(ortSeverity('verbose'), 0);
    assert.equal(ortSeverity('error'), 4, 'a session error is thrown with its message, not logged too');
    process.env['ASGD_RUNTIME_LOG'] = 'loud';
    assert.throws(() => runtimeLogLevel(), /ASGD_RUNTIME_LOG.*error, warning, info, verbose.*loud/s);
  } finally {
    if (saved === undefined) delete process.env['ASGD_RUNTIME_LOG'];
    else process.env['ASGD_RUNTIME_LOG'] = saved;
  }
});

test('only the known notes count as driver notes', () => {
  assert.ok(isDriverNote(NOTE));
  assert.ok(isDriverNote(ORT_NOTE));
  assert.ok(!isDriverNote('Error: failed to create the device'));
  assert.ok(!isDriverNote('[E:onnxruntime:, inference_session.cc] something failed'));
});
