/**
 * Size limits at the worker, on a redis-server of the test's own with the fake engine: routing checks a job's
 * size against the workers live when it is queued, so a job let in by a worker without a limit can reach a worker
 * whose `--max-pixels` is below it once the first has left. That worker refuses it: the job fails at once (not
 * retried) with a message naming the size, the limit and the fix, and no output is written.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { serve, type RunningServer } from '../src/server/serve.ts';
import { startWorker, type RunningFleetWorker } from '../src/server/fleet/worker.ts';
import { api, FAKE_ENGINE, fakeModelDir, outputFiles, waitFor } from './helpers/fleet.ts';
import { tempDir } from './helpers/models.ts';
import { startRedis, type TestRedis } from './helpers/redis.ts';

const PREFIX = 'fleet-limits';
let redis: TestRedis | undefined;
let server: RunningServer | undefined;
const workers: RunningFleetWorker[] = [];
after(async () => {
  await server?.close();
  for (const w of workers) await w.close();
  await redis?.stop();
});

test('a job above a worker\'s own limit that reaches it (its larger worker gone) fails once, naming size, limit and fix; nothing is written', { timeout: 60_000 }, async () => {
  redis = await startRedis();
  const outputs = tempDir('fleet-limits-outputs');
  const engineLog = path.join(tempDir('fleet-limits-log'), 'engine.log');
  const modelDir = fakeModelDir('fake-64');
  const start = (maxPixels?: Record<string, number>) => startWorker({
    queue: redis!.url, prefix: PREFIX, outputsDir: outputs, modelDirs: [modelDir], ...(maxPixels ? { maxPixels } : {}),
    timings: { progressIntervalMs: 40, heartbeatMs: 500 },
    engine: { module: FAKE_ENGINE, exportName: 'FakeEngine', options: { stepMs: 10, log: engineLog } },
    log: () => undefined,
  }).then((w) => (workers.push(w), w));
  server = await serve({ port: 0, host: '127.0.0.1', outputsDir: outputs, modelDirs: [], pipeline: {}, queue: redis.url, prefix: PREFIX });
  const a = api(server.url);

  const upscale = (source: string, body: object) => fetch(`${a.url}/api/v1/outputs/${source}/upscale`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
  });

  // A worker without a limit makes a 64x64 picture to upscale, then is busy with a long job; a 128x128 job and a
  // 2x upscale of the picture (128x128 too, a size only the source says) are queued behind it (routing: it can run them).
  const large = await start();
  await waitFor('the worker in the status view', async () => (await a.fleet()).workers.length === 1 || undefined);
  const source = await a.finished(await a.queue({ prompt: 'source', seed: '4', steps: 2, width: 64, height: 64 }));
  assert.equal(source.state, 'completed', JSON.stringify(source.error));
  const long = await a.queue({ prompt: 'long', seed: '1', steps: 400, width: 64, height: 64 });
  await waitFor('the long job to run', async () => (await a.job(long)).state === 'running' || undefined);
  const big = await a.queue({ prompt: 'big', seed: '2', steps: 2, width: 128, height: 128, method: 'asg' });
  assert.equal((await a.job(big)).state, 'queued');
  const bigUpscale = await upscale(source.output!, { scale: 2, steps: 2, seed: '5', method: 'asg' });
  assert.equal(bigUpscale.status, 202, await bigUpscale.clone().text());
  const bigUp = ((await bigUpscale.json()) as { id: string }).id;
  assert.equal((await a.job(bigUp)).state, 'queued');

  // That worker leaves (its running job goes back to the queue, and is then cancelled there); a worker that
  // takes asg up to 64x64 joins and finds the 128x128 job.
  await large.close();
  assert.equal((await a.job(long)).state, 'queued');
  const cancelled = await fetch(`${a.url}/api/v1/jobs/${long}`, { method: 'DELETE' });
  assert.equal(cancelled.status, 200);
  const small = await start({ asg: 64 * 64 });
  const failed = await a.finished(big);

  assert.equal(failed.state, 'failed', JSON.stringify(failed));
  const message = failed.error?.message ?? '';
  assert.match(message, /128x128 \(16384 pixels\)/, 'the size');
  assert.match(message, /up to 4096 pixels/, 'the limit');
  assert.match(message, /--max-pixels asg=16384/, 'the fix');
  assert.ok(message.includes(small.id) && message.includes('fake-64'), `the worker and the model: ${message}`);
  assert.equal(failed.error?.kind, 'too-large');
  assert.equal(failed.attempts, 1, 'not retried');
  // Nothing was generated or written for it.
  const logged = fs.existsSync(engineLog) ? fs.readFileSync(engineLog, 'utf8') : '';
  assert.ok(!logged.includes(big), 'the engine never ran it');
  assert.deepEqual(outputFiles(outputs).filter((n) => n.includes(big)), []);
  assert.deepEqual(fs.readdirSync(path.join(outputs, '.fleet-tmp')), []);
  // And it stays failed (a retried job would come back after the backoff).
  await new Promise((r) => setTimeout(r, 6_000));
  const still = await a.job(big);
  assert.equal(still.state, 'failed');
  assert.equal(still.attempts, 1);
  // The upscale too: its size comes from its source (64x64 at scale 2), not from its settings.
  const failedUp = await a.finished(bigUp);
  assert.equal(failedUp.state, 'failed', JSON.stringify(failedUp));
  assert.match(failedUp.error?.message ?? '', /up to 4096 pixels.*128x128 \(16384 pixels\)/);
  assert.equal(failedUp.error?.kind, 'too-large');
  assert.equal(failedUp.attempts, 1, 'not retried');
  assert.ok(!(fs.existsSync(engineLog) ? fs.readFileSync(engineLog, 'utf8') : '').includes(bigUp), 'the engine never ran the upscale');
  // With only that worker live, routing refuses the same upscale at once (409, naming the size).
  const refused = await upscale(source.output!, { scale: 2, steps: 2, seed: '6', method: 'asg' });
  assert.equal(refused.status, 409);
  assert.match(await refused.text(), /asg at 128x128 \(16384 pixels\)/);
  // A job within the limit runs on that worker.
  const fits = await a.finished(await a.queue({ prompt: 'fits', seed: '3', steps: 2, width: 64, height: 64, method: 'asg' }));
  assert.equal(fits.state, 'completed', JSON.stringify(fits.error));
});
