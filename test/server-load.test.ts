/**
 * Load and faults on loopback with the fake engine (bench/server-load.ts): 200 queued jobs, 20 SSE clients, a
 * client that drops mid-stream and resumes, and the server killed with SIGKILL mid-job and restarted. Every job
 * completes exactly once, with a whole output; every client sees its steps once, in order.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runServerLoad } from '../bench/server-load.ts';

test('200 jobs, 20 SSE clients, a dropped client, SIGKILL mid-job: every job completes exactly once, no output half-written', { timeout: 300_000 }, async () => {
  const r = await runServerLoad({ jobs: 200, clients: 20 });
  assert.equal(r.killedRunning, 1, 'the server was killed mid-job');
  assert.equal(r.rerun, 1, 'the job running at the kill ran again');
  assert.equal(r.completions, 200, 'every job completed once');
  assert.equal(r.distinctCompletions, 200, 'no job completed twice');
  assert.equal(r.outputs, 200, 'one output per job, no temporary file left');
  assert.equal(r.wholeOutputs, 200, 'every output is whole, with its metadata');
  assert.equal(r.clientsCompleted, 20, 'every SSE client saw its job complete');
  assert.deepEqual(r.inexact, [], 'every SSE client saw every step once, in order');
  assert.ok(r.resumedExact, 'the client that dropped and resumed saw every step once');
  assert.ok(r.postMs.p99 < 2000, `POST p99 ${r.postMs.p99} ms`);
});
