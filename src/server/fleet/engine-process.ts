/**
 * The worker's side of its engine process (engine-child.ts): runs one job at a time there, relays progress and
 * preview notices, aborts on the job's signal, and reports the child's death as a device failure of the run.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DeviceEntry, EngineProgress, EngineResult, ModelEntry } from '../engine.ts';
import type { EngineSpec, FromChild, RunRequest, ToChild } from './engine-messages.ts';

export interface RunHooks {
  signal: AbortSignal;
  onProgress(p: EngineProgress): void;
  onPreview(): void;
}

export interface EngineRunError {
  message: string;
  kind?: string;
  parameter?: string;
}

interface Pending {
  hooks: RunHooks;
  resolve(r: EngineResult): void;
  reject(e: EngineRunError): void;
}

const HERE = fileURLToPath(import.meta.url);
/** engine-child.ts from the sources (run through tsx), engine-child.js from dist/. */
const CHILD = path.join(path.dirname(HERE), `engine-child${path.extname(HERE)}`);

export class EngineProcess {
  private child?: ChildProcess;
  private nextRun = 1;
  private readonly pending = new Map<number, Pending>();
  models: ModelEntry[] = [];
  devices: DeviceEntry[] = [];
  deviceSet = 'cpu';

  private constructor(private readonly spec: EngineSpec) {}

  static async start(spec: EngineSpec): Promise<EngineProcess> {
    const e = new EngineProcess(spec);
    await e.spawn();
    return e;
  }

  private spawn(): Promise<void> {
    const execArgv = CHILD.endsWith('.ts') ? ['--import', import.meta.resolve('tsx')] : [];
    const child = fork(CHILD, [JSON.stringify(this.spec)], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'json' });
    this.child = child;
    return new Promise((resolve, reject) => {
      let ready = false;
      child.on('message', (m: FromChild) => {
        if (m.type === 'ready') {
          ready = true;
          this.models = m.models;
          this.devices = m.devices;
          this.deviceSet = m.deviceSet;
          resolve();
        } else if (m.type === 'fatal') {
          reject(new Error(`the engine process failed to start: ${m.message}`));
        } else {
          const p = this.pending.get(m.runId);
          if (!p) return;
          if (m.type === 'progress') p.hooks.onProgress(m.progress);
          else if (m.type === 'preview') p.hooks.onPreview();
          else {
            this.pending.delete(m.runId);
            if (m.type === 'done') p.resolve({ warnings: m.warnings });
            else p.reject(m.error);
          }
        }
      });
      child.on('exit', (code, signal) => {
        if (this.child === child) this.child = undefined;
        if (!ready) reject(new Error(`the engine process exited (${signal ?? code}) before it was ready`));
        for (const [id, p] of this.pending) {
          this.pending.delete(id);
          p.reject({ message: `the engine process exited (${signal ?? code})`, kind: 'device' });
        }
      });
    });
  }

  /** Runs one request in the engine process; rejects with the engine's error (kind 'cancelled' after an abort). */
  async run(req: Omit<RunRequest, 'type' | 'runId'>, hooks: RunHooks): Promise<EngineResult> {
    if (!this.child) await this.spawn();
    const child = this.child!;
    const runId = this.nextRun++;
    return new Promise<EngineResult>((resolve, reject) => {
      const onAbort = () => child.send({ type: 'abort', runId } satisfies ToChild);
      const done = () => hooks.signal.removeEventListener('abort', onAbort);
      this.pending.set(runId, {
        hooks,
        resolve: (r) => (done(), resolve(r)),
        reject: (e) => (done(), reject(e)),
      });
      child.send({ type: 'run', runId, ...req } satisfies ToChild);
      if (hooks.signal.aborted) onAbort();
      else hooks.signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  async close(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      child.once('exit', () => (clearTimeout(t), resolve()));
      child.disconnect();
    });
  }
}
