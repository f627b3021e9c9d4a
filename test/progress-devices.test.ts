/**
 * The devices' activity in a job's live progress, with the real engine on two devices (`--devices cpu,cpu`) and
 * the shipped model: the server's event stream (GET /api/v1/jobs/{id}/events) carries, in its progress events,
 * which device runs a model call and how many UNet calls each has done; the OpenAPI document describes it.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createServer } from '../src/server/app.ts';
import { LibraryEngine } from '../src/server/library-engine.ts';
import { LocalJobQueue } from '../src/server/local-queue.ts';
import type { JobProgress, JobRecord } from '../src/server/queue.ts';
import { tempDir } from './helpers/models.ts';
import { readEvents } from './helpers/sse.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const closers: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of closers.reverse()) await c().catch(() => undefined);
});

test('a 2-device generation: its SSE progress names both devices, shows them busy while they run units, and counts their calls', { timeout: 240_000 }, async () => {
  const outputsDir = tempDir('progress-devices');
  const engine = new LibraryEngine([path.join(ROOT, 'models', 'shapes-128')], { devices: 'cpu,cpu', threads: 1 });
  const queue = new LocalJobQueue({ dir: path.join(outputsDir, '.queue') });
  const app = await createServer({ queue, engine, outputsDir });
  closers.push(() => engine.close(), () => app.close(), () => queue.close());
  await app.listen({ port: 0, host: '127.0.0.1' });
  const a = app.server.address();
  const url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;

  // asg at 2x1 the native size: two patches per stage-1 step, windows in stage 2.
  const r = await fetch(`${url}/api/v1/jobs`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ prompt: 'a red circle on a blue background', width: 256, height: 128, steps: 4, seed: '7', method: 'asg' }),
  });
  assert.equal(r.status, 202);
  const { id } = (await r.json()) as { id: string };
  const events = await readEvents(`${url}/api/v1/jobs/${id}/events`);
  const final = events.at(-1)!.data as JobRecord;
  assert.equal(final.state, 'completed', JSON.stringify(final.error));

  const progress = events.filter((e) => e.event === 'progress').map((e) => e.data as JobProgress);
  const denoise = progress.filter((p) => p.phase === 'denoise');
  assert.ok(denoise.length >= 4, `${denoise.length} denoise events`);
  for (const p of [...denoise, ...progress.filter((q) => q.phase === 'decode')]) {
    assert.deepEqual(p.devices?.map((d) => d.id), ['cpu#0', 'cpu#1'], `every denoise and decode event names both devices: ${JSON.stringify(p)}`);
  }
  // Handed a step's units, both devices run at once (the units and their CFG halves are spread over the two).
  const bothBusy = denoise.filter((p) => p.devices!.every((d) => d.busy));
  assert.ok(bothBusy.length >= 2, `both devices busy in ${bothBusy.length} events: ${JSON.stringify(denoise.map((p) => p.devices))}`);
  // Back from a step, they are idle, and the calls only grow.
  assert.ok(denoise.some((p) => p.devices!.every((d) => !d.busy)), 'both idle once a step is done');
  for (const i of [0, 1]) {
    const calls = denoise.map((p) => p.devices![i]!.calls);
    assert.deepEqual(calls, [...calls].sort((x, y) => x - y), `cpu#${i}'s calls only grow: ${calls.join(',')}`);
  }
  const last = denoise.at(-1)!;
  const [c0, c1] = last.devices!.map((d) => d.calls) as [number, number];
  assert.ok(c0 > 0 && c1 > 0, `both devices ran UNet calls: ${c0}, ${c1}`);
  // Every unit ran as one call or as its two CFG halves, each on one device.
  assert.ok(c0 + c1 >= last.unitsTotal && c0 + c1 <= 2 * last.unitsTotal, `${c0} + ${c1} calls for ${last.unitsTotal} units`);

  // The OpenAPI document describes the event data, devices included.
  const doc = (await (await fetch(`${url}/api/v1/openapi.json`)).json()) as Record<string, any>;
  const stream = doc['paths']['/api/v1/jobs/{id}/events']['get']['responses']['200']['content']['text/event-stream']['schema'];
  const progressData = (stream.oneOf as { properties: Record<string, any> }[]).find((s) => s.properties['previewRevision'] && !s.properties['state'])!;
  assert.deepEqual(Object.keys(progressData.properties['devices'].items.properties), ['id', 'busy', 'calls', 'lost']);
});
