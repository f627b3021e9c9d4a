/** Shared pieces of the fleet tests: a fake model folder, HTTP helpers against a running server, waiting. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { JobRecord } from '../../src/server/queue.ts';
import { tempDir } from './models.ts';

export const FAKE_ENGINE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fake-engine.ts');

/** A folder the worker hashes and names its model after; the fake engine never reads it. */
export function fakeModelDir(name = 'fake-64'): string {
  const dir = path.join(tempDir('fleet-model'), name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'weights.bin'), `weights of ${name}`);
  return dir;
}

export async function waitFor<T>(what: string, f: () => Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 25): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export function api(base: string) {
  const url = base.replace(/\/$/, '');
  return {
    url,
    async post(body: object): Promise<{ status: number; json: { id?: string; message?: string } }> {
      const r = await fetch(`${url}/api/v1/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
      return { status: r.status, json: (await r.json()) as { id?: string; message?: string } };
    },
    async queue(body: object): Promise<string> {
      const r = await this.post(body);
      assert.equal(r.status, 202, JSON.stringify(r.json));
      return r.json.id!;
    },
    async job(id: string): Promise<JobRecord> {
      const r = await fetch(`${url}/api/v1/jobs/${id}`);
      assert.equal(r.status, 200, `GET job ${id}: ${r.status}`);
      return (await r.json()) as JobRecord;
    },
    async jobs(): Promise<JobRecord[]> {
      return ((await (await fetch(`${url}/api/v1/jobs`)).json()) as { jobs: JobRecord[] }).jobs;
    },
    async finished(id: string, timeoutMs = 30_000): Promise<JobRecord> {
      return waitFor(`job ${id} to finish`, async () => {
        const j = await this.job(id);
        return ['completed', 'failed', 'cancelled'].includes(j.state) ? j : undefined;
      }, timeoutMs);
    },
    async fleet(): Promise<{ workers: { id: string; running: { jobId: string }[]; models: { name: string; hash: string }[] }[]; queues: { queue: string; counts: Record<string, number> }[] }> {
      return (await (await fetch(`${url}/api/v1/fleet`)).json()) as never;
    },
  };
}

/** The output files of the outputs folder (no hidden folders). */
export function outputFiles(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => !n.startsWith('.')).sort();
}
